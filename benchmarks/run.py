"""Benchmark runner: anygen against the same components called by hand, on the tiny pipeline (CPU).

    python -m benchmarks [--quick] [--out benchmarks/results.json] [--threads 1] [--repeats N]

Every comparison runs side by side in this one process (or in fresh subprocesses where the process itself is
measured), alternating A and B, after a warm-up call of each; medians and ratios are reported. Writes
``results.json`` (top-level keys ``machine``, ``run``, ``overhead``, ``memory``, ``batching``, ``chat_cache``,
``cold_start``; any other top-level key already in the file, e.g. ``serving``, is kept as it is) and prints
a table. See ``benchmarks/README.md`` for what each side does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    compare,
    machine_info,
    median,
    round_floats,
    set_threads,
    subprocess_env,
    timed,
)

SECTIONS = ("overhead", "batching", "chat_cache", "memory", "cold_start")
DEFAULT_OUT = REPO / "benchmarks" / "results.json"

PROMPT = "a dog running on a beach"
MEDIA_PROMPT = "describe the picture and the sound"
BATCH_PROMPTS = [
    "a dog running on a beach",
    "a red car in the rain",
    "two cats asleep on a sofa",
    "a lighthouse at night",
    "a bowl of ramen",
    "an old man playing chess in a park",
    "snowy mountains at sunrise",
    "a robot painting a portrait",
]

# Seconds of timed calls per side that an overhead case aims for (short calls get more repeats: the machine is shared
# and single calls jump between quiet and contended spells).
OVERHEAD_BUDGET_S = 6.0

# The generator settings of each case: the tiny spec's defaults, written out so the baseline uses the same.
GENERATOR_SETTINGS = {
    "image": {"steps": 2, "guidance_scale": 7.5},
    "video": {"steps": 2, "guidance_scale": 7.5, "num_frames": 8},
    "audio": {"steps": 2, "guidance_scale": 2.5, "audio_length_in_s": 1.0},
}


# ---- inputs ------------------------------------------------------------------------------------------------
def sample_image():
    """A 256x256 RGB test image (a gradient plus seeded noise): no file needed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]
    rgb = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.float32)
    rgb += rng.normal(0, 20, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def sample_audio():
    """Two seconds of a 440 Hz tone plus noise at 16 kHz."""
    import numpy as np

    from anygen.media import Audio

    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    wave = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=t.shape)
    return Audio(waveform=wave.astype(np.float32), sample_rate=16000)


def _new_pipe():
    from anygen import AnyToAnyPipeline

    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _media_diff(modality: str, a, b) -> float:
    """Largest absolute difference between anygen's item and the baseline's (uint8 levels / waveform units)."""
    import numpy as np

    if modality == "image":
        return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max())
    if modality == "video":
        frames = (np.clip(np.asarray(b), 0, 1) * 255).round()
        return float(np.abs(a.frames.astype(float) - frames).max())
    return float(np.abs(a.waveform - np.asarray(b).reshape(-1)).max())


def _outputs(out) -> dict[str, int]:
    return {"images": len(out.images), "videos": len(out.videos), "audios": len(out.audios)}


def _repeats_for(seconds: float, repeats: int, quick: bool, budget_s: float = OVERHEAD_BUDGET_S) -> int:
    """Repeats per side: ``repeats`` at least, more for short calls (about ``budget_s`` per side, at most 4x)."""
    if quick:
        return repeats
    return max(repeats, min(4 * repeats, int(budget_s / max(seconds, 1e-3))))


# ---- 1. overhead -------------------------------------------------------------------------------------------
def bench_overhead(pipe, repeats: int, quick: bool) -> dict[str, Any]:
    from benchmarks.baseline import HandWritten

    hand = HandWritten(pipe)
    max_new = int(pipe.spec.llm.defaults.get("max_new_tokens", 24))
    results: dict[str, Any] = {}
    modalities = ["image"] if quick else ["image", "video", "audio"]
    for modality in modalities:
        settings = GENERATOR_SETTINGS[modality]
        sizes = {k: v for k, v in settings.items() if k not in ("steps", "guidance_scale")}

        def a(modality=modality, settings=settings, sizes=sizes):
            return pipe(
                PROMPT,
                output_modalities=[modality],
                only_requested=True,
                seed=0,
                temperature=0,
                max_new_tokens=max_new,
                num_inference_steps=settings["steps"],
                guidance_scale=settings["guidance_scale"],
                **sizes,
            )

        first = a()  # builds the components; also tells how many text tokens the greedy answer has
        made = _outputs(first)
        expected = {"images": 0, "videos": 0, "audios": 0, f"{modality}s": 1}
        if made != expected:
            raise RuntimeError(f"text->{modality}: anygen made {made}, expected exactly one {modality}")
        span = len(first.token_ids) - len(hand.spans[modality])
        n_text = span  # text tokens before the (last) span

        def b(modality=modality, settings=settings, sizes=sizes, n_text=n_text):
            return hand.text_to(
                modality,
                PROMPT,
                n_text_tokens=n_text,
                seed=0,
                steps=settings["steps"],
                guidance_scale=settings["guidance_scale"],
                **sizes,
            )

        seconds, _, check = timed(b)
        entry = compare(a, b, _repeats_for(seconds, repeats, quick), warmup=0 if quick else 1)
        entry.update(
            same_tokens=check.token_ids == first.token_ids,
            new_tokens=len(first.token_ids),
            text_tokens=n_text,
            signal_tokens=len(hand.spans[modality]),
            max_abs_diff=_media_diff(modality, getattr(first, f"{modality}s")[0], check.media),
            settings={"max_new_tokens": max_new, **settings, "seed": 0, "greedy": True},
        )
        if not quick:
            from benchmarks.profile_call import breakdown

            entry["profile_ms_per_call"] = breakdown(pipe, modality, calls=10)["ms_per_call_under_cprofile"]
        results[f"text_to_{modality}"] = entry

    # Media in, text out.
    image, audio = sample_image(), sample_audio()

    def a_text():
        return pipe(
            MEDIA_PROMPT,
            images=[image],
            audios=[audio],
            only_requested=True,
            seed=0,
            temperature=0,
            max_new_tokens=max_new,
        )

    first = a_text()
    if any(_outputs(first).values()):
        raise RuntimeError(f"image+audio->text: anygen made media {_outputs(first)}")
    n_text = len(first.token_ids)

    def b_text():
        return hand.text_only(MEDIA_PROMPT, [("image", image), ("audio", audio)], n_text)

    seconds, _, check = timed(b_text)
    entry = compare(a_text, b_text, _repeats_for(seconds, repeats, quick), warmup=0 if quick else 1)
    entry.update(
        same_tokens=check.token_ids == first.token_ids,
        new_tokens=n_text,
        settings={
            "max_new_tokens": max_new,
            "seed": 0,
            "greedy": True,
            "inputs": "1 image 256x256, 2 s audio",
        },
    )
    results["image_audio_to_text"] = entry
    return results


# ---- 2. memory ---------------------------------------------------------------------------------------------
def _probe_pair(threads: int, scaled: bool) -> dict[str, dict[str, Any]]:
    """One lazy and one eager probe, as two fresh processes run side by side (peak RSS is per process, so
    running them together does not change it; it halves the wall time)."""
    procs = {}
    for mode in ("lazy", "eager"):
        cmd = [sys.executable, "-m", "benchmarks.memory_probe", "--mode", mode, "--threads", str(threads)]
        if scaled:
            cmd.append("--scaled")
        procs[mode] = (
            cmd,
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=subprocess_env(threads),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    out = {}
    for mode, (cmd, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
        out[mode] = json.loads(stdout.strip().splitlines()[-1])
    return out


def bench_memory(threads: int, repeats: int, quick: bool) -> dict[str, Any]:
    variants = [("tiny", False)] if quick else [("tiny", False), ("scaled", True)]
    out: dict[str, Any] = {}
    for name, scaled in variants:
        runs: dict[str, list[dict]] = {"lazy": [], "eager": []}
        for _ in range(repeats):
            for mode, result in _probe_pair(threads, scaled).items():
                runs[mode].append(result)
        section = {}
        for mode, rs in runs.items():
            section[mode] = {
                "peak_rss_mb": median([x["peak_rss_mb"] for x in rs]),
                "peak_rss_mb_runs": [round(x["peak_rss_mb"], 1) for x in rs],
                "rss_after_import_mb": median([x["rss_mb"]["imported"] for x in rs]),
                "rss_after_build_mb": median([x["rss_mb"]["built"] for x in rs]),
                "weights_mb": rs[0]["weights_mb"],
                "components": rs[0]["components"],
            }
        section["saved_mb"] = section["eager"]["peak_rss_mb"] - section["lazy"]["peak_rss_mb"]
        section["ratio"] = section["lazy"]["peak_rss_mb"] / section["eager"]["peak_rss_mb"]
        section["pipeline"] = runs["lazy"][0]["pipeline"]
        if name == "tiny":
            out.update(section)
        else:
            out[name] = section
    out["method"] = (
        "each run a fresh `python -m benchmarks.memory_probe --mode lazy|eager` process: import anygen, "
        "from_pretrained, (eager: load_all()), one text->image call; peak = the child's VmHWM (not ru_maxrss, which a vfork+exec child inherits from its parent); "
        "a lazy and an eager process side by side, median over runs"
    )
    return out


# ---- 3. batching -------------------------------------------------------------------------------------------
def bench_batching(pipe, repeats: int, quick: bool) -> dict[str, Any]:
    prompts = BATCH_PROMPTS[:2] if quick else BATCH_PROMPTS
    kw = dict(output_modalities=["image"], only_requested=True, seed=0, temperature=0)

    def batch():
        return pipe(prompts, **kw)

    def one_by_one():
        return [pipe(p, **kw) for p in prompts]

    together, alone = batch(), one_by_one()
    same = all(x.token_ids == y.token_ids for x, y in zip(together, alone, strict=True))
    entry = compare(batch, one_by_one, repeats, warmup=0 if quick else 1, names=("batch", "sequential"))
    n = len(prompts)
    return {
        "prompts": n,
        "batch_median_s": entry["batch_median_s"],
        "sequential_median_s": entry["sequential_median_s"],
        "batch_throughput_per_s": n / entry["batch_median_s"],
        "sequential_throughput_per_s": n / entry["sequential_median_s"],
        # throughput(batch) / throughput(one call per prompt)
        "ratio": entry["sequential_median_s"] / entry["batch_median_s"],
        "cpu_ratio": entry["sequential_cpu_median_s"] / entry["batch_cpu_median_s"],
        "same_tokens_as_one_by_one": same,
        "repeats": repeats,
        "batch_times_s": entry["batch_times_s"],
        "sequential_times_s": entry["sequential_times_s"],
        "case": f"text->image, {n} prompts, greedy, 2 steps, only_requested",
    }


# ---- 4. multi-turn feature cache ---------------------------------------------------------------------------
def bench_chat_cache(pipe, repeats: int, quick: bool) -> dict[str, Any]:
    image = sample_image()
    kw = dict(seed=0, temperature=0, only_requested=True)
    chat = pipe.chat(**kw)
    first_times = []

    def first_turn():
        chat.clear()
        return chat.send("what is in this picture?", images=[image])

    def second_turn(cached: bool):
        if not cached:
            chat.feature_cache.clear()  # as if there were no cache: both images are encoded again
        out = chat.send("and what colour is it here?", images=[image])
        chat.undo()
        return out

    for _ in range(1 if quick else 2):
        made = first_turn()  # warm-up (builds the encoder)
    second = second_turn(True)
    if any(_outputs(made).values()) or any(_outputs(second).values()):
        raise RuntimeError("chat: the greedy answers made media; pick other prompts")
    for _ in range(repeats):
        w, _c, _ = timed(first_turn)
        first_times.append(w)
    entry = compare(
        lambda: second_turn(True),
        lambda: second_turn(False),
        repeats,
        warmup=0 if quick else 1,
        names=("cached", "uncached"),
    )
    enc, enc2 = [], []
    for _ in range(repeats):
        enc.append(timed(lambda: pipe.encode_media("image", [image]))[0])
        enc2.append(timed(lambda: pipe.encode_media("image", [image, image]))[0])
    return {
        "first_turn_median_s": median(first_times),
        "second_turn_cached_median_s": entry["cached_median_s"],
        "second_turn_uncached_median_s": entry["uncached_median_s"],
        "saved_s": entry["uncached_median_s"] - entry["cached_median_s"],
        "ratio": entry["cached_median_s"] / entry["uncached_median_s"],
        "saved_cpu_s": entry["uncached_cpu_median_s"] - entry["cached_cpu_median_s"],
        "encoder_alone_median_s": median(enc),
        "encoder_alone_two_images_median_s": median(enc2),
        "new_tokens": {"first_turn": len(made.token_ids), "second_turn": len(second.token_ids)},
        "repeats": repeats,
        "case": (
            "turn 1: one 256x256 image + text; turn 2: the same image again + text (history holds turn 1). "
            "cached: features reused (0 images encoded); uncached: cache cleared first (2 images encoded, one "
            "batch). encoder_alone: encoder + input projector on one image (and on the 2-image batch)"
        ),
    }


# ---- 5. cold start -----------------------------------------------------------------------------------------
def _run_timed(cmd: list[str], threads: int) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=REPO, env=subprocess_env(threads), capture_output=True, text=True, timeout=600
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, proc


def importtime_top(statement: str, threads: int, top: int = 12) -> list[dict[str, Any]]:
    """``python -X importtime``: the outermost imports (depth 0 and 1) by cumulative time."""
    _, proc = _run_timed([sys.executable, "-X", "importtime", "-c", statement], threads)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(1)), len(m.group(3)) // 2, m.group(4)))
    outer = sorted((r for r in rows if r[2] <= 1), reverse=True)[:top]
    return [
        {"module": name, "depth": depth, "cumulative_ms": cum / 1000, "self_ms": own / 1000}
        for cum, own, depth, name in outer
    ]


def bench_cold_start(threads: int, repeats: int, quick: bool) -> dict[str, Any]:
    py = sys.executable
    cases = {
        "python_startup": [py, "-c", "pass"],
        "import_anygen": [py, "-c", "import anygen"],
        "import_pipeline": [py, "-c", "from anygen import AnyToAnyPipeline"],
        "cli_pipelines": [py, "-m", "anygen", "pipelines"],  # a command that needs no model
    }
    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats):
        for name in cases if r % 2 == 0 else list(cases)[::-1]:
            times[name].append(_run_timed(cases[name], threads)[0])
    for name, ts in times.items():
        out[name] = {"median_s": median(ts), "times_s": ts, "command": " ".join(cases[name][1:])}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [py, "-m", "anygen", "generate", PROMPT, "--seed", "0", "--out", tmp]
        gen_times, files = [], []
        for _ in range(repeats):
            elapsed, proc = _run_timed(cmd, threads)
            gen_times.append(elapsed)
            files = sorted(Path(p).name for p in proc.stdout.split())
    out["generate_cli"] = {
        "median_s": median(gen_times),
        "times_s": gen_times,
        "command": f'anygen generate "{PROMPT}" --seed 0 --out <tmp>  (python -m anygen, tiny default)',
        "wrote": files,
    }
    if not quick:
        out["importtime_top"] = importtime_top("from anygen import AnyToAnyPipeline", threads)
        out["importtime_top_cli_pipelines"] = importtime_top(
            "import sys; sys.argv = ['anygen', 'pipelines']; from anygen.cli import main; main()", threads
        )
    out["repeats"] = repeats
    return out


# ---- output ------------------------------------------------------------------------------------------------
def _f(x: float, unit: str = "s") -> str:
    if unit == "s":
        return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"
    return f"{x:.1f} MB"


def table(results: dict[str, Any]) -> str:
    rows = [("benchmark", "A", "B", "A/B")]
    for case, e in results.get("overhead", {}).items():
        rows.append(
            (
                f"overhead {case} (anygen vs by hand)",
                _f(e["anygen_median_s"]),
                _f(e["baseline_median_s"]),
                f"{e['ratio']:.3f} (paired {e['paired_ratio']:.3f}, min {e['min_ratio']:.3f})",
            )
        )
    mem = results.get("memory")
    if mem:
        rows.append(
            (
                "peak RSS text->image, tiny (lazy vs eager)",
                _f(mem["lazy"]["peak_rss_mb"], "mb"),
                _f(mem["eager"]["peak_rss_mb"], "mb"),
                f"{mem['ratio']:.3f}",
            )
        )
        if "scaled" in mem:
            s = mem["scaled"]
            rows.append(
                (
                    "peak RSS text->image, scaled (lazy vs eager)",
                    _f(s["lazy"]["peak_rss_mb"], "mb"),
                    _f(s["eager"]["peak_rss_mb"], "mb"),
                    f"{s['ratio']:.3f}",
                )
            )
    bat = results.get("batching")
    if bat:
        rows.append(
            (
                f"batching {bat['prompts']} prompts (1 call vs {bat['prompts']} calls)",
                _f(bat["batch_median_s"]),
                _f(bat["sequential_median_s"]),
                f"throughput x{bat['ratio']:.2f}",
            )
        )
    chat = results.get("chat_cache")
    if chat:
        rows.append(
            (
                "chat turn 2 (feature cache vs none)",
                _f(chat["second_turn_cached_median_s"]),
                _f(chat["second_turn_uncached_median_s"]),
                f"{chat['ratio']:.3f}",
            )
        )
        rows.append(
            (
                "chat turn 1 / encoder alone (1 image)",
                _f(chat["first_turn_median_s"]),
                _f(chat["encoder_alone_median_s"]),
                "",
            )
        )
    cold = results.get("cold_start")
    if cold:
        rows.append(
            (
                "cold start: anygen generate / anygen pipelines",
                _f(cold["generate_cli"]["median_s"]),
                _f(cold["cli_pipelines"]["median_s"]),
                "whole processes",
            )
        )
        rows.append(
            (
                "import anygen / from anygen import AnyToAnyPipeline",
                _f(cold["import_anygen"]["median_s"]),
                _f(cold["import_pipeline"]["median_s"]),
                f"python alone {_f(cold['python_startup']['median_s'])}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write ``results`` to ``path``, keeping top-level keys of the existing file that this run does not own."""
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            existing = {}
    merged = {**results, **{k: v for k, v in existing.items() if k not in results}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer cases (for CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results file (default {DEFAULT_OUT})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in subprocesses")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default 15)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    set_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 15)
    started = time.time()
    results: dict[str, Any] = {
        "machine": machine_info(args.threads),
        "run": {
            "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
            "quick": args.quick,
            "repeats": repeats,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        },
    }
    section_s = results["run"]["section_s"] = {}
    pipe = None
    for section in SECTIONS:
        if section not in args.only:
            continue
        t0 = time.perf_counter()
        if section in ("overhead", "batching", "chat_cache") and pipe is None:
            pipe = _new_pipe()
        if section == "overhead":
            results["overhead"] = bench_overhead(pipe, repeats, args.quick)
        elif section == "batching":
            results["batching"] = bench_batching(pipe, max(1, repeats // 3), args.quick)
        elif section == "chat_cache":
            results["chat_cache"] = bench_chat_cache(pipe, repeats * 3, args.quick)  # short calls, small gap
        elif section == "memory":
            results["memory"] = bench_memory(args.threads, 1 if args.quick else 3, args.quick)
        elif section == "cold_start":
            results["cold_start"] = bench_cold_start(args.threads, 1 if args.quick else 5, args.quick)
        section_s[section] = time.perf_counter() - t0
    results["run"]["duration_s"] = time.time() - started
    results["run"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = round_floats(results)
    write_results(args.out, results)
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
