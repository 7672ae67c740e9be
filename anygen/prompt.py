"""Turn a conversation (text + media) into prompt segments following a spec's template.

Segments are text strings and :class:`MediaSlot` markers; the pipeline replaces each slot with the
projected features of that input. A user's text may place inputs with ``<image>``, ``<audio>`` and
``<video>`` tags (NExT-GPT's data format); inputs without a tag go before the text, in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from anygen.errors import AnyGenError
from anygen.spec import MODALITIES, TemplateSpec

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


def user_content_segments(turn: Turn, template: TemplateSpec) -> list[str | MediaSlot]:
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


def conversation_segments(turns: list[Turn], template: TemplateSpec) -> list[tuple[str | MediaSlot, int]]:
    """Segments of the whole conversation, each paired with the index of the turn it came from.

    The conversation must end with a user turn; the prompt ends where the assistant's answer begins.
    """
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
