"""Stable Diffusion 3 (``StableDiffusion3Pipeline``): two CLIPs and T5 into one joint sequence, plus a pooled vector.

The pipeline's ``encode_prompt`` gives two tensors:

- ``prompt_embeds`` ``(clip_tokens + max_sequence_length, joint_attention_dim)``: CLIP-L's and CLIP-G's penultimate
  hidden states side by side (``768 + 1280``), zero-padded to T5's width, followed along the sequence by T5's last
  hidden state: ``(77 + 256, 4096)`` for SD3-medium with the default ``max_sequence_length`` 256.
- ``pooled_prompt_embeds`` ``(projection_dim + projection_dim_2,)``: both CLIPs' text projections side by side
  (``768 + 1280 = 2048``).

``max_sequence_length`` (T5's part of the sequence) is part of the model here (an architecture knob, kept in
``anygen_generator.json``); it is 256 by default as in the pipeline, and at most 512 (the pipeline's own limit).

SD3 is often run without T5 (``text_encoder_3=None``, ``tokenizer_3=None``: model_index.json lists them as
``[null, null]``). The pipeline then conditions on zeros in T5's place, still ``max_sequence_length`` rows of
``joint_attention_dim``: the layout is the same (its width then read from ``transformer/config.json``), and such a
folder loads (its T5 files are not asked for).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from anygen.errors import SpecError, WeightsError
from anygen.generators.conditioning import ConditioningLayout, ConditionTensor
from anygen.generators.diffusion import ImageDefaults
from anygen.generators.modern import (
    ConfigReader,
    Family,
    _LayoutGenerator,
    _need,
    tiny_t5_encoder,
    tiny_t5_tokenizer,
)

#: ``StableDiffusion3Pipeline.check_inputs``: "`max_sequence_length` cannot be greater than 512".
_MAX_T5_TOKENS = 512
_T5_PARTS = ("text_encoder_3", "tokenizer_3")
#: Set while loading a folder saved without T5: diffusers then wants text_encoder_3=None, tokenizer_3=None passed.
_LOADING_WITHOUT_T5: contextvars.ContextVar[bool] = contextvars.ContextVar("sd3_without_t5", default=False)


def _dropped(entry: Any) -> bool:
    """A model_index.json entry of a component saved as None (``[null, null]``)."""
    return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is None and entry[1] is None


def _without_t5(model_index: Mapping[str, Any] | None) -> bool:
    """True when the pipeline has no T5 (model_index.json says ``text_encoder_3: [null, null]``)."""
    return isinstance(model_index, Mapping) and _dropped(model_index.get("text_encoder_3"))


def _folder_without_t5(root: Path) -> bool:
    """True when ``root/model_index.json`` says the folder was saved without T5 (False when unreadable: the
    folder check names the bad file)."""
    try:
        return _without_t5(json.loads((root / "model_index.json").read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def _tiny_clip(width: int, max_length: int, layers: int):
    """A ``CLIPTextModelWithProjection`` (SD3 takes both CLIPs with their projections) and its tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from anygen.generators.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(max_length)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,  # the pipeline takes the penultimate hidden state
        num_attention_heads=2,
        max_position_embeddings=max_length,
        projection_dim=width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config).eval(), tokenizer


class StableDiffusion3Generator(_LayoutGenerator):
    """Images from ``StableDiffusion3Pipeline``: ``prompt_embeds`` (CLIP-L + CLIP-G penultimate states padded to
    T5's width, then T5's states: ``(77 + 256, 4096)``) and ``pooled_prompt_embeds`` (both CLIP projections,
    ``(2048,)``); MMDiT transformer, flow-matching scheduler."""

    type_name = "stable-diffusion-3"
    modality = "image"
    defaults_class = ImageDefaults
    architecture_knobs = ("max_sequence_length",)
    components = {
        "transformer": "diffusers",
        "vae": "diffusers",
        "text_encoder": "transformers",
        "tokenizer": "tokenizer",
        "text_encoder_2": "transformers",
        "tokenizer_2": "tokenizer",
        "text_encoder_3": "transformers",
        "tokenizer_3": "tokenizer",
        "scheduler": "scheduler",
    }
    family = Family(
        type_name,
        "image",
        "StableDiffusion3Pipeline",
        {
            "text_width": 16,  # each CLIP's hidden size and projection_dim
            "t5_width": 32,  # T5 d_model = transformer joint_attention_dim (>= 2 * text_width)
            "max_length": 77,  # CLIP tokens
            "max_sequence_length": 16,  # T5 tokens
            "t5": True,  # False: no text_encoder_3 / tokenizer_3 (the pipeline then uses zeros)
            "sample_size": 8,
            "layers": 1,
        },
        {"num_inference_steps": 4, "guidance_scale": 5.0},
    )

    def __init__(self, pipeline, *, defaults=None, max_sequence_length: int = 256):
        if (
            not isinstance(max_sequence_length, int)
            or isinstance(max_sequence_length, bool)
            or not 1 <= max_sequence_length <= _MAX_T5_TOKENS
        ):
            raise SpecError(
                f"{self.type_name} generator: max_sequence_length: expected an integer from 1 to "
                f"{_MAX_T5_TOKENS} (the pipeline's limit), got {max_sequence_length!r}"
            )
        self.max_sequence_length = max_sequence_length
        super().__init__(pipeline, defaults=defaults)

    # ---- layout ------------------------------------------------------------------------------------------------
    @classmethod
    def layout_from_configs(
        cls, configs: ConfigReader, where: str, max_sequence_length: int = 256, **_: Any
    ) -> ConditioningLayout:
        if not isinstance(max_sequence_length, int) or not 1 <= max_sequence_length <= _MAX_T5_TOKENS:
            raise WeightsError(
                f"{where}: anygen_generator.json architecture.max_sequence_length: expected an integer from 1 "
                f"to {_MAX_T5_TOKENS} (the pipeline's limit), got {max_sequence_length!r}"
            )
        width_1 = int(_need(configs, "text_encoder", "hidden_size", where))
        width_2 = int(_need(configs, "text_encoder_2", "hidden_size", where))
        pooled_1 = int(_need(configs, "text_encoder", "projection_dim", where))
        pooled_2 = int(_need(configs, "text_encoder_2", "projection_dim", where))
        clip_tokens = _need(configs, "tokenizer", "model_max_length", where, "tokenizer_config.json")
        positions = (configs("text_encoder") or {}).get("max_position_embeddings")
        if (
            not isinstance(clip_tokens, (int, float))
            or clip_tokens < 1
            or (positions and clip_tokens > positions)
        ):
            raise WeightsError(
                f"{where}: tokenizer/tokenizer_config.json says model_max_length {clip_tokens!r}, but "
                f"text_encoder/config.json has max_position_embeddings {positions} (the pipeline pads CLIP's "
                "prompts to model_max_length)"
            )
        transformer = configs("transformer") or {}
        if _without_t5(configs(".", "model_index.json")):
            width = int(_need(configs, "transformer", "joint_attention_dim", where))  # zeros of this width
        else:
            width = int(_need(configs, "text_encoder_3", "d_model", where))
            joint = transformer.get("joint_attention_dim")
            if joint not in (None, width):
                raise WeightsError(
                    f"{where}: the T5 encoder (text_encoder_3/config.json d_model) gives width {width} but "
                    f"transformer/config.json expects joint_attention_dim {joint}"
                )
        if width_1 + width_2 > width:
            raise WeightsError(
                f"{where}: the CLIP encoders give width {width_1} + {width_2}, wider than T5's {width} "
                "(the pipeline pads the CLIP states to T5's width; it would cut them)"
            )
        pooled = transformer.get("pooled_projection_dim")
        if pooled not in (None, pooled_1 + pooled_2):
            raise WeightsError(
                f"{where}: the CLIP projections give {pooled_1} + {pooled_2} but transformer/config.json expects "
                f"pooled_projection_dim {pooled}"
            )
        tokens = int(clip_tokens) + int(max_sequence_length)
        return ConditioningLayout(
            (
                ConditionTensor("prompt_embeds", (tokens, width)),
                ConditionTensor("pooled_prompt_embeds", (pooled_1 + pooled_2,)),
            )
        )

    @classmethod
    def layout_from_tiny(cls, config) -> ConditioningLayout:
        k = cls._tiny_knobs(config)
        return ConditioningLayout(
            (
                ConditionTensor("prompt_embeds", (k["max_length"] + k["max_sequence_length"], k["t5_width"])),
                ConditionTensor("pooled_prompt_embeds", (2 * k["text_width"],)),
            )
        )

    @classmethod
    def _tiny_knobs(cls, config) -> dict[str, Any]:
        k = cls.family.resolve(config)
        if 2 * k["text_width"] > k["t5_width"]:
            raise SpecError(
                f"{cls.type_name} generator config: t5_width ({k['t5_width']}) must be at least 2 x text_width "
                f"({2 * k['text_width']}): the pipeline pads both CLIPs' states to T5's width"
            )
        return k

    @classmethod
    def _check_folder(cls, root: Path, pipeline_name: str) -> None:
        """The base check; a folder saved without T5 (model_index.json: ``text_encoder_3: [null, null]``) is not
        asked for ``text_encoder_3/`` and ``tokenizer_3/``."""
        if _folder_without_t5(root):
            parts = {k: v for k, v in cls.components.items() if k not in _T5_PARTS}
            checker = type(cls.__name__, (cls,), {"components": parts, "__module__": cls.__module__})
            return super(StableDiffusion3Generator, checker)._check_folder(root, pipeline_name)
        return super()._check_folder(root, pipeline_name)

    @classmethod
    def from_pretrained(cls, path, torch_dtype=None, *, defaults=None):
        """As the base class; a folder saved without T5 loads with ``text_encoder_3=None, tokenizer_3=None`` (what
        diffusers asks for such a folder)."""
        token = _LOADING_WITHOUT_T5.set(Path(path).is_dir() and _folder_without_t5(Path(path)))
        try:
            return super().from_pretrained(path, torch_dtype, defaults=defaults)
        finally:
            _LOADING_WITHOUT_T5.reset(token)

    @classmethod
    def _pipeline_load_kwargs(cls) -> dict[str, Any]:
        return dict.fromkeys(_T5_PARTS) if _LOADING_WITHOUT_T5.get() else {}

    # ---- tiny --------------------------------------------------------------------------------------------------
    @classmethod
    def tiny_components(cls, k: Mapping[str, Any]) -> dict[str, Any]:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

        k = cls._tiny_knobs(k)
        text_1, tokenizer = _tiny_clip(k["text_width"], k["max_length"], 2)
        text_2, tokenizer_2 = _tiny_clip(k["text_width"], k["max_length"], 2)
        transformer = SD3Transformer2DModel(
            sample_size=k["sample_size"],
            patch_size=2,
            in_channels=4,
            num_layers=k["layers"],
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=k["t5_width"],
            caption_projection_dim=16,
            pooled_projection_dim=2 * k["text_width"],
            out_channels=4,
            pos_embed_max_size=max(8, k["sample_size"]),
        )
        vae = AutoencoderKL(  # SD3's VAE: no quant convs, a shift factor (as SD3-medium's)
            block_out_channels=[8, 8],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4,
            norm_num_groups=2,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
        parts: dict[str, Any] = {"text_encoder_3": None, "tokenizer_3": None}
        if k["t5"]:
            tokenizer_3 = tiny_t5_tokenizer(k["max_sequence_length"])
            parts = {
                "text_encoder_3": tiny_t5_encoder(k["t5_width"], len(tokenizer_3)),
                "tokenizer_3": tokenizer_3,
            }
        return {
            "transformer": transformer.eval(),
            "vae": vae.eval(),
            "text_encoder": text_1,
            "tokenizer": tokenizer,
            "text_encoder_2": text_2,
            "tokenizer_2": tokenizer_2,
            **parts,
            "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
        }

    # ---- encoding and generation -------------------------------------------------------------------------------
    def _encode_all(self, texts, device):
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            texts,
            None,
            None,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _encode_empty(self, device, dtype):
        """The pipeline's own unconditional input: ``""`` through all three encoders (SD3 has no
        ``force_zeros_for_empty_prompt``; only T5's part is zeros when T5 is left out)."""
        _, negative, _, negative_pooled = self.pipeline.encode_prompt(
            [""],
            None,
            None,
            device=device,
            do_classifier_free_guidance=True,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": negative, "pooled_prompt_embeds": negative_pooled}

    def _run(self, embeds, negative, opts, generator) -> list:
        out = self._pipeline_call(
            embeds, negative, opts, generator, max_sequence_length=self.max_sequence_length
        )
        return self._images(out, opts)
