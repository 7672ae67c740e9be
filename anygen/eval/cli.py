"""``anygen eval``: run an evaluation suite on a pipeline and print (and save) its report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anygen.errors import AnyGenError

SUITES = ("world",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pipeline",
        default=None,
        help="bundled name, spec .yaml, or saved folder (default: $ANYGEN_PIPELINE or mini)",
    )
    p.add_argument("--suite", default="world", help=f"the suite to run (one of: {', '.join(SUITES)})")
    p.add_argument("--out", default=None, help="write the full report (JSON) here")
    p.add_argument("--limit", type=int, default=None, help="at most N prompts per task (default: all)")
    p.add_argument("--seed", type=int, default=0, help="generation seed of the first prompt (default: 0)")
    p.add_argument("--world", default=None, help="a world.yaml (default: the built-in world)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps for every generator")
    p.add_argument(
        "--shuffle-conditioning",
        action="store_true",
        help="judge every answer against another prompt's expectations (shows chance level)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    if args.suite not in SUITES:
        raise AnyGenError(f"unknown suite {args.suite!r} (known: {', '.join(SUITES)})")
    if args.limit is not None and args.limit < 1:
        raise AnyGenError(f"--limit must be at least 1, got {args.limit}")
    from anygen.world.config import load_world

    config = load_world(args.world)
    from anygen.spec import default_pipeline, load_spec

    # an unknown or invalid pipeline fails here, before any model is built
    spec = load_spec(args.pipeline or default_pipeline())
    from anygen.eval.world import format_report, run_world_eval
    from anygen.pipeline import AnyToAnyPipeline

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    pipe = AnyToAnyPipeline(spec).to(args.device)
    options = {"num_inference_steps": args.steps} if args.steps is not None else None
    report = run_world_eval(
        pipe,
        config=config,
        limit=args.limit,
        seed=args.seed,
        progress=args.progress,
        shuffle_conditioning=args.shuffle_conditioning,
        call_options=options,
    )
    print(format_report(report))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"report: {out}")
    return 0


def register(subparsers) -> None:
    """Add ``anygen eval`` to the main command line."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a pipeline on a suite (world: the shapes-and-tones world)",
        description="Generate from a suite's fixed prompts (the model decides what to make) and judge the "
        "answers: accuracy per task and attribute, seen vs unseen combinations, right output kind.",
    )
    add_arguments(p)
    p.set_defaults(handler=run)
