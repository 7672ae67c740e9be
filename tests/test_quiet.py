"""A CLI run shows anygen's own progress and result, not other libraries' import-time warnings."""

import logging
import os
import subprocess
import sys

import anygen  # noqa: F401  (installs the filter)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_generate_prints_no_library_noise(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "anygen",
            "generate",
            "a red circle",
            "--want",
            "image",
            "--seed",
            "0",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "torchvision" not in result.stderr, result.stderr  # CLIP/Siglip processor fallback warnings
    assert "Loading weights" not in result.stderr, result.stderr  # transformers' own loading bar
    assert "[transformers]" not in result.stderr, result.stderr
    assert "image" in result.stderr  # anygen's own progress bar is still there
    assert "anygen: wrote" in result.stderr and (tmp_path / "out" / "image_0.png").is_file()


def test_only_the_fallback_warning_is_dropped():
    logger = logging.getLogger("transformers.utils.import_utils")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning(
            "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` ..."
        )
        logger.warning("some other transformers warning")
    finally:
        logger.removeHandler(handler)
    assert seen == ["some other transformers warning"]
