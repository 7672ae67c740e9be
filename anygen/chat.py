"""Multi-turn chat: history kept, features of media already seen reused."""

from __future__ import annotations

from typing import Any

from anygen.output import AnyToAnyOutput
from anygen.prompt import Turn


class Conversation:
    """Talk to a pipeline over several turns.

    Each :meth:`send` runs the pipeline on the whole history plus the new message. Media encoded in an
    earlier turn are not encoded again (their projected features are cached by content).
    """

    def __init__(self, pipeline, **defaults: Any) -> None:
        self.pipeline = pipeline
        self.defaults = defaults
        self.turns: list[Turn] = []
        self.feature_cache: dict = {}

    def send(self, text: str, images=None, audios=None, videos=None, **options: Any) -> AnyToAnyOutput:
        from anygen.pipeline import _MEDIA_ARGS, _load, _per_prompt

        # One path, str, PIL image, array or Audio/Video counts as one item, as in ``pipe(...)`` and diffusers.
        inputs = {"image": images, "audio": audios, "video": videos}
        loaded = {
            m: [_load(m, x, j) for j, x in enumerate(_per_prompt(items, 1, False, _MEDIA_ARGS[m])[0])]
            for m, items in inputs.items()
        }
        out = self.pipeline(
            text,
            images=loaded["image"],
            audios=loaded["audio"],
            videos=loaded["video"],
            history=self.turns,
            feature_cache=self.feature_cache,
            **{**self.defaults, **options},
        )
        self.turns.append(Turn("user", text, loaded))
        self.turns.append(Turn("assistant", out.text))
        return out

    def undo(self) -> None:
        """Forget the last exchange (for "regenerate")."""
        del self.turns[-2:]

    def clear(self) -> None:
        self.turns.clear()
        self.feature_cache.clear()
