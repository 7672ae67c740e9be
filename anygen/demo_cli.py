"""``anygen demo``: the Gradio chat demo (needs the ``demo`` extra: ``pip install 'anygen[demo]'``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from anygen.cli import positive_int as _positive_int
from anygen.errors import AnyGenError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pipeline",
        default=None,
        help="bundled name, spec .yaml, or saved folder (default: $ANYGEN_PIPELINE or mini)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument(
        "--share", action="store_true", help="also open a public *.gradio.live link (off by default)"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the pipeline (default: cpu)")
    parser.add_argument(
        "--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        help="pipeline calls run at once; the rest wait in the queue (default: 1)",
    )
    parser.add_argument(
        "--max-queue", type=_positive_int, default=16, help="requests waiting at most (default: 16)"
    )
    parser.add_argument("--max-image-mb", type=_positive_float, default=20.0, help="image upload limit (MB)")
    parser.add_argument("--max-audio-mb", type=_positive_float, default=50.0, help="audio upload limit (MB)")
    parser.add_argument("--max-video-mb", type=_positive_float, default=200.0, help="video upload limit (MB)")
    # What one answer may ask for (anygen.options.Limits.service() by default): more is refused, naming the option.
    parser.add_argument("--max-steps", type=_positive_int, default=100, help="denoising steps (default: 100)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=512, help="tokens (default: 512)")
    parser.add_argument(
        "--max-prompt-chars", type=_positive_int, default=8000, help="characters of a message (default: 8000)"
    )
    parser.add_argument(
        "--time-limit", type=_positive_float, default=300.0, help="seconds one answer may take (default: 300)"
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start the Gradio chat demo (a browser UI and a `generate` API endpoint)",
        description="A multimodal chat in the browser, on http://HOST:PORT. Needs the demo extra "
        "(pip install 'anygen[demo]').",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise AnyGenError("the demo needs Gradio: pip install 'anygen[demo]'") from None
    import torch

    from anygen.demo.app import launch
    from anygen.demo.backend import UploadLimits
    from anygen.options import Limits
    from anygen.pipeline import AnyToAnyPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    if threading.current_thread() is threading.main_thread():
        # `kill`/`docker stop` end the server like Ctrl-C does: its temporary answer files are removed.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    pipe = AnyToAnyPipeline.from_pretrained(args.pipeline).to(args.device)
    print(f"anygen demo: loading pipeline {pipe.spec.name!r}…", flush=True)
    pipe.load_all()
    limits = UploadLimits(args.max_image_mb, args.max_audio_mb, args.max_video_mb)
    launch(
        pipe,
        host=args.host,
        port=args.port,
        share=args.share,
        limits=limits,
        concurrency=args.concurrency,
        max_queue=args.max_queue,
        work_limits=Limits.service(
            max_inference_steps=args.max_steps,
            max_new_tokens=args.max_new_tokens,
            max_prompt_chars=args.max_prompt_chars,
            max_seconds=args.time_limit,
        ),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python demo/app.py`` / ``python -m anygen.demo_cli``: the same as ``anygen demo``."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = argparse.ArgumentParser(prog="anygen demo", description="Start the Gradio chat demo.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except AnyGenError as err:
        print(f"anygen demo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


if __name__ == "__main__":
    sys.exit(main())
