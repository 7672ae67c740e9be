"""GPU benchmark: NExT-GPT-sized components with random weights, one request per output modality.

    python benchmarks/gpu.py [--repeats 3] [--steps 25] [--max-new-tokens 24] [--out benchmarks/results_gpu.json]
    python benchmarks/gpu.py --dry-run            # the same code at tiny widths on the CPU (CI runs this)

Built from configs written here (nothing is downloaded), at the real sizes:

* LLM: a Vicuna-7B-shaped ``LlamaForCausalLM`` (4096 wide, 32 layers, 32 heads, FFN 11008, vocab 32000), bf16;
* output projectors: NExT-GPT's ``OutputProjector("transformer", 4096, 768 / 1024 / 512, 77 / 77 / 1, d_model=512)``;
* image: SD-1.5-shaped ``UNet2DConditionModel`` (320/640/1280/1280, cross-attention 768), ``AutoencoderKL``
  (128/256/512/512) and ``CLIPTextModel`` (ViT-L/14 text: 768 wide, 12 layers), fp16, 512x512;
* video: Zeroscope-v2-576w-shaped ``UNet3DConditionModel`` (320/640/1280/1280, cross-attention 1024, head dim 64),
  the same VAE and an OpenCLIP-H-shaped ``CLIPTextModel`` (1024 wide, 23 layers), fp16, 576x320, 24 frames;
* audio: AudioLDM-s-full-v2-shaped ``UNet2DConditionModel`` (128/256/384/640, CLAP class embedding 512), an 8-channel
  latent ``AutoencoderKL`` (128/256/512), ``ClapTextModelWithProjection`` (RoBERTa-base text, projection 512) and a
  ``SpeechT5HifiGan`` vocoder (64 mel bins, 16 kHz), fp16, 5.12 s.

Tokenizers are anygen's local byte-level ones (their ids fit the real vocabularies). The components are given to an
``AnyToAnyPipeline`` whose spec declares the same widths, so anygen's own code paths run unchanged.

For each modality (text->image, text->video, text->audio): per-stage latency of anygen's call (prefill, decode,
output projector, denoising steps, VAE decode / vocoder, the rest), peak GPU memory, and the overhead ratio
against the hand-written baseline of ``benchmarks/baseline.py`` (A/B alternated, medians), as in the CPU runner.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the repository, not benchmarks/ as the top level
    _repo = str(Path(__file__).resolve().parents[1])
    sys.path[:] = [_repo] + [
        p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
    ]

import torch

from benchmarks.common import compare, machine_info, median, round_floats, set_threads

SIGNALS = {"image": ("[IMG{i}]", 4), "video": ("[VID{i}]", 24), "audio": ("[AUD{i}]", 8)}
PROMPT = "a dog running on a beach"

# Widths: (real, dry-run).
REAL = {
    "llm": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
    ),
    "projector": dict(d_model=512, nhead=4, num_encoder_layers=4, num_decoder_layers=4),
    "unet": (320, 640, 1280, 1280),
    "unet_audio": (128, 256, 384, 640),
    "vae": (128, 256, 512, 512),
    "vae_audio": (128, 256, 512),
    "clip_l": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "clip_h": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16),
    "clap": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "clap_projection": 512,
    "vocoder_channels": 1024,
    "video_head_dim": 64,
    "image_size": (512, 512),
    "video_size": (320, 576),
    "num_frames": 24,
    "audio_length_in_s": 5.12,
    "unet_audio_sample_size": 128,
}
DRY = {
    "llm": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=None,  # the tokenizer's
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
    ),
    "projector": dict(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1),
    "unet": (32, 32, 64, 64),
    "unet_audio": (32, 32, 64, 64),
    "vae": (32, 32, 32, 32),
    "vae_audio": (32, 32, 32),
    "clip_l": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
    "clip_h": dict(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
    "clap": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
    "clap_projection": 40,
    "vocoder_channels": 32,
    "video_head_dim": 8,
    "image_size": (32, 32),
    "video_size": (32, 32),
    "num_frames": 2,
    "audio_length_in_s": 0.32,
    "unet_audio_sample_size": 8,
}


# ---- components ------------------------------------------------------------------------------------------------
def build_llm(w: dict, signal_tokens: dict[str, list[str]]):
    from transformers import LlamaConfig, LlamaForCausalLM

    from anygen.llm import LanguageModel
    from anygen.tokenizer import byte_level_tokenizer

    tokenizer = byte_level_tokenizer()
    cfg = dict(w["llm"])
    cfg["vocab_size"] = cfg["vocab_size"] or len(tokenizer) + sum(len(v) for v in signal_tokens.values())
    config = LlamaConfig(
        **cfg,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    return LanguageModel(model.eval(), tokenizer, signal_tokens, hidden_layer=-1)


def _clip_text(dims: dict):
    from transformers import CLIPTextConfig, CLIPTextModel

    from anygen.generators.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(77)
    config = CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=dims["hidden_size"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **dims,
    )
    return CLIPTextModel(config).eval(), tokenizer


def _vae(channels, in_channels: int = 3, latent_channels: int = 4, sample_size: int = 512):
    from diffusers import AutoencoderKL

    n = len(channels)
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(channels),
        layers_per_block=2,
        latent_channels=latent_channels,
        norm_num_groups=32,
        sample_size=sample_size,
    ).eval()


def _scheduler(kind: str, beta_start: float, beta_end: float):
    from anygen.generators.tiny import tiny_scheduler

    return tiny_scheduler(
        {"scheduler": kind, "beta_start": beta_start, "beta_end": beta_end, "prediction_type": "epsilon"}
    )


def build_image_generator(w: dict):
    """SD-1.5 shapes: StableDiffusionPipeline."""
    from diffusers import UNet2DConditionModel

    from anygen.generators._pipelines import pipeline_class
    from anygen.generators.diffusion import StableDiffusionGenerator

    text_encoder, tokenizer = _clip_text(w["clip_l"])
    unet = UNet2DConditionModel(
        sample_size=w["image_size"][0] // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=w["unet"],
        layers_per_block=2,
        cross_attention_dim=w["clip_l"]["hidden_size"],
        attention_head_dim=8,
    ).eval()
    pipeline = pipeline_class("stable-diffusion")(
        vae=_vae(w["vae"]),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler("pndm", 0.00085, 0.012),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    h, wd = w["image_size"]
    return StableDiffusionGenerator(pipeline, defaults={"height": h, "width": wd})


def build_video_generator(w: dict):
    """Zeroscope v2 576w shapes: TextToVideoSDPipeline."""
    from diffusers import UNet3DConditionModel

    from anygen.generators._pipelines import pipeline_class
    from anygen.generators.diffusion import ZeroscopeGenerator

    text_encoder, tokenizer = _clip_text(w["clip_h"])
    unet = UNet3DConditionModel(
        in_channels=4,
        out_channels=4,
        block_out_channels=w["unet"],
        layers_per_block=2,
        cross_attention_dim=w["clip_h"]["hidden_size"],
        attention_head_dim=w["video_head_dim"],
    ).eval()
    pipeline = pipeline_class("zeroscope")(
        vae=_vae(w["vae"]),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler("ddim", 0.00085, 0.012),
    )
    h, wd = w["video_size"]
    return ZeroscopeGenerator(pipeline, defaults={"height": h, "width": wd, "num_frames": w["num_frames"]})


def build_audio_generator(w: dict):
    """AudioLDM-s-full-v2 shapes: AudioLDMPipeline."""
    from diffusers import UNet2DConditionModel
    from transformers import (
        ClapTextConfig,
        ClapTextModelWithProjection,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    from anygen.generators._pipelines import pipeline_class
    from anygen.generators.diffusion import AudioLDMGenerator
    from anygen.generators.tiny import tiny_roberta_tokenizer

    tokenizer = tiny_roberta_tokenizer(77)
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(
            vocab_size=50265,
            max_position_embeddings=514,
            type_vocab_size=1,
            projection_dim=w["clap_projection"],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **w["clap"],
        )
    ).eval()
    channels = w["unet_audio"]
    unet = UNet2DConditionModel(
        sample_size=w["unet_audio_sample_size"],
        in_channels=8,
        out_channels=8,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
        up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
        block_out_channels=channels,
        layers_per_block=2,
        cross_attention_dim=channels,
        attention_head_dim=8,
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=w["clap_projection"],
        class_embeddings_concat=True,
    ).eval()
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=64,
            sampling_rate=16000,
            upsample_initial_channel=w["vocoder_channels"],
            upsample_rates=[5, 4, 2, 2, 2],
            upsample_kernel_sizes=[16, 16, 8, 4, 4],
            resblock_kernel_sizes=[3, 7, 11],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    ).eval()
    pipeline = pipeline_class("audioldm")(
        vae=_vae(w["vae_audio"], in_channels=1, latent_channels=8),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler("ddim", 0.0015, 0.0195),
        vocoder=vocoder,
    )
    return AudioLDMGenerator(pipeline, defaults={"audio_length_in_s": w["audio_length_in_s"]})


def spec_dict(w: dict, steps: int, max_new_tokens: int) -> dict:
    """A spec declaring the widths of the components built here (so anygen's width checks see the real graph)."""
    conditions = {
        "image": [77, w["clip_l"]["hidden_size"]],
        "video": [77, w["clip_h"]["hidden_size"]],
        "audio": [1, w["clap_projection"]],
    }
    types = {"image": "stable-diffusion", "video": "zeroscope", "audio": "audioldm"}
    guidance = {"image": 7.5, "video": 7.5, "audio": 2.5}
    return {
        "name": "gpu-nextgpt-shaped",
        "llm": {
            "type": "causal-lm",
            "config": {"model_type": "llama", **{k: v for k, v in w["llm"].items() if v is not None}},
            "tokenizer": {"type": "byte-level"},
            "defaults": {"max_new_tokens": max_new_tokens, "temperature": 0.0, "top_p": 1.0},
        },
        "outputs": {
            m: {
                "signal_tokens": {"count": SIGNALS[m][1], "format": SIGNALS[m][0]},
                "projector": {"type": "transformer", **w["projector"]},
                "generator": {
                    "type": types[m],
                    "config": {"condition_shape": conditions[m]},
                    "defaults": {"num_inference_steps": steps, "guidance_scale": guidance[m]},
                },
            }
            for m in ("image", "video", "audio")
        },
    }


def build_pipeline(w: dict, steps: int, max_new_tokens: int, device: str, llm_dtype, gen_dtype):
    """An AnyToAnyPipeline over components built here. Returns (pipe, parameter counts in millions)."""
    from anygen.chat_template import bind_template
    from anygen.pipeline import AnyToAnyPipeline
    from anygen.projectors import OutputProjector
    from anygen.spec import PipelineSpec

    spec = PipelineSpec.from_dict(spec_dict(w, steps, max_new_tokens), source="gpu.py")
    pipe = AnyToAnyPipeline(spec)
    pipe.set_progress_bar_config(disable=True)
    signal_tokens = {m: out.signal_tokens.names() for m, out in spec.outputs.items()}
    params: dict[str, float] = {}
    torch.manual_seed(0)
    with torch.device(device):
        lm = build_llm(w, signal_tokens).to(dtype=llm_dtype)
    params["llm"] = sum(p.numel() for p in lm.parameters()) / 1e6
    # anygen builds components from the spec on first use; here they are handed over ready-made instead.
    pipe._components["llm"] = lm
    bind_template(pipe.spec.llm.template, lm, "benchmark llm")  # as builders.build_llm does for a built LLM
    builders = {
        "image": build_image_generator,
        "video": build_video_generator,
        "audio": build_audio_generator,
    }
    for modality in spec.outputs:
        tokens, width = spec.outputs[modality].generator.config["condition_shape"]
        with torch.device(device):
            projector = OutputProjector("transformer", lm.hidden_size, width, tokens, **w["projector"]).eval()
        pipe._components[f"output_projector:{modality}"] = projector.to(device, llm_dtype)
        params[f"projector:{modality}"] = sum(p.numel() for p in projector.parameters()) / 1e6
        with torch.device(device):
            generator = builders[modality](w)
        generator.to(device, gen_dtype)
        generator.set_defaults(num_inference_steps=steps)
        pipe._components[f"generator:{modality}"] = generator
        for name, module in generator.pipeline.components.items():
            if isinstance(module, torch.nn.Module):
                params[f"{modality}:{name}"] = sum(p.numel() for p in module.parameters()) / 1e6
    pipe.to(device)  # everything is there already; this sets where anygen puts its own tensors
    return pipe, params


# ---- per-stage timing ------------------------------------------------------------------------------------------
class StageTimer:
    """Wall time of each stage of a call, from hooks on the models (synchronising the device around each)."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._handles: list = []
        self._patched: list = []
        self._starts: dict[int, float] = {}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def _pre(self, key: int) -> None:
        self.sync()
        self._starts[key] = time.perf_counter()

    def _post(self, key: int, name: str) -> None:
        self.sync()
        self.seconds[name] += time.perf_counter() - self._starts.pop(key)
        self.calls[name] += 1

    def module(self, module: torch.nn.Module, name) -> None:
        """Time ``module``'s forward; ``name`` is a string or a function giving one at call time."""
        key = id(module)

        def post(*_):
            self._post(key, name() if callable(name) else name)

        self._handles.append(module.register_forward_pre_hook(lambda *_: self._pre(key)))
        self._handles.append(module.register_forward_hook(post))

    def method(self, obj: Any, attr: str, name: str) -> None:
        original = getattr(obj, attr)
        key = id(original)

        def wrapped(*args, **kwargs):
            self._pre(key)
            try:
                return original(*args, **kwargs)
            finally:
                self._post(key, name)

        setattr(obj, attr, wrapped)
        self._patched.append((obj, attr))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        for obj, attr in self._patched:
            delattr(obj, attr)  # the instance attribute goes; the class's method shows again
        self._handles.clear()
        self._patched.clear()


def instrument(pipe, modality: str, sync) -> StageTimer:
    timer = StageTimer(sync)
    timer.module(pipe.llm.model, lambda: "llm_prefill" if timer.calls["llm_prefill"] == 0 else "llm_decode")
    timer.module(pipe.output_projector(modality), "output_projector")
    pipeline = pipe.generator(modality).pipeline
    timer.module(pipeline.text_encoder, "generator_text_encoder")
    timer.module(pipeline.unet, "denoising_unet")
    timer.method(pipeline.vae, "decode", "vae_decode")
    if modality == "audio":
        timer.module(pipeline.vocoder, "vocoder")
    return timer


# ---- the benchmark ---------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.baseline import HandWritten

    w = DRY if args.dry_run else REAL
    device = "cpu" if args.dry_run else args.device
    cuda = device.startswith("cuda")
    llm_dtype = torch.float32 if args.dry_run else torch.bfloat16
    gen_dtype = torch.float32 if args.dry_run else torch.float16
    steps = 2 if args.dry_run else args.steps
    repeats = 1 if args.dry_run else args.repeats

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    pipe, params = build_pipeline(w, steps, args.max_new_tokens, device, llm_dtype, gen_dtype)
    sync()
    build_s = time.perf_counter() - t0
    weights_gb = torch.cuda.memory_allocated() / 2**30 if cuda else None
    hand = HandWritten(pipe)
    out: dict[str, Any] = {
        "machine": machine_info(torch.get_num_threads()),
        "run": {
            "dry_run": args.dry_run,
            "device": device,
            "llm_dtype": str(llm_dtype),
            "generator_dtype": str(gen_dtype),
            "steps": steps,
            "max_new_tokens": args.max_new_tokens,
            "repeats": repeats,
            "build_s": build_s,
        },
        "params_millions": params,
        "weights_gb": weights_gb,
    }
    guidance = {"image": 7.5, "video": 7.5, "audio": 2.5}
    sizes = {
        "image": {"height": w["image_size"][0], "width": w["image_size"][1]},
        "video": {"height": w["video_size"][0], "width": w["video_size"][1], "num_frames": w["num_frames"]},
        "audio": {"audio_length_in_s": w["audio_length_in_s"]},
    }
    for modality in args.modalities:

        def a(modality=modality):
            return pipe(
                PROMPT,
                output_modalities=[modality],
                only_requested=True,
                seed=0,
                temperature=0,
                max_new_tokens=args.max_new_tokens,
                num_inference_steps=steps,
                guidance_scale=guidance[modality],
                **sizes[modality],
            )

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        timer = (
            instrument(pipe, modality, sync) if args.dry_run else None
        )  # dry run: stages of this first call
        first_wall, _cpu, first = _timed(a, sync)  # warm-up
        n_text = len(first.token_ids) - len(hand.spans[modality])
        last: dict[str, Any] = {}

        def b(modality=modality, n_text=n_text, last=last):
            last["b"] = hand.text_to(
                modality,
                PROMPT,
                n_text_tokens=n_text,
                seed=0,
                steps=steps,
                guidance_scale=guidance[modality],
                **sizes[modality],
            )
            return last["b"]

        # Per-stage latency of anygen's call (hooks on; separate runs from the A/B timing below).
        stage_runs: list[dict[str, float]] = []
        totals = []
        if timer is not None:
            timer.remove()
            stage_runs.append(dict(timer.seconds) | {f"{k}_calls": v for k, v in timer.calls.items()})
            totals.append(first_wall)
        else:
            timer = instrument(pipe, modality, sync)
            try:
                for _ in range(repeats):
                    timer.reset()
                    wall, _cpu, _ = _timed(a, sync)
                    totals.append(wall)
                    stage_runs.append(dict(timer.seconds) | {f"{k}_calls": v for k, v in timer.calls.items()})
            finally:
                timer.remove()
        stages = {k: median([r.get(k, 0.0) for r in stage_runs]) for k in stage_runs[0]}
        timed_total = sum(v for k, v in stages.items() if not k.endswith("_calls"))
        stages["total"] = median(totals)
        stages["other"] = stages["total"] - timed_total
        decode_calls = stages.get("llm_decode_calls", 0)
        stages["llm_decode_per_forward"] = (
            stages.get("llm_decode", 0.0) / decode_calls if decode_calls else None
        )
        unet_calls = stages.get("denoising_unet_calls", 0)
        stages["denoising_per_step"] = stages.get("denoising_unet", 0.0) / unet_calls if unet_calls else None
        entry: dict[str, Any] = {
            "new_tokens": len(first.token_ids),
            "stages_s": stages,
            "overhead": compare(a, b, repeats, warmup=0 if args.dry_run else 1, sync=sync),
        }
        entry["overhead"]["same_tokens"] = last["b"].token_ids == first.token_ids
        if cuda:
            entry["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out[f"text_to_{modality}"] = entry
    return round_floats(out)


def _timed(fn, sync):
    from benchmarks.common import timed

    return timed(fn, sync)


def table(result: dict[str, Any]) -> str:
    lines = []
    for key, e in result.items():
        if not key.startswith("text_to_"):
            continue
        s, o = e["stages_s"], e["overhead"]

        def ms(name, s=s):
            v = s.get(name)
            return "-" if v is None else f"{v * 1000:.1f}"

        lines.append(
            f"{key}: total {ms('total')} ms | prefill {ms('llm_prefill')} | decode {ms('llm_decode')} "
            f"({s.get('llm_decode_calls', 0)} passes, {ms('llm_decode_per_forward')}/pass) | projector "
            f"{ms('output_projector')} | denoising {ms('denoising_unet')} ({s.get('denoising_unet_calls', 0)} steps, "
            f"{ms('denoising_per_step')}/step) | VAE {ms('vae_decode')} | vocoder {ms('vocoder')} | other {ms('other')}"
            f" | peak mem {e.get('peak_gpu_memory_gb', '-')} GB | anygen/baseline {o['ratio']:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny widths on the CPU, 1 repeat, 2 steps")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per generator")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (dry run: 1)")
    parser.add_argument(
        "--modalities", nargs="+", choices=("image", "video", "audio"), default=["image", "video", "audio"]
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON output (default: results_gpu.json; none for --dry-run)"
    )
    args = parser.parse_args(argv)
    if not args.dry_run and args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --dry-run (tiny widths on the CPU) or --device cpu")
    threads = args.threads or (1 if args.dry_run else None)
    if threads:
        set_threads(threads)
    result = run(args)
    print(table(result))
    out = args.out or (None if args.dry_run else Path(__file__).resolve().parent / "results_gpu.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
