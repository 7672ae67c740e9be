"""The ``anygen`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
    "anygen.eval.cli",
    "anygen.world.cli",
)


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return register


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2), like every other anygen error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(value: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return number


def _modalities(value: str) -> list[str]:
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in wanted if v not in ("image", "video", "audio")]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown modality {bad[0]!r} (choose from image, video, audio)")
    return wanted


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="anygen", description="Any-to-any multimodal generation.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate",
        help="answer a prompt, generating images, video and audio",
        description="Answer a prompt: print the answer's text and write it with the media it made into --out "
        "(response.txt, image_<i>.png, video_<i>.mp4, audio_<i>.wav).",
    )
    gen.add_argument("prompt")
    gen.add_argument(
        "--pipeline",
        default=None,
        help="bundled name, spec .yaml, or saved folder (default: $ANYGEN_PIPELINE or mini)",
    )
    gen.add_argument(
        "--want", type=_modalities, default=[], help="outputs to guarantee, e.g. image,video,audio"
    )
    gen.add_argument(
        "--only-requested",
        action="store_true",
        help="make only the --want outputs, even where the model's answer asks for others",
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
    gen.add_argument("--height", type=int, default=None, help="image/video height in pixels (with --width)")
    gen.add_argument("--width", type=int, default=None, help="image/video width in pixels (with --height)")
    gen.add_argument("--num-frames", type=int, default=None)
    gen.add_argument("--audio-length", type=float, default=None, help="seconds of audio")
    gen.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, mps")
    gen.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    gen.add_argument(
        "--out", default="out", help="output folder (default: out/); refused if not empty, unless --overwrite"
    )
    gen.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out, first removing an earlier answer's files there (other files stay)",
    )

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
    from anygen.devices import check_device
    from anygen.options import CallOptions
    from anygen.output import saved_outputs
    from anygen.pipeline import AnyToAnyPipeline

    # Everything that can be checked is checked before any model is built.
    prompt = _utf8(args.prompt, "prompt")
    for kind in ("image", "audio", "video"):
        for path in getattr(args, kind):
            if not Path(path).is_file():
                raise AnyGenError(f"--{kind} {path}: no such file")
    device = check_device(args.device, where="--device")
    options = CallOptions.from_kwargs(  # checked here, before the output folder or any model
        output_modalities=args.want,
        only_requested=args.only_requested,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        num_frames=args.num_frames,
        audio_length_in_s=args.audio_length,
    )
    with _output_folder(Path(args.out), args.overwrite) as folder:
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        pipe = AnyToAnyPipeline.from_pretrained(args.pipeline).to(device)
        out = pipe(prompt, images=args.image, audios=args.audio, videos=args.video, options=options)
        try:
            for stale in saved_outputs(folder):  # an earlier answer (--overwrite): no stale image_0.png stays
                stale.unlink()
            written = out.save(folder)
        except OSError as err:
            raise AnyGenError(f"--out {folder}: cannot write the answer: {err.strerror or err}") from None
    print(out.text)
    print(f"anygen: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _utf8(value: str, what: str) -> str:
    """``value`` if it is valid text; command-line bytes that are not UTF-8 arrive as lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(value[err.start])
        found = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        raise AnyGenError(
            f"{what}: not valid UTF-8 text ({found} at character {err.start}); give the text in UTF-8"
        ) from None
    return value


@contextmanager
def _output_folder(folder: Path, overwrite: bool) -> Iterator[Path]:
    """Check that ``folder`` can take the answer before generating: created if missing (and removed again if
    the command then fails), writable, and empty unless ``overwrite``."""
    if folder.exists() and not folder.is_dir():
        raise AnyGenError(f"--out {folder}: exists and is not a folder")
    if folder.is_dir() and not overwrite:
        entries = sorted(p.name for p in folder.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (f", ... ({len(entries) - 5} more)" if len(entries) > 5 else "")
            raise AnyGenError(
                f"--out {folder}: the folder is not empty ({shown}); give --overwrite to replace an earlier "
                "answer there, or choose an empty or new folder"
            )
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".anygen-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        _remove_empty(created)
        raise AnyGenError(f"--out {folder}: cannot write there: {err.strerror or err}") from None
    try:
        yield folder
    except BaseException:
        _remove_empty(created)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this command created (innermost first) where they are still empty."""
    for path in folders:
        try:
            path.rmdir()
        except OSError:
            return


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


def one_line(err: BaseException) -> str:
    """An error's message on one line: a message listing several problems (one per line) joined with "; "."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return " ".join([lines[0], "; ".join(lines[1:])]) if len(lines) > 1 else lines[0]


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for stream in (sys.stdout, sys.stderr):  # a path or text that is not UTF-8 prints escaped, never crashes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler = getattr(args, "handler", None) or _COMMANDS[args.command]
        return handler(args)
    except AnyGenError as err:
        print(f"anygen: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
