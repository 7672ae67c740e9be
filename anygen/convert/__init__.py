"""Converters from third-party checkpoints to anygen pipeline folders.

* :mod:`anygen.convert.nextgpt_legacy`: NExT-GPT's released ``7b_tiva_v0`` checkpoint
  (``anygen convert nextgpt-legacy PATH/pytorch_model.pt --vicuna DIR --out DIR``).
"""

from __future__ import annotations

from anygen.convert.nextgpt_legacy import convert_nextgpt_legacy, output_projectors_from_state_dict

__all__ = ["convert_nextgpt_legacy", "output_projectors_from_state_dict"]
