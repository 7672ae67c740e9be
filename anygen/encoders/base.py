"""The encoder protocols: media in, one pooled vector per input out (:class:`Encoder`), or a fixed number of
tokens per input (:class:`TokenSequenceEncoder`)."""

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


@runtime_checkable
class TokenSequenceEncoder(Protocol):
    """Turns media into token sequences (patch features, audio frames) the input projector reads.

    ``output_tokens[modality]`` is the fixed number of tokens one input of that modality gives, known from the
    encoder's config (so a pipeline spec checks it before any weights load); ``output_dim`` is every token's
    width. ``encode(modality, items)`` returns float ``[len(items), output_tokens[modality], output_dim]`` on the
    encoder's device, not normalised. See :mod:`anygen.encoders.token_configs`.
    """

    modalities: tuple[str, ...]
    output_dim: int
    output_tokens: dict[str, int]

    def encode(self, modality: str, items: list) -> torch.Tensor: ...
