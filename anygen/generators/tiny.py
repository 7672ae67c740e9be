"""Tiny random-weight diffusers components built from real classes, for tests and smoke runs.

A tiny generator is described by a small dict of *knobs* (see :data:`TINY_KNOBS` for each generator type and
its defaults). The builders below turn resolved knobs into the same classes the real pipelines ship
(``UNet2DConditionModel``, ``UNet3DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel`` + ``CLIPTokenizer``,
``ClapTextModelWithProjection`` + ``RobertaTokenizer``, ``SpeechT5HifiGan`` and a DDIM/PNDM/DPM-Solver scheduler)
at tiny widths. The text length stays 77 tokens so conditioning shapes look like the real models' ``(77, width)``.

Tokenizers are built locally (nothing is downloaded): a byte-level BPE vocabulary with no merges, so each
character is one token.

This module imports torch/diffusers/transformers only inside the builder functions, so that
:func:`resolve_tiny_config` (used to read condition shapes) stays cheap.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from anygen.errors import SpecError

# Scheduler settings as the real checkpoints ship them (SD-1.5: PNDM; SD-2, Zeroscope, AudioLDM: DDIM).
_SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012}
_AUDIOLDM_BETAS = {"beta_start": 0.0015, "beta_end": 0.0195}

_COMMON_KNOBS: dict[str, Any] = {
    "text_width": 32,  # CLIP hidden size (= UNet cross-attention width) / CLAP text hidden size
    "text_layers": 1,
    "text_heads": 2,
    "text_ffn": 64,  # text encoder intermediate size
    "max_length": 77,  # tokenizer model_max_length (= CLIP max_position_embeddings)
    "unet_channels": (32, 64),  # UNet block_out_channels (one down/up block each)
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "unet_norm_groups": 32,
    "vae_channels": (16, 32, 32),  # len(vae_channels) - 1 = log2(VAE scale factor)
    "vae_norm_groups": 16,
    "latent_channels": 4,
    "sample_size": 16,  # UNet latent size: native image size = sample_size * VAE scale factor
    "scheduler": "ddim",  # ddim | pndm | dpmsolver
    "prediction_type": "epsilon",  # epsilon | v_prediction | sample
    "beta_start": _SD_BETAS["beta_start"],
    "beta_end": _SD_BETAS["beta_end"],
    "defaults": {},  # generation defaults (num_inference_steps, guidance_scale, ...) overriding the tiny ones
    # Optional [tokens, width]: sets max_length/text_width (audio: [1, projection_dim]); must agree with them if
    # they are given too.
    "condition_shape": None,
}

#: Knobs and defaults for each generator type. ``defaults`` holds the generation defaults of a tiny generator.
TINY_KNOBS: dict[str, dict[str, Any]] = {
    "stable-diffusion": {**_COMMON_KNOBS, "scheduler": "pndm"},
    "zeroscope": {**_COMMON_KNOBS, "frame_positions": False},  # see anygen.generators.frame_positions
    "audioldm": {
        **_COMMON_KNOBS,
        **_AUDIOLDM_BETAS,
        "projection_dim": 32,  # CLAP projection width = conditioning width
        "vae_channels": (16, 32),
        # Latent time length: native audio length = sample_size * VAE scale * hop / sampling_rate = 1.0 s.
        "sample_size": 50,
        "mel_bins": 16,  # vocoder model_in_dim; divisible by the VAE scale factor
        "sampling_rate": 16000,
        "vocoder_upsample_rates": (8, 5, 4),  # product = hop length (160 samples, as AudioLDM)
        "vocoder_channels": 32,
        "vocoder_init": 0.1,  # init std of the vocoder (transformers' 0.01 gives near-silent ~1e-6 waveforms)
    },
}

#: Generation defaults of tiny generators (before a config's own ``defaults``).
TINY_GENERATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "stable-diffusion": {"num_inference_steps": 2, "height": None, "width": None},
    "zeroscope": {"num_inference_steps": 2, "height": None, "width": None, "num_frames": 8, "fps": 8.0},
    "audioldm": {"num_inference_steps": 2, "audio_length_in_s": None},
}


def resolve_tiny_config(type_name: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` merged over the tiny defaults of ``type_name``; unknown knobs raise :class:`SpecError`."""
    from anygen.generators.shapes import MODERN_FAMILIES

    if type_name in MODERN_FAMILIES:  # the newer families keep their knobs beside their classes
        from anygen.generators.modern import modern_types

        return modern_types()[type_name].family.resolve(config)
    if type_name not in TINY_KNOBS:
        raise SpecError(
            f"no tiny config for generator type {type_name!r}; known: {', '.join(sorted(TINY_KNOBS))}"
        )
    config = dict(config or {})
    knobs = TINY_KNOBS[type_name]
    unknown = sorted(set(config) - set(knobs))
    if unknown:
        raise SpecError(
            f"unknown tiny {type_name} config key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(knobs))}"
        )
    resolved = copy.deepcopy(knobs)
    resolved.update(copy.deepcopy(config))
    if not isinstance(resolved["defaults"], Mapping):
        raise SpecError(f"tiny {type_name} config 'defaults' must be a mapping, got {resolved['defaults']!r}")
    resolved["defaults"] = {**TINY_GENERATION_DEFAULTS[type_name], **resolved["defaults"]}
    # Checked when a spec loads, before any model is built (the generator's constructor checks it again for
    # anygen_generator.json).
    if not isinstance(resolved.get("frame_positions", False), bool):
        raise SpecError(
            f"tiny {type_name} config 'frame_positions' must be true or false, got {resolved['frame_positions']!r}"
        )
    if resolved["condition_shape"] is not None:
        _apply_condition_shape(type_name, resolved, config)
    return resolved


def _apply_condition_shape(type_name: str, resolved: dict[str, Any], given: Mapping[str, Any]) -> None:
    shape = resolved["condition_shape"]
    try:
        tokens, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise SpecError(
            f"tiny {type_name} config 'condition_shape' must be [tokens, width], got {shape!r}"
        ) from None
    if type_name == "audioldm":
        if tokens != 1:
            raise SpecError(f"tiny audioldm config 'condition_shape' must be [1, width], got {shape!r}")
        implied = {"projection_dim": width}
    else:
        implied = {"max_length": tokens, "text_width": width}
    for key, value in implied.items():
        if key in given and int(given[key]) != value:
            raise SpecError(
                f"tiny {type_name} config: condition_shape {list(shape)} says {key}={value} but {key} is {given[key]}"
            )
        resolved[key] = value
    resolved["condition_shape"] = (tokens, width)


# --------------------------------------------------------------------------------------------------------------
# Tokenizers


def byte_unicode_chars() -> list[str]:
    """The 256 printable characters GPT-2/CLIP byte-level BPE uses for bytes 0..255 (``bytes_to_unicode``)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in codes:
            codes[b] = 256 + extra
            extra += 1
    return [chr(codes[b]) for b in range(256)]


def tiny_clip_tokenizer(max_length: int = 77):
    """A ``CLIPTokenizer`` over single bytes: every byte character, with and without ``</w>``, plus BOS/EOS."""
    from transformers import CLIPTokenizer

    chars = byte_unicode_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_roberta_tokenizer(max_length: int = 77):
    """A ``RobertaTokenizer`` over single bytes with Roberta's special tokens (``<s>``=0, ``<pad>``=1, ``</s>``=2)."""
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in byte_unicode_chars():
        vocab[c] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


# --------------------------------------------------------------------------------------------------------------
# Models (knobs are a dict resolved by resolve_tiny_config)


def tiny_clip_text(knobs: Mapping[str, Any]):
    """``(CLIPTextModel, CLIPTokenizer)``; hidden states are ``[B, max_length, text_width]``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(knobs["max_length"])
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=knobs["text_width"],
        intermediate_size=knobs["text_ffn"],
        num_hidden_layers=knobs["text_layers"],
        num_attention_heads=knobs["text_heads"],
        max_position_embeddings=knobs["max_length"],
        projection_dim=knobs["text_width"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval(), tokenizer


def tiny_clap_text(knobs: Mapping[str, Any]):
    """``(ClapTextModelWithProjection, RobertaTokenizer)``; ``text_embeds`` are ``[B, projection_dim]``."""
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    tokenizer = tiny_roberta_tokenizer(knobs["max_length"])
    config = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=knobs["text_width"],
        intermediate_size=knobs["text_ffn"],
        num_hidden_layers=knobs["text_layers"],
        num_attention_heads=knobs["text_heads"],
        # Roberta-style positions start after the padding index: two more positions than tokens.
        max_position_embeddings=knobs["max_length"] + 2,
        projection_dim=knobs["projection_dim"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return ClapTextModelWithProjection(config).eval(), tokenizer


def _unet_common(knobs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "block_out_channels": tuple(knobs["unet_channels"]),
        "layers_per_block": knobs["layers_per_block"],
        "sample_size": knobs["sample_size"],
        "in_channels": knobs["latent_channels"],
        "out_channels": knobs["latent_channels"],
        "attention_head_dim": knobs["attention_head_dim"],
        "norm_num_groups": knobs["unet_norm_groups"],
    }


def _block_types(n: int, plain: str, cross: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Down blocks: plain first, cross-attention deeper (as SD's last block is plain: keep it simple and cheap)."""
    down = tuple(cross.format("Down") if i else plain.format("Down") for i in range(n))
    up = tuple(cross.format("Up") if i < n - 1 else plain.format("Up") for i in range(n))
    return down, up


def tiny_unet2d(knobs: Mapping[str, Any], *, audio: bool = False):
    """``UNet2DConditionModel``: cross-attention on the text (SD) or, for AudioLDM, a CLAP class embedding."""
    from diffusers import UNet2DConditionModel

    channels = tuple(knobs["unet_channels"])
    down, up = _block_types(len(channels), "{}Block2D", "CrossAttn{}Block2D")
    if audio:
        # AudioLDM: no text cross-attention (the "cross" attention attends to the latents themselves, so its width
        # is each block's width); the CLAP vector enters as a class embedding concatenated to the time embedding.
        extra = {
            "cross_attention_dim": channels,
            "class_embed_type": "simple_projection",
            "projection_class_embeddings_input_dim": knobs["projection_dim"],
            "class_embeddings_concat": True,
        }
    else:
        extra = {"cross_attention_dim": knobs["text_width"]}
    return UNet2DConditionModel(
        down_block_types=down, up_block_types=up, **_unet_common(knobs), **extra
    ).eval()


def tiny_unet3d(knobs: Mapping[str, Any]):
    """``UNet3DConditionModel`` (Zeroscope / ModelScope text-to-video) with cross-attention on the text."""
    from diffusers import UNet3DConditionModel

    down, up = _block_types(len(knobs["unet_channels"]), "{}Block3D", "CrossAttn{}Block3D")
    return UNet3DConditionModel(
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=knobs["text_width"],
        **_unet_common(knobs),
    ).eval()


def tiny_vae(knobs: Mapping[str, Any], *, in_channels: int = 3, sample_size: int | None = None):
    """``AutoencoderKL`` with ``len(vae_channels)`` blocks (scale factor ``2 ** (len - 1)``)."""
    from diffusers import AutoencoderKL

    n = len(knobs["vae_channels"])
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(knobs["vae_channels"]),
        latent_channels=knobs["latent_channels"],
        norm_num_groups=knobs["vae_norm_groups"],
        sample_size=sample_size or knobs["sample_size"] * 2 ** (n - 1),
    ).eval()


def tiny_vocoder(knobs: Mapping[str, Any]):
    """``SpeechT5HifiGan`` mapping ``mel_bins`` log-mel frames to ``prod(vocoder_upsample_rates)`` samples each."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    rates = [int(r) for r in knobs["vocoder_upsample_rates"]]
    config = SpeechT5HifiGanConfig(
        model_in_dim=knobs["mel_bins"],
        sampling_rate=knobs["sampling_rate"],
        upsample_initial_channel=knobs["vocoder_channels"],
        upsample_rates=rates,
        upsample_kernel_sizes=[2 * r for r in rates],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
        initializer_range=knobs["vocoder_init"],
    )
    return SpeechT5HifiGan(config).eval()


_SCHEDULERS = {"ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "dpmsolver": "DPMSolverMultistepScheduler"}


def tiny_scheduler(knobs: Mapping[str, Any]):
    """The scheduler named by ``knobs['scheduler']`` with the real checkpoints' settings (scaled-linear betas)."""
    import diffusers

    config = tiny_scheduler_config(knobs)
    return getattr(diffusers, config.pop("_class_name"))(**config)


def tiny_scheduler_config(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of :func:`tiny_scheduler` (and its class, ``_class_name``), without building it."""
    name = knobs["scheduler"]
    if name not in _SCHEDULERS:
        raise SpecError(f"unknown tiny scheduler {name!r}; known: {', '.join(sorted(_SCHEDULERS))}")
    common = {
        "num_train_timesteps": 1000,
        "beta_start": knobs["beta_start"],
        "beta_end": knobs["beta_end"],
        "beta_schedule": "scaled_linear",
        "prediction_type": knobs["prediction_type"],
        "steps_offset": 1,
    }
    if name == "ddim":
        common.update(clip_sample=False, set_alpha_to_one=False)
    elif name == "pndm":
        common.update(skip_prk_steps=True, set_alpha_to_one=False)
    return {"_class_name": _SCHEDULERS[name], **common}


def tiny_components(type_name: str, knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the diffusers pipeline for ``type_name`` (uses the global torch RNG)."""
    if type_name == "audioldm":
        text_encoder, tokenizer = tiny_clap_text(knobs)
        return {
            "vae": tiny_vae(knobs, in_channels=1, sample_size=knobs["sample_size"]),
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "unet": tiny_unet2d(knobs, audio=True),
            "scheduler": tiny_scheduler(knobs),
            "vocoder": tiny_vocoder(knobs),
        }
    text_encoder, tokenizer = tiny_clip_text(knobs)
    unet = tiny_unet3d(knobs) if type_name == "zeroscope" else tiny_unet2d(knobs)
    return {
        "vae": tiny_vae(knobs),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": tiny_scheduler(knobs),
    }
