"""``anygen train`` (and ``python -m anygen.train`` / ``accelerate launch -m anygen.train``, same options)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from anygen.errors import AnyGenError

DESCRIPTION = """\
Train one of NExT-GPT's three stages on an anygen pipeline, reading NExT-GPT's data as it ships:
  lm language pre-training: the whole LLM (+ input projectors), for an LLM that starts from random weights
  1  encoding-side alignment: input projectors on media -> caption (LLM and encoders frozen)
  2  decoding-side alignment: output projectors on text -> media (LM + alignment [+ diffusion] loss)
  3  instruction tuning: LoRA on the LLM + both projectors, on multi-turn conversations
The trained pipeline is written to --out (AnyToAnyPipeline.from_pretrained(OUT) loads it), with
OUT/metrics.jsonl and OUT/checkpoints/. Several processes/GPUs/nodes: accelerate launch [--config_file
ds_or_fsdp.yaml] -m anygen.train <these options>.

Components (one process), with --data a JSON list of {"media": path, "caption": str}:
  generator  one diffusion generator (--modality image|video|audio): its VAE (--vae-steps), vocoder
             (--vocoder-steps), then denoiser + text encoder (--max-steps) on the noise-prediction objective
  encoder    ImageBind-style contrastive binding of the encoder's towers to text (--data a,b,c: several lists)
"""

COMPONENT_STAGES = ("generator", "encoder")


def _pair(value: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers like 0.9,0.95, got {value!r}") from None
    return a, b


def add_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # options not given fall back to --config, then to TrainConfig's defaults
    p.add_argument(
        "--config", default=None, help="a YAML file of settings (TrainConfig fields); options below win"
    )
    g = p.add_argument_group("what to train")
    g.add_argument("--stage", choices=("lm", "1", "2", "3", *COMPONENT_STAGES), default=S)
    g.add_argument(
        "--modality", choices=("image", "video", "audio"), default=S, help="the generator to train (--stage generator)"
    )
    g.add_argument("--pipeline", default=S, help="bundled name, spec .yaml or saved folder (default: tiny)")
    g.add_argument("--data", default=S, help="DATA.yaml, or one NExT-GPT JSON file")
    g.add_argument(
        "--media-root", dest="media_root", default=S, help="media folder of a JSON given as --data"
    )
    g.add_argument(
        "--embed-root", dest="embed_root", default=S, help="folder of NExT-GPT's *.npy caption embeddings"
    )
    g.add_argument(
        "--task",
        choices=("auto", "comprehension", "generation"),
        default=S,
        help="how a pair list given as --data is read (auto: comprehension in stage 1, else generation)",
    )
    g.add_argument("--out", default=S, help="output folder")
    g.add_argument(
        "--resume", default=S, help="a checkpoint folder, or an output folder (its newest checkpoint)"
    )
    g.add_argument(
        "--skip-bad",
        dest="skip_bad",
        action="store_true",
        default=S,
        help="skip and count entries whose media is missing or unreadable (default: stop with an error)",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--max-steps", dest="max_steps", type=int, default=S)
    o.add_argument(
        "--stop-after",
        dest="stop_after",
        type=int,
        default=S,
        help="stop after this step with a checkpoint (the schedule still runs to --max-steps)",
    )
    o.add_argument("--lr", type=float, default=S)
    o.add_argument("--batch-size", dest="batch_size", type=int, default=S, help="examples per process")
    o.add_argument("--grad-accum", dest="grad_accum", type=int, default=S)
    o.add_argument("--seed", type=int, default=S)
    o.add_argument("--weight-decay", dest="weight_decay", type=float, default=S)
    o.add_argument("--betas", type=_pair, default=S, help="AdamW betas, e.g. 0.9,0.95")
    o.add_argument("--warmup-steps", dest="warmup_steps", type=int, default=S)
    o.add_argument("--warmup-ratio", dest="warmup_ratio", type=float, default=S)
    o.add_argument("--max-grad-norm", dest="max_grad_norm", type=float, default=S)
    o.add_argument("--mixed-precision", dest="mixed_precision", choices=("no", "fp16", "bf16"), default=S)
    o.add_argument("--cpu", action="store_true", default=S, help="train on the CPU even with a GPU present")
    o.add_argument("--max-length", dest="max_length", type=int, default=S)
    lo = p.add_argument_group("losses")
    lo.add_argument("--lm-weight", dest="lm_weight", type=float, default=S)
    lo.add_argument(
        "--align-loss",
        dest="align_loss",
        choices=("l2", "mse"),
        default=S,
        help="l2 (NExT-GPT, default): mean over tokens of the per-token Euclidean norm; mse",
    )
    lo.add_argument("--align-weight", dest="align_weight", type=float, default=S)
    lo.add_argument(
        "--diffusion-weight",
        dest="diffusion_weight",
        type=float,
        default=S,
        help="weight of the frozen UNet's noise-prediction loss on the target media (0: off)",
    )
    lo.add_argument("--snr-gamma", dest="snr_gamma", type=float, default=S, help="min-SNR weighting (e.g. 5)")
    lo.add_argument(
        "--no-train-signal-tokens",
        dest="train_signal_tokens",
        action="store_false",
        default=S,
        help="keep the signal tokens' embedding and LM-head rows frozen",
    )
    lo.add_argument(
        "--embed-cache", dest="embed_cache", default=S, help="caption-embedding cache (default OUT/cache)"
    )
    lo.add_argument(
        "--recompute-embeddings",
        dest="recompute_embeddings",
        action="store_true",
        default=S,
        help="encode the target captions at every step instead of once (slower; for comparison)",
    )
    c = p.add_argument_group("components (--stage generator / encoder)")
    c.add_argument("--vae-steps", dest="vae_steps", type=int, default=S, help="autoencoder steps first (0: keep it)")
    c.add_argument("--vocoder-steps", dest="vocoder_steps", type=int, default=S, help="vocoder steps (audio)")
    c.add_argument("--text-steps", dest="text_steps", type=int, default=S,
                   help="contrastive text-encoder steps against the media before the denoiser")
    c.add_argument("--caption-dropout", dest="caption_dropout", type=float, default=S)
    c.add_argument(
        "--freeze-text-encoder", dest="train_text_encoder", action="store_false", default=S,
        help="train the denoiser only",
    )
    c.add_argument("--text-encoder-lr", dest="text_encoder_lr", type=float, default=S,
                   help="the text encoder's learning rate (default: --lr)")
    lr = p.add_argument_group("LoRA (stage 3)")
    lr.add_argument("--lora-r", dest="lora_r", type=int, default=S)
    lr.add_argument("--lora-alpha", dest="lora_alpha", type=float, default=S)
    lr.add_argument("--lora-dropout", dest="lora_dropout", type=float, default=S)
    lr.add_argument(
        "--lora-target-modules",
        dest="lora_target_modules",
        default=S,
        help="comma-separated module names (default q_proj,k_proj,v_proj,o_proj)",
    )
    lr.add_argument(
        "--lora-save",
        dest="lora_save",
        choices=("merged", "adapter"),
        default=S,
        help="merge the LoRA into llm/ (default) or write it as a peft adapter in llm-lora/",
    )
    b = p.add_argument_group("bookkeeping")
    b.add_argument("--save-every", dest="save_every", type=int, default=S, help="checkpoint every N steps")
    b.add_argument("--keep-checkpoints", dest="keep_checkpoints", type=int, default=S)
    b.add_argument("--log-every", dest="log_every", type=int, default=S)
    b.add_argument("--no-progress", dest="progress", action="store_false", default=S)
    b.add_argument("--quiet", dest="verbose", action="store_false", default=S, help="no summaries")
    b.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S)


def config_from_args(args: argparse.Namespace):
    from anygen.train.config import TrainConfig

    values = {k: v for k, v in vars(args).items() if k not in ("config", "handler", "command")}
    lora = {}
    for key in ("r", "alpha", "dropout", "target_modules", "save"):
        if f"lora_{key}" in values:
            value = values.pop(f"lora_{key}")
            if key == "target_modules":
                value = [v.strip() for v in value.split(",") if v.strip()]
            lora[key] = value
    base = TrainConfig.read_yaml(args.config) if args.config else {}
    if lora:
        base["lora"] = {**base.get("lora", {}), **lora}
    missing = [f"--{k}" for k in ("stage", "data", "out") if k not in values and k not in base]
    if missing:
        raise AnyGenError(f"train: {', '.join(missing)} required (or give them in --config)")
    return TrainConfig.build(base, **values)


def component_config_from_args(args: argparse.Namespace):
    """The config of ``--stage generator`` / ``encoder``; options that stage does not take are an error."""
    from anygen.train.config import ConfigError, TrainConfig

    if args.stage == "generator":
        from anygen.train.generator import GeneratorTrainConfig as Config
    else:
        from anygen.train.encoder import EncoderTrainConfig as Config
    values = {k: v for k, v in vars(args).items() if k not in ("config", "handler", "command", "stage")}
    base = TrainConfig.read_yaml(args.config) if args.config else {}
    foreign = sorted(set(values) - set(Config.model_fields))
    if foreign:
        names = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise ConfigError(f"train: {names} not taken by --stage {args.stage}")
    return Config.build(base, **values)


def run(args: argparse.Namespace) -> int:
    stage = getattr(args, "stage", None)
    if stage == "generator":
        from anygen.train.generator import train_generator

        train_generator(component_config_from_args(args))
        return 0
    if stage == "encoder":
        from anygen.train.encoder import train_encoder

        train_encoder(component_config_from_args(args))
        return 0
    from anygen.train.loop import train

    result = train(config_from_args(args))
    return 0 if result.steps else 1


def register(subparsers) -> None:
    """Add ``anygen train`` to the main command line."""
    p = subparsers.add_parser(
        "train",
        help="train NExT-GPT's stage 1, 2 or 3 (or lm, a generator, the encoder)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m anygen.train",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except AnyGenError as err:
        print(f"anygen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
