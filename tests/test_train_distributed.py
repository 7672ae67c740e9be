"""Training in two processes (``accelerate launch``, gloo on CPU) equals one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from anygen.train import train

VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one(tmp_path, samples):
    data = samples / "T_X_pair_data" / "cc3m" / "cc3m_generation.json"
    common = [
        "--stage",
        "2",
        "--data",
        str(data),
        "--max-steps",
        "4",
        "--seed",
        "5",
        "--no-progress",
        "--embed-cache",
        str(tmp_path / "cache"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    launcher = VENV_BIN / "accelerate"
    cmd = [
        str(launcher),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "anygen.train",
        *common,
        "--batch-size",
        "1",
        "--out",
        str(tmp_path / "two"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 process(es) = 2 examples per step" in done.stdout

    one = train(
        stage=2,
        data=str(data),
        max_steps=4,
        seed=5,
        batch_size=2,
        out=str(tmp_path / "one"),
        embed_cache=str(tmp_path / "cache"),
        progress=False,
        verbose=False,
    )
    two = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in two] == [2, 2, 2, 2]
    for a, b in zip(one.metrics, two, strict=True):
        for key in ("loss", "lm_loss", "align_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    a = load_file(tmp_path / "one" / "outputs" / "image" / "projector.safetensors")
    b = load_file(tmp_path / "two" / "outputs" / "image" / "projector.safetensors")
    # Adam divides by sqrt of tiny second moments, so last-bit gradient differences (the gradient is averaged by
    # an all-reduce instead of inside one batch) show as ~1e-5 differences after a few steps of lr 5e-4.
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst
    gap = max(abs(x[k] - y[k]) for x, y in zip(one.metrics, two, strict=True) for k in ("loss", "align_loss"))
    print(f"2 processes vs 1: largest loss difference {gap:.2e}, largest weight difference {worst:.2e}")
