"""Strict checks of a checkpoint's tensors against the model they are meant for."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from anygen.errors import WeightsError


def check_state_dict(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], what: str
) -> None:
    """Raise :class:`WeightsError` naming every missing, unexpected and wrongly shaped key."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [
        f"{k} {tuple(found[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(found))
        if found[k].shape != expected[k].shape
    ]
    problems = [
        f"{label}: {', '.join(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", wrong),
        )
        if keys
    ]
    if problems:
        raise WeightsError(f"{what} does not match the model; " + "; ".join(problems))


def torch_load_weights(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that needs more than tensors and plain containers
    (a pickle that would run code) raises :class:`WeightsError` naming ``what`` and the refused item.

    torch's own message advises retrying with ``weights_only=False``; that advice is left out, since following it
    for a file from elsewhere lets the file run any code.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"cannot read {what}: it is not a plain tensor checkpoint ({load_error_reason(err)}); anygen reads "
            "only tensors and never unpickles other objects, which could run code"
        ) from None
    except Exception as err:  # not a zip/pickle file, truncated, ...
        raise WeightsError(
            f"cannot read {what} as a PyTorch checkpoint ({type(err).__name__}: {load_error_reason(err)})"
        ) from None


def load_error_reason(err: BaseException) -> str:
    """The reason in a loading error (torch, transformers, diffusers, safetensors), on one line, without torch's
    advice to retry with ``weights_only=False`` (never to be followed for a file from elsewhere)."""
    kept = []
    for line in str(err).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if not line or "weights_only" in line or line.startswith(("Weights only load failed", "Please file")):
            continue
        kept.append(line)
    return " ".join(kept) or type(err).__name__
