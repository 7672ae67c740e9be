"""Timing helpers shared by the runner and the GPU script: A/B alternation, medians, machine description."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def set_threads(threads: int) -> None:
    """Torch intra-op threads (and inter-op, where still settable); also for subprocesses via the env."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work already ran
        torch.set_num_interop_threads(threads)


def subprocess_env(threads: int) -> dict[str, str]:
    """Environment for child processes: same thread count, offline, the repository importable."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    )
    return env


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "torch_threads": threads,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def timed(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of one call."""
    if sync:
        sync()
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    if sync:
        sync()
    return time.perf_counter() - w0, time.process_time() - c0, result


def compare(
    a: Callable[[], Any],
    b: Callable[[], Any],
    repeats: int,
    *,
    warmup: int = 1,
    names: tuple[str, str] = ("anygen", "baseline"),
    sync: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run A and B alternately (AB, BA, AB... so that drift hits both alike) after ``warmup`` calls of each.

    Returns the medians of wall and process-CPU time for each side, ``ratio`` = median A / median B (wall),
    ``cpu_ratio`` likewise on CPU time, ``paired_ratio`` = median of A_i / B_i over neighbouring pairs (robust when
    the machine's load changes during the run) and ``min_ratio`` = fastest A / fastest B (the quietest moments).
    """
    for _ in range(warmup):
        a()
        b()
    wall = {names[0]: [], names[1]: []}
    cpu = {names[0]: [], names[1]: []}
    fns = {names[0]: a, names[1]: b}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            w, c, _ = timed(fns[name], sync)
            wall[name].append(w)
            cpu[name].append(c)
    na, nb = names
    out: dict[str, Any] = {
        f"{na}_median_s": median(wall[na]),
        f"{nb}_median_s": median(wall[nb]),
        "ratio": median(wall[na]) / median(wall[nb]),
        f"{na}_cpu_median_s": median(cpu[na]),
        f"{nb}_cpu_median_s": median(cpu[nb]),
        "cpu_ratio": median(cpu[na]) / median(cpu[nb]),
        "paired_ratio": median([x / y for x, y in zip(wall[na], wall[nb], strict=True)]),
        "min_ratio": min(wall[na]) / min(wall[nb]),
        "repeats": repeats,
        f"{na}_times_s": [round(x, 5) for x in wall[na]],
        f"{nb}_times_s": [round(x, 5) for x in wall[nb]],
    }
    return out


def round_floats(obj: Any, digits: int = 5) -> Any:
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [round_floats(v, digits) for v in obj]
    return obj
