"""The HTTP API's request and response bodies (JSON).

``POST /v1/generate`` takes a :class:`GenerateRequest`; an unknown field is an error (HTTP 422), not ignored,
so a misspelt option never silently falls back to a default. The options are checked by
:class:`~anygen.options.CallOptions`, the same rules as ``pipe(...)``: a bad one is a 422 whose ``fields`` name
it. Media go both ways as base64 strings (a ``data:<mime>;base64,`` prefix is accepted on input): images as
PNG, videos as MP4, audio as WAV on output.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from anygen.errors import AnyGenError, MediaError, OptionError
from anygen.options import CallOptions

Modality = Literal["image", "video", "audio"]
MEDIA_FIELDS = {"image": "images", "audio": "audios", "video": "videos"}
MEDIA_MIME = {"image": "image/png", "video": "video/mp4", "audio": "audio/wav"}

# An option: its type and range are checked by anygen.options.CallOptions (the pipeline's own rules).
Option = Annotated[Any, Field(None)]


class GenerateRequest(BaseModel):
    """One prompt, its optional media inputs, and the options of ``AnyToAnyPipeline.__call__``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    images: list[str] = Field(default_factory=list, description="base64 image files (PNG, JPEG, ...)")
    audios: list[str] = Field(default_factory=list, description="base64 audio files (WAV, FLAC, MP3, ...)")
    videos: list[str] = Field(default_factory=list, description="base64 video files (MP4, WebM, ...)")
    output_modalities: Any = Field(
        default_factory=list, description="kinds of media the answer must include (image, video, audio)"
    )
    only_requested: Any = Field(False, description="true: the answer makes no other kind of media")
    seed: Option = Field(None, description="0..2**63-1; same seed, same output (drawn when absent)")
    max_new_tokens: Option = Field(None, description="integer >= 1")
    temperature: Option = Field(None, description="finite number >= 0 (0: greedy)")
    top_p: Option = Field(None, description="number in (0, 1]")
    num_inference_steps: Option = Field(
        None,
        description="integer in 1..1000 (at most the generator's scheduler takes), or a dict per modality",
    )
    guidance_scale: Option = Field(None, description="number in [0, 1000], or a dict per modality")
    height: Option = Field(
        None, description="pixels (1..16384), with width; a multiple of the generator's VAE factor"
    )
    width: Option = Field(None, description="pixels, with height")
    num_frames: Option = Field(None, description="integer in 1..1024")
    audio_length_in_s: Option = Field(None, description="seconds, in (0, 3600]")
    _options: CallOptions | None = PrivateAttr(None)

    @property
    def options(self) -> CallOptions:
        """The request's options, checked (:class:`~anygen.errors.OptionError` naming each bad one)."""
        if self._options is None:
            self._options = CallOptions.from_kwargs(
                **{name: getattr(self, name) for name in CallOptions.names() if name != "generator"}
            )
        return self._options

    def llm_options(self) -> dict[str, Any]:
        """Arguments of ``AnyToAnyPipeline.condition`` (less the prompt and media)."""
        return {k: v for k, v in self.options.llm_kwargs().items() if k != "generator"}

    def generator_options(self) -> dict[str, Any]:
        """Arguments of ``AnyToAnyPipeline.generate_media`` (the generators' call options)."""
        return self.options.generator_kwargs()


class GenerateResponse(BaseModel):
    """The answer: its text, then each kind of media in the order the model asked for them, base64-encoded."""

    text: str
    images: list[str] = Field(default_factory=list, description="base64 PNG files")
    videos: list[str] = Field(default_factory=list, description="base64 MP4 files")
    audios: list[str] = Field(default_factory=list, description="base64 WAV files")
    seed: int = Field(description="the seed used: send it back to get the same output")
    timings_ms: dict[str, float] = Field(default_factory=dict, description="time spent in each deployment")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """``{"error": {...}}``: what every 4xx and 5xx response carries."""

    status: int
    type: str
    message: str
    fields: list[FieldError] = Field(default_factory=list)


# -- checking a request -------------------------------------------------------------------------------------
class RequestError(Exception):
    """A request the service refuses: an HTTP status (4xx, or 5xx for failures behind it) and a message."""

    def __init__(self, status: int, type: str, message: str, fields: list[FieldError] | None = None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.fields = fields or []

    def body(self) -> dict[str, Any]:
        return {
            "error": ErrorBody(
                status=self.status, type=self.type, message=self.message, fields=self.fields
            ).model_dump()
        }

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error shape (``message``, ``type``, ``param``, ``code``) for ``/v1/chat/completions``:
        ``type`` is OpenAI's class (``invalid_request_error`` for a 4xx, ``server_error`` for a 5xx), ``code``
        this service's ``type`` (``model_not_found``, ``bad_media``, ...), ``param`` the first field named;
        ``status`` and ``fields`` are kept as in :meth:`body`."""
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error" if self.status < 500 else "server_error",
                "param": self.fields[0].field if self.fields else None,
                "code": self.type,
                "status": self.status,
                "fields": [f.model_dump() for f in self.fields],
            }
        }


def _field_name(loc: tuple) -> str:
    """``("num_inference_steps", "dict[...]", "image")`` -> ``"num_inference_steps.image"`` (no union tags)."""
    parts = [
        f"[{p}]" if isinstance(p, int) else str(p)
        for p in loc
        if isinstance(p, int) or (isinstance(p, str) and p.isidentifier())
    ]
    return ".".join(parts).replace(".[", "[") or "<body>"


def error_fields(err: AnyGenError) -> list[str]:
    """The request fields an error from the pipeline is about (never empty): the options an
    :class:`~anygen.errors.OptionError` names, the input a :class:`~anygen.errors.MediaError` names, else the
    ``name:`` its message starts with."""
    fields = list(getattr(err, "fields", None) or [])
    if not fields and isinstance(err, MediaError):
        fields = re.findall(r"\b((?:images|audios|videos)\[\d+\])", str(err))[:1]
    if not fields:
        match = re.match(r"([A-Za-z_]\w*(?:\[\d+\])?(?:\.\w+)?): ", str(err))
        if match and (match.group(1).split("[")[0].split(".")[0] in GenerateRequest.model_fields):
            fields = [match.group(1)]
    return [_public_field(f) for f in fields] or ["<body>"]


def _public_field(name: str) -> str:
    """``prompt[0]`` (the pipeline's batch index) is ``prompt`` in a request of one prompt."""
    return "prompt" if re.fullmatch(r"prompt\[\d+\]", name) else name


def option_error(err: AnyGenError) -> RequestError:
    """A 422 for an option (or prompt) the pipeline refuses, naming each field."""
    problems = getattr(err, "problems", None) or [(f, str(err)) for f in error_fields(err)]
    if isinstance(err, OptionError):
        fields = [FieldError(field=_public_field(name), message=message) for name, message in problems]
    else:
        fields = [FieldError(field=f, message=str(err)) for f in error_fields(err)]
    return RequestError(422, "invalid_request", f"invalid request: {err}", fields)


def validation_error(err: Any, known: Any) -> RequestError:
    """A pydantic ``ValidationError`` of a JSON body: 400 for malformed JSON, else 422 naming each bad, missing
    or unknown field (an unknown one listing the ``known`` field names)."""
    errors = err.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return RequestError(400, "bad_json", f"the body is not valid JSON ({errors[0]['msg']})")
    fields: dict[str, str] = {}
    for e in errors:
        name = _field_name(e["loc"])
        if e["type"] == "extra_forbidden":
            msg = "unknown option"
        elif e["type"] == "missing":
            msg = "missing field"
        elif e["type"] == "model_type":
            msg = "the body must be a JSON object"
        else:
            msg = e["msg"]
        fields.setdefault(name, msg)
    summary = "; ".join(f"{k}: {v}" for k, v in fields.items())
    if "unknown option" in fields.values():
        summary += f" (options: {', '.join(known)})"
    return RequestError(
        422,
        "invalid_request",
        f"invalid request: {summary}",
        [FieldError(field=k, message=v) for k, v in fields.items()],
    )


def parse_request(body: bytes) -> GenerateRequest:
    """The request in a JSON ``body``: 400 for malformed JSON, 422 naming each bad or unknown field (the
    options checked as ``pipe(...)`` checks them)."""
    from pydantic import ValidationError

    try:
        request = GenerateRequest.model_validate_json(body)
    except ValidationError as err:
        raise validation_error(err, GenerateRequest.model_fields) from None
    try:
        request.options  # noqa: B018 - checks them
    except OptionError as err:
        raise option_error(err) from None
    return request


def check_limits(
    request: GenerateRequest,
    limits: Any,
    *,
    inputs: list[str],
    outputs: list[str],
) -> None:
    """422 naming the field when ``request`` sends more inputs than ``limits`` allow or asks for what the
    pipeline lacks. (The options' own limits are :class:`~anygen.options.Limits`, checked by the pipeline.)"""
    problems: list[FieldError] = []

    def bad(field: str, message: str) -> None:
        problems.append(FieldError(field=field, message=message))

    for modality, name in MEDIA_FIELDS.items():
        items = getattr(request, name)
        if items and modality not in inputs:
            bad(
                name,
                f"this pipeline takes no {modality} inputs (it takes: {', '.join(inputs) or 'text only'})",
            )
        if len(items) > limits.max_media_items:
            bad(name, f"{len(items)} items, more than limits.max_media_items={limits.max_media_items}")
    for i, modality in enumerate(request.options.output_modalities):
        if modality not in outputs:
            bad(
                f"output_modalities[{i}]",
                f"{modality!r} is not an output of this pipeline (it makes: {', '.join(outputs) or 'text only'})",
            )
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise RequestError(422, "invalid_request", f"invalid request: {summary}", problems)


_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64_URLSAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_DATA_URL = re.compile(r"data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)


def media_too_large(field: str, size: int, max_bytes: int) -> RequestError:
    """413 for a media file of ``size`` bytes (from its encoded length) past ``limits.max_media_bytes``."""
    return RequestError(
        413,
        "media_too_large",
        f"{field}: {size} bytes, more than limits.max_media_bytes={max_bytes}",
        [FieldError(field=field, message=f"{size} bytes, more than {max_bytes}")],
    )


def decode_media(value: str, field: str, max_bytes: int) -> bytes:
    """The file in a base64 string (standard or URL-safe alphabet, optional ``data:...;base64,`` prefix).

    413 when it would decode to more than ``max_bytes`` (checked before decoding), 400 when it is not base64.
    """
    match = _DATA_URL.match(value)
    text = "".join((value[match.end() :] if match else value).split())
    if not text:
        raise RequestError(
            400,
            "bad_base64",
            f"{field}: empty; expected a base64-encoded file",
            [FieldError(field=field, message="empty")],
        )
    size = len(text) * 3 // 4 - (len(text) - len(text.rstrip("=")))
    if size > max_bytes:
        raise media_too_large(field, size, max_bytes)
    padded = text + "=" * (-len(text) % 4)
    try:
        if _B64.fullmatch(padded):
            return base64.b64decode(padded, validate=True)
        if _B64_URLSAFE.fullmatch(padded):
            return base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        pass
    raise RequestError(
        400,
        "bad_base64",
        f"{field}: not valid base64",
        [FieldError(field=field, message="not valid base64")],
    )
