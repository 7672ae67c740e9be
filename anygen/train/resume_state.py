"""Optimizer, scheduler and RNG state of a training checkpoint, saved and read without pickle.

A pickle can run any code when it is read, so a checkpoint folder from elsewhere must never be unpickled.
Here a state dict is split into its tensors (``NAME.safetensors``) and everything else (``NAME.json``: numbers,
strings, lists, and tagged tuples, integer-keyed dicts and tensor references); the RNG states are JSON lists.
Reading either format runs no code. Checkpoints of older anygen versions (``optimizer.pt``, ``scheduler.pt``,
``rng-*.pt``: pickles) are refused before anything is read.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anygen.train.config import ConfigError

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_TAGS = (_TENSOR, _TUPLE, _ITEMS)
# Files of checkpoints written before this format: pickles, never read.
LEGACY_PICKLES = ("optimizer.pt", "scheduler.pt", "rng-*.pt")


# -- state dicts ----------------------------------------------------------------------------------------------
def save_state(state: Any, folder: Path, name: str) -> None:
    """Write ``state`` (a state dict) as ``folder/NAME.json`` plus ``folder/NAME.safetensors`` for its tensors."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = value.detach().cpu().contiguous()
            return {_TENSOR: key}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, tuple):
            return {_TUPLE: [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
                return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
            if all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in value):
                return {_ITEMS: [[k, encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
        raise ConfigError(
            f"checkpoint {name}: cannot store {where} ({type(value).__name__}) without pickle; "
            "state may hold only tensors, numbers, strings, None, lists, tuples and dicts"
        )

    doc = encode(state, name)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(doc) + "\n")


def load_state(folder: Path, name: str) -> Any:
    """Read what :func:`save_state` wrote; a malformed file raises :class:`ConfigError` naming it."""
    from safetensors.torch import load_file

    doc = _read_json(folder / f"{name}.json")
    tensor_file = folder / f"{name}.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    if tensor_file.is_file():
        try:
            tensors = load_file(str(tensor_file))
        except Exception as err:
            raise ConfigError(
                f"resume: cannot read {tensor_file} as safetensors: {_first_line(err)}"
            ) from None

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1 and _TENSOR in value:
            key = value[_TENSOR]
            if key not in tensors:
                raise ConfigError(
                    f"resume: {folder / name}.json refers to tensor {key!r}, missing from {tensor_file}"
                )
            return tensors[key]
        if len(value) == 1 and _TUPLE in value and isinstance(value[_TUPLE], list):
            return tuple(decode(v) for v in value[_TUPLE])
        if len(value) == 1 and _ITEMS in value and isinstance(value[_ITEMS], list):
            pairs = value[_ITEMS]
            if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], (str, int)) for p in pairs):
                raise ConfigError(f"resume: {folder / name}.json: malformed {_ITEMS} entry")
            return {k: decode(v) for k, v in pairs}
        return {k: decode(v) for k, v in value.items()}

    return decode(doc)


# -- random number generators ---------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python's, numpy's, torch's (and CUDA's) generator states as JSON-ready lists and numbers."""
    version, internal, gauss = random.getstate()
    algorithm, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
        "numpy": {
            "algorithm": algorithm,
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else None,
    }


def save_rng(path: Path) -> None:
    path.write_text(json.dumps(rng_state()) + "\n")


def load_rng(path: Path) -> None:
    """Restore the generators from a file :func:`save_rng` wrote; a malformed one raises :class:`ConfigError`."""
    state = _read_json(path)
    try:
        py, nps = state["python"], state["numpy"]
        python_state = (
            int(py["version"]),
            tuple(int(v) for v in py["state"]),
            _float_or_none(py["gauss_next"]),
        )
        numpy_state = (
            str(nps["algorithm"]),
            np.asarray(nps["keys"], dtype=np.uint32),
            int(nps["pos"]),
            int(nps["has_gauss"]),
            float(nps["cached_gaussian"]),
        )
        torch_state = torch.tensor(state["torch"], dtype=torch.uint8)
        cuda = state.get("cuda")
        cuda_states = [torch.tensor(s, dtype=torch.uint8) for s in cuda] if cuda is not None else None
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise ConfigError(f"resume: {path} is not a valid RNG state: {_first_line(err)}") from None
    if cuda_states is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


# -- checks ---------------------------------------------------------------------------------------------------
def refuse_legacy(folder: Path) -> None:
    """Refuse a checkpoint written in the old, pickled format (nothing in it is read)."""
    if (folder / "optimizer.json").is_file() and (folder / "scheduler.json").is_file():
        return
    found = sorted(p.name for pattern in LEGACY_PICKLES for p in folder.glob(pattern))
    if found:
        raise ConfigError(
            f"resume: {folder} holds its optimizer/scheduler/RNG state as pickles ({', '.join(found)}), "
            "written by an older anygen; a pickle can run code when read, so anygen never unpickles it. "
            "This checkpoint cannot be resumed: start the run again without --resume"
        )
    missing = [n for n in ("optimizer.json", "scheduler.json") if not (folder / n).is_file()]
    raise ConfigError(f"resume: {folder} is not a complete checkpoint: missing {', '.join(missing)}")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"resume: {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"resume: {path} is not valid JSON: {_first_line(err)}") from None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
