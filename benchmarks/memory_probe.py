"""Peak RSS of one text->image call in a fresh process: lazy components (anygen's default) or all built up front.

    python -m benchmarks.memory_probe --mode lazy|eager [--threads 1] [--scaled]

Prints one JSON line: peak RSS (the process's high-water mark, ``VmHWM``, imports included), the RSS (psutil)
after each stage, and the MiB of weights built.

``--scaled``: the tiny pipeline with wider generators (~160 MB of weights for the image generator, ~590 MB for
everything, instead of 5.5 / 18.6 MB), so that weights rather than library code dominate, as with real checkpoints.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    """This process's peak RSS: ``VmHWM`` of /proc/self/status on Linux, else ``getrusage`` ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: a child started by ``subprocess`` (vfork + exec) inherits the parent's high-water
    mark into it, so every probe launched from the runner would report at least the runner's own RSS.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


# Generator knobs of the --scaled variant (see anygen.generators.tiny.TINY_KNOBS).
SCALED_GENERATOR = {
    "text_width": 256,
    "text_layers": 4,
    "text_heads": 4,
    "text_ffn": 1024,
    "unet_channels": [160, 320],
    "layers_per_block": 2,
    "attention_head_dim": 32,
    "vae_channels": [64, 128, 128],
}


def scaled_spec():
    """The tiny spec with every generator widened (``SCALED_GENERATOR``); the rest unchanged."""
    import yaml

    from anygen.spec import PipelineSpec, bundled_pipelines

    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    for modality, out in data["outputs"].items():
        knobs = dict(SCALED_GENERATOR)
        if modality == "audio":
            knobs["vae_channels"] = [64, 128]
        out["generator"]["config"] = {**out["generator"].get("config", {}), **knobs}
    data["name"] = "tiny-scaled"
    return PipelineSpec.from_dict(data, source="tiny-scaled")


def weights_mb(pipe) -> float:
    """Parameters and buffers of every component built so far, in MiB."""
    import torch

    total = 0
    for component in pipe._components.values():
        pipeline = getattr(component, "pipeline", None)
        modules = (
            [m for m in pipeline.components.values() if isinstance(m, torch.nn.Module)]
            if pipeline is not None
            else [component]
        )
        for module in modules:
            total += sum(t.numel() * t.element_size() for t in module.parameters())
            total += sum(t.numel() * t.element_size() for t in module.buffers())
    return total / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("lazy", "eager"), required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt", default="a dog running on a beach")
    parser.add_argument("--scaled", action="store_true", help="wider generators (weights dominate)")
    args = parser.parse_args(argv)

    stages = {"start": _rss_mb()}
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from anygen import AnyToAnyPipeline

    stages["imported"] = _rss_mb()
    pipe = AnyToAnyPipeline(scaled_spec()) if args.scaled else AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    if args.mode == "eager":
        pipe.load_all()  # every encoder, projector and generator built before the first call
    stages["built"] = _rss_mb()
    out = pipe(args.prompt, output_modalities=["image"], only_requested=True, seed=0, temperature=0)
    stages["after_call"] = _rss_mb()
    result = {
        "mode": args.mode,
        "pipeline": pipe.spec.name,
        "peak_rss_mb": _peak_mb(),
        "rss_mb": stages,
        "weights_mb": weights_mb(pipe),
        "components": pipe.loaded_components,
        "images": len(out.images),
        "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
