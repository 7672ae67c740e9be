"""The serving config: how each deployment scales, what it asks Ray for, and the limits on a request.

A YAML file (``serving/default.yaml`` holds the defaults, with comments) read by :func:`load_config`; a bad field
raises :class:`ServeConfigError` naming the field, e.g. ``generators.video.num_gpus: must be >= 0``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from anygen.errors import AnyGenError
from anygen.options import Limits
from anygen.spec import default_pipeline, format_validation_error

Modality = Literal["image", "video", "audio"]
GENERATOR_MODALITIES: tuple[Modality, ...] = ("image", "video", "audio")


class ServeConfigError(AnyGenError):
    """The serving config is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingConfig(_Strict):
    """Ray Serve autoscaling: replicas follow the number of ongoing requests per replica."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is more than max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self

    def ray(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class DeploymentConfig(_Strict):
    """One deployment: a fixed ``num_replicas`` or ``autoscaling`` limits, and each replica's resources."""

    num_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingConfig | None = None
    num_cpus: float = Field(0.5, ge=0, description="CPUs Ray reserves for each replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs (or a fraction) Ray reserves for each replica")
    max_ongoing_requests: int = Field(
        4, ge=1, description="requests a replica holds at once (it runs one model call at a time)"
    )
    max_queued_requests: int = Field(
        -1, ge=-1, description="requests waiting for a replica before new ones get 503; -1: no limit"
    )
    torch_threads: int = Field(1, ge=1, description="torch CPU threads in each replica")
    device: str | None = Field(None, description="torch device; default cuda when num_gpus > 0, else cpu")

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> DeploymentConfig:
        if self.autoscaling is not None and self.num_replicas != 1:
            raise ValueError("give num_replicas or autoscaling, not both")
        return self

    @property
    def torch_device(self) -> str:
        return self.device or ("cuda" if self.num_gpus > 0 else "cpu")

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        threads = str(self.torch_threads)
        options: dict[str, Any] = {
            "ray_actor_options": {
                "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus,
                "runtime_env": {
                    "env_vars": {
                        "OMP_NUM_THREADS": threads,
                        "MKL_NUM_THREADS": threads,
                        "TOKENIZERS_PARALLELISM": "false",
                    }
                },
            },
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.ray()
        else:
            options["num_replicas"] = self.num_replicas
        return options


def _ingress_defaults() -> DeploymentConfig:
    return DeploymentConfig(num_cpus=0.0, max_ongoing_requests=64)


class LimitsConfig(_Strict):
    """What one ``POST /v1/generate`` may ask for; more is refused with a 4xx naming the field.

    The work limits (``max_prompt_chars`` to ``max_input_video_pixels``, and ``request_timeout_s``) are the
    pipeline's own :class:`~anygen.options.Limits` (:meth:`work_limits`), checked before any model runs."""

    max_body_bytes: int = Field(64_000_000, ge=1, description="the whole JSON body (413 above)")
    max_media_bytes: int = Field(20_000_000, ge=1, description="one decoded input file (413 above)")
    max_media_items: int = Field(4, ge=0, description="inputs of each kind (images, audios, videos)")
    max_prompt_chars: int = Field(8_000, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    max_inference_steps: int = Field(100, ge=1)
    max_image_side: int = Field(2048, ge=8, description="height and width, in pixels")
    max_image_pixels: int = Field(1024 * 1024, ge=1, description="height x width of one image")
    max_num_frames: int = Field(64, ge=1)
    max_video_pixels: int = Field(576 * 320 * 64, ge=1, description="height x width x num_frames of a video")
    max_audio_seconds: float = Field(30.0, gt=0)
    max_input_pixels: int = Field(25_000_000, ge=1, description="one input image or video frame (400 above)")
    max_input_video_pixels: int = Field(200_000_000, ge=1, description="all frames of one input video")
    request_timeout_s: float = Field(
        300.0, gt=0, description="504 when the models take longer; the replicas then stop the request's work"
    )

    def work_limits(self) -> Limits:
        """These limits as the pipeline's :class:`~anygen.options.Limits` (``max_seconds``: the timeout)."""
        names = {f.name for f in dataclasses.fields(Limits)} - {"max_seconds"}
        return Limits(**{name: getattr(self, name) for name in names}, max_seconds=self.request_timeout_s)


class HTTPConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


class RayConfig(_Strict):
    """How ``anygen serve`` reaches Ray. ``address`` (or ``--address``/``RAY_ADDRESS``) names a cluster;
    without one a local instance is started with ``num_cpus``/``num_gpus`` (Ray's detection when None)."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0)
    include_dashboard: bool = False
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime_env for the job, e.g. pip or py_modules on a cluster"
    )


class ServeConfig(_Strict):
    """Everything ``anygen serve`` deploys: the pipeline, HTTP, Ray and one entry per deployment."""

    pipeline: str = Field(
        default_factory=default_pipeline,
        description="bundled pipeline name, spec .yaml, or saved folder (default: $ANYGEN_PIPELINE or mini)",
    )
    app_name: str = "anygen"
    route_prefix: str = "/"
    http: HTTPConfig = Field(default_factory=HTTPConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    ingress: DeploymentConfig = Field(default_factory=_ingress_defaults)
    llm: DeploymentConfig = Field(default_factory=DeploymentConfig)
    generators: dict[Modality, DeploymentConfig] = Field(
        default_factory=lambda: {m: DeploymentConfig() for m in GENERATOR_MODALITIES}
    )

    @model_validator(mode="after")
    def _prefix(self) -> ServeConfig:
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        return self

    def deployments(self, outputs: list[str]) -> dict[str, DeploymentConfig]:
        """Each deployment's config by its name, for a pipeline with these ``outputs``."""
        return {
            "ingress": self.ingress,
            "llm": self.llm,
            **{f"{m}_generator": self.generator(m) for m in outputs},
        }

    def reserved(self, outputs: list[str]) -> dict[str, float]:
        """CPUs and GPUs Ray must reserve to start every deployment (at its initial or minimum replicas)."""
        total = {"CPU": 0.0, "GPU": 0.0}
        for cfg in self.deployments(outputs).values():
            if cfg.autoscaling is None:
                n = cfg.num_replicas
            else:
                n = cfg.autoscaling.initial_replicas
                n = cfg.autoscaling.min_replicas if n is None else n
            total["CPU"] += n * cfg.num_cpus
            total["GPU"] += n * cfg.num_gpus
        return total

    def generator(self, modality: str) -> DeploymentConfig:
        """The deployment config of ``modality``'s generator (the defaults when the file has none)."""
        return self.generators.get(modality) or DeploymentConfig()  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "serve config") -> ServeConfig:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ServeConfigError(
                f"{source}: expected a mapping at the top level, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ServeConfigError(
                f"{source}: invalid serve config:\n{format_validation_error(err)}"
            ) from None

    def with_overrides(self, **overrides: Any) -> ServeConfig:
        """A copy with dotted fields replaced, e.g. ``{"http.port": 8001, "generators.image.num_replicas": 2}``."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            node = data
            *parents, last = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
        return type(self).from_dict(data, source="serve config overrides")


def load_config(path: str | Path | None = None) -> ServeConfig:
    """The config in the YAML file ``path``; the built-in defaults (``serving/default.yaml``) when None."""
    if path is None:
        return ServeConfig()
    path = Path(path).expanduser()
    if not path.is_file():
        raise ServeConfigError(f"serve config {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ServeConfigError(f"{path}: not valid YAML: {err}") from None
    return ServeConfig.from_dict(data, source=str(path))
