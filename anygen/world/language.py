"""The world's language: captions, user prompts (with paraphrases) and answers, and the inverse, reading the
attribute words back out of a text.

Captions name every attribute in fixed words: ``A red circle on the left.``, ``A blue square.``, ``A green
triangle moving up.``, ``A high beeping tone.`` An answer that makes media is the caption followed by the
signal tag (``A red circle on the left.<image>``), as anygen's pair lists read in generation; an answer in text
is the caption alone. Prompt templates are fixed lists; ``variant`` picks one (modulo the list's length).
"""

from __future__ import annotations

import re

from anygen.world.config import DEFAULT_WORLD, WorldConfig

WHERE = {"left": "on the left", "center": "in the center", "right": "on the right"}

#: User prompts per task form; ``{where}`` is ``on the left`` / ``in the center`` / ``on the right``.
PROMPTS: dict[str, tuple[str, ...]] = {
    "text->image": (
        "draw a {colour} {shape} {where}",
        "make a picture of a {colour} {shape} {where}",
        "show me an image of a {colour} {shape} {where}",
        "paint a {colour} {shape} {where}",
    ),
    "text->image (any position)": (
        "draw a {colour} {shape}",
        "make a picture of a {colour} {shape}",
        "show me an image of a {colour} {shape}",
    ),
    "text->video": (
        "show a video of a {colour} {shape} moving {direction}",
        "animate a {colour} {shape} moving {direction}",
        "make a video of a {colour} {shape} moving {direction}",
    ),
    "text->audio": (
        "play a {pitch} {pattern} tone",
        "let me hear a {pitch} {pattern} tone",
        "make a {pitch} {pattern} sound",
    ),
    "image->text": (
        "<image> what is in this image?",
        "<image> describe this picture.",
        "<image> what do you see?",
    ),
    "video->text": ("<video> what happens in this video?", "<video> describe this video."),
    "audio->text": ("<audio> what do you hear?", "<audio> describe this sound."),
    "image->video": (
        "<image> animate this shape moving {direction}",
        "<image> make a video of this shape moving {direction}",
    ),
    "video->image": (
        "<video> draw the shape from this video",
        "<video> make a picture of the shape in this video",
    ),
}

#: Two outputs at once: the two single-output prompts joined (``draw a red circle and play a low steady tone``).
JOIN = " and "


def _pick(form: str, variant: int) -> str:
    templates = PROMPTS[form]
    return templates[variant % len(templates)]


def _a(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


# -- captions ------------------------------------------------------------------------------------------
def image_caption(colour: str, shape: str, position: str | None = None) -> str:
    """``A red circle on the left.`` / ``A blue square.`` (no position)."""
    where = f" {WHERE[position]}" if position else ""
    return f"{_a(colour)} {colour} {shape}{where}."


def video_caption(colour: str, shape: str, direction: str) -> str:
    """``A green triangle moving up.``"""
    return f"{_a(colour)} {colour} {shape} moving {direction}."


def audio_caption(pitch: str, pattern: str) -> str:
    """``A high beeping tone.``"""
    return f"{_a(pitch)} {pitch} {pattern} tone."


# -- prompts -------------------------------------------------------------------------------------------
def image_prompt(colour: str, shape: str, position: str | None = None, variant: int = 0) -> str:
    """``draw a red circle on the left`` (``draw a blue square`` without a position)."""
    if position is None:
        return _pick("text->image (any position)", variant).format(colour=colour, shape=shape)
    return _pick("text->image", variant).format(colour=colour, shape=shape, where=WHERE[position])


def video_prompt(colour: str, shape: str, direction: str, variant: int = 0) -> str:
    """``show a video of a green triangle moving up``"""
    return _pick("text->video", variant).format(colour=colour, shape=shape, direction=direction)


def audio_prompt(pitch: str, pattern: str, variant: int = 0) -> str:
    """``play a high beeping tone``"""
    return _pick("text->audio", variant).format(pitch=pitch, pattern=pattern)


def describe_prompt(modality: str, variant: int = 0) -> str:
    """``<image> what is in this image?`` / ``<video> what happens in this video?`` / ``<audio> what do you hear?``"""
    return _pick(f"{modality}->text", variant)


def image_to_video_prompt(direction: str, variant: int = 0) -> str:
    """``<image> animate this shape moving right``"""
    return _pick("image->video", variant).format(direction=direction)


def video_to_image_prompt(variant: int = 0) -> str:
    """``<video> draw the shape from this video``"""
    return _pick("video->image", variant)


def joint_prompt(*prompts: str) -> str:
    """Several requests in one prompt: ``draw a red circle and play a low steady tone``."""
    return JOIN.join(prompts)


def answer(*parts: tuple[str, str | None]) -> str:
    """The assistant's answer from ``(caption, modality)`` parts: each caption, followed by its signal tag when
    it describes a medium being made (``modality`` ``"image"``/``"video"``/``"audio"``; ``None`` for text)."""
    return " ".join(f"{caption}<{m}>" if m else caption for caption, m in parts)


# -- reading attributes back ---------------------------------------------------------------------------
def parse_attributes(text: str, config: WorldConfig = DEFAULT_WORLD) -> dict[str, str]:
    """The attribute words a text names: ``colour``, ``shape``, ``position``, ``direction``, ``pitch``,
    ``pattern`` (only those present; the first mention of each wins).

    ``left``/``right`` after ``moving`` are a direction, elsewhere a position (``on the left``, ``left``);
    ``centre`` counts as ``center``. Signal tags (``<image>``) are ignored.
    """
    text = re.sub(r"<[^>]*>", " ", text.lower()).replace("centre", "center")
    found: dict[str, tuple[int, str]] = {}

    def note(key: str, pos: int, word: str) -> None:
        if key not in found or pos < found[key][0]:
            found[key] = (pos, word)

    def words(names) -> str:
        return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))

    for key, names in (
        ("colour", config.colours),
        ("shape", config.shapes),
        ("pitch", config.pitches),
        ("pattern", config.patterns),
    ):
        for m in re.finditer(rf"\b({words(names)})\b", text):
            note(key, m.start(), m.group(1))
    for m in re.finditer(rf"\bmoving\s+(?:to\s+the\s+)?({words(config.directions)})\b", text):
        note("direction", m.start(), m.group(1))
    for m in re.finditer(rf"(\bmoving\s+(?:to\s+the\s+)?)?\b({words(config.positions)})\b", text):
        if m.group(1) is None:
            note("position", m.start(2), m.group(2))
    return {
        k: found[k][1] for k in ("colour", "shape", "position", "direction", "pitch", "pattern") if k in found
    }


#: Prompts that show what a world-trained pipeline does (the demo offers them; `mini`'s spec lists them). The
#: green triangle on the left is a held-out combination: no training image or caption holds it.
EXAMPLE_PROMPTS = (
    "draw a red circle on the left",
    "show a video of a green triangle moving up",
    "play a high beeping tone",
    "draw a blue square and play a low steady tone",
    "draw a green triangle on the left",
)
