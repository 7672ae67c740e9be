"""ImageBind's input preprocessing, without torchvision, torchaudio or pytorchvideo.

Each function reproduces what ImageBind's reference data loading does for one modality:

* images: bicubic resize of the shorter side to 224 (PIL), centre crop 224, CLIP mean/std
  -> ``[3, 224, 224]``;
* audio: resample to 16 kHz, 3 clips of 2 s spread evenly over the whole duration, each clip
  mean-removed and turned into a 128-bin Kaldi log-mel filterbank (25 ms / 10 ms frames, Hanning
  window), cropped or zero-padded to 204 frames, then normalised ``(x + 4.268) / 9.138``
  -> ``[3, 1, 128, 204]``;
* video: 5 clips of 2 s spread evenly over the duration, 2 frames per clip (first and last frame of
  the clip), shorter side bilinearly scaled to 224, CLIP mean/std, 3 spatial crops along the longer
  side -> ``[15, 3, 2, 224, 224]`` (clips x crops, channels, frames, height, width).

The Kaldi filterbank is implemented here in plain torch (:func:`kaldi_fbank`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from math import gcd
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anygen.errors import MediaError
from anygen.media import Audio, Video

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

AUDIO_SAMPLE_RATE = 16000
AUDIO_NUM_MEL_BINS = 128
AUDIO_TARGET_FRAMES = 204
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138

# Smallest positive float32 step above 1, Kaldi's floor before taking the log.
_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def image_to_tensor(image: Image.Image, size: int = 224) -> torch.Tensor:
    """One PIL image -> normalised ``[3, size, size]`` float32 tensor (ImageBind / CLIP transform)."""
    if not isinstance(image, Image.Image):
        raise MediaError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    image = image.convert("RGB")
    width, height = image.size
    if width == 0 or height == 0:
        raise MediaError(f"image has zero size {image.size}")
    # Shorter side -> size, longer side scaled and truncated to an int (torchvision's Resize(int)).
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    # Centre crop; offsets rounded the way torchvision's CenterCrop rounds them.
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    pixels = pixels.to(torch.float32).div(255.0)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


def images_to_tensor(images: list[Image.Image], size: int = 224) -> torch.Tensor:
    """A list of PIL images -> ``[N, 3, size, size]``."""
    return torch.stack([image_to_tensor(im, size) for im in images])


# --------------------------------------------------------------------------------------------------
# Clip sampling (pytorchvideo's ConstantClipsPerVideoSampler, as ImageBind uses it)
# --------------------------------------------------------------------------------------------------


def constant_clip_times(
    duration: float, clip_duration: int, num_clips: int
) -> list[tuple[Fraction, Fraction]]:
    """``num_clips`` windows of ``clip_duration`` seconds with starts spread evenly over the duration.

    Starts are ``i * max(duration - clip_duration, 0) / (num_clips - 1)``; a medium shorter than one
    clip gives ``num_clips`` windows all starting at 0. Exact fractions, as the reference sampler uses.
    """
    if num_clips < 1:
        raise ValueError("num_clips must be at least 1")
    max_start = Fraction(max(duration - clip_duration, 0))
    step = max_start / max(num_clips - 1, 1)
    return [(step * i, step * i + clip_duration) for i in range(num_clips)]


# --------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------


def _mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log(1.0 + freq / 700.0)
    return 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_banks(
    num_bins: int,
    padded_window_size: int,
    sample_rate: float,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Kaldi's triangular mel filters: ``[num_bins, padded_window_size // 2 + 1]`` (last column 0).

    Triangles are linear on Kaldi's mel scale ``1127 ln(1 + f / 700)``, with ``num_bins + 2`` equally
    spaced edges between ``low_freq`` and ``high_freq`` (``<= 0`` means relative to Nyquist).
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"bad mel frequency range [{low_freq}, {high_freq}] for sample rate {sample_rate}")
    num_fft_bins = padded_window_size // 2
    fft_bin_width = sample_rate / padded_window_size
    mel_low = _mel_scale(low_freq)
    mel_high = _mel_scale(high_freq)
    mel_delta = (mel_high - mel_low) / (num_bins + 1)
    edges = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left = mel_low + edges * mel_delta
    centre = mel_low + (edges + 1.0) * mel_delta
    right = mel_low + (edges + 2.0) * mel_delta
    mel = _mel_scale(fft_bin_width * torch.arange(num_fft_bins, dtype=torch.float32)).unsqueeze(0)
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


def _window(kind: str, length: int) -> torch.Tensor:
    if kind == "hanning":
        return torch.hann_window(length, periodic=False, dtype=torch.float32)
    if kind == "povey":
        return torch.hann_window(length, periodic=False, dtype=torch.float32).pow(0.85)
    if kind == "hamming":
        return torch.hamming_window(length, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float32)
    if kind == "rectangular":
        return torch.ones(length, dtype=torch.float32)
    raise ValueError(f"unknown window type {kind!r} (hanning, povey, hamming, rectangular)")


def kaldi_fbank(
    waveform: torch.Tensor | np.ndarray,
    *,
    sample_rate: int = AUDIO_SAMPLE_RATE,
    num_mel_bins: int = AUDIO_NUM_MEL_BINS,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window_type: str = "hanning",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    use_power: bool = True,
) -> torch.Tensor:
    """Kaldi-compatible log mel filterbank of a mono waveform: ``[num_frames, num_mel_bins]`` float32.

    Matches Kaldi's ``compute-fbank-feats`` with dither 0, ``snip_edges`` (only whole frames),
    the FFT size rounded up to a power of two and no energy term (so ``htk_compat`` has no effect).
    Per frame: remove the DC offset, pre-emphasise ``x[i] - k x[i-1]`` (``x[-1] = x[0]``), window,
    zero-pad, power spectrum, mel filters, ``log(max(e, float32 eps))``. A waveform shorter than one
    frame gives ``[0, num_mel_bins]``.
    """
    x = torch.as_tensor(waveform, dtype=torch.float32)
    if x.ndim != 1:
        raise ValueError(f"kaldi_fbank expects a mono waveform [num_samples], got shape {tuple(x.shape)}")
    win_len = int(sample_rate * frame_length_ms * 0.001)
    win_shift = int(sample_rate * frame_shift_ms * 0.001)
    fft_size = 1 << (win_len - 1).bit_length()
    if x.numel() < win_len:
        return x.new_zeros((0, num_mel_bins))
    frames = x.contiguous().unfold(0, win_len, win_shift)  # [num_frames, win_len]
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis != 0.0:
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - preemphasis * previous
    frames = frames * _window(window_type, win_len)
    frames = F.pad(frames, (0, fft_size - win_len))
    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = kaldi_mel_banks(num_mel_bins, fft_size, sample_rate, low_freq, high_freq)
    mel = spectrum @ banks.T
    return torch.clamp(mel, min=_FLOAT32_EPS).log()


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``); float32 out."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if int(orig_rate) == int(target_rate):
        return waveform
    from scipy.signal import resample_poly

    g = gcd(int(orig_rate), int(target_rate))
    out = resample_poly(waveform, int(target_rate) // g, int(orig_rate) // g)
    return np.asarray(out, dtype=np.float32)


def _check_audio(audio: Audio) -> np.ndarray:
    if not isinstance(audio, Audio):
        raise MediaError(f"expected an anygen.media.Audio, got {type(audio).__name__}")
    waveform = np.asarray(audio.waveform)
    if waveform.ndim != 1:
        raise MediaError(f"Audio.waveform must be mono [num_samples], got shape {waveform.shape}")
    if waveform.size == 0:
        raise MediaError("Audio.waveform is empty")
    if not audio.sample_rate or audio.sample_rate <= 0:
        raise MediaError(f"Audio.sample_rate must be positive, got {audio.sample_rate}")
    if not np.all(np.isfinite(waveform)):
        raise MediaError("Audio.waveform contains NaN or infinite samples")
    return waveform


def audio_to_tensor(
    audio: Audio,
    *,
    num_clips: int = 3,
    clip_duration: int = 2,
    sample_rate: int = AUDIO_SAMPLE_RATE,
    num_mel_bins: int = AUDIO_NUM_MEL_BINS,
    target_frames: int = AUDIO_TARGET_FRAMES,
    mean: float = AUDIO_MEAN,
    std: float = AUDIO_STD,
) -> torch.Tensor:
    """One :class:`Audio` -> ``[num_clips, 1, num_mel_bins, target_frames]`` normalised fbank clips."""
    waveform = resample(_check_audio(audio), int(audio.sample_rate), sample_rate)
    # Work on one tensor and remove each clip's mean in place: clips share memory with it, exactly as
    # in ImageBind's loader, so where clips overlap a later clip sees samples an earlier clip already
    # shifted (a tiny effect, kept for fidelity).
    signal = torch.from_numpy(waveform.copy())
    clips = []
    for start, end in constant_clip_times(signal.numel() / sample_rate, clip_duration, num_clips):
        clip = signal[int(start * sample_rate) : int(end * sample_rate)]
        clip -= clip.mean()
        fbank = kaldi_fbank(clip, sample_rate=sample_rate, num_mel_bins=num_mel_bins).T  # [bins, frames]
        if fbank.shape[1] < target_frames:
            fbank = F.pad(fbank, (0, target_frames - fbank.shape[1]))
        else:
            fbank = fbank[:, :target_frames]
        clips.append((fbank.unsqueeze(0) - mean) / std)
    return torch.stack(clips)


def audios_to_tensor(audios: list[Audio], **kwargs) -> torch.Tensor:
    """A list of :class:`Audio` -> ``[N, clips, 1, mel_bins, frames]``."""
    return torch.stack([audio_to_tensor(a, **kwargs) for a in audios])


# --------------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------------


def _check_video(video: Video) -> np.ndarray:
    if not isinstance(video, Video):
        raise MediaError(f"expected an anygen.media.Video, got {type(video).__name__}")
    frames = np.asarray(video.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise MediaError(f"Video.frames must be [T>0, H, W, 3], got shape {frames.shape}")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise MediaError(f"Video.frames has zero-sized frames {frames.shape}")
    if not video.fps or video.fps <= 0:
        raise MediaError(f"Video.fps must be positive, got {video.fps}")
    return frames


def video_frame_indices(
    num_frames: int, fps: float, *, num_clips: int = 5, clip_duration: int = 2, frames_per_clip: int = 2
) -> list[list[int]]:
    """The frame indices ImageBind reads: per clip, ``frames_per_clip`` evenly spaced frames.

    A clip ``[start, end)`` holds frames ``ceil(fps * start) .. min(ceil(fps * end), T) - 1`` (the
    decoder's rule); those are subsampled at ``linspace(0, n - 1, frames_per_clip)`` (truncated).
    """
    fps = float(fps)
    duration = float(num_frames) / fps
    out = []
    for start, end in constant_clip_times(duration, clip_duration, num_clips):
        first = math.ceil(fps * start)
        stop = min(math.ceil(fps * end), num_frames)
        if stop <= first:  # nothing decodable in the window: fall back to the nearest frame
            first, stop = min(first, num_frames - 1), min(first, num_frames - 1) + 1
        n = stop - first
        picks = torch.linspace(0, n - 1, frames_per_clip).clamp(0, n - 1).long().tolist()
        out.append([first + p for p in picks])
    return out


def _spatial_crops(clip: torch.Tensor, size: int, num_crops: int) -> list[torch.Tensor]:
    """``clip`` ``[C, T, H, W]`` -> crops along the longer side (start/centre/end, or centre only)."""
    height, width = clip.shape[-2:]
    y_centre = int(math.ceil((height - size) / 2))
    x_centre = int(math.ceil((width - size) / 2))
    crops = []
    for index in (0, 1, 2) if num_crops == 3 else (1,):
        y, x = y_centre, x_centre
        if height > width:
            y = {0: 0, 1: y_centre, 2: height - size}[index]
        else:
            x = {0: 0, 1: x_centre, 2: width - size}[index]
        crops.append(clip[..., y : y + size, x : x + size])
    return crops


def video_to_tensor(
    video: Video,
    *,
    num_clips: int = 5,
    clip_duration: int = 2,
    frames_per_clip: int = 2,
    size: int = 224,
    num_crops: int = 3,
) -> torch.Tensor:
    """One :class:`Video` -> ``[num_clips * num_crops, 3, frames_per_clip, size, size]``.

    Spatial crops of one clip are consecutive (ImageBind treats each crop as one more clip).
    """
    if num_crops not in (1, 3):
        raise ValueError("num_crops must be 1 or 3")
    frames = _check_video(video)
    indices = video_frame_indices(
        frames.shape[0],
        video.fps,
        num_clips=num_clips,
        clip_duration=clip_duration,
        frames_per_clip=frames_per_clip,
    )
    flat = [i for clip in indices for i in clip]
    x = torch.from_numpy(np.ascontiguousarray(frames[flat])).to(torch.float32) / 255.0  # [S*F, H, W, 3]
    x = x.permute(0, 3, 1, 2)  # [S*F, 3, H, W]
    height, width = x.shape[-2:]
    if width < height:
        new_h, new_w = int(math.floor(float(height) / width * size)), size
    else:
        new_h, new_w = size, int(math.floor(float(width) / height * size))
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x - mean) / std
    x = x.reshape(num_clips, frames_per_clip, 3, new_h, new_w).permute(0, 2, 1, 3, 4)  # [S, 3, F, h, w]
    crops = [crop for clip in x for crop in _spatial_crops(clip, size, num_crops)]
    return torch.stack(crops).contiguous()


def videos_to_tensor(videos: list[Video], **kwargs) -> torch.Tensor:
    """A list of :class:`Video` -> ``[N, clips * crops, 3, frames, size, size]``."""
    return torch.stack([video_to_tensor(v, **kwargs) for v in videos])


def read_video(path: str | Path) -> Video:
    """Decode every frame of a video file's first video stream with PyAV -> :class:`Video` (RGB)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot decode video {path}: {exc}") from exc
    if not frames:
        raise MediaError(f"{path} contains no decodable frames")
    if not rate:
        raise MediaError(f"{path}: frame rate unknown")
    return Video(frames=np.stack(frames), fps=float(rate))
