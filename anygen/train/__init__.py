"""Training NExT-GPT's three stages on accelerate, reading NExT-GPT's data as it ships.

    from anygen.train import train
    result = train(stage=2, pipeline="tiny", data="examples/train/DATA.yaml", out="runs/stage2", max_steps=200)
    AnyToAnyPipeline.from_pretrained(result.out_dir)

Command line: ``anygen train --stage 2 --pipeline tiny --data DATA.yaml --out DIR`` (or ``python -m anygen.train``;
``accelerate launch -m anygen.train ...`` for several processes). See ``examples/train/README.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

_LAZY = {
    "train": "anygen.train.loop",
    "TrainResult": "anygen.train.loop",
    "Trainer": "anygen.train.loop",
    "TrainConfig": "anygen.train.config",
    "LoraSettings": "anygen.train.config",
    "ConfigError": "anygen.train.config",
    "DataError": "anygen.train.data",
    "load_sets": "anygen.train.data",
    "apply_lora_adapter": "anygen.train.stages",
}

__all__ = [  # noqa: F822 (resolved lazily by __getattr__)
    "train",
    "TrainResult",
    "Trainer",
    "TrainConfig",
    "LoraSettings",
    "ConfigError",
    "DataError",
    "load_sets",
    "apply_lora_adapter",
]

if TYPE_CHECKING:  # pragma: no cover
    from anygen.train.config import ConfigError, LoraSettings, TrainConfig
    from anygen.train.data import DataError, load_sets
    from anygen.train.loop import Trainer, TrainResult, train
    from anygen.train.stages import apply_lora_adapter


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'anygen.train' has no attribute {name!r}")
