"""``WorldConfig``: the vocabulary, media sizes and compositional hold-out of the shapes-and-tones world.

A config is data: ``WorldConfig.from_yaml(path)``, ``to_dict()`` / ``from_dict()``. Errors are
:class:`WorldError` naming the file and the field (``world.yaml: holdout.2: unknown colour 'pink'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from anygen.errors import AnyGenError

RGB = tuple[int, int, int]
#: The words the renderer can draw, per field.
_DRAWABLE = {
    "shapes": ("circle", "square", "triangle"),
    "positions": ("left", "center", "right"),
    "directions": ("left", "right", "up", "down"),
    "patterns": ("steady", "beeping"),
}


class WorldError(AnyGenError):
    """A world config is unreadable or invalid; the message names the file and the field."""


#: 9 of the 45 (colour, shape, position) combinations (20%), never in any training image or caption. One
#: colour per (shape, position) pair, colour index = (3 * shape + position) mod 5: every colour, shape and
#: position, and every pair of them, still appears in training.
DEFAULT_HOLDOUT: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "left"),
    ("green", "circle", "center"),
    ("blue", "circle", "right"),
    ("yellow", "square", "left"),
    ("purple", "square", "center"),
    ("red", "square", "right"),
    ("green", "triangle", "left"),
    ("blue", "triangle", "center"),
    ("yellow", "triangle", "right"),
)


class WorldConfig(BaseModel):
    """The world's vocabulary (attribute words in the order used everywhere), media sizes and hold-out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    colours: dict[str, RGB] = Field(
        default_factory=lambda: {
            "red": (220, 30, 30),
            "green": (30, 180, 30),
            "blue": (30, 60, 220),
            "yellow": (230, 210, 30),
            "purple": (150, 40, 190),
        }
    )
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    positions: tuple[str, ...] = ("left", "center", "right")
    directions: tuple[str, ...] = ("left", "right", "up", "down")
    pitches: dict[str, float] = Field(default_factory=lambda: {"low": 262.0, "mid": 523.0, "high": 1047.0})
    patterns: tuple[str, ...] = ("steady", "beeping")
    image_size: int = Field(32, ge=16, le=1024)
    video_size: int = Field(32, ge=16, le=1024)
    num_frames: int = Field(8, ge=2, le=256)
    sample_rate: int = Field(16000, ge=4000, le=96000)
    audio_seconds: float = Field(1.0, ge=0.5, le=30.0)
    jitter: bool = True
    holdout: tuple[tuple[str, str, str], ...] = DEFAULT_HOLDOUT
    seed: int = 0

    @field_validator("colours")
    @classmethod
    def _check_colours(cls, value: dict[str, RGB]) -> dict[str, RGB]:
        if not value:
            raise ValueError("needs at least one colour")
        for name, rgb in value.items():
            if not all(0 <= c <= 255 for c in rgb):
                raise ValueError(f"colour {name!r}: RGB values must lie in 0..255, got {list(rgb)}")
            if min(rgb) > 155:
                raise ValueError(f"colour {name!r} {list(rgb)} is too close to the white background")
        return value

    @field_validator("pitches")
    @classmethod
    def _check_pitches(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("needs at least one pitch")
        for name, hz in value.items():
            if not 50 <= hz <= 4000:
                raise ValueError(f"pitch {name!r}: {hz} Hz is outside 50..4000 Hz")
        return value

    @field_validator("shapes", "positions", "directions", "patterns")
    @classmethod
    def _check_words(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        allowed = _DRAWABLE[info.field_name]
        if not value or any(v not in allowed for v in value) or len(set(value)) != len(value):
            raise ValueError(
                f"{info.field_name} are drawn from {', '.join(allowed)} (each once); got {list(value)}"
            )
        return value

    @model_validator(mode="after")
    def _check_holdout(self) -> WorldConfig:
        vocab = (("colour", list(self.colours)), ("shape", self.shapes), ("position", self.positions))
        for i, triple in enumerate(self.holdout):
            for (what, names), word in zip(vocab, triple, strict=True):
                if word not in names:
                    raise _FieldError(f"holdout.{i}", f"unknown {what} {word!r} (known: {', '.join(names)})")
        if len(set(self.holdout)) != len(self.holdout):
            raise _FieldError("holdout", "a combination is listed twice")
        seen = [t for t in self.all_combinations() if t not in set(self.holdout)]
        for k, (what, names) in enumerate(vocab):
            missing = [n for n in names if not any(t[k] == n for t in seen)]
            if missing:
                raise _FieldError("holdout", f"holds out every combination with the {what} {missing[0]!r}")
        return self

    # -- the world's combinations ---------------------------------------------------------------------
    def all_combinations(self) -> list[tuple[str, str, str]]:
        """Every (colour, shape, position), colours outermost."""
        return [(c, s, p) for c in self.colours for s in self.shapes for p in self.positions]

    def seen_combinations(self) -> list[tuple[str, str, str]]:
        """The (colour, shape, position) combinations that training images and captions may show."""
        held = set(self.holdout)
        return [t for t in self.all_combinations() if t not in held]

    def is_held_out(self, colour: str, shape: str, position: str) -> bool:
        return (colour, shape, position) in set(self.holdout)

    # -- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples): what ``world.yaml`` holds."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "world config") -> WorldConfig:
        if not isinstance(data, dict):
            raise WorldError(f"{source}: expected a mapping of world settings, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise WorldError(f"{source}: {_one_line(err)}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> WorldConfig:
        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = "does not exist" if not path.exists() else f"cannot be read ({err})"
            raise WorldError(f"world config {str(path)!r} {reason}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise WorldError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
        return cls.from_dict({} if data is None else data, source=str(path))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


class _FieldError(ValueError):
    """A cross-field problem found after the fields were validated; names its field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _one_line(err: ValidationError) -> str:
    """Every problem as ``field: what is wrong``, on one line."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<top level>"
        cause = e.get("ctx", {}).get("error")
        if isinstance(cause, _FieldError):  # a cross-field check: it names its own field
            where, msg = cause.field, cause.message
        elif e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "value_error":
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
        else:
            msg = e["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def load_world(config: WorldConfig | str | Path | dict | None) -> WorldConfig:
    """A :class:`WorldConfig` from a config, a YAML path, a dict, or None (the default world)."""
    if config is None:
        return DEFAULT_WORLD
    if isinstance(config, WorldConfig):
        return config
    if isinstance(config, dict):
        return WorldConfig.from_dict(config)
    return WorldConfig.from_yaml(config)


DEFAULT_WORLD = WorldConfig()


def is_held_out(colour: str, shape: str, position: str, config: WorldConfig = DEFAULT_WORLD) -> bool:
    """Whether (colour, shape, position) is one of the world's held-out combinations."""
    return config.is_held_out(colour, shape, position)
