"""Serving ``anygen`` over HTTP with Ray Serve: one machine or a Ray cluster, the same code.

The pipeline graph is split into deployments that scale separately:

* ``llm``: encoders, input projectors, the LLM and the output projectors; it returns, for each kind of
  media the answer asks for, the generator's conditioning (:meth:`AnyToAnyPipeline.condition`);
* ``image_generator``, ``video_generator``, ``audio_generator``: one generator each
  (:meth:`AnyToAnyPipeline.generate_media`), called only when an answer asks for that kind;
* ``ingress``: the HTTP API (``POST /v1/generate``, OpenAI's ``POST /v1/chat/completions`` and ``GET /v1/models``
  (:mod:`anygen.serve.chat`), ``GET /healthz``, ``GET /v1/pipelines``, ``GET /v1/stats``): it validates
  requests, calls the LLM side, then the generators it needs, concurrently.

Ray is imported only by :mod:`anygen.serve.deployments`, :mod:`anygen.serve.app` and the ``serve`` command's
handler, so the config and request schemas can be used (and tested) without it.
"""

from anygen.serve.config import DeploymentConfig, LimitsConfig, ServeConfig, load_config
from anygen.serve.schema import GenerateRequest, GenerateResponse

__all__ = [
    "DeploymentConfig",
    "GenerateRequest",
    "GenerateResponse",
    "LimitsConfig",
    "ServeConfig",
    "load_config",
]
