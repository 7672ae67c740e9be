"""A real local Ray Serve app for the serving tests (one per test module): started, yielded, shut down."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_service(app_name: str) -> Iterator[str]:
    """The tiny pipeline served as ``app_name`` on a fresh local Ray instance; yields its base URL."""
    import ray
    from ray import serve

    from anygen.serve.app import base_url, connect, deploy
    from anygen.serve.config import ServeConfig

    config = ServeConfig.from_dict(
        {
            "app_name": app_name,
            "http": {"host": "127.0.0.1", "port": free_port()},
            "ray": {"num_cpus": 2},
            "limits": {"max_media_bytes": 1_000_000, "max_body_bytes": 3_000_000},
        }
    )
    if ray.is_initialized():
        ray.shutdown()
    assert connect(config) is True  # a new local instance
    try:
        deploy(config)
        yield base_url(config)
    finally:
        serve.shutdown()
        ray.shutdown()
