"""What the token-sequence encoders share: their base class and a strict, safetensors-only weight loader.

The loader builds nothing: it fills a tower built from its config with the tensors found under a key prefix
(``vision_model.`` of a whole CLIP/SigLIP checkpoint, ``model.encoder.`` of a Whisper one), reading only those
tensors, and raises :class:`~anygen.errors.WeightsError` for a missing, mis-shaped or unknown one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from anygen.checkpoints import load_error_reason
from anygen.encoders.token_configs import SETTINGS_NAME, TokenConfig
from anygen.errors import WeightsError

SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")
_NO_BIN = "pytorch_model.bin is not read: convert it to safetensors"


class TokenEncoder(nn.Module):
    """Media -> float32 ``[N, tokens, output_dim]`` (see :class:`anygen.encoders.base.TokenSequenceEncoder`).

    ``output_tokens[modality]`` is the fixed number of tokens one input of that modality gives; ``config`` the
    :mod:`~anygen.encoders.token_configs` dataclass it was built from.
    """

    kind: str
    modalities: tuple[str, ...]

    def __init__(self, config: TokenConfig) -> None:
        super().__init__()
        self.config = config
        self.output_dim = int(config.width)
        self.output_tokens = dict(config.tokens())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _write_settings(self, root: Path) -> None:
        settings = {"encoder": self.kind, **self.config.settings()}
        (root / SETTINGS_NAME).write_text(json.dumps(settings, indent=2) + "\n")


def safetensors_files(root: Path, kind: str) -> list[Path]:
    """The safetensors files of a Hugging Face folder (one file, or the shards its index names)."""
    if (root / "model.safetensors").is_file():
        return [root / "model.safetensors"]
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WeightsError(f"{index} is not a safetensors index: {exc}") from exc
        return [root / s for s in shards]
    found = (
        "pytorch_model.bin only; convert it to safetensors"
        if (root / "pytorch_model.bin").is_file()
        else "none"
    )
    raise WeightsError(f"{kind} weights folder {str(root)!r} has no model.safetensors (found {found})")


def find_prefix(root: Path, kind: str, probe: str, prefixes: Iterable[str]) -> str:
    """The first of ``prefixes`` under which the folder holds tensor ``probe`` (e.g. ``conv1.weight``)."""
    keys = set(_keys(root, kind))
    for prefix in prefixes:
        if prefix + probe in keys:
            return prefix
    raise WeightsError(
        f"{kind} weights in {str(root)!r} have no {probe!r} under any of {list(prefixes)}: not a {kind} checkpoint"
    )


def _keys(root: Path, kind: str) -> dict[str, Path]:
    keys: dict[str, Path] = {}
    for file in safetensors_files(root, kind):
        try:
            with safe_open(str(file), framework="pt") as f:
                keys.update(dict.fromkeys(f.keys(), file))
        except (OSError, SafetensorError) as exc:
            raise WeightsError(f"{file} could not be read as safetensors: {load_error_reason(exc)}") from None
    return keys


def load_tower(
    model: nn.Module, root: Path, kind: str, prefix: str = "", ignore: tuple[str, ...] = ()
) -> None:
    """Load ``model``'s weights from the tensors named ``prefix + key`` in ``root``'s safetensors (strict).

    Tensors outside ``prefix``, or under ``prefix`` + one of ``ignore``, are skipped (a whole model's other
    towers, SigLIP's pooling head); the model's buffers may be absent or present (old checkpoints save them).
    """
    expected = model.state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    where = _keys(root, kind)
    problems: list[str] = []
    state: dict[str, Any] = {}
    handles: dict[Path, Any] = {}
    try:
        for key, tensor in expected.items():
            file = where.get(prefix + key)
            if file is None:
                if key not in buffers:
                    problems.append(f"missing {prefix + key}")
                continue
            if file not in handles:
                handles[file] = safe_open(str(file), framework="pt")
            value = handles[file].get_tensor(prefix + key)
            if tuple(value.shape) != tuple(tensor.shape):
                problems.append(
                    f"{prefix + key}: checkpoint {tuple(value.shape)} vs model {tuple(tensor.shape)}"
                )
            state[key] = value
    except (OSError, SafetensorError) as exc:
        raise WeightsError(
            f"{kind} weights in {str(root)!r} could not be read: {load_error_reason(exc)}"
        ) from None
    stray = sorted(
        k
        for k in where
        if k.startswith(prefix)
        and k[len(prefix) :] not in expected
        and k[len(prefix) :] not in buffers
        and not k[len(prefix) :].startswith(ignore or ("\0",))
    )
    if stray:
        problems.append(f"unexpected {stray[:6]}" + (f" (+{len(stray) - 6} more)" if len(stray) > 6 else ""))
    if problems:
        raise WeightsError(
            f"{kind} weights in {str(root)!r} do not match its config.json: " + "; ".join(problems[:8])
        )
    model.load_state_dict(state, strict=False)
