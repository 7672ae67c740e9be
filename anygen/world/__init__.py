"""The shapes-and-tones world: a procedurally generated any-to-any world to train and evaluate on.

``config`` (WorldConfig, the hold-out), ``render`` (images, videos, tones), ``language`` (captions, prompts,
answers, parse_attributes), ``datasets`` (make_world: NExT-GPT-format training data). Names below are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

_LAZY = {
    "WorldConfig": "anygen.world.config",
    "WorldError": "anygen.world.config",
    "DEFAULT_WORLD": "anygen.world.config",
    "is_held_out": "anygen.world.config",
    "render_image": "anygen.world.render",
    "render_video": "anygen.world.render",
    "render_audio": "anygen.world.render",
    "image_caption": "anygen.world.language",
    "video_caption": "anygen.world.language",
    "audio_caption": "anygen.world.language",
    "parse_attributes": "anygen.world.language",
    "make_world": "anygen.world.datasets",
    "WorldFiles": "anygen.world.datasets",
}

__all__ = [  # noqa: F822 (resolved lazily by __getattr__)
    "WorldConfig",
    "WorldError",
    "DEFAULT_WORLD",
    "is_held_out",
    "render_image",
    "render_video",
    "render_audio",
    "image_caption",
    "video_caption",
    "audio_caption",
    "parse_attributes",
    "make_world",
    "WorldFiles",
]

if TYPE_CHECKING:
    from anygen.world.config import DEFAULT_WORLD, WorldConfig, WorldError, is_held_out
    from anygen.world.datasets import WorldFiles, make_world
    from anygen.world.language import audio_caption, image_caption, parse_attributes, video_caption
    from anygen.world.render import render_audio, render_image, render_video


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'anygen.world' has no attribute {name!r}")
