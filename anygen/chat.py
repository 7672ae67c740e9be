"""Multi-turn chat: history kept, features of media already seen reused."""

from __future__ import annotations

from typing import Any

from anygen.errors import ContextLengthError
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
        self.dropped_turns = 0  # turns dropped so that the conversation fits in the LLM's context

    def send(self, text: str, images=None, audios=None, videos=None, **options: Any) -> AnyToAnyOutput:
        """Answer ``text`` after the history. When the history, the message and ``max_new_tokens`` do not fit in
        the LLM's context, the oldest exchanges are dropped (counted in :attr:`dropped_turns`) until they do;
        a message that does not fit even alone raises :class:`~anygen.errors.ContextLengthError`."""
        from anygen.pipeline import _MEDIA_ARGS, _load, _per_prompt

        call = {**self.defaults, **options}
        limits = call.get("limits") or self.pipeline.limits
        # One path, str, PIL image, array or Audio/Video counts as one item, as in ``pipe(...)`` and diffusers.
        inputs = {"image": images, "audio": audios, "video": videos}
        loaded = {
            m: [_load(m, x, j, limits) for j, x in enumerate(_per_prompt(items, 1, False, _MEDIA_ARGS[m])[0])]
            for m, items in inputs.items()
        }
        while True:
            try:
                out = self.pipeline(
                    text,
                    images=loaded["image"],
                    audios=loaded["audio"],
                    videos=loaded["video"],
                    history=self.turns,
                    feature_cache=self.feature_cache,
                    **call,
                )
                break
            except ContextLengthError:
                if not self.turns:
                    raise
                del self.turns[:2]  # the oldest exchange (a user turn and its answer)
                self.dropped_turns += 2
        self.turns.append(Turn("user", text, loaded))
        self.turns.append(Turn("assistant", out.text))
        return out

    def undo(self) -> None:
        """Forget the last exchange (for "regenerate")."""
        del self.turns[-2:]

    def clear(self) -> None:
        self.turns.clear()
        self.feature_cache.clear()
