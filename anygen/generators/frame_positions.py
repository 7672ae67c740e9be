"""Frame positions for a ``UNet3DConditionModel``: a sinusoidal frame-index embedding in its temporal attention.

ModelScope/Zeroscope's temporal attention has no position embedding: it sees the frames as a set, and only its
temporal convolutions know their order. AnimateDiff's motion modules add a sinusoidal one before each temporal
self-attention; :func:`add_frame_positions` does the same to a UNet3D (diffusers' ``BasicTransformerBlock`` applies
its ``pos_embed`` there). The embedding has no weights, so the UNet's files are unchanged: whether a generator
uses it is recorded in its ``anygen_generator.json`` (``architecture.frame_positions``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FramePositions(nn.Module):
    """Adds the sinusoidal embedding of each frame's index to ``x`` ``[batch, frames, dim]`` (any frame count)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        position = torch.arange(frames, device=x.device, dtype=torch.float32)[:, None]
        rates = torch.exp(
            torch.arange(0, self.dim, 2, device=x.device, dtype=torch.float32) * (-math.log(1e4) / self.dim)
        )
        table = torch.zeros(frames, self.dim, device=x.device, dtype=torch.float32)
        table[:, 0::2] = torch.sin(position * rates)
        table[:, 1::2] = torch.cos(position * rates[: self.dim // 2])
        return x + table.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def add_frame_positions(unet: nn.Module) -> int:
    """Give every temporal transformer block of ``unet`` a :class:`FramePositions`; returns how many blocks."""
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    count = 0
    for module in unet.modules():
        if isinstance(module, TransformerTemporalModel):
            for block in module.transformer_blocks:
                block.pos_embed = FramePositions(block.norm1.normalized_shape[0])
                count += 1
    if not count:
        raise ValueError(f"frame_positions: {type(unet).__name__} has no temporal transformer blocks")
    return count


def has_frame_positions(unet: nn.Module) -> bool:
    return any(isinstance(m, FramePositions) for m in unet.modules())
