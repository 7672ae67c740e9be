"""Analytic judges of the shapes-and-tones world (numpy only): what a medium shows, in the world's words.

- image: the foreground is the pixels far from white; its largest connected blob is the shape (specks are
  ignored), then taken again at half the blob's typical distance from white (blurred edges count as they
  look). Colour: the palette colour nearest the blob's median pixel. Shape: the blob's fill ratio of its
  bounding box (square ~1.0, circle ~0.785, triangle ~0.5), with the triangle confirmed by its outline
  (apex up: the top third of the blob much narrower than the bottom third; this survives the blur of
  4:2:0 video, which rounds a small triangle's fill ratio up towards a circle's). Position: the blob's
  centroid, by thirds of the width.
- video: the same per frame (shape by majority over the frames where it is not cut by the edge); direction
  from the centroid track (the dominant axis of the fitted motion).
- audio: pitch from the spectral peak, nearest in log-frequency; beeping vs steady from the share of
  near-silent 10 ms frames.

Each judge returns a dict of attribute -> word, ``None`` where nothing can be said (no foreground, silence).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anygen.world.config import DEFAULT_WORLD, WorldConfig

#: A pixel is foreground when one of its channels is this far below white (the palette's darkest channel
#: is at most 60; white-ish speckle and anti-aliasing halos stay below it).
FOREGROUND = 100
#: Fill ratio of the bounding box per shape; a blob takes the shape whose ratio is nearest.
FILL_RATIOS = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}
#: A blob is a triangle when its top third is at most this share as wide as its bottom third (triangle
#: ~0.2-0.3, circle ~1, square 1).
TRIANGLE_TAPER = 0.55
#: Beeping when at least this share of 10 ms frames is near silent (beeping: ~0.5, steady: ~0).
SILENT_SHARE = 0.25


def _as_rgb(image: Any) -> np.ndarray:
    """uint8 ``[H, W, 3]`` from a PIL image or an array (floats in [0, 1] are scaled)."""
    if hasattr(image, "convert"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.dtype.kind == "f":
        array = np.round(np.clip(array, 0, 1) * 255)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return array[..., :3].astype(np.uint8)


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``mask`` (numpy label propagation: each pixel takes the largest
    label among itself and its neighbours until nothing changes)."""
    if not mask.any():
        return mask
    h, w = mask.shape
    labels = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), 0)
    for _ in range(h * w):
        padded = np.pad(labels, 1)
        neighbours = np.stack(
            [labels, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        ).max(axis=0)
        grown = np.where(mask, neighbours, 0)
        if np.array_equal(grown, labels):
            break
        labels = grown
    values, counts = np.unique(labels[mask], return_counts=True)
    return labels == values[np.argmax(counts)]


def shape_blob(rgb: np.ndarray) -> np.ndarray:
    """The shape's pixels. First the largest blob far from white; then, measured against that blob's median
    colour ``c``, each pixel ``p`` is written ``white + a (c - white) + rest``: it belongs to the shape when it
    is at least half-way from white to ``c`` (``a > 1/2``) and not of another colour (``|rest| < |c - white| / 2``).
    So a blurred edge is in or out by how it looks against the shape's own colour, and a speck of another
    colour stuck to the shape is not part of it."""
    pixels = rgb.astype(np.float64)
    blob = largest_blob((255 - pixels.min(axis=-1)) > FOREGROUND)
    if not blob.any():
        return blob
    towards = np.median(pixels[blob], axis=0) - 255.0
    norm2 = float(towards @ towards)
    offset = pixels - 255.0
    a = offset @ towards / norm2
    rest = np.linalg.norm(offset - a[..., None] * towards, axis=-1) / np.sqrt(norm2)
    return largest_blob((a > 0.5) & (rest < 0.5))


def _nearest(value: float, table: dict[str, float]) -> str:
    return min(table, key=lambda k: abs(table[k] - value))


def _colour(pixels: np.ndarray, config: WorldConfig) -> str:
    median = np.median(pixels.reshape(-1, 3).astype(np.float64), axis=0)
    palette = {name: np.asarray(rgb, dtype=np.float64) for name, rgb in config.colours.items()}
    return min(palette, key=lambda k: float(np.sum((palette[k] - median) ** 2)))


def _fill_ratio(blob: np.ndarray) -> float:
    ys, xs = np.nonzero(blob)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return float(blob.sum() / box)


def _shape(blob: np.ndarray, config: WorldConfig) -> str:
    ys, xs = np.nonzero(blob)
    rows = blob[ys.min() : ys.max() + 1].sum(axis=1)
    k = max(1, len(rows) // 3)
    taper = rows[:k].mean() / max(rows[-k:].mean(), 1e-6)
    if "triangle" in config.shapes and taper <= TRIANGLE_TAPER:
        return "triangle"
    ratio = _fill_ratio(blob)
    return _nearest(ratio, {s: FILL_RATIOS[s] for s in config.shapes if s != "triangle"} or FILL_RATIOS)


def _centroid(blob: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(blob)
    return float(xs.mean()), float(ys.mean())


def judge_image(image: Any, *, config: WorldConfig = DEFAULT_WORLD) -> dict[str, str | None]:
    """``{"colour", "shape", "position"}`` of the one shape in ``image`` (PIL image or ``[H, W, 3]`` array)."""
    rgb = _as_rgb(image)
    blob = shape_blob(rgb)
    if not blob.any():
        return {"colour": None, "shape": None, "position": None}
    x, _ = _centroid(blob)
    third = min(int(3 * (x + 0.5) / rgb.shape[1]), 2)
    position = ("left", "center", "right")[third]
    return {
        "colour": _colour(rgb[blob], config),
        "shape": _shape(blob, config),
        "position": position if position in config.positions else None,
    }


def judge_video(video: Any, *, config: WorldConfig = DEFAULT_WORLD) -> dict[str, str | None]:
    """``{"colour", "shape", "direction"}`` of the moving shape (an ``anygen.Video`` or ``[T, H, W, 3]``)."""
    frames = np.asarray(getattr(video, "frames", video))
    if frames.dtype.kind == "f":
        frames = np.round(np.clip(frames, 0, 1) * 255).astype(np.uint8)
    times, points, pixels, shapes, inside = [], [], [], [], []
    for t, frame in enumerate(frames):
        blob = shape_blob(frame[..., :3])
        if not blob.any():
            continue
        times.append(t)
        points.append(_centroid(blob))
        pixels.append(frame[..., :3][blob])
        shapes.append(_shape(blob, config))
        ys, xs = np.nonzero(blob)
        h, w = blob.shape
        inside.append(ys.min() > 0 and xs.min() > 0 and ys.max() < h - 1 and xs.max() < w - 1)
    if not times:
        return {"colour": None, "shape": None, "direction": None}
    # A shape cut by the frame's edge misleads: vote among the whole ones (all frames if none is whole).
    whole = [s for s, ok in zip(shapes, inside, strict=True) if ok] or shapes
    direction = None
    if len(times) >= 2:
        t = np.asarray(times, dtype=np.float64)
        xy = np.asarray(points)
        vx, vy = (np.polyfit(t, xy[:, k], 1)[0] for k in (0, 1))
        if max(abs(vx), abs(vy)) > 1e-6:
            direction = (
                ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
            )
    return {
        "colour": _colour(np.concatenate(pixels), config),
        "shape": max(config.shapes, key=whole.count),
        "direction": direction if direction in config.directions else None,
    }


def judge_audio(audio: Any, *, config: WorldConfig = DEFAULT_WORLD, sample_rate: int | None = None) -> dict:
    """``{"pitch", "pattern"}`` of a tone (an ``anygen.Audio``, or a waveform with ``sample_rate``)."""
    wave = np.asarray(getattr(audio, "waveform", audio), dtype=np.float64).reshape(-1)
    sr = int(getattr(audio, "sample_rate", sample_rate or config.sample_rate))
    if wave.size < sr // 100 or not np.any(np.abs(wave) > 1e-4):
        return {"pitch": None, "pattern": None}
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    freqs = np.fft.rfftfreq(wave.size, 1 / sr)
    hz = sorted(config.pitches.values())
    band = (freqs >= hz[0] / 2) & (freqs <= min(hz[-1] * 2, sr / 2))
    peak = float(freqs[band][np.argmax(spectrum[band])]) if band.any() else float(freqs[np.argmax(spectrum)])
    pitch = min(config.pitches, key=lambda k: abs(np.log2(config.pitches[k] / max(peak, 1e-6))))
    hop = max(1, sr // 100)  # 10 ms frames
    n = wave.size // hop
    rms = np.sqrt(np.mean(wave[: n * hop].reshape(n, hop) ** 2, axis=1))
    loud = np.percentile(rms, 95)
    silent_share = float(np.mean(rms < 0.1 * loud)) if loud > 0 else 1.0
    pattern = "beeping" if silent_share >= SILENT_SHARE else "steady"
    return {"pitch": pitch, "pattern": pattern if pattern in config.patterns else None}
