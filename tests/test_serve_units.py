"""The serving config, request checks and media encoding, and the ``serve`` command's parser: no Ray needed."""

import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from anygen.cli import build_parser
from anygen.errors import AnyGenError
from anygen.serve.config import ServeConfig, ServeConfigError, load_config
from anygen.serve.schema import GenerateRequest, RequestError, check_limits, decode_media, parse_request

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_is_the_built_in_default(monkeypatch):
    monkeypatch.delenv("ANYGEN_PIPELINE", raising=False)  # the suite's tiny
    assert load_config(ROOT / "serving" / "default.yaml") == ServeConfig()
    assert ServeConfig().pipeline == "mini"
    assert load_config(None) == ServeConfig()
    # The defaults fit a 2-core machine: 1 replica each, 2 CPUs reserved in all.
    assert ServeConfig().reserved(["image", "video", "audio"]) == {"CPU": 2.0, "GPU": 0.0}


def test_example_cluster_config_loads():
    config = load_config(ROOT / "serving" / "gpu-cluster.example.yaml")
    video = config.generator("video").ray_options()
    assert video["ray_actor_options"]["num_gpus"] == 1
    assert video["autoscaling_config"]["max_replicas"] == 2 and "num_replicas" not in video
    assert config.generator("video").torch_device == "cuda"


def test_config_errors_name_the_field(tmp_path):
    bad = {
        "generators": {"video": {"num_gpus": -1, "replicas": 2}},
        "llm": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}},
        "limits": {"max_media_bytes": 0},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ServeConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text
    assert "generators.video.num_gpus" in text and "generators.video.replicas: unknown field" in text
    assert "llm.autoscaling: min_replicas (3) is more than max_replicas (2)" in text
    assert "limits.max_media_bytes" in text
    with pytest.raises(ServeConfigError, match="num_replicas or autoscaling"):
        ServeConfig.from_dict({"llm": {"num_replicas": 2, "autoscaling": {"max_replicas": 3}}})
    with pytest.raises(ServeConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_ray_options_and_overrides():
    config = ServeConfig().with_overrides(**{"generators.image.num_replicas": 2, "http.port": 9000})
    image = config.generator("image").ray_options()
    assert image["num_replicas"] == 2 and image["max_ongoing_requests"] == 4
    assert image["ray_actor_options"]["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert config.http.port == 9000 and config.generator("video").num_replicas == 1
    assert config.reserved(["image"]) == {"CPU": 1.5, "GPU": 0.0}


def test_check_resources_refuses_what_a_local_instance_cannot_start():
    from anygen.serve.app import check_resources

    config = ServeConfig().with_overrides(**{"generators.image.num_replicas": 3})
    check_resources(config, ["image"], {"CPU": 2.0})
    with pytest.raises(ServeConfigError, match=r"reserve 3 CPUs, the Ray instance has 2.*--num-cpus"):
        check_resources(config, ["image", "video", "audio"], {"CPU": 2.0})
    with pytest.warns(UserWarning, match="wait until the cluster has room"):
        check_resources(config, ["image", "video", "audio"], {"CPU": 2.0}, local=False)


def _error(body: bytes) -> RequestError:
    with pytest.raises(RequestError) as err:
        parse_request(body)
    return err.value


def test_request_schema_refuses_unknown_options_and_bad_json():
    req = parse_request(b'{"prompt": "a dog", "seed": 3, "guidance_scale": {"image": 5}, "temperature": 1}')
    assert req.seed == 3 and req.guidance_scale == {"image": 5.0} and req.temperature == 1.0
    assert req.generator_options()["guidance_scale"] == {"image": 5.0}
    assert req.llm_options()["seed"] == 3

    err = _error(b'{"prompt": "a dog", "steps": 4}')
    assert err.status == 422 and [f.field for f in err.fields] == ["steps"]
    assert "unknown option" in err.message and "num_inference_steps" in err.message
    err = _error(b'{"prompt": ')
    assert err.status == 400 and err.type == "bad_json"
    assert _error(b"[1, 2]").status == 422
    err = _error(b'{"prompt": "x", "seed": "3", "num_inference_steps": {"image": 0}}')
    assert {f.field for f in err.fields} == {"seed", "num_inference_steps.image"}
    assert [f.field for f in _error(b"{}").fields] == ["prompt"]
    assert [f.field for f in _error(b'{"prompt": "x", "output_modalities": ["smell"]}').fields] == [
        "output_modalities[0]"
    ]
    body = err.body()["error"]
    assert body["status"] == 422 and body["fields"]


def test_limits_and_pipeline_capabilities(tiny_pipe):
    limits = ServeConfig().limits
    kw = dict(inputs=["image"], outputs=["image", "audio"])
    check_limits(GenerateRequest(prompt="x", images=["a"], output_modalities=["image"]), limits, **kw)
    bad = GenerateRequest(prompt="x", videos=["a"], images=["a"] * 5, output_modalities=["video"])
    with pytest.raises(RequestError) as err:
        check_limits(bad, limits, **kw)
    assert {f.field for f in err.value.fields} == {"videos", "images", "output_modalities[0]"}
    assert err.value.status == 422
    # The work limits are the pipeline's own (anygen.options.Limits), checked before any model runs.
    from anygen.serve.schema import option_error

    work = limits.work_limits()
    assert work.max_seconds == limits.request_timeout_s and work.max_inference_steps == 100
    req = GenerateRequest(
        prompt="x" * 9000,
        max_new_tokens=10**6,
        num_inference_steps={"image": 500},
        height=4096,
        width=4096,
        num_frames=1000,
        audio_length_in_s=600.0,
    )
    with pytest.raises(AnyGenError) as err:
        tiny_pipe.check_inputs(req.prompt, options=req.options, limits=work)
    fields = {f.field for f in option_error(err.value).fields}
    assert fields == {
        "prompt",
        "max_new_tokens",
        "num_inference_steps.image",
        "height",
        "width",
        "num_frames",
        "audio_length_in_s",
    }


def test_decode_media_base64_forms_and_limits():
    data = bytes(range(256)) * 3
    b64 = base64.b64encode(data).decode()
    assert decode_media(b64, "images[0]", 10_000) == data
    assert decode_media("data:image/png;base64," + b64, "images[0]", 10_000) == data
    assert decode_media(base64.urlsafe_b64encode(data).decode().rstrip("="), "images[0]", 10_000) == data
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    assert decode_media(wrapped, "images[0]", 10_000) == data
    for bad in ("@@@@", "abc=d", "a"):
        with pytest.raises(RequestError) as err:
            decode_media(bad, "images[1]", 10_000)
        assert err.value.status == 400 and err.value.fields[0].field == "images[1]"
    with pytest.raises(RequestError) as err:
        decode_media(b64, "audios[0]", 100)
    assert err.value.status == 413 and "limits.max_media_bytes=100" in err.value.message
    with pytest.raises(RequestError, match="empty"):
        decode_media("", "videos[0]", 100)


def test_encoded_media_are_the_files_save_writes(tmp_path):
    from anygen.media import Audio, Video
    from anygen.output import AnyToAnyOutput
    from anygen.serve.codec import encode_media

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    video = Video(rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), fps=8)
    audio = Audio(rng.uniform(-1, 1, 1600).astype(np.float32), 16000)
    AnyToAnyOutput(text="", images=[image], videos=[video], audios=[audio]).save(tmp_path)
    assert encode_media("image", image) == (tmp_path / "image_0.png").read_bytes()
    assert encode_media("audio", audio) == (tmp_path / "audio_0.wav").read_bytes()
    mp4 = encode_media("video", video)
    assert Video.load(mp4).num_frames == 3
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_media("image", image)))), np.asarray(image))


def test_serve_command_parses_without_importing_ray():
    from anygen.serve.cli import _config

    ray_loaded = "ray" in sys.modules
    args = build_parser().parse_args(
        ["serve", "--pipeline", "tiny", "--port", "8123", "--replicas", "image=2", "--num-cpus", "4"]
    )
    assert args.handler.__module__ == "anygen.serve.cli"
    config = _config(args)
    assert config.http.port == 8123 and config.generator("image").num_replicas == 2
    assert config.ray.num_cpus == 4 and config.http.host == "127.0.0.1"
    assert ("ray" in sys.modules) == ray_loaded  # parsing imports no Ray
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--replicas", "smell=2"])


def test_app_builder_builds_the_application_without_starting_ray():
    serve = pytest.importorskip("ray.serve")
    import ray

    from anygen.serve.app import app_builder

    app = app_builder({"config": str(ROOT / "serving" / "default.yaml"), "pipeline": "tiny"})
    assert isinstance(app, serve.Application)
    assert not ray.is_initialized()


def test_condition_then_generate_media_is_the_pipeline_call(tiny_pipe):
    """The split the service runs in two places gives exactly what one ``pipe(...)`` call gives."""
    kw = dict(output_modalities=("image", "video", "audio"), seed=9, max_new_tokens=6)
    options = dict(num_inference_steps={"image": 3}, num_frames=4)
    whole = tiny_pipe("a storm at sea", **kw, **options)
    answer = tiny_pipe.condition("a storm at sea", **kw)
    assert (
        answer.seed == 9
        and answer.outputs[0].text == whole.text
        and list(answer.media) == list(kw["output_modalities"])
    )
    for modality, request in answer.media.items():
        made = tiny_pipe.generate_media(
            modality, request.conditioning, request.owners, seed=answer.seed, **options
        )
        expected = getattr(whole, f"{modality}s")
        assert len(made) == len(expected)
        for a, b in zip(made, expected, strict=True):
            if modality == "image":
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            elif modality == "video":
                np.testing.assert_array_equal(a.frames, b.frames)
            else:
                np.testing.assert_array_equal(a.waveform, b.waveform)
    with pytest.raises(Exception, match="seed or a torch.Generator"):
        tiny_pipe.generate_media("image", request.conditioning, request.owners)


def _image_replica(limits=None):
    pytest.importorskip("ray.serve")
    from anygen.serve.deployments import GeneratorServer
    from anygen.spec import load_spec

    return GeneratorServer.func_or_class(load_spec("tiny"), "image", "cpu", 1, limits)


def test_a_replica_stops_work_past_its_time_limit_or_when_its_caller_goes():
    """The model thread is freed: a late request stops at its next denoising step (504), a cancelled one
    (client disconnected) too, and the next request runs at once."""
    import asyncio
    import time

    import torch

    from anygen.options import Limits

    replica = _image_replica(Limits())  # no step limit: only time and cancellation stop these
    cond = torch.zeros(1, 77, 32)
    endless = {"num_inference_steps": 999}  # the most the tiny scheduler takes: far longer than these waits

    async def scenario():
        t = time.monotonic()
        late = await replica.generate(cond, [0], 0, endless, 0.5)
        assert late["error"]["status"] == 504 and late["error"]["type"] == "timeout"
        assert time.monotonic() - t < 20
        task = asyncio.create_task(replica.generate(cond, [0], 0, endless, 600))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t = time.monotonic()
        quick = await replica.generate(cond, [0], 0, {"num_inference_steps": 1}, 600)
        assert len(quick["files"]) == 1 and time.monotonic() - t < 20

    asyncio.run(scenario())
    stats = replica.stats()
    assert stats["cancelled"] == 1 and stats["timeouts"] == 1 and stats["busy_s"] is None
    assert replica.ping() == "ok"


def test_ping_reports_a_replica_stuck_past_its_time_limit(monkeypatch):
    import asyncio
    import threading

    import anygen.serve.deployments as deployments

    replica = _image_replica()
    release = threading.Event()
    # One step that never reaches a point where it can stop (it ignores interrupt).
    monkeypatch.setattr(replica.pipe, "generate_media", lambda *a, **k: release.wait(30) and [])
    monkeypatch.setattr(deployments, "STUCK_GRACE_S", 0.2)

    async def scenario():
        task = asyncio.create_task(replica.generate(None, [0], 0, {}, 0.1))
        await asyncio.sleep(0.8)
        health = replica.ping()
        release.set()
        await task
        return health

    health = asyncio.run(scenario())
    assert health.startswith("stuck: a call has run") and "past its time limit" in health
    assert replica.ping() == "ok"


def test_replica_errors_carry_the_fields():
    import asyncio

    import torch

    replica = _image_replica()
    cond = torch.zeros(1, 77, 32)
    out = asyncio.run(replica.generate(cond, [0], 0, {"num_inference_steps": 1000}, 60))
    assert out["error"]["status"] == 422 and out["error"]["fields"][0]["field"] == "num_inference_steps"
    out = asyncio.run(replica.generate(cond, [0], 0, {"height": 65, "width": 64}, 60))
    assert [f["field"] for f in out["error"]["fields"]] == ["height"]


# -- POST /v1/chat/completions: the request and the answer (anygen.serve.chat) ------------------------------
def _chat_error(body: dict | bytes) -> RequestError:
    import json

    from anygen.serve.chat import parse_chat_request

    with pytest.raises(RequestError) as err:
        parse_chat_request(body if isinstance(body, bytes) else json.dumps(body).encode())
    return err.value


def test_chat_request_options_are_checked_under_the_names_the_client_sent():
    import json

    from anygen.serve.chat import parse_chat_request

    hi = [{"role": "user", "content": "hi"}]
    call = parse_chat_request(
        json.dumps(
            dict(messages=hi, model="tiny", max_completion_tokens=7, modalities=["text", "audio"], seed=4)
            | dict(
                num_frames=4, stream=True, stream_options={"include_usage": True}, tools=[], logprobs=False
            )
        ).encode()
    )
    assert call.stream and call.include_usage and call.model == "tiny" and call.messages == hi
    opts = call.request.options
    assert opts.max_new_tokens == 7 and list(opts.output_modalities) == ["audio"] and opts.seed == 4
    assert call.request.generator_options()["num_frames"] == 4
    cases = [
        (dict(max_tokens=1.5), "max_tokens"),
        (dict(max_completion_tokens=0), "max_completion_tokens"),
        (dict(max_tokens=3, max_completion_tokens=4), "max_tokens"),
        (dict(modalities=["text", "image", "smell"]), "modalities[2]"),
        (dict(modalities="image"), "modalities"),
        (dict(n=2), "n"),
        (dict(n=True), "n"),
        (dict(steps=2), "steps"),
        (dict(seed=-1), "seed"),
        (dict(top_p=0), "top_p"),
        (dict(stream="yes"), "stream"),
        (dict(stream_options={"include_usage": 1}), "stream_options.include_usage"),
        (dict(frequency_penalty=0.5), "frequency_penalty"),
        (dict(stop=["\n"]), "stop"),
        (dict(response_format={"type": "json_object"}), "response_format"),
        (dict(audio={"voice": "alloy", "format": "mp3"}), "audio"),
        (dict(model=3), "model"),
        (dict(num_inference_steps={"image": 0}), "num_inference_steps.image"),
    ]
    for extra, field in cases:
        err = _chat_error({"messages": hi, **extra})
        assert err.status == 422 and err.fields[0].field == field, (extra, err.body())
        assert field in err.message
    assert _chat_error({"model": "tiny"}).fields[0].field == "messages"
    assert _chat_error(b'{"messages": ').type == "bad_json"
    # accepted, no effect
    parse_chat_request(
        json.dumps(
            dict(messages=hi, user="u", metadata={}, store=True, audio={"voice": "alloy", "format": "wav"})
            | dict(tool_choice="none", parallel_tool_calls=False, presence_penalty=0.0, n=1, top_logprobs=0)
        ).encode()
    )


def test_chat_messages_hold_their_media_and_stay_within_the_limits():
    from anygen.serve.chat import check_messages

    limits = ServeConfig().limits.model_copy(update={"max_media_bytes": 300, "max_media_items": 2})
    png = "data:image/png;base64," + base64.b64encode(b"x" * 200).decode()
    inputs = ["image", "audio"]

    def refused(messages, inputs=inputs):
        with pytest.raises(RequestError) as err:
            check_messages(messages, limits, inputs)
        return err.value.status, err.value.fields[0].field, err.value.message

    def user(*parts):
        return [{"role": "user", "content": list(parts)}]

    url = {"type": "image_url", "image_url": {"url": png}}
    assert check_messages(user(url, url), limits, inputs)[0]["content"] == [url, url]
    for source in ("http://10.0.0.1/a.png", "HTTPS://x/a.png"):
        status, field, message = refused(
            user({"type": "text", "text": "x"}, {"type": "image_url", "image_url": source})
        )
        assert (status, field) == (400, "messages[0].content[1]") and "fetches no URL" in message
    for source in ("/etc/passwd", "file:///etc/passwd", "~/x.png", "x.png"):
        status, field, message = refused(user({"type": "image", "image": source}))
        assert (status, field) == (400, "messages[0].content[0]") and "no paths" in message, source
    assert refused(user({"type": "image", "path": "a.png"}))[:2] == (400, "messages[0].content[0]")
    assert refused(user({"type": "image", "url": 3}))[:2] == (400, "messages[0].content[0]")
    big = "data:image/png;base64," + base64.b64encode(b"x" * 400).decode()
    assert refused(user({"type": "image_url", "image_url": {"url": big}}))[:2] == (
        413,
        "messages[0].content[0]",
    )
    wav = base64.b64encode(b"x" * 400).decode()
    assert refused(user({"type": "input_audio", "input_audio": {"data": wav}}))[:2] == (
        413,
        "messages[0].content[0]",
    )
    assert refused(user(url), inputs=["audio"])[:2] == (422, "messages[0].content[0]")
    assert refused([*user(url, url), {"role": "assistant", "content": "ok"}, *user(url)])[:2] == (
        422,
        "messages",
    )
    assert refused([{"role": "user", "content": "x" * 9000}])[:2] == (422, "messages")
    assert refused([])[:2] == (400, "messages")
    # An assistant's media are its own outputs: not read, not counted; its empty OpenAI keys are dropped.
    answer = {"role": "assistant", "content": [{"type": "text", "text": "a"}, url, url, url], "refusal": None}
    assert check_messages(
        [{"role": "developer", "content": "be brief"}, *user(url), answer, *user(url)], limits, inputs
    )[:3] == [
        {"role": "system", "content": "be brief"},
        *user(url),
        {k: v for k, v in answer.items() if k != "refusal"},
    ]


def test_the_answer_is_a_message_anygen_messages_reads_back():
    from anygen.messages import parse_messages
    from anygen.serve.chat import answer_content, completion
    from anygen.serve.codec import encode_media

    rng = np.random.default_rng(0)
    png = encode_media("image", Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)))
    assert answer_content("just text", {}) == "just text"
    content = answer_content("here", {"audio": [b"RIFF"], "image": [png]})
    assert [p["type"] for p in content] == ["text", "image_url", "audio_url"]
    assert content[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert content[2]["audio_url"]["url"].startswith("data:audio/wav;base64,")
    answer = {
        "text": "here",
        "seed": 1,
        "token_ids": [1, 2, 3],
        "prompt_tokens": 10,
        "finish_reason": "length",
    }
    body = completion("chatcmpl-x", 5, "tiny", answer, {"image": [png]}, {"llm": 1.0})
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert body["choices"][0]["finish_reason"] == "length" and body["anygen"]["seed"] == 1
    message = body["choices"][0]["message"]
    turn = [{"role": "user", "content": "draw"}, message, {"role": "user", "content": "again"}]
    parsed = parse_messages(turn, allow_remote=False, allow_files=False)
    assert [(t.role, t.text, t.media) for t in parsed.history] == [
        ("user", "draw", {}),
        ("assistant", "here", {}),
    ]
    # the same answer, sent back as a user's input, is an image anygen reads
    user = parse_messages(
        [{"role": "user", "content": message["content"][1:]}], allow_remote=False, allow_files=False
    )
    assert np.array_equal(np.asarray(user.images[0]), np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))


def test_streamed_text_pieces_add_up_to_the_final_text():
    from anygen.serve.chat import TextDeltas

    # What the pipeline reports after each token: stripped, cut at the stop string, half characters as U+FFFD.
    partials = [
        "",
        "Hel",
        "Hello",
        "Hello",
        "Hello w",
        "Hello wo\ufffd",
        "Hello wo\u00e9",
        "Hello wo\u00e9 #",
        "Hello wo\u00e9 ##",
    ]
    partials += ["Hello wo\u00e9", "Hello wo\u00e9"]
    deltas = TextDeltas(["###"])
    pieces = [deltas.push(p) for p in partials]
    assert "".join(pieces) + deltas.finish("Hello wo\u00e9") == "Hello wo\u00e9"
    assert (
        pieces[:4] == ["", "Hel", "lo", ""] and "\ufffd" not in "".join(pieces) and "#" not in "".join(pieces)
    )
    # A stop-string prefix that turns out to be text is sent once it is.
    deltas = TextDeltas(["###"])
    assert deltas.push("a #") == "a" and deltas.push("a #b") == " #b" and deltas.finish("a #b c") == " c"
    # A tokenizer that tidies spaces when decoding: the last word waits.
    deltas = TextDeltas([], hold_last_word=True)
    assert (
        deltas.push("do n") == "do"
        and deltas.push("don't go") == "n't"
        and deltas.finish("don't go") == " go"
    )
    deltas = TextDeltas([])
    assert deltas.push("a b c") == "a b c" and deltas.finish("a bc") == ""  # no prefix: nothing more (logged)


def test_chat_errors_in_openai_shape():
    from anygen.serve.schema import FieldError

    err = RequestError(404, "model_not_found", "no such model", [FieldError(field="model", message="x")])
    assert err.openai_body() == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
            "status": 404,
            "fields": [{"field": "model", "message": "x"}],
        }
    }
    assert RequestError(503, "overloaded", "busy").openai_body()["error"]["type"] == "server_error"
    assert RequestError(503, "overloaded", "busy").openai_body()["error"]["param"] is None


def test_the_llm_stream_stops_its_call_when_closed_and_reports_errors_first(monkeypatch):
    """``LLMServer.condition_stream``: closing the stream (the client went away) stops the call at its next
    token; an error before the first token is the stream's first item."""
    import asyncio
    import threading

    pytest.importorskip("ray.serve")
    from anygen.errors import Interrupted, OptionError
    from anygen.serve.deployments import LLMServer
    from anygen.spec import load_spec

    replica = LLMServer.func_or_class(load_spec("tiny"), "cpu", 1, None)
    stopped = threading.Event()

    def endless(prompt, *, on_text=None, interrupt=None, **kwargs):  # a token every 10 ms until interrupted
        text = ""
        while True:
            if interrupt():
                stopped.set()
                raise Interrupted("stopped")
            text += "a "
            if on_text is not None:
                on_text(text.strip())
            threading.Event().wait(0.01)

    monkeypatch.setattr(replica.pipe, "condition", endless)

    async def first_items(n):
        stream = replica.condition_stream("hi", {}, {}, 60)
        items = [await stream.__anext__() for _ in range(n)]
        await stream.aclose()
        return items

    items = asyncio.run(first_items(3))
    assert items == [{"delta": "a"}, {"delta": " a"}, {"delta": " a"}]
    assert stopped.wait(10) and replica.stats()["cancelled"] == 1

    def refuse(prompt, **kwargs):
        raise OptionError(("max_new_tokens", "too many"))

    monkeypatch.setattr(replica.pipe, "condition", refuse)
    (item,) = asyncio.run(first_items(1))
    assert item["error"]["status"] == 422 and item["error"]["fields"][0]["field"] == "max_new_tokens"
