"""Look at what a trained pipeline's output projectors produce for training examples (teacher-forced)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anygen.train.data import Example
from anygen.train.sequences import Collator, SequenceBuilder


@torch.no_grad()
def teacher_forced_conditioning(
    pipe, examples: Sequence[Example], modality: str, max_length: int = 512, batch_size: int = 8
) -> torch.Tensor:
    """The output projector's result ``[n, *condition_shape]`` at each ``modality`` signal span of the examples'
    answers, with the answers given (as in training). One row per span, in order."""
    builder = SequenceBuilder(pipe, max_length)
    collator = Collator(pipe, builder, None, skip_bad=False, target_media=False, output_modalities=[modality])
    lm, projector = pipe.llm, pipe.output_projector(modality)
    n = len(lm.spans[modality].token_ids)
    dtype = next(projector.parameters()).dtype
    out = []
    for start in range(0, len(examples), batch_size):
        batch = collator([(0, e) for e in examples[start : start + batch_size]])
        spans = batch.spans.get(modality, [])
        if not spans:
            continue
        ids = batch.input_ids.to(lm.device)
        embeds = lm.embeddings(ids)
        for m, slots in batch.media.items():  # media inputs, as the pipeline projects them
            feats = pipe.encode_media(m, [item.value for _, _, item in slots])
            for (b, s, _), f in zip(slots, feats, strict=True):
                embeds[b, s : s + f.shape[0]] = f.to(embeds.dtype)
        hidden = lm.model(
            inputs_embeds=embeds, attention_mask=batch.attention_mask.to(lm.device), output_hidden_states=True
        ).hidden_states[lm.hidden_layer]
        rows = torch.tensor([b for b, _ in spans], device=lm.device)[:, None]
        cols = torch.tensor([s for _, s in spans], device=lm.device)[:, None] + torch.arange(
            n, device=lm.device
        )
        out.append(projector(hidden[rows, cols].to(dtype), embeds[rows, cols].to(dtype)))
    return torch.cat(out)
