"""The benchmark runner (``python -m benchmarks --quick``) and the GPU script's CPU dry run do not rot.

Both run as subprocesses, started together (they take ~30-50 s on a shared 2-core machine).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    results = tmp / "results.json"
    results.write_text(json.dumps({"serving": {"kept": True}}))  # another benchmark's key: must survive
    gpu = tmp / "gpu.json"
    procs = {
        "runner": (
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks", "--quick", "--out", str(results)],
                cwd=REPO,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            results,
        ),
        "gpu": (
            subprocess.Popen(
                [sys.executable, "benchmarks/gpu.py", "--dry-run", "--out", str(gpu)],
                cwd=REPO,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            gpu,
        ),
    }
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()


def _result(runs, name):
    proc, path = runs[name]
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{stdout[-2000:]}\n{stderr[-4000:]}"
    return stdout, json.loads(path.read_text())


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_runner_writes_every_figure(runs):
    stdout, data = _result(runs, "runner")
    assert "overhead text_to_image" in stdout  # the table
    assert data["serving"] == {"kept": True}
    assert {"machine", "run", "overhead", "memory", "batching", "chat_cache", "cold_start"} <= set(data)

    machine = data["machine"]
    assert machine["torch_threads"] == 1 and machine["cpu_model"] and machine["torch"]
    assert len(machine["load_average_at_start"]) == 3
    assert data["run"]["quick"] is True and data["run"]["repeats"] == 1

    for case in ("text_to_image", "image_audio_to_text"):
        entry = data["overhead"][case]
        assert _positive(entry["anygen_median_s"]) and _positive(entry["baseline_median_s"])
        assert _positive(entry["ratio"])
        assert entry["same_tokens"] is True, f"{case}: the baseline did not do the same work"
    assert data["overhead"]["text_to_image"]["max_abs_diff"] <= 2  # uint8 levels: the same image

    memory = data["memory"]
    lazy, eager = memory["lazy"], memory["eager"]
    assert _positive(lazy["peak_rss_mb"]) and _positive(eager["peak_rss_mb"])
    assert "generator:video" not in lazy["components"] and "generator:video" in eager["components"]
    assert lazy["weights_mb"] < eager["weights_mb"]
    assert lazy["peak_rss_mb"] < eager["peak_rss_mb"]

    batching = data["batching"]
    assert batching["prompts"] == 2 and _positive(batching["ratio"])
    assert batching["same_tokens_as_one_by_one"] is True

    chat = data["chat_cache"]
    for key in ("first_turn_median_s", "second_turn_cached_median_s", "second_turn_uncached_median_s"):
        assert _positive(chat[key])
    assert _positive(chat["encoder_alone_median_s"])

    cold = data["cold_start"]
    assert _positive(cold["generate_cli"]["median_s"])
    assert _positive(cold["import_anygen"]["median_s"])
    assert cold["import_anygen"]["median_s"] < cold["import_pipeline"]["median_s"]  # heavy imports are lazy


def test_gpu_script_dry_run(runs):
    stdout, data = _result(runs, "gpu")
    assert data["run"]["dry_run"] is True and data["run"]["device"] == "cpu"
    assert data["params_millions"]["llm"] > 0
    for modality in ("image", "video", "audio"):
        entry = data[f"text_to_{modality}"]
        stages = entry["stages_s"]
        for stage in (
            "llm_prefill",
            "llm_decode",
            "output_projector",
            "denoising_unet",
            "vae_decode",
            "total",
        ):
            assert _positive(stages[stage]), (modality, stage)
        assert stages["denoising_unet_calls"] >= 2
        assert entry["overhead"]["same_tokens"] is True
        assert _positive(entry["overhead"]["ratio"])
        assert f"text_to_{modality}" in stdout
    assert _positive(data["text_to_audio"]["stages_s"]["vocoder"])


def test_mini_speed_benchmark_and_figure_script_run(tmp_path):
    """benchmarks/mini.py (seconds per call against a baseline, plus a world report) and docs/make_mini_figure.py
    run on any world-shaped pipeline; here tiny against tiny, so only the plumbing is checked."""
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"serving": {"kept": True}}))
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"pipeline": "x", "n": 2, "tasks": {}, "items": [1, 2], "world": {}}))
    bench = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.mini",
            "--pipeline",
            "tiny",
            "--baseline",
            "tiny",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
            "--report",
            str(report),
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bench.returncode == 0, bench.stderr
    results = json.loads(out.read_text())
    assert results["serving"] == {"kept": True}
    cases = results["mini_speed"]["cases"]
    assert set(cases) == {"text_to_image", "text_to_video", "text_to_audio", "image_to_text"}
    assert all(c["mini_s"] > 0 and c["tiny_s"] > 0 and c["ratio"] > 0 for c in cases.values())
    assert results["world"] == {"pipeline": "x", "n": 2, "tasks": {}}  # the per-prompt rows are left out
    figure = tmp_path / "mini.png"
    drawn = subprocess.run(
        [sys.executable, "docs/make_mini_figure.py", "--pipeline", "tiny", "--out", str(figure)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert drawn.returncode == 0, drawn.stderr
    from PIL import Image

    assert Image.open(figure).size == (8 * (32 * 4 + 4) + 8, 3 * (32 * 4 + 36))


def test_presets_memory_benchmark_measures_what_is_here_and_lists_what_is_not(tmp_path):
    out = tmp_path / "presets.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.presets",
            "--device",
            "cpu",
            "--steps",
            "1",
            "--only",
            "tiny",
            "nextgpt-7b-v1.5",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    presets = json.loads(out.read_text())["presets_memory"]["presets"]
    tiny = presets["tiny"]
    for modality in ("image", "video", "audio"):
        assert tiny[modality]["made"] == 1
        assert tiny[modality]["peak_rss_gb"] >= tiny["baseline"]["peak_rss_gb"] > 0
    assert (
        "generator:image" in tiny["audio"]["loaded_after"]
    )  # tiny keeps its generators (no unload_after_use)
    newer = presets["nextgpt-7b-v1.5"]
    assert newer["skipped"] == "weights missing" and "${weights}/vicuna-7b-v1.5" in newer["missing"]
    assert "tiny" in done.stdout and "skipped: weights missing" in done.stdout
