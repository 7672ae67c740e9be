"""FLUX.1 (image, ``FluxPipeline``) and Wan 2.x (video, ``WanPipeline``).

FLUX.1's ``encode_prompt`` returns three things: ``prompt_embeds`` (T5-XXL's last hidden state,
``(max_sequence_length, 4096)``, 512 tokens by default), ``pooled_prompt_embeds`` (the CLIP text model's pooled
output, ``(768,)``) and ``text_ids`` (zeros the pipeline recomputes itself: not conditioning). Its
``guidance_scale`` is *distilled*: FLUX.1-dev feeds it to the transformer's guidance embedding
(``guidance_embeds`` in ``transformer/config.json``) and runs no unconditional branch; FLUX.1-schnell has no guidance
embedding and the pipeline ignores it. Real classifier-free guidance is the pipeline's ``true_cfg_scale`` (> 1 with a
negative input), a generation option here; its unconditional input, unless the call gives one, is the pipeline's own
encoding of ``negative_prompt=""`` (CLIP and T5 of ``""``: FLUX has no zeros rule).

Wan is conditioned on UMT5-XXL's ``prompt_embeds`` ``(max_sequence_length = 512, 4096)``, the rows past the prompt's
tokens zeroed by the pipeline (no attention mask reaches the transformer). Its unconditional input is the pipeline's
own: UMT5 of ``""`` (``negative_prompt`` defaults to ``""``), rows past its one token zeroed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anygen.errors import SpecError, WeightsError
from anygen.generators.conditioning import ConditioningLayout, ConditionTensor
from anygen.generators.diffusion import ImageDefaults, VideoDefaults
from anygen.generators.modern import (
    ConfigReader,
    Family,
    _check_video_sizes,
    _LayoutGenerator,
    _need,
    _positive_int,
    _T5Generator,
    tiny_t5_encoder,
    tiny_t5_tokenizer,
)

#: ``FluxPipeline.check_inputs``: "`max_sequence_length` cannot be greater than 512".
_FLUX_MAX_T5_TOKENS = 512


def _sequence_length(value: Any, where: str, limit: int | None, error: type[Exception]) -> int:
    """``max_sequence_length`` checked: an integer >= 1, at most ``limit`` (the pipeline's own) when there is one."""
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 1
        and (limit is None or value <= limit)
    )
    if not ok:
        bound = f"from 1 to {limit} (the pipeline's limit)" if limit else ">= 1"
        raise error(f"{where}: max_sequence_length: expected an integer {bound}, got {value!r}")
    return value


# -- FLUX.1 -------------------------------------------------------------------------------------------------------
@dataclass
class FluxDefaults(ImageDefaults):
    """FLUX.1-dev's own call: 28 steps, distilled ``guidance_scale`` 3.5, ``true_cfg_scale`` 1 (no unconditional
    branch); ``height``/``width`` None: the pipeline's default (1024x1024 for FLUX.1)."""

    num_inference_steps: int = 28
    guidance_scale: float = 3.5
    true_cfg_scale: float = 1.0


class FluxGenerator(_LayoutGenerator):
    """Images from ``FluxPipeline``: ``prompt_embeds`` (T5, ``(512, 4096)`` for FLUX.1) and ``pooled_prompt_embeds``
    (CLIP-L's pooled output, ``(768,)``); MMDiT transformer, flow matching.

    ``guidance_scale`` is the distilled guidance (the transformer's guidance embedding when its config says
    ``guidance_embeds``, FLUX.1-dev; ignored without one, FLUX.1-schnell): it never adds an unconditional branch.
    ``true_cfg_scale > 1`` does (the pipeline's true classifier-free guidance), with ``negative_prompt_embeds`` or, by
    default, the pipeline's own encoding of ``negative_prompt=""``.
    """

    type_name = "flux"
    modality = "image"
    defaults_class = FluxDefaults
    architecture_knobs = ("max_sequence_length",)
    components = {
        "transformer": "diffusers",
        "vae": "diffusers",
        "text_encoder": "transformers",
        "tokenizer": "tokenizer",
        "text_encoder_2": "transformers",
        "tokenizer_2": "tokenizer",
        "scheduler": "scheduler",
    }
    family = Family(
        type_name,
        "image",
        "FluxPipeline",
        {
            "text_width": 16,  # CLIP hidden size = transformer pooled_projection_dim
            "t5_width": 32,  # T5 d_model = transformer joint_attention_dim
            "max_length": 77,  # CLIP tokens (only its pooled output conditions FLUX)
            "max_sequence_length": 16,  # T5 tokens
            "guidance_embeds": True,  # FLUX.1-dev's distilled guidance; False: FLUX.1-schnell's (none)
            "layers": 1,
        },
        {"num_inference_steps": 2, "guidance_scale": 3.5, "true_cfg_scale": 1.0, "height": 16, "width": 16},
    )

    def __init__(self, pipeline, *, defaults=None, max_sequence_length: int = _FLUX_MAX_T5_TOKENS):
        self.max_sequence_length = _sequence_length(
            max_sequence_length, f"{self.type_name} generator", _FLUX_MAX_T5_TOKENS, SpecError
        )
        super().__init__(pipeline, defaults=defaults)

    # ---- layout ------------------------------------------------------------------------------------------------
    @classmethod
    def layout_from_configs(
        cls, configs: ConfigReader, where: str, max_sequence_length: int = _FLUX_MAX_T5_TOKENS, **_: Any
    ) -> ConditioningLayout:
        tokens = _sequence_length(
            max_sequence_length,
            f"{where}: anygen_generator.json architecture",
            _FLUX_MAX_T5_TOKENS,
            WeightsError,
        )
        t5 = "text_encoder_2/config.json"
        width = _positive_int(_need(configs, "text_encoder_2", "d_model", where), where, t5, "d_model")
        clip = "text_encoder/config.json"
        pooled = _positive_int(
            _need(configs, "text_encoder", "hidden_size", where), where, clip, "hidden_size"
        )
        transformer = configs("transformer") or {}
        joint = transformer.get("joint_attention_dim")
        if joint not in (None, width):
            raise WeightsError(
                f"{where}: the T5 encoder gives width {width} ({t5} d_model) but transformer/config.json expects "
                f"joint_attention_dim {joint}"
            )
        projection = transformer.get("pooled_projection_dim")
        if projection not in (None, pooled):
            raise WeightsError(
                f"{where}: the CLIP text model's pooled output is {pooled} wide ({clip} hidden_size) but "
                f"transformer/config.json expects pooled_projection_dim {projection}"
            )
        return ConditioningLayout(
            (
                ConditionTensor("prompt_embeds", (tokens, width)),
                ConditionTensor("pooled_prompt_embeds", (pooled,)),
            )
        )

    @classmethod
    def layout_from_tiny(cls, config) -> ConditioningLayout:
        k = cls._tiny_knobs(config)
        return ConditioningLayout(
            (
                ConditionTensor("prompt_embeds", (k["max_sequence_length"], k["t5_width"])),
                ConditionTensor("pooled_prompt_embeds", (k["text_width"],)),
            )
        )

    @classmethod
    def _tiny_knobs(cls, config) -> dict[str, Any]:
        k = cls.family.resolve(config)
        _sequence_length(
            k["max_sequence_length"], f"{cls.type_name} generator config", _FLUX_MAX_T5_TOKENS, SpecError
        )
        if not isinstance(k["guidance_embeds"], bool):
            raise SpecError(
                f"{cls.type_name} generator config: guidance_embeds: expected true or false, got "
                f"{k['guidance_embeds']!r}"
            )
        return k

    # ---- tiny --------------------------------------------------------------------------------------------------
    @classmethod
    def tiny_components(cls, k: Mapping[str, Any]) -> dict[str, Any]:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from anygen.generators.tiny import tiny_clip_tokenizer

        k = cls._tiny_knobs(k)
        tokenizer = tiny_clip_tokenizer(k["max_length"])
        clip = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=k["text_width"],
                intermediate_size=2 * k["text_width"],
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=k["max_length"],
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        tokenizer_2 = tiny_t5_tokenizer(k["max_sequence_length"])
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,  # 1 latent channel, packed 2x2
            num_layers=k["layers"],
            num_single_layers=k["layers"],
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=k["t5_width"],
            pooled_projection_dim=k["text_width"],
            guidance_embeds=k["guidance_embeds"],
            axes_dims_rope=(4, 4, 8),
        )
        vae = AutoencoderKL(  # FLUX's VAE: no quant convs, a shift factor (diffusers' own tiny Flux VAE)
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=1,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
        scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1-dev's scheduler config
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )
        return {
            "transformer": transformer.eval(),
            "vae": vae.eval(),
            "text_encoder": clip.eval(),
            "tokenizer": tokenizer,
            "text_encoder_2": tiny_t5_encoder(k["t5_width"], len(tokenizer_2)),
            "tokenizer_2": tokenizer_2,
            "scheduler": scheduler,
        }

    # ---- encoding and generation -------------------------------------------------------------------------------
    def _encode_all(self, texts, device):
        """The pipeline's own ``encode_prompt``: T5 states and CLIP's pooled output (``text_ids`` left out: the
        pipeline recomputes them)."""
        embeds, pooled, _text_ids = self.pipeline.encode_prompt(
            texts, None, device=device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _encode_empty(self, device, dtype):
        """The unconditional input of true CFG: what the pipeline makes of ``negative_prompt=""`` (its
        ``encode_prompt`` of ``""``: CLIP and T5 of the empty prompt, no zeros rule). Used only when
        ``true_cfg_scale > 1`` and the call gives no negative."""
        negative, negative_pooled, _ = self.pipeline.encode_prompt(
            [""], None, device=device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": negative.to(dtype), "pooled_prompt_embeds": negative_pooled.to(dtype)}

    def _guided(self, opts) -> bool:
        """Only true CFG has an unconditional branch; the distilled ``guidance_scale`` never does."""
        return opts.true_cfg_scale > 1

    @property
    def guidance_embeds(self) -> bool:
        """Whether the transformer takes ``guidance_scale`` (FLUX.1-dev) or ignores it (FLUX.1-schnell)."""
        return bool(self.pipeline.transformer.config.get("guidance_embeds", False))

    def _run(self, embeds, negative, opts, generator) -> list:
        out = self._pipeline_call(
            embeds,
            negative,
            opts,
            generator,
            true_cfg_scale=opts.true_cfg_scale,
            max_sequence_length=self.max_sequence_length,
        )
        return self._images(out, opts)


# -- Wan ----------------------------------------------------------------------------------------------------------
@dataclass
class WanDefaults(VideoDefaults):
    """``WanPipeline``'s own call: 832x480, 81 frames (4k + 1), 50 steps, guidance 5; Wan 2.1 renders 16 fps."""

    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    height: int | None = 480
    width: int | None = 832
    num_frames: int = 81
    fps: float = 16.0


class WanGenerator(_T5Generator):
    """Videos from ``WanPipeline`` (Wan 2.1 / 2.2 text-to-video): UMT5 ``prompt_embeds`` ``(512, 4096)`` for the real
    models (padding rows zeroed by the pipeline); 3-D causal VAE, ``WanTransformer3DModel`` (and, for Wan 2.2 A14B,
    ``transformer_2`` for the low-noise steps). ``num_frames`` must be 4k + 1 (the VAE compresses time 4x),
    ``height``/``width`` multiples of 16. The unconditional input is the pipeline's own: UMT5 of ``""``."""

    type_name = "wan"
    modality = "video"
    defaults_class = WanDefaults
    frame_step = 4
    family = Family(
        type_name,
        "video",
        "WanPipeline",
        {"text_width": 32, "max_sequence_length": 16, "layers": 1},
        {
            "num_inference_steps": 2,
            "guidance_scale": 5.0,
            "num_frames": 9,
            "height": 16,
            "width": 16,
            "fps": 16.0,
        },
    )

    def __init__(self, pipeline, *, defaults=None, max_sequence_length: int = 512):
        super().__init__(pipeline, defaults=defaults, max_sequence_length=max_sequence_length)

    @classmethod
    def layout_from_configs(
        cls, configs, where, max_sequence_length: int = 512, **_: Any
    ) -> ConditioningLayout:
        tokens = _sequence_length(
            max_sequence_length, f"{where}: anygen_generator.json architecture", None, WeightsError
        )
        file = "text_encoder/config.json"
        width = _positive_int(_need(configs, "text_encoder", "d_model", where), where, file, "d_model")
        for part in (
            "transformer",
            "transformer_2",
        ):  # transformer_2: Wan 2.2's low-noise expert, when present
            text_dim = (configs(part) or {}).get("text_dim")
            if text_dim not in (None, width):
                raise WeightsError(
                    f"{where}: the UMT5 encoder gives width {width} ({file} d_model) but {part}/config.json "
                    f"expects text_dim {text_dim}"
                )
        return ConditioningLayout.single(tokens, width)

    @classmethod
    def layout_from_tiny(cls, config) -> ConditioningLayout:
        k = cls.family.resolve(config)
        _sequence_length(k["max_sequence_length"], f"{cls.type_name} generator config", None, SpecError)
        return ConditioningLayout.single(k["max_sequence_length"], k["text_width"])

    @classmethod
    def tiny_components(cls, k):
        from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

        tokenizer = tiny_t5_tokenizer(k["max_sequence_length"])
        transformer = WanTransformer3DModel(  # diffusers' own tiny Wan, one layer
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=k["text_width"],
            freq_dim=256,
            ffn_dim=32,
            num_layers=k["layers"],
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
        vae = AutoencoderKLWan(  # 8x in space, 4x in time, as Wan 2.1's VAE
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
        scheduler = UniPCMultistepScheduler(  # Wan 2.1's scheduler config
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=3.0,
            num_train_timesteps=1000,
        )
        return {
            "tokenizer": tokenizer,
            "text_encoder": tiny_t5_encoder(k["text_width"], len(tokenizer), umt5=True),
            "vae": vae.eval(),
            "transformer": transformer.eval(),
            "transformer_2": None,
            "scheduler": scheduler,
        }

    def _encode_empty(self, device, dtype):
        """The pipeline's own unconditional input: its ``encode_prompt`` negative for ``negative_prompt=None``,
        i.e. UMT5 of ``""`` with the padding rows zeroed."""
        _, negative = self.pipeline.encode_prompt(
            [""],
            negative_prompt=None,
            do_classifier_free_guidance=True,
            device=device,
            max_sequence_length=self.max_sequence_length,
        )
        return negative.to(dtype)

    def _check_sizes(self, opts) -> None:
        pipe = self.pipeline
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        patch = tuple(transformer.config.patch_size)
        spatial = int(pipe.vae_scale_factor_spatial)
        sizes = {"height": math.lcm(16, spatial * patch[1]), "width": math.lcm(16, spatial * patch[2])}
        why = "the wan generator's VAE, patches and pipeline"
        _check_video_sizes(self.type_name, opts, sizes, why, int(pipe.vae_scale_factor_temporal))

    def _run(self, embeds, negative, opts, generator) -> list:
        self._check_sizes(opts)
        out = self._pipeline_call(
            embeds, negative, opts, generator, max_sequence_length=self.max_sequence_length
        )
        return self._videos(out, opts)
