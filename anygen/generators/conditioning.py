"""A generator's conditioning as named tensors, and their packing into one tensor.

Stable Diffusion 1/2, Zeroscope and AudioLDM take one tensor (``prompt_embeds``). Newer pipelines take several:
SDXL ``prompt_embeds`` ``(77, 2048)`` + ``pooled_prompt_embeds`` ``(1280,)``; SD3 ``(333, 4096)`` + ``(2048,)``;
AudioLDM2 ``prompt_embeds`` + ``generated_prompt_embeds``; PixArt and LTX one T5 ``prompt_embeds`` (their attention
mask is not conditioning: a projected sequence is dense). A generator declares its tensors as a
:class:`ConditioningLayout` read from its configs (never typed by hand).

Between the output projector and the generator (through the pipeline, the server and training batches) a layout of
several tensors travels *packed*: one ``[B, 1, total]`` tensor, the tensors flattened and concatenated in layout
order. A one-tensor layout is never packed: its tensor is ``[B, tokens, width]`` as before, so the NExT-GPT
generators, projectors and checkpoints are unchanged. :meth:`ConditioningLayout.unpack` gives the named tensors
back; losses are taken per tensor and summed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from anygen.errors import AnyGenError


@dataclass(frozen=True)
class ConditionTensor:
    """One conditioning input of a diffusers pipeline: its keyword and the shape of one prompt's value,
    ``(tokens, width)`` for a sequence or ``(width,)`` for a pooled vector."""

    name: str
    shape: tuple[int, ...]

    @property
    def pooled(self) -> bool:
        return len(self.shape) == 1

    @property
    def tokens(self) -> int:
        return 1 if self.pooled else self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[-1]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def describe(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.shape))}"


@dataclass(frozen=True)
class ConditioningLayout:
    """The named tensors a generator is conditioned on, in the order they are packed."""

    tensors: tuple[ConditionTensor, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tensors]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a conditioning layout needs distinct tensor names, got {names}")

    @classmethod
    def single(cls, tokens: int, width: int, name: str = "prompt_embeds") -> ConditioningLayout:
        return cls((ConditionTensor(name, (int(tokens), int(width))),))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @property
    def packed(self) -> bool:
        """True when several tensors travel as one ``[B, 1, total]`` tensor."""
        return len(self.tensors) > 1

    @property
    def shape(self) -> tuple[int, int]:
        """What travels per prompt: ``(tokens, width)`` of the single tensor, or ``(1, total)`` packed."""
        if not self.packed:
            t = self.tensors[0]
            return (t.tokens, t.width)
        return (1, sum(t.numel for t in self.tensors))

    def __getitem__(self, name: str) -> ConditionTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def describe(self) -> str:
        return ", ".join(t.describe() for t in self.tensors)

    # -- packing -------------------------------------------------------------------------------------------
    def pack(self, values: Mapping[str, torch.Tensor], what: str = "conditioning") -> torch.Tensor:
        """``{name: [B, *shape]}`` -> ``[B, *self.shape]`` (checked: every tensor, its shape, one batch size)."""
        self.check(values, what)
        if not self.packed:
            return values[self.tensors[0].name]
        batch = values[self.tensors[0].name].shape[0]
        flat = [values[t.name].reshape(batch, -1) for t in self.tensors]
        dtype = torch.promote_types(flat[0].dtype, flat[-1].dtype) if flat else None
        return torch.cat([f.to(dtype) for f in flat], dim=1)[:, None, :]

    def unpack(self, packed: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, *self.shape]`` -> ``{name: [B, *shape]}`` (views, no copy)."""
        if tuple(packed.shape[1:]) != self.shape:
            raise AnyGenError(
                f"conditioning of shape {list(packed.shape)} does not fit the layout [B, {self.shape[0]}, "
                f"{self.shape[1]}] ({self.describe()})"
            )
        if not self.packed:
            return {self.tensors[0].name: packed}
        out, start = {}, 0
        flat = packed[:, 0, :]
        for t in self.tensors:
            out[t.name] = flat[:, start : start + t.numel].reshape(packed.shape[0], *t.shape)
            start += t.numel
        return out

    def check(self, values: Mapping[str, torch.Tensor], what: str = "conditioning") -> None:
        """Every tensor of the layout, each ``[B, *shape]`` with one ``B``; errors name the tensor."""
        if not isinstance(values, Mapping):
            raise AnyGenError(
                f"{what}: expected a dict of tensors ({self.describe()}), got {type(values).__name__}"
            )
        missing = [n for n in self.names if n not in values]
        extra = sorted(set(values) - set(self.names))
        if missing or extra:
            raise AnyGenError(
                f"{what}: expected the tensors {', '.join(self.names)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else "")
            )
        batch = None
        for t in self.tensors:
            value = values[t.name]
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise AnyGenError(f"{what}.{t.name}: expected a floating-point tensor [B, {_dims(t.shape)}]")
            if tuple(value.shape[1:]) != t.shape or value.shape[0] < 1:
                raise AnyGenError(f"{what}.{t.name}: expected [B, {_dims(t.shape)}], got {list(value.shape)}")
            if batch is not None and value.shape[0] != batch:
                raise AnyGenError(
                    f"{what}.{t.name}: batch size {value.shape[0]}, but the others have {batch}"
                )
            batch = value.shape[0]


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))
