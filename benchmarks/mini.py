"""The shipped `mini` pipeline: seconds per call, end to end, and its world-suite accuracy.

    python -m benchmarks.mini [--pipeline mini] [--baseline tiny] [--threads 2] [--repeats 5]
                              [--report runs/mini/eval/report.json] [--out benchmarks/results.json]

Times text->image, text->video, text->audio and image->text calls of a world-trained pipeline (`mini`, or a run's
folder such as runs/mini/mini) at its default steps (no output_modalities: the LLM decides), with `tiny` (the
random-weight wiring default, 2 steps) measured in the same run as the baseline, alternating the two. Writes the
keys ``mini_speed`` and, when a report is given, ``world`` (the accuracies of ``anygen eval --suite world``,
without the per-prompt rows) into the results file; other keys are kept.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, machine_info, median, set_threads

CASES = {
    "text_to_image": ("draw a red circle on the left", {}),
    "text_to_video": ("show a video of a green triangle moving up", {}),
    "text_to_audio": ("play a high beeping tone", {}),
    "image_to_text": ("<image> what is in this image?", {"image": True}),
}
OUT = REPO / "benchmarks" / "results.json"


def _call(pipe, prompt: str, media: dict[str, bool], seed: int):
    from anygen.world.render import render_image

    images = [render_image("blue", "square", "right")] if media.get("image") else None
    start = time.perf_counter()
    out = pipe(prompt, images=images, seed=seed)
    return time.perf_counter() - start, out


def bench(repeats: int, pipeline: str = "mini", baseline: str = "tiny") -> dict[str, Any]:
    from anygen import AnyToAnyPipeline

    pipes = {}
    for name, source in (("mini", pipeline), ("tiny", baseline)):
        pipes[name] = AnyToAnyPipeline.from_pretrained(source)
        pipes[name].set_progress_bar_config(disable=True)
        pipes[name].load_all()
    results: dict[str, Any] = {}
    for case, (prompt, media) in CASES.items():
        times: dict[str, list[float]] = {"mini": [], "tiny": []}
        kinds = ""
        for pipe in pipes.values():  # warm-up
            _call(pipe, prompt, media, 0)
        for i in range(repeats):
            for name, pipe in pipes.items():
                seconds, out = _call(pipe, prompt, media, i)
                times[name].append(seconds)
                if name == "mini" and i == 0:
                    kinds = "+".join(k for k, v in (("image", out.images), ("video", out.videos),
                                                      ("audio", out.audios)) if v) or "text"
        mini, tiny = median(times["mini"]), median(times["tiny"])
        results[case] = {"mini_s": round(mini, 3), "tiny_s": round(tiny, 3), "ratio": round(mini / tiny, 2),
                         "mini_made": kinds, "repeats": repeats}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="mini", help="the world-trained pipeline (name or folder)")
    parser.add_argument("--baseline", default="tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--report", default=None, help="an anygen eval report.json to record under 'world'")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    speed = bench(args.repeats, args.pipeline, args.baseline)
    print(f"{args.pipeline} vs {args.baseline}, seconds per call, {args.threads} thread(s), median of {args.repeats}:")
    for case, e in speed.items():
        print(f"  {case:14s} mini {e['mini_s']:6.2f} s ({e['mini_made']})   tiny {e['tiny_s']:6.2f} s   "
              f"ratio {e['ratio']:.2f}")
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["mini_speed"] = {
        "pipeline": args.pipeline, "baseline": args.baseline, "threads": args.threads,
        "machine": machine_info(args.threads), "cases": speed,
    }
    if args.report:
        report = json.loads(Path(args.report).read_text())
        results["world"] = {k: v for k, v in report.items() if k not in ("items", "world")}
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
