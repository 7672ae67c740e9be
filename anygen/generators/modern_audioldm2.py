"""AudioLDM 2 (``AudioLDM2Pipeline``): a T5 sequence and eight GPT-2 states, two cross-attentions of one UNet.

The pipeline's ``encode_prompt`` turns a caption into

- ``prompt_embeds`` ``(tokens, d_model)``: Flan-T5's last hidden state (``text_encoder_2``), ``(512, 1024)`` for
  ``cvssp/audioldm2``: ``tokens`` is ``tokenizer_2``'s ``model_max_length`` (or the ``max_sequence_length``
  architecture knob, to keep the projector's output smaller);
- ``generated_prompt_embeds`` ``(max_new_tokens, n_embd)``: what the GPT-2 ``language_model`` generates, one
  hidden state at a time, from CLAP's text projection and T5's states (each projected by ``projection_model`` and
  framed by learned start/end vectors): ``(8, 768)`` for ``cvssp/audioldm2``. ``max_new_tokens`` is
  ``language_model/config.json``'s (8 there), or the architecture knob of that name.

The UNet attends to ``generated_prompt_embeds`` and to ``prompt_embeds`` (its ``cross_attention_dim`` lists, per
block, ``[None, n_embd, d_model]``), and to an attention mask over ``prompt_embeds``: all ones for a projected
sequence (it is dense), as for PixArt.

A caption is encoded as the pipeline encodes a prompt padded to ``tokens`` (T5 padded with its mask, the GPT-2 run
over the masked sequence): the pipeline's own code path for the negative prompt, which pads to the length of the
conditional input; so each caption's encoding depends on it alone, never on the batch it comes in. The
unconditional input is the pipeline's own too: ``""`` through that same path.

transformers 5's ``GPT2Model`` lost the generation helpers the pipeline calls
(``_update_model_kwargs_for_generation``; diffusers issue #12630), so a folder whose ``language_model`` is a
``GPT2Model`` gets it wrapped in a ``GPT2LMHeadModel`` sharing its weights (the same hidden states; saved as
such). Text-to-speech variants (a ``VitsModel`` ``text_encoder_2``, which needs a transcription) are not supported.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from anygen.errors import SpecError, WeightsError
from anygen.generators.conditioning import ConditioningLayout, ConditionTensor
from anygen.generators.diffusion import AudioDefaults, DiffusersGenerator, _finite
from anygen.generators.modern import (
    ConfigReader,
    Family,
    _LayoutGenerator,
    _need,
    tiny_t5_encoder,
    tiny_t5_tokenizer,
)
from anygen.media import Audio

#: The projected sequence the GPT-2 reads: CLAP's one vector and T5's states, each between a start and an end vector.
_FRAME = 1 + 2 + 2
#: A tokenizer without a real limit reports a huge sentinel (int(1e30)) as its model_max_length.
_NO_LIMIT = 1_000_000


@dataclass
class AudioLDM2Defaults(AudioDefaults):
    """AudioLDM2Pipeline's own guidance default (3.5); ``audio_length_in_s`` None: the UNet's native length
    (10.24 s for ``cvssp/audioldm2``)."""

    guidance_scale: float = 3.5


def _positive(value: Any, what: str, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(
            f"{where}: {what}: expected an integer >= 1 (or none: the configs' value), got {value!r}"
        )
    return value


def _unet_widths(cross: Any) -> list[tuple[str, int]]:
    """``(tensor, width)`` for each cross-attention ``unet/config.json`` declares: per block a width or a list of
    them, the first two attending to ``generated_prompt_embeds`` and the rest to ``prompt_embeds``
    (``AudioLDM2UNet2DConditionModel``'s rule); None is self-attention."""
    found = []
    for block in cross if isinstance(cross, (list, tuple)) else [cross]:
        for index, width in enumerate(block if isinstance(block, (list, tuple)) else [block]):
            if isinstance(width, int) and not isinstance(width, bool):
                found.append(("generated_prompt_embeds" if index <= 1 else "prompt_embeds", width))
    return found


@contextlib.contextmanager
def _quiet_gpt2():
    """transformers 5 warns on each GPT-2 call that ``past_key_values`` (how the pipeline runs it) is deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)
        yield


def _with_generation_helpers(pipeline: Any) -> None:
    """Wrap a transformers-5 ``GPT2Model`` ``language_model`` in a ``GPT2LMHeadModel`` that shares its weights."""
    model = getattr(pipeline, "language_model", None)
    if model is None or hasattr(model, "_update_model_kwargs_for_generation"):
        return
    from transformers import GPT2LMHeadModel, GPT2Model

    if not isinstance(model, GPT2Model):
        raise WeightsError(
            f"audioldm2: the language_model is a {type(model).__name__}, which lacks the generation helpers "
            "AudioLDM2Pipeline calls; expected GPT2Model or GPT2LMHeadModel"
        )
    with torch.device("meta"):
        head = GPT2LMHeadModel(model.config)
    head.transformer = model
    head.lm_head.weight = model.wte.weight  # tied, as GPT-2's are: nothing new, nothing on the meta device
    pipeline.register_modules(language_model=head.train(model.training))


class AudioLDM2Generator(_LayoutGenerator):
    """Audio (:class:`anygen.media.Audio`, mono float32) from ``AudioLDM2Pipeline``: ``prompt_embeds`` (T5,
    ``(512, 1024)`` for ``cvssp/audioldm2``) and ``generated_prompt_embeds`` (GPT-2, ``(8, 768)``)."""

    type_name = "audioldm2"
    modality = "audio"
    defaults_class = AudioLDM2Defaults
    architecture_knobs = ("max_new_tokens", "max_sequence_length")
    components = {
        **DiffusersGenerator.components,
        "text_encoder_2": "transformers",
        "tokenizer_2": "tokenizer",
        "projection_model": "diffusers",
        "language_model": "transformers",
        "vocoder": "transformers",
    }
    family = Family(
        type_name,
        "audio",
        "AudioLDM2Pipeline",
        {
            "clap_width": 16,  # CLAP text hidden size and projection_dim
            "text_width": 32,  # T5 d_model: prompt_embeds' width
            "lm_width": 16,  # GPT-2 n_embd: generated_prompt_embeds' width
            "max_length": 16,  # both tokenizers' model_max_length: prompt_embeds' tokens
            "max_new_tokens": 8,  # GPT-2 states generated (language_model/config.json), as the real model
            "max_sequence_length": None,  # prompt_embeds' tokens when not max_length
            "sample_size": 16,  # UNet latent rows: native length 16 x 2 (VAE) x 160 / 16000 = 0.32 s
            "mel_bins": 16,  # vocoder model_in_dim
        },
        {"num_inference_steps": 2, "guidance_scale": 3.5, "audio_length_in_s": None},
    )

    def __init__(
        self,
        pipeline,
        *,
        defaults=None,
        max_new_tokens: int | None = None,
        max_sequence_length: int | None = None,
    ):
        where = f"{self.type_name} generator"
        self.max_new_tokens = _positive(max_new_tokens, "max_new_tokens", where)
        self.max_sequence_length = _positive(max_sequence_length, "max_sequence_length", where)
        _with_generation_helpers(pipeline)
        super().__init__(pipeline, defaults=defaults)

    def architecture(self) -> dict[str, Any]:
        return {k: v for k, v in super().architecture().items() if v is not None}

    @property
    def sample_rate(self) -> int:
        return int(self.pipeline.vocoder.config.sampling_rate)

    # ---- layout ------------------------------------------------------------------------------------------------
    @classmethod
    def layout_from_configs(
        cls,
        configs: ConfigReader,
        where: str,
        max_new_tokens: int | None = None,
        max_sequence_length: int | None = None,
        **_: Any,
    ) -> ConditioningLayout:
        text_2 = configs("text_encoder_2") or {}
        if text_2.get("model_type") == "vits":
            raise WeightsError(
                f"{where}: text_encoder_2/config.json is a VITS model (AudioLDM 2 text-to-speech, which needs a "
                "transcription); only the T5 text-to-audio variants are supported"
            )
        width = int(_need(configs, "text_encoder_2", "d_model", where))
        lm_width = int(_need(configs, "language_model", "n_embd", where))
        tokens = _positive(max_sequence_length, "max_sequence_length", where)
        if tokens is None:
            tokens = _need(configs, "tokenizer_2", "model_max_length", where, "tokenizer_config.json")
            if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens < _NO_LIMIT:
                raise WeightsError(
                    f"{where}: tokenizer_2/tokenizer_config.json says model_max_length {tokens!r}, no length to pad "
                    "T5's prompts to; give the generator config max_sequence_length"
                )
        generated = _positive(max_new_tokens, "max_new_tokens", where)
        if generated is None:
            generated = _need(configs, "language_model", "max_new_tokens", where)
            if not isinstance(generated, int) or isinstance(generated, bool) or generated < 1:
                raise WeightsError(
                    f"{where}: language_model/config.json says max_new_tokens {generated!r}; expected an integer >= 1"
                )
        cls._check_widths(configs, where, width, lm_width, tokens + _FRAME + generated)
        return ConditioningLayout(
            (
                ConditionTensor("prompt_embeds", (int(tokens), width)),
                ConditionTensor("generated_prompt_embeds", (int(generated), lm_width)),
            )
        )

    @staticmethod
    def _check_widths(configs: ConfigReader, where: str, width: int, lm_width: int, positions: int) -> None:
        """The projection model, the GPT-2's positions and the UNet's cross-attentions against the encoders."""
        projection = configs("projection_model") or {}
        clap = (configs("text_encoder") or {}).get("projection_dim")
        for key, have, source in (
            ("text_encoder_dim", clap, "text_encoder/config.json projection_dim (CLAP)"),
            ("text_encoder_1_dim", width, "text_encoder_2/config.json d_model (T5)"),
            (
                "langauge_model_dim",
                lm_width,
                "language_model/config.json n_embd (GPT-2)",
            ),  # diffusers' spelling
        ):
            want = projection.get(key)
            if want is not None and have is not None and want != have:
                raise WeightsError(
                    f"{where}: {source} is {have} but projection_model/config.json expects {key} {want}"
                )
        most = (configs("language_model") or {}).get("n_positions")
        if isinstance(most, int) and most < positions:
            raise WeightsError(
                f"{where}: language_model/config.json has n_positions {most}, fewer than the {positions} the "
                f"pipeline runs it over ({_FRAME} framing vectors + T5's tokens + max_new_tokens)"
            )
        have = {"prompt_embeds": width, "generated_prompt_embeds": lm_width}
        for tensor, want in _unet_widths((configs("unet") or {}).get("cross_attention_dim")):
            if want != have[tensor]:
                source = "the T5 encoder" if tensor == "prompt_embeds" else "the language model"
                raise WeightsError(
                    f"{where}: {source} gives {tensor} width {have[tensor]} but unet/config.json expects "
                    f"cross_attention_dim {want} for it"
                )

    @classmethod
    def _tiny_knobs(cls, config) -> dict[str, Any]:
        k = cls.family.resolve(config)
        where = f"{cls.type_name} generator config"
        for name in ("clap_width", "text_width", "lm_width", "max_length", "max_new_tokens", "sample_size"):
            _positive(k[name], name, where)
            if k[name] is None:
                raise SpecError(f"{where}: {name}: expected an integer >= 1, got None")
        _positive(k["max_sequence_length"], "max_sequence_length", where)
        if not isinstance(k["mel_bins"], int) or k["mel_bins"] < 2 or k["mel_bins"] % 2:
            raise SpecError(
                f"{where}: mel_bins: expected an even integer >= 2 (the VAE halves it), got {k['mel_bins']!r}"
            )
        return k

    @classmethod
    def layout_from_tiny(cls, config) -> ConditioningLayout:
        k = cls._tiny_knobs(config)
        return ConditioningLayout(
            (
                ConditionTensor(
                    "prompt_embeds", (k["max_sequence_length"] or k["max_length"], k["text_width"])
                ),
                ConditionTensor("generated_prompt_embeds", (k["max_new_tokens"], k["lm_width"])),
            )
        )

    # ---- tiny components -----------------------------------------------------------------------------------------
    @classmethod
    def tiny_components(cls, k: Mapping[str, Any]) -> dict[str, Any]:
        """As diffusers' AudioLDM2 tests build them, smaller: CLAP (text and a tiny audio branch), T5, GPT-2, the
        projection model, a two-block UNet with ``[None, lm_width, text_width]`` cross-attentions, a mel VAE and a
        HiFi-GAN vocoder (160 samples per mel frame at 16 kHz, as the real one)."""
        from diffusers import (
            AudioLDM2ProjectionModel,
            AudioLDM2UNet2DConditionModel,
            AutoencoderKL,
            DDIMScheduler,
        )
        from transformers import (
            ClapAudioConfig,
            ClapConfig,
            ClapFeatureExtractor,
            ClapModel,
            ClapTextConfig,
            GPT2Config,
            GPT2LMHeadModel,
            SpeechT5HifiGan,
            SpeechT5HifiGanConfig,
        )

        from anygen.generators.tiny import tiny_roberta_tokenizer

        k = cls._tiny_knobs(k)
        tokens = k["max_sequence_length"] or k["max_length"]
        tokenizer = tiny_roberta_tokenizer(k["max_length"])
        text_config = ClapTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=k["clap_width"],
            intermediate_size=2 * k["clap_width"],
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=k["max_length"] + 2,  # Roberta positions start after the padding index
            projection_dim=k["clap_width"],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        audio_config = (
            ClapAudioConfig(  # unused for text-to-audio (the pipeline ranks several waveforms with it)
                spec_size=64,
                window_size=4,
                num_mel_bins=64,
                intermediate_size=16,
                depths=[1, 1],
                num_attention_heads=[2, 2],
                num_hidden_layers=2,
                hidden_size=8,
                projection_dim=k["clap_width"],
                patch_size=2,
                patch_stride=2,
                patch_embed_input_channels=4,
            )
        )
        clap = ClapModel(
            ClapConfig(
                text_config=text_config.to_dict(),
                audio_config=audio_config.to_dict(),
                projection_dim=k["clap_width"],
            )
        )
        tokenizer_2 = tiny_t5_tokenizer(k["max_length"])
        lm_config = GPT2Config(
            n_embd=k["lm_width"],
            n_head=2,
            n_layer=1,
            vocab_size=2,  # never used: the pipeline feeds it embeddings
            bos_token_id=0,
            eos_token_id=1,
            n_positions=tokens + _FRAME + k["max_new_tokens"],
        )
        lm_config.max_new_tokens = k[
            "max_new_tokens"
        ]  # where the pipeline reads its default, as the real config
        unet = AudioLDM2UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=k["sample_size"],
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=([None, k["lm_width"], k["text_width"]],) * 2,
            attention_head_dim=2,
            norm_num_groups=4,
        )
        vae = AutoencoderKL(
            block_out_channels=[8, 8],
            in_channels=1,
            out_channels=1,
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4,
            norm_num_groups=2,
        )
        rates = [8, 5, 4]
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=k["mel_bins"],
                sampling_rate=16000,
                upsample_initial_channel=16,
                upsample_rates=rates,
                upsample_kernel_sizes=[2 * r for r in rates],
                resblock_kernel_sizes=[3],
                resblock_dilation_sizes=[[1, 3]],
                normalize_before=False,
                initializer_range=0.1,  # transformers' 0.01 gives near-silent waveforms
            )
        )
        scheduler = DDIMScheduler(  # AudioLDM 2's betas
            beta_start=0.0015,
            beta_end=0.0195,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        )
        return {
            "vae": vae.eval(),
            "text_encoder": clap.eval(),
            "text_encoder_2": tiny_t5_encoder(k["text_width"], len(tokenizer_2)),
            "projection_model": AudioLDM2ProjectionModel(
                text_encoder_dim=k["clap_width"],
                text_encoder_1_dim=k["text_width"],
                langauge_model_dim=k["lm_width"],
            ).eval(),
            "language_model": GPT2LMHeadModel(lm_config).eval(),
            "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2,
            "feature_extractor": ClapFeatureExtractor(),
            "unet": unet.eval(),
            "scheduler": scheduler,
            "vocoder": vocoder.eval(),
        }

    # ---- encoding ------------------------------------------------------------------------------------------------
    def _encode_padded(
        self, texts: list[str] | None, batch: int, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """The pipeline's ``encode_prompt`` for ``texts`` (``None``: its own unconditional ``""``) padded to the
        layout's tokens: its negative-prompt path, run beside a conditional input of the layout's shape (whose
        length it pads to; that input itself is a placeholder, and its half of the result is dropped)."""
        tokens, width = self.layout["prompt_embeds"].shape
        generated, lm_width = self.layout["generated_prompt_embeds"].shape
        placeholder = torch.zeros(
            batch, tokens, width, device=device, dtype=self.pipeline.text_encoder_2.dtype
        )
        placeholder_lm = torch.zeros(
            batch, generated, lm_width, device=device, dtype=self.pipeline.language_model.dtype
        )
        with _quiet_gpt2():
            embeds, _, generated_embeds = self.pipeline.encode_prompt(
                [""] * batch if texts is None else texts,
                device,
                1,
                True,
                negative_prompt=texts,
                prompt_embeds=placeholder,
                generated_prompt_embeds=placeholder_lm,
                max_new_tokens=generated,
            )
        return {"prompt_embeds": embeds[:batch], "generated_prompt_embeds": generated_embeds[:batch]}

    def _encode_all(self, texts, device):
        return self._encode_padded(list(texts), len(texts), device)

    def _encode_empty(self, device, dtype):
        """The pipeline's own unconditional input: ``""`` (its ``uncond_tokens`` with no negative prompt), T5 padded
        to the conditional input's length, the GPT-2 run over it."""
        return self._encode_padded(None, 1, device)

    # ---- generation ----------------------------------------------------------------------------------------------
    def _run(self, embeds, negative, opts, generator) -> list:
        cond = self.layout.unpack(embeds)
        neg = self.layout.unpack(negative) if negative is not None else {}
        ones = torch.ones(
            embeds.shape[0], self.layout["prompt_embeds"].tokens, dtype=torch.long, device=embeds.device
        )
        with _quiet_gpt2():
            out = self.pipeline(
                prompt_embeds=cond["prompt_embeds"],
                generated_prompt_embeds=cond["generated_prompt_embeds"],
                attention_mask=ones,
                negative_prompt_embeds=neg.get("prompt_embeds"),
                negative_generated_prompt_embeds=neg.get("generated_prompt_embeds"),
                negative_attention_mask=ones if negative is not None else None,
                num_inference_steps=opts.num_inference_steps,
                guidance_scale=opts.guidance_scale,
                audio_length_in_s=opts.audio_length_in_s,
                max_new_tokens=self.layout["generated_prompt_embeds"].tokens,
                generator=generator,
                output_type="np",
            )
        rate = self.sample_rate
        audios = _finite(np.asarray(out.audios, dtype=np.float32), "audio", opts.guidance_scale)
        return [Audio(waveform=w.reshape(-1), sample_rate=rate) for w in audios]
