"""``POST /v1/chat/completions``: OpenAI's chat-completions API over the served pipeline (no Ray needed here).

The request is OpenAI's body: ``messages`` (the transformers / OpenAI chat format read by :mod:`anygen.messages`,
media as ``data:`` URLs), ``model`` (the served pipeline's name, optional), ``stream``, ``max_tokens`` /
``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``n`` (1 only) and ``modalities`` (OpenAI's
name for the kinds of output: ``["text", "image"]`` makes at least one image), plus anygen's own options
(``only_requested``, ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``, ``num_frames``,
``audio_length_in_s``), checked by the same rules and limits as ``POST /v1/generate``. An unknown field is an
error (422), as on ``/v1/generate``; OpenAI's fields that anygen has no use for are accepted when they ask for
nothing (their default: ``frequency_penalty: 0``, ``logprobs: false``, ``tools: []``, ...) or carry no work
(``user``, ``metadata``, ``store``, ...), and refused naming the field otherwise.

The server reads no file and fetches no URL for a caller: a media part must hold its file as a ``data:`` URL
(or base64 in ``input_audio.data`` / a ``base64`` key); an ``http(s)://`` URL, a path or a ``file://`` URL is
refused (400) naming the part, ``messages[i].content[j]``.

The answer is an assistant message whose ``content`` is the text (a plain string) when it holds no media, else a
list of parts: ``{"type": "text", ...}`` then one ``image_url`` (PNG), ``video_url`` (MP4) or ``audio_url`` (WAV)
part per file, each a ``data:`` URL. :mod:`anygen.messages` reads that message back, so a client appends it to
its messages as it came and sends the next turn.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anygen.errors import AnyGenError
from anygen.messages import MessageError
from anygen.options import ALL_GENERATOR_OPTIONS
from anygen.serve.codec import to_base64
from anygen.serve.schema import (
    MEDIA_MIME,
    FieldError,
    GenerateRequest,
    RequestError,
    media_too_large,
    option_error,
    validation_error,
)

logger = logging.getLogger("ray.serve")

#: Content part types -> modality (the text part and unknown types are not media).
MEDIA_PARTS = {
    "image": "image",
    "audio": "audio",
    "video": "video",
    "image_url": "image",
    "audio_url": "audio",
    "video_url": "video",
    "input_audio": "audio",
}
#: The part type each kind of generated file is answered with (always a ``data:`` URL).
ANSWER_PARTS = {"image": "image_url", "video": "video_url", "audio": "audio_url"}
#: Keys of an assistant message as OpenAI returns it that carry nothing when null or empty: dropped, so that a
#: client may send the message back as it came.
_EMPTY_ASSISTANT_KEYS = ("refusal", "annotations", "audio", "tool_calls", "function_call")
_REMOTE = re.compile(r"(?i)^[a-z][a-z0-9+.-]*://")

Option = Any


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions`` (every value is checked after parsing, naming the field)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    messages: Any = Field(description="chat messages, the last one the user's; media as data: URLs")
    model: Option = Field(None, description="the served pipeline's name (GET /v1/models); optional")
    stream: Option = Field(None, description="true: server-sent events, the text as it is generated")
    stream_options: Option = Field(None, description='{"include_usage": true}: a last chunk with usage')
    max_tokens: Option = Field(None, description="as max_new_tokens")
    max_completion_tokens: Option = Field(None, description="as max_new_tokens")
    temperature: Option = None
    top_p: Option = None
    seed: Option = None
    n: Option = Field(None, description="1 (one answer per request)")
    modalities: Option = Field(
        None, description='kinds of output the answer must include: "text" and any of image, video, audio'
    )
    # anygen's own options (as in POST /v1/generate)
    only_requested: Option = None
    num_inference_steps: Option = None
    guidance_scale: Option = None
    height: Option = None
    width: Option = None
    num_frames: Option = None
    audio_length_in_s: Option = None
    # OpenAI fields that carry no work: accepted, ignored
    user: Option = None
    metadata: Option = None
    store: Option = None
    service_tier: Option = None
    safety_identifier: Option = None
    prompt_cache_key: Option = None
    # OpenAI features anygen does not have: accepted only when they ask for nothing
    frequency_penalty: Option = None
    presence_penalty: Option = None
    logprobs: Option = None
    top_logprobs: Option = None
    logit_bias: Option = None
    stop: Option = None
    tools: Option = None
    tool_choice: Option = None
    parallel_tool_calls: Option = None
    functions: Option = None
    function_call: Option = None
    response_format: Option = None
    audio: Option = None
    reasoning_effort: Option = None
    verbosity: Option = None
    prediction: Option = None
    web_search_options: Option = None


#: field -> (what it may be, a test of the value): OpenAI features anygen lacks, allowed at their "off" value.
_UNSUPPORTED: dict[str, tuple[str, Any]] = {
    "frequency_penalty": ("0", lambda v: _is_number(v) and v == 0),
    "presence_penalty": ("0", lambda v: _is_number(v) and v == 0),
    "logprobs": ("false", lambda v: v is False),
    "top_logprobs": ("0", lambda v: _is_number(v) and v == 0),
    "logit_bias": ("{}", lambda v: v == {}),
    "stop": ("[] (the pipeline's template stops the answer)", lambda v: v == []),
    "tools": ("[] (anygen calls no tools)", lambda v: v == []),
    "tool_choice": ('"none" or "auto" (anygen calls no tools)', lambda v: v in ("none", "auto")),
    "parallel_tool_calls": ("true or false", lambda v: isinstance(v, bool)),
    "functions": ("[] (anygen calls no functions)", lambda v: v == []),
    "function_call": ('"none" or "auto"', lambda v: v in ("none", "auto")),
    "response_format": ('{"type": "text"}', lambda v: v == {"type": "text"}),
    "audio": (
        '{"format": "wav"} (a voice is ignored: the audio generator makes sounds, not speech)',
        lambda v: isinstance(v, dict) and set(v) <= {"voice", "format"} and v.get("format", "wav") == "wav",
    ),
    "reasoning_effort": ("null", lambda v: False),
    "verbosity": ("null", lambda v: False),
    "prediction": ("null", lambda v: False),
    "web_search_options": ("null", lambda v: False),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class ChatCall:
    """A checked chat request: the messages (not read yet), the options as a ``/v1/generate`` request (its prompt
    set once the messages are read), how the answer is sent, and the request's field names for the options'."""

    messages: Any
    request: GenerateRequest
    model: str | None
    stream: bool
    include_usage: bool
    renames: dict[str, str] = field(default_factory=dict)  # option name -> the field the client sent

    def rename(self, err: RequestError) -> RequestError:
        """``err`` with the options' names (``max_new_tokens``, ``output_modalities[0]``, ``prompt``) as the
        client wrote them (``max_tokens``, ``modalities[1]``, ``messages[2]``)."""
        if not err.fields:
            return err
        fields = []
        for f in err.fields:
            text = f.message[len(f.field) + 2 :] if f.message.startswith(f"{f.field}: ") else f.message
            fields.append(FieldError(field=self.field(f.field), message=text))
        message = err.message
        if err.status == 422 and message.startswith("invalid request: "):
            message = "invalid request: " + "; ".join(f"{f.field}: {f.message}" for f in fields)
        return RequestError(err.status, err.type, message, fields)

    def field(self, name: str) -> str:
        head = re.match(r"[A-Za-z_]\w*(?:\[\d+\])?", name)
        if head and head.group(0) in self.renames:
            return self.renames[head.group(0)] + name[head.end() :]
        base = name.split("[")[0].split(".")[0]
        if base in self.renames:
            return self.renames[base] + name[len(base) :]
        return name


def _bad(status: int, kind: str, field_name: str, message: str) -> RequestError:
    return RequestError(
        status, kind, f"{field_name}: {message}", [FieldError(field=field_name, message=message)]
    )


def parse_chat_request(body: bytes) -> ChatCall:
    """The request in a JSON ``body``: 400 for malformed JSON, 422 naming each bad or unknown field (the options
    checked as ``POST /v1/generate`` checks them). The messages are read later (:func:`check_messages`)."""
    try:
        chat = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as err:
        raise validation_error(err, ChatCompletionRequest.model_fields) from None
    problems: list[FieldError] = []

    def bad(name: str, message: str) -> None:
        problems.append(FieldError(field=name, message=message))

    if chat.model is not None and not isinstance(chat.model, str):
        bad("model", "expected a string (the served pipeline's name)")
    if chat.stream is not None and not isinstance(chat.stream, bool):
        bad("stream", "expected true or false")
    include_usage = False
    if chat.stream_options is not None:
        opts = chat.stream_options
        if not isinstance(opts, dict) or set(opts) - {"include_usage", "include_obfuscation"}:
            bad("stream_options", 'expected {"include_usage": true|false}')
        elif not isinstance(opts.get("include_usage", False), bool):
            bad("stream_options.include_usage", "expected true or false")
        else:
            include_usage = opts.get("include_usage", False)
    if chat.n is not None and (not isinstance(chat.n, int) or isinstance(chat.n, bool) or chat.n != 1):
        bad("n", f"anygen makes one answer per request; n must be 1, got {chat.n!r}")
    for name, (allowed, ok) in _UNSUPPORTED.items():
        value = getattr(chat, name)
        if value is not None and not ok(value):
            bad(name, f"not supported by anygen; only {allowed} (or null) is accepted, got {value!r}")

    renames: dict[str, str] = {"prompt": "messages"}
    options: dict[str, Any] = {}
    tokens = [n for n in ("max_completion_tokens", "max_tokens") if getattr(chat, n) is not None]
    if len(tokens) == 2 and chat.max_tokens != chat.max_completion_tokens:
        bad("max_tokens", "give max_tokens or max_completion_tokens, not both with different values")
    elif tokens:
        options["max_new_tokens"] = getattr(chat, tokens[0])
        renames["max_new_tokens"] = tokens[0]
    if chat.modalities is not None:
        if not isinstance(chat.modalities, list) or not all(isinstance(m, str) for m in chat.modalities):
            bad("modalities", 'expected a list of strings, e.g. ["text", "image"]')
        else:
            wanted = [(i, m) for i, m in enumerate(chat.modalities) if m != "text"]
            options["output_modalities"] = [m for _, m in wanted]
            # the pipeline names output_modalities unindexed when it holds one kind
            renames["output_modalities"] = f"modalities[{wanted[0][0]}]" if len(wanted) == 1 else "modalities"
            for k, (i, _) in enumerate(wanted):
                renames[f"output_modalities[{k}]"] = f"modalities[{i}]"
    for name in ("temperature", "top_p", "seed", "only_requested", *ALL_GENERATOR_OPTIONS):  # as /v1/generate
        if getattr(chat, name) is not None:
            options[name] = getattr(chat, name)
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise RequestError(422, "invalid_request", f"invalid request: {summary}", problems)

    call = ChatCall(
        messages=chat.messages,
        request=GenerateRequest.model_validate({"prompt": "", **options}),
        model=chat.model,
        stream=bool(chat.stream),
        include_usage=include_usage,
        renames=renames,
    )
    try:
        call.request.options  # noqa: B018 - checks them
    except AnyGenError as err:
        raise call.rename(option_error(err)) from None
    return call


def check_output_modalities(call: ChatCall, outputs: list[str]) -> None:
    """422 naming ``modalities[i]`` for a kind of output the served pipeline does not make."""
    problems = [
        FieldError(
            field=call.field(f"output_modalities[{i}]"),
            message=f"{m!r} is not an output of this pipeline (it makes: text, {', '.join(outputs)})"
            if outputs
            else f"{m!r} is not an output of this pipeline (it makes text only)",
        )
        for i, m in enumerate(call.request.options.output_modalities)
        if m not in outputs
    ]
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise RequestError(422, "invalid_request", f"invalid request: {summary}", problems)


# -- the messages -------------------------------------------------------------------------------------------
def check_messages(messages: Any, limits: Any, inputs: list[str]) -> list[Any]:
    """The server's own checks of the messages, before any media is decoded; returns them as
    :func:`anygen.messages.parse_messages` then reads them (OpenAI's ``developer`` role as ``system``, the empty
    keys of an assistant message as OpenAI returns it dropped).

    A user's media part must hold its file (a ``data:`` URL, or base64): 400 for an ``http(s)://`` URL (the server
    fetches nothing), a path or a ``file://`` URL (it reads none of its files); 413 for a file over
    ``limits.max_media_bytes`` (from the encoded length); 422 for a kind of input the pipeline does not take,
    more than ``limits.max_media_items`` of a kind in the conversation, or more than ``limits.max_prompt_chars``
    characters of text in all. Anything malformed is left to ``parse_messages``, which names it."""
    if not isinstance(messages, list) or not messages:
        raise _bad(
            400,
            "invalid_messages",
            "messages",
            "expected a non-empty list of {'role': ..., 'content': ...} messages",
        )
    out: list[Any] = []
    counts: Counter[str] = Counter()
    chars = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            out.append(message)
            continue
        message = dict(message)
        if message.get("role") == "developer":  # OpenAI's newer name for the system message
            message["role"] = "system"
        if message.get("role") == "assistant":
            for key in _EMPTY_ASSISTANT_KEYS:
                if key in message and message[key] in (None, [], {}):
                    del message[key]
        out.append(message)
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                chars += len(part["text"])
            if kind not in MEDIA_PARTS or message.get("role") != "user":
                continue  # an assistant's media are not read (they were its outputs)
            modality = MEDIA_PARTS[kind]
            at = f"messages[{i}].content[{j}]"
            _check_media_value(part, kind, at, limits.max_media_bytes)
            if modality not in inputs:
                raise _bad(
                    422,
                    "invalid_request",
                    at,
                    f"this pipeline takes no {modality} inputs (it takes: {', '.join(inputs) or 'text only'})",
                )
            counts[modality] += 1
    problems = [
        FieldError(
            field="messages",
            message=f"{n} {m} inputs in the conversation, more than limits.max_media_items={limits.max_media_items}",
        )
        for m, n in counts.items()
        if n > limits.max_media_items
    ]
    if chars > limits.max_prompt_chars:
        problems.append(
            FieldError(
                field="messages",
                message=f"{chars} characters of text in all, more than limits.max_prompt_chars="
                f"{limits.max_prompt_chars}; send fewer or shorter messages",
            )
        )
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        raise RequestError(422, "invalid_request", f"invalid request: {summary}", problems)
    return out


def _check_media_value(part: dict[str, Any], kind: str, at: str, max_bytes: int) -> None:
    """400 unless the part holds its file (a data: URL or base64 string); 413 when that is over ``max_bytes``."""
    if kind == "input_audio":
        body = part.get("input_audio")
        value, key, encoded = (body.get("data") if isinstance(body, dict) else None), "input_audio.data", True
    elif kind in ("image_url", "audio_url", "video_url"):
        body = part.get(kind)
        value, key, encoded = (body.get("url") if isinstance(body, dict) else body), f"{kind}.url", False
    else:
        keys = [k for k in (kind, "url", "path", "base64") if part.get(k) is not None]
        if len(keys) != 1:
            return  # parse_messages names the part's problem
        if keys[0] == "path":
            raise _bad(400, "refused_source", at, _NO_FILES)
        value, key, encoded = part[keys[0]], keys[0], keys[0] == "base64"
    if value is None:
        return  # malformed: parse_messages names it
    if not isinstance(value, str):
        raise _bad(
            400, "invalid_messages", at, f"{key}: expected a data: URL string, got {type(value).__name__}"
        )
    if not encoded:
        if value[:5].lower() != "data:":
            if value[:7].lower() == "http://" or value[:8].lower() == "https://":
                raise _bad(400, "refused_source", at, _NO_FETCH)
            if _REMOTE.match(value) and not value.lower().startswith("file:"):
                raise _bad(400, "refused_source", at, f"unsupported URL; {_DATA_ONLY}")
            raise _bad(400, "refused_source", at, _NO_FILES)
        head, _, value = value.partition(",")
        encoded = "base64" in (p.strip().lower() for p in head.split(";")[1:])
    text = "".join(value.split())
    size = len(text) * 3 // 4 if encoded else len(text)
    if size > max_bytes:
        raise media_too_large(at, size, max_bytes)


_DATA_ONLY = "send the file itself as a data: URL (data:image/png;base64,...)"
_NO_FETCH = f"this server fetches no URL for a caller; {_DATA_ONLY}"
_NO_FILES = f"this server reads none of its own files for a caller (no paths or file: URLs); {_DATA_ONLY}"


def message_error(err: MessageError) -> RequestError:
    """A 400 for messages :func:`anygen.messages.parse_messages` refused, naming the message and part."""
    text = str(err)
    match = (
        re.match(r"messages(?:\[\d+\](?:\.\w+|\[\d+\])*)?", text)
        or re.search(r"messages\[\d+\](?:\.\w+|\[\d+\])*", text)
    )  # "messages[1].content[0]: ...", or named inside the message ("image <bytes> (messages[1].content[0]) ...")
    name = match.group(0) if match else "messages"
    return RequestError(400, "invalid_messages", text, [FieldError(field=name, message=text)])


# -- the answer ---------------------------------------------------------------------------------------------
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def media_parts(files: dict[str, list[bytes]]) -> list[dict[str, Any]]:
    """Each generated file as a content part holding a ``data:`` URL: images, then videos, then audio."""
    parts = []
    for modality in ("image", "video", "audio"):
        kind = ANSWER_PARTS[modality]
        for data in files.get(modality, []):
            parts.append(
                {"type": kind, kind: {"url": f"data:{MEDIA_MIME[modality]};base64,{to_base64(data)}"}}
            )
    return parts


def answer_content(text: str, files: dict[str, list[bytes]]) -> str | list[dict[str, Any]]:
    """The assistant message's content: the text alone, or a text part and the media parts."""
    parts = media_parts(files)
    return [{"type": "text", "text": text}, *parts] if parts else text


def usage(answer: dict[str, Any]) -> dict[str, int]:
    prompt = int(answer.get("prompt_tokens") or 0)
    completion = len(answer.get("token_ids") or [])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(
    cid: str, created: int, model: str, answer: dict[str, Any], files: dict[str, list[bytes]], timings: dict
) -> dict[str, Any]:
    """The ``chat.completion`` object (``anygen``: the seed used, to get the same answer again, and timings)."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_content(answer["text"], files)},
                "finish_reason": answer.get("finish_reason", "stop"),
            }
        ],
        "usage": usage(answer),
        "anygen": {"seed": answer["seed"], "timings_ms": timings},
    }


def chunk(
    cid: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; ``delta=None``: the usage chunk (no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }


def now() -> int:
    return int(time.time())


# -- streaming the text -------------------------------------------------------------------------------------
class TextDeltas:
    """The answer's text as it grows, as pieces whose concatenation is the final text.

    The pipeline reports the whole answer so far after each token (stripped, cut at a stop string). Its end may
    still change: a byte-level token can end in half a character (``\\ufffd`` until the next byte), the start of
    a stop string (``##`` of ``###``) is cut once the string is complete, and trailing spaces are stripped. Those
    are held back until they settle; with ``hold_last_word`` (a tokenizer that tidies spaces before punctuation
    when decoding) the last word is too. :meth:`finish` gives what is left of the final text."""

    def __init__(self, stop_strings: list[str] | tuple[str, ...] = (), hold_last_word: bool = False):
        self.stops = [s for s in stop_strings if s]
        self.hold_last_word = hold_last_word
        self.sent = ""

    def push(self, partial: str) -> str:
        """The new settled text in ``partial`` (the answer so far), or ``""``."""
        safe = self._settled(partial)
        if len(safe) > len(self.sent) and safe.startswith(self.sent):
            delta, self.sent = safe[len(self.sent) :], safe
            return delta
        return ""

    def finish(self, text: str) -> str:
        """What the final ``text`` adds to what was sent."""
        if text.startswith(self.sent):
            rest, self.sent = text[len(self.sent) :], text
            return rest
        logger.warning("streamed text %r is not a prefix of the final text %r", self.sent[-40:], text[-40:])
        return ""

    def _settled(self, text: str) -> str:
        while True:
            before = text
            text = text.rstrip().rstrip("\ufffd")
            for stop in self.stops:
                for k in range(len(stop) - 1, 0, -1):
                    if text.endswith(stop[:k]):
                        text = text[:-k]
                        break
            if text == before:
                break
        if self.hold_last_word:
            match = re.search(r"\s\S*$", text)
            text = text[: match.start()].rstrip() if match else ""
        return text
