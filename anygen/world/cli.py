"""``anygen world``: the shapes-and-tones world (``make``: write its media and training data)."""

from __future__ import annotations

import argparse


def _make(args: argparse.Namespace) -> int:
    from anygen.world.config import WorldError, load_world
    from anygen.world.datasets import make_world

    config = load_world(args.config)
    for flag in ("images_per_combo", "videos_per_combo", "audios_per_combo", "conversations"):
        if getattr(args, flag) < 1:
            raise WorldError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    files = make_world(
        args.out,
        config,
        images_per_combo=args.images_per_combo,
        videos_per_combo=args.videos_per_combo,
        audios_per_combo=args.audios_per_combo,
        conversations=args.conversations,
        seed=args.seed,
        progress=args.progress,
    )
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in files.counts.items())
    print(f"world written to {files.root}: {counts}")
    for label, path in (
        ("stage 1", files.data_stage1),
        ("stage 2", files.data_stage2),
        ("stage 3", files.data_stage3),
        ("LLM text", files.text_corpus),
        *((f"{m} generator", p) for m, p in files.generators.items()),
        ("config", files.config),
    ):
        print(f"  {label:16s} {path}")
    return 0


def _train_mini(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anygen.world.recipe import export_mini, train_mini

    result = train_mini(
        args.out, world_config=args.config, seed=args.seed, quick=args.quick, until=args.until,
        progress=args.progress,
    )
    print(f"mini: ran {', '.join(result.ran) or 'nothing'}; kept {', '.join(result.cached) or 'nothing'}")
    if args.export:
        root = Path(__file__).resolve().parents[2]
        weights = export_mini(result.pipeline, weights=root / "weights" / "mini", spec=root / "pipelines" / "mini.yaml")
        print(f"exported to {weights} and {root / 'pipelines' / 'mini.yaml'}")
    return 0


def register(subparsers) -> None:
    """Add ``anygen world ...`` to the main command line."""
    world = subparsers.add_parser("world", help="the shapes-and-tones world: make its training data")
    sub = world.add_subparsers(dest="world_command", required=True)

    make = sub.add_parser(
        "make",
        help="write the world's media and NExT-GPT-format data (DATA.yaml per stage)",
        description="Render the world's images, videos and tones and write NExT-GPT-format training data: "
        "data-stage1.yaml, data-stage2.yaml, data-stage3.yaml, generator_<modality>.json, text_corpus.json "
        "and world.yaml.",
    )
    make.add_argument("--out", required=True, help="output folder")
    make.add_argument("--config", default=None, help="a world.yaml (default: the built-in world)")
    make.add_argument("--seed", type=int, default=None, help="default: the config's seed")
    make.add_argument("--images-per-combo", dest="images_per_combo", type=int, default=56)
    make.add_argument("--videos-per-combo", dest="videos_per_combo", type=int, default=13)
    make.add_argument("--audios-per-combo", dest="audios_per_combo", type=int, default=100)
    make.add_argument("--conversations", type=int, default=6000, help="stage-3 conversations")
    make.add_argument("--no-progress", dest="progress", action="store_false")
    make.set_defaults(handler=_make)

    mini = sub.add_parser(
        "train-mini",
        help="train the `mini` pipeline from an empty folder (world, generators, encoder, LLM, stages 1-3, eval)",
        description="Run the whole mini recipe (anygen/world/recipe.py) into --out. Each step is cached: a rerun "
        "redoes only the steps whose settings or inputs changed. The trained pipeline is OUT/stage3, the "
        "evaluation OUT/eval/report.json; --export copies the result into the package (weights/mini and "
        "pipelines/mini.yaml).",
    )
    mini.add_argument("--out", required=True, help="work folder (one subfolder per step)")
    mini.add_argument("--config", default=None, help="a world.yaml (default: the built-in world)")
    mini.add_argument("--seed", type=int, default=0)
    mini.add_argument("--quick", action="store_true", help="a few iterations per step (a smoke run)")
    mini.add_argument("--until", default=None, help="stop after this step (world, gen-image, ..., eval)")
    mini.add_argument(
        "--export", action="store_true", help="copy the result to weights/mini and write pipelines/mini.yaml"
    )
    mini.add_argument("--no-progress", dest="progress", action="store_false")
    mini.set_defaults(handler=_train_mini)
