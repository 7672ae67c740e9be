"""The Ray Serve deployments: the LLM side, one generator each, and the HTTP ingress.

Each replica builds its part of the pipeline from the same :class:`~anygen.spec.PipelineSpec` and runs the
pipeline's own code: :meth:`AnyToAnyPipeline.condition` on the LLM side, :meth:`AnyToAnyPipeline.generate_media`
in a generator, so a seed gives the service the same output as a local ``pipe(...)`` call. A replica runs one
model call at a time on its own thread; its event loop stays free for ``stats`` and health checks.

A request's work stops when it is no longer wanted: each model call polls (at every token and denoising step)
whether its caller was cancelled (the client disconnected, or the ingress gave up) or its time limit
(``limits.request_timeout_s``) passed, so a stuck or abandoned request frees its replica. A call still running
well past its time limit (one step that never ends) makes ``ping`` report the replica as stuck.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from anygen.errors import AnyGenError, Interrupted, MediaError
from anygen.options import Limits
from anygen.serve.config import LimitsConfig
from anygen.serve.schema import (
    MEDIA_FIELDS,
    FieldError,
    GenerateResponse,
    RequestError,
    check_limits,
    decode_media,
    error_fields,
    option_error,
    parse_request,
)
from anygen.spec import PipelineSpec

logger = logging.getLogger("ray.serve")
STUCK_GRACE_S = 30.0  # a call this long past its time limit is reported stuck by ping()


class _Replica:
    """A replica's model thread (one call at a time, ``torch_threads`` torch threads) and its counters."""

    def _start(self, kind: str, torch_threads: int) -> None:
        import torch

        self.kind = kind
        self.counts: Counter[str] = Counter()
        self.started = time.time()
        self._busy: tuple[float, float | None] | None = None  # (started, deadline) of the running call
        torch.set_num_threads(torch_threads)
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"anygen-{kind}",
            initializer=torch.set_num_threads,
            initargs=(torch_threads,),
        )

    async def _run(self, fn, timeout_s: float | None = None):
        """``fn(interrupt)`` on the model thread. ``interrupt()`` turns True when this coroutine is cancelled
        (the caller went away) or ``timeout_s`` (counted from now, queueing included) have passed; the
        pipeline polls it and stops, so the thread is free for the next call."""
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        deadline = None if timeout_s is None else time.monotonic() + max(float(timeout_s), 0.0)

        def interrupt() -> bool:
            return cancelled.is_set() or (deadline is not None and time.monotonic() > deadline)

        def work():
            if interrupt():  # abandoned or expired while it waited for the thread
                raise Interrupted("the request was abandoned or ran out of time before it started")
            self._busy = (time.monotonic(), deadline)
            try:
                return fn(interrupt)
            finally:
                self._busy = None

        try:
            return await loop.run_in_executor(self._executor, work)
        except asyncio.CancelledError:
            cancelled.set()
            self.counts["cancelled"] += 1
            raise

    def stats(self) -> dict[str, Any]:
        """This replica's counters: ``calls`` (requests that reached it), ``failures``, its id and pid."""
        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (tests)
            replica = None
        return {
            "deployment": self.kind,
            "replica": replica,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            **{k: self.counts[k] for k in ("calls", "failures", "cancelled", "timeouts")},
            "busy_s": None if self._busy is None else round(time.monotonic() - self._busy[0], 3),
        }

    def ping(self) -> str:
        """``"ok"``, or ``"stuck: ..."`` when the running call is well past its time limit (it has not reached
        a point where it can stop: one denoising step or decode that does not end)."""
        busy = self._busy
        if busy is not None and busy[1] is not None:
            late = time.monotonic() - busy[1]
            if late > STUCK_GRACE_S:
                running = time.monotonic() - busy[0]
                return f"stuck: a call has run {running:.0f} s, {late:.0f} s past its time limit"
        return "ok"

    def _refused(self, err: AnyGenError) -> dict:
        """A request the pipeline refused (or stopped), as the ``{"error": ...}`` the ingress answers with."""
        self.counts["failures"] += 1
        if isinstance(err, Interrupted):
            self.counts["timeouts"] += 1
            status, kind = 504, "timeout"
        elif isinstance(err, MediaError):
            status, kind = 400, "bad_media"
        else:
            status, kind = 422, "invalid_request"
        fields = [{"field": f, "message": str(err)} for f in error_fields(err)]
        if status == 422 and getattr(err, "problems", None):
            fields = [{"field": f, "message": m} for f, m in err.problems]
        return {"error": {"status": status, "type": kind, "message": str(err), "fields": fields}}


@serve.deployment(name="llm")
class LLMServer(_Replica):
    """Encoders, input projectors, LLM and output projectors: a prompt in, the text and each kind of media's
    generator conditioning out."""

    def __init__(
        self, spec: PipelineSpec, device: str = "cpu", torch_threads: int = 1, limits: Limits | None = None
    ):
        from anygen.pipeline import AnyToAnyPipeline

        self._start("llm", torch_threads)
        self.pipe = AnyToAnyPipeline(spec, limits=limits or Limits.service()).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        # Build this side's components now: the first request should not pay for it.
        _ = self.pipe.llm
        for name, proj in spec.input_projectors.items():
            self.pipe.encoder(proj.encoder)
            self.pipe.input_projector(name)
        for modality in spec.outputs:
            self.pipe.output_projector(modality)

    async def condition(
        self,
        prompt: str,
        media: dict[str, list],
        options: dict[str, Any],
        timeout_s: float | None = None,
        history: list | None = None,
    ) -> dict:
        """``{"text", "token_ids", "seed", "media": {modality: {"owners", "conditioning"}}, "prompt_tokens",
        "finish_reason"}``, or ``{"error": {...}}`` when the pipeline refuses the input (bad media: 400, other:
        422) or it ran out of time (504). ``media``: each kind's inputs (file bytes, or loaded images, audio,
        video); ``history``: earlier :class:`~anygen.prompt.Turn` s (a system turn first, if any)."""
        self.counts["calls"] += 1
        try:
            answer = await self._run(
                lambda interrupt: self._condition(prompt, media, options, history, interrupt), timeout_s
            )
        except AnyGenError as err:
            return self._refused(err)
        except Exception:
            self.counts["failures"] += 1
            raise
        return self._answer(answer, options)

    async def condition_stream(
        self,
        prompt: str,
        media: dict[str, list],
        options: dict[str, Any],
        timeout_s: float | None = None,
        history: list | None = None,
    ):
        """:meth:`condition`, streamed (call it with ``handle.options(stream=True)``): ``{"delta": text}`` as the
        answer's text grows (the deltas add up to the final text), then :meth:`condition`'s dict, or
        ``{"error": ...}``. The first item comes with the LLM's first token, every check passed (``{"started":
        True}`` when that token adds no text yet), so an error before it is the first item. Closing the stream
        (the client went away) stops the call at its next token."""
        from anygen.serve.chat import TextDeltas

        self.counts["calls"] += 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        tokenizer = self.pipe.llm.tokenizer
        deltas = TextDeltas(
            self.pipe.spec.llm.template.stop,
            hold_last_word=bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)),
        )
        started = False

        def on_text(partial: str) -> None:  # on the model thread
            nonlocal started
            delta = deltas.push(partial)
            if not started or delta:
                item = {"delta": delta} if delta else {"started": True}
                started = True
                loop.call_soon_threadsafe(queue.put_nowait, item)

        task = asyncio.ensure_future(
            self._run(
                lambda interrupt: self._condition(prompt, media, options, history, interrupt, on_text),
                timeout_s,
            )
        )
        get: asyncio.Future | None = None
        try:
            while not task.done():
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    yield get.result()
                else:
                    get.cancel()
            while not queue.empty():  # what the model thread sent before it finished
                yield queue.get_nowait()
            try:
                answer = task.result()
            except AnyGenError as err:
                yield self._refused(err)
                return
            except Exception:
                self.counts["failures"] += 1
                raise
            out = self._answer(answer, options)
            rest = deltas.finish(out["text"])
            if rest:
                yield {"delta": rest}
            yield out
        finally:
            if get is not None and not get.done():
                get.cancel()
            if not task.done():  # the caller closed the stream: stop the call
                task.cancel()

    def _condition(self, prompt, media, options, history, interrupt, on_text=None):
        return self.pipe.condition(
            prompt,
            images=media.get("image", []),
            audios=media.get("audio", []),
            videos=media.get("video", []),
            history=history or None,
            interrupt=interrupt,
            on_text=on_text,
            **options,
        )

    def _answer(self, answer, options: dict[str, Any]) -> dict:
        from anygen.options import CallOptions

        out = answer.outputs[0]
        budget = self.pipe._sampling_options(CallOptions.from_kwargs(**options)).max_new_tokens
        signals = {t for span in self.pipe.llm.spans.values() for t in span.token_ids}
        ids = list(out.token_ids)
        while ids and ids[-1] in signals:  # signal spans at the end may be forced after the answer ended
            ids.pop()
        return {
            "text": out.text,
            "token_ids": out.token_ids,
            "seed": answer.seed,
            "media": {
                m: {"owners": r.owners, "conditioning": r.conditioning.detach().cpu()}
                for m, r in answer.media.items()
            },
            "prompt_tokens": answer.prompt_tokens[0] if answer.prompt_tokens else 0,
            # "length": the answer ran out of new tokens (not counting the signal spans closing it)
            "finish_reason": "length" if len(ids) >= budget else "stop",
        }


@serve.deployment
class GeneratorServer(_Replica):
    """One generator (one modality): conditioning in, encoded media files out (PNG, MP4 or WAV bytes)."""

    def __init__(
        self,
        spec: PipelineSpec,
        modality: str,
        device: str = "cpu",
        torch_threads: int = 1,
        limits: Limits | None = None,
    ):
        from anygen.pipeline import AnyToAnyPipeline

        self._start(f"{modality}_generator", torch_threads)
        self.modality = modality
        self.pipe = AnyToAnyPipeline(spec, limits=limits or Limits.service()).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.generator(modality)  # built now, and only this one
        self._failures_to_inject = 0
        self._crash = False

    async def generate(
        self,
        conditioning,
        owners: list[int],
        seed: int,
        options: dict[str, Any],
        timeout_s: float | None = None,
    ) -> dict:
        """``{"files": [PNG/MP4/WAV bytes, one per row]}``, or ``{"error": {...}}`` (422 for bad options, 504
        when it ran out of time)."""
        from anygen.serve.codec import encode_media

        self.counts["calls"] += 1
        try:
            if self._failures_to_inject > 0:
                self._failures_to_inject -= 1
                if self._crash:
                    os._exit(1)
                raise RuntimeError(f"{self.kind}: injected failure (fail_next)")

            def work(interrupt) -> list[bytes]:
                made = self.pipe.generate_media(
                    self.modality, conditioning, owners, seed=seed, interrupt=interrupt, **options
                )
                return [encode_media(self.modality, item) for item in made]

            return {"files": await self._run(work, timeout_s)}
        except AnyGenError as err:  # the request's options do not suit this generator, or time ran out
            return self._refused(err)
        except Exception:
            self.counts["failures"] += 1
            raise

    def fail_next(self, n: int = 1, crash: bool = False) -> None:
        """Fault injection for tests and drills: the next ``n`` calls to this replica raise (or, with
        ``crash=True``, kill the replica's process, which Ray Serve then replaces)."""
        self._failures_to_inject = n
        self._crash = crash


def _replica_error(e: dict[str, Any], prefix: str = "") -> RequestError:
    fields = [FieldError(**f) for f in e.get("fields") or []]
    return RequestError(e["status"], e["type"], prefix + e["message"], fields)


def _error_response(err: RequestError, openai: bool = False) -> JSONResponse:
    return JSONResponse(err.openai_body() if openai else err.body(), status_code=err.status)


def _backend_error(what: str, err: BaseException) -> RequestError:
    """A failure behind the ingress as a 5xx: 503 when a replica is gone or the queue is full, else 500."""
    import ray.exceptions
    from ray.serve.exceptions import BackPressureError

    if isinstance(err, asyncio.TimeoutError):
        return RequestError(504, "timeout", f"the {what} did not answer in time")
    if isinstance(err, BackPressureError):
        return RequestError(503, "overloaded", f"the {what} is at capacity; retry later")
    if isinstance(err, ray.exceptions.RayActorError):
        return RequestError(503, "unavailable", f"the {what} replica died; retry (it is being replaced)")
    cause = getattr(err, "cause", None) or err
    message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
    return RequestError(500, "generation_failed", f"the {what} failed: {type(cause).__name__}: {message}")


@serve.deployment(name="ingress")
class Ingress:
    """The HTTP API: ``POST /v1/generate``, ``POST /v1/chat/completions`` and ``GET /v1/models`` (OpenAI's API,
    :mod:`anygen.serve.chat`), ``GET /healthz``, ``GET /v1/pipelines``, ``GET /v1/stats``."""

    def __init__(
        self,
        info: dict[str, Any],
        limits: LimitsConfig,
        llm,
        generators: dict[str, Any],
        spec: PipelineSpec | None = None,
    ):
        from anygen.pipeline import AnyToAnyPipeline

        self.info = info
        self.limits = limits
        self.llm = llm
        self.generators = generators
        # The pipeline's own checks of a request, before it reaches a model (no model is built here).
        self.pipe = AnyToAnyPipeline(spec, limits=limits.work_limits()) if spec is not None else None
        self.created = int(time.time())
        self.calls: Counter[str] = Counter()  # requests this ingress sent to each deployment
        self.responses: Counter[str] = Counter()  # responses by status code

    # -- routing ----------------------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        path = "/" + path.strip("/")
        routes = {
            "/v1/generate": ("POST", self._generate),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/models": ("GET", self._models),
            "/healthz": ("GET", self._healthz),
            "/v1/pipelines": ("GET", self._pipelines),
            "/v1/stats": ("GET", self._stats),
        }
        openai = path in ("/v1/chat/completions", "/v1/models")  # errors in OpenAI's shape
        try:
            if path not in routes:
                raise RequestError(404, "not_found", f"no endpoint {path}; try {', '.join(routes)}")
            method, handler = routes[path]
            if request.method != method:
                raise RequestError(405, "method_not_allowed", f"{path} takes {method}, not {request.method}")
            response = await handler(request)
        except asyncio.CancelledError:  # the client went away: the replicas' work is cancelled with it
            self.responses["cancelled"] += 1
            raise
        except RequestError as err:
            response = _error_response(err, openai)
        except Exception as err:  # a bug here: still a JSON 500, and the next request is served
            logger.exception("ingress: unexpected error")
            response = _error_response(
                RequestError(500, "internal", f"internal error: {type(err).__name__}: {err}"), openai
            )
        self.responses[str(response.status_code)] += 1
        return response

    # -- endpoints --------------------------------------------------------------------------------------
    async def _healthz(self, request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "pipeline": self.info["name"]}
        if request.query_params.get("deep") in ("1", "true"):
            names = {"llm": self.llm, **{f"{m}_generator": h for m, h in self.generators.items()}}
            results = await asyncio.gather(
                *(asyncio.wait_for(_response(h.ping.remote()), 10) for h in names.values()),
                return_exceptions=True,
            )
            body["deployments"] = {  # "ok", "stuck: ..." (a call past its time limit), or the error
                n: r if isinstance(r, str) else f"error: {type(r).__name__}"
                for n, r in zip(names, results, strict=True)
            }
            if any(v != "ok" for v in body["deployments"].values()):
                body["status"] = "degraded"
                return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    async def _pipelines(self, request: Request) -> Response:
        return JSONResponse({"pipelines": [self.info]})

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    def stats(self) -> dict[str, Any]:
        """Calls this ingress replica made to each deployment, and its responses by status code."""
        return {"calls": dict(self.calls), "responses": dict(self.responses)}

    async def _generate(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await self._read_body(request)
        req = parse_request(body)
        check_limits(req, self.limits, inputs=self.info["inputs"], outputs=self.info["outputs"])
        if self.pipe is not None:
            try:
                self.pipe.check_inputs(
                    req.prompt, images=req.images, audios=req.audios, videos=req.videos, options=req.options
                )
            except AnyGenError as err:
                raise option_error(err) from None
        media = {
            modality: [
                decode_media(value, f"{name}[{i}]", self.limits.max_media_bytes)
                for i, value in enumerate(getattr(req, name))
            ]
            for modality, name in MEDIA_FIELDS.items()
        }
        timeout = self.limits.request_timeout_s
        timings: dict[str, float] = {}

        # 1. The LLM side: text, and each kind of media's conditioning.
        t0 = time.perf_counter()
        self.calls["llm"] += 1
        try:
            answer = await asyncio.wait_for(
                _response(self.llm.condition.remote(req.prompt, media, req.llm_options(), timeout)), timeout
            )
        except Exception as err:
            raise _backend_error("LLM", err) from None
        timings["llm"] = _ms(t0)
        if "error" in answer:
            raise _replica_error(answer["error"])

        # 2. Only the generators the answer needs, concurrently.
        files = await self._make_media(answer, req.generator_options(), started, timings)

        # 3. The response: media as base64 files.
        t0 = time.perf_counter()
        out = await asyncio.to_thread(_encode_response, answer, files)
        timings["encode"] = _ms(t0)
        timings["total"] = _ms(started)
        out.timings_ms = timings
        return JSONResponse(out.model_dump())

    async def _make_media(
        self,
        answer: dict[str, Any],
        generator_options: dict[str, Any],
        started: float,
        timings: dict[str, float],
    ) -> dict[str, list[bytes]]:
        """The media ``answer`` (the LLM side's) asks for: only the generators it needs, concurrently; each
        kind's files (PNG, MP4, WAV bytes). The request's time limit counts from ``started``."""
        timeout = self.limits.request_timeout_s

        async def generate(modality: str, part: dict[str, Any]) -> list[bytes]:
            t = time.perf_counter()
            self.calls[modality] += 1
            left = max(timeout - (time.perf_counter() - started), 1e-3)
            try:
                made = await asyncio.wait_for(
                    _response(
                        self.generators[modality].generate.remote(
                            part["conditioning"],
                            part["owners"],
                            answer["seed"],
                            generator_options,
                            left,
                        )
                    ),
                    left,
                )
            except Exception as err:
                raise _backend_error(f"{modality} generator", err) from None
            timings[modality] = _ms(t)
            if "error" in made:
                raise _replica_error(made["error"], f"{modality} generator: ")
            return made["files"]

        parts = answer["media"]
        results = await asyncio.gather(*(generate(m, p) for m, p in parts.items()), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            if isinstance(failed[0], RequestError):
                raise failed[0]
            raise _backend_error("generator", failed[0])
        return dict(zip(parts, results, strict=True))

    # -- OpenAI's chat completions ----------------------------------------------------------------------
    async def _models(self, request: Request) -> Response:
        model = {"id": self.info["name"], "object": "model", "created": self.created, "owned_by": "anygen"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _chat(self, request: Request) -> Response:
        from anygen.messages import MessageError, parse_messages
        from anygen.serve import chat

        started = time.perf_counter()
        body = await self._read_body(request)
        call = chat.parse_chat_request(body)
        name = self.info["name"]
        if call.model is not None and call.model != name:
            raise RequestError(
                404,
                "model_not_found",
                f"model {call.model!r} is not served here; this server serves {name!r} (GET /v1/models)",
                [FieldError(field="model", message=f"not served here; use {name!r}")],
            )
        chat.check_output_modalities(call, self.info["outputs"])
        messages = chat.check_messages(call.messages, self.limits, self.info["inputs"])
        call.renames["prompt"] = f"messages[{len(messages) - 1}]"
        limits = self.limits.work_limits()
        try:  # decodes every input to check it (in a thread: the event loop keeps serving); never a file or a URL.
            # The LLM replica gets the files' bytes, as /v1/generate sends them, not the decoded pixels and samples.
            parsed = await asyncio.to_thread(
                parse_messages, messages, limits=limits, allow_remote=False, allow_files=False, keep_sources=True
            )
        except MessageError as err:
            raise chat.message_error(err) from None
        template = self.pipe.spec.llm.template if self.pipe is not None else None
        if (
            parsed.history
            and parsed.history[0].role == "system"
            and template
            and template.system_turn is None
        ):
            raise chat.message_error(
                MessageError("messages[0]: this pipeline's prompt template takes no system message")
            )
        req = call.request
        req.prompt = parsed.prompt
        if self.pipe is not None:
            try:
                self.pipe.check_inputs(
                    parsed.prompt,
                    images=parsed.images,
                    audios=parsed.audios,
                    videos=parsed.videos,
                    options=req.options,
                )
            except AnyGenError as err:
                raise call.rename(option_error(err)) from None
        args = (parsed.prompt, parsed.media, req.llm_options(), self.limits.request_timeout_s, parsed.history)
        if call.stream:
            return await self._chat_stream(call, args, started)

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.calls["llm"] += 1
        try:
            answer = await asyncio.wait_for(
                _response(self.llm.condition.remote(*args)), self.limits.request_timeout_s
            )
        except Exception as err:
            raise _backend_error("LLM", err) from None
        timings["llm"] = _ms(t0)
        if "error" in answer:
            raise call.rename(_replica_error(answer["error"]))
        try:
            files = await self._make_media(answer, req.generator_options(), started, timings)
        except RequestError as err:
            raise call.rename(err) from None
        t0 = time.perf_counter()
        body = await asyncio.to_thread(
            chat.completion, chat.completion_id(), chat.now(), name, answer, files, timings
        )
        timings["encode"] = _ms(t0)
        timings["total"] = _ms(started)
        return JSONResponse(body)

    async def _chat_stream(self, call, args: tuple, started: float) -> Response:
        """Server-sent events: the text as the LLM makes it, then the media, the finish reason and
        ``[DONE]``. An error before the first token is a JSON error; after it, an ``{"error": ...}`` event."""
        from starlette.responses import StreamingResponse

        from anygen.serve import chat

        timeout = self.limits.request_timeout_s
        self.calls["llm"] += 1
        t_llm = time.perf_counter()
        stream = self.llm.options(stream=True).condition_stream.remote(*args)

        async def next_item() -> dict[str, Any]:
            left = max(timeout - (time.perf_counter() - started), 1e-3)
            try:
                return await asyncio.wait_for(stream.__anext__(), left)
            except StopAsyncIteration:
                raise RequestError(
                    500, "generation_failed", "the LLM's stream ended without an answer"
                ) from None
            except Exception as err:
                raise _backend_error("LLM", err) from None

        try:
            first = await next_item()
            if "error" in first:
                raise call.rename(_replica_error(first["error"]))
        except BaseException:
            stream.cancel()
            raise
        cid, created, model = chat.completion_id(), chat.now(), self.info["name"]

        def event(data: dict[str, Any]) -> str:
            return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"

        async def events():
            timings: dict[str, float] = {}
            finished = False
            try:
                yield event(chat.chunk(cid, created, model, {"role": "assistant", "content": ""}))
                item = first
                while "text" not in item:
                    if "error" in item:
                        raise call.rename(_replica_error(item["error"]))
                    if item.get("delta"):
                        yield event(chat.chunk(cid, created, model, {"content": item["delta"]}))
                    item = await next_item()
                answer = item
                finished = True
                timings["llm"] = _ms(t_llm)
                files = await self._make_media(answer, call.request.generator_options(), started, timings)
                if files:  # the media parts of the message, as in the non-streamed answer's content
                    parts = await asyncio.to_thread(chat.media_parts, files)
                    yield event(chat.chunk(cid, created, model, {"media": parts}))
                timings["total"] = _ms(started)
                anygen = {"seed": answer["seed"], "timings_ms": timings}
                yield event(chat.chunk(cid, created, model, {}, answer["finish_reason"], anygen=anygen))
                if call.include_usage:
                    yield event(chat.chunk(cid, created, model, None, usage=chat.usage(answer)))
                yield "data: [DONE]\n\n"
            except asyncio.CancelledError:  # the client went away: the replicas' work is cancelled with it
                self.responses["cancelled"] += 1
                raise
            except RequestError as err:
                self.responses[f"stream_{err.status}"] += 1
                yield event(call.rename(err).openai_body())
            except Exception as err:
                logger.exception("ingress: unexpected error while streaming")
                self.responses["stream_500"] += 1
                yield event(
                    RequestError(
                        500, "internal", f"internal error: {type(err).__name__}: {err}"
                    ).openai_body()
                )
            finally:
                if not finished:
                    stream.cancel()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(
                413,
                "body_too_large",
                f"the body is {declared} bytes, more than limits.max_body_bytes={limit}",
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(
                    413, "body_too_large", f"the body is more than limits.max_body_bytes={limit} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)


async def _response(response):
    """Await a ``DeploymentResponse`` (a coroutine, so ``asyncio.wait_for`` can cancel it)."""
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)


def _encode_response(answer: dict[str, Any], files: dict[str, list[bytes]]) -> GenerateResponse:
    from anygen.serve.codec import to_base64

    return GenerateResponse(
        text=answer["text"],
        seed=answer["seed"],
        **{MEDIA_FIELDS[m]: [to_base64(f) for f in made] for m, made in files.items()},
    )
