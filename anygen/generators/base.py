"""The generator protocol: conditioning embeddings in, media out."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Generator(Protocol):
    """Wraps a diffusers pipeline that is conditioned on text-encoder embeddings.

    ``condition_shape`` is ``(tokens, width)`` of one prompt's conditioning: ``(77, 768)`` for SD-1.5,
    ``(77, 1024)`` for SD-2 and Zeroscope, ``(1, 512)`` for AudioLDM.
    """

    modality: str
    condition_shape: tuple[int, int]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """The generator's own text encoder: ``[len(texts), *condition_shape]``."""
        ...

    def generate(self, prompt_embeds: torch.Tensor, **options: Any) -> list:
        """Media for each row of ``prompt_embeds`` (``[B, *condition_shape]``)."""
        ...
