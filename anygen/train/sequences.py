"""Examples -> token sequences with labels, media slots and signal spans, batched.

Prompts are built by the pipeline's own :func:`anygen.prompt.conversation_segments` and tokenized piece by piece
as :meth:`anygen.llm.LanguageModel.embed_segments` does (one BOS, each text segment on its own), so training sees
exactly the prompts inference builds. Only assistant turns are labelled: their text, their signal tokens
(each ``<image>``/``<audio>``/``<video>`` tag of an answer becomes that modality's signal span) and, after the
last answer, the template's stop string (or EOS). With a tokenizer's chat template
(:mod:`anygen.chat_template`) the template renders the answers too, and each answer is labelled with its
end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ...; EOS after the last answer when the template has none),
not the template's own text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from anygen import media as media_io
from anygen.chat_template import ChatTemplate
from anygen.errors import MediaError
from anygen.prompt import MediaSlot, Turn, conversation_segments, resolve_template
from anygen.train.data import DataError, Example, Target

IGNORE = -100
_TAG = re.compile(r"<(image|audio|video)>")


@dataclass
class MediaItem:
    """A medium of a batch: ``value`` is the loaded medium, or None when its features are already cached."""

    key: tuple[str, str]  # (modality, path)
    value: Any = None


class FeatureCache:
    """Results of frozen models per medium (encoder features, VAE latents), kept in memory up to ``limit``."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.data: dict[tuple[str, str], Any] = {}

    def __contains__(self, key) -> bool:
        return key in self.data

    def __getitem__(self, key):
        return self.data[key]

    def put(self, key, value) -> None:
        if len(self.data) < self.limit:
            self.data[key] = value


@dataclass
class Encoded:
    """One example as the LLM sees it."""

    ids: list[int]  # media positions hold the pad id (their embeddings are replaced)
    labels: list[int]  # IGNORE where no loss is taken
    media: list[tuple[int, str, Any]] = field(default_factory=list)  # (first position, modality, medium)
    spans: list[tuple[int, str, int]] = field(
        default_factory=list
    )  # (first position, modality, target index)


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    media: dict[str, list[tuple[int, int, MediaItem]]]  # modality -> (row, first position, medium)
    spans: dict[str, list[tuple[int, int]]]  # modality -> (row, first position), in target order
    targets: dict[str, torch.Tensor]  # modality -> caption embeddings [n, tokens, width]
    target_media: dict[str, list[MediaItem | None]]  # modality -> target media (for the diffusion loss)
    seeds: dict[str, list[int]]  # modality -> one seed per target (diffusion noise)
    sources: list[str]
    skipped: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.sources)


class SequenceBuilder:
    def __init__(self, pipe, max_length: int = 512) -> None:
        self.lm = pipe.llm
        self.template = resolve_template(pipe.spec.llm.template)  # bound when the LLM was built
        self.max_length = max_length
        self.num_tokens = {}
        for m in pipe.input_modalities:
            _, proj = pipe._encoder_for(m)
            self.num_tokens[m] = pipe.spec.input_projectors[proj].num_tokens
        tok = self.lm.tokenizer
        self.pad_id = tok.pad_token_id
        self.bos = [tok.bos_token_id] if tok.bos_token_id is not None and self.lm.add_bos else []
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        if isinstance(self.template, ChatTemplate):  # each answer's end-of-turn token is a segment of its own
            self.stop_ids = [] if self.template.end_of_turn else eos
        else:
            stop = self.template.stop[0] if self.template.stop else None
            self.stop_ids = self.tokenize(stop) if stop else eos

    @lru_cache(maxsize=65536)  # noqa: B019 (one builder per run; templates repeat)
    def _tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(self.lm.tokenizer(text, add_special_tokens=False).input_ids)

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenize(text)) if text else []

    def encode(self, turns: list[Turn]) -> Encoded:
        """``turns``: user/assistant turns ending with an assistant turn; user media already loaded."""
        if isinstance(self.template, ChatTemplate):
            segments = self.template.segments(turns, answer=True)
        else:
            last = len(turns) - 1
            segments = conversation_segments(turns[:last], self.template)
            before, _, after = self.template.assistant.partition("{content}")
            segments += [(s, last) for s in (before, turns[last].text, after) if s]
        ids, labels = list(self.bos), [IGNORE] * len(self.bos)
        enc = Encoded(ids, labels)
        span_index = 0
        for seg, t in segments:
            if isinstance(seg, MediaSlot):
                n = self.num_tokens.get(seg.modality)
                if n is None:
                    raise DataError(f"the pipeline has no encoder for {seg.modality} inputs")
                enc.media.append((len(ids), seg.modality, turns[t].media[seg.modality][seg.index]))
                ids += [self.pad_id] * n
                labels += [IGNORE] * n
            elif t >= 0 and turns[t].role == "assistant":
                pos = 0
                for match in _TAG.finditer(seg):
                    piece = self.tokenize(seg[pos : match.start()])
                    ids += piece
                    labels += piece
                    span = list(self.lm.spans[match.group(1)].token_ids)
                    enc.spans.append((len(ids), match.group(1), span_index))
                    span_index += 1
                    ids += span
                    labels += span
                    pos = match.end()
                piece = self.tokenize(seg[pos:])
                ids += piece
                labels += piece
            else:
                piece = self.tokenize(seg)
                ids += piece
                labels += [IGNORE] * len(piece)
        ids += self.stop_ids
        labels += self.stop_ids
        return self._truncate(enc)

    def _truncate(self, enc: Encoded) -> Encoded:
        cut = self.max_length
        if len(enc.ids) <= cut:
            return enc
        for start, modality, _ in enc.media:  # never cut through a medium's block or a signal span
            if start < cut < start + self.num_tokens[modality]:
                cut = start
        for start, modality, _ in enc.spans:
            if start < cut < start + len(self.lm.spans[modality].token_ids):
                cut = start
        enc.ids, enc.labels = enc.ids[:cut], enc.labels[:cut]
        enc.media = [m for m in enc.media if m[0] < cut]
        enc.spans = [s for s in enc.spans if s[0] < cut]
        return enc


class Collator:
    """Loads an example list's media and targets and builds a :class:`Batch` (on the CPU)."""

    def __init__(
        self,
        pipe,
        builder: SequenceBuilder,
        targets,
        *,
        skip_bad: bool,
        target_media: bool,
        output_modalities: Sequence[str],
        features: FeatureCache | None = None,
        latents: FeatureCache | None = None,
    ) -> None:
        self.pipe = pipe
        self.builder = builder
        self.targets = targets
        self.skip_bad = skip_bad
        self.load_target_media = target_media
        self.output_modalities = set(output_modalities)
        self.features = features  # input media whose encoder features are cached are not loaded again
        self.latents = latents  # same for target media and their VAE latents

    def _load(self, modality: str, path, source: str, cache: FeatureCache | None = None) -> MediaItem:
        key = (modality, str(path))
        if cache is not None and key in cache:
            return MediaItem(key)
        try:
            return MediaItem(key, media_io.load_media(modality, path))
        except MediaError as err:
            raise DataError(f"{source}: {err}") from None

    def __call__(self, items: Sequence[tuple[int, Example]]) -> Batch:
        encoded: list[tuple[Encoded, Example, int, list]] = []
        skipped: list[str] = []
        for seed, ex in items:
            try:
                turns = [
                    Turn(
                        t.role,
                        t.text,
                        {
                            m: [self._load(m, p, ex.source, self.features) for p in ps]
                            for m, ps in t.media.items()
                        },
                    )
                    for t in ex.turns
                ]
                enc = self.builder.encode(turns)
                wanted = [t for t in ex.targets if t.modality in self.output_modalities]
                target_media = [
                    self._load(t.modality, t.media, ex.source, self.latents)
                    if self.load_target_media and t.media is not None and t.modality in self.output_modalities
                    else None
                    for t in ex.targets
                ]
                if self.load_target_media and any(t.media is None for t in wanted):
                    raise DataError(
                        f"{ex.source}: the diffusion loss needs the target media, but the entry names none"
                    )
            except DataError as err:
                if not self.skip_bad:
                    raise
                skipped.append(str(err))
                continue
            encoded.append((enc, ex, seed, target_media))
        return self._batch(encoded, skipped)

    def _batch(self, encoded, skipped: list[str]) -> Batch:
        length = max((len(e.ids) for e, *_ in encoded), default=1)
        rows = len(encoded)
        input_ids = torch.full((rows, length), self.builder.pad_id, dtype=torch.long)
        labels = torch.full((rows, length), IGNORE, dtype=torch.long)
        mask = torch.zeros((rows, length), dtype=torch.long)
        media: dict[str, list] = {}
        spans: dict[str, list] = {}
        target_refs: dict[str, list[tuple[Target, str]]] = {}
        target_media: dict[str, list] = {}
        seeds: dict[str, list[int]] = {}
        for b, (enc, ex, seed, tmedia) in enumerate(encoded):
            n = len(enc.ids)
            input_ids[b, :n] = torch.tensor(enc.ids)
            labels[b, :n] = torch.tensor(enc.labels)
            mask[b, :n] = 1
            for start, modality, item in enc.media:
                media.setdefault(modality, []).append((b, start, item))
            for start, modality, k in enc.spans:
                if modality not in self.output_modalities:
                    continue
                spans.setdefault(modality, []).append((b, start))
                target_refs.setdefault(modality, []).append((ex.targets[k], ex.source))
                target_media.setdefault(modality, []).append(tmedia[k])
                seeds.setdefault(modality, []).append(seed * 64 + k)
        targets = (
            {m: self.targets.batch(refs) for m, refs in target_refs.items()}
            if self.targets is not None
            else {}
        )
        return Batch(
            input_ids=input_ids,
            labels=labels,
            attention_mask=mask,
            media=media,
            spans=spans,
            targets=targets,
            target_media=target_media if self.load_target_media else {},
            seeds=seeds,
            sources=[ex.source for _, ex, _, _ in encoded],
            skipped=skipped,
        )
