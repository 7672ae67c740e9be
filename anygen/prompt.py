"""Turn a conversation (text + media) into prompt segments following a spec's template.

Segments are text strings and :class:`MediaSlot` markers; the pipeline replaces each slot with the
projected features of that input. A user's text may place inputs with ``<image>``, ``<audio>`` and
``<video>`` tags (NExT-GPT's data format); inputs without a tag go before the text, in order.

A template of patterns (:class:`~anygen.spec.TemplateSpec`) is applied here; a tokenizer's chat template
(:mod:`anygen.chat_template`) renders the conversation itself, with the same user content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from anygen.errors import AnyGenError
from anygen.spec import MODALITIES, ChatTemplateSpec, TemplateSpec

if TYPE_CHECKING:
    from anygen.chat_template import ChatTemplate

_TAG = re.compile(r"<(image|audio|video)>")


@dataclass(frozen=True)
class MediaSlot:
    modality: str
    index: int  # index into the turn's inputs of that modality


@dataclass
class Turn:
    role: str  # "user", "assistant", or "system" (first turn only: replaces the template's system text)
    text: str
    media: dict[str, list] = field(default_factory=dict)  # modality -> inputs (for user turns)


def user_content_segments(turn: Turn, template: TemplateSpec | ChatTemplate) -> list[str | MediaSlot]:
    """The user's text with every input in place, wrapped in the template's media markers."""
    counts = {m: len(turn.media.get(m, [])) for m in MODALITIES}
    tags = [m.group(1) for m in _TAG.finditer(turn.text)]
    for modality in MODALITIES:
        n_tags = tags.count(modality)
        if n_tags and n_tags != counts[modality]:
            raise AnyGenError(
                f"prompt has {n_tags} <{modality}> placeholder(s) but {counts[modality]} {modality} input(s) "
                "were given"
            )
    segments: list[str | MediaSlot] = []

    def slot(modality: str, index: int) -> None:
        before, after = template.media.get(modality, ("", ""))
        segments.extend([before, MediaSlot(modality, index), after])

    for modality in MODALITIES:  # untagged inputs go first
        if modality not in tags:
            for i in range(counts[modality]):
                slot(modality, i)
    seen = dict.fromkeys(MODALITIES, 0)
    pos = 0
    for match in _TAG.finditer(turn.text):
        segments.append(turn.text[pos : match.start()])
        modality = match.group(1)
        slot(modality, seen[modality])
        seen[modality] += 1
        pos = match.end()
    segments.append(turn.text[pos:])
    return segments


def resolve_template(template: TemplateSpec | ChatTemplateSpec | ChatTemplate) -> TemplateSpec | ChatTemplate:
    """The template in use: a spec's ``chat`` (or omitted) template is the one bound when the LLM was built."""
    return template.resolved if isinstance(template, ChatTemplateSpec) else template


def conversation_segments(
    turns: list[Turn], template: TemplateSpec | ChatTemplateSpec | ChatTemplate
) -> list[tuple[str | MediaSlot, int]]:
    """Segments of the whole conversation, each paired with the index of the turn it came from (-1: the
    template's own text).

    The conversation must end with a user turn; the prompt ends where the assistant's answer begins.
    """
    template = resolve_template(template)
    if not isinstance(template, TemplateSpec):  # a tokenizer's chat template
        return template.segments(turns)
    if not turns or turns[-1].role != "user":
        raise AnyGenError("a conversation must end with a user turn")
    out: list[tuple[str | MediaSlot, int]] = []
    first = 0
    if turns[0].role == "system":
        out.append((system_text(turns[0].text, template), -1))
        first = 1
    elif template.system:
        out.append((template.system, -1))
    for t, turn in enumerate(turns[first:], first):
        if turn.role not in ("user", "assistant"):
            raise AnyGenError(f"turn {t}: role {turn.role!r}; only the first turn may be 'system'")
        pattern = template.user if turn.role == "user" else template.assistant
        before, _, after = pattern.partition("{content}")
        content = user_content_segments(turn, template) if turn.role == "user" else [turn.text]
        out.extend((seg, t) for seg in [before, *content, after])
    return [(seg, t) for seg, t in out if not (isinstance(seg, str) and seg == "")]


def system_text(content: str, template: TemplateSpec) -> str:
    """A system message as the template writes it (in place of its own ``system`` text)."""
    if template.system_turn is None:
        raise AnyGenError("this pipeline's prompt template takes no system message (llm.template.system_turn is null)")
    return template.system_turn.replace("{content}", content)
