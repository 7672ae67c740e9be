"""anygen: any-to-any multimodal generation (NExT-GPT style) on diffusers and transformers.

Heavy modules (torch, transformers, diffusers) are imported on first use of a name below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anygen import _quiet

__version__ = "0.1.0"
_quiet.install()

_LAZY = {
    "AnyToAnyPipeline": "anygen.pipeline",
    "AnyToAnyOutput": "anygen.output",
    "Conversation": "anygen.chat",
    "PipelineSpec": "anygen.spec",
    "load_spec": "anygen.spec",
    "bundled_pipelines": "anygen.spec",
    "Audio": "anygen.media",
    "Video": "anygen.media",
    "load_image": "anygen.media",
}

__all__ = [  # noqa: F822 (resolved lazily by __getattr__)
    "AnyToAnyPipeline",
    "AnyToAnyOutput",
    "Conversation",
    "PipelineSpec",
    "load_spec",
    "bundled_pipelines",
    "Audio",
    "Video",
    "load_image",
    "__version__",
]

if TYPE_CHECKING:  # noqa: SIM108
    from anygen.chat import Conversation
    from anygen.media import Audio, Video, load_image
    from anygen.output import AnyToAnyOutput
    from anygen.pipeline import AnyToAnyPipeline
    from anygen.spec import PipelineSpec, bundled_pipelines, load_spec


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'anygen' has no attribute {name!r}")
