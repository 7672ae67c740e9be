"""A tiny ImageBind-shaped encoder built from real transformers classes, for tests and CPU smoke runs.

Images and video go through a small ``CLIPVisionModelWithProjection`` (video: ``num_video_frames`` evenly
spaced clips, embeddings averaged like ImageBind's clip averaging). With ``temporal_frames: 2`` the vision tower
sees two frames at once, stacked as channels, as ImageBind's video stem does (an image is its own second frame),
so a clip's embedding can tell which way things move; audio is resampled to 16 kHz, cut into
``audio_clips`` evenly spaced clips, turned into Kaldi-style log-mel features by ``ASTFeatureExtractor`` and
fed to a small ``ASTModel`` plus a linear head. Every vector is L2-normalised into one shared space.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTModel,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from anygen.checkpoints import check_state_dict
from anygen.errors import AnyGenError, MediaError, WeightsError
from anygen.media import Audio, Video, load_image

MODEL_TYPE = "tiny-imagebind"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
AUDIO_SAMPLE_RATE = 16_000
_FBANK_WINDOW, _FBANK_HOP = 400, 160  # Kaldi fbank at 16 kHz: 25 ms window, 10 ms hop


@dataclass(frozen=True)
class TinyImageBindConfig:
    """Sizes of :class:`TinyImageBindEncoder`; the vision and audio towers share width, depth and heads."""

    output_dim: int = 32
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    image_size: int = 32
    patch_size: int = 8
    num_mel_bins: int = 32
    audio_max_frames: int = 100
    audio_patch_size: int = 16
    audio_stride: int = 10
    audio_clips: int = 3
    num_video_frames: int = 4
    temporal_frames: int = 1  # frames per clip seen at once by the vision tower (ImageBind: 2)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AnyGenError(f"TinyImageBindConfig.{f.name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise AnyGenError(
                f"TinyImageBindConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.image_size % self.patch_size:
            raise AnyGenError(
                f"TinyImageBindConfig.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        for name in ("num_mel_bins", "audio_max_frames"):
            if getattr(self, name) < self.audio_patch_size:
                raise AnyGenError(
                    f"TinyImageBindConfig.{name} ({getattr(self, name)}) must be at least "
                    f"audio_patch_size ({self.audio_patch_size})"
                )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TinyImageBindConfig:
        """Build from a dict; unknown keys are an error (they usually mean a different model)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AnyGenError(
                f"TinyImageBindConfig got unknown fields {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**data)

    @property
    def audio_clip_samples(self) -> int:
        """Samples at 16 kHz that fill exactly ``audio_max_frames`` fbank frames."""
        return (self.audio_max_frames - 1) * _FBANK_HOP + _FBANK_WINDOW


class TinyImageBindEncoder(nn.Module):
    """Image/video/audio -> L2-normalised ``[N, output_dim]`` float32 vectors (the :class:`Encoder` protocol).

    Build with :meth:`from_config` (deterministic random weights) or :meth:`from_pretrained`.
    """

    modalities: tuple[str, ...] = ("image", "video", "audio")

    def __init__(self, config: TinyImageBindConfig | None = None) -> None:
        super().__init__()
        config = config or TinyImageBindConfig()
        if not isinstance(config, TinyImageBindConfig):
            raise AnyGenError(f"config must be a TinyImageBindConfig, got {type(config).__name__}")
        self.config = config
        self.output_dim = config.output_dim
        tower = {
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "intermediate_size": config.intermediate_size,
        }
        self.vision = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                **tower,
                image_size=config.image_size,
                patch_size=config.patch_size,
                num_channels=3 * config.temporal_frames,
                projection_dim=config.output_dim,
                attention_dropout=0.0,
            )
        )
        self.audio = ASTModel(
            ASTConfig(
                **tower,
                num_mel_bins=config.num_mel_bins,
                max_length=config.audio_max_frames,
                patch_size=config.audio_patch_size,
                frequency_stride=config.audio_stride,
                time_stride=config.audio_stride,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )
        )
        self.audio_projection = nn.Linear(config.hidden_size, config.output_dim, bias=False)
        self.image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": config.image_size},
            crop_size={"height": config.image_size, "width": config.image_size},
        )
        self.audio_feature_extractor = ASTFeatureExtractor(
            num_mel_bins=config.num_mel_bins,
            max_length=config.audio_max_frames,
            sampling_rate=AUDIO_SAMPLE_RATE,
        )
        self.eval()

    # ------------------------------------------------------------------ construction and checkpoints

    @classmethod
    def from_config(cls, config: TinyImageBindConfig | None = None, seed: int = 0) -> TinyImageBindEncoder:
        """Random weights that depend only on ``config`` and ``seed``; the caller's global RNG is untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(config)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(
            json.dumps({"model_type": MODEL_TYPE, **self.config.to_dict()}, indent=2)
        )
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
        return out

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device | None = None
    ) -> TinyImageBindEncoder:
        """Load a :meth:`save_pretrained` directory strictly; mismatched weights raise :class:`WeightsError`."""
        root = Path(directory)
        config_path, weights_path = root / CONFIG_NAME, root / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise WeightsError(
                    f"tiny ImageBind checkpoint {str(root)!r} has no {path.name}; expected {path}"
                )
        try:
            data = json.loads(config_path.read_text())
            if data.pop("model_type", MODEL_TYPE) != MODEL_TYPE:
                raise AnyGenError(f"model_type is not {MODEL_TYPE!r}")
            config = TinyImageBindConfig.from_dict(data)
        except (json.JSONDecodeError, AnyGenError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{config_path} is not a valid tiny ImageBind config: {exc}") from exc
        try:
            state = load_file(str(weights_path))
        except Exception as exc:  # safetensors raises its own SafetensorError / OSError
            raise WeightsError(f"{weights_path} could not be read as safetensors: {exc}") from exc
        with torch.random.fork_rng(devices=[]):
            model = cls(config)
        check_state_dict(model.state_dict(), state, f"{weights_path} (tiny ImageBind)")
        model.load_state_dict(state, strict=True)
        return model.to(device) if device is not None else model

    # ------------------------------------------------------------------ preprocessing

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """CLIP preprocessing (bicubic shortest-side resize, centre crop, CLIP mean/std): ``[N, 3, S, S]``."""
        pixels = self.image_processor(list(images), return_tensors="np")["pixel_values"]
        return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))

    def preprocess_audio(self, clips: Sequence[np.ndarray]) -> torch.Tensor:
        """16 kHz clips -> normalised log-mel ``[N, audio_max_frames, num_mel_bins]`` (padded/truncated)."""
        padded = [np.pad(c, (0, max(0, _FBANK_WINDOW - len(c)))) for c in clips]  # fbank needs >= 1 window
        features = self.audio_feature_extractor(padded, sampling_rate=AUDIO_SAMPLE_RATE, return_tensors="np")
        return torch.from_numpy(np.ascontiguousarray(features["input_values"], dtype=np.float32))

    def audio_clips(self, audio: Audio) -> list[np.ndarray]:
        """``audio_clips`` evenly spaced windows of the 16 kHz waveform (the whole waveform if it is shorter)."""
        wave = audio.resample(AUDIO_SAMPLE_RATE).waveform
        length = self.config.audio_clip_samples
        starts = np.linspace(0, max(len(wave) - length, 0), self.config.audio_clips).round().astype(int)
        return [wave[s : s + length] for s in starts]

    # ------------------------------------------------------------------ forward passes

    def embed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings ``[N, output_dim]`` of CLIP-normalised pixels: ``[N, 3, S, S]`` images (repeated
        over the ``temporal_frames``) or ``[N, 3 * temporal_frames, S, S]`` clips."""
        t = self.config.temporal_frames
        if pixel_values.shape[1] == 3 and t > 1:
            pixel_values = pixel_values.repeat(1, t, 1, 1)
        return self.vision(pixel_values=pixel_values.to(self.device)).image_embeds

    def video_clips(self, videos: Sequence[Video]) -> torch.Tensor:
        """``num_video_frames`` evenly spaced clips of ``temporal_frames`` frames per video, frames stacked as
        channels: ``[len(videos) * num_video_frames, 3 * temporal_frames, S, S]``."""
        n, t = self.config.num_video_frames, self.config.temporal_frames
        frames = [Image.fromarray(f) for v in videos for f in v.sample_frames(n * t)]
        pixels = self.preprocess_images(frames)
        return pixels.reshape(len(videos) * n, t * 3, *pixels.shape[2:])

    def embed_audio_features(self, features: torch.Tensor) -> torch.Tensor:
        """Unnormalised audio embeddings ``[N, output_dim]`` from log-mel features."""
        pooled = self.audio(input_values=features.to(device=self.device, dtype=self.audio.dtype)).pooler_output
        return self.audio_projection(pooled)

    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any]) -> torch.Tensor:
        """L2-normalised float32 ``[len(items), output_dim]`` on the encoder's device (no gradients)."""
        if modality not in self.modalities:
            raise AnyGenError(
                f"TinyImageBindEncoder cannot encode modality {modality!r}; expected one of {self.modalities}"
            )
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise MediaError(
                f"encode({modality!r}) expects a list of {modality} items, got {type(items).__name__}"
            )
        if len(items) == 0:
            raise MediaError(f"encode({modality!r}) got an empty list; expected at least one {modality}")
        if modality == "image":
            images = [load_image(item, name=f"items[{i}]") for i, item in enumerate(items)]
            vectors = F.normalize(self.embed_pixels(self.preprocess_images(images)), dim=-1)
        elif modality == "video":
            videos = _require(items, Video, modality)
            vectors = _average_groups(self.embed_pixels(self.video_clips(videos)), len(videos))
        else:
            audios = _require(items, Audio, modality)
            clips = [clip for a in audios for clip in self.audio_clips(a)]
            vectors = _average_groups(self.embed_audio_features(self.preprocess_audio(clips)), len(audios))
        return vectors.float()


def _require(items: Sequence[Any], kind: type, modality: str) -> list:
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            raise MediaError(
                f"encode({modality!r}): items[{i}] is a {type(item).__name__}; expected anygen.media.{kind.__name__} "
                f"(use anygen.media.{kind.__name__}.load)"
            )
    return list(items)


def _average_groups(embeddings: torch.Tensor, groups: int) -> torch.Tensor:
    """Normalise each row, average consecutive equal-size groups, normalise again (ImageBind clip averaging)."""
    per_item = F.normalize(embeddings, dim=-1).view(groups, -1, embeddings.shape[-1])
    return F.normalize(per_item.mean(dim=1), dim=-1)
