"""``POST /v1/chat/completions`` (OpenAI's API) on Ray Serve, end to end: the tiny pipeline on a local Ray instance.

One service is started for the module (about a minute on a busy 2-core machine) and shut down at the end. The
``openai`` client tests are skipped when the package is missing; the raw HTTP tests check the same JSON.
"""

import base64
import http.client
import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

# Read by Ray when it is imported: keep a local instance on loopback, and send no usage statistics.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.serve")

from serve_helpers import local_service  # noqa: E402

from anygen.media import Audio, Video  # noqa: E402
from anygen.messages import parse_messages  # noqa: E402

APP = "anygen-openai-test"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
KW = {"seed": 3, "max_tokens": 12}


@pytest.fixture(scope="module")
def service():
    with local_service(APP) as url:
        yield url


@pytest.fixture(scope="module")
def bird(samples) -> str:
    return (
        "data:image/jpeg;base64,"
        + base64.b64encode((samples / "assets" / "bird_image.jpg").read_bytes()).decode()
    )


def _post(url: str, body: bytes | dict, timeout: float = 120):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("content-type"), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type"), err.read()


def _chat(service, **body):
    status, kind, raw = _post(f"{service}/v1/chat/completions", body)
    assert kind.startswith("application/json"), (status, kind, raw[:200])
    return status, json.loads(raw)


def _events(raw: bytes) -> list:
    """The ``data:`` payloads of a server-sent event stream, JSON-decoded (``[DONE]`` as the string)."""
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def _stream(service, **body) -> list:
    status, kind, raw = _post(f"{service}/v1/chat/completions", {**body, "stream": True})
    assert status == 200 and kind.startswith("text/event-stream"), (status, kind, raw[:300])
    return _events(raw)


def _decoded(url: str) -> bytes:
    head, _, data = url.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head
    return base64.b64decode(data)


def _media(content) -> dict[str, list[bytes]]:
    """The files in an assistant message's content, by kind (as the answer's parts name them)."""
    if isinstance(content, str):
        return {}
    kinds = {"image_url": "image", "video_url": "video", "audio_url": "audio"}
    out: dict[str, list[bytes]] = {}
    for part in content[1:]:
        out.setdefault(kinds[part["type"]], []).append(_decoded(part[part["type"]]["url"]))
    return out


def _text(content) -> str:
    if isinstance(content, str):
        return content
    assert content[0]["type"] == "text"
    return content[0]["text"]


def _replica_stats(name: str) -> dict:
    from ray import serve

    return serve.get_deployment_handle(name, app_name=APP).stats.remote().result(timeout_s=60)


# -- the README's examples ----------------------------------------------------------------------------------
def test_curl_with_an_image_as_a_data_url(service, samples, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("no curl")
    # README: IMG=$(base64 -w0 bird.jpg); curl .../v1/chat/completions -d @request.json
    image = base64.b64encode((samples / "assets" / "bird_image.jpg").read_bytes()).decode()
    request = {
        "model": "tiny",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
                    {"type": "text", "text": "What is in this picture?"},
                ],
            }
        ],
        "seed": 0,
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    out = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "-w", "\n%{http_code}", "-H", "Content-Type: application/json"]
        + [f"{service}/v1/chat/completions", "-d", f"@{tmp_path / 'request.json'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "200", body[:500]
    answer = json.loads(body)
    assert answer["object"] == "chat.completion" and answer["model"] == "tiny"
    assert answer["id"].startswith("chatcmpl-") and isinstance(answer["created"], int)
    (choice,) = answer["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert isinstance(_text(choice["message"]["content"]), str)
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert answer["anygen"]["seed"] == 0


def _openai_example(base_url: str, path: str):
    """The README's ``openai`` client example, as it is written there (``base_url`` and the image's path aside)."""
    import base64

    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="anygen")  # any key: the server checks none
    model = client.models.list().data[0].id  # the served pipeline's name
    with open(path, "rb") as f:
        image = base64.b64encode(f.read()).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
                {"type": "text", "text": "Draw this bird flying over the sea."},
            ],
        }
    ]
    completion = client.chat.completions.create(
        model=model,
        messages=messages,
        modalities=["text", "image"],  # the kinds of output the answer must include
        seed=0,
        max_completion_tokens=16,
        extra_body={"num_inference_steps": 2},  # anygen's own options
    )
    message = completion.choices[0].message
    for part in message.content:  # a string when the answer holds no media
        if part["type"] == "text":
            print(part["text"])
        elif part["type"] == "image_url":
            data = part["image_url"]["url"].split(",", 1)[1]  # data:image/png;base64,...
            with open("answer.png", "wb") as f:
                f.write(base64.b64decode(data))

    # The next turn: the answer goes back into the messages as it came.
    messages.append({"role": "assistant", "content": message.content})
    messages.append({"role": "user", "content": "Now make it night."})
    stream = client.chat.completions.create(
        model=model, messages=messages, seed=0, max_completion_tokens=16, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    return completion, messages


def test_the_readme_openai_client_example(service, samples, tiny_pipe, tmp_path, monkeypatch, capsys):
    pytest.importorskip("openai")
    monkeypatch.chdir(tmp_path)
    completion, messages = _openai_example(f"{service}/v1", str(samples / "assets" / "bird_image.jpg"))
    content = completion.choices[0].message.content
    assert isinstance(content, list) and [p["type"] for p in content][:2] == ["text", "image_url"]
    saved = Image.open(tmp_path / "answer.png")
    assert saved.format == "PNG" and saved.size[0] > 0
    # The same as a local call of the pipeline on the same messages and options.
    local = tiny_pipe(
        messages[:1], output_modalities=["image"], seed=0, max_new_tokens=16, num_inference_steps=2
    )
    assert _text(content) == local.text
    np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), np.asarray(local.images[0]))
    # The second turn's streamed text is the local answer to the whole conversation (the history reached the LLM).
    second = tiny_pipe(messages, seed=0, max_new_tokens=16)
    printed = capsys.readouterr().out
    assert printed == f"{local.text}\n{second.text}"


# -- the answer, streamed or not ----------------------------------------------------------------------------
def test_streamed_text_and_media_are_the_answer(service, bird):
    body = dict(
        messages=_user(
            {"type": "image_url", "image_url": {"url": bird}}, {"type": "text", "text": "show and play it"}
        ),
        modalities=["text", "image", "video", "audio"],
        num_frames=4,
        stream_options={"include_usage": True},
        seed=2,  # an answer of several pieces
        max_tokens=12,
    )
    status, whole = _chat(service, **{k: v for k, v in body.items() if k != "stream_options"})
    assert status == 200, whole
    message = whole["choices"][0]["message"]
    files = _media(message["content"])
    assert [p["type"] for p in message["content"]] == ["text", "image_url", "video_url", "audio_url"]
    assert Image.open(io.BytesIO(files["image"][0])).format == "PNG"
    assert Video.load(files["video"][0]).num_frames == 4
    assert Audio.load(files["audio"][0]).num_samples > 0

    events = _stream(service, **body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == _text(message["content"])
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) >= 2
    (media,) = [
        c["choices"][0]["delta"]["media"]
        for c in chunks
        if c["choices"] and "media" in c["choices"][0]["delta"]
    ]
    assert media == message["content"][1:]  # the same files, same seed
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_openai_client_stream_is_the_non_streamed_answer(service):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{service}/v1", api_key="x", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    messages = [
        {"role": "system", "content": "You answer in one line."},
        {"role": "user", "content": "a red car"},
    ]
    kw = dict(model="tiny", messages=messages, seed=5, max_tokens=20, modalities=["text", "image"])
    whole = client.chat.completions.create(**kw)
    text, media, finish = "", [], None
    for chunk in client.chat.completions.create(**kw, stream=True):
        delta = chunk.choices[0].delta
        text += delta.content or ""
        media += (delta.model_extra or {}).get("media", [])
        finish = chunk.choices[0].finish_reason or finish
    content = whole.choices[0].message.content
    assert text == _text(content) and media == content[1:] and finish == whole.choices[0].finish_reason
    assert whole.usage.completion_tokens >= 1 and whole.model == "tiny"


def test_the_answer_reads_back_as_a_message_for_the_next_turn(service, bird):
    first = [{"role": "user", "content": [{"type": "text", "text": "draw a boat"}]}]
    status, out = _chat(service, messages=first, modalities=["image"], **KW)
    assert status == 200, out
    answer = out["choices"][0]["message"]
    # anygen.messages reads it: the answer's text is the history's assistant turn; its media are not inputs.
    conversation = [*first, answer, {"role": "user", "content": "again, at night"}]
    parsed = parse_messages(conversation, allow_remote=False, allow_files=False)
    assert [t.role for t in parsed.history] == ["user", "assistant"]
    assert parsed.history[1].text == _text(answer["content"]) and parsed.prompt == "again, at night"
    status, again = _chat(service, messages=conversation, **KW)
    assert status == 200, again
    # The history is part of the LLM's prompt.
    status, alone = _chat(service, messages=conversation[-1:], **KW)
    assert status == 200 and alone["usage"]["prompt_tokens"] < again["usage"]["prompt_tokens"]
    # An assistant message as OpenAI returns it (null refusal, empty annotations) is taken back as it came.
    returned = {**answer, "refusal": None, "annotations": [], "tool_calls": None}
    status, out = _chat(service, messages=[*first, returned, conversation[-1]], **KW)
    assert status == 200 and _text(out["choices"][0]["message"]["content"]) == _text(
        again["choices"][0]["message"]["content"]
    )


# -- refused requests ---------------------------------------------------------------------------------------
def _user(*parts):
    return [{"role": "user", "content": list(parts)}]


def test_refused_requests_name_the_field(service, bird, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    text_file = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    big = "data:image/png;base64," + base64.b64encode(os.urandom(1_100_000)).decode()
    ask = {"type": "text", "text": "what is it?"}
    cases = [
        # media the server will not fetch or read
        (
            dict(messages=_user({"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}})),
            400,
            "refused_source",
            "messages[0].content[0]",
        ),
        (
            dict(messages=_user(ask, {"type": "image_url", "image_url": {"url": str(secret)}})),
            400,
            "refused_source",
            "messages[0].content[1]",
        ),
        (
            dict(messages=_user({"type": "image_url", "image_url": {"url": secret.as_uri()}})),
            400,
            "refused_source",
            "messages[0].content[0]",
        ),
        (
            dict(messages=_user({"type": "image", "path": str(secret)}, ask)),
            400,
            "refused_source",
            "messages[0].content[0]",
        ),
        (
            dict(messages=_user({"type": "image", "image": "ftp://host/x.png"})),
            400,
            "refused_source",
            "messages[0].content[0]",
        ),
        # malformed messages
        (
            dict(messages=_user(ask, {"type": "smell", "smell": "roses"})),
            400,
            "invalid_messages",
            "messages[0].content[1].type",
        ),
        (
            dict(messages=_user({"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}})),
            400,
            "invalid_messages",
            "messages[0].content[0]",
        ),
        (
            dict(messages=_user({"type": "image_url", "image_url": {"url": text_file}})),
            400,
            "invalid_messages",
            "messages[0].content[0]",
        ),
        (
            dict(
                messages=_user({"type": "image_url", "image_url": {"url": bird.replace("image/", "audio/")}})
            ),
            400,
            "invalid_messages",
            "messages[0].content[0]",
        ),
        (
            dict(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
            400,
            "invalid_messages",
            "messages[1]",
        ),
        (dict(messages=[{"role": "tool", "content": "42"}]), 400, "invalid_messages", "messages[0].role"),
        (dict(messages=[]), 400, "invalid_messages", "messages"),
        (dict(messages=_user({"type": "text", "text": "   "})), 422, "invalid_request", "messages[0]"),
        # limits
        (
            dict(messages=_user({"type": "image_url", "image_url": {"url": big}})),
            413,
            "media_too_large",
            "messages[0].content[0]",
        ),
        (
            dict(messages=_user(*[{"type": "image_url", "image_url": {"url": bird}}] * 5)),
            422,
            "invalid_request",
            "messages",
        ),
        (dict(messages=[{"role": "user", "content": "x" * 9000}]), 422, "invalid_request", "messages"),
        (dict(messages=_user(ask), max_tokens=100_000), 422, "invalid_request", "max_tokens"),
        (dict(messages=_user(ask), max_completion_tokens=0), 422, "invalid_request", "max_completion_tokens"),
        (dict(messages=_user(ask), num_inference_steps=1000), 422, "invalid_request", "num_inference_steps"),
        # options
        (dict(messages=_user(ask), model="gpt-4o"), 404, "model_not_found", "model"),
        (dict(messages=_user(ask), n=2), 422, "invalid_request", "n"),
        (dict(messages=_user(ask), steps=3), 422, "invalid_request", "steps"),
        (dict(messages=_user(ask), modalities=["text", "smell"]), 422, "invalid_request", "modalities[1]"),
        (dict(messages=_user(ask), temperature="hot"), 422, "invalid_request", "temperature"),
        (
            dict(messages=_user(ask), tools=[{"type": "function", "function": {"name": "f"}}]),
            422,
            "invalid_request",
            "tools",
        ),
        (
            dict(messages=_user(ask), stream=True, model="gpt-4o"),
            404,
            "model_not_found",
            "model",
        ),  # JSON, not SSE
        (dict(messages=_user(ask), stream=True, max_tokens=100_000), 422, "invalid_request", "max_tokens"),
    ]
    for body, want_status, want_code, want_param in cases:
        status, out = _chat(service, **body)
        shown = json.dumps(body)[:120]
        assert status == want_status, (shown, out)
        error = out["error"]
        assert error["code"] == want_code and error["param"] == want_param, (shown, error)
        assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
        assert error["status"] == status and error["message"] and error["fields"][0]["field"] == want_param
        assert "object at 0x" not in error["message"], error
    status, kind, raw = _post(f"{service}/v1/chat/completions", b'{"messages": [')
    assert status == 400 and json.loads(raw)["error"]["code"] == "bad_json"
    status, kind, raw = _post(f"{service}/v1/chat/completions", b'{"messages": "' + b"x" * 3_100_000 + b'"}')
    assert status == 413 and json.loads(raw)["error"]["code"] == "body_too_large"
    # The default OpenAI fields a client may send are accepted.
    defaults = dict(
        frequency_penalty=0,
        presence_penalty=0,
        logprobs=False,
        n=1,
        stream=False,
        tools=[],
        tool_choice="auto",
        response_format={"type": "text"},
        user="someone",
        metadata={"k": "v"},
        store=False,
        stop=None,
        temperature=1,
        top_p=1,
    )
    status, out = _chat(service, messages=_user(ask), **defaults, **KW)
    assert status == 200, out


def test_openai_client_errors(service):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{service}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found" and err.value.param == "model"
    remote = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": remote}])
    assert err.value.param == "messages[0].content[0]" and "data: URL" in err.value.message


def test_an_error_mid_stream_is_an_error_event(service):
    from ray import serve

    serve.get_deployment_handle("image_generator", app_name=APP).fail_next.remote(1).result(timeout_s=60)
    events = _stream(service, messages=_user({"type": "text", "text": "a cat"}), modalities=["image"], **KW)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "[DONE]" not in events
    error = events[-1]["error"]
    assert (
        error["status"] == 500
        and error["code"] == "generation_failed"
        and "injected failure" in error["message"]
    )
    # The next one is served.
    assert (
        _stream(service, messages=_user({"type": "text", "text": "a cat"}), modalities=["image"], **KW)[-1]
        == "[DONE]"
    )


def test_a_stream_whose_client_disconnects_is_cancelled(service):
    """The client closes the stream while the image is being made: the generator stops at its next step."""
    cancelled_before = _replica_stats("image_generator")["cancelled"]
    host, port = service.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = dict(
        messages=_user({"type": "text", "text": "a very detailed city"}),
        modalities=["image"],
        only_requested=True,
        seed=0,
        max_tokens=2,
        height=512,
        width=512,
        num_inference_steps=100,
        stream=True,
    )  # within the limits, minutes of work on this machine (a few seconds a step)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    deadline = time.monotonic() + 60
    while _replica_stats("image_generator")["busy_s"] is None:  # the image is being made
        assert time.monotonic() < deadline, "the image generator never started"
        time.sleep(0.2)
    resp.close()
    conn.close()
    while _replica_stats("image_generator")["cancelled"] == cancelled_before:
        assert time.monotonic() < deadline + 60, "the image generator never saw the request cancelled"
        time.sleep(0.5)
    started = time.monotonic()
    status, out = _chat(
        service, messages=_user({"type": "text", "text": "a cat"}), modalities=["image"], **KW
    )
    assert status == 200 and time.monotonic() - started < 60


def test_v1_generate_is_unchanged(service):
    status, kind, raw = _post(
        f"{service}/v1/generate",
        {"prompt": "a red car", "output_modalities": ["image"], "seed": 2, "max_new_tokens": 8},
    )
    out = json.loads(raw)
    assert status == 200 and set(out) == {"text", "images", "videos", "audios", "seed", "timings_ms"}
    assert len(out["images"]) == 1 and out["seed"] == 2
    status, kind, raw = _post(f"{service}/v1/generate", {"prompt": "a dog", "steps": 3})
    error = json.loads(raw)["error"]
    assert (
        status == 422
        and set(error) == {"status", "type", "message", "fields"}
        and error["type"] == "invalid_request"
    )
