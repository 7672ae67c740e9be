"""Generated media as file bytes: PNG for images, MP4 for video, WAV for audio.

The bytes are those :meth:`anygen.output.AnyToAnyOutput.save` writes, so a file from the service and one
saved from a local call with the same seed are identical.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any

SUFFIX = {"image": ".png", "video": ".mp4", "audio": ".wav"}


def encode_media(modality: str, item: Any) -> bytes:
    """``item`` (a PIL image, :class:`~anygen.media.Video` or :class:`~anygen.media.Audio`) as file bytes."""
    if modality == "image":
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return buffer.getvalue()
    if modality not in SUFFIX:
        raise ValueError(f"unknown modality {modality!r}")
    with tempfile.TemporaryDirectory(prefix="anygen-serve-") as tmp:
        path = Path(tmp) / f"out{SUFFIX[modality]}"
        item.save(path)
        return path.read_bytes()


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
