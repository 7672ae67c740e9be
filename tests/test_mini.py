"""The shipped `mini` pipeline: it loads offline from the package, is small, decides what to make, and a reduced
world evaluation (the first prompts of every task, no output_modalities) holds the accuracies the full run
measured (benchmarks/results.json, key "world")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from anygen import AnyToAnyPipeline
from anygen.eval.world import run_world_eval
from anygen.spec import bundled_weights_dir, default_pipeline, load_spec

REPO = Path(__file__).resolve().parents[1]
MINI = bundled_weights_dir() / "mini"
LIMIT = 4  # prompts per task: 36 calls

# (task, attribute) -> the least accuracy the reduced run must reach: the floors the shipped model was held to.
FLOORS = {
    ("text->image", "colour"): 0.95,
    ("text->image", "shape"): 0.9,
    ("text->image", "position"): 0.9,
    ("text->video", "colour"): 0.9,
    ("text->video", "direction"): 0.9,
    ("text->audio", "pitch"): 0.95,
    ("text->audio", "pattern"): 0.9,
    ("image->text", "colour"): 0.9,
    ("image->text", "shape"): 0.9,
    ("image->text", "position"): 0.9,
    ("video->text", "colour"): 0.9,
    ("video->text", "shape"): 0.9,
    ("video->text", "direction"): 0.9,
    ("audio->text", "pitch"): 0.9,
    ("audio->text", "pattern"): 0.9,
    ("image->video", "colour"): 0.85,
    ("video->image", "colour"): 0.85,
    ("text->image", "output_kind"): 0.98,
    ("text->video", "output_kind"): 0.98,
    ("text->audio", "output_kind"): 0.98,
    ("image->text", "output_kind"): 0.98,
    ("video->text", "output_kind"): 0.98,
    ("audio->text", "output_kind"): 0.98,
    ("image->video", "output_kind"): 0.98,
    ("video->image", "output_kind"): 0.98,
    ("text->image+audio", "output_kind"): 0.98,
}


@pytest.fixture(scope="module")
def mini():
    pipe = AnyToAnyPipeline.from_pretrained("mini")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_mini_is_bundled_small_safetensors_and_loads_in_float32(mini):
    assert load_spec("mini").name == "mini"
    files = [p for p in MINI.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30_000_000
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    with safe_open(str(MINI / "llm" / "model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16  # stored in half the bytes...
    mini.load_all()
    assert mini.llm.dtype == torch.float32  # ...used in float32
    assert mini.generator("video").pipeline.unet.dtype == torch.float32


def test_mini_decides_what_to_make(mini):
    out = mini("draw a red circle and play a low steady tone", seed=0)
    assert len(out.images) == 1 and len(out.audios) == 1 and not out.videos, out.text
    assert "red circle" in out.text.lower() and "low steady tone" in out.text.lower()
    out = mini("<audio> what do you hear?", audios=[_tone("high", "beeping")], seed=0)
    assert not (out.images or out.videos or out.audios) and "high beeping" in out.text.lower()


def _tone(pitch, pattern):
    from anygen.world.render import render_audio

    return render_audio(pitch, pattern)


def test_mini_is_the_default_and_make_run_prompt_makes_all_three(tmp_path, monkeypatch):
    from anygen.cli import main as cli_main
    from anygen.eval.judges import judge_audio, judge_image, judge_video
    from anygen.media import Audio, Video, load_image

    prompt = re.search(r'anygen generate "([^"]+)"', (REPO / "Makefile").read_text()).group(1)
    monkeypatch.delenv("ANYGEN_PIPELINE", raising=False)
    assert default_pipeline() == "mini"
    assert cli_main(["generate", prompt, "--seed", "0", "--out", str(tmp_path)]) == 0
    image = judge_image(load_image(str(tmp_path / "image_0.png")))
    video = judge_video(Video.load(str(tmp_path / "video_0.mp4")))
    audio = judge_audio(Audio.load(str(tmp_path / "audio_0.wav")))
    assert (image["colour"], image["shape"]) == ("red", "circle"), image
    assert (video["colour"], video["direction"]) == ("red", "right"), video
    assert (audio["pitch"], audio["pattern"]) == ("low", "steady"), audio


def test_mini_holds_its_floors_on_a_reduced_world_eval(mini):
    report = run_world_eval(mini, limit=LIMIT, seed=0, progress=False)
    failures = []
    for (task, attribute), floor in FLOORS.items():
        entry = report["tasks"][task]
        got = entry["output_kind"] if attribute == "output_kind" else entry["attributes"][attribute]
        if got < floor:
            failures.append(f"{task} {attribute}: {got:.2f} < {floor}")
    assert not failures, failures


def test_the_recorded_world_report_is_the_full_run_of_the_shipped_model():
    world = json.loads((REPO / "benchmarks" / "results.json").read_text())["world"]
    from anygen.eval.world import WorldSuite

    assert world["pipeline"] == "mini" and world["limit"] is None and world["n"] == len(WorldSuite().items())
