"""``anygen serve``: the HTTP API on Ray Serve, on this machine or an existing Ray cluster.

Ray is imported only when the command runs, so ``anygen --help`` works without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import time

from anygen.errors import AnyGenError


def _replicas(value: str) -> tuple[str, int]:
    name, sep, count = value.partition("=")
    if not sep or name not in ("llm", "ingress", "image", "video", "audio") or not count.isdigit():
        raise argparse.ArgumentTypeError(
            f"expected DEPLOYMENT=N with DEPLOYMENT one of llm, ingress, image, video, audio; got {value!r}"
        )
    if int(count) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: at least 1 replica")
    return name, int(count)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the pipeline over HTTP with Ray Serve (this machine, or a Ray cluster)",
        description=(
            "Serve POST /v1/generate, GET /healthz and GET /v1/pipelines. Without --address (or RAY_ADDRESS) "
            "a local Ray instance is started; with one, the same application is deployed to that cluster. "
            "Needs the 'serve' extra: pip install 'anygen[serve]'."
        ),
    )
    p.add_argument(
        "--pipeline",
        default=None,
        help="bundled name, spec .yaml, or saved folder (default: $ANYGEN_PIPELINE or mini)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="serving config YAML (replicas, resources, limits); see serving/default.yaml",
    )
    p.add_argument("--host", default=None, help="HTTP host (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: 8000)")
    p.add_argument(
        "--address",
        default=None,
        help="an existing Ray cluster, e.g. ray://head:10001 or head:6379 (default: $RAY_ADDRESS, else local)",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs of a local Ray instance (default: all)")
    p.add_argument(
        "--replicas",
        type=_replicas,
        action="append",
        default=[],
        metavar="DEPLOYMENT=N",
        help="replica count of a deployment, e.g. image=2 (repeatable; overrides the config)",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="deploy and exit, leaving the application running on the cluster (with --address)",
    )
    p.set_defaults(handler=run)


def _config(args: argparse.Namespace):
    from anygen.serve.config import load_config

    config = load_config(args.config)
    overrides = {}
    for key, value in (
        ("pipeline", args.pipeline),
        ("http.host", args.host),
        ("http.port", args.port),
        ("ray.num_cpus", args.num_cpus),
        ("ray.num_gpus", args.num_gpus),
    ):
        if value is not None:
            overrides[key] = value
    for name, count in args.replicas:
        section = name if name in ("llm", "ingress") else f"generators.{name}"
        overrides[f"{section}.num_replicas"] = count
        overrides[f"{section}.autoscaling"] = None
    return config.with_overrides(**overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    from anygen.spec import load_spec

    spec = load_spec(config.pipeline)  # a bad pipeline fails here, before Ray starts
    # Not imported yet: connect() sets environment variables Ray reads when it is imported.
    if importlib.util.find_spec("ray") is None:
        raise AnyGenError("anygen serve needs Ray Serve: pip install 'anygen[serve]'")
    from anygen.serve.app import base_url, connect, deploy

    local = connect(config, args.address)
    if args.detach and local:
        raise AnyGenError(
            "--detach needs a Ray cluster (--address or RAY_ADDRESS); a local instance ends with this command"
        )
    from ray import serve

    try:
        deploy(config, spec, local=local)
        url = base_url(config)
        print(f"anygen: serving {spec.name!r} at {url}/v1/generate (health: {url}/healthz)", flush=True)
        if args.detach:
            return 0
        print("anygen: press Ctrl-C to stop", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        if not args.detach:
            try:
                if local:
                    serve.shutdown()
                else:
                    serve.delete(config.app_name)
            finally:
                import ray

                ray.shutdown()
    return 0
