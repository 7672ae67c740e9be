"""Newer diffusers generators: SDXL (two CLIPs: sequence + pooled), PixArt-Σ (T5 + mask), CogVideoX (T5, video).

Each family says, from its components' configs alone (no weights), which tensors condition it
(:class:`~anygen.generators.conditioning.ConditioningLayout`), how its pipeline encodes a prompt into them (the
stage-2 alignment targets, and the empty prompt for guidance), and how it is called with them. Masks are not
conditioning: a projected sequence is dense, so its attention mask is all ones.

A family is registered in ``anygen.generators.shapes.MODERN_FAMILIES`` under its spec ``type`` (modality, diffusers
pipeline class, module of its class); tiny random-weight versions are built from the
same classes at small widths (:meth:`Family.tiny_components`), following diffusers' own test configs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anygen.errors import OptionError, SpecError, WeightsError
from anygen.generators.conditioning import ConditioningLayout, ConditionTensor
from anygen.generators.diffusion import (
    DiffusersGenerator,
    GenerationDefaults,
    ImageDefaults,
    VideoDefaults,
)

ConfigReader = Callable[[str, str], "dict[str, Any] | None"]  # (component, file name) -> its JSON, or None


# -- tiny parts ---------------------------------------------------------------------------------------------------
def tiny_t5_tokenizer(max_length: int):
    """A T5 tokenizer over single characters (Unigram, Metaspace), built offline: ``<pad>``=0, ``</s>``=1."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(chr(c), -1.0) for c in range(33, 127)]
    model = Tokenizer(models.Unigram(pieces, unk_id=2))
    model.pre_tokenizer = pre_tokenizers.Metaspace()
    return T5TokenizerFast(
        tokenizer_object=model,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=max_length,
    )


def tiny_t5_encoder(width: int, vocab: int, *, umt5: bool = False):
    """A one-layer T5 encoder (``UMT5EncoderModel`` with ``umt5``: Wan's) at a small width."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_class(
        vocab_size=vocab,
        d_model=width,
        d_kv=8,
        d_ff=2 * width,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return model_class(config).eval()


def _tiny_clip_pair(width: int, max_length: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from anygen.generators.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(max_length)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=max_length,
        projection_dim=width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval(), CLIPTextModelWithProjection(config).eval(), tokenizer


def _tiny_vae(block_channels=(8, 8), latent_channels: int = 4):
    from diffusers import AutoencoderKL

    n = len(block_channels)
    return AutoencoderKL(
        block_out_channels=list(block_channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        latent_channels=latent_channels,
        norm_num_groups=2,
    ).eval()


# -- families -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """What anygen needs to know about one diffusers pipeline family."""

    type_name: str
    modality: str
    pipeline: str  # diffusers class name
    tiny_defaults: Mapping[str, Any]  # tiny knobs and their defaults
    generation: Mapping[str, Any]  # generation defaults of the tiny model

    def resolve(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        config = dict(config or {})
        for declared in ("conditioning", "condition_shape"):  # of a model not downloaded yet (read by widths)
            config.pop(declared, None)
        defaults = {**self.generation, **(config.pop("defaults", None) or {})}
        unknown = sorted(set(config) - set(self.tiny_defaults))
        if unknown:
            raise SpecError(
                f"{self.type_name} generator config: unknown knob(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self.tiny_defaults))}, defaults"
            )
        return {**self.tiny_defaults, **config, "defaults": defaults}


def _read_folder(root: Path) -> ConfigReader:
    def read(component: str, file_name: str = "config.json") -> dict[str, Any] | None:
        file = root / component / file_name
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise WeightsError(f"{file}: unreadable ({err})") from None

    return read


def _need(configs: ConfigReader, component: str, key: str, where: str, file_name: str = "config.json") -> Any:
    config = configs(component, file_name)
    if config is None:
        raise WeightsError(f"{where}: {component}/{file_name} is missing (needed for {key})")
    value = config.get(key)
    if value is None:
        raise WeightsError(f"{where}: {component}/{file_name} does not say {key}")
    return value


def _positive_int(value: Any, where: str, file: str, key: str) -> int:
    """``value`` read from ``file``'s ``key``, or :class:`WeightsError` when it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WeightsError(f"{where}: {file} says {key} {value!r}; expected a positive integer")
    return value


def _check_video_sizes(type_name: str, opts: Any, sizes: Mapping[str, int], why: str, temporal: int) -> None:
    """:class:`OptionError` naming each of ``height``/``width`` that is not a positive multiple of ``sizes[name]``
    (``why``: what sets it) and a ``num_frames`` that is not ``temporal`` k + 1 (a VAE that compresses time)."""
    problems = [
        (name, f"{value} is not a positive multiple of {multiple} ({why})")
        for name, multiple in sizes.items()
        if not isinstance(value := getattr(opts, name), int) or value < multiple or value % multiple
    ]
    frames = opts.num_frames
    if not isinstance(frames, int) or frames < 1 or (frames - 1) % temporal:
        problems.append(
            (
                "num_frames",
                f"{frames} frames; the {type_name} generator makes {temporal}k + 1 (its VAE compresses time "
                f"{temporal}x), e.g. {max(1, (int(frames or 1) - 1) // temporal * temporal + 1)}",
            )
        )
    if problems:
        raise OptionError(problems)


class _LayoutGenerator(DiffusersGenerator):
    """A diffusers generator whose conditioning layout comes from :meth:`layout_from_configs`."""

    family: Family
    #: Height and width are multiples of this (VAE compression x patch size); checked before any model runs.
    size_step: int = 16
    #: Video: num_frames is frame_step * k + 1 (a VAE that compresses time); None: any count.
    frame_step: int | None = None
    #: Sidecar knobs: settings of the call that are part of the model (e.g. T5's max_sequence_length).
    architecture_knobs: tuple[str, ...] = ()

    @classmethod
    def layout_from_configs(
        cls, configs: ConfigReader, where: str, **architecture: Any
    ) -> ConditioningLayout:
        raise NotImplementedError

    @classmethod
    def layout_from_tiny(cls, config: Mapping[str, Any] | None) -> ConditioningLayout:
        raise NotImplementedError

    @classmethod
    def layout_from_folder(cls, path: str | Path) -> ConditioningLayout:
        root = Path(path)
        if not root.is_dir():
            raise WeightsError(f"{cls.type_name} weights folder {root} does not exist")
        sidecar = _read_folder(root)(".", "anygen_generator.json") or {}
        return cls.layout_from_configs(_read_folder(root), str(root), **sidecar.get("architecture", {}))

    def _layout_of(self, pipeline: Any) -> ConditioningLayout:
        components = {name: c for name, c in pipeline.components.items() if c is not None}

        def read(component: str, file_name: str = "config.json") -> dict[str, Any] | None:
            if component == "." and file_name == "model_index.json":  # the pipeline's own (what a folder holds)
                return dict(pipeline.config)
            part = components.get(component)
            if part is None:
                return None
            if file_name == "tokenizer_config.json":
                return {"model_max_length": part.model_max_length}
            config = part.config
            return dict(config.to_dict() if hasattr(config, "to_dict") else config)

        return self.layout_from_configs(read, self.type_name, **self.architecture())

    def architecture(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.architecture_knobs}

    @classmethod
    def from_config(cls, config=None, seed: int = 0, *, defaults=None):
        knobs = cls.family.resolve(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            components = cls.tiny_components(knobs)
        from anygen.generators._pipelines import pipeline_class

        pipeline = pipeline_class(cls.type_name)(**components)
        architecture = {k: knobs[k] for k in cls.architecture_knobs}
        return cls(pipeline, defaults={**knobs["defaults"], **(defaults or {})}, **architecture)

    @classmethod
    def tiny_components(cls, knobs: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        return self.layout.pack(self._encode_all(texts, device), f"{self.type_name} text encoding")

    def _encode_all(self, texts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        raise NotImplementedError


# -- SDXL ---------------------------------------------------------------------------------------------------------
class StableDiffusionXLGenerator(_LayoutGenerator):
    """Images from ``StableDiffusionXLPipeline``: ``prompt_embeds`` (both CLIPs' penultimate states side by side,
    ``(77, 768 + 1280)``) and ``pooled_prompt_embeds`` (the second CLIP's projection, ``(1280,)``)."""

    type_name = "stable-diffusion-xl"
    modality = "image"
    defaults_class = ImageDefaults
    size_step = 8  # the VAE (diffusers checks height % 8)
    components = {
        **DiffusersGenerator.components,
        "text_encoder_2": "transformers",
        "tokenizer_2": "tokenizer",
    }
    family = Family(
        type_name,
        "image",
        "StableDiffusionXLPipeline",
        {
            "text_width": 16,
            "max_length": 77,
            "unet_channels": (32, 64),
            "sample_size": 8,
            "time_embed_dim": 8,
        },
        {"num_inference_steps": 4, "guidance_scale": 5.0},
    )

    @classmethod
    def layout_from_configs(cls, configs: ConfigReader, where: str, **_: Any) -> ConditioningLayout:
        width_1 = _need(configs, "text_encoder", "hidden_size", where)
        width_2 = _need(configs, "text_encoder_2", "hidden_size", where)
        pooled = _need(configs, "text_encoder_2", "projection_dim", where)
        tokens = _need(configs, "tokenizer", "model_max_length", where, "tokenizer_config.json")
        unet = configs("unet") or {}
        if unet.get("cross_attention_dim") not in (None, width_1 + width_2):
            raise WeightsError(
                f"{where}: the text encoders give width {width_1} + {width_2} but unet/config.json expects "
                f"cross_attention_dim {unet['cross_attention_dim']}"
            )
        return ConditioningLayout(
            (
                ConditionTensor("prompt_embeds", (int(tokens), int(width_1 + width_2))),
                ConditionTensor("pooled_prompt_embeds", (int(pooled),)),
            )
        )

    @classmethod
    def layout_from_tiny(cls, config) -> ConditioningLayout:
        k = cls.family.resolve(config)
        return ConditioningLayout(
            (
                ConditionTensor("prompt_embeds", (k["max_length"], 2 * k["text_width"])),
                ConditionTensor("pooled_prompt_embeds", (k["text_width"],)),
            )
        )

    @classmethod
    def tiny_components(cls, k: Mapping[str, Any]) -> dict[str, Any]:
        from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

        text_1, text_2, tokenizer = _tiny_clip_pair(k["text_width"], k["max_length"])
        _, _, tokenizer_2 = _tiny_clip_pair(k["text_width"], k["max_length"])
        w = k["text_width"]
        unet = UNet2DConditionModel(
            block_out_channels=tuple(k["unet_channels"]),
            layers_per_block=1,
            sample_size=k["sample_size"],
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=k["time_embed_dim"],
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=w + 6 * k["time_embed_dim"],
            cross_attention_dim=2 * w,
            norm_num_groups=1,
        )
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="leading",
            steps_offset=1,
        )
        return {
            "vae": _tiny_vae(),
            "text_encoder": text_1,
            "text_encoder_2": text_2,
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
            "unet": unet,
            "scheduler": scheduler,
        }

    def _encode_all(self, texts, device):
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            texts, device=device, do_classifier_free_guidance=False
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _encode_empty(self, device, dtype):
        """The pipeline's own unconditional input: zeros when its config says ``force_zeros_for_empty_prompt``
        (SDXL base does), else the encoding of ``""``."""
        _, negative, _, negative_pooled = self.pipeline.encode_prompt(
            [""], device=device, do_classifier_free_guidance=True
        )
        return {"prompt_embeds": negative, "pooled_prompt_embeds": negative_pooled}

    def _run(self, embeds, negative, opts, generator) -> list:
        return self._images(self._pipeline_call(embeds, negative, opts, generator), opts)


# -- T5-conditioned families -----------------------------------------------------------------------------------------
class _T5Generator(_LayoutGenerator):
    """One T5 ``prompt_embeds`` ``(max_sequence_length, d_model)``; the pipeline's attention mask is all ones for a
    projected sequence (it is dense), and the encoded prompt's own mask for a caption."""

    architecture_knobs = ("max_sequence_length",)
    components = {
        "transformer": "diffusers",
        "vae": "diffusers",
        "text_encoder": "transformers",
        "tokenizer": "tokenizer",
        "scheduler": "scheduler",
    }

    def __init__(self, pipeline, *, defaults=None, max_sequence_length: int = 300):
        if (
            not isinstance(max_sequence_length, int)
            or isinstance(max_sequence_length, bool)
            or max_sequence_length < 1
        ):
            raise SpecError(f"{self.type_name} generator: max_sequence_length: expected an integer >= 1")
        self.max_sequence_length = max_sequence_length
        super().__init__(pipeline, defaults=defaults)

    @classmethod
    def layout_from_configs(
        cls, configs, where, max_sequence_length: int = 300, **_: Any
    ) -> ConditioningLayout:
        width = _need(configs, "text_encoder", "d_model", where)
        return ConditioningLayout.single(int(max_sequence_length), int(width))

    @classmethod
    def layout_from_tiny(cls, config) -> ConditioningLayout:
        k = cls.family.resolve(config)
        return ConditioningLayout.single(k["max_sequence_length"], k["text_width"])

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.text_encoder.dtype

    def _encode_all(self, texts, device):
        """The pipeline's own ``encode_prompt`` (its first output: the T5 states), without guidance."""
        encoded = self.pipeline.encode_prompt(
            texts,
            do_classifier_free_guidance=False,
            device=device,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": encoded[0] if isinstance(encoded, tuple) else encoded}

    def _ones(self, embeds: torch.Tensor) -> torch.Tensor:
        return torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)


class PixArtSigmaGenerator(_T5Generator):
    """Images from ``PixArtSigmaPipeline`` (T5 ``prompt_embeds`` + attention mask; DiT transformer)."""

    type_name = "pixart-sigma"
    modality = "image"
    defaults_class = ImageDefaults
    family = Family(
        type_name,
        "image",
        "PixArtSigmaPipeline",
        {"text_width": 32, "max_sequence_length": 16, "sample_size": 8, "layers": 1},
        {"num_inference_steps": 4, "guidance_scale": 4.5},
    )

    @classmethod
    def layout_from_configs(
        cls, configs, where, max_sequence_length: int = 300, **_: Any
    ) -> ConditioningLayout:
        layout = super().layout_from_configs(configs, where, max_sequence_length)
        caption = (configs("transformer") or {}).get("caption_channels")
        if caption not in (None, layout.tensors[0].width):
            raise WeightsError(
                f"{where}: the T5 encoder gives width {layout.tensors[0].width} but transformer/config.json "
                f"expects caption_channels {caption}"
            )
        return layout

    @classmethod
    def tiny_components(cls, k):
        from diffusers import DDIMScheduler, PixArtTransformer2DModel

        tokenizer = tiny_t5_tokenizer(k["max_sequence_length"])
        transformer = PixArtTransformer2DModel(
            sample_size=k["sample_size"],
            num_layers=k["layers"],
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=2,
            caption_channels=k["text_width"],
            in_channels=4,
            cross_attention_dim=16,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        )
        return {
            "tokenizer": tokenizer,
            "text_encoder": tiny_t5_encoder(k["text_width"], len(tokenizer)),
            "vae": _tiny_vae(),
            "transformer": transformer.eval(),
            "scheduler": DDIMScheduler(),
        }

    def _run(self, embeds, negative, opts, generator) -> list:
        out = self._pipeline_call(
            embeds,
            negative,
            opts,
            generator,
            prompt_attention_mask=self._ones(embeds),
            negative_prompt=None,
            negative_prompt_attention_mask=None if negative is None else self._ones(negative),
            use_resolution_binning=False,
            max_sequence_length=self.max_sequence_length,
        )
        return self._images(out, opts)


@dataclass
class CogVideoXDefaults(VideoDefaults):
    """CogVideoX-5B's own call: 720x480, 49 frames (4k + 1) at 8 fps, 50 steps, guidance 6."""

    height: int | None = 480
    width: int | None = 720
    num_frames: int = 49
    guidance_scale: float = 6.0


class CogVideoXGenerator(_T5Generator):
    """Videos from ``CogVideoXPipeline`` (T5 ``prompt_embeds`` ``(226, 4096)`` for the real model; 3-D VAE and DiT).
    ``num_frames`` must be 4k + 1 (the VAE compresses time four times)."""

    type_name = "cogvideox"
    modality = "video"
    defaults_class = CogVideoXDefaults
    frame_step = 4
    family = Family(
        type_name,
        "video",
        "CogVideoXPipeline",
        {"text_width": 32, "max_sequence_length": 16, "sample_size": 2},
        {
            "num_inference_steps": 2,
            "guidance_scale": 6.0,
            "num_frames": 9,
            "height": 16,
            "width": 16,
            "fps": 8,
        },
    )

    @classmethod
    def layout_from_configs(cls, configs, where, max_sequence_length: int | None = None, **_: Any):
        transformer = configs("transformer") or {}
        tokens = max_sequence_length or transformer.get("max_text_seq_length") or 226
        layout = super().layout_from_configs(configs, where, int(tokens))
        text_dim = transformer.get("text_embed_dim")
        if text_dim not in (None, layout.tensors[0].width):
            raise WeightsError(
                f"{where}: the T5 encoder gives width {layout.tensors[0].width} but transformer/config.json "
                f"expects text_embed_dim {text_dim}"
            )
        return layout

    @classmethod
    def tiny_components(cls, k):
        from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

        tokenizer = tiny_t5_tokenizer(k["max_sequence_length"])
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=4,
            attention_head_dim=8,
            in_channels=4,
            out_channels=4,
            time_embed_dim=2,
            text_embed_dim=k["text_width"],
            num_layers=1,
            sample_width=k["sample_size"],
            sample_height=k["sample_size"],
            sample_frames=9,
            patch_size=2,
            temporal_compression_ratio=4,
            max_text_seq_length=k["max_sequence_length"],
        )
        vae = AutoencoderKLCogVideoX(
            in_channels=3,
            out_channels=3,
            down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            temporal_compression_ratio=4,
        )
        return {
            "tokenizer": tokenizer,
            "text_encoder": tiny_t5_encoder(k["text_width"], len(tokenizer)),
            "vae": vae.eval(),
            "transformer": transformer.eval(),
            "scheduler": CogVideoXDDIMScheduler(),
        }

    def _run(self, embeds, negative, opts, generator) -> list:
        out = self._pipeline_call(
            embeds, negative, opts, generator, max_sequence_length=self.max_sequence_length
        )
        return self._videos(out, opts)


_ = GenerationDefaults  # re-exported for type hints of subclasses


@functools.cache
def modern_types() -> dict[str, type[_LayoutGenerator]]:
    """Spec ``type`` -> generator class of every newer family (``shapes.MODERN_FAMILIES`` names each one's module:
    the class there whose ``type_name`` it is)."""
    import importlib

    from anygen.generators.shapes import MODERN_FAMILIES

    found: dict[str, type[_LayoutGenerator]] = {}
    for name, (_, _, module) in MODERN_FAMILIES.items():
        classes = vars(importlib.import_module(module)).values()
        found[name] = next(
            c
            for c in classes
            if isinstance(c, type) and issubclass(c, _LayoutGenerator) and c.__dict__.get("type_name") == name
        )
    return found
