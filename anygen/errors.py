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
