import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Commands and calls that name no pipeline use tiny here (fast wiring checks); tests/test_mini.py names mini.
os.environ.setdefault("ANYGEN_PIPELINE", "tiny")

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "data" / "nextgpt-samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def tiny_pipe():
    """The bundled tiny pipeline, shared by tests that only call it (do not mutate)."""
    from anygen import AnyToAnyPipeline

    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models gain nothing from two threads, and on a shared 2-core machine thread contention makes
    tiny matmuls up to 100x slower; one thread keeps the suite's time steady."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
