"""``clip-vision-tokens`` / ``siglip-vision-tokens``: patch features of a transformers vision tower, LLaVA-style.

An image becomes the hidden states of layer ``feature_layer`` of ``CLIPVisionModel`` / ``SiglipVisionModel``
(``hidden_states[feature_layer]``: 0 the embeddings, -1 the last layer, -2 the penultimate, as LLaVA), with
CLIP's class token dropped unless ``drop_cls: false``: float32 ``[tokens, hidden_size]``, not normalised. A video
is ``num_video_frames`` evenly spaced frames through the same tower, averaged per token (``video_tokens: mean``)
or concatenated in time order (``concat``); see :mod:`anygen.encoders.token_configs` for the counts.

Weights: :meth:`VisionTokenEncoder.from_config` (tiny, random, from a seed) or
:meth:`VisionTokenEncoder.from_pretrained` (a local Hugging Face folder, safetensors only: a whole CLIP/SigLIP
model, whose text tower is skipped, or a vision tower as :meth:`~VisionTokenEncoder.save_pretrained` writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from anygen.encoders import token_configs
from anygen.encoders.clip import (
    ENCODE_BATCH,
    PREPROCESSOR_NAME,
    _as_video,
    _check_folder,
    _check_request,
    _load_hf_component,
    _quiet_transformers,
)
from anygen.encoders.token_base import _NO_BIN, SAFETENSORS_NAMES, TokenEncoder, find_prefix, load_tower
from anygen.encoders.token_configs import VisionTokensConfig
from anygen.errors import AnyGenError, WeightsError
from anygen.media import load_image

# kind -> (tower config class, tower class, image processor class)
_TOWERS: dict[str, tuple[Any, Any, Any]] = {
    "clip-vision-tokens": (CLIPVisionConfig, CLIPVisionModel, CLIPImageProcessorPil),
    "siglip-vision-tokens": (SiglipVisionConfig, SiglipVisionModel, SiglipImageProcessorPil),
}


class VisionTokenEncoder(TokenEncoder):
    """Image/video -> float32 ``[N, tokens, hidden_size]`` patch features (``output_tokens`` per modality)."""

    modalities: tuple[str, ...] = ("image", "video")

    def __init__(self, kind: str, model: Any, image_processor: Any, config: VisionTokensConfig) -> None:
        super().__init__(config)
        if kind not in _TOWERS:
            raise AnyGenError(f"unknown vision token encoder {kind!r}; expected one of {sorted(_TOWERS)}")
        if not isinstance(model, _TOWERS[kind][1]):
            raise AnyGenError(f"{kind} needs a {_TOWERS[kind][1].__name__}, got {type(model).__name__}")
        self.kind = kind
        self.model = model
        self.image_processor = image_processor
        size = self.preprocess_images([Image.new("RGB", (8, 8))]).shape[-1]
        if size != config.image_size:
            raise AnyGenError(
                f"the image processor makes {size}x{size} images, but the vision tower takes image_size "
                f"{config.image_size}"
            )
        self.eval()

    # ------------------------------------------------------------------ construction and checkpoints

    @classmethod
    def from_config(
        cls, kind: str, config: VisionTokensConfig | dict[str, Any] | None = None, seed: int = 0
    ) -> VisionTokenEncoder:
        """A tiny random tower; its weights depend only on ``config`` and ``seed`` (the global RNG is untouched)."""
        cfg = config if isinstance(config, VisionTokensConfig) else token_configs.from_config(kind, config)
        config_cls, model_cls, processor_cls = _TOWERS.get(kind, (None, None, None))
        if config_cls is None:
            raise AnyGenError(f"unknown vision token encoder {kind!r}; expected one of {sorted(_TOWERS)}")
        extra = {"vision_use_head": False} if kind == "siglip-vision-tokens" else {}
        tower_config = config_cls(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            attention_dropout=0.0,
            **extra,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_cls(tower_config)
        if kind == "clip-vision-tokens":
            processor = CLIPImageProcessorPil(
                size={"shortest_edge": cfg.image_size},
                crop_size={"height": cfg.image_size, "width": cfg.image_size},
            )
        else:
            processor = SiglipImageProcessorPil(size={"height": cfg.image_size, "width": cfg.image_size})
        return cls(kind, model, processor, cfg)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and ``anygen_encoder.json``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(str(out))
            self.image_processor.save_pretrained(str(out))
        self._write_settings(out)
        return out

    @classmethod
    def from_pretrained(
        cls,
        kind: str,
        directory: str | Path,
        *,
        settings: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> VisionTokenEncoder:
        """Load a local folder (offline, strict). ``settings`` (feature_layer, drop_cls, num_video_frames,
        video_tokens) override the folder's ``anygen_encoder.json``."""
        config_cls, model_cls, processor_cls = _TOWERS[kind]
        family = "CLIP" if kind == "clip-vision-tokens" else "SigLIP"
        root = _check_folder(
            directory,
            family,
            f"a local Hugging Face {family} folder with safetensors weights ({_NO_BIN})",
            [("config.json",), SAFETENSORS_NAMES, (PREPROCESSOR_NAME,)],
        )
        try:
            cfg = token_configs.from_folder(kind, root, settings)
            data = token_configs.vision_config_dict(
                kind, token_configs.read_json(root / "config.json"), str(root)
            )
            tower_config = config_cls.from_dict(data)
        except (AnyGenError, TypeError, ValueError) as exc:
            raise WeightsError(f"{family} folder {str(root)!r}: {exc}") from exc
        ignore: tuple[str, ...] = ()
        if kind == "siglip-vision-tokens":
            tower_config.vision_use_head = False  # the pooling head is not used: patch tokens are
            ignore = ("head.",)
        with torch.random.fork_rng(devices=[]):
            model = model_cls(tower_config)
        # A whole model (and a tower saved by transformers 4) keeps the tower under ``vision_model.`` (the text
        # tower and projections beside it are skipped); a tower saved by transformers 5 has no prefix.
        prefix = find_prefix(root, family, "embeddings.patch_embedding.weight", ("vision_model.", ""))
        load_tower(model, root, family, prefix=prefix, ignore=ignore)
        processor = _load_hf_component(processor_cls, root, f"{family} image processor")
        try:
            encoder = cls(kind, model.eval(), processor, cfg)
        except AnyGenError as exc:
            raise WeightsError(f"{family} folder {str(root)!r} is inconsistent: {exc}") from exc
        return encoder.to(device) if device is not None else encoder

    # ------------------------------------------------------------------ forward passes

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The tower's preprocessing: float32 pixels ``[N, 3, S, S]``."""
        pixels = self.image_processor(list(images), return_tensors="np")["pixel_values"]
        return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))

    def tokens_from_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Layer ``feature_layer``'s states ``[N, tokens_per_image, hidden]`` (CLIP's class token dropped unless
        kept)."""
        pixels = pixel_values.to(device=self.device, dtype=self.model.dtype)
        states = self.model(pixel_values=pixels, output_hidden_states=True).hidden_states
        tokens = states[self.config.feature_layer]
        if self.config.HAS_CLS and not self.config.keeps_cls:
            tokens = tokens[:, 1:]
        return tokens.float()

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """float32 ``[N, tokens_per_image, hidden]`` for RGB PIL images, ``ENCODE_BATCH`` at a time."""
        out = [
            self.tokens_from_pixels(self.preprocess_images(images[i : i + ENCODE_BATCH]))
            for i in range(0, len(images), ENCODE_BATCH)
        ]
        return torch.cat(out)

    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any]) -> torch.Tensor:
        """float32 ``[len(items), output_tokens[modality], output_dim]`` on the encoder's device (no gradients).

        ``"image"`` items: anything :func:`anygen.media.load_image` reads; ``"video"`` items:
        :class:`anygen.media.Video` (or what :meth:`Video.load` reads).
        """
        _check_request(type(self).__name__, self.modalities, modality, items)
        if modality == "image":
            return self.embed_images([load_image(item, name=f"items[{i}]") for i, item in enumerate(items)])
        videos = [_as_video(item, i) for i, item in enumerate(items)]
        n = self.config.num_video_frames
        frames = [Image.fromarray(f) for v in videos for f in v.sample_frames(n)]
        per_frame = self.embed_images(frames).view(len(videos), n, self.config.tokens_per_image, -1)
        if self.config.video_tokens == "mean":
            return per_frame.mean(dim=1)
        return per_frame.reshape(len(videos), n * self.config.tokens_per_image, -1)
