"""A hostile caller's chat messages and chat-completions bodies: any JSON-like value is either read or refused with
anygen's own error (naming where), never a bare exception from deep inside; no file is read and nothing fetched."""

import base64
import io
import json
import os
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from anygen.errors import AnyGenError
from anygen.messages import MessageError, parse_messages
from anygen.serve.chat import check_messages, message_error, parse_chat_request
from anygen.serve.config import LimitsConfig
from anygen.serve.schema import RequestError

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    database=None,
    derandomize=os.environ.get("ANYGEN_FUZZ_RANDOM", "") != "1",
    suppress_health_check=list(HealthCheck),
)


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


PNG = _png()
# Values a part may hold: good ones, and the shapes an attacker tries (paths, URLs, odd schemes, bad base64).
VALUES = st.one_of(
    st.just(PNG),
    st.sampled_from(
        [
            "/etc/passwd",
            "file:///etc/passwd",
            "http://169.254.169.254/latest/meta-data",
            "https://example.com/x.png",
            "ftp://x/y",
            "data:text/plain;base64,aGk=",
            "data:image/png;base64,!!!",
            "data:,",
            "",
            "../../secret.png",
        ]
    ),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.integers(),
    st.none(),
)
KINDS = st.sampled_from(
    ["text", "image", "audio", "video", "image_url", "video_url", "audio_url", "input_audio", "gif", None, 3]
)
PART = st.one_of(
    st.fixed_dictionaries(
        {"type": KINDS},
        optional={
            "text": VALUES,
            "image": VALUES,
            "url": VALUES,
            "path": VALUES,
            "base64": VALUES,
            "image_url": st.one_of(VALUES, st.fixed_dictionaries({"url": VALUES})),
            "input_audio": st.one_of(VALUES, st.fixed_dictionaries({"data": VALUES, "format": VALUES})),
        },
    ),
    VALUES,
)
CONTENT = st.one_of(st.text(max_size=30), st.lists(PART, max_size=4), VALUES)
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", None])},
        optional={"content": CONTENT, "name": st.text(max_size=5), "extra": st.integers()},
    ),
    VALUES,
)
MESSAGES = st.one_of(st.lists(MESSAGE, max_size=4), VALUES, MESSAGE)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("the network was used"))


@SETTINGS
@given(messages=MESSAGES)
def test_parse_messages_reads_or_refuses_with_its_own_error(messages):
    try:
        parse_messages(messages, allow_files=False, allow_remote=False)
    except AnyGenError as err:
        assert str(err)  # a message that says something
        if isinstance(err, MessageError) and "messages[" in str(err):
            assert str(err).startswith(("messages[", "messages:"))


@SETTINGS
@given(
    messages=MESSAGES,
    stream=st.sampled_from([True, False, "yes", None]),
    extra=st.dictionaries(
        st.sampled_from(["model", "n", "max_tokens", "temperature", "tools", "modalities", "seed", "bogus"]),
        st.one_of(
            st.integers(-3, 5), st.text(max_size=5), st.none(), st.lists(st.text(max_size=5), max_size=2)
        ),
        max_size=3,
    ),
)
def test_chat_completion_bodies_are_read_or_refused_as_http_errors(messages, stream, extra):
    body = json.dumps({"messages": messages, "stream": stream, **extra}, default=str).encode()
    limits = LimitsConfig()
    try:
        call = parse_chat_request(body)
        checked = check_messages(call.messages, limits, ["image", "audio", "video"])
    except RequestError as err:
        assert 400 <= err.status < 500, err
        return
    try:  # what the ingress then does with what passed its own checks
        parse_messages(checked, allow_files=False, allow_remote=False)
    except MessageError as err:
        assert 400 <= message_error(err).status < 500
