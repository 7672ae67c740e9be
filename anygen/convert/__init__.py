"""Converters from third-party checkpoints to anygen pipeline folders.

* :mod:`anygen.convert.nextgpt_legacy`: NExT-GPT's released ``7b_tiva_v0`` checkpoint
  (``anygen convert nextgpt-legacy PATH/pytorch_model.pt --vicuna DIR --out DIR``).
"""

from __future__ import annotations

__all__ = ["convert_nextgpt_legacy", "output_projectors_from_state_dict"]


def __getattr__(name: str):
    """Imported on first use: the CLI imports this package to register ``convert`` (torch loads lazily)."""
    if name in __all__:
        from anygen.convert import nextgpt_legacy

        return getattr(nextgpt_legacy, name)
    raise AttributeError(f"module 'anygen.convert' has no attribute {name!r}")
