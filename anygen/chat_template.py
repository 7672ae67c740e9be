"""Prompts from the LLM tokenizer's own chat template (``llm.template: chat``, or a spec that gives none).

The template is rendered with ``tokenizer.apply_chat_template`` over the whole conversation, with a unique
sentinel where each input's projected features go and in place of each answer's text; the rendered text is
then split at the sentinels back into text segments and :class:`~anygen.prompt.MediaSlot` markers. So the
features land exactly where the template puts the user's text (between the template's ``media`` markers), and
each answer (with the template's end-of-turn token after it) stays a segment of its own: training labels it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError

from anygen.errors import AnyGenError, WeightsError
from anygen.prompt import MediaSlot, Turn, user_content_segments
from anygen.spec import ChatTemplateSpec, TemplateSpec

if TYPE_CHECKING:
    from anygen.llm import LanguageModel

# Private-use characters: no tokenizer's text holds them, and templates pass them through untouched.
_OPEN, _CLOSE = "\ue000", "\ue001"
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

Segment = tuple[str | MediaSlot, int]  # a segment and the index of its turn (-1: the template's own text)


def _sentinel(k: int) -> str:
    return f"{_OPEN}{k}{_CLOSE}"


@dataclass(frozen=True)
class ChatTemplate:
    """A tokenizer's chat template used as a pipeline's prompt template (see the module docstring)."""

    tokenizer: Any
    source: str  # where the tokenizer came from (for errors)
    media: dict[str, tuple[str, str]]
    #: The special token closing an answer (``<|im_end|>``, ``<|eot_id|>``, ...), if the template writes one.
    end_of_turn: str | None
    trims: bool  # the template strips the whitespace around an answer (Llama 3, Gemma)
    stop: tuple[str, ...] = ()  # no stop strings: decoding stops at the end-of-turn token itself

    @classmethod
    def of(cls, tokenizer: Any, source: str, media: dict[str, tuple[str, str]]) -> ChatTemplate:
        """The tokenizer's template, probed once for how it closes an answer and whether it trims answers."""
        probe = cls(tokenizer, source, dict(media), None, False)
        mark = _sentinel(0)

        def answer(content: str) -> str:
            try:
                return probe.render(
                    [{"role": "user", "content": "a"}, {"role": "assistant", "content": content}], False
                )
            except AnyGenError as err:
                raise WeightsError(str(err)) from None

        rendered = answer(mark)
        if rendered.count(mark) != 1:
            raise WeightsError(
                f"llm.template: the chat template of {source} does not write an assistant message's content "
                "once"
            )
        suffix = rendered.split(mark, 1)[1]
        trims = f" {mark} " not in answer(f" {mark} ")
        return cls(tokenizer, source, dict(media), _end_of_turn(tokenizer, suffix), trims)

    @property
    def end_of_turn_ids(self) -> tuple[int, ...]:
        if self.end_of_turn is None:
            return ()
        return (int(self.tokenizer.convert_tokens_to_ids(self.end_of_turn)),)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """``apply_chat_template`` as text; a template refusing the messages is an :class:`AnyGenError`."""
        try:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tokenize=False
            )
        except (TemplateError, ValueError, TypeError, KeyError, IndexError) as err:
            raise AnyGenError(
                f"llm.template: the chat template of {self.source} refused the conversation: {err}"
            ) from None

    def segments(self, turns: list[Turn], *, answer: bool = False) -> list[Segment]:
        """The conversation as segments. A prompt (``answer=False``) ends with a user turn and the template's
        generation prompt; a training example (``answer=True``) ends with the last answer and its end-of-turn
        token. Answers and their end-of-turn tokens carry their turn's index; the template's own text, -1."""
        last = "assistant" if answer else "user"
        if not turns or turns[-1].role != last:
            raise AnyGenError(f"a conversation must end with a{'n' if answer else ''} {last} turn")
        held: list[Segment] = []

        def hold(segment: str | MediaSlot, t: int) -> str:
            held.append((segment, t))
            return _sentinel(len(held) - 1)

        messages = []
        for t, turn in enumerate(turns):
            if _OPEN in turn.text or _CLOSE in turn.text:
                raise AnyGenError(f"turn {t}: the text holds a reserved character (U+E000 or U+E001)")
            if turn.role == "system" and t == 0:
                messages.append({"role": "system", "content": turn.text})
            elif turn.role == "user":
                parts = user_content_segments(turn, self)
                content = "".join(p if isinstance(p, str) else hold(p, t) for p in parts)
                messages.append({"role": "user", "content": content})
            elif turn.role == "assistant":
                messages.append(
                    {"role": "assistant", "content": hold(turn.text.strip() if self.trims else turn.text, t)}
                )
            else:
                raise AnyGenError(f"turn {t}: role {turn.role!r}; only the first turn may be 'system'")
        out = self._split(self.render(messages, add_generation_prompt=not answer), held, turns)
        if answer:  # nothing after the last answer's end-of-turn token is learnt
            while out and out[-1][1] != len(turns) - 1:
                out.pop()
        return [(s, t) for s, t in out if not (isinstance(s, str) and s == "")]

    def _split(self, rendered: str, held: list[Segment], turns: list[Turn]) -> list[Segment]:
        parts = _SENTINEL.split(rendered)
        found = sorted(int(k) for k in parts[1::2])
        if found != list(range(len(held))):
            raise AnyGenError(
                f"llm.template: the chat template of {self.source} does not write every input and answer of "
                "the conversation once"
            )
        out: list[Segment] = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(held[int(part)])
                continue
            prev = out[-1] if out else None
            closes_answer = (
                prev is not None
                and isinstance(prev[0], str)
                and prev[1] >= 0
                and turns[prev[1]].role == "assistant"
            )
            if closes_answer and self.end_of_turn and part.startswith(self.end_of_turn):
                out.append((self.end_of_turn, prev[1]))
                part = part[len(self.end_of_turn) :]
            out.append((part, -1))
        return out


def _end_of_turn(tokenizer: Any, suffix: str) -> str | None:
    """The special token the template writes right after an answer (None when what follows is plain text)."""
    ids = tokenizer(suffix, add_special_tokens=False).input_ids if suffix else []
    if not ids:
        return None
    special = set(tokenizer.all_special_ids) | {
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)
    }
    token = tokenizer.convert_ids_to_tokens(ids[0])
    return token if ids[0] in special and suffix.startswith(token) else None


def bind_template(
    template: TemplateSpec | ChatTemplateSpec, lm: LanguageModel, source: str
) -> TemplateSpec | ChatTemplate:
    """The prompt template ``lm`` uses for the spec's ``llm.template``, bound to the spec (a chat template
    needs the tokenizer): patterns as given; ``chat``: the tokenizer's chat template (:class:`WeightsError`,
    naming ``source``, when it has none); no template: the chat template when the tokenizer has one, else
    ``nextgpt-legacy``. With a chat template the prompt's BOS is the template's own (none is added), and
    decoding also stops at the template's end-of-turn token."""
    if isinstance(template, TemplateSpec):
        return template
    if not getattr(lm.tokenizer, "chat_template", None):
        if template.type == "chat":
            raise WeightsError(
                f"llm.template: 'chat' uses the tokenizer's own chat template, but the tokenizer in {source} "
                "has none (no chat_template.jinja, nor chat_template in its tokenizer_config.json); give "
                "llm.template as 'nextgpt-legacy' or a mapping of patterns"
            )
        resolved: TemplateSpec | ChatTemplate = TemplateSpec()
    else:
        resolved = ChatTemplate.of(lm.tokenizer, source, template.media)
        lm.add_bos = False
        lm.end_of_turn_ids = resolved.end_of_turn_ids
    template.bind(resolved)
    return resolved
