"""The shapes-and-tones world: config and hold-out, renderer and judges (in agreement on every combination),
language, and make_world's files as anygen's training readers read them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anygen.eval.judges import judge_audio, judge_image, judge_video
from anygen.media import Audio, Video
from anygen.world import language as L
from anygen.world.config import DEFAULT_WORLD, WorldConfig, WorldError, is_held_out
from anygen.world.datasets import STAGE3_FORMS, make_world
from anygen.world.render import render_audio, render_image, render_video

W = DEFAULT_WORLD
SMALL = dict(images_per_combo=2, videos_per_combo=1, audios_per_combo=2, conversations=48, progress=False)


# -- config ----------------------------------------------------------------------------------------------
def test_default_world_and_its_holdout():
    assert W.colours["red"] == (220, 30, 30) and W.colours["purple"] == (150, 40, 190)
    assert W.pitches == {"low": 262.0, "mid": 523.0, "high": 1047.0}
    sizes = (W.image_size, W.video_size, W.num_frames, W.sample_rate, W.audio_seconds)
    assert sizes == (32, 32, 8, 16000, 1.0)
    combos = W.all_combinations()
    assert len(combos) == 45 and len(W.holdout) == 9  # a fixed 20%
    seen = W.seen_combinations()
    assert len(seen) == 36 and not set(seen) & set(W.holdout)
    # Every colour, shape and position, and every pair of them, still appears in training.
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert {(t[i], t[j]) for t in seen} == {(t[i], t[j]) for t in combos}
    assert is_held_out("red", "circle", "left") and W.is_held_out("red", "circle", "left")
    assert not is_held_out("red", "circle", "center")


def test_config_round_trips_and_errors_name_file_and_field(tmp_path):
    assert WorldConfig.from_dict(W.to_dict()) == W
    path = tmp_path / "world.yaml"
    W.to_yaml(path)
    assert WorldConfig.from_yaml(path) == W
    assert WorldConfig.from_dict({"image_size": 64}).image_size == 64
    cases = {
        "holdout: [[pink, circle, left]]\n": "holdout.0: unknown colour 'pink'",
        "holdout: [[red, hexagon, left]]\n": "holdout.0: unknown shape 'hexagon'",
        "image_size: 3\n": "image_size",
        "sizes: 3\n": "sizes: unknown field",
        "colours: {red: [300, 0, 0]}\n": "colours",
        f"holdout: {json.dumps([['red', s, p] for s in W.shapes for p in W.positions])}\n": "colour 'red'",
        "[1, 2]\n": "expected a mapping",
        "colours: [\n": "not valid YAML",
    }
    for text, needle in cases.items():
        path.write_text(text)
        with pytest.raises(WorldError) as err:
            WorldConfig.from_yaml(path)
        assert str(path) in str(err.value) and needle in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(WorldError, match="does not exist"):
        WorldConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(Exception):  # noqa: B017 (frozen: pydantic's ValidationError)
        W.image_size = 64


# -- renderer and judges ---------------------------------------------------------------------------------
def test_image_renderer_and_judge_agree_on_every_combination():
    for seed in (None, 0, 1, 2):
        rng = None if seed is None else np.random.default_rng(seed)
        for c, s, p in W.all_combinations():
            image = render_image(c, s, p, rng=rng)
            assert image.mode == "RGB" and image.size == (32, 32)
            assert judge_image(image) == {"colour": c, "shape": s, "position": p}, (seed, c, s, p)


def test_video_renderer_and_judge_agree_on_every_combination():
    for seed in (None, 0, 1):
        rng = None if seed is None else np.random.default_rng(seed)
        for c in W.colours:
            for s in W.shapes:
                for d in W.directions:
                    video = render_video(c, s, d, rng=rng)
                    assert isinstance(video, Video) and video.frames.shape == (8, 32, 32, 3)
                    assert video.frames.dtype == np.uint8
                    assert judge_video(video) == {"colour": c, "shape": s, "direction": d}, (seed, c, s, d)


def test_audio_renderer_and_judge_agree_on_every_combination():
    for seed in (None, 0, 1, 2, 3):
        rng = None if seed is None else np.random.default_rng(seed)
        for p in W.pitches:
            for q in W.patterns:
                audio = render_audio(p, q, rng=rng)
                assert isinstance(audio, Audio) and audio.sample_rate == 16000 and audio.num_samples == 16000
                assert audio.waveform.dtype == np.float32 and 0.3 < np.abs(audio.waveform).max() < 0.65
                assert judge_audio(audio) == {"pitch": p, "pattern": q}, (seed, p, q)


def test_renderer_details():
    canonical = np.asarray(render_image("blue", "square", "center"))
    assert (canonical[0] == 255).all() and tuple(canonical[16, 16]) == (30, 60, 220)
    side = (canonical != 255).any(axis=-1).sum(axis=0).max()
    assert abs(side - 32 / 3) <= 1
    # Triangles point up: the top row of the shape is narrower than the bottom row.
    tri = (np.asarray(render_image("red", "triangle", "center")) != 255).any(axis=-1)
    rows = tri.sum(axis=1)[tri.any(axis=1)]
    assert rows[0] < rows[-1]
    # position=None: random with an rng, center without one.
    assert judge_image(render_image("red", "circle", None))["position"] == "center"
    anywhere = [render_image("red", "circle", None, rng=np.random.default_rng(i)) for i in range(20)]
    assert {judge_image(image)["position"] for image in anywhere} == set(W.positions)
    # Up means towards the top of the frame.
    ys = [np.nonzero((f != 255).any(axis=-1))[0].mean() for f in render_video("red", "square", "up").frames]
    assert ys[0] > ys[-1]
    # Beeping: 4 Hz, on 125 ms / off 125 ms.
    beeps = np.abs(render_audio("mid", "beeping").waveform)
    assert beeps[1000:1800].max() > 0.4 and beeps[2200:3800].max() == 0
    # A bigger world draws bigger media.
    big = WorldConfig(image_size=64, video_size=48, num_frames=12)
    assert render_image("red", "circle", "left", config=big).size == (64, 64)
    assert render_video("red", "circle", "up", config=big).frames.shape == (12, 48, 48, 3)
    image = render_image("green", "triangle", "right", config=big, rng=np.random.default_rng(0))
    assert judge_image(image) == {"colour": "green", "shape": "triangle", "position": "right"}


def test_judges_ignore_noise_and_say_none_for_nothing():
    rng = np.random.default_rng(0)
    for c, s, p in W.all_combinations():
        image = np.asarray(render_image(c, s, p, rng=rng)).astype(float)
        image += rng.normal(0, 8, image.shape)  # mild noise ...
        specks = rng.random(image.shape[:2]) < 0.003  # ... and a few dark specks
        image[specks] = 0
        judged = judge_image(np.clip(image, 0, 255).astype(np.uint8))
        assert judged == {"colour": c, "shape": s, "position": p}
    blank = Image.new("RGB", (32, 32), (255, 255, 255))
    assert judge_image(blank) == {"colour": None, "shape": None, "position": None}
    assert judge_video(np.full((4, 32, 32, 3), 255, np.uint8))["direction"] is None
    assert judge_audio(Audio(np.zeros(16000, np.float32), 16000)) == {"pitch": None, "pattern": None}
    # Other sample rates and a little noise.
    tone = render_audio("high", "steady", rng=rng).resample(22050)
    noisy = Audio(tone.waveform + rng.normal(0, 0.02, tone.num_samples).astype(np.float32), 22050)
    assert judge_audio(noisy) == {"pitch": "high", "pattern": "steady"}


# -- language --------------------------------------------------------------------------------------------
def test_captions_prompts_and_answers():
    assert L.image_caption("red", "circle", "left") == "A red circle on the left."
    assert L.image_caption("blue", "square", "center") == "A blue square in the center."
    assert L.image_caption("yellow", "triangle", "right") == "A yellow triangle on the right."
    assert L.image_caption("blue", "square") == "A blue square."
    assert L.video_caption("green", "triangle", "up") == "A green triangle moving up."
    assert L.audio_caption("high", "beeping") == "A high beeping tone."
    assert L.audio_caption("low", "steady") == "A low steady tone."
    assert L.image_prompt("red", "circle", "left") == "draw a red circle on the left"
    assert L.image_prompt("blue", "square") == "draw a blue square"
    assert L.video_prompt("green", "triangle", "up") == "show a video of a green triangle moving up"
    assert L.audio_prompt("high", "beeping") == "play a high beeping tone"
    assert L.describe_prompt("image") == "<image> what is in this image?"
    assert L.describe_prompt("video") == "<video> what happens in this video?"
    assert L.describe_prompt("audio") == "<audio> what do you hear?"
    assert L.image_to_video_prompt("right") == "<image> animate this shape moving right"
    assert L.video_to_image_prompt() == "<video> draw the shape from this video"
    assert (
        L.joint_prompt(L.image_prompt("red", "circle"), L.audio_prompt("low", "steady"))
        == "draw a red circle and play a low steady tone"
    )
    assert (
        L.answer((L.image_caption("red", "circle"), "image"), (L.audio_caption("low", "steady"), "audio"))
        == "A red circle.<image> A low steady tone.<audio>"
    )
    assert L.answer((L.audio_caption("mid", "steady"), None)) == "A mid steady tone."
    for form, templates in L.PROMPTS.items():  # paraphrases: a few each, all different
        assert len(templates) >= 2 and len(set(templates)) == len(templates), form
    assert L.image_prompt("red", "circle", "left", 1) != L.image_prompt("red", "circle", "left", 0)


def test_parse_attributes():
    assert L.parse_attributes("A red circle on the left.<image> A low steady tone.<audio>") == {
        "colour": "red",
        "shape": "circle",
        "position": "left",
        "pitch": "low",
        "pattern": "steady",
    }
    assert L.parse_attributes("A green triangle moving left.") == {
        "colour": "green",
        "shape": "triangle",
        "direction": "left",
    }
    assert L.parse_attributes("a purple square in the centre") == {
        "colour": "purple",
        "shape": "square",
        "position": "center",
    }
    assert L.parse_attributes("A high beeping tone.") == {"pitch": "high", "pattern": "beeping"}
    assert L.parse_attributes("yellowish lowland") == {}
    assert L.parse_attributes("") == {}
    for c, s, p in W.all_combinations():  # the inverse of every caption
        assert L.parse_attributes(L.image_caption(c, s, p)) == {"colour": c, "shape": s, "position": p}


# -- make_world ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world") / "w", **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_world_writes_what_the_training_readers_read(world):
    from anygen.train.data import load_sets, read_data_spec

    root = world.root
    counts = {k: v for k, v in world.counts.items() if k != "text_pairs"}
    assert counts == {"images": 72, "videos": 60, "audios": 12, "conversations": 48}
    assert len(list((root / "images").glob("*.png"))) == 72
    assert len(list((root / "videos").glob("*.mp4"))) == 60
    assert len(list((root / "audios").glob("*.wav"))) == 12
    assert WorldConfig.from_yaml(world.config) == W
    groups = {}
    for stage, path in ((1, world.data_stage1), (2, world.data_stage2), (3, world.data_stage3)):
        read_data_spec(path)
        sets = load_sets(path, stage=stage, check_targets=True)
        assert all(s.examples and not s.skipped for s in sets)
        groups[stage] = {e.group for s in sets for e in s.examples}
    assert groups[1] == {"image->text", "video->text", "audio->text"}
    assert groups[2] == {"text->image", "text->video", "text->audio"}
    assert groups[3] == {f.split(" ")[0] for f in STAGE3_FORMS}
    # Stage 2: a request in words, answered with the caption and the signal tag.
    generation = {s.name: s for s in load_sets(world.data_stage2, stage=2)}
    example = generation["image_generation"].examples[0]
    assert example.turns[0].text.startswith(("draw", "make", "show", "paint"))
    assert example.turns[1].text == example.targets[0].caption + "<image>"
    assert example.targets[0].media.is_file()
    # Media load, and show what their captions say.
    pairs = json.loads((root / "video_pairs.json").read_text())
    entry = pairs[0]
    video = Video.load(root / "videos" / entry["video_name"])
    attrs = judge_video(video)
    assert L.video_caption(attrs["colour"], attrs["shape"], attrs["direction"]) == entry["caption"]
    for modality, path in world.generators.items():
        rows = json.loads(path.read_text())
        assert rows and all((root / r["media"]).is_file() and r["caption"] for r in rows), modality
    corpus = json.loads(world.text_corpus.read_text())
    assert corpus and all(set(r) == {"user", "assistant"} for r in corpus)
    users = {r["user"] for r in corpus}
    assert any("<image>" in u for u in users) and any(" and " in u for u in users)
    assert any(r["assistant"].endswith("<video>") for r in corpus)


def test_no_held_out_combination_in_any_image_or_caption(world):
    root = world.root
    for c, s, p in W.holdout:
        assert not list((root / "images").glob(f"{c}_{s}_{p}_*")), (c, s, p)
    for path in root.glob("*.json"):
        text = path.read_text().lower()
        for c, s, p in W.holdout:
            assert f"{c} {s} {L.WHERE[p]}" not in text, (path.name, c, s, p)
            assert f"{c}_{s}_{p}_" not in text, (path.name, c, s, p)
    for image in sorted((root / "images").glob("*.png")):  # what the images show, not only their names
        assert not is_held_out(*judge_image(Image.open(image)).values()), image.name


def test_make_world_is_reproducible(world, tmp_path):
    again = make_world(tmp_path / "again", **SMALL)
    first, second = _files(world.root), _files(again.root)
    assert first.keys() == second.keys()
    # MP4 bytes are left out: anygen.media's H.264 writer (libx264 + swscale threads) does not yet give the same
    # bytes on every run; their frames are compared for shape only.
    same = [k for k in first if not k.endswith(".mp4")]
    assert [k for k in same if first[k] != second[k]] == []
    other = _files(make_world(tmp_path / "other", **{**SMALL, "seed": 1}).root)
    assert other["image_pairs.json"] == first["image_pairs.json"]  # the same files ...
    pngs = [k for k in first if k.endswith(".png")]
    assert any(other[k] != first[k] for k in pngs)  # ... drawn differently
    assert b"seed: 1" in other["world.yaml"]


def test_world_make_command(tmp_path, capsys):
    from anygen.cli import main

    out = tmp_path / "w"
    argv = ["world", "make", "--out", str(out), "--images-per-combo", "1", "--videos-per-combo", "1"]
    argv += ["--audios-per-combo", "1", "--conversations", "24", "--seed", "3", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "data-stage3.yaml" in printed and (out / "data-stage1.yaml").is_file()
    assert WorldConfig.from_yaml(out / "world.yaml").seed == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("shapes: [circle, hexagon]\n")
    assert main(["world", "make", "--out", str(tmp_path / "x"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "shapes" in err[0]
    assert not (tmp_path / "x").exists()


def test_make_world_with_another_config(tmp_path):
    config = WorldConfig(image_size=48, holdout=[("red", "circle", "left")], seed=5)
    files = make_world(tmp_path / "w", config, **SMALL)
    assert files.counts["images"] == 44 * 2
    assert Image.open(next((files.root / "images").glob("*.png"))).size == (48, 48)
    assert WorldConfig.from_yaml(files.config) == config
    text = "".join(p.read_text() for p in files.root.glob("*.json")).lower()
    assert "red circle on the left" not in text and "red circle in the center" in text


def test_stage3_covers_every_task_form(world):
    forms = ("image_to_video", "video_to_image", "text_to_image_audio")
    text = {f: (world.root / f"stage3_{f}.json").read_text() for f in forms}
    i2v = json.loads(text["image_to_video"])[0]
    assert i2v["conversations"][0]["value"].startswith("<image>") and i2v["output_video"]
    assert i2v["conversations"][1]["value"].endswith("<video>")
    v2i = json.loads(text["video_to_image"])[0]
    assert v2i["input_video"] and re.fullmatch(r"An? \w+ \w+\.<image>", v2i["conversations"][1]["value"])
    two = json.loads(text["text_to_image_audio"])[0]
    assert " and " in two["conversations"][0]["value"]
    assert re.search(r"<image> .*<audio>$", two["conversations"][1]["value"])
