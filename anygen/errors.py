"""Exceptions anygen raises for bad input; each names what was wrong."""

from __future__ import annotations


class AnyGenError(ValueError):
    """Base class for errors caused by user input (bad files, specs, arguments)."""


class MediaError(AnyGenError):
    """A media input (image, audio, video) is missing, unreadable or malformed."""


class SpecError(AnyGenError):
    """A pipeline spec is invalid; the message names the node and the field."""


class WeightsError(AnyGenError):
    """Checkpoint files are missing, incomplete or do not match what the spec expects."""


class OptionError(AnyGenError):
    """One or more call options are invalid. ``problems`` holds ``(option, message)`` pairs; ``fields`` the
    option names (dotted for per-modality values, e.g. ``guidance_scale.image``)."""

    def __init__(self, problems: list[tuple[str, str]] | tuple[str, str]):
        if isinstance(problems, tuple):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("; ".join(f"{name}: {message}" for name, message in self.problems))

    @property
    def fields(self) -> list[str]:
        return [name for name, _ in self.problems]


class LimitError(OptionError):
    """A call asks for more work than the front end's :class:`~anygen.options.Limits` allow."""


class GenerationError(AnyGenError):
    """A generator made media that cannot be written: NaN or infinite values (an extreme ``guidance_scale``,
    or broken weights). Nothing is cast or saved; ``fields`` names the option most likely at fault."""

    def __init__(self, message: str, *, field: str = "guidance_scale"):
        super().__init__(message)
        self.fields = [field]


class ContextLengthError(AnyGenError):
    """The prompt (with the chat history) and ``max_new_tokens`` do not fit in the LLM's context window."""

    def __init__(self, message: str, *, needed: int, window: int, field: str = "prompt"):
        super().__init__(message)
        self.needed = needed
        self.window = window
        self.fields = [field]


class Interrupted(AnyGenError):
    """A call stopped before it finished: its time limit passed, or its caller went away."""
