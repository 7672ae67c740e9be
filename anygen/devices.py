"""Devices and dtypes given by a user (``pipe.to(...)``, ``--device``), checked before any model moves."""

from __future__ import annotations

from typing import Any

import torch

from anygen.errors import AnyGenError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def split_to_args(
    device: Any = None, dtype: Any = None, *, where: str = "to()"
) -> tuple[torch.device | None, torch.dtype | None]:
    """``to(device)``, ``to(dtype)`` (diffusers style), ``to(device, dtype)`` or keywords: the checked pair."""
    if isinstance(device, torch.dtype):
        if dtype is not None:
            raise AnyGenError(f"{where}: two dtypes given ({device} and {dtype}); give one")
        device, dtype = None, device
    return (
        check_device(device, where=where) if device is not None else None,
        check_dtype(dtype, where=where) if dtype is not None else None,
    )


def check_dtype(dtype: Any, *, where: str = "dtype") -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or dtype not in FLOAT_DTYPES:
        allowed = ", ".join(str(d) for d in FLOAT_DTYPES)
        raise AnyGenError(f"{where}: dtype {dtype!r} is not supported; expected one of {allowed}")
    return dtype


def check_device(device: Any, *, where: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` that exists on this machine; otherwise :class:`AnyGenError`."""
    if not isinstance(device, (str, torch.device)):
        raise AnyGenError(
            f"{where}: expected a device (e.g. 'cpu', 'cuda', 'cuda:1', 'mps') or a torch.dtype, "
            f"got {type(device).__name__}"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise AnyGenError(
            f"{where}: {device!r} is not a device; expected e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'"
        ) from None
    if dev.type in ("cpu", "meta"):
        return dev
    backend = getattr(torch, dev.type, None)
    if dev.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise AnyGenError(
            f"{where}: {str(device)!r} is not available on this machine (no {dev.type} device or torch "
            "built without it); use 'cpu'"
        )
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise AnyGenError(
            f"{where}: {str(device)!r} does not exist: this machine has {count()} {dev.type} device(s)"
        )
    return dev
