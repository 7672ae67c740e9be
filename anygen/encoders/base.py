"""The encoder protocol: media in, one pooled vector per input out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

MODALITIES = ("image", "video", "audio")


@runtime_checkable
class Encoder(Protocol):
    """Turns media into features the input projector reads.

    ``modalities`` lists what the encoder accepts; ``output_dim`` is the width of every vector it returns.
    ``encode(modality, items)`` takes a list of media objects of that modality (``PIL.Image.Image``,
    :class:`anygen.media.Video`, :class:`anygen.media.Audio`), preprocesses them itself and returns a
    float tensor ``[len(items), output_dim]``, L2-normalised, on the encoder's device.
    """

    modalities: tuple[str, ...]
    output_dim: int

    def encode(self, modality: str, items: list) -> torch.Tensor: ...
