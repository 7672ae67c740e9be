"""Multi-turn chat: history kept, features of media already seen reused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from anygen.errors import ContextLengthError
from anygen.messages import MessageError, parse_messages, read_turns, turn_message
from anygen.output import AnyToAnyOutput
from anygen.prompt import Turn


class Conversation:
    """Talk to a pipeline over several turns.

    Each :meth:`send` runs the pipeline on the whole history plus the new message. Media encoded in an
    earlier turn are not encoded again (their projected features are cached by content). ``messages``: an earlier
    conversation in the chat-message format (:mod:`anygen.messages`) to go on from; :attr:`messages` gives the
    conversation back in that format.
    """

    def __init__(
        self, pipeline, messages: Sequence[Mapping[str, Any]] | None = None, **defaults: Any
    ) -> None:
        self.pipeline = pipeline
        self.defaults = defaults
        self.turns: list[Turn] = []
        self.system: str | None = None  # a system message (kept when old turns are dropped)
        self._answers: list[
            dict[str, Any]
        ] = []  # per assistant turn: the answer as a message, media included
        self.feature_cache: dict = {}
        self.dropped_turns = 0  # turns dropped so that the conversation fits in the LLM's context
        if messages:
            self._load(messages)

    def _load(self, messages: Sequence[Mapping[str, Any]]) -> None:
        turns = read_turns(messages, limits=self.defaults.get("limits") or self.pipeline.limits)
        if turns[0].role == "system":
            self.system = turns.pop(0).text
        if turns and turns[-1].role == "user":
            raise MessageError(
                f"messages[{len(messages) - 1}]: the history ends with the user's message; start the conversation "
                "without it and send it with Conversation.send"
            )
        self.turns = turns
        start = 1 if self.system is not None else 0
        self._answers = [dict(m) for m in messages[start:] if m.get("role") == "assistant"]

    def send(self, text: Any, images=None, audios=None, videos=None, **options: Any) -> AnyToAnyOutput:
        """Answer ``text`` after the history: a string (with ``images=`` etc.), a user message dict, or a list of
        content parts (:mod:`anygen.messages`). When the history, the message and ``max_new_tokens`` do not fit in
        the LLM's context, the oldest exchanges are dropped (counted in :attr:`dropped_turns`) until they do; a
        message that does not fit even alone raises :class:`~anygen.errors.ContextLengthError`."""
        from anygen.pipeline import _MEDIA_ARGS, _load, _per_prompt

        call = {**self.defaults, **options}
        limits = call.get("limits") or self.pipeline.limits
        message = text
        if isinstance(message, str):
            # One path, str, PIL image, array or Audio/Video counts as one item, as in ``pipe(...)`` and diffusers.
            inputs = {"image": images, "audio": audios, "video": videos}
            loaded = {
                m: [
                    _load(m, x, j, limits)
                    for j, x in enumerate(_per_prompt(items, 1, False, _MEDIA_ARGS[m])[0])
                ]
                for m, items in inputs.items()
            }
        else:
            if any(x is not None for x in (images, audios, videos)):
                raise MessageError(
                    "images/audios/videos: with a chat message, inputs go in the message's parts"
                )
            msg = message if isinstance(message, Mapping) else {"role": "user", "content": message}
            if msg.get("role") != "user":
                raise MessageError(
                    f"text: Conversation.send takes the user's message (role 'user'), got role {msg.get('role')!r}"
                )
            parsed = parse_messages([msg], limits=limits)
            text, loaded = parsed.prompt, parsed.media
        while True:
            history = ([Turn("system", self.system)] if self.system is not None else []) + self.turns
            try:
                out = self.pipeline(
                    text,
                    images=loaded.get("image", []),
                    audios=loaded.get("audio", []),
                    videos=loaded.get("video", []),
                    history=history,
                    feature_cache=self.feature_cache,
                    **call,
                )
                break
            except ContextLengthError:
                if not self.turns:
                    raise
                del self.turns[:2]  # the oldest exchange (a user turn and its answer)
                del self._answers[:1]
                self.dropped_turns += 2
        self.turns.append(Turn("user", text, loaded))
        self.turns.append(Turn("assistant", out.text))
        self._answers.append(out.to_message())
        return out

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages: the system message, user messages with their media parts, and the
        answers with the media they made (see :meth:`AnyToAnyOutput.to_message`)."""
        out: list[dict[str, Any]] = (
            [{"role": "system", "content": self.system}] if self.system is not None else []
        )
        answers = iter(self._answers)
        out += [next(answers) if turn.role == "assistant" else turn_message(turn) for turn in self.turns]
        return out

    def undo(self) -> None:
        """Forget the last exchange (for "regenerate")."""
        del self.turns[-2:]
        del self._answers[-1:]

    def clear(self) -> None:
        self.turns.clear()
        self._answers.clear()
        self.feature_cache.clear()
