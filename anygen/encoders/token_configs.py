"""Configs of the token-sequence encoders, readable without torch or transformers (the spec checks use them).

A token-sequence encoder returns ``[N, tokens, width]`` per modality instead of one pooled vector per input.
Its output shape is fixed by its config, so a pipeline spec can check it before any weights load:

* ``clip-vision-tokens`` / ``siglip-vision-tokens`` (:class:`VisionTokensConfig`): the patch features of one
  layer of a CLIP or SigLIP vision tower, LLaVA-style (``feature_layer: -2``, the penultimate layer; ``drop_cls``
  drops CLIP's class token; SigLIP has none). An image gives ``(image_size // patch_size) ** 2`` tokens (+1 with
  CLIP's class token kept). A video is ``num_video_frames`` evenly spaced frames through the same tower:
  ``video_tokens: mean`` averages each patch's features over the frames (as many tokens as an image),
  ``video_tokens: concat`` concatenates the frames' tokens in time order (``num_video_frames`` times as many).
* ``whisper-audio-tokens`` (:class:`WhisperTokensConfig`): a Whisper encoder's states of one layer
  (``feature_layer: -1``, its output), average-pooled over time by ``pool``. Audio is resampled to the
  feature extractor's rate and padded or cut to its window (30 s for the real models, whose encoder gives 1500
  states): ``max_source_positions // pool`` tokens per input, whatever its length.

A node built from ``config`` takes every field here (sizes for tiny random weights, and settings). A node
loaded from ``path`` reads the sizes from the folder's ``config.json``; its ``config`` may then hold only the
settings, which override the folder's ``anygen_encoder.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from anygen.errors import AnyGenError, WeightsError

SETTINGS_NAME = "anygen_encoder.json"
VIDEO_TOKENS = ("mean", "concat")


def _int(value: Any, what: str, *, minimum: int | None = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        kind = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise AnyGenError(f"{what} must be {kind}, got {value!r}")
    return value


def _check_layer(layer: Any, depth: int, what: str) -> None:
    """``layer`` indexes the tower's hidden states: 0 the embeddings, 1..depth the layers, negative from the end."""
    _int(layer, what, minimum=None)
    if not -(depth + 1) <= layer <= depth:
        raise AnyGenError(
            f"{what}={layer} is out of range: the tower has {depth} layers, so it must be in "
            f"{-(depth + 1)}..{depth} (0: the embeddings, -1: the last layer, -2: the penultimate)"
        )


@dataclass(frozen=True)
class VisionTokensConfig:
    """A CLIP vision tower's sizes (tiny defaults) and how its patch features become tokens."""

    hidden_size: int = 32  # the width of every token
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    image_size: int = 32
    patch_size: int = 8
    feature_layer: int = -2  # LLaVA: the penultimate layer
    drop_cls: bool | None = None  # CLIP: default True (LLaVA drops it); SigLIP has no class token
    num_video_frames: int = 4
    video_tokens: str = "mean"  # "mean" over frames, or "concat" the frames' tokens

    SIZES: ClassVar[tuple[str, ...]] = (
        "hidden_size",
        "num_layers",
        "num_heads",
        "intermediate_size",
        "image_size",
        "patch_size",
    )
    SETTINGS: ClassVar[tuple[str, ...]] = ("feature_layer", "drop_cls", "num_video_frames", "video_tokens")
    HAS_CLS: ClassVar[bool] = True
    MODALITIES: ClassVar[tuple[str, ...]] = ("image", "video")
    FAMILY: ClassVar[str] = "CLIP"

    def __post_init__(self) -> None:
        name = "config"
        for key in (*self.SIZES, "num_video_frames"):
            _int(getattr(self, key), f"{name}.{key}")
        if self.hidden_size % self.num_heads:
            raise AnyGenError(
                f"{name}.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.patch_size > self.image_size:
            raise AnyGenError(
                f"{name}.patch_size ({self.patch_size}) is larger than image_size ({self.image_size})"
            )
        _check_layer(self.feature_layer, self.num_layers, f"{name}.feature_layer")
        if self.drop_cls is not None and not isinstance(self.drop_cls, bool):
            raise AnyGenError(f"{name}.drop_cls must be true or false, got {self.drop_cls!r}")
        if not self.HAS_CLS and self.drop_cls is False:
            raise AnyGenError(f"{name}.drop_cls is false, but {self.FAMILY} has no class token to keep")
        if self.video_tokens not in VIDEO_TOKENS:
            raise AnyGenError(f"{name}.video_tokens must be one of {VIDEO_TOKENS}, got {self.video_tokens!r}")

    @property
    def width(self) -> int:
        return self.hidden_size

    @property
    def keeps_cls(self) -> bool:
        return self.HAS_CLS and self.drop_cls is False

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + int(self.keeps_cls)

    def tokens(self) -> dict[str, int]:
        """Tokens per input of each modality."""
        frames = self.num_video_frames if self.video_tokens == "concat" else 1
        return {"image": self.tokens_per_image, "video": frames * self.tokens_per_image}

    @staticmethod
    def sizes_from_hf(config: dict[str, Any]) -> dict[str, Any]:
        """The sizes in a transformers vision config (``vision_config`` of a whole model)."""
        return {
            "hidden_size": config.get("hidden_size", 768),
            "num_layers": config.get("num_hidden_layers", 12),
            "num_heads": config.get("num_attention_heads", 12),
            "intermediate_size": config.get("intermediate_size", 3072),
            "image_size": config.get("image_size", 224),
            "patch_size": config.get("patch_size", 32 if "clip" in config.get("model_type", "") else 16),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.SETTINGS}


@dataclass(frozen=True)
class SiglipTokensConfig(VisionTokensConfig):
    """A SigLIP vision tower: as :class:`VisionTokensConfig`, without a class token."""

    HAS_CLS: ClassVar[bool] = False
    FAMILY: ClassVar[str] = "SigLIP"


@dataclass(frozen=True)
class WhisperTokensConfig:
    """A Whisper encoder's sizes (tiny defaults), its feature extractor's, and the token settings."""

    d_model: int = 32  # the width of every token
    num_layers: int = 2
    num_heads: int = 2
    ffn_dim: int = 64
    num_mel_bins: int = 16
    max_source_positions: int = 50  # encoder states per window: the window is 2x that many mel frames
    sampling_rate: int = 16000
    hop_length: int = 160
    n_fft: int = 400
    feature_layer: int = -1  # the encoder's output (after its final layer norm)
    pool: int = 1  # average-pool the states over time by this stride

    SIZES: ClassVar[tuple[str, ...]] = (
        "d_model",
        "num_layers",
        "num_heads",
        "ffn_dim",
        "num_mel_bins",
        "max_source_positions",
        "sampling_rate",
        "hop_length",
        "n_fft",
    )
    SETTINGS: ClassVar[tuple[str, ...]] = ("feature_layer", "pool")
    MODALITIES: ClassVar[tuple[str, ...]] = ("audio",)

    def __post_init__(self) -> None:
        name = "config"
        for key in (*self.SIZES, "pool"):
            _int(getattr(self, key), f"{name}.{key}")
        if self.d_model % self.num_heads:
            raise AnyGenError(
                f"{name}.d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})"
            )
        _check_layer(self.feature_layer, self.num_layers, f"{name}.feature_layer")
        if self.pool > self.max_source_positions:
            raise AnyGenError(
                f"{name}.pool ({self.pool}) is larger than max_source_positions ({self.max_source_positions}): "
                "it would leave no token"
            )

    @property
    def width(self) -> int:
        return self.d_model

    @property
    def window_samples(self) -> int:
        """Samples in the encoder's window (2 mel frames per state, one frame per hop)."""
        return 2 * self.max_source_positions * self.hop_length

    def tokens(self) -> dict[str, int]:
        return {"audio": self.max_source_positions // self.pool}

    @staticmethod
    def sizes_from_hf(config: dict[str, Any], preprocessor: dict[str, Any] | None = None) -> dict[str, Any]:
        """The sizes in a transformers Whisper ``config.json`` (and ``preprocessor_config.json``)."""
        pre = preprocessor or {}
        return {
            "d_model": config.get("d_model", 768),
            "num_layers": config.get("encoder_layers", 12),
            "num_heads": config.get("encoder_attention_heads", 12),
            "ffn_dim": config.get("encoder_ffn_dim", 3072),
            "num_mel_bins": config.get("num_mel_bins", 80),
            "max_source_positions": config.get("max_source_positions", 1500),
            "sampling_rate": pre.get("sampling_rate", 16000),
            "hop_length": pre.get("hop_length", 160),
            "n_fft": pre.get("n_fft", 400),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.SETTINGS}


TokenConfig = VisionTokensConfig | WhisperTokensConfig

#: Encoder type -> its config class, and the ``model_type`` values its folders may have (whole model first).
TOKEN_ENCODERS: dict[str, tuple[type, tuple[str, ...]]] = {
    "clip-vision-tokens": (VisionTokensConfig, ("clip", "clip_vision_model")),
    "siglip-vision-tokens": (SiglipTokensConfig, ("siglip", "siglip_vision_model")),
    "whisper-audio-tokens": (WhisperTokensConfig, ("whisper",)),
}


def config_class(kind: str) -> type:
    if kind not in TOKEN_ENCODERS:
        raise AnyGenError(f"unknown token encoder type {kind!r}; expected one of {sorted(TOKEN_ENCODERS)}")
    return TOKEN_ENCODERS[kind][0]


def _known(cls: type, data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AnyGenError(f"config must be a mapping, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise AnyGenError(f"config has unknown fields {unknown}; expected a subset of {names}")
    return dict(data)


def from_config(kind: str, config: dict[str, Any] | None) -> TokenConfig:
    """The config of a node built with random weights (``None``: the tiny defaults); unknown keys are an error."""
    cls = config_class(kind)
    return cls(**_known(cls, config))


def read_json(path: Path, what: str = "config") -> dict[str, Any]:
    """The JSON object in ``path`` (an encoder folder's config or settings file); :class:`WeightsError` naming the
    file and ``what`` it was for otherwise. Light (no torch): the spec reads sizes with it too."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path} could not be read as a {what} (JSON): {exc}") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{path} is not a {what}: expected a JSON object, got {type(data).__name__}")
    return data


def folder_settings(folder: Path) -> dict[str, Any]:
    """The settings saved in a folder's ``anygen_encoder.json`` (none in a folder from the Hub)."""
    path = folder / SETTINGS_NAME
    if not path.is_file():
        return {}
    data = read_json(path)
    return {k: v for k, v in data.items() if k != "encoder"}


def vision_config_dict(kind: str, data: dict[str, Any], where: str) -> dict[str, Any]:
    """The vision tower's config from a folder's ``config.json``: a whole model's ``vision_config`` or the file."""
    whole, tower = TOKEN_ENCODERS[kind][1]
    model_type = data.get("model_type")
    if model_type == whole:
        return dict(data.get("vision_config") or {}, model_type=tower)
    if model_type == tower:
        return data
    raise AnyGenError(
        f"{where} has model_type {model_type!r}; expected {whole!r} (a whole model) or {tower!r} (a vision tower)"
    )


def from_folder(kind: str, folder: Path, overrides: dict[str, Any] | None = None) -> TokenConfig:
    """The config of a node loaded from ``folder``: sizes from its ``config.json``, settings from ``overrides``
    (the spec node's ``config``), else the folder's ``anygen_encoder.json``, else the defaults. A size given in
    ``overrides`` must agree with the folder."""
    cls = config_class(kind)
    where = folder / "config.json"
    data = read_json(where)
    if kind == "whisper-audio-tokens":
        if data.get("model_type") != "whisper":
            raise AnyGenError(f"{where} has model_type {data.get('model_type')!r}; expected 'whisper'")
        pre_path = folder / "preprocessor_config.json"
        sizes = cls.sizes_from_hf(data, read_json(pre_path) if pre_path.is_file() else None)
    else:
        sizes = cls.sizes_from_hf(vision_config_dict(kind, data, str(where)))
    given = _known(cls, overrides)
    for key in cls.SIZES:
        if key in given and given[key] != sizes[key]:
            raise AnyGenError(f"config.{key}={given[key]!r}, but {where} gives {sizes[key]!r}")
    saved = {k: v for k, v in folder_settings(folder).items() if k in cls.SETTINGS}
    settings = {**saved, **{k: v for k, v in given.items() if k in cls.SETTINGS}}
    return cls(**sizes, **settings)


def declared(kind: str, config: dict[str, Any] | None) -> TokenConfig:
    """The config of a node whose ``path`` is not there yet: its ``config`` must declare the sizes that fix
    its output shape (the others keep their defaults)."""
    cls = config_class(kind)
    needed = (
        ("d_model", "max_source_positions")
        if cls is WhisperTokensConfig
        else ("hidden_size", "num_layers", "image_size", "patch_size")
    )
    missing = [k for k in needed if k not in (config or {})]
    if missing:
        raise AnyGenError(
            f"cannot tell its output shape: its path is not there yet and its config does not declare {missing}"
        )
    return from_config(kind, config)


def with_settings(config: TokenConfig, **settings: Any) -> TokenConfig:
    """``config`` with some settings replaced (validated again)."""
    return replace(config, **{k: v for k, v in settings.items() if v is not None})
