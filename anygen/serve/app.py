"""Build the Ray Serve application from a pipeline spec and a :class:`~anygen.serve.config.ServeConfig`, and
deploy it: on a local Ray instance, or on an existing cluster (``address``/``RAY_ADDRESS``) with the same code.

For Ray's own tooling (``serve run``, ``serve deploy``, KubeRay's RayService), :func:`app_builder` is an
application builder: ``serve run anygen.serve.app:app_builder config=serving/default.yaml pipeline=mini``.
"""

from __future__ import annotations

import ipaddress
import os
import warnings
from typing import Any

from anygen.pipeline import AnyToAnyPipeline
from anygen.serve.config import ServeConfig, ServeConfigError, load_config
from anygen.spec import PipelineSpec, load_spec


def pipeline_info(spec: PipelineSpec, config: ServeConfig) -> dict[str, Any]:
    """What ``GET /v1/pipelines`` says about the served pipeline (no model is built)."""
    pipe = AnyToAnyPipeline(spec)
    return {
        "name": spec.name,
        "description": spec.description,
        "inputs": pipe.input_modalities,
        "outputs": pipe.output_modalities,
        "llm_defaults": dict(spec.llm.defaults),
        "generator_defaults": {m: dict(out.generator.defaults) for m, out in spec.outputs.items()},
        "deployments": {
            "llm": _scaling(config.llm),
            **{f"{m}_generator": _scaling(config.generator(m)) for m in spec.outputs},
        },
        "limits": config.limits.model_dump(),
    }


def _scaling(deployment) -> dict[str, Any]:
    out = deployment.model_dump(include={"num_cpus", "num_gpus", "max_ongoing_requests"})
    if deployment.autoscaling is not None:
        out["autoscaling"] = deployment.autoscaling.model_dump()
    else:
        out["num_replicas"] = deployment.num_replicas
    return out


def build_app(config: ServeConfig, spec: PipelineSpec | None = None):
    """The application: ``ingress`` -> ``llm`` and one ``<modality>_generator`` per output of the spec."""
    from anygen.serve.deployments import GeneratorServer, Ingress, LLMServer

    spec = spec if spec is not None else load_spec(config.pipeline)
    limits = config.limits.work_limits()
    llm = LLMServer.options(name="llm", **config.llm.ray_options()).bind(
        spec, config.llm.torch_device, config.llm.torch_threads, limits
    )
    generators = {}
    for modality in spec.outputs:
        cfg = config.generator(modality)
        generators[modality] = GeneratorServer.options(
            name=f"{modality}_generator", **cfg.ray_options()
        ).bind(spec, modality, cfg.torch_device, cfg.torch_threads, limits)
    return Ingress.options(name="ingress", **config.ingress.ray_options()).bind(
        pipeline_info(spec, config), config.limits, llm, generators, spec
    )


def app_builder(args: dict[str, str]):
    """For ``serve run anygen.serve.app:app_builder [config=FILE] [pipeline=NAME|PATH]`` and Serve config files."""
    config = load_config(args.get("config"))
    if args.get("pipeline"):
        config = config.with_overrides(pipeline=args["pipeline"])
    return build_app(config)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(config: ServeConfig, address: str | None = None) -> bool:
    """Join the Ray cluster at ``address`` (else ``config.ray.address``, else ``RAY_ADDRESS``), or start a local
    instance. Returns True when a local instance was started (the caller shuts it down).

    A local instance serving a loopback host keeps Ray itself on loopback too (Ray otherwise registers the
    machine's network address, so that other nodes could join), and sends no usage statistics. Both are
    environment settings Ray reads on import, so this must run before anything imports ``ray``.
    """
    address = address or config.ray.address or os.environ.get("RAY_ADDRESS") or None
    runtime_env = config.ray.runtime_env or None
    if address is not None:
        import ray

        ray.init(address=address, runtime_env=runtime_env, ignore_reinit_error=True)
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if _is_loopback(config.http.host):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    kwargs: dict[str, Any] = {}
    if _is_loopback(config.http.host):
        kwargs["_node_ip_address"] = "127.0.0.1"
    ray.init(
        address="local",
        num_cpus=config.ray.num_cpus,
        num_gpus=config.ray.num_gpus,
        include_dashboard=config.ray.include_dashboard,
        runtime_env=runtime_env,
        **kwargs,
    )
    return True


def check_resources(
    config: ServeConfig, outputs: list[str], available: dict[str, float], *, local: bool = True
) -> None:
    """Refuse (on a local instance) a config whose replicas need more CPUs/GPUs than Ray has: their
    replicas would wait forever. A cluster may add nodes (autoscaler), so there it is only a warning."""
    need = config.reserved(outputs)
    short = [
        f"{need[r]:g} {r}s, the Ray instance has {available.get(r, 0):g}"
        for r in ("CPU", "GPU")
        if need[r] > available.get(r, 0) + 1e-9
    ]
    if not short:
        return
    message = (
        f"the deployments reserve {'; '.join(short)}: lower num_cpus/num_gpus or replicas in the serve "
        "config"
        + (
            ", or give the local instance more (--num-cpus/--num-gpus; they are Ray's accounting)"
            if local
            else ""
        )
    )
    if local:
        raise ServeConfigError(message)
    warnings.warn(message + "; replicas wait until the cluster has room", stacklevel=2)


def deploy(
    config: ServeConfig, spec: PipelineSpec | None = None, *, blocking: bool = False, local: bool = True
):
    """Start Serve's HTTP proxy on ``config.http`` (if Serve is not running yet) and deploy the application;
    returns the ingress handle once every replica is up. Ray must be initialised (:func:`connect`)."""
    import ray
    from ray import serve

    spec = spec if spec is not None else load_spec(config.pipeline)
    check_resources(config, list(spec.outputs), ray.cluster_resources(), local=local)
    serve.start(http_options={"host": config.http.host, "port": config.http.port})
    app = build_app(config, spec)
    return serve.run(app, name=config.app_name, route_prefix=config.route_prefix, blocking=blocking)


def base_url(config: ServeConfig) -> str:
    host = config.http.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{config.http.port}{config.route_prefix.rstrip('/')}"
