"""Stable Audio Open (audio, ``StableAudioPipeline``) and LTX-Video (video, ``LTXPipeline``): T5-conditioned families.

Stable Audio's pipeline encodes a prompt as T5's last hidden state passed through its ``StableAudioProjectionModel``
(``(128, 768)`` for stable-audio-open-1.0; padding positions zeroed): that is the conditioning. The duration
conditioning (seconds start / end) is not projected: the pipeline computes it from the call's length, as it does
for text. LTX-Video is conditioned on T5-XXL's ``prompt_embeds`` ``(max_sequence_length = 128, 4096)``, plus an
attention mask that is all ones for a projected (dense) sequence.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from anygen.errors import OptionError, WeightsError
from anygen.generators.conditioning import ConditioningLayout
from anygen.generators.diffusion import AudioDefaults, VideoDefaults, _finite
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
from anygen.media import Audio

# A tokenizer without a real length limit reports a huge sentinel (transformers' int(1e30)).
_NO_LIMIT = 1_000_000


# -- Stable Audio -----------------------------------------------------------------------------------------------
@dataclass
class StableAudioDefaults(AudioDefaults):
    """``StableAudioPipeline``'s own defaults: 100 steps, guidance 7; ``audio_length_in_s`` None: the model's
    longest (``sample_size * hop length / sampling_rate``, 47.55 s for stable-audio-open-1.0)."""

    num_inference_steps: int = 100
    guidance_scale: float = 7.0


@contextlib.contextmanager
def _already_projected(pipeline: Any) -> Iterator[None]:
    """``StableAudioPipeline.__call__`` passes given ``prompt_embeds`` through its projection model's text
    projection again; ours are already projected (the output of ``encode_prompt``), so that projection is
    the identity for the call. (stable-audio-open-1.0's is an identity anyway: T5 and conditioning are 768 wide.)"""
    projection = pipeline.projection_model
    kept = projection.text_projection
    if isinstance(kept, torch.nn.Identity):
        yield
        return
    projection.text_projection = torch.nn.Identity()
    try:
        yield
    finally:
        projection.text_projection = kept


class StableAudioGenerator(_LayoutGenerator):
    """Audio (:class:`anygen.media.Audio`, mono: the stereo channels averaged) from ``StableAudioPipeline``.

    Conditioning: ``prompt_embeds`` ``(tokenizer model_max_length, projection conditioning_dim)``, what the
    pipeline's ``encode_prompt`` returns (T5, projected, padding zeroed). The unconditional input is the
    pipeline's own: zeros (it then zeroes the duration tokens of the unconditional branch too).
    """

    type_name = "stable-audio"
    modality = "audio"
    defaults_class = StableAudioDefaults
    components = {
        "transformer": "diffusers",
        "vae": "diffusers",
        "projection_model": "diffusers",
        "text_encoder": "transformers",
        "tokenizer": "tokenizer",
        "scheduler": "scheduler",
    }
    family = Family(
        type_name,
        "audio",
        "StableAudioPipeline",
        {
            "text_width": 32,  # T5 d_model
            "condition_width": 16,  # projection conditioning_dim (!= text_width: a real Linear projection)
            "max_length": 16,  # tokenizer model_max_length
            "sample_size": 64,  # latent frames; native length = 64 * hop 32 / 2048 Hz = 1.0 s
            "sampling_rate": 2048,
        },
        {"num_inference_steps": 2, "guidance_scale": 7.0, "audio_length_in_s": None},
    )

    @classmethod
    def layout_from_configs(cls, configs: ConfigReader, where: str, **_: Any) -> ConditioningLayout:
        tokens = _positive_int(
            _need(configs, "tokenizer", "model_max_length", where, "tokenizer_config.json"),
            where,
            "tokenizer/tokenizer_config.json",
            "model_max_length",
        )
        if tokens > _NO_LIMIT:
            raise WeightsError(
                f"{where}: tokenizer/tokenizer_config.json says model_max_length {tokens} (no limit); "
                "StableAudioPipeline pads every prompt to it: set the T5 length (128 for stable-audio-open-1.0)"
            )
        file = "projection_model/config.json"
        width = _positive_int(
            _need(configs, "projection_model", "conditioning_dim", where), where, file, "conditioning_dim"
        )
        text_dim = _need(configs, "projection_model", "text_encoder_dim", where)
        d_model = _need(configs, "text_encoder", "d_model", where)
        if text_dim != d_model:
            raise WeightsError(
                f"{where}: the T5 encoder gives width {d_model} (text_encoder/config.json d_model) but {file} "
                f"expects text_encoder_dim {text_dim}"
            )
        transformer = configs("transformer") or {}
        cross = transformer.get("cross_attention_input_dim")
        if cross not in (None, width):
            raise WeightsError(
                f"{where}: {file} gives conditioning_dim {width} but transformer/config.json expects "
                f"cross_attention_input_dim {cross}"
            )
        return ConditioningLayout.single(tokens, width)

    @classmethod
    def layout_from_tiny(cls, config) -> ConditioningLayout:
        k = cls.family.resolve(config)
        return ConditioningLayout.single(k["max_length"], k["condition_width"])

    @classmethod
    def tiny_components(cls, k: Mapping[str, Any]) -> dict[str, Any]:
        from diffusers import (
            AutoencoderOobleck,
            EDMDPMSolverMultistepScheduler,
            StableAudioDiTModel,
            StableAudioProjectionModel,
        )

        width, latent = k["condition_width"], 4
        tokenizer = tiny_t5_tokenizer(k["max_length"])
        transformer = StableAudioDiTModel(
            sample_size=k["sample_size"],
            in_channels=latent,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            num_key_value_attention_heads=1,
            out_channels=latent,
            cross_attention_dim=16,
            time_proj_dim=8,
            global_states_input_dim=2 * width,  # seconds start + seconds end, side by side
            cross_attention_input_dim=width,
        )
        vae = AutoencoderOobleck(
            encoder_hidden_size=8,
            downsampling_ratios=[4, 8],  # hop length 32
            channel_multiples=[1, 2],
            decoder_channels=8,
            decoder_input_channels=latent,
            audio_channels=2,
            sampling_rate=k["sampling_rate"],
        )
        projection = StableAudioProjectionModel(
            text_encoder_dim=k["text_width"], conditioning_dim=width, min_value=0, max_value=512
        )
        # stable-audio-open-1.0 ships CosineDPMSolverMultistepScheduler (it needs torchsde); this is the scheduler
        # the pipeline declares, with the same sigmas and prediction type, deterministic.
        scheduler = EDMDPMSolverMultistepScheduler(
            sigma_min=0.3,
            sigma_max=500.0,
            sigma_data=1.0,
            sigma_schedule="exponential",
            prediction_type="v_prediction",
            solver_order=2,
        )
        return {
            "vae": vae.eval(),
            "text_encoder": tiny_t5_encoder(k["text_width"], len(tokenizer)),
            "projection_model": projection.eval(),
            "tokenizer": tokenizer,
            "transformer": transformer.eval(),
            "scheduler": scheduler,
        }

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.text_encoder.dtype

    @property
    def sample_rate(self) -> int:
        return int(self.pipeline.vae.config.sampling_rate)

    @property
    def max_audio_length_in_s(self) -> float:
        """The longest audio the model makes (the pipeline's ``max_audio_length_in_s``)."""
        pipe = self.pipeline
        return pipe.transformer.config.sample_size * pipe.vae.hop_length / pipe.vae.config.sampling_rate

    def _encode_all(self, texts, device):
        embeds = self.pipeline.encode_prompt(texts, device, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds}

    def _encode_empty(self, device, dtype):
        """The pipeline's own unconditional input (no negative prompt): zeros."""
        return torch.zeros((1, *self.condition_shape), device=device, dtype=dtype)

    def _length(self, opts) -> float:
        longest = self.max_audio_length_in_s
        length = longest if opts.audio_length_in_s is None else float(opts.audio_length_in_s)
        config = self.pipeline.projection_model.config
        if not math.isfinite(length) or length > longest or int(length * self.sample_rate) < 1:
            raise OptionError(
                (
                    "audio_length_in_s",
                    f"{length:g} s; the stable-audio generator makes from {1 / self.sample_rate:g} s (one sample at "
                    f"{self.sample_rate} Hz) to {longest:g} s (its transformer's sample_size)",
                )
            )
        if length < config.min_value or length > config.max_value:
            raise OptionError(
                (
                    "audio_length_in_s",
                    f"{length:g} s is outside the seconds its projection model encodes "
                    f"({config.min_value}..{config.max_value})",
                )
            )
        return length

    def _run(self, embeds, negative, opts, generator) -> list:
        length = self._length(opts)
        ones = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        if negative is not None and not torch.any(negative):
            # Zeros are the pipeline's own unconditional input: let it make it (its duration tokens zeroed too).
            negative = None
        with _already_projected(self.pipeline):
            out = self.pipeline(
                prompt_embeds=embeds,
                attention_mask=ones,
                negative_prompt_embeds=negative,
                negative_attention_mask=None if negative is None else ones,
                audio_start_in_s=0.0,
                audio_end_in_s=length,
                num_inference_steps=opts.num_inference_steps,
                guidance_scale=opts.guidance_scale,
                generator=generator,
                output_type="np",
            )
        audios = _finite(np.asarray(out.audios, dtype=np.float32), "audio", opts.guidance_scale)
        rate = self.sample_rate
        # [B, channels, samples]: anygen's Audio is mono, so the channels are averaged.
        return [Audio(waveform=a.reshape(a.shape[0], -1).mean(axis=0), sample_rate=rate) for a in audios]


# -- LTX-Video ----------------------------------------------------------------------------------------------------
@dataclass
class LTXVideoDefaults(VideoDefaults):
    """``LTXPipeline``'s own defaults: 704x512, 161 frames (8k + 1) at 25 fps, 50 steps, guidance 3."""

    num_inference_steps: int = 50
    guidance_scale: float = 3.0
    height: int | None = 512
    width: int | None = 704
    num_frames: int = 161
    fps: float = 25.0


class LTXVideoGenerator(_T5Generator):
    """Videos from ``LTXPipeline``: T5 ``prompt_embeds`` ``(max_sequence_length, d_model)``, ``(128, 4096)`` for
    LTX-Video. ``num_frames`` must be k x the VAE's temporal compression + 1 (8k + 1), ``height`` and ``width``
    multiples of 32. The unconditional input is the pipeline's own: T5 of ``""`` with its attention mask."""

    type_name = "ltx-video"
    modality = "video"
    defaults_class = LTXVideoDefaults
    size_step = 32  # LTXPipeline.check_inputs
    frame_step = 8
    family = Family(
        type_name,
        "video",
        "LTXPipeline",
        {"text_width": 32, "max_sequence_length": 16, "layers": 1},
        {
            "num_inference_steps": 2,
            "guidance_scale": 3.0,
            "num_frames": 9,
            "height": 32,
            "width": 32,
            "fps": 25.0,
        },
    )

    def __init__(self, pipeline, *, defaults=None, max_sequence_length: int = 128):
        #: (device, dtype) -> the attention mask of the pipeline's own unconditional input (T5 of "").
        self._empty_masks: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        super().__init__(pipeline, defaults=defaults, max_sequence_length=max_sequence_length)

    @classmethod
    def layout_from_configs(
        cls, configs, where, max_sequence_length: int = 128, **_: Any
    ) -> ConditioningLayout:
        layout = super().layout_from_configs(configs, where, max_sequence_length)
        width = layout.tensors[0].width
        caption = (configs("transformer") or {}).get("caption_channels")
        if caption not in (None, width):
            raise WeightsError(
                f"{where}: the T5 encoder gives width {width} (text_encoder/config.json d_model) but "
                f"transformer/config.json expects caption_channels {caption}"
            )
        return layout

    @classmethod
    def tiny_components(cls, k):
        from diffusers import (
            AutoencoderKLLTXVideo,
            FlowMatchEulerDiscreteScheduler,
            LTXVideoTransformer3DModel,
        )

        tokenizer = tiny_t5_tokenizer(k["max_sequence_length"])
        transformer = LTXVideoTransformer3DModel(
            in_channels=8,
            out_channels=8,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=2,
            attention_head_dim=8,
            cross_attention_dim=16,
            num_layers=k["layers"],
            caption_channels=k["text_width"],
        )
        # LTX-Video's compression (32x in space: patch 4 x three 2x stages; 8x in time) at 8 channels.
        scaling = (True, True, True, False)
        vae = AutoencoderKLLTXVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=8,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=scaling,
            decoder_spatio_temporal_scaling=scaling,
            patch_size=4,
            patch_size_t=1,
            encoder_causal=True,
            decoder_causal=False,
        )
        return {
            "tokenizer": tokenizer,
            "text_encoder": tiny_t5_encoder(k["text_width"], len(tokenizer)),
            "vae": vae.eval(),
            "transformer": transformer.eval(),
            "scheduler": FlowMatchEulerDiscreteScheduler(),
        }

    def _encode_empty(self, device, dtype):
        """The pipeline's own unconditional input: T5 of ``""`` (its mask kept for :meth:`_run`)."""
        _, _, negative, mask = self.pipeline.encode_prompt(
            [""],
            do_classifier_free_guidance=True,
            device=device,
            max_sequence_length=self.max_sequence_length,
        )
        self._empty_masks[(str(device), dtype)] = mask
        return negative.to(dtype)

    def to(self, device=None, dtype=None):
        self._empty_masks.clear()
        return super().to(device, dtype)

    def enable_model_cpu_offload(self, gpu_id=None, device=None) -> None:
        self._empty_masks.clear()
        super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)

    def _negative_mask(self, negative: torch.Tensor) -> torch.Tensor:
        """All ones (a projected sequence is dense), except for rows that are the pipeline's own unconditional
        input (T5 of ``""``): those get the mask the pipeline gives it."""
        ones = self._ones(negative)
        key = (str(self.device), negative.dtype)
        empty = self._empty_prompt_embeds(self.device, negative.dtype)
        mask = self._empty_masks[key]
        own = (negative == empty.to(negative.device)).flatten(1).all(dim=1)
        return torch.where(own[:, None], mask.to(ones), ones)

    def _check_sizes(self, opts) -> None:
        pipe = self.pipeline
        spatial = math.lcm(32, int(pipe.vae_spatial_compression_ratio))  # 32: LTXPipeline.check_inputs
        sizes = {"height": spatial, "width": spatial}
        why = "the ltx-video generator's VAE and pipeline"
        _check_video_sizes(self.type_name, opts, sizes, why, int(pipe.vae_temporal_compression_ratio))

    def _run(self, embeds, negative, opts, generator) -> list:
        self._check_sizes(opts)
        out = self._pipeline_call(
            embeds,
            negative,
            opts,
            generator,
            prompt_attention_mask=self._ones(embeds),
            negative_prompt_attention_mask=None if negative is None else self._negative_mask(negative),
            frame_rate=float(opts.fps),
            max_sequence_length=self.max_sequence_length,
        )
        return self._videos(out, opts)
