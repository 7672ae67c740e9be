"""``anygen eval``: run an evaluation suite on a pipeline and print (and save) its report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anygen.errors import AnyGenError

SUITES = ("world", "pairs")
_WORLD_ONLY = ("world", "shuffle_conditioning")
_PAIRS_ONLY = ("data", "clip", "clap", "skip_bad")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pipeline",
        default=None,
        help="bundled name, spec .yaml, or saved folder (default: $ANYGEN_PIPELINE or mini)",
    )
    p.add_argument("--suite", default="world", help=f"the suite to run (one of: {', '.join(SUITES)})")
    p.add_argument("--out", default=None, help="write the full report (JSON) here")
    p.add_argument("--limit", type=int, default=None, help="at most N prompts per task (default: all)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="generation seed (world: of the first prompt; pairs: of every prompt; default: 0)",
    )
    p.add_argument("--world", default=None, help="a world.yaml (default: the built-in world)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps for every generator")
    p.add_argument(
        "--shuffle-conditioning",
        action="store_true",
        help="judge every answer against another prompt's expectations (shows chance level)",
    )
    g = p.add_argument_group("pairs suite (real NExT-GPT pair lists)")
    g.add_argument(
        "--data",
        action="append",
        default=None,
        help="a pair list (e.g. T_X_pair_data/cc3m/cc3m.json) or a folder of them (repeatable)",
    )
    g.add_argument("--clip", default=None, help="a local CLIP model folder: CLIP score of text->image/video")
    g.add_argument("--clap", default=None, help="a local CLAP model folder: CLAP score of text->audio")
    g.add_argument("--batch-size", type=int, default=4, help="prompts per pipeline call (default: 4)")
    g.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip and count entries that are malformed or whose media is missing or unreadable",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def run(args: argparse.Namespace) -> int:
    if args.suite not in SUITES:
        raise AnyGenError(f"unknown suite {args.suite!r} (known: {', '.join(SUITES)})")
    if args.limit is not None and args.limit < 1:
        raise AnyGenError(f"--limit must be at least 1, got {args.limit}")
    misplaced = _PAIRS_ONLY if args.suite == "world" else _WORLD_ONLY
    for name in misplaced:
        if getattr(args, name) not in (None, False):
            flag = "--" + name.replace("_", "-")
            raise AnyGenError(f"{flag} does not apply to --suite {args.suite}")
    if args.suite == "pairs":
        return _run_pairs(args)
    from anygen.world.config import load_world

    config = load_world(args.world)
    from anygen.eval.world import format_report, run_world_eval

    pipe = _build_pipeline(args, _load_spec(args))
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
    _write(report, args.out)
    return 0


def _load_spec(args: argparse.Namespace):
    from anygen.spec import default_pipeline, load_spec

    # an unknown or invalid pipeline fails here, before any model is built
    return load_spec(args.pipeline or default_pipeline())


def _build_pipeline(args: argparse.Namespace, spec):
    from anygen.pipeline import AnyToAnyPipeline

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return AnyToAnyPipeline(spec).to(args.device)


def _run_pairs(args: argparse.Namespace) -> int:
    from anygen.eval.pairs import format_report, load_pairs, run_pairs_eval
    from anygen.eval.scores import ClapScorer, ClipScorer

    if not args.data:
        raise AnyGenError(
            "--suite pairs needs --data: a NExT-GPT pair list such as T_X_pair_data/cc3m/cc3m.json"
        )
    if args.batch_size < 1:
        raise AnyGenError(f"--batch-size must be at least 1, got {args.batch_size}")
    spec = _load_spec(args)
    data = load_pairs(args.data, limit=args.limit, skip_bad=args.skip_bad)
    scorers = {}
    for flag, cls in (("clip", ClipScorer), ("clap", ClapScorer)):
        folder = getattr(args, flag)
        try:
            scorers[flag] = cls.from_pretrained(folder, device=args.device) if folder else None
        except AnyGenError as err:
            raise AnyGenError(f"--{flag} {folder}: {err}") from None
    pipe = _build_pipeline(args, spec)
    report = run_pairs_eval(
        pipe,
        data,
        **scorers,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=args.progress,
        skip_bad=args.skip_bad,
        call_options={"num_inference_steps": args.steps} if args.steps is not None else None,
    )
    print(format_report(report))
    _write(report, args.out)
    return 0


def _write(report: dict, out: str | None) -> None:
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"report: {path}")


def register(subparsers) -> None:
    """Add ``anygen eval`` to the main command line."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a pipeline on a suite (world: the shapes-and-tones world; pairs: NExT-GPT pair lists)",
        description="world: generate from the suite's fixed prompts (the model decides what to make) and judge "
        "the answers: accuracy per task and attribute, seen vs unseen combinations, right output kind. "
        "pairs: on real NExT-GPT pair lists (--data), CLIP score of text->image/video (--clip), CLAP score of "
        "text->audio (--clap), BLEU-4 and CIDEr-D of image/video/audio->text against the captions.",
    )
    add_arguments(p)
    p.set_defaults(handler=run)
