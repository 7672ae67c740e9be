"""The HTTP service on Ray Serve, end to end: the tiny pipeline on a local Ray instance (CPU, loopback).

One service is started for the module (about a minute on a busy 2-core machine) and shut down at the end.
"""

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

# Read by Ray when it is imported: keep a local instance on loopback, and send no usage statistics.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.serve")

from bombs import png_declaring  # noqa: E402
from serve_helpers import local_service  # noqa: E402

from anygen.media import Audio, Video  # noqa: E402

APP = "anygen-test"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


@pytest.fixture(scope="module")
def service():
    with local_service(APP) as url:
        yield url


def _request(url: str, body: bytes | dict | None = None, method: str | None = None, timeout: float = 120):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _generate(service, **body):
    return _request(f"{service}/v1/generate", body)


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _replica_stats(name: str) -> dict:
    from ray import serve

    return serve.get_deployment_handle(name, app_name=APP).stats.remote().result(timeout_s=60)


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_health_and_pipelines(service):
    assert _request(f"{service}/healthz") == (200, {"status": "ok", "pipeline": "tiny"})
    status, body = _request(f"{service}/healthz?deep=1")
    assert status == 200 and set(body["deployments"].values()) == {"ok"}
    status, body = _request(f"{service}/v1/pipelines")
    assert status == 200
    (info,) = body["pipelines"]
    assert info["name"] == "tiny" and info["outputs"] == ["image", "video", "audio"]
    assert info["limits"]["max_media_bytes"] == 1_000_000


def test_concurrent_requests_for_each_modality(service, samples):
    kw = dict(seed=1, max_new_tokens=8)
    bird = _b64(samples / "assets" / "bird_image.jpg")
    wav = _b64(samples / "assets" / "bird_audio.wav")
    mp4 = _b64(samples / "assets" / "test.mp4")
    bodies = [
        dict(prompt="a dog on a beach", output_modalities=["image"], **kw),
        dict(prompt="waves at night", output_modalities=["video"], **kw),
        dict(prompt="a dog barking", output_modalities=["audio"], **kw),
        dict(prompt="all of it", output_modalities=["image", "video", "audio"], **kw),
        dict(
            prompt="what is this bird saying?", images=[bird], audios=[wav], output_modalities=["audio"], **kw
        ),
        dict(prompt="draw it again", images=[bird], output_modalities=["image"], num_inference_steps=3, **kw),
        dict(prompt="<video> what happens?", videos=[mp4], output_modalities=["video"], num_frames=4, **kw),
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(lambda b: _generate(service, **b), bodies))
    for body, (status, out) in zip(bodies, results, strict=True):
        assert status == 200, out
        assert isinstance(out["text"], str) and out["seed"] == 1
        for modality in body["output_modalities"]:
            assert out[f"{modality}s"], f"{body['prompt']!r}: no {modality}"
        for image in out["images"]:
            assert _png(image).shape[-1] == 3
        for video in out["videos"]:
            assert Video.load(base64.b64decode(video)).num_frames >= 1
        for audio in out["audios"]:
            assert Audio.load(base64.b64decode(audio)).num_samples > 0
        assert out["timings_ms"]["llm"] > 0


def test_text_to_image_calls_no_video_or_audio_deployment(service):
    before = {name: _replica_stats(name)["calls"] for name in ("video_generator", "audio_generator")}
    ingress_before = _request(f"{service}/v1/stats")[1]["calls"]
    status, out = _generate(
        service, prompt="a red car", output_modalities=["image"], seed=2, max_new_tokens=8
    )
    assert status == 200 and len(out["images"]) == 1 and not out["videos"] and not out["audios"]
    assert set(out["timings_ms"]) == {"llm", "image", "encode", "total"}
    after = {name: _replica_stats(name)["calls"] for name in ("video_generator", "audio_generator")}
    assert after == before
    ingress_after = _request(f"{service}/v1/stats")[1]["calls"]
    assert ingress_after["llm"] == ingress_before["llm"] + 1
    assert ingress_after["image"] == ingress_before["image"] + 1
    assert ingress_after.get("video", 0) == ingress_before.get("video", 0)
    assert ingress_after.get("audio", 0) == ingress_before.get("audio", 0)


def test_same_seed_same_output_as_the_pipeline_call(service, tiny_pipe):
    kw = dict(output_modalities=["image"], seed=7, max_new_tokens=8)
    status, out = _generate(service, prompt="a lighthouse in fog", **kw)
    assert status == 200
    local = tiny_pipe("a lighthouse in fog", **kw)
    assert out["text"] == local.text
    assert len(out["images"]) == len(local.images) == 1
    np.testing.assert_array_equal(_png(out["images"][0]), np.asarray(local.images[0]))
    # and the same again from the service
    np.testing.assert_array_equal(
        _png(_generate(service, prompt="a lighthouse in fog", **kw)[1]["images"][0]), _png(out["images"][0])
    )


def test_bad_requests_get_4xx_and_the_service_keeps_serving(service, samples):
    url = f"{service}/v1/generate"
    big = base64.b64encode(os.urandom(1_200_000)).decode()
    text_file = base64.b64encode(b"not an image at all").decode()
    bomb = base64.b64encode(png_declaring(14000, 14000)).decode()  # 400 bytes, 196 M pixels once decoded
    cases = [
        (b'{"prompt": "a dog", ', 400, "bad_json", None),
        (b"[1, 2]", 422, "invalid_request", "<body>"),
        ({"prompt": "a dog", "steps": 3}, 422, "invalid_request", "steps"),
        ({"prompt": "a dog", "seed": "3"}, 422, "invalid_request", "seed"),
        ({"images": []}, 422, "invalid_request", "prompt"),
        ({"prompt": "a dog", "output_modalities": ["smell"]}, 422, "invalid_request", "output_modalities[0]"),
        ({"prompt": "a dog", "max_new_tokens": 100_000}, 422, "invalid_request", "max_new_tokens"),
        ({"prompt": "a dog", "height": 30}, 422, "invalid_request", "height"),
        ({"prompt": "a dog", "images": ["%%% not base64 %%%"]}, 400, "bad_base64", "images[0]"),
        ({"prompt": "a dog", "audios": [big]}, 413, "media_too_large", "audios[0]"),
        ({"prompt": "a dog", "images": [text_file]}, 400, "bad_media", None),
        ({"prompt": "   "}, 422, "invalid_request", "prompt"),
        (b'{"prompt": "a dog", "temperature": Infinity}', 422, "invalid_request", "temperature"),
        ({"prompt": "a dog", "audio_length_in_s": 0.001}, 422, "invalid_request", "audio_length_in_s"),
        ({"prompt": "a dog", "guidance_scale": {"image": 1, "bogus": 2}}, 422, "invalid_request", None),
        ({"prompt": "a dog", "height": 2048, "width": 2048}, 422, "invalid_request", "height"),
        ({"prompt": "a dog", "num_inference_steps": 0}, 422, "invalid_request", "num_inference_steps"),
        ({"prompt": "a dog", "images": [bomb]}, 400, "bad_media", "images[0]"),
        (b'{"prompt": "' + b"x" * 3_100_000 + b'"}', 413, "body_too_large", None),
    ]
    for body, want_status, want_type, want_field in cases:
        status, out = _request(url, body)
        assert status == want_status, (body if isinstance(body, dict) else body[:40], out)
        error = out["error"]
        assert error["type"] == want_type and error["status"] == want_status and error["message"]
        if want_field is not None:
            assert want_field in [f["field"] for f in error["fields"]], error
        if want_status == 422:
            assert error["fields"], error  # a 422 always names the field
        assert "object at 0x" not in error["message"], error
    assert _request(url, method="GET")[0] == 405
    assert _request(f"{service}/v2/nothing")[0] == 404
    # Still serving.
    assert _request(f"{service}/healthz")[0] == 200
    status, out = _generate(
        service, prompt="still there?", output_modalities=["image"], seed=3, max_new_tokens=4
    )
    assert status == 200 and out["images"]


def test_failing_generator_replica_fails_only_its_request(service):
    from ray import serve

    image = serve.get_deployment_handle("image_generator", app_name=APP)
    image.fail_next.remote(1).result(timeout_s=60)
    kw = dict(seed=4, max_new_tokens=8)
    status, out = _generate(service, prompt="a cat", output_modalities=["image"], **kw)
    assert status == 500, out
    assert out["error"]["type"] == "generation_failed" and "image generator" in out["error"]["message"]
    assert "injected failure" in out["error"]["message"]
    # The next requests, for that generator too, are served.
    assert _generate(service, prompt="a cat", output_modalities=["image"], **kw)[0] == 200
    assert _generate(service, prompt="a purr", output_modalities=["audio"], **kw)[0] == 200
    assert _request(f"{service}/v1/stats")[1]["responses"]["500"] >= 1


def test_a_crashed_generator_replica_is_replaced(service):
    from ray import serve

    audio = serve.get_deployment_handle("audio_generator", app_name=APP)
    audio.fail_next.remote(1, crash=True).result(timeout_s=60)
    kw = dict(seed=5, max_new_tokens=8)
    status, out = _generate(service, prompt="a purr", output_modalities=["audio"], **kw)
    assert status == 503 and out["error"]["type"] == "unavailable", out
    # Other kinds are not held up while Ray Serve replaces the replica...
    assert _generate(service, prompt="a cat", output_modalities=["image"], **kw)[0] == 200
    # ...and audio comes back once it has.
    deadline = time.monotonic() + 180
    while True:
        status, out = _generate(service, prompt="a purr", output_modalities=["audio"], **kw)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status == 200 and out["audios"], out


def test_a_request_whose_client_disconnects_is_cancelled(service):
    """The client gives up on a long request: its generator stops at its next step, and the next request
    does not wait behind it."""
    cancelled_before = _replica_stats("image_generator")["cancelled"]
    long = dict(
        prompt="a very detailed city",
        output_modalities=["image"],
        only_requested=True,
        seed=0,
        max_new_tokens=2,
        height=1024,
        width=1024,
        num_inference_steps=100,
    )  # within the limits, minutes of work on this machine
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        _request(f"{service}/v1/generate", long, timeout=8)
    deadline = time.monotonic() + 60
    while _replica_stats("image_generator")["cancelled"] == cancelled_before:
        assert time.monotonic() < deadline, "the image generator never saw the request cancelled"
        time.sleep(0.5)
    started = time.monotonic()
    status, out = _generate(service, prompt="a cat", output_modalities=["image"], seed=1, max_new_tokens=4)
    assert status == 200 and out["images"]
    assert time.monotonic() - started < 60
    status, body = _request(f"{service}/healthz?deep=1")
    assert status == 200 and set(body["deployments"].values()) == {"ok"}, body
