"""``anygen convert nextgpt-legacy``: NExT-GPT's legacy checkpoint -> an anygen pipeline folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from anygen.errors import WeightsError


def register(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert third-party checkpoints to anygen pipeline folders"
    )
    sub = convert.add_subparsers(dest="convert_command", required=True)
    p = sub.add_parser(
        "nextgpt-legacy",
        help="NExT-GPT's 7b_tiva_v0 pytorch_model.pt + Vicuna-7B v0 -> a pipeline folder",
        description="Check NExT-GPT's released checkpoint against the known key layout, merge its LoRA into "
        "Vicuna-7B v0 (or keep it as a peft adapter), replace the embeddings and LM head, register its 38 "
        "tokens and convert its projectors. The result loads with AnyToAnyPipeline.from_pretrained(OUT).",
    )
    p.add_argument("checkpoint", type=Path, help="the legacy pytorch_model.pt (ChocoWu/nextgpt_7b_tiva_v0)")
    p.add_argument("--vicuna", type=Path, required=True, help="Vicuna-7B v0 folder (LLaMA-1 + delta applied)")
    p.add_argument("--out", type=Path, required=True, help="output folder (e.g. weights/nextgpt-7b-v0)")
    p.add_argument(
        "--keep-lora",
        action="store_true",
        help="write the LoRA as a peft adapter (llm-lora/) over the unmerged LLM (llm-base/) instead of merging",
    )
    p.add_argument(
        "--lora-alpha", type=float, default=32.0, help="LoRA alpha (NExT-GPT: 32; r is read from shapes)"
    )
    p.add_argument(
        "--imagebind", type=Path, default=None, help="encoder path for the spec (default: bundled)"
    )
    p.add_argument(
        "--sd", type=Path, default=None, help="image generator folder for the spec (default: bundled)"
    )
    p.add_argument("--zeroscope", type=Path, default=None, help="video generator folder (default: bundled)")
    p.add_argument("--audioldm", type=Path, default=None, help="audio generator folder (default: bundled)")
    p.add_argument(
        "--dtype",
        choices=["auto", "float16", "bfloat16", "float32"],
        default="auto",
        help="dtype of the written LLM (default: Vicuna's own)",
    )
    p.add_argument("--force", action="store_true", help="overwrite a previous conversion in --out")
    p.set_defaults(handler=_nextgpt_legacy)


def _nextgpt_legacy(args: argparse.Namespace) -> int:
    if not args.checkpoint.is_file():
        raise WeightsError(
            f"checkpoint {args.checkpoint}: no such file (download it with "
            "`anygen weights download nextgpt-7b-tiva-v0`)"
        )
    from anygen.convert.nextgpt_legacy import convert_nextgpt_legacy

    convert_nextgpt_legacy(
        args.checkpoint,
        args.vicuna,
        args.out,
        keep_lora=args.keep_lora,
        lora_alpha=args.lora_alpha,
        imagebind=args.imagebind,
        sd=args.sd,
        zeroscope=args.zeroscope,
        audioldm=args.audioldm,
        dtype=args.dtype,
        force=args.force,
    )
    return 0
