"""The ``anygen`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from anygen.errors import AnyGenError

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Command] = {}

# Modules that add subcommands: each has ``register(subparsers)`` and sets ``handler`` on its parsers.
_COMMAND_MODULES = (
    "anygen.weights.cli",
    "anygen.convert.cli",
    "anygen.train.cli",
    "anygen.demo_cli",
    "anygen.serve.cli",
)


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return register


def _modalities(value: str) -> list[str]:
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in wanted if v not in ("image", "video", "audio")]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown modality {bad[0]!r} (choose from image, video, audio)")
    return wanted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anygen", description="Any-to-any multimodal generation.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="answer a prompt, generating images, video and audio")
    gen.add_argument("prompt")
    gen.add_argument(
        "--pipeline", default="tiny", help="bundled name, spec .yaml, or saved folder (default: tiny)"
    )
    gen.add_argument(
        "--want", type=_modalities, default=[], help="outputs to guarantee, e.g. image,video,audio"
    )
    gen.add_argument("--image", action="append", default=[], help="an input image (repeatable)")
    gen.add_argument("--audio", action="append", default=[], help="an input audio file (repeatable)")
    gen.add_argument("--video", action="append", default=[], help="an input video (repeatable)")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--steps", type=int, default=None, help="denoising steps for every generator")
    gen.add_argument("--guidance-scale", type=float, default=None)
    gen.add_argument("--max-new-tokens", type=int, default=None)
    gen.add_argument("--temperature", type=float, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--num-frames", type=int, default=None)
    gen.add_argument("--audio-length", type=float, default=None, help="seconds of audio")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    gen.add_argument("--out", default="out", help="output folder (default: out/)")

    sub.add_parser("pipelines", help="list the bundled pipelines")
    info = sub.add_parser("info", help="show a pipeline's graph: nodes, widths, parameter counts")
    info.add_argument("pipeline")
    info.add_argument(
        "--no-params", action="store_true", help="skip parameter counts (they build the models)"
    )
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue  # that feature is not part of this checkout
            raise
        module.register(sub)
    return parser


@command("generate")
def _generate(args: argparse.Namespace) -> int:
    from anygen.pipeline import AnyToAnyPipeline

    for kind in ("image", "audio", "video"):  # fail before building any model
        for path in getattr(args, kind):
            if not Path(path).is_file():
                raise AnyGenError(f"--{kind} {path}: no such file")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    pipe = AnyToAnyPipeline.from_pretrained(args.pipeline).to(args.device)
    out = pipe(
        args.prompt,
        images=args.image,
        audios=args.audio,
        videos=args.video,
        output_modalities=args.want,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        num_frames=args.num_frames,
        audio_length_in_s=args.audio_length,
    )
    for path in out.save(args.out):
        print(path)
    return 0


@command("pipelines")
def _pipelines(args: argparse.Namespace) -> int:
    from anygen.spec import bundled_pipelines, load_spec

    for name in sorted(bundled_pipelines()):
        print(f"{name:20s} {load_spec(name).description}")
    return 0


@command("info")
def _info(args: argparse.Namespace) -> int:
    from anygen.graph import describe

    print(describe(args.pipeline, parameters=not args.no_params))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler = getattr(args, "handler", None) or _COMMANDS[args.command]
        return handler(args)
    except AnyGenError as err:
        print(f"anygen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
