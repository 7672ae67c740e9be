"""Media types: images are ``PIL.Image.Image``; audio and video are small dataclasses.

(Skeleton: loading/saving helpers are being filled in.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Audio:
    """Mono audio: ``waveform`` float32 ``[num_samples]`` in [-1, 1], ``sample_rate`` in Hz."""

    waveform: np.ndarray
    sample_rate: int


@dataclass
class Video:
    """Video frames: ``frames`` uint8 ``[T, H, W, 3]`` (RGB), ``fps`` frames per second."""

    frames: np.ndarray
    fps: float
