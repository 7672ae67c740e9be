"""Chat messages in the transformers / OpenAI format, read into anygen's conversation turns and written back.

    [{"role": "system", "content": "You draw shapes."},
     {"role": "user", "content": [{"type": "image", "image": "cat.png"}, {"type": "text", "text": "what is this?"}]}]

A message's ``content`` is a string or a list of typed parts:

* ``{"type": "text", "text": ...}``
* ``{"type": "image" | "audio" | "video", <same key> | "url" | "path" | "base64": value}``: a value is a path, a
  ``file://``, ``data:`` or ``http(s)://`` URL, bytes, a PIL image / array, or an :class:`~anygen.media.Audio` /
  :class:`~anygen.media.Video`; ``base64`` holds the file's bytes in base64.
* OpenAI's ``{"type": "image_url", "image_url": {"url": ...}}``, ``{"type": "input_audio", "input_audio": {"data":
  <base64>, "format": "wav"}}``, and ``video_url`` / ``audio_url`` alike.

Media parts stand where they are in the text (as NExT-GPT's ``<image>`` tags). ``system`` (first message only)
replaces the template's system text; ``assistant`` messages are history (their media parts were outputs and are not
fed back). The last message must be the user's. Every error names the message and part (``messages[1].content[0]``).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anygen import media
from anygen.errors import AnyGenError, MediaError
from anygen.options import Limits
from anygen.prompt import Turn

MEDIA_TYPES = ("image", "audio", "video")
#: OpenAI-style part types -> (modality, the key holding {"url": ...} or the URL itself).
_URL_PARTS = {"image_url": "image", "audio_url": "audio", "video_url": "video"}
PART_TYPES = ("text", *MEDIA_TYPES, *_URL_PARTS, "input_audio")
ROLES = ("system", "user", "assistant")
#: Media types a data: URL may declare for each modality (besides application/octet-stream).
_DATA_TYPES = {"image": ("image/",), "audio": ("audio/",), "video": ("video/",)}
_FETCH_TIMEOUT_S = 30.0
MAX_FETCH_BYTES = 100 * 2**20  # one media file fetched from a http(s) URL


class MessageError(AnyGenError):
    """A chat message is malformed; the message names it (``messages[2].content[1]``) and what was expected."""


@dataclass
class ParsedMessages:
    """What ``pipe(messages)`` runs: the last user message as a prompt and its media, the rest as history."""

    prompt: str
    media: dict[str, list] = field(default_factory=dict)  # modality -> loaded inputs of the last user message
    history: list[Turn] = field(default_factory=list)  # a system turn first (if any), then earlier exchanges

    @property
    def images(self) -> list:
        return self.media.get("image", [])

    @property
    def audios(self) -> list:
        return self.media.get("audio", [])

    @property
    def videos(self) -> list:
        return self.media.get("video", [])


def is_messages(value: Any) -> bool:
    """A list of chat messages (dicts with a ``role``), as opposed to a prompt or a batch of prompts."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) > 0
        and all(isinstance(m, Mapping) for m in value)
    )


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``ANYGEN_OFFLINE``) is set now: no media is fetched from a http(s) URL."""
    from anygen.hub import env_flag

    return env_flag("HF_HUB_OFFLINE") or env_flag("ANYGEN_OFFLINE")


def parse_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    limits: Limits | None = None,
    allow_remote: bool | None = None,
    allow_files: bool = True,
    max_fetch_bytes: int = MAX_FETCH_BYTES,
    keep_sources: bool = False,
) -> ParsedMessages:
    """Read ``messages`` (the last one the user's) into a prompt, its media and the history before it.

    Every media part is loaded (decoded, checked against ``limits``). ``allow_remote``: fetch ``http(s)://`` media
    (default: unless offline, see :func:`offline`). ``allow_files``: accept local paths and ``file://`` URLs (a
    server turns it off: a caller must not read the server's files). ``max_fetch_bytes``: the most one fetched
    file may hold. ``keep_sources``: every input is still decoded and checked, but the turns hold its file's bytes
    (a server sends those on to the model's process, not the decoded pixels and samples).
    """
    turns = read_turns(
        messages,
        limits=limits,
        allow_remote=allow_remote,
        allow_files=allow_files,
        max_fetch_bytes=max_fetch_bytes,
        keep_sources=keep_sources,
    )
    if turns[-1].role != "user":
        raise MessageError(
            f"messages[{len(turns) - 1}]: the last message is the {turns[-1].role}'s; the last must be the user's "
            "(the one to answer)"
        )
    last = turns.pop()
    return ParsedMessages(prompt=last.text, media=last.media, history=turns)


def read_turns(
    messages: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    limits: Limits | None = None,
    allow_remote: bool | None = None,
    allow_files: bool = True,
    max_fetch_bytes: int = MAX_FETCH_BYTES,
    keep_sources: bool = False,
) -> list[Turn]:
    """Every message as a :class:`~anygen.prompt.Turn` (options as :func:`parse_messages`)."""
    if isinstance(messages, Mapping):
        messages = [messages]
    if not is_messages(messages):
        raise MessageError(
            f"messages: expected a non-empty list of {{'role': ..., 'content': ...}} dicts, got {_kind(messages)}"
        )
    limits = limits if limits is not None else Limits()
    remote = (not offline()) if allow_remote is None else allow_remote
    fetch = max_fetch_bytes if remote else None
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role not in ROLES:
            raise MessageError(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}")
        if role == "system" and i != 0:
            raise MessageError(f"{where}: a system message may only come first")
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise MessageError(
                f"{where}: unknown field(s) {', '.join(sorted(extra))}; expected role and content"
            )
        if "content" not in message:
            raise MessageError(f"{where}: no 'content'")
        text, loaded = _read_content(
            message["content"], where, role, limits, fetch, allow_files, keep_sources
        )
        turns.append(Turn(role, text, loaded if role == "user" else {}))
    return turns


def turn_message(turn: Turn) -> dict[str, Any]:
    """A :class:`~anygen.prompt.Turn` as a message (its ``<image>``-style tags as media parts where they stand)."""
    if not turn.media:
        return {"role": turn.role, "content": turn.text}
    content: list[dict[str, Any]] = []
    used = dict.fromkeys(MEDIA_TYPES, 0)
    for piece in re.split(r"(<(?:image|audio|video)>)", turn.text):
        modality = piece[1:-1] if piece in ("<image>", "<audio>", "<video>") else None
        if modality is not None and used[modality] < len(turn.media.get(modality, [])):
            content.append({"type": modality, modality: turn.media[modality][used[modality]]})
            used[modality] += 1
        elif piece.strip():
            content.append({"type": "text", "text": piece.strip()})
    for modality in MEDIA_TYPES:  # inputs without a tag go first, as the prompt builder places them
        untagged = [{"type": modality, modality: x} for x in turn.media.get(modality, [])[used[modality] :]]
        content[:0] = untagged
    return {"role": turn.role, "content": content}


def _read_content(
    content: Any,
    where: str,
    role: str,
    limits: Limits,
    fetch: int | None,
    allow_files: bool,
    keep_sources: bool,
) -> tuple[str, dict[str, list]]:
    """The message's text (media parts as ``<image>``-style tags where they stand) and its loaded media."""
    if isinstance(content, str):
        _no_tags(content, f"{where}.content")
        return content, {}
    if content is None and role == "assistant":
        return "", {}
    if not isinstance(content, Sequence) or isinstance(content, bytes):
        raise MessageError(f"{where}.content: expected a string or a list of parts, got {_kind(content)}")
    pieces: list[str] = []
    loaded: dict[str, list] = {}
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(part, Mapping):
            raise MessageError(f"{at}: expected a {{'type': ...}} dict, got {_kind(part)}")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise MessageError(f"{at}.text: expected a string, got {_kind(text)}")
            _no_tags(text, f"{at}.text")
            pieces.append(text)
            continue
        if kind not in PART_TYPES:
            raise MessageError(
                f"{at}.type: unknown part type {kind!r}; expected one of {', '.join(PART_TYPES)}"
            )
        if role == "system":
            raise MessageError(f"{at}: a system message holds text only, not {kind}")
        modality, source = _media_source(part, kind, at)
        if role == "assistant":
            continue  # media the assistant made: not an input of the next turn
        value = _resolve(source, modality, at, fetch, allow_files)
        try:
            item = media.load_media(
                modality,
                value,
                name=at,
                max_pixels=limits.max_input_pixels,
                max_video_pixels=limits.max_input_video_pixels,
            )
        except MediaError as err:
            raise MessageError(str(err)) from None
        loaded.setdefault(modality, []).append(value if keep_sources and isinstance(value, bytes) else item)
        pieces.append(f"<{modality}>")
    return " ".join(p.strip() for p in pieces if p.strip()), loaded


def _no_tags(text: str, at: str) -> None:
    for modality in MEDIA_TYPES:
        if f"<{modality}>" in text:
            raise MessageError(
                f"{at}: holds a <{modality}> tag; in chat messages an input is its own part "
                f"({{'type': '{modality}', '{modality}': ...}}), placed where the tag would be"
            )


def _media_source(part: Mapping[str, Any], kind: str, at: str) -> tuple[str, Any]:
    """``(modality, value)`` of a media part, from whichever key the part's type uses."""
    if kind == "input_audio":
        body = part.get("input_audio")
        if not isinstance(body, Mapping) or not isinstance(body.get("data"), str):
            raise MessageError(f"{at}.input_audio: expected {{'data': <base64>, 'format': 'wav'}}")
        return "audio", _b64(body["data"], f"{at}.input_audio.data")
    if kind in _URL_PARTS:
        body = part.get(kind)
        url = body.get("url") if isinstance(body, Mapping) else body
        if not isinstance(url, str):
            raise MessageError(f"{at}.{kind}: expected {{'url': ...}} or a URL string, got {_kind(body)}")
        return _URL_PARTS[kind], url
    keys = [k for k in (kind, "url", "path", "base64") if part.get(k) is not None]
    if len(keys) != 1:
        found = "none" if not keys else ", ".join(keys)
        raise MessageError(
            f"{at}: a {kind} part needs exactly one of {kind}, url, path, base64 (found {found})"
        )
    value = part[keys[0]]
    if keys[0] == "base64":
        if not isinstance(value, str):
            raise MessageError(f"{at}.base64: expected a base64 string, got {_kind(value)}")
        return kind, _b64(value, f"{at}.base64")
    return kind, value


def _resolve(value: Any, modality: str, at: str, fetch: int | None, allow_files: bool) -> Any:
    """A part's value as something :func:`anygen.media.load_media` reads (URLs fetched or decoded). ``fetch``: the
    most bytes a http(s) URL may bring, None: no fetching."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        return value  # bytes, PIL image, array, Audio, Video: the loader checks them
    scheme = (
        urllib.parse.urlsplit(value).scheme.lower() if "://" in value or value.startswith("data:") else ""
    )
    if scheme == "data":
        return _data_url(value, modality, at)
    if scheme in ("http", "https"):
        if fetch is None:
            raise MessageError(
                f"{at}: {_short(value)} is a {scheme} URL, but anygen is offline (HF_HUB_OFFLINE/ANYGEN_OFFLINE set, "
                "or the caller allows no fetching); "
                + (
                    "pass the file's path, its bytes or a data: URL"
                    if allow_files
                    else "send it as a data: URL"
                )
            )
        return _fetch(value, at, fetch)
    if scheme and scheme != "file":
        raise MessageError(
            f"{at}: unsupported URL scheme {scheme!r} in {_short(value)}; use data:, http(s): or a path"
        )
    if not allow_files:
        raise MessageError(f"{at}: local paths are not accepted here; send the media as a data: URL")
    path = Path(
        urllib.parse.unquote(urllib.parse.urlsplit(value).path) if scheme == "file" else value
    ).expanduser()
    if not path.is_file():
        raise MessageError(f"{at}: no such file: {str(path)!r}")
    return str(path)


def _data_url(url: str, modality: str, at: str) -> bytes:
    head, sep, body = url.partition(",")
    if not sep:
        raise MessageError(f"{at}: malformed data: URL (no ',' before the data)")
    params = head[len("data:") :].split(";")
    mime = params[0].strip().lower()
    if mime and mime != "application/octet-stream" and not mime.startswith(_DATA_TYPES[modality]):
        raise MessageError(f"{at}: a data: URL of type {mime!r} given for a {modality} part")
    if "base64" in (p.strip().lower() for p in params[1:]):
        return _b64(body, f"{at} (data: URL)")
    return urllib.parse.unquote_to_bytes(body)


def _b64(text: str, at: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MessageError(f"{at}: not valid base64") from None


def _fetch(url: str, at: str, max_bytes: int) -> bytes:
    """Download ``url`` (at most ``max_bytes``), with an error naming the part on failure."""
    try:
        with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as response:  # noqa: S310 (http(s) checked)
            data = response.read(max_bytes + 1)
    except OSError as err:
        raise MessageError(f"{at}: could not fetch {_short(url)}: {err}") from None
    if len(data) > max_bytes:
        raise MessageError(f"{at}: {_short(url)} holds more than max_fetch_bytes={max_bytes} bytes")
    return data


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


# -- answers as messages -----------------------------------------------------------------------------------------------
def output_message(output: Any) -> dict[str, Any]:
    """An :class:`~anygen.output.AnyToAnyOutput` as an assistant message: a text part, then its media parts (PIL
    images, :class:`~anygen.media.Video`, :class:`~anygen.media.Audio`), so a conversation can go on with it."""
    content: list[dict[str, Any]] = [{"type": "text", "text": output.text}]
    content += [{"type": "image", "image": image} for image in output.images]
    content += [{"type": "video", "video": video} for video in output.videos]
    content += [{"type": "audio", "audio": audio} for audio in output.audios]
    return {"role": "assistant", "content": content}
