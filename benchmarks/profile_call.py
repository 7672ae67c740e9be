"""Where the time of one call goes: anygen's text->X call and the hand-written baseline under cProfile.

    python -m benchmarks.profile_call [--modality image] [--calls 10] [--top 20] [--threads 1]

Prints, per side, the cumulative time per call of each stage (the LLM loop and its model forwards, the output
projector, the diffusers pipeline with its UNet and VAE, diffusers' ``_execution_device``) and what is left
(the code around them), then the functions with the most own time. cProfile slows Python code down more than
tensor kernels, so the figures exaggerate Python overhead: compare the two sides, not against the timings.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import pstats
import sys
from typing import Any


def _key(fn: Any) -> tuple[str, int, str]:
    fn = inspect.unwrap(fn)
    code = fn.__code__
    return (code.co_filename, code.co_firstlineno, code.co_name)


def stage_functions(pipe, modality: str) -> dict[str, Any]:
    """The functions whose cumulative time makes up each stage (same objects for both sides)."""
    from diffusers import DiffusionPipeline
    from transformers import GenerationMixin

    from anygen.generation import generate
    from anygen.generators.diffusion import DiffusersGenerator
    from anygen.pipeline import AnyToAnyPipeline
    from benchmarks.baseline import HandWritten

    gen = pipe.generator(modality)
    decoder = gen.pipeline.vocoder if modality == "audio" else gen.pipeline.vae
    return {
        "total (anygen __call__ / baseline text_to)": [AnyToAnyPipeline.__call__, HandWritten.text_to],
        "LLM loop (anygen generate / transformers generate)": [generate, GenerationMixin.generate],
        "  LLM forward passes": [type(pipe.llm.model).forward],
        "output projector": [type(pipe.output_projector(modality)).forward],
        "anygen generator wrapper (DiffusersGenerator.generate)": [DiffusersGenerator.generate],
        "diffusers pipeline __call__": [type(gen.pipeline).__call__],
        "  UNet forward": [type(gen.pipeline.unet).forward],
        "  VAE decode" if modality != "audio" else "  VAE decode + vocoder": [type(gen.pipeline.vae).decode]
        + ([type(decoder).forward] if modality == "audio" else []),
        "diffusers _execution_device": [DiffusionPipeline._execution_device.fget],
    }


def profile_stages(fn, calls: int, stages: dict[str, list]) -> tuple[dict[str, float], pstats.Stats]:
    fn()  # warm-up (and build)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    stats = pstats.Stats(prof)
    table = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    out = {}
    for name, fns in stages.items():
        total = sum(table[_key(f)][3] for f in fns if _key(f) in table)
        out[name] = 1000 * total / calls
    return out, stats


def breakdown(pipe, modality: str = "image", calls: int = 10) -> dict[str, Any]:
    """Stage -> ms per call under cProfile, for anygen and for the baseline."""
    from benchmarks.baseline import HandWritten
    from benchmarks.run import GENERATOR_SETTINGS, PROMPT

    hand = HandWritten(pipe)
    settings = GENERATOR_SETTINGS[modality]
    sizes = {k: v for k, v in settings.items() if k not in ("steps", "guidance_scale")}
    first = pipe(PROMPT, output_modalities=[modality], only_requested=True, seed=0, temperature=0)
    n_text = len(first.token_ids) - len(hand.spans[modality])

    def a():
        return pipe(
            PROMPT,
            output_modalities=[modality],
            only_requested=True,
            seed=0,
            temperature=0,
            num_inference_steps=settings["steps"],
            guidance_scale=settings["guidance_scale"],
            **sizes,
        )

    def b():
        return hand.text_to(
            modality,
            PROMPT,
            n_text_tokens=n_text,
            seed=0,
            steps=settings["steps"],
            guidance_scale=settings["guidance_scale"],
            **sizes,
        )

    stages = stage_functions(pipe, modality)
    sides = {}
    stats = {}
    for side, fn in (("anygen", a), ("baseline", b)):
        sides[side], stats[side] = profile_stages(fn, calls, stages)
    result: dict[str, Any] = {"calls": calls, "ms_per_call_under_cprofile": {}}
    for name in stages:
        result["ms_per_call_under_cprofile"][name] = {s: round(sides[s][name], 2) for s in sides}
    return result | {"_stats": stats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_call", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--modality", choices=("image", "video", "audio"), default="image")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--top", type=int, default=20, help="functions with the most own time, per side")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from benchmarks.common import set_threads
    from benchmarks.run import _new_pipe

    set_threads(args.threads)
    result = breakdown(_new_pipe(), args.modality, args.calls)
    print(f"text->{args.modality}: ms per call under cProfile ({args.calls} calls per side)\n")
    print(f"{'stage':58s} {'anygen':>9s} {'baseline':>9s}")
    for name, row in result["ms_per_call_under_cprofile"].items():
        print(f"{name:58s} {row['anygen']:9.2f} {row['baseline']:9.2f}")
    for side, stats in result["_stats"].items():
        print(f"\n---- {side}: top {args.top} by own time ----")
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
