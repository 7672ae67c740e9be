"""Media types and I/O: images are ``PIL.Image.Image``; audio and video are small dataclasses.

Every loader accepts a path (``str``/``Path``), raw ``bytes`` or an in-memory array/object, and raises
:class:`anygen.errors.MediaError` naming the input (the path, or ``<bytes>``/``<array>`` plus ``name`` when
given) and what was expected when the input is missing, unreadable or malformed.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from anygen.errors import MediaError

MEDIA_MODALITIES = ("image", "audio", "video")

PathLike = str | Path
_BYTES = (bytes, bytearray, memoryview)
_SOUNDFILE_SUFFIXES = {".wav": "WAV", ".flac": "FLAC"}
_SUBTYPES = ("PCM_16", "FLOAT")
_TEXT_DEMUXERS = {"tty"}

#: Largest image (or video frame) decoded by default, in pixels: checked from the file's header, before the
#: pixels are decoded (a small PNG can declare 14000x14000). ``max_pixels=None`` leaves only PIL's own check.
MAX_PIXELS = 50_000_000
#: Largest video decoded by default: all its frames' pixels together (1e9 pixels hold 3 GB of RGB).
MAX_VIDEO_PIXELS = 1_000_000_000
_OBJECT_REPR = re.compile(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>")


# --------------------------------------------------------------------------- helpers


def describe_source(source: Any, name: str | None = None) -> str:
    """A short label for ``source`` in error messages: the path, ``<bytes>`` or ``<array>`` (+ ``name``)."""
    if isinstance(source, (str, Path)):
        label = repr(str(source))
    elif isinstance(source, _BYTES):
        label = "<bytes>"
    elif isinstance(source, np.ndarray):
        label = "<array>"
    else:
        label = f"<{type(source).__name__}>"
    return f"{label} ({name})" if name else label


def _reason(exc: BaseException) -> str:
    """A decoder's message without object reprs such as ``<_io.BytesIO object at 0x7f...>``."""
    text = _OBJECT_REPR.sub("", str(exc)).strip()
    return text or type(exc).__name__


def _check_pixels(width: int, height: int, max_pixels: int | None, desc: str, kind: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise MediaError(
            f"{kind} {desc} is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels} "
            "pixels (max_input_pixels); expected a smaller file"
        )


def _existing_file(source: PathLike, kind: str) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise MediaError(f"{kind} file {str(source)!r} not found; expected an existing {kind} file")
    if not path.is_file():
        raise MediaError(f"{kind} path {str(source)!r} is not a file; expected an existing {kind} file")
    return path


def _prepare_output(path: PathLike, allowed: dict[str, str] | tuple[str, ...], kind: str) -> Path:
    out = Path(path).expanduser()
    suffix = out.suffix.lower()
    if suffix not in allowed:
        raise MediaError(
            f"cannot save {kind} to {str(path)!r}: expected a file ending in one of {sorted(allowed)}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _evenly_spaced(total: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``range(total)`` (first and last included; repeats if n > total)."""
    return np.linspace(0, total - 1, n).round().astype(np.int64)


def _positive_number(value: Any, what: str, *, integer: bool) -> Any:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = float(value)
        ok = math.isfinite(value) and value > 0 and (not integer or value.is_integer())
    if not ok:
        expected = "a positive integer" if integer else "a positive finite number"
        raise MediaError(f"{what} must be {expected}, got {value!r}")
    return int(value) if integer else value


# --------------------------------------------------------------------------- images


def _image_from_array(array: np.ndarray, desc: str) -> Image.Image:
    if array.size == 0:
        raise MediaError(f"image {desc} is empty (shape {array.shape}); expected an HxW or HxWx3 array")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise MediaError(f"image {desc} has shape {array.shape}; expected HxW, HxWx3 (RGB) or HxWx4 (RGBA)")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise MediaError(
                f"image {desc} is a float array with values outside [0, 1]; expected floats in [0, 1]"
            )
        array = np.round(array * 255)
    elif array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise MediaError(f"image {desc} has integer values outside [0, 255]; expected uint8 pixel values")
    else:
        raise MediaError(f"image {desc} has dtype {array.dtype}; expected uint8 or float in [0, 1]")
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    return image.convert("RGB")


def load_image(source: Any, *, name: str | None = None, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """An RGB ``PIL.Image.Image`` from a path, bytes, a numpy array (uint8, or float in [0, 1]) or a PIL image.

    A file whose header declares more than ``max_pixels`` pixels is refused before its pixels are decoded
    (as are PIL's own decompression bombs): :class:`MediaError`.
    """
    desc = describe_source(source, name)
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    if isinstance(source, np.ndarray):
        return _image_from_array(source, desc)
    if isinstance(source, (str, Path)):
        stream: Any = _existing_file(source, "image")
    elif isinstance(source, _BYTES):
        if len(source) == 0:
            raise MediaError(f"image {desc} is empty; expected the bytes of an image file (PNG, JPEG, ...)")
        stream = io.BytesIO(bytes(source))
    else:
        raise MediaError(
            f"image {desc}: unsupported type {type(source).__name__}; expected a path, bytes, a numpy array "
            "or a PIL image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                _check_pixels(*image.size, max_pixels, desc, "image")
                image.load()
                image = ImageOps.exif_transpose(image)
                return image.convert("RGB")
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(
            f"image {desc} is too large to decode ({_reason(exc)}); expected a smaller image"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(
            f"image {desc} could not be decoded ({_reason(exc)}); expected a valid image file"
        ) from None


def save_image(image: Image.Image | np.ndarray, path: PathLike) -> Path:
    """Write ``image`` to ``path``; the format follows the suffix (``.png``, ``.jpg``, ...)."""
    out = Path(path).expanduser()
    if not out.suffix:
        raise MediaError(
            f"cannot save image to {str(path)!r}: expected a file name with a suffix such as .png"
        )
    image = load_image(image, name="image")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        image.save(out)
    except (KeyError, ValueError, OSError) as exc:
        raise MediaError(
            f"cannot save image to {str(path)!r} ({exc}); expected a suffix PIL can write"
        ) from exc
    return out


# --------------------------------------------------------------------------- audio


def _as_waveform(data: Any, desc: str) -> np.ndarray:
    """Mono float32 ``[num_samples]``: 2-D input is averaged over its shorter (channel) axis, integer PCM is
    scaled to [-1, 1]."""
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise MediaError(f"audio {desc} is not array-like ({exc}); expected a 1-D waveform") from exc
    if array.size == 0:
        raise MediaError(f"audio {desc} is empty (shape {array.shape}); expected a non-empty 1-D waveform")
    if array.ndim == 2:
        # [channels, samples] or [samples, channels]: the channels are the shorter axis.
        channel_axis = 0 if array.shape[0] <= array.shape[1] else 1
        array = _pcm_to_float(array, desc).mean(axis=channel_axis)
    if array.ndim != 1:
        raise MediaError(
            f"audio {desc} has shape {array.shape}; expected a 1-D waveform [samples] "
            "or 2-D [channels, samples] / [samples, channels]"
        )
    array = _pcm_to_float(array, desc)
    if not np.isfinite(array).all():
        raise MediaError(f"audio {desc} contains NaN or infinite samples; expected finite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def _pcm_to_float(array: np.ndarray, desc: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "f":
        return array.astype(np.float32, copy=False)
    if kind == "i":
        return (array / float(2 ** (8 * array.dtype.itemsize - 1))).astype(np.float32)
    if kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array - half) / half).astype(np.float32)
    raise MediaError(f"audio {desc} has dtype {array.dtype}; expected float or integer PCM samples")


def _decode_audio_soundfile(stream: Any) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(stream, dtype="float32", always_2d=True)  # [samples, channels]
    return data.mean(axis=1), int(rate)


def _decode_audio_av(stream: Any, desc: str) -> tuple[np.ndarray, int]:
    import av

    with av.open(stream) as container:
        if not container.streams.audio:
            raise MediaError(f"audio {desc} has no audio stream; expected an audio file")
        audio_stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # planar float, original layout and rate
        chunks = []
        for frame in container.decode(audio_stream):
            chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        rate = audio_stream.rate or audio_stream.codec_context.sample_rate
    if not chunks:
        raise MediaError(f"audio {desc} decoded to zero samples; expected a non-empty audio file")
    return np.concatenate(chunks, axis=1).mean(axis=0), int(rate)  # planar [channels, samples] -> mono


def _decode_audio(source: PathLike | bytes, desc: str) -> tuple[np.ndarray, int]:
    import av
    import soundfile as sf

    def opener() -> Any:
        return str(source) if isinstance(source, (str, Path)) else io.BytesIO(bytes(source))

    try:
        return _decode_audio_soundfile(opener())
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError):
        pass  # not a libsndfile format (e.g. MP3/M4A in older builds): try FFmpeg
    try:
        return _decode_audio_av(opener(), desc)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(
            f"audio {desc} could not be decoded ({_reason(exc)}); expected an audio file (WAV, FLAC, OGG, MP3, M4A, ...)"
        ) from exc


@dataclass
class Audio:
    """Mono audio: ``waveform`` float32 ``[num_samples]`` in [-1, 1], ``sample_rate`` in Hz.

    The constructor converts what it can (lists, float64, integer PCM, ``[1, n]``, stereo is averaged) and
    raises :class:`MediaError` for empty, non-finite or higher-dimensional data and a bad sample rate.
    """

    waveform: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        self.waveform = _as_waveform(self.waveform, "Audio.waveform")
        self.sample_rate = _positive_number(self.sample_rate, "Audio.sample_rate", integer=True)

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    @classmethod
    def load(cls, source: Any, *, sample_rate: int | None = None, name: str | None = None) -> Audio:
        """Audio from a path, bytes (WAV/FLAC/OGG via soundfile, others via PyAV), an ``Audio`` or an array.

        Arrays need ``sample_rate``; ``[channels, samples]`` / ``[samples, channels]`` are mixed down to mono.
        """
        desc = describe_source(source, name)
        if isinstance(source, Audio):
            return source
        if isinstance(source, (np.ndarray, list, tuple)):
            if sample_rate is None:
                raise MediaError(
                    f"audio {desc}: an array needs sample_rate=...; expected Audio.load(array, sample_rate=16000)"
                )
            rate = _positive_number(sample_rate, f"sample_rate for audio {desc}", integer=True)
            return cls(_as_waveform(source, desc), rate)
        if isinstance(source, (str, Path)):
            _existing_file(source, "audio")
        elif isinstance(source, _BYTES):
            if len(source) == 0:
                raise MediaError(f"audio {desc} is empty; expected the bytes of an audio file")
        else:
            raise MediaError(
                f"audio {desc}: unsupported type {type(source).__name__}; expected a path, bytes or a numpy array"
            )
        data, rate = _decode_audio(source, desc)
        return cls(_as_waveform(data, desc), rate)

    def resample(self, sample_rate: int) -> Audio:
        """This audio at ``sample_rate`` (polyphase filtering with a gcd-reduced ratio); ``self`` if unchanged."""
        from scipy.signal import resample_poly

        target = _positive_number(sample_rate, "sample_rate", integer=True)
        if target == self.sample_rate:
            return self
        g = math.gcd(target, self.sample_rate)
        out = resample_poly(self.waveform, target // g, self.sample_rate // g)
        return Audio(out.astype(np.float32), target)

    def save(self, path: PathLike, *, subtype: str = "PCM_16") -> Path:
        """Write a WAV (or FLAC) file; ``subtype`` is ``"PCM_16"`` (clipped to [-1, 1]) or ``"FLOAT"`` (WAV only)."""
        import soundfile as sf

        out = _prepare_output(path, _SOUNDFILE_SUFFIXES, "audio")
        if subtype not in _SUBTYPES:
            raise MediaError(f"audio subtype must be one of {_SUBTYPES}, got {subtype!r}")
        fmt = _SOUNDFILE_SUFFIXES[out.suffix.lower()]
        if fmt == "FLAC" and subtype == "FLOAT":
            raise MediaError(
                f"cannot save float samples to FLAC {str(path)!r}; expected subtype='PCM_16' or a .wav path"
            )
        data = np.clip(self.waveform, -1.0, 1.0) if subtype == "PCM_16" else self.waveform
        sf.write(str(out), data, self.sample_rate, subtype=subtype, format=fmt)
        return out


# --------------------------------------------------------------------------- video


def _as_frames(data: Any, desc: str) -> np.ndarray:
    """uint8 ``[T, H, W, 3]``; float frames in [0, 1] are scaled to 0..255."""
    try:
        frames = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise MediaError(
            f"video {desc} is not array-like ({exc}); expected uint8 frames [T, H, W, 3]"
        ) from exc
    if frames.size == 0:
        raise MediaError(
            f"video {desc} is empty (shape {frames.shape}); expected uint8 frames [T, H, W, 3] with T >= 1"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise MediaError(f"video {desc} has shape {frames.shape}; expected RGB frames [T, H, W, 3]")
    if frames.dtype.kind == "f":
        if not np.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
            raise MediaError(
                f"video {desc} has float values outside [0, 1]; expected uint8 or floats in [0, 1]"
            )
        frames = np.round(frames * 255).astype(np.uint8)
    elif frames.dtype != np.uint8:
        raise MediaError(f"video {desc} has dtype {frames.dtype}; expected uint8 (or float in [0, 1])")
    return np.ascontiguousarray(frames)


def _decode_video(
    source: PathLike | bytes,
    desc: str,
    max_pixels: int | None = MAX_PIXELS,
    max_video_pixels: int | None = MAX_VIDEO_PIXELS,
) -> tuple[np.ndarray, float]:
    import av

    stream_in = str(source) if isinstance(source, (str, Path)) else io.BytesIO(bytes(source))
    try:
        with av.open(stream_in) as container:
            if not container.streams.video:
                raise MediaError(
                    f"video {desc} has no video stream; expected a video file (MP4, WebM, GIF, ...)"
                )
            stream = container.streams.video[0]
            context = stream.codec_context
            if context.width and context.height:  # the header's frame size, before any frame is decoded
                _check_pixels(context.width, context.height, max_pixels, desc, "video")
            if container.format.name in _TEXT_DEMUXERS:
                # FFmpeg renders plain text files as "video" (tty/ANSI demuxer); that is never what is meant.
                raise MediaError(
                    f"video {desc} is a text file, not a video; expected a video file (MP4, WebM, GIF, ...)"
                )
            frames: list[np.ndarray] = []
            size: dict[str, int] = {}
            total = 0
            for frame in container.decode(stream):
                _check_pixels(frame.width, frame.height, max_pixels, desc, "video")
                if not size:
                    size = {"width": frame.width, "height": frame.height}
                total += size["width"] * size["height"]
                if max_video_pixels is not None and total > max_video_pixels:
                    raise MediaError(
                        f"video {desc} holds more than {max_video_pixels} pixels in all its frames (after "
                        f"{len(frames) + 1} frames of {size['width']}x{size['height']}; max_input_video_pixels); "
                        "expected a shorter or smaller video"
                    )
                frames.append(frame.to_ndarray(format="rgb24", **size))
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            duration = container.duration / 1e6 if container.duration else None
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(
            f"video {desc} could not be decoded ({_reason(exc)}); expected a video file (MP4, WebM, GIF, ...)"
        ) from exc
    if not frames:
        raise MediaError(f"video {desc} decoded to zero frames; expected at least one frame")
    if rate:
        fps = float(rate)
    elif duration:
        fps = len(frames) / duration
    else:
        fps = 25.0
    return np.stack(frames), fps


def _even_size(frames: np.ndarray) -> np.ndarray:
    """Pad (edge-replicate) height and width up to even numbers, as yuv420p needs."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


@dataclass
class Video:
    """Video frames: ``frames`` uint8 ``[T, H, W, 3]`` (RGB), ``fps`` frames per second.

    The constructor converts float frames in [0, 1] to uint8 and raises :class:`MediaError` for other shapes,
    dtypes, empty arrays and a non-positive ``fps``.
    """

    frames: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        self.frames = _as_frames(self.frames, "Video.frames")
        self.fps = _positive_number(self.fps, "Video.fps", integer=False)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds (``num_frames / fps``)."""
        return self.num_frames / self.fps

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        name: str | None = None,
        max_pixels: int | None = MAX_PIXELS,
        max_video_pixels: int | None = MAX_VIDEO_PIXELS,
    ) -> Video:
        """A video from a path or bytes (decoded with PyAV), a ``Video``, or an array ``[T, H, W, 3]`` (needs ``fps``).

        With ``num_frames``, that many evenly spaced frames are kept and ``fps`` is scaled so the duration holds.
        A file is refused (:class:`MediaError`) when a frame has more than ``max_pixels`` pixels (checked from
        the header first) or all its frames more than ``max_video_pixels``.
        """
        desc = describe_source(source, name)
        if num_frames is not None:
            num_frames = _positive_number(num_frames, f"num_frames for video {desc}", integer=True)
        if isinstance(source, Video):
            video = source
        elif isinstance(source, (np.ndarray, list, tuple)):
            if fps is None:
                raise MediaError(f"video {desc}: an array needs fps=...; expected Video.load(frames, fps=8)")
            rate = _positive_number(fps, f"fps for video {desc}", integer=False)
            video = cls(_as_frames(source, desc), rate)
        elif isinstance(source, (str, Path, *_BYTES)):
            if isinstance(source, (str, Path)):
                _existing_file(source, "video")
            elif len(source) == 0:
                raise MediaError(f"video {desc} is empty; expected the bytes of a video file")
            video = cls(*_decode_video(source, desc, max_pixels, max_video_pixels))
        else:
            raise MediaError(
                f"video {desc}: unsupported type {type(source).__name__}; expected a path, bytes or a numpy array"
            )
        if num_frames is None or num_frames == video.num_frames:
            return video
        return Video(video.sample_frames(num_frames), video.fps * num_frames / video.num_frames)

    def sample_frames(self, n: int) -> np.ndarray:
        """``n`` evenly spaced frames ``[n, H, W, 3]`` (first and last included; repeated if ``n > num_frames``)."""
        n = _positive_number(n, "number of frames to sample", integer=True)
        return self.frames[_evenly_spaced(self.num_frames, n)]

    def save(self, path: PathLike) -> Path:
        """Write ``.mp4`` (H.264, yuv420p; odd sizes are edge-padded to even) or ``.gif`` (PIL).

        GIF stores per-frame delays in 1/100 s, and PIL merges identical consecutive frames into one.
        """
        out = _prepare_output(path, (".mp4", ".gif"), "video")
        if out.suffix.lower() == ".gif":
            images = [Image.fromarray(f) for f in self.frames]
            delay = max(int(round(1000 / self.fps)), 10)
            images[0].save(out, save_all=True, append_images=images[1:], duration=delay, loop=0)
        else:
            self._save_mp4(out)
        return out

    def _save_mp4(self, out: Path) -> None:
        import av

        frames = _even_size(self.frames)
        rate = Fraction(self.fps).limit_denominator(1001)
        with av.open(str(out), mode="w") as container:
            stream = container.add_stream(
                "libx264" if "libx264" in av.codecs_available else "h264", rate=rate
            )
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1  # threaded encoding gives different bytes run to run
            for array in frames:
                frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p", threads=1)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))


# --------------------------------------------------------------------------- dispatch


def load_media(modality: str, source: Any, **kwargs: Any) -> Image.Image | Audio | Video:
    """Load ``source`` as ``"image"`` (PIL), ``"audio"`` (:class:`Audio`) or ``"video"`` (:class:`Video`).

    ``kwargs`` go to the loader (``name``; ``sample_rate`` for audio arrays; ``fps``/``num_frames`` for video;
    ``max_pixels`` for images and video, ``max_video_pixels`` for video: audio ignores those two).
    """
    if modality == "image":
        kwargs.pop("max_video_pixels", None)
        return load_image(source, **kwargs)
    if modality == "audio":
        kwargs.pop("max_pixels", None)
        kwargs.pop("max_video_pixels", None)
        return Audio.load(source, **kwargs)
    if modality == "video":
        return Video.load(source, **kwargs)
    raise MediaError(f"unknown media modality {modality!r}; expected one of {MEDIA_MODALITIES}")
