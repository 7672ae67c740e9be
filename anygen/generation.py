"""Token generation with complete signal spans and hidden states captured on the way.

A small KV-cached decoding loop (in the spirit of nanoGPT's ``generate``) rather than ``model.generate``,
because three things must hold that ``generate`` does not give together:

* once the first token of a signal span is sampled, the rest of the span is forced, and a later token of
  a span can never be sampled on its own (so a partial span, which crashes NExT-GPT, cannot happen);
* the hidden state **at** each signal position (the state computed when that token is the input) is
  kept during decoding, with no second forward pass; a span's last token gets its forward pass too (the
  rest of a span is known once its first token is chosen, so it is fed in one pass when it can be);
* modalities that must appear (``output_modalities``) are forced when the model would stop without them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from anygen.llm import LanguageModel


@dataclass
class SamplingOptions:
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class SignalOutput:
    """One complete signal span in a generated answer."""

    modality: str
    hidden_states: torch.Tensor  # [n_signal, hidden]
    input_embeds: torch.Tensor  # [n_signal, hidden]


@dataclass
class GeneratedSequence:
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    signals: list[SignalOutput] = field(default_factory=list)


@dataclass
class _RowState:
    required: list[str]  # modalities still owed, in order
    forced: list[int] = field(default_factory=list)  # tokens queued to be emitted next
    stopped: bool = False
    done: bool = False
    span: list[tuple[str, int]] = field(default_factory=list)  # (modality, token) of an open span's tokens
    banned: list[int] = field(default_factory=list)  # first tokens of spans this row may not start


def _cache_io(model: torch.nn.Module) -> tuple[str, str]:
    """Keyword and output field of the KV cache (``cache`` in transformers >= 5.x, else ``past_key_values``)."""
    params = inspect.signature(model.forward).parameters
    return ("cache", "cache") if "cache" in params else ("past_key_values", "past_key_values")


def sample_next(logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator | None) -> int:
    """One token from a ``[vocab]`` logits row: greedy at temperature 0, else nucleus sampling."""
    if not options.do_sample or options.temperature == 0:
        return int(logits.argmax())
    logits = logits.float()
    scaled = logits / options.temperature
    if torch.isnan(scaled).any() or not torch.isfinite(scaled[torch.isfinite(logits)]).all():
        # An extreme temperature (tiny or huge) overflows float32: float64, shifted by the largest logit.
        wide = logits.double()
        scaled = (wide - wide.max()) / options.temperature
        if torch.isnan(scaled).any():
            return int(logits.argmax())
    probs = torch.softmax(scaled, dim=-1)
    if options.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < options.top_p
        keep[0] = True  # the likeliest token, even when top_p is below the dtype's smallest number
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate(
    lm: LanguageModel,
    prompts: Sequence[torch.Tensor],
    options: SamplingOptions,
    *,
    required: Sequence[Sequence[str]] | None = None,
    allowed: Sequence[Sequence[str] | None] | None = None,
    stop_strings: Sequence[str] = (),
    generators: Sequence[torch.Generator | None] | None = None,
    on_token: Callable[[int, int], None] | None = None,
) -> list[GeneratedSequence]:
    """Decode a batch of embedded prompts (each ``[L_i, hidden]``; left-padded together).

    ``required[i]`` lists modalities row ``i`` must produce; ``allowed[i]`` (None: all) those it may
    produce; ``generators[i]`` draws row ``i``'s samples,
    so a row gives the same tokens in a batch as alone. ``on_token(row, token_id)`` sees each new token.
    """
    batch = len(prompts)
    required = [list(r) for r in (required or [[]] * batch)]
    generators = list(generators or [None] * batch)
    model, device = lm.model, lm.device
    cache_kw, cache_out = _cache_io(model)
    first_of_span = {span.token_ids[0]: span for span in lm.spans.values()}
    signal_ids = lm.signal_token_ids()
    later_span_tokens = torch.tensor(
        sorted({t for s in lm.spans.values() for t in s.token_ids[1:]}), dtype=torch.long, device=device
    )
    eos_ids = lm.stop_token_ids()

    # Left-pad the prompts into one batch.
    length = max(p.shape[0] for p in prompts)
    embeds = prompts[0].new_zeros(batch, length, lm.hidden_size)
    mask = torch.zeros(batch, length, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        embeds[i, length - p.shape[0] :] = p
        mask[i, length - p.shape[0] :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    allowed = list(allowed or [None] * batch)
    rows = []
    for req, allow in zip(required, allowed, strict=True):
        banned = [
            s.token_ids[0]
            for m, s in lm.spans.items()
            if allow is not None and m not in allow and m not in req
        ]
        rows.append(_RowState(required=list(dict.fromkeys(req)), banned=banned))
    results = [GeneratedSequence() for _ in range(batch)]
    hidden_by_row: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    cache = None
    step_tokens: list[list[int]] = [[] for _ in range(batch)]  # tokens each row fed in the last forward

    def emit(i: int, tok: int) -> None:
        row = rows[i]
        results[i].token_ids.append(tok)
        if on_token is not None:
            on_token(i, tok)
        if tok in first_of_span and not row.span:
            span = first_of_span[tok]
            row.forced = list(span.token_ids[1:])
            if span.modality in row.required:
                row.required.remove(span.modality)
        if tok in signal_ids:
            row.span.append((_span_of(lm, tok), tok))
        elif stop_strings and not row.span:
            tail = lm.decode(results[i].token_ids[-32:])
            row.stopped = any(s in tail for s in stop_strings)

    steps = 0
    while True:
        out = model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=True,
            **{cache_kw: cache},
        )
        cache = getattr(out, cache_out)
        hidden = out.hidden_states[lm.hidden_layer]
        logits = out.logits[:, -1]
        # The states just computed are those *at* the tokens emitted in the previous step.
        for i, toks in enumerate(step_tokens):
            if toks and rows[i].span:
                hidden_by_row[i].extend(hidden[i, -len(toks) :])
                _close_span_if_complete(lm, rows[i], results[i], hidden_by_row[i])
        if all(r.done for r in rows):
            break
        next_tokens: list[list[int]] = []
        for i, row in enumerate(rows):
            if row.done:
                next_tokens.append([])
                continue
            tok = _next_token(lm, row, logits[i], later_span_tokens, options, generators[i], steps, eos_ids)
            if tok is None:
                row.done = True
                next_tokens.append([])
                continue
            emit(i, tok)
            next_tokens.append([tok])
        # The rest of a signal span needs no logits: when every live row is inside a span, its known tokens go
        # into this same forward pass (one pass for a whole span instead of one per token).
        live = [i for i, toks in enumerate(next_tokens) if toks]
        extra = min((len(rows[i].forced) for i in live), default=0)
        for _ in range(extra):
            for i in live:
                tok = rows[i].forced.pop(0)
                emit(i, tok)
                next_tokens[i].append(tok)
        steps += 1 + extra
        # No forward pass when every row will end at the next step without needing this step's states.
        if all(not toks or _ends_next(rows[i], steps, options) for i, toks in enumerate(next_tokens)):
            break
        # Feed the new tokens (finished rows get masked pads, so the batch stays rectangular).
        step_tokens = next_tokens
        n = 1 + extra
        pad = lm.tokenizer.pad_token_id
        ids = torch.tensor([toks or [pad] * n for toks in next_tokens], device=device)
        embeds = lm.embeddings(ids)
        alive = torch.tensor([bool(toks) for toks in next_tokens], dtype=torch.long, device=device)
        mask = torch.cat([mask, alive[:, None].expand(-1, n)], dim=1)
        positions = positions[:, -1:] + torch.arange(1, n + 1, device=device)
    for res in results:
        res.text = strip_stop(lm.decode(res.token_ids), stop_strings)
    return results


def _span_of(lm: LanguageModel, token: int) -> str:
    for span in lm.spans.values():
        if token in span.token_ids:
            return span.modality
    raise KeyError(token)


def _close_span_if_complete(
    lm, row: _RowState, result: GeneratedSequence, hidden: list[torch.Tensor]
) -> None:
    modality = row.span[0][0]
    span = lm.spans[modality]
    if len(row.span) < len(span.token_ids):
        return
    ids = torch.tensor(span.token_ids, device=lm.device)
    result.signals.append(SignalOutput(modality, torch.stack(hidden[-len(ids) :]), lm.embeddings(ids)))
    row.span = []
    hidden.clear()


def _next_token(
    lm, row: _RowState, logits, later_span_tokens, options, generator, steps, eos_ids
) -> int | None:
    """The row's next token, or None when it is finished."""
    if row.forced:
        return row.forced.pop(0)
    out_of_budget = steps >= options.max_new_tokens
    if row.stopped or out_of_budget:
        return _owed_span_start(lm, row)
    logits = logits.clone()
    if later_span_tokens.numel():
        logits[later_span_tokens] = float("-inf")
    if row.banned:
        logits[row.banned] = float("-inf")
    tok = sample_next(logits, options, generator)
    if tok in eos_ids:
        row.stopped = True
        return _owed_span_start(lm, row)
    return tok


def _ends_next(row: _RowState, steps: int, options: SamplingOptions) -> bool:
    """Whether the row's next step is sure to finish it (so the pass that would feed its last token is not needed):
    no open span (whose states must be kept), nothing forced or owed, and stopped or out of budget."""
    return (
        not row.span
        and not row.forced
        and not row.required
        and (row.stopped or steps >= options.max_new_tokens)
    )


def _owed_span_start(lm, row: _RowState) -> int | None:
    """Force the first owed modality's span, or finish the row when nothing is owed."""
    if not row.required:
        return None
    return lm.spans[row.required[0]].token_ids[0]


def strip_stop(text: str, stop_strings: Sequence[str]) -> str:
    cut = min((text.index(s) for s in stop_strings if s in text), default=len(text))
    return text[:cut].strip()
