"""Issue 11, parts 4 and 5: the CLI turns every error into one line and exit 2 and writes each answer into a
clean folder; ``pipe.to`` and ``chat.send`` take what diffusers users give them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anygen import AnyToAnyPipeline, Audio
from anygen.errors import AnyGenError, MediaError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
FAST = ("--max-new-tokens", "4", "--steps", "1", "--seed", "0")


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Commands run in an empty folder: a checkout's out/ (left by `make run`) must not change what they do."""
    monkeypatch.chdir(tmp_path)


def anygen(*args, cwd=None) -> subprocess.CompletedProcess:
    """The command as a user runs it; ``args`` may hold bytes (argv that is not UTF-8)."""
    return subprocess.run(
        [sys.executable, "-m", "anygen", *args], capture_output=True, env=ENV, cwd=cwd, timeout=600
    )


def _lines(data: bytes) -> list[str]:
    return [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]


def _one_line_error(result, *fragments) -> str:
    """Exit 2 and exactly one non-empty line on stderr (no traceback, no progress bar: nothing ran)."""
    lines = _lines(result.stderr)
    assert result.returncode == 2, (result.returncode, lines)
    assert len(lines) == 1, lines
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


# -- the CLI -----------------------------------------------------------------------------------------------------
def test_generate_prints_the_answer_and_writes_each_answer_into_a_clean_folder(tmp_path):
    out = tmp_path / "out"
    first = anygen("generate", "a dog", "--want", "image", *FAST, "--out", str(out))
    assert first.returncode == 0, _lines(first.stderr)
    text = (out / "response.txt").read_text(encoding="utf-8")
    assert first.stdout.decode("utf-8") == text  # the answer is printed
    assert sorted(p.name for p in out.iterdir()) == ["image_0.png", "response.txt"]

    # The same --out again: refused before anything is generated, and the first answer is left as it was.
    again = anygen("generate", "a cat", *FAST, "--out", str(out))
    _one_line_error(again, f"--out {out}", "not empty", "--overwrite")
    assert (out / "response.txt").read_text(encoding="utf-8") == text

    # --overwrite: the earlier answer's files go (no stale image_0.png beside a text-only answer); others stay.
    (out / "notes.txt").write_text("mine")
    third = anygen("generate", "a cat", "--only-requested", *FAST, "--out", str(out), "--overwrite")
    assert third.returncode == 0, _lines(third.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "response.txt"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("--threads", "0"), ("--threads", "'0'", ">= 1")),
        (("--threads", "-2"), ("--threads", ">= 1")),
        (("--threads", "many"), ("--threads", "'many'")),
        (("--device", "gpu0"), ("--device", "'gpu0'", "cpu")),
        (("--want", "image,smell"), ("smell", "image, video, audio")),
        (("--out", "{file}/sub"), ("--out", "cannot write")),
        (("--out", "{file}"), ("--out", "not a folder")),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2_before_generating(tmp_path, args, fragments):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = tuple(a.format(file=afile) for a in args)
    _one_line_error(anygen("generate", "hi", *args, cwd=tmp_path), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_device_cuda_without_a_gpu(tmp_path):
    _one_line_error(
        anygen("generate", "hi", "--device", "cuda", "--out", str(tmp_path / "o")), "--device", "'cuda'"
    )
    assert not (tmp_path / "o").exists()


def test_argv_that_is_not_utf8(tmp_path):
    out = tmp_path / "o"
    _one_line_error(anygen("generate", b"a \xff dog", "--out", str(out)), "prompt", "UTF-8", "0xff")
    assert not out.exists()  # --out was created for the check, then removed again
    # A file name that is not UTF-8 is still named (escaped), on one line.
    _one_line_error(anygen("generate", "hi", "--image", b"cat\xff.png"), "--image", "cat", "no such file")


def test_generate_passes_height_and_width(tmp_path):
    out = tmp_path / "o"
    result = anygen(
        "generate", "a dog", "--want", "image", "--height", "64", "--width", "32", *FAST, "--out", str(out)
    )
    assert result.returncode == 0, _lines(result.stderr)
    with Image.open(out / "image_0.png") as image:
        assert image.size == (32, 64)


def test_make_run_can_run_again():
    """``make run`` writes into out/ each time: its command passes --overwrite."""
    run = [line for line in (REPO / "Makefile").read_text().splitlines() if "anygen generate" in line]
    assert run and all("--out out/" in line and "--overwrite" in line for line in run)


# -- pipe.to and chat.send -----------------------------------------------------------------------------------------
@pytest.fixture
def fresh_pipe():
    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_audio_input_after_to_bfloat16(fresh_pipe):
    fresh_pipe.to(dtype=torch.bfloat16)
    wave = np.sin(np.linspace(0, 400, 16000)).astype(np.float32)
    out = fresh_pipe("what is this?", audios=[Audio(wave, 16000)], seed=0, max_new_tokens=3)
    assert isinstance(out.text, str)
    assert fresh_pipe.encoder("imagebind").audio.dtype == torch.bfloat16


def test_to_takes_the_dtype_positionally_as_diffusers_does(fresh_pipe):
    assert fresh_pipe.to(torch.float16) is fresh_pipe
    assert fresh_pipe.input_projector("imagebind").proj.weight.dtype == torch.float16
    fresh_pipe.to("cpu", torch.bfloat16)
    assert fresh_pipe.input_projector("imagebind").proj.weight.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("gpu0",), "'gpu0' is not a device"),
        ((torch.int64,), "torch.int64 is not supported"),
        ((torch.float16, torch.float32), "two dtypes"),
        ((3.5,), "got float"),
    ],
)
def test_to_refuses_what_is_not_a_device_or_float_dtype(fresh_pipe, args, fragment):
    with pytest.raises(AnyGenError, match=fragment):
        fresh_pipe.to(*args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_to_cuda_without_a_gpu_is_a_clear_error(fresh_pipe):
    with pytest.raises(AnyGenError, match="'cuda' is not available on this machine"):
        fresh_pipe.to("cuda")


def test_chat_takes_a_single_path_as_one_image(tiny_pipe, tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    one = tiny_pipe.chat(seed=0, max_new_tokens=4).send("what is this?", images=str(path))
    listed = tiny_pipe.chat(seed=0, max_new_tokens=4).send("what is this?", images=[str(path)])
    assert one.text == listed.text and one.token_ids == listed.token_ids
    with pytest.raises(MediaError, match=r"missing\.png.*not found"):
        tiny_pipe.chat().send("what is this?", images=str(tmp_path / "missing.png"))


def test_anygen_info_catches_what_generation_crashed_on(tmp_path):
    import yaml

    from anygen.spec import bundled_pipelines

    spec = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    spec["llm"]["hidden_layer"] = 7
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    _one_line_error(anygen("info", str(bad), "--no-params"), "llm.hidden_layer=7", "-3..2")
    spec["llm"]["hidden_layer"] = -1
    spec["outputs"]["image"]["generator"]["defaults"]["bogus"] = 3
    bad.write_text(yaml.safe_dump(spec))
    _one_line_error(
        anygen("info", str(bad), "--no-params"), "outputs.image.generator.defaults.bogus: unknown"
    )
    del spec["outputs"]["image"]["generator"]["defaults"]["bogus"]
    # Several problems at once (pydantic lists one per line): still one line, naming each field.
    spec["llm"]["temprature"] = 0.3
    spec["outputs"]["image"]["projector"]["nheads"] = 3
    bad.write_text(yaml.safe_dump(spec))
    _one_line_error(
        anygen("info", str(bad), "--no-params"),
        "llm.temprature: unknown field",
        "outputs.image.projector.nheads",
    )


def test_a_lone_surrogate_in_the_prompt_is_one_line(tmp_path, capsys):
    from anygen.cli import main

    assert main(["generate", "a \ud800 dog", "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "prompt" in err[0] and "U+D800" in err[0], err
    assert not (tmp_path / "o").exists()
