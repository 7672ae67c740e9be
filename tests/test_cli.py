"""The ``anygen`` command line, run as a user would (a real subprocess)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from PIL import Image

from anygen.media import Video

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Commands run in an empty folder: a checkout's out/ (left by `make run`) must not change what they do."""
    monkeypatch.chdir(tmp_path)


def anygen(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "anygen", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600
    )


def test_generate_writes_all_three_media(tmp_path):
    out = tmp_path / "out"
    result = anygen(
        "generate",
        "a dog barking on a beach",
        "--want",
        "image,video,audio",
        "--seed",
        "0",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert (out / "response.txt").is_file()
    with Image.open(out / "image_0.png") as image:
        image.load()
        assert image.size[0] > 0
    video = Video.load(out / "video_0.mp4")
    assert video.num_frames >= 8
    data, rate = sf.read(out / "audio_0.wav")
    assert rate > 0 and data.size > 0


def test_generate_is_reproducible(tmp_path):
    args = ["generate", "a trumpet", "--want", "image", "--seed", "1", "--max-new-tokens", "4"]
    assert anygen(*args, "--out", str(tmp_path / "a")).returncode == 0
    assert anygen(*args, "--out", str(tmp_path / "b")).returncode == 0
    assert (tmp_path / "a" / "image_0.png").read_bytes() == (tmp_path / "b" / "image_0.png").read_bytes()
    assert (tmp_path / "a" / "response.txt").read_text() == (tmp_path / "b" / "response.txt").read_text()


def _one_clear_line(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert any(all(f in line for f in fragments) for line in lines), result.stderr
    return lines


def test_missing_input_file(tmp_path):
    _one_clear_line(anygen("generate", "hi", "--image", str(tmp_path / "cat.jpg")), "--image", "cat.jpg")


def test_corrupt_image(tmp_path):
    bad = tmp_path / "cat.jpg"
    bad.write_bytes(b"\x00not a jpeg")
    _one_clear_line(anygen("generate", "hi", "--image", str(bad), "--out", str(tmp_path / "o")), "cat.jpg")


def test_unknown_modality_in_want():
    _one_clear_line(anygen("generate", "hi", "--want", "image,smell"), "smell")


def test_unknown_pipeline_name():
    _one_clear_line(anygen("generate", "hi", "--pipeline", "no-such-pipeline"), "no-such-pipeline", "tiny")


def test_empty_prompt_without_media(tmp_path):
    _one_clear_line(anygen("generate", "", "--out", str(tmp_path)), "empty")


def test_wrong_spec_widths(tmp_path):
    spec = (REPO / "pipelines" / "tiny.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        spec.replace("type: transformer, d_model: 32", "type: transformer, out_dim: 768, d_model: 32", 1)
    )
    _one_clear_line(anygen("generate", "hi", "--pipeline", str(bad)), "outputs.image.projector", "768", "32")


def test_pipelines_and_info():
    listed = anygen("pipelines")
    assert listed.returncode == 0 and "tiny" in listed.stdout and "nextgpt-7b-v0" in listed.stdout
    info = anygen("info", "tiny")
    assert info.returncode == 0, info.stderr
    assert "77 x 32" in info.stdout and "params" in info.stdout and "[IMG0]..[IMG3]" in info.stdout


@pytest.mark.slow
def test_wheel_ships_the_bundled_specs(tmp_path):
    """A non-editable install must find pipelines/*.yaml: they are packaged as anygen.bundled_pipelines."""
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("anygen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "anygen/bundled_pipelines/tiny.yaml" in names
    assert "anygen/bundled_pipelines/nextgpt-7b-v0.yaml" in names
    assert "anygen/bundled_weights/manifest.yaml" in names
    assert "anygen/convert/legacy_delta_keys.json" in names
    # Installed into a bare folder, the package finds its specs without the source tree.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = "from anygen.spec import bundled_pipelines; print(sorted(bundled_pipelines()))"
    listed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**ENV, "PYTHONPATH": str(target)},
        timeout=120,
    )
    assert "'tiny'" in listed.stdout, listed.stderr
