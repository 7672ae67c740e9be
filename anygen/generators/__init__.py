"""Diffusion generators: conditioning embeddings in, images / videos / audio out.

This package is import-light: torch and diffusers load only when a generator class (or ``GENERATOR_TYPES``) is
first used.

- ``GENERATOR_TYPES``: ``{"stable-diffusion": StableDiffusionGenerator, "zeroscope": ZeroscopeGenerator,
  "audioldm": AudioLDMGenerator}``
- :func:`build_generator`: one from a tiny config (random weights) or a local diffusers folder.
- :func:`condition_shape_from_config` / :func:`condition_shape_from_folder`: shapes without loading weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anygen.errors import SpecError
from anygen.generators.shapes import (
    GENERATOR_MODALITIES,
    condition_shape_from_config,
    condition_shape_from_folder,
    generator_type,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from anygen.generators.diffusion import (
        AudioDefaults,
        AudioLDMGenerator,
        DiffusersGenerator,
        GenerationDefaults,
        ImageDefaults,
        StableDiffusionGenerator,
        VideoDefaults,
        ZeroscopeGenerator,
    )

__all__ = [
    "GENERATOR_MODALITIES",
    "GENERATOR_TYPES",
    "AudioDefaults",
    "AudioLDMGenerator",
    "DiffusersGenerator",
    "GenerationDefaults",
    "ImageDefaults",
    "StableDiffusionGenerator",
    "VideoDefaults",
    "ZeroscopeGenerator",
    "build_generator",
    "condition_shape_from_config",
    "condition_shape_from_folder",
    "generator_type",
]

_CLASS_NAMES = {
    "stable-diffusion": "StableDiffusionGenerator",
    "zeroscope": "ZeroscopeGenerator",
    "audioldm": "AudioLDMGenerator",
}
_LAZY = {
    "AudioDefaults",
    "AudioLDMGenerator",
    "DiffusersGenerator",
    "GenerationDefaults",
    "ImageDefaults",
    "StableDiffusionGenerator",
    "VideoDefaults",
    "ZeroscopeGenerator",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from anygen.generators import diffusion

        return getattr(diffusion, name)
    if name == "GENERATOR_TYPES":
        from anygen.generators import diffusion
        from anygen.generators.modern import modern_types

        types = {type_name: getattr(diffusion, cls) for type_name, cls in _CLASS_NAMES.items()}
        types.update(modern_types())
        globals()["GENERATOR_TYPES"] = types
        return types
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_generator(
    type: str,
    *,
    config: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
    seed: int = 0,
    torch_dtype: torch.dtype | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> DiffusersGenerator:
    """A generator of ``type`` (``"stable-diffusion"``, ``"zeroscope"``, ``"audioldm"``, or a newer family:
    ``"stable-diffusion-xl"``, ``"pixart-sigma"``, ``"cogvideox"``).

    Give exactly one of ``path`` (a local diffusers folder; strict, offline) or ``config`` (tiny knobs for a
    random-weight model built deterministically from ``seed``; ``{}`` for the tiny defaults). ``defaults``
    overrides generation defaults (``num_inference_steps``, ``guidance_scale``, sizes...).
    """
    if type not in GENERATOR_MODALITIES:
        known = ", ".join(sorted(GENERATOR_MODALITIES))
        raise SpecError(f"unknown generator type {type!r}; known types: {known}")
    if (config is None) == (path is None):
        raise SpecError(
            f"generator {type!r} needs exactly one of 'path' (a diffusers folder) or 'config' (tiny random model)"
        )
    cls = __getattr__("GENERATOR_TYPES")[type]
    if path is not None:
        return cls.from_pretrained(path, torch_dtype=torch_dtype, defaults=defaults)
    generator = cls.from_config(config, seed=seed, defaults=defaults)
    if torch_dtype is not None:
        generator.to(dtype=torch_dtype)
    return generator
