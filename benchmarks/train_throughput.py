"""Stage-2 training throughput: caption embeddings cached on disk (computed once) versus recomputed every step.

    python -m benchmarks.train_throughput [--steps 40] [--batch-size 4] [--repeats 3] [--pipeline tiny]
                                          [--data PATH] [--threads 1] [--json out.json]

Both sides run in this one process, alternating (cached, recomputed, cached, ...), on the same pipeline, data,
seed and batches; each run's throughput is the median of its per-step samples/s (from ``metrics.jsonl``,
leaving out the first steps). Prints both figures and their ratio, and the one-time cost of filling the cache.
With the tiny pipeline the text encoders are tiny (one layer, width 32), so the gap is small; with real
generators (CLIP ViT-H for SD-2, CLAP for AudioLDM) encoding dominates a frozen-LLM step far more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, machine_info, set_threads

DEFAULT_DATA = REPO.parent / "shared" / "data" / "nextgpt-samples" / "T_X_pair_data" / "cc3m" / "cc3m.json"


def run_once(args: argparse.Namespace, out: Path, recompute: bool, cache: Path) -> dict:
    from anygen.train import train

    start = time.perf_counter()
    result = train(
        stage=2,
        pipeline=args.pipeline,
        data=str(args.data),
        out=str(out),
        max_steps=args.steps,
        batch_size=args.batch_size,
        seed=0,
        progress=False,
        verbose=False,
        tensorboard=False,
        embed_cache=str(cache),
        recompute_embeddings=recompute,
    )
    wall = time.perf_counter() - start
    rates = [m["samples_per_s"] for m in result.metrics[args.skip :]]
    return {"samples_per_s": statistics.median(rates), "wall_s": wall, "steps": len(result.metrics)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_throughput", description=__doc__.splitlines()[0]
    )
    p.add_argument("--pipeline", default="tiny")
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="a stage-2 data set (default: cc3m.json samples)"
    )
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=3, help="first steps left out of each run's median")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    set_threads(args.threads)
    if not args.data.is_file():
        print(f"data {args.data} not found", file=sys.stderr)
        return 2

    runs: dict[str, list[dict]] = {"cached": [], "recomputed": []}
    fill_s = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        # The one-time cost: encoding every training caption into the (empty) cache.
        from anygen.pipeline import AnyToAnyPipeline
        from anygen.train.captions import CaptionTargets
        from anygen.train.data import load_sets

        pipe = AnyToAnyPipeline.from_pretrained(args.pipeline)
        examples = [e for s in load_sets(args.data, stage=2) for e in s.examples]
        for m in {t.modality for e in examples for t in e.targets}:
            pipe.generator(m)  # built outside the timing
        start = time.perf_counter()
        counts = CaptionTargets(pipe, cache).prepare(examples)
        fill_s = time.perf_counter() - start
        del pipe
        for r in range(args.repeats):
            for name in ("cached", "recomputed"):
                runs[name].append(run_once(args, tmp / f"{name}-{r}", name == "recomputed", cache))
                print(
                    f"  {name:10s} run {r + 1}: {runs[name][-1]['samples_per_s']:.1f} samples/s", flush=True
                )

    cached = statistics.median(r["samples_per_s"] for r in runs["cached"])
    recomputed = statistics.median(r["samples_per_s"] for r in runs["recomputed"])
    result = {
        "machine": machine_info(args.threads),
        "settings": {
            "pipeline": args.pipeline,
            "data": str(args.data),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
        },
        "cache_fill": {"captions": counts["encoded"], "seconds": fill_s},
        "cached_samples_per_s": cached,
        "recomputed_samples_per_s": recomputed,
        "ratio_cached_over_recomputed": cached / recomputed,
        "runs": runs,
    }
    print(
        f"stage-2 throughput ({args.pipeline}, batch {args.batch_size}, {args.steps} steps x {args.repeats} runs each, "
        f"median per-step samples/s):"
    )
    print(f"  cached caption embeddings:    {cached:8.1f} samples/s")
    print(f"  recomputed every step:        {recomputed:8.1f} samples/s")
    print(f"  ratio cached / recomputed:    {cached / recomputed:8.2f}x")
    print(f"  one-time cache fill:          {counts['encoded']} captions in {fill_s:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
