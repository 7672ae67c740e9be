"""The training loop on accelerate: gradient accumulation, mixed precision, clipping, warm-up + cosine schedule,
checkpoints with exact resume, progress bar, ``metrics.jsonl`` (and TensorBoard when installed).

Run it with ``anygen train ...``, ``python -m anygen.train ...``, ``accelerate launch -m anygen.train ...`` (several
processes, GPUs or nodes; DeepSpeed/FSDP through accelerate's own config file), or :func:`train` from Python.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anygen.train.config import ConfigError, TrainConfig
from anygen.train.resume_state import load_rng, load_state, refuse_legacy, save_rng, save_state

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"


@dataclass
class TrainResult:
    out_dir: Path
    steps: int  # optimizer steps done (in total, counting a resumed run's earlier steps)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # the rows logged by this run
    skipped_entries: int = 0  # entries skipped when the data was read (skip_bad)
    skipped_examples: int = 0  # examples dropped from batches because their media could not be read
    checkpoint: Path | None = None  # the last checkpoint written
    finished: bool = True  # False when stop_after ended the run early (no final pipeline written)


def train(config: TrainConfig | dict[str, Any] | None = None, /, **overrides: Any) -> TrainResult:
    """Run one training stage; see :class:`~anygen.train.config.TrainConfig` for the settings.

    The result is written to ``config.out``: the trained pipeline (``AnyToAnyPipeline.from_pretrained(out)``),
    ``metrics.jsonl`` and ``checkpoints/``.
    """
    return Trainer(TrainConfig.build(config, **overrides)).run()


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` (``step`` counts from 0)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _use_cpu(forced: bool) -> bool:
    """CPU when asked, or when several processes run on a machine without an accelerator (accelerate only sets up
    its multi-CPU (gloo) mode when told to use the CPU)."""
    if forced:
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    has_accelerator = (
        torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    )
    return world > 1 and not has_accelerator


def _step_seed(seed: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + micro * 8_191 + rank) % (2**63 - 1)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest one in an output folder's ``checkpoints/``."""
    path = Path(path).expanduser()
    if (path / "state.json").is_file():
        return path
    folder = path / CHECKPOINTS
    found = sorted(folder.glob("step-*")) if folder.is_dir() else []
    found = [p for p in found if (p / "state.json").is_file()]
    if not found:
        raise ConfigError(
            f"resume: {path} is neither a checkpoint folder nor an output folder with checkpoints"
        )
    return found[-1]


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    # -- setup ----------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import set_seed

        cfg = self.config
        accelerator = Accelerator(
            gradient_accumulation_steps=cfg.grad_accum,
            mixed_precision=cfg.mixed_precision,
            cpu=_use_cpu(cfg.cpu),
        )
        self.accelerator = accelerator
        try:
            set_seed(cfg.seed)
            return self._run()
        finally:
            if accelerator.num_processes == 1:  # another run in this process may use other settings
                AcceleratorState._reset_state()

    def _print(self, *args: Any) -> None:
        if self.config.verbose:
            self.accelerator.print(*args, flush=True)

    def _run(self) -> TrainResult:
        from anygen.pipeline import AnyToAnyPipeline
        from anygen.train.captions import CaptionTargets
        from anygen.train.data import load_sets
        from anygen.train.sampler import ModalityBatchSampler
        from anygen.train.sequences import Collator, SequenceBuilder
        from anygen.train.stages import StageModel, data_modalities

        cfg, acc = self.config, self.accelerator
        out = cfg.out_dir
        resume_from = find_checkpoint(cfg.resume) if cfg.resume else None
        if resume_from is not None:
            refuse_legacy(resume_from)  # before any work: an old, pickled checkpoint is refused at once
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)

        sets = load_sets(
            cfg.data,
            stage=cfg.stage,
            media_root=cfg.media_root,
            embed_root=cfg.embed_root,
            task=cfg.task,
            skip_bad=cfg.skip_bad,
            check_targets=cfg.diffusion_weight > 0 and cfg.stage in (2, 3),
        )
        skipped_entries = sum(len(s.skipped) for s in sets)
        for s in sets:
            line = f"data {s.name}: {len(s.examples)} of {s.entries} entries ({s.path})"
            if s.skipped:
                line += f"; skipped {len(s.skipped)} (first: {s.skipped[0]})"
            self._print(line)
        examples = [e for s in sets for e in s.examples]

        pipe = AnyToAnyPipeline.from_pretrained(cfg.pipeline)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(acc.device)
        ins, outs = data_modalities(examples, cfg.stage, pipe)
        model = StageModel(pipe, cfg, ins, outs)

        captions = CaptionTargets(pipe, cfg.cache_dir, recompute=cfg.recompute_embeddings)
        if cfg.stage in (2, 3):
            used = [e for e in examples if any(t.modality in outs for t in e.targets)]
            with acc.main_process_first():
                counts = captions.prepare(used, progress=cfg.progress and acc.is_local_main_process)
            self._print(
                f"caption embeddings: {counts['encoded']} encoded, {counts['cached']} from the cache "
                f"({captions.cache_dir}), {counts['npy']} NExT-GPT .npy"
                + (" (recomputed at every step)" if cfg.recompute_embeddings else "")
            )
        builder = SequenceBuilder(pipe, cfg.max_length)
        collator = Collator(
            pipe,
            builder,
            captions,
            skip_bad=cfg.skip_bad,
            target_media=bool(model.diffusion),
            output_modalities=outs,
            features=model.feature_cache,
            latents=model.latent_cache,
        )
        nproc, rank = acc.num_processes, acc.process_index
        sampler = ModalityBatchSampler(sets, cfg.batch_size * nproc, seed=cfg.seed)

        self._print(model.summary())
        self._print(
            f"batches: {cfg.batch_size} per process x {cfg.grad_accum} accumulation x {nproc} process(es) = "
            f"{cfg.batch_size * cfg.grad_accum * nproc} examples per step; groups: {sampler.describe()}"
        )
        self._print(
            f"schedule: {cfg.max_steps} steps, lr {cfg.lr:g}, warm-up {cfg.warmup} steps then cosine; "
            f"mixed precision {cfg.mixed_precision}; losses: lm x{cfg.lm_weight:g}"
            + (f", align ({cfg.align_loss}) x{cfg.align_weight:g}" if cfg.stage in (2, 3) else "")
            + (f", diffusion x{cfg.diffusion_weight:g}" if model.diffusion else "")
        )

        params = [p for _, p in model.trainable_parameters()]
        optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, eps=1e-8
        )
        warmup, total = cfg.warmup, cfg.max_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total))
        model, optimizer = acc.prepare(model, optimizer)
        unwrapped: StageModel = acc.unwrap_model(model)

        start = 0
        if resume_from is not None:
            start = self._load_checkpoint(resume_from, unwrapped, optimizer, scheduler)
            self._print(f"resumed from {resume_from} at step {start}")
        stop = cfg.stop_after or cfg.max_steps
        if start > stop:
            raise ConfigError(
                f"resume: the checkpoint is at step {start}, beyond this run's last step {stop}"
            )

        logger = _MetricsLogger(out, acc.is_main_process, start, cfg.tensorboard)
        bar = None
        if cfg.progress and acc.is_local_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=stop, initial=start, desc=f"stage {cfg.stage}", unit="step", dynamic_ncols=True)
        result = TrainResult(out, start, skipped_entries=skipped_entries)
        per = cfg.batch_size
        window_start, window_samples = time.perf_counter(), 0.0
        totals = torch.zeros(10, dtype=torch.float64)
        try:
            for step in range(start, stop):
                for micro in range(cfg.grad_accum):
                    k = step * cfg.grad_accum + micro
                    local = sampler.batch(k)[rank * per : (rank + 1) * per]
                    items = [
                        (k * sampler.batch_size + rank * per + j, sampler.examples[i])
                        for j, i in enumerate(local)
                    ]
                    batch = collator(items)
                    if batch.skipped:
                        for reason in batch.skipped:
                            print(f"anygen train: skipped {reason}", flush=True)
                    torch.manual_seed(_step_seed(cfg.seed, k, rank))
                    with acc.accumulate(model):
                        output = model(batch)
                        acc.backward(output.loss)
                        if acc.sync_gradients:
                            if cfg.max_grad_norm is not None:
                                acc.clip_grad_norm_(params, cfg.max_grad_norm)
                            optimizer.step()
                            scheduler.step()
                            optimizer.zero_grad(set_to_none=True)
                    totals += _tally(output, batch)
                done = step + 1
                step_lr = lr_factor(step, warmup, total) * cfg.lr
                if done % cfg.log_every == 0 or done == stop:
                    summed = acc.reduce(totals.to(acc.device), reduction="sum").cpu()
                    window_samples = float(summed[8])
                    now = time.perf_counter()
                    row = _metrics_row(done, summed, step_lr, window_samples / (now - window_start))
                    result.skipped_examples += int(summed[9])
                    logger.log(row)
                    result.metrics.append(row)
                    if bar is not None:
                        bar.set_postfix(
                            {k: f"{row[k]:.4g}" for k in ("loss", "align_loss") if k in row}
                            | {"samples/s": f"{row['samples_per_s']:.3g}"},
                            refresh=False,
                        )
                    totals.zero_()
                    window_start = now
                if bar is not None:
                    bar.update(1)
                result.steps = done
                if (cfg.save_every and done % cfg.save_every == 0) or (done == stop and stop < cfg.max_steps):
                    result.checkpoint = self._save_checkpoint(done, unwrapped, optimizer, scheduler)
        finally:
            if bar is not None:
                bar.close()
            logger.close()

        if stop < cfg.max_steps:
            result.finished = False
            self._print(f"stopped after step {stop}; resume with --resume {result.checkpoint}")
            return result
        acc.wait_for_everyone()
        if acc.is_main_process:
            unwrapped.finalize(out)
            pipe.save_pretrained(out)
            self._print(
                f"saved the trained pipeline to {out} (AnyToAnyPipeline.from_pretrained({str(out)!r}))"
            )
        acc.wait_for_everyone()
        return result

    # -- checkpoints ----------------------------------------------------------------------------------------
    def _save_checkpoint(self, step: int, model, optimizer, scheduler) -> Path:
        from safetensors.torch import save_file

        acc = self.accelerator
        folder = self.config.out_dir / CHECKPOINTS / f"step-{step:07d}"
        acc.wait_for_everyone()
        if acc.is_main_process:
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file(model.trainable_state_dict(), str(tmp / "trainable.safetensors"))
            save_state(optimizer.state_dict(), tmp, "optimizer")
            save_state(scheduler.state_dict(), tmp, "scheduler")
            state = {
                "step": step,
                "stage": self.config.stage,
                "num_processes": acc.num_processes,
                "config": self.config.model_dump(mode="json"),
            }
            (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        acc.wait_for_everyone()
        save_rng(folder / f"rng-{acc.process_index}.json")
        acc.wait_for_everyone()
        if acc.is_main_process and self.config.keep_checkpoints:
            older = sorted((self.config.out_dir / CHECKPOINTS).glob("step-???????"))
            for old in older[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def _load_checkpoint(self, folder: Path, model, optimizer, scheduler) -> int:
        from safetensors.torch import load_file

        refuse_legacy(folder)  # never unpickles: the state is safetensors + JSON
        try:
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            step = int(state["step"])
        except (UnicodeDecodeError, ValueError, TypeError, KeyError) as err:
            raise ConfigError(
                f"resume: {folder / 'state.json'} is not a valid checkpoint state: {err}"
            ) from None
        if state.get("stage") != self.config.stage:
            raise ConfigError(
                f"resume: {folder} is a stage {state.get('stage')} checkpoint; this run is stage {self.config.stage}"
            )
        try:
            trainable = load_file(str(folder / "trainable.safetensors"))
        except Exception as err:
            raise ConfigError(f"resume: cannot read {folder / 'trainable.safetensors'}: {err}") from None
        model.load_trainable_state_dict(trainable)
        optimizer.load_state_dict(load_state(folder, "optimizer"))
        scheduler.load_state_dict(load_state(folder, "scheduler"))
        rng_file = folder / f"rng-{self.accelerator.process_index}.json"
        if rng_file.is_file():
            load_rng(rng_file)
        return step


# -- metrics ---------------------------------------------------------------------------------------------------
_PARTS = ("loss", "lm_loss", "align_loss", "diffusion_loss")


def _tally(output, batch) -> torch.Tensor:
    """Sums and counts of one micro-batch's losses: [loss, n, lm, n, align, n, diffusion, n, samples, skipped]."""
    t = torch.zeros(10, dtype=torch.float64)
    values = {"loss": output.loss.detach(), **output.parts}
    if batch.size:
        for i, name in enumerate(_PARTS):
            if name in values:
                t[2 * i] = float(values[name])
                t[2 * i + 1] = 1.0
    t[8] = batch.size
    t[9] = len(batch.skipped)
    return t


def _metrics_row(step: int, summed: torch.Tensor, lr: float, samples_per_s: float) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step}
    for i, name in enumerate(_PARTS):
        if summed[2 * i + 1] > 0:
            row[name] = float(summed[2 * i] / summed[2 * i + 1])
    row["lr"] = lr
    row["samples"] = int(summed[8])
    row["samples_per_s"] = samples_per_s
    if summed[9]:
        row["skipped"] = int(summed[9])
    return row


class _MetricsLogger:
    """``metrics.jsonl`` (one JSON object per logged step) and TensorBoard scalars when it is installed."""

    def __init__(self, out: Path, main: bool, start: int, tensorboard: bool) -> None:
        self.file = None
        self.writer = None
        if not main:
            return
        path = out / METRICS
        kept = []
        if start and path.is_file():  # a resumed run continues the file, dropping rows past the checkpoint
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= start:
                        kept.append(line)
                except json.JSONDecodeError:
                    pass
        path.write_text("".join(line + "\n" for line in kept))
        self.file = path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start or None)
            except Exception:  # tensorboard not installed: metrics.jsonl only
                self.writer = None

    def log(self, row: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
