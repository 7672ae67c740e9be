"""The HTTP API's request and response bodies (JSON).

``POST /v1/generate`` takes a :class:`GenerateRequest`; an unknown field is an error (HTTP 422), not ignored,
so a misspelt option never silently falls back to a default. Media go both ways as base64 strings (a
``data:<mime>;base64,`` prefix is accepted on input): images as PNG, videos as MP4, audio as WAV on output.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Modality = Literal["image", "video", "audio"]
MEDIA_FIELDS = {"image": "images", "audio": "audios", "video": "videos"}
MEDIA_MIME = {"image": "image/png", "video": "video/mp4", "audio": "audio/wav"}

PositiveInt = Annotated[int, Field(ge=1)]
PerModality = dict[Modality, Any]


class GenerateRequest(BaseModel):
    """One prompt, its optional media inputs, and the options of ``AnyToAnyPipeline.__call__``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    images: list[str] = Field(default_factory=list, description="base64 image files (PNG, JPEG, ...)")
    audios: list[str] = Field(default_factory=list, description="base64 audio files (WAV, FLAC, MP3, ...)")
    videos: list[str] = Field(default_factory=list, description="base64 video files (MP4, WebM, ...)")
    output_modalities: list[Modality] = Field(
        default_factory=list, description="kinds of media the answer must include"
    )
    only_requested: bool = False
    seed: int | None = Field(None, ge=0, lt=2**62, description="same seed, same output (drawn when absent)")
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    num_inference_steps: PositiveInt | dict[Modality, PositiveInt] | None = None
    guidance_scale: float | dict[Modality, float] | None = None
    height: int | None = Field(None, ge=8, multiple_of=8)
    width: int | None = Field(None, ge=8, multiple_of=8)
    num_frames: int | None = Field(None, ge=1)
    audio_length_in_s: float | None = Field(None, gt=0)

    def llm_options(self) -> dict[str, Any]:
        """Arguments of ``AnyToAnyPipeline.condition`` (less the prompt and media)."""
        return {
            "output_modalities": list(self.output_modalities),
            "only_requested": self.only_requested,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }

    def generator_options(self) -> dict[str, Any]:
        """Arguments of ``AnyToAnyPipeline.generate_media`` (the generators' call options)."""
        return {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "audio_length_in_s": self.audio_length_in_s,
        }


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


def _field_name(loc: tuple) -> str:
    """``("num_inference_steps", "dict[...]", "image")`` -> ``"num_inference_steps.image"`` (no union tags)."""
    parts = [
        f"[{p}]" if isinstance(p, int) else str(p)
        for p in loc
        if isinstance(p, int) or (isinstance(p, str) and p.isidentifier())
    ]
    return ".".join(parts).replace(".[", "[") or "<body>"


def parse_request(body: bytes) -> GenerateRequest:
    """The request in a JSON ``body``: 400 for malformed JSON, 422 naming each bad or unknown field."""
    from pydantic import ValidationError

    try:
        return GenerateRequest.model_validate_json(body)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise RequestError(400, "bad_json", f"the body is not valid JSON ({errors[0]['msg']})") from None
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
            summary += f" (options: {', '.join(GenerateRequest.model_fields)})"
        raise RequestError(
            422,
            "invalid_request",
            f"invalid request: {summary}",
            [FieldError(field=k, message=v) for k, v in fields.items()],
        ) from None


def check_limits(
    request: GenerateRequest,
    limits: Any,
    *,
    inputs: list[str],
    outputs: list[str],
) -> None:
    """422 naming the field when ``request`` asks for more than ``limits`` or for what the pipeline lacks."""
    problems: list[FieldError] = []

    def bad(field: str, message: str) -> None:
        problems.append(FieldError(field=field, message=message))

    if len(request.prompt) > limits.max_prompt_chars:
        bad(
            "prompt",
            f"{len(request.prompt)} characters, more than limits.max_prompt_chars={limits.max_prompt_chars}",
        )
    for modality, name in MEDIA_FIELDS.items():
        items = getattr(request, name)
        if items and modality not in inputs:
            bad(
                name,
                f"this pipeline takes no {modality} inputs (it takes: {', '.join(inputs) or 'text only'})",
            )
        if len(items) > limits.max_media_items:
            bad(name, f"{len(items)} items, more than limits.max_media_items={limits.max_media_items}")
    for i, modality in enumerate(request.output_modalities):
        if modality not in outputs:
            bad(
                f"output_modalities[{i}]",
                f"{modality!r} is not an output of this pipeline (it makes: {', '.join(outputs) or 'text only'})",
            )
    if request.max_new_tokens is not None and request.max_new_tokens > limits.max_new_tokens:
        bad("max_new_tokens", f"more than limits.max_new_tokens={limits.max_new_tokens}")
    steps = request.num_inference_steps
    for key, value in steps.items() if isinstance(steps, dict) else [(None, steps)]:
        if value is not None and value > limits.max_inference_steps:
            field = "num_inference_steps" + (f".{key}" if key else "")
            bad(field, f"more than limits.max_inference_steps={limits.max_inference_steps}")
    for name in ("height", "width"):
        value = getattr(request, name)
        if value is not None and value > limits.max_image_side:
            bad(name, f"more than limits.max_image_side={limits.max_image_side}")
    if request.num_frames is not None and request.num_frames > limits.max_num_frames:
        bad("num_frames", f"more than limits.max_num_frames={limits.max_num_frames}")
    if request.audio_length_in_s is not None and request.audio_length_in_s > limits.max_audio_seconds:
        bad("audio_length_in_s", f"more than limits.max_audio_seconds={limits.max_audio_seconds}")
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise RequestError(422, "invalid_request", f"invalid request: {summary}", problems)


_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64_URLSAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_DATA_URL = re.compile(r"data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)


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
        raise RequestError(
            413,
            "media_too_large",
            f"{field}: {size} bytes, more than limits.max_media_bytes={max_bytes}",
            [FieldError(field=field, message=f"{size} bytes, more than {max_bytes}")],
        )
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
