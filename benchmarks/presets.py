"""Peak memory of each bundled pipeline whose weights are here: one call per output modality.

    python -m benchmarks.presets [--device cuda] [--steps 4] [--only NAME ...] [--out benchmarks/results.json]

For every bundled spec (``pipelines/*.yaml``; ``--only`` picks some), a pipeline whose weight paths all exist is built
as its spec says (dtypes, ``cpu_offload``, ``unload_after_use``) and asked for one item of each output modality
(``only_requested``, seed 0, the spec's sizes, ``--steps`` denoising steps). Measured per modality: on CUDA the peak
allocated memory (``torch.cuda.max_memory_allocated``, reset before each call) and the memory held after the call;
on the CPU the process's peak resident set (``ru_maxrss``, which only grows: each spec runs in its own process).
The baseline measured in the same run is
the memory held once the LLM side is built and before any generator is. A spec with missing weights is listed with
the paths it lacks (``anygen weights download NAME`` fetches them); nothing is downloaded here.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info

PROMPTS = {
    "image": "draw a red circle",
    "video": "show a red circle moving right",
    "audio": "play a low steady tone",
}


def missing_weights(spec) -> list[str]:
    """The node paths of ``spec`` that are not on this machine (as written in the spec)."""
    paths = [*(n.path for n in spec.encoders.values()), *(n.path for n in spec.input_projectors.values())]
    paths += [spec.llm.path, spec.llm.adapter]
    paths += [p for out in spec.outputs.values() for p in (out.projector.path, out.generator.path)]
    return [p for p in paths if p is not None and not spec.resolve(p).exists()]


def _memory_gb(device: str) -> dict[str, float]:
    import torch

    if device.startswith("cuda"):
        return {
            "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "held_gb": torch.cuda.memory_allocated() / 2**30,
        }
    scale = 2**20 if sys.platform != "darwin" else 2**30  # ru_maxrss: KiB on Linux, bytes on macOS
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale}


def measure(name: str, device: str, steps: int) -> dict[str, Any]:
    """Build ``name`` on ``device`` and make one item of each of its output kinds, measuring memory."""
    import torch

    from anygen.pipeline import AnyToAnyPipeline
    from anygen.spec import load_spec

    spec = load_spec(name)
    lacking = missing_weights(spec)
    if lacking:
        return {"skipped": "weights missing", "missing": lacking}
    cuda = device.startswith("cuda")
    pipe = AnyToAnyPipeline(spec).to(device)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    _ = pipe.llm
    for proj in spec.input_projectors:
        pipe.input_projector(proj)
    if cuda:
        torch.cuda.synchronize()
    result: dict[str, Any] = {"baseline": {**_memory_gb(device), "build_s": time.perf_counter() - start}}
    for modality in spec.outputs:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = pipe(
            PROMPTS[modality],
            output_modalities=[modality],
            only_requested=True,
            seed=0,
            num_inference_steps=steps,
            max_new_tokens=min(64, spec.llm.defaults.get("max_new_tokens", 64)),
        )
        if cuda:
            torch.cuda.synchronize()
        made = len(getattr(out, modality + "s"))
        result[modality] = {**_memory_gb(device), "seconds": time.perf_counter() - start, "made": made}
        result[modality]["loaded_after"] = pipe.loaded_components
    return result


def _in_own_process(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure` in a fresh process (peak RSS only grows, and CUDA caches outlive a pipeline)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "one.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.presets",
            "--device",
            args.device,
            "--steps",
            str(args.steps),
        ]
        done = subprocess.run([*cmd, "--only", name, "--out", str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            return {"skipped": "failed", "missing": [], "error": done.stderr.strip().splitlines()[-1:]}
        return json.loads(out.read_text())["presets_memory"]["presets"][name]


def main(argv: list[str] | None = None) -> int:
    from anygen.spec import bundled_pipelines

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--only", nargs="*", default=None, help="bundled pipeline names (default: all)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    names = args.only or sorted(bundled_pipelines())
    unknown = sorted(set(names) - set(bundled_pipelines()))
    if unknown:
        p.error(
            f"--only: not bundled pipelines: {', '.join(unknown)} (known: {', '.join(sorted(bundled_pipelines()))})"
        )
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here; use --device cpu")
    report: dict[str, Any] = {
        "machine": machine_info(torch.get_num_threads()),
        "device": args.device,
        "presets": {},
    }
    for name in names:
        entry = measure(name, args.device, args.steps) if len(names) == 1 else _in_own_process(name, args)
        report["presets"][name] = entry
        if "skipped" in entry:
            print(
                f"{name:28s} skipped: {entry['skipped']} ({len(entry['missing'])} paths, e.g. {entry['missing'][0]})"
            )
            continue
        key = "peak_gb" if args.device.startswith("cuda") else "peak_rss_gb"
        base = entry["baseline"][key]
        cells = [
            f"{m} {entry[m][key]:.2f} GB (x{entry[m][key] / base:.2f})" for m in entry if m != "baseline"
        ]
        print(f"{name:28s} LLM side {base:.2f} GB | " + " | ".join(cells))
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.is_file() else {}
        old["presets_memory"] = report
        args.out.write_text(json.dumps(old, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
