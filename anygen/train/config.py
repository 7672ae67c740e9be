"""``TrainConfig``: every setting of a training run, validated before anything is built.

Errors name the field (``train config: lr: must be greater than 0``). Every number must be finite (no
``inf``/``nan``) and seeds lie in 0..2**32-1 (what numpy and accelerate's ``set_seed`` take). A config comes
from keyword arguments,
a dict, a YAML file (``--config``) or the command line; the command line overrides the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from anygen.errors import AnyGenError

#: The largest seed: numpy's (and so accelerate's ``set_seed``) limit.
MAX_SEED = 2**32 - 1

STAGE_NAMES: dict[int | str, str] = {
    "lm": "language pre-training: the whole LLM (+ input projectors where media come in), LM loss",
    1: "encoding-side alignment (X -> caption): input projectors",
    2: "decoding-side alignment (text -> X): output projectors",
    3: "instruction tuning: LoRA on the LLM + input and output projectors",
}


class ConfigError(AnyGenError):
    """A training setting is invalid; the message names the field."""


class LoraSettings(BaseModel):
    """LoRA on the LLM (stage 3). NExT-GPT's legacy run: r=32, alpha=32, dropout 0.1 on q/k/v/o."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    r: int = Field(32, ge=1, description="rank")
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )
    save: Literal["merged", "adapter"] = Field(
        "merged",
        description="merged: the LoRA is merged into llm/; adapter: llm/ holds the LLM without it and "
        "llm-lora/ the peft adapter",
    )


class TrainConfig(BaseModel):
    """One training run. ``batch_size`` is per process; one optimizer step sees
    ``batch_size * grad_accum * num_processes`` examples."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    stage: Literal["lm", 1, 2, 3]
    pipeline: str = Field(
        "tiny", description="bundled name, spec .yaml, or folder saved with save_pretrained"
    )
    data: str = Field(description="DATA.yaml, or one NExT-GPT JSON file")
    out: str = Field(description="output folder: the trained pipeline, metrics.jsonl, checkpoints/")
    media_root: str | None = Field(None, description="media folder for a JSON given as data")
    embed_root: str | None = Field(None, description="folder of NExT-GPT's *.npy caption embeddings")
    task: Literal["auto", "comprehension", "generation"] = Field(
        "auto", description="how a pair list (cc3m.json...) given as data is read"
    )
    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    stop_after: int | None = Field(
        None, ge=1, description="stop after this step (saving a checkpoint); resume later with resume"
    )
    batch_size: int = Field(4, ge=1, description="examples per process per micro-batch")
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.001, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int | None = Field(None, ge=0, description="default: warmup_ratio * max_steps")
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (None: off)")
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    cpu: bool = Field(False, description="train on the CPU even when an accelerator is present")
    seed: int = Field(13, ge=0, le=MAX_SEED, description="0..2**32-1")
    max_length: int = Field(512, ge=8, description="tokens per sequence (longer ones are cut)")
    # losses
    lm_weight: float = Field(1.0, ge=0)
    align_loss: Literal["l2", "mse"] = Field(
        "l2",
        description="l2: NExT-GPT's mean over tokens of the per-token Euclidean norm; mse: mean squared error",
    )
    align_weight: float = Field(1.0, ge=0)
    diffusion_weight: float = Field(0.0, ge=0, description="frozen UNet noise-prediction loss (0: off)")
    snr_gamma: float | None = Field(None, gt=0, description="min-SNR weighting of the diffusion loss")
    train_signal_tokens: bool = Field(
        True, description="train the signal tokens' rows of the LLM embeddings and LM head (stages 2, 3)"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    # caption embeddings
    embed_cache: str | None = Field(None, description="caption-embedding cache folder (default OUT/cache)")
    recompute_embeddings: bool = Field(
        False, description="encode target captions at every step instead of once (for comparison)"
    )
    # data
    feature_cache: int = Field(
        100_000,
        ge=0,
        description="input media whose frozen-encoder features are kept in memory (not decoded again)",
    )
    latent_cache: int = Field(
        2_000, ge=0, description="target media whose VAE latents are kept (diffusion loss)"
    )
    skip_bad: bool = Field(False, description="skip (and count) entries whose media is missing or unreadable")
    # bookkeeping
    save_every: int = Field(
        0, ge=0, description="checkpoint every N steps (0: only at the end of stop_after)"
    )
    keep_checkpoints: int | None = Field(None, ge=1, description="keep only the newest N checkpoints")
    log_every: int = Field(1, ge=1)
    resume: str | None = Field(None, description="a checkpoint folder, or an output folder (its newest)")
    progress: bool = True
    verbose: bool = Field(True, description="print the data, trainable-parameter and schedule summaries")
    tensorboard: bool = Field(True, description="also log to OUT/tensorboard when tensorboard is installed")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.stop_after is not None and self.stop_after > self.max_steps:
            raise ValueError(f"stop_after ({self.stop_after}) is beyond max_steps ({self.max_steps})")
        if self.warmup_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) is beyond max_steps ({self.max_steps})")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")
        return self

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, source: TrainConfig | dict[str, Any] | None = None, /, **overrides: Any) -> TrainConfig:
        """A config from another config, a dict and/or keyword arguments (these win), with clear errors."""
        base = source.model_dump() if isinstance(source, TrainConfig) else dict(source or {})
        base.update(overrides)
        for key in ("data", "out", "pipeline", "media_root", "embed_root", "embed_cache", "resume"):
            if isinstance(base.get(key), Path):
                base[key] = str(base[key])
        if isinstance(base.get("stage"), str) and base["stage"].isdigit():
            base["stage"] = int(base["stage"])
        try:
            return cls.model_validate(base)
        except ValidationError as err:
            raise ConfigError(f"train config: {format_validation_error(err)}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """A config from a YAML file of settings; ``overrides`` win."""
        return cls.build(cls.read_yaml(path), **overrides)

    @staticmethod
    def read_yaml(path: str | Path) -> dict[str, Any]:
        """The settings in a YAML file, not validated yet."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"train config {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        return data

    # -- derived --------------------------------------------------------------------------------------
    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(round(self.warmup_ratio * self.max_steps))

    @property
    def out_dir(self) -> Path:
        return Path(self.out).expanduser()

    @property
    def cache_dir(self) -> Path:
        return Path(self.embed_cache).expanduser() if self.embed_cache else self.out_dir / "cache"


def format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif e["type"] == "missing":
            msg = "missing (required)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


class ComponentConfig(BaseModel):
    """Settings of a one-process component trainer (``--stage generator`` / ``encoder``): built from a dict and
    keyword overrides, with errors that name the field (``<what> train config: lr: ...``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    what: ClassVar[str] = "component"

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Hook: adjust raw values (e.g. split a comma-separated list) before validation."""
        return data

    @classmethod
    def build(cls, source: dict[str, Any] | None = None, /, **overrides: Any):
        data = cls._prepare({**(source or {}), **overrides})
        data = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"{cls.what} train config: {format_validation_error(err)}") from None

    @classmethod
    def of(cls, config: Any = None, /, **overrides: Any):
        """``config`` (an instance of this class, a dict or None) with ``overrides``, validated."""
        return cls.build(config.model_dump() if isinstance(config, cls) else dict(config or {}), **overrides)

    def start_run(self) -> tuple[Path, Path]:
        """Create the output folder (``out``) with an empty ``metrics.jsonl``: ``(folder, metrics file)``."""
        out = Path(self.out).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        metrics = out / "metrics.jsonl"
        metrics.write_text("")
        return out, metrics
