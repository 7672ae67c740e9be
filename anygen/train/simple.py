"""A small single-process optimisation loop for the component trainers (generators, encoder).

AdamW with linear warm-up and cosine decay (the same schedule as the NExT-GPT stages), gradient clipping, a tqdm
bar and one ``metrics.jsonl`` row per logged step. The NExT-GPT stages keep their own accelerate loop
(``anygen.train.loop``); these components are small and train in minutes on one CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from anygen.train.loop import lr_factor

StepFn = Callable[[int], dict[str, torch.Tensor]]  # step -> {"loss": tensor (with grad), other parts...}


def optimise(
    params: Iterable[torch.nn.Parameter] | Sequence[dict[str, Any]],
    step_fn: StepFn,
    *,
    steps: int,
    lr: float,
    name: str,
    metrics: Path,
    warmup: int | None = None,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    log_every: int = 10,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ``steps`` optimizer steps of ``step_fn``; returns the logged rows (also appended to ``metrics``).

    ``params``: parameters, or torch parameter groups (``{"params": [...], "lr": ...}``) for per-group rates;
    the schedule scales every group's rate alike, and the logged ``lr`` is the base one."""
    groups = [dict(g) for g in params] if _are_groups(params) else [{"params": list(params)}]
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError(f"{name}: nothing to train")
    warmup = max(1, steps // 20) if warmup is None else warmup
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, steps))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=name, unit="step", dynamic_ncols=True)
    rows: list[dict[str, Any]] = []
    sums: dict[str, float] = {}
    count, start = 0, time.perf_counter()
    metrics.parent.mkdir(parents=True, exist_ok=True)
    with metrics.open("a") as log:
        for step in range(steps):
            parts = step_fn(step)
            loss = parts["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: loss became {float(loss)} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            scheduler.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            count += 1
            if (step + 1) % log_every == 0 or step + 1 == steps:
                row = {"phase": name, "step": step + 1, **{k: v / count for k, v in sums.items()}}
                row["lr"] = lr_factor(step, warmup, steps) * lr
                row["s_per_step"] = (time.perf_counter() - start) / count
                log.write(json.dumps(row) + "\n")
                log.flush()
                rows.append(row)
                if bar is not None:
                    bar.set_postfix({"loss": f"{row['loss']:.4g}"}, refresh=False)
                sums, count, start = {}, 0, time.perf_counter()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def _are_groups(params) -> bool:
    return isinstance(params, (list, tuple)) and bool(params) and isinstance(params[0], dict)
