"""Conditioning shapes of generators, read from configs only (no torch, no weights).

``condition_shape`` is ``(tokens, width)`` of one prompt's conditioning:

- Stable Diffusion / Zeroscope: the CLIP text encoder's last hidden state padded to the tokenizer's
  ``model_max_length``: ``(model_max_length, hidden_size)``, e.g. ``(77, 768)`` for SD-1.5, ``(77, 1024)`` for SD-2
  and Zeroscope.
- AudioLDM: one L2-normalised CLAP text projection: ``(1, projection_dim)``, e.g. ``(1, 512)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anygen.errors import SpecError, WeightsError

#: The newer families (anygen.generators.modern): type -> (modality, diffusers pipeline class name). Listed here so
#: that reading shapes needs no torch.
#: Each family's class lives in the module named last (one module per family or group of families).
MODERN_FAMILIES = {
    "stable-diffusion-xl": ("image", "StableDiffusionXLPipeline", "anygen.generators.modern"),
    "pixart-sigma": ("image", "PixArtSigmaPipeline", "anygen.generators.modern"),
    "cogvideox": ("video", "CogVideoXPipeline", "anygen.generators.modern"),
    "audioldm2": ("audio", "AudioLDM2Pipeline", "anygen.generators.modern_audioldm2"),
    "stable-audio": ("audio", "StableAudioPipeline", "anygen.generators.modern_audio_video"),
    "ltx-video": ("video", "LTXPipeline", "anygen.generators.modern_audio_video"),
    "stable-diffusion-3": ("image", "StableDiffusion3Pipeline", "anygen.generators.modern_sd3"),
    "flux": ("image", "FluxPipeline", "anygen.generators.modern_flux_wan"),
    "wan": ("video", "WanPipeline", "anygen.generators.modern_flux_wan"),
}
MODERN_PIPELINES = {name: pipeline for name, (_, pipeline, _) in MODERN_FAMILIES.items()}
#: Generator type -> modality it produces.
GENERATOR_MODALITIES = {
    "stable-diffusion": "image",
    "zeroscope": "video",
    "audioldm": "audio",
    **{name: modality for name, (modality, _, _) in MODERN_FAMILIES.items()},
}
# A modality names the NExT-GPT generator of that kind.
_BY_MODALITY = {"image": "stable-diffusion", "video": "zeroscope", "audio": "audioldm"}

# transformers writes config.json without the values equal to the class defaults, so fall back to those.
_CLIP_TEXT_DEFAULTS = {"hidden_size": 512, "max_position_embeddings": 77}
_CLAP_TEXT_DEFAULTS = {"projection_dim": 512}


def generator_type(kind: str) -> str:
    """The generator type for ``kind``: a type name (``"stable-diffusion"``...) or a modality (``"image"``...)."""
    if kind in GENERATOR_MODALITIES:
        return kind
    if kind in _BY_MODALITY:
        return _BY_MODALITY[kind]
    known = ", ".join([*sorted(GENERATOR_MODALITIES), *sorted(_BY_MODALITY)])
    raise SpecError(f"unknown generator kind {kind!r}; known: {known}")


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    nested = config.get("text_config")
    return nested if isinstance(nested, Mapping) else config


def shape_from_text_encoder(
    type_name: str, text_encoder_config: Mapping[str, Any], model_max_length: int | None
) -> tuple[int, int]:
    """Condition shape from a text encoder's config dict and the tokenizer's ``model_max_length``."""
    if type_name == "audioldm":
        width = text_encoder_config.get("projection_dim") or _text_config(text_encoder_config).get(
            "projection_dim", _CLAP_TEXT_DEFAULTS["projection_dim"]
        )
        return (1, int(width))
    text = _text_config(text_encoder_config)
    width = text.get("hidden_size", _CLIP_TEXT_DEFAULTS["hidden_size"])
    positions = text.get("max_position_embeddings", _CLIP_TEXT_DEFAULTS["max_position_embeddings"])
    # A tokenizer without a real limit reports a huge sentinel (int(1e30)); the encoder's positions then bound it.
    tokens = model_max_length if model_max_length and model_max_length <= positions else positions
    return (int(tokens), int(width))


def condition_width_of_unet(type_name: str, unet_config: Mapping[str, Any]) -> int | None:
    """The conditioning width the UNet expects, or None where its config does not say."""
    key = "projection_class_embeddings_input_dim" if type_name == "audioldm" else "cross_attention_dim"
    value = unet_config.get(key)
    return int(value) if isinstance(value, int) else None


def condition_shape_from_config(kind: str, config: Mapping[str, Any] | None) -> tuple[int, int]:
    """Condition shape of the tiny generator that ``config`` (tiny knobs, see ``tiny.TINY_KNOBS``) describes."""
    from anygen.generators.tiny import resolve_tiny_config

    type_name = generator_type(kind)
    if type_name in MODERN_FAMILIES:
        return layout_from_config(type_name, config).shape
    knobs = resolve_tiny_config(type_name, config)
    if type_name == "audioldm":
        return (1, int(knobs["projection_dim"]))
    return (int(knobs["max_length"]), int(knobs["text_width"]))


def _modern(type_name: str):
    from anygen.generators.modern import modern_types

    return modern_types()[type_name]


def layout_from_config(kind: str, config: Mapping[str, Any] | None):
    """The :class:`~anygen.generators.conditioning.ConditioningLayout` of a tiny generator from its config."""
    from anygen.generators.conditioning import ConditioningLayout

    type_name = generator_type(kind)
    if type_name in MODERN_FAMILIES:
        return _modern(type_name).layout_from_tiny(config)
    return ConditioningLayout.single(*condition_shape_from_config(type_name, config))


def layout_from_folder(kind: str, path: str | Path):
    """The conditioning layout of a local diffusers folder, from its configs only."""
    from anygen.generators.conditioning import ConditioningLayout

    type_name = generator_type(kind)
    if type_name in MODERN_FAMILIES:
        return _modern(type_name).layout_from_folder(path)
    return ConditioningLayout.single(*condition_shape_from_folder(type_name, path))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise WeightsError(f"{what} folder {path.parent.parent} is missing {path.parent.name}/{path.name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise WeightsError(f"{path} does not hold a JSON object")
    return data


def condition_shape_from_folder(kind: str, path: str | Path) -> tuple[int, int]:
    """Condition shape of a local diffusers folder, from ``text_encoder/config.json`` and
    ``tokenizer/tokenizer_config.json`` only (plus a consistency check against ``unet/config.json`` if present).
    """
    type_name = generator_type(kind)
    if type_name in MODERN_FAMILIES:
        return layout_from_folder(type_name, path).shape
    root = Path(path)
    if not root.is_dir():
        raise WeightsError(f"{type_name} weights folder {root} does not exist")
    text_config = _read_json(root / "text_encoder" / "config.json", f"{type_name} weights")
    model_max_length = None
    if type_name != "audioldm":
        tok_config = _read_json(root / "tokenizer" / "tokenizer_config.json", f"{type_name} weights")
        value = tok_config.get("model_max_length")
        model_max_length = int(value) if isinstance(value, (int, float)) and value > 0 else None
    shape = shape_from_text_encoder(type_name, text_config, model_max_length)
    unet_json = root / "unet" / "config.json"
    if unet_json.is_file():
        expected = condition_width_of_unet(type_name, _read_json(unet_json, f"{type_name} weights"))
        if expected is not None and expected != shape[1]:
            raise WeightsError(
                f"{root}: text_encoder produces width {shape[1]} but unet/config.json expects {expected}"
            )
    return shape


# --------------------------------------------------------------------------------------------------------------
# Geometry: what a generator's sizes must satisfy, from its configs (no weights), for checking call options.

_DIFFUSERS_SIZE_MULTIPLE = (
    8  # StableDiffusionPipeline / TextToVideoSDPipeline check_inputs: height % 8, width % 8
)
_HIFIGAN_DEFAULTS = {"upsample_rates": [4, 4, 4, 4], "sampling_rate": 16000}  # SpeechT5HifiGanConfig's


@dataclass(frozen=True)
class GeneratorGeometry:
    """Sizes a generator can make, read from its VAE, UNet and vocoder configs.

    ``size_multiple``: height and width must be multiples of it (images, video; the VAE scale factor, and at
    least diffusers' 8). ``min_size``: the smallest height and width (the UNet's deepest feature map must be
    at least 2x2: at 1x1 its group norms can have a single value to normalise, and fail).
    ``native_size``: (height, width) made when the call gives none. For audio,
    ``audio_frame_s`` is one vocoder frame (hop length / sampling rate), ``min_audio_s`` the shortest
    ``audio_length_in_s`` the pipeline accepts (one latent row: a frame times the VAE scale factor) and
    ``native_audio_s`` the length made when the call gives none. ``max_steps``: the most denoising steps its
    scheduler takes (:func:`max_steps_of`). ``frame_step``: a video's ``num_frames`` is ``frame_step * k + 1``
    (CogVideoX, Wan: 4; LTX-Video: 8). None where the configs do not say.
    """

    size_multiple: int | None = None
    min_size: int | None = None
    native_size: tuple[int, int] | None = None
    audio_frame_s: float | None = None
    min_audio_s: float | None = None
    native_audio_s: float | None = None
    max_steps: int | None = None
    frame_step: int | None = None  # video: num_frames must be frame_step * k + 1 (a VAE that compresses time)


# Schedulers whose timestep_spacing defaults to something else than "leading" (when a config does not say).
_SPACING_DEFAULTS = {"DPMSolverMultistepScheduler": "linspace", "EulerDiscreteScheduler": "linspace"}


def max_steps_of(scheduler_config: Mapping[str, Any] | None) -> int | None:
    """The most denoising steps a scheduler with this config takes: ``num_train_timesteps``, less
    ``steps_offset`` with "leading" spacing (DDIM's and PNDM's default: with more steps the first timestep
    would be ``num_train_timesteps`` itself, past the end of the noise schedule). None when it does not say."""
    config = scheduler_config or {}
    total = config.get("num_train_timesteps")
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        return None
    spacing = config.get("timestep_spacing") or _SPACING_DEFAULTS.get(config.get("_class_name"), "leading")
    offset = config.get("steps_offset") or 0
    if spacing == "leading" and isinstance(offset, int) and 0 < offset < total:
        return total - offset
    return total


def geometry_from_configs(
    kind: str,
    vae_config: Mapping[str, Any] | None,
    unet_config: Mapping[str, Any] | None,
    vocoder_config: Mapping[str, Any] | None = None,
    scheduler_config: Mapping[str, Any] | None = None,
) -> GeneratorGeometry:
    """The geometry of a generator of ``kind`` from its components' config dicts (any may be None: unknown)."""
    type_name = generator_type(kind)
    steps = max_steps_of(scheduler_config)
    factor = None
    if vae_config and vae_config.get("block_out_channels"):
        factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    sample = (unet_config or {}).get("sample_size")
    if isinstance(sample, (list, tuple)) and len(sample) == 2:
        latent = (int(sample[0]), int(sample[1]))
    elif isinstance(sample, int):
        latent = (sample, sample)
    else:
        latent = None
    if type_name != "audioldm":
        multiple = math.lcm(_DIFFUSERS_SIZE_MULTIPLE, factor or 1)
        native = (latent[0] * factor, latent[1] * factor) if latent and factor else None
        blocks = len((unet_config or {}).get("block_out_channels") or ())
        smallest = None
        if factor and blocks:
            smallest = factor * 2 ** (blocks - 1) * 2
            smallest = -(-smallest // multiple) * multiple
        return GeneratorGeometry(
            size_multiple=multiple, min_size=smallest, native_size=native, max_steps=steps
        )
    if vocoder_config is None:
        return GeneratorGeometry(max_steps=steps)
    rates = vocoder_config.get("upsample_rates") or _HIFIGAN_DEFAULTS["upsample_rates"]
    rate = vocoder_config.get("sampling_rate") or _HIFIGAN_DEFAULTS["sampling_rate"]
    frame = math.prod(int(r) for r in rates) / float(rate)
    return GeneratorGeometry(
        audio_frame_s=frame,
        min_audio_s=frame * factor if factor else None,
        native_audio_s=latent[0] * factor * frame if latent and factor else None,
        max_steps=steps,
    )


def geometry_from_config(kind: str, config: Mapping[str, Any] | None) -> GeneratorGeometry:
    """The geometry of the tiny generator that ``config`` (tiny knobs) describes."""
    from anygen.generators.tiny import resolve_tiny_config, tiny_scheduler_config

    type_name = generator_type(kind)
    if type_name in MODERN_FAMILIES:
        return _modern_geometry(type_name, config)
    knobs = resolve_tiny_config(type_name, config)
    vocoder = None
    if type_name == "audioldm":
        vocoder = {"upsample_rates": knobs["vocoder_upsample_rates"], "sampling_rate": knobs["sampling_rate"]}
    unet = {"sample_size": knobs["sample_size"], "block_out_channels": knobs["unet_channels"]}
    return geometry_from_configs(
        type_name,
        {"block_out_channels": knobs["vae_channels"]},
        unet,
        vocoder,
        tiny_scheduler_config(knobs),
    )


def geometry_from_folder(kind: str, path: str | Path) -> GeneratorGeometry:
    """The geometry of a local diffusers folder, from ``vae/``, ``unet/`` and ``vocoder/config.json``."""
    type_name = generator_type(kind)
    root = Path(path)

    def config(name: str, file_name: str = "config.json") -> dict[str, Any] | None:
        file = root / name / file_name
        return _read_json(file, f"{type_name} weights") if file.is_file() else None

    if type_name in MODERN_FAMILIES:
        steps = max_steps_of(config("scheduler", "scheduler_config.json"))
        return _family_geometry(type_name, native=None, max_steps=steps)
    vocoder = config("vocoder") if type_name == "audioldm" else None
    scheduler = config("scheduler", "scheduler_config.json")
    return geometry_from_configs(type_name, config("vae"), config("unet"), vocoder, scheduler)


def _modern_geometry(type_name: str, config: Mapping[str, Any] | None) -> GeneratorGeometry:
    """The tiny newer families: sizes as their tiny defaults make them; steps bounded by 1000 train timesteps."""
    defaults = _modern(type_name).family.resolve(config)["defaults"]
    native = (defaults["height"], defaults["width"]) if "height" in defaults and "width" in defaults else None
    return _family_geometry(type_name, native=native, max_steps=1000)


def _family_geometry(type_name: str, *, native: tuple[int, int] | None, max_steps: int | None) -> GeneratorGeometry:
    """A newer family's rules (its class's ``size_step`` and ``frame_step``), checked before any model runs."""
    cls = _modern(type_name)
    step = cls.size_step if cls.modality != "audio" else None
    return GeneratorGeometry(
        size_multiple=step, min_size=step, native_size=native, max_steps=max_steps, frame_step=cls.frame_step
    )
