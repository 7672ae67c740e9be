"""The world's media, drawn by code: one filled shape on white (images, videos) and sine tones (audio).

With an ``rng`` (a ``numpy.random.Generator``) and ``config.jitter``, each medium varies a little: the shape's
size (±10%), place (±1-2 px at 32×32) and shade (±10 per channel); the tone's loudness (±20%), pitch (±1%) and
phase. Without an ``rng`` the medium is the canonical one. Shapes are drawn with PIL, without anti-aliasing.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from anygen.errors import AnyGenError
from anygen.media import Audio, Video
from anygen.world.config import DEFAULT_WORLD, WorldConfig

BACKGROUND = (255, 255, 255)
_POSITION_X = {"left": 1 / 6, "center": 1 / 2, "right": 5 / 6}
#: (dx, dy) per unit of motion; y grows downwards, so "up" is -y.
DIRECTION_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
FADE_SECONDS = 0.005
BEEP_HZ = 4.0  # on 125 ms, off 125 ms


def _check(value: str, names, what: str) -> str:
    if value not in names:
        raise AnyGenError(f"unknown {what} {value!r} (the world's {what}s: {', '.join(names)})")
    return value


def _shade(rgb, rng: np.random.Generator | None, jitter: bool) -> tuple[int, int, int]:
    if rng is None or not jitter:
        return tuple(int(c) for c in rgb)
    return tuple(int(np.clip(c + rng.integers(-10, 11), 0, 255)) for c in rgb)


def draw_shape(canvas: Image.Image, shape: str, cx: float, cy: float, side: float, rgb) -> None:
    """Draw one filled ``shape`` of width and height ``side`` centred at (cx, cy) (pixel units)."""
    draw = ImageDraw.Draw(canvas)
    half = side / 2
    x0, y0 = round(cx - half), round(cy - half)
    x1, y1 = round(cx + half) - 1, round(cy + half) - 1  # PIL boxes include their last pixel
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rgb))
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=tuple(rgb))
    elif shape == "triangle":  # apex up
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=tuple(rgb))
    else:
        raise AnyGenError(f"unknown shape {shape!r} (the world's shapes: circle, square, triangle)")


def _inside(c: float, half: float, size: int) -> float:
    """Keep a centre coordinate where the whole shape stays on the canvas."""
    return float(np.clip(c, half, size - half))


def render_image(
    colour: str,
    shape: str,
    position: str | None,
    *,
    config: WorldConfig = DEFAULT_WORLD,
    rng: np.random.Generator | None = None,
) -> Image.Image:
    """An RGB image, ``config.image_size`` square: one filled ``shape`` on white at ``position``.

    The shape's centre lies at 1/6, 1/2 or 5/6 of the width (left, center, right), vertically centred, its
    side about 1/3 of the canvas. ``position=None``: a random position from ``rng`` (center without one).
    """
    rgb = config.colours[_check(colour, list(config.colours), "colour")]
    _check(shape, config.shapes, "shape")
    if position is None:
        position = config.positions[int(rng.integers(len(config.positions)))] if rng is not None else "center"
    _check(position, config.positions, "position")
    size = config.image_size
    side = size / 3
    cx, cy = size * _POSITION_X[position], size / 2
    jitter = rng is not None and config.jitter
    if jitter:
        side *= rng.uniform(0.9, 1.1)
        wiggle = max(1.0, size / 20)  # ±1.6 px at 32×32
        cx += rng.uniform(-wiggle, wiggle)
        cy += rng.uniform(-wiggle, wiggle)
    half = side / 2
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    draw_shape(
        canvas, shape, _inside(cx, half, size), _inside(cy, half, size), side, _shade(rgb, rng, jitter)
    )
    return canvas


def video_fps(config: WorldConfig = DEFAULT_WORLD) -> float:
    """The world's videos last one second: ``num_frames`` frames per second."""
    return float(config.num_frames)


def render_video(
    colour: str,
    shape: str,
    direction: str,
    *,
    config: WorldConfig = DEFAULT_WORLD,
    rng: np.random.Generator | None = None,
) -> Video:
    """``config.num_frames`` frames (``video_size`` square, on white): a shape of side about 1/4 of the canvas
    crossing the whole frame in ``direction``, its centre going from one edge region to the other."""
    rgb = config.colours[_check(colour, list(config.colours), "colour")]
    _check(shape, config.shapes, "shape")
    dx, dy = DIRECTION_VECTORS[_check(direction, config.directions, "direction")]
    size = config.video_size
    side = size / 4
    jitter = rng is not None and config.jitter
    across = size / 2  # the perpendicular coordinate
    start_shift = 0.0
    if jitter:
        side *= rng.uniform(0.9, 1.1)
        wiggle = max(1.0, size / 20)
        across += rng.uniform(-wiggle, wiggle)
        start_shift = rng.uniform(0, wiggle)
    half = side / 2
    start, end = half + start_shift, size - half - start_shift  # along the motion, in +x / +y terms
    shade = _shade(rgb, rng, jitter)
    frames = []
    for t in np.linspace(0.0, 1.0, config.num_frames):
        along = start + (end - start) * (t if dx + dy > 0 else 1 - t)
        cx, cy = (along, across) if dx else (across, along)
        canvas = Image.new("RGB", (size, size), BACKGROUND)
        draw_shape(canvas, shape, cx, cy, side, shade)
        frames.append(np.asarray(canvas))
    return Video(np.stack(frames), fps=video_fps(config))


def _fade(n: int, sample_rate: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, min(n, max(1, round(FADE_SECONDS * sample_rate))), dtype=np.float64)


def tone_envelope(pattern: str, num_samples: int, sample_rate: int) -> np.ndarray:
    """The loudness envelope in [0, 1]: steady (on throughout) or beeping (on/off at 4 Hz), 5 ms fades."""
    env = np.zeros(num_samples)
    if pattern == "steady":
        bursts = [(0, num_samples)]
    elif pattern == "beeping":
        period = sample_rate / BEEP_HZ
        bursts = [
            (round(k * period), min(num_samples, round(k * period + period / 2)))
            for k in range(int(np.ceil(num_samples / period)))
        ]
    else:
        raise AnyGenError(f"unknown pattern {pattern!r} (the world's patterns: steady, beeping)")
    for a, b in bursts:
        if b <= a:
            continue
        env[a:b] = 1.0
        ramp = _fade(b - a, sample_rate)
        env[a : a + len(ramp)] = ramp
        env[b - len(ramp) : b] = np.minimum(env[b - len(ramp) : b], ramp[::-1])
    return env


def render_audio(
    pitch: str,
    pattern: str,
    *,
    config: WorldConfig = DEFAULT_WORLD,
    rng: np.random.Generator | None = None,
) -> Audio:
    """A mono float32 sine tone at ``config.pitches[pitch]`` Hz, ``audio_seconds`` long, amplitude about 0.5,
    steady or beeping (on 125 ms, off 125 ms), with 5 ms fades at every edge."""
    hz = config.pitches[_check(pitch, list(config.pitches), "pitch")]
    _check(pattern, config.patterns, "pattern")
    sr = config.sample_rate
    n = round(config.audio_seconds * sr)
    amplitude, phase = 0.5, 0.0
    if rng is not None and config.jitter:
        amplitude *= rng.uniform(0.8, 1.2)
        hz *= rng.uniform(0.99, 1.01)
        phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(n) / sr
    wave = amplitude * np.sin(2 * np.pi * hz * t + phase) * tone_envelope(pattern, n, sr)
    return Audio(wave.astype(np.float32), sr)
