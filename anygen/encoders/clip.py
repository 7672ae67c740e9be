"""CLIP image/video encoder: transformers' ``CLIPVisionModelWithProjection`` and ``CLIPImageProcessorPil``.

Images are preprocessed the CLIP way (bicubic shortest-side resize, centre crop, CLIP mean/std) and embedded
with the vision tower plus its projection. A video is ``num_video_frames`` evenly spaced frames, each embedded
as an image and L2-normalised, averaged, and normalised again. Every vector is float32 with unit norm.

Weights come from a local Hugging Face folder (:meth:`ClipImageEncoder.from_pretrained`): a whole CLIP model
such as ``openai/clip-vit-large-patch14`` (``config.json`` with ``model_type: clip``; the text tower is
ignored) or a vision-only ``CLIPVisionModelWithProjection`` folder as :meth:`~ClipImageEncoder.save_pretrained`
writes it. :meth:`~ClipImageEncoder.from_config` builds a tiny random model for tests. Nothing is downloaded.

The small helpers at the bottom (folder checks, loading-report checks, item validation) are shared with
:mod:`anygen.encoders.clap`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

from anygen.checkpoints import load_error_reason
from anygen.encoders.token_configs import read_json
from anygen.errors import AnyGenError, MediaError, WeightsError
from anygen.media import Video, load_image

CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
SETTINGS_NAME = "anygen_encoder.json"  # encoder-level settings (not part of the HF model config); optional
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
DEFAULT_VIDEO_FRAMES = 8
ENCODE_BATCH = 32  # images (or video frames) per forward pass


@dataclass(frozen=True)
class TinyClipConfig:
    """Sizes of a tiny random CLIP vision tower (:meth:`ClipImageEncoder.from_config`)."""

    output_dim: int = 32  # projection_dim: width of every returned vector
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    image_size: int = 32
    patch_size: int = 8
    num_video_frames: int = 4  # encoder setting: frames averaged per video

    def __post_init__(self) -> None:
        for f in fields(self):
            _positive_int(getattr(self, f.name), f"TinyClipConfig.{f.name}")
        if self.hidden_size % self.num_heads:
            raise AnyGenError(
                f"TinyClipConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.image_size % self.patch_size:
            raise AnyGenError(
                f"TinyClipConfig.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TinyClipConfig:
        """Build from a dict (``None`` = defaults); unknown keys are an error."""
        return cls(**_known_fields(cls, data or {}))


class ClipImageEncoder(nn.Module):
    """Image/video -> L2-normalised float32 ``[N, output_dim]`` (the :class:`~anygen.encoders.base.Encoder` protocol).

    ``model`` is a ``CLIPVisionModelWithProjection``; ``image_processor`` a ``CLIPImageProcessorPil``.
    Build with :meth:`from_pretrained` (a local HF folder) or :meth:`from_config` (tiny random weights).
    """

    modalities: tuple[str, ...] = ("image", "video")

    def __init__(
        self,
        model: CLIPVisionModelWithProjection,
        image_processor: CLIPImageProcessorPil,
        *,
        num_video_frames: int = DEFAULT_VIDEO_FRAMES,
    ) -> None:
        super().__init__()
        if not isinstance(model, CLIPVisionModelWithProjection):
            raise AnyGenError(f"model must be a CLIPVisionModelWithProjection, got {type(model).__name__}")
        self.model = model
        self.image_processor = image_processor
        self.num_video_frames = _positive_int(num_video_frames, "num_video_frames")
        self.output_dim = int(model.config.projection_dim)
        self.eval()

    # ------------------------------------------------------------------ construction and checkpoints

    @classmethod
    def from_config(
        cls, config: TinyClipConfig | dict[str, Any] | None = None, seed: int = 0
    ) -> ClipImageEncoder:
        """A tiny random model; weights depend only on ``config`` and ``seed`` (the global RNG is untouched)."""
        cfg = config if isinstance(config, TinyClipConfig) else TinyClipConfig.from_dict(config)
        vision_config = CLIPVisionConfig(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            projection_dim=cfg.output_dim,
            attention_dropout=0.0,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPVisionModelWithProjection(vision_config)
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": cfg.image_size},
            crop_size={"height": cfg.image_size, "width": cfg.image_size},
        )
        return cls(model, processor, num_video_frames=cfg.num_video_frames)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and ``anygen_encoder.json``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(str(out))
            self.image_processor.save_pretrained(str(out))
        _write_settings(out, {"encoder": "clip-image", "num_video_frames": self.num_video_frames})
        return out

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        num_video_frames: int | None = None,
    ) -> ClipImageEncoder:
        """Load a local CLIP folder (offline, strict): missing or mis-shaped vision weights raise :class:`WeightsError`.

        Accepts a whole CLIP checkpoint (``openai/clip-vit-large-patch14`` layout; its text tower is skipped) or
        a vision-only folder. ``num_video_frames`` overrides the saved setting (default 8).
        """
        root = _check_folder(
            directory,
            "CLIP",
            "a local Hugging Face CLIP folder (e.g. a download of openai/clip-vit-large-patch14)",
            [(CONFIG_NAME,), WEIGHT_NAMES, (PREPROCESSOR_NAME,)],
        )
        data = read_json(root / CONFIG_NAME, "CLIP config")
        model_type = data.get("model_type")
        if model_type not in ("clip", "clip_vision_model"):
            raise WeightsError(
                f"{root / CONFIG_NAME} has model_type {model_type!r}; expected 'clip' (a whole CLIP model) "
                "or 'clip_vision_model'"
            )
        try:
            if model_type == "clip":
                vision_config = CLIPVisionConfig.from_dict(dict(data.get("vision_config") or {}))
                # CLIPModel's visual projection is [projection_dim, hidden]; the top-level value is the truth.
                vision_config.projection_dim = int(data.get("projection_dim", vision_config.projection_dim))
            else:
                vision_config = CLIPVisionConfig.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"{root / CONFIG_NAME} is not a valid CLIP vision config: {exc}") from exc
        model = _load_hf_model(
            CLIPVisionModelWithProjection,
            root,
            "CLIP",
            dtype=dtype,
            config=vision_config,
            allow_unexpected=lambda key: key.startswith(("text_model.", "text_projection.", "logit_scale")),
        )
        processor = _load_hf_component(CLIPImageProcessorPil, root, "CLIP image processor")
        settings = _read_settings(root)
        frames = num_video_frames if num_video_frames is not None else settings.get("num_video_frames")
        encoder = cls(model, processor, num_video_frames=DEFAULT_VIDEO_FRAMES if frames is None else frames)
        return encoder.to(device) if device is not None else encoder

    # ------------------------------------------------------------------ preprocessing and forward passes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """CLIP preprocessing (bicubic shortest-side resize, centre crop, CLIP mean/std): float32 ``[N, 3, S, S]``."""
        pixels = self.image_processor(list(images), return_tensors="np")["pixel_values"]
        return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))

    def embed_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings ``[N, output_dim]`` from CLIP-normalised pixels."""
        pixels = pixel_values.to(device=self.device, dtype=self.model.dtype)
        return self.model(pixel_values=pixels).image_embeds

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised float32 ``[N, output_dim]`` for RGB PIL images, in batches of ``ENCODE_BATCH``."""
        out = []
        for start in range(0, len(images), ENCODE_BATCH):
            batch = self.preprocess_images(images[start : start + ENCODE_BATCH])
            out.append(F.normalize(self.embed_pixels(batch).float(), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any]) -> torch.Tensor:
        """L2-normalised float32 ``[len(items), output_dim]`` on the encoder's device (no gradients).

        ``"image"`` items: anything :func:`anygen.media.load_image` reads (PIL image, path, bytes, array).
        ``"video"`` items: :class:`anygen.media.Video` (or a path/bytes :meth:`Video.load` reads).
        """
        _check_request(type(self).__name__, self.modalities, modality, items)
        if modality == "image":
            images = [load_image(item, name=f"items[{i}]") for i, item in enumerate(items)]
            return self.embed_images(images)
        videos = [_as_video(item, i) for i, item in enumerate(items)]
        n = self.num_video_frames
        frames = [Image.fromarray(f) for v in videos for f in v.sample_frames(n)]
        per_frame = self.embed_images(frames).view(len(videos), n, -1)
        return F.normalize(per_frame.mean(dim=1), dim=-1)


def _as_video(item: Any, index: int) -> Video:
    if isinstance(item, np.ndarray):
        raise MediaError(
            f"encode('video'): items[{index}] is a bare array; expected anygen.media.Video "
            "(use anygen.media.Video.load(frames, fps=...))"
        )
    return Video.load(item, name=f"items[{index}]")


# ---------------------------------------------------------------------- helpers shared with clap.py


def _positive_int(value: Any, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < 1:
        raise AnyGenError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AnyGenError(f"{cls.__name__} expects a dict of settings, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AnyGenError(
            f"{cls.__name__} got unknown fields {unknown}; expected a subset of {sorted(known)}"
        )
    return dict(data)


def _check_request(owner: str, modalities: tuple[str, ...], modality: str, items: Any) -> None:
    """Shared argument checks of ``encode``: a supported modality and a non-empty list."""
    if modality not in modalities:
        raise AnyGenError(f"{owner} cannot encode modality {modality!r}; expected one of {modalities}")
    if isinstance(items, (str, bytes, Path)) or not isinstance(items, Sequence):
        raise MediaError(
            f"encode({modality!r}) expects a list of {modality} items, got {type(items).__name__}"
        )
    if len(items) == 0:
        raise MediaError(f"encode({modality!r}) got an empty list; expected at least one {modality}")


def _check_folder(
    directory: str | Path, kind: str, expected: str, required: Iterable[tuple[str, ...]]
) -> Path:
    """``directory`` as a Path; :class:`WeightsError` if it is missing or lacks a file of each group."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise WeightsError(f"{kind} weights folder {str(directory)!r} {what}; expected {expected}")
    for group in required:
        if not any((root / name).is_file() for name in group):
            names = " or ".join(group)
            raise WeightsError(f"{kind} weights folder {str(root)!r} has no {names}; expected {expected}")
    return root


def _write_settings(root: Path, settings: dict[str, Any]) -> None:
    (root / SETTINGS_NAME).write_text(json.dumps(settings, indent=2) + "\n")


def _read_settings(root: Path) -> dict[str, Any]:
    """The optional ``anygen_encoder.json`` (absent in folders downloaded from the hub)."""
    path = root / SETTINGS_NAME
    return read_json(path, "anygen encoder settings file") if path.is_file() else {}


# Buffers that are constants or counters; a checkpoint without them loses nothing.
_BENIGN_MISSING = ("position_ids", "token_type_ids", "relative_position_index", "num_batches_tracked")


def _load_hf_model(
    model_cls: Any,
    root: Path,
    kind: str,
    *,
    dtype: torch.dtype | None = None,
    config: Any = None,
    allow_unexpected: Callable[[str], bool] = lambda key: False,
) -> Any:
    """``model_cls.from_pretrained(root)`` offline; missing, mis-shaped or stray weights raise :class:`WeightsError`."""
    # ignore_mismatched_sizes: report mis-shaped weights in the loading info (raised below) instead of
    # transformers' RuntimeError that points at a report this function silences.
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "output_loading_info": True,
        "ignore_mismatched_sizes": True,
    }
    if dtype is not None:
        kwargs["dtype"] = dtype
    if config is not None:
        kwargs["config"] = config
    try:
        # Quiet: transformers' load report would list e.g. CLIP's skipped text tower (problems are raised
        # below); fork_rng: weights missing from the checkpoint would be initialised from the global RNG.
        with _quiet_transformers(), torch.random.fork_rng(devices=[]):
            model, info = model_cls.from_pretrained(str(root), **kwargs)
    except Exception as exc:  # OSError, ValueError, safetensors' SafetensorError, ...
        raise WeightsError(
            f"{kind} weights in {str(root)!r} could not be loaded: {load_error_reason(exc)}"
        ) from exc
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(_BENIGN_MISSING))
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not allow_unexpected(k))
    problems = []
    if missing:
        problems.append(f"missing weights {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected weights {_preview(unexpected)}")
    if info.get("mismatched_keys"):
        shapes = sorted(_describe_mismatch(m) for m in info["mismatched_keys"])
        problems.append(f"shape mismatches {_preview(shapes)}")
    if info.get("error_msgs"):
        problems.append(f"errors {info['error_msgs'][:3]}")
    if problems:
        raise WeightsError(
            f"{kind} weights in {str(root)!r} do not match its config.json: " + "; ".join(problems)
        )
    return model.eval()


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars for the duration (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_hf_component(component_cls: Any, root: Path, what: str) -> Any:
    """A processor/feature extractor/tokenizer from ``root`` offline; failures raise :class:`WeightsError`."""
    try:
        return component_cls.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{what} in {str(root)!r} could not be loaded: {exc}") from exc


def _describe_mismatch(entry: Any) -> str:
    """transformers reports ``(key, checkpoint_shape, model_shape)``."""
    if isinstance(entry, tuple) and len(entry) == 3:
        key, found, expected = entry
        return f"{key}: checkpoint {tuple(found)} vs model {tuple(expected)}"
    return str(entry)


def _preview(keys: list[str], limit: int = 6) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return str(keys[:limit]) + more
