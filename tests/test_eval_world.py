"""The world suite (``anygen eval --suite world``): report structure on the tiny pipeline, a perfect model scores
100% and falls to chance when the conditioning is shuffled, and the command's bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anygen.eval.world import (
    COMBINATION_REPEATS,
    TASKS,
    WorldSuite,
    format_report,
    judge_image,
    judge_video,
    run_world_eval,
)
from anygen.output import AnyToAnyOutput
from anygen.world import language as L
from anygen.world.config import DEFAULT_WORLD
from anygen.world.render import render_audio, render_image, render_video


class Oracle:
    """A test double for the MODEL (not for the evaluator): it answers every world prompt perfectly, making the
    media with the world's renderer; media inputs are read with the world's judges (which test_world.py
    checks against the renderer on every combination)."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, prompt, images=None, audios=None, videos=None, *, seed=0, **options):
        assert "output_modalities" not in options  # the suite lets the model decide what to make
        self.calls.append(prompt)
        rng = np.random.default_rng(seed)
        out = AnyToAnyOutput(text="")
        parts = []
        if images and "this shape moving" in prompt:  # image -> video
            seen = judge_image(images[0])
            direction = L.parse_attributes(prompt)["direction"]
            out.videos.append(render_video(seen["colour"], seen["shape"], direction, rng=rng))
            parts.append((L.video_caption(seen["colour"], seen["shape"], direction), "video"))
        elif videos and "draw" in prompt or videos and "picture" in prompt:  # video -> image
            seen = judge_video(videos[0])
            out.images.append(render_image(seen["colour"], seen["shape"], None, rng=rng))
            parts.append((L.image_caption(seen["colour"], seen["shape"]), "image"))
        elif images:
            seen = judge_image(images[0])
            parts.append((L.image_caption(seen["colour"], seen["shape"], seen["position"]), None))
        elif videos:
            seen = judge_video(videos[0])
            parts.append((L.video_caption(seen["colour"], seen["shape"], seen["direction"]), None))
        elif audios:
            from anygen.eval.judges import judge_audio

            heard = judge_audio(audios[0])
            parts.append((L.audio_caption(heard["pitch"], heard["pattern"]), None))
        else:
            for clause in prompt.split(L.JOIN):
                a = L.parse_attributes(clause)
                if "pitch" in a:
                    out.audios.append(render_audio(a["pitch"], a["pattern"], rng=rng))
                    parts.append((L.audio_caption(a["pitch"], a["pattern"]), "audio"))
                elif "direction" in a:
                    out.videos.append(render_video(a["colour"], a["shape"], a["direction"], rng=rng))
                    parts.append((L.video_caption(a["colour"], a["shape"], a["direction"]), "video"))
                else:
                    out.images.append(render_image(a["colour"], a["shape"], a.get("position"), rng=rng))
                    parts.append((L.image_caption(a["colour"], a["shape"], a.get("position")), "image"))
        out.text = L.answer(*parts)
        return out


@pytest.fixture(scope="module")
def oracle_reports():
    return (
        run_world_eval(Oracle(), progress=False),
        run_world_eval(Oracle(), progress=False, shuffle_conditioning=True),
    )


def test_the_prompt_set_is_fixed_and_covers_every_task():
    a, b = WorldSuite().items(), WorldSuite().items()
    assert [(i.task, i.prompt) for i in a] == [(i.task, i.prompt) for i in b]
    assert {i.task for i in a} == set(TASKS)
    t2i = [i for i in a if i.task == "text->image"]
    assert len(t2i) == 45 * COMBINATION_REPEATS
    assert sum(not i.seen for i in t2i) == len(DEFAULT_WORLD.holdout) * COMBINATION_REPEATS
    assert len({i.prompt for i in t2i}) > 45  # the repeats are worded differently (and get their own seeds)
    # A short run still sees held-out combinations: they are spread through the order.
    assert any(not i.seen for i in WorldSuite().items(limit=5) if i.task == "text->image")
    assert all(len([i for i in WorldSuite().items(limit=3) if i.task == t]) == 3 for t in TASKS)
    for item in a:  # media inputs are the world's, as rendered
        for key, media in item.inputs.items():
            assert len(media) == 1 and f"<{key}>" in item.prompt


def test_a_perfect_model_scores_everything(oracle_reports):
    report, _ = oracle_reports
    assert report["output_kind"] == 1.0
    for task, summary in report["tasks"].items():
        assert summary["all"] == 1.0, (task, summary)
        assert summary["output_kind"] == 1.0
    assert report["tasks"]["text->image"]["unseen"]["n"] == 9 * COMBINATION_REPEATS
    assert report["tasks"]["text->image"]["seen"]["all"] == 1.0
    assert report["tasks"]["text->image"]["unseen"]["all"] == 1.0
    json.dumps(report)  # JSON-able


def test_shuffled_conditioning_falls_to_chance(oracle_reports):
    _, shuffled = oracle_reports
    assert shuffled["shuffle_conditioning"] is True
    assert shuffled["output_kind"] == 1.0  # the kinds are still right; what they show is not
    for attr, acc in shuffled["attributes"].items():
        chance = shuffled["chance"][attr]
        assert acc < chance + 0.15, (attr, acc, chance)
    for task, summary in shuffled["tasks"].items():
        assert summary["all"] < 0.5, (task, summary)


def test_report_on_the_tiny_pipeline(tiny_pipe):
    report = run_world_eval(tiny_pipe, limit=1, progress=False, call_options={"max_new_tokens": 8})
    assert report["suite"] == "world" and report["pipeline"] == "tiny"
    assert report["n"] == len(TASKS) and set(report["tasks"]) == set(TASKS)
    for summary in report["tasks"].values():
        assert set(summary) >= {"n", "output_kind", "attributes", "all"}
    item = report["items"][0]
    assert set(item) >= {"task", "prompt", "expected", "text", "kinds", "got", "output_kind", "correct"}
    json.dumps(report)
    table = format_report(report)
    assert all(task in table for task in TASKS) and "chance" in table


def _main(argv, capsys):
    from anygen.cli import main

    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "--suite", "nope"], "unknown suite 'nope'"),
        (["eval", "--pipeline", "no-such-pipeline"], "no-such-pipeline"),
        (["eval", "--world", "/no/such/world.yaml"], "/no/such/world.yaml"),
    ],
)
def test_eval_command_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    code, err = _main(argv, capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_eval_command_bad_world_config_names_file_and_field(tmp_path, capsys):
    bad = tmp_path / "world.yaml"
    bad.write_text("holdout: [[pink, circle, left]]\n")
    code, err = _main(["eval", "--world", str(bad)], capsys)
    assert code == 2 and len(err) == 1 and str(bad) in err[0] and "holdout.0" in err[0] and "pink" in err[0]
    bad.write_text("colours: [\n")
    code, err = _main(["eval", "--world", str(bad)], capsys)
    assert code == 2 and len(err) == 1 and "not valid YAML" in err[0]


def test_eval_command_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report.json"
    code, _ = _main(
        ["eval", "--pipeline", "tiny", "--limit", "1", "--no-progress", "--steps", "1", "--out", str(out)],
        capsys,
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["n"] == len(TASKS) and report["limit"] == 1
