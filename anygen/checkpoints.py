"""Strict checks of a checkpoint's tensors against the model they are meant for."""

from __future__ import annotations

from collections.abc import Mapping

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
