"""The demo's backend without a browser: upload checks, streaming, progress, the CLI parser."""

import argparse
import threading
import time

import numpy as np
import pytest
from PIL import Image

from anygen.demo.backend import (
    Cancelled,
    ProgressSink,
    UploadLimits,
    as_seed,
    call_options,
    control_defaults,
    error_message,
    install_text_stream_shim,
    kind_of,
    load_upload,
    load_uploads,
    media_kwargs,
    partial_text,
    save_media,
    stream_call,
    supports_on_text,
)
from anygen.errors import MediaError, OptionError
from anygen.media import Audio, Video
from anygen.output import AnyToAnyOutput


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_kind_of_known_and_unsupported_suffixes():
    assert kind_of("a/b/Photo.JPG") == "image"
    assert kind_of("x.wav") == "audio" and kind_of("x.mp3") == "audio"
    assert kind_of("x.mp4") == "video" and kind_of("x.webm") == "video"
    with pytest.raises(MediaError, match=r"notes\.txt: unsupported file type \(a \.txt file\)"):
        kind_of("/tmp/notes.txt")
    with pytest.raises(MediaError, match="without an extension"):
        kind_of("/tmp/README")


def test_load_upload_decodes_image_audio_video(png, tmp_path):
    up = load_upload(png)
    assert up.kind == "image" and up.name == "cat.png" and up.item.size == (32, 32)
    wav = tmp_path / "tone.wav"
    Audio(np.sin(np.linspace(0, 100, 1600)).astype(np.float32) * 0.5, 16000).save(wav)
    mp4 = tmp_path / "clip.mp4"
    Video(np.zeros((4, 16, 16, 3), np.uint8), 4.0).save(mp4)
    ups = load_uploads([png, wav, mp4])
    kwargs = media_kwargs(ups)
    assert [len(kwargs[k]) for k in ("images", "audios", "videos")] == [1, 1, 1]
    assert isinstance(kwargs["audios"][0], Audio) and isinstance(kwargs["videos"][0], Video)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("broken.png", b"this is not a png", r"broken\.png could not be read as an image file"),
        ("broken.wav", b"RIFF....WAVEjunk" * 8, r"broken\.wav could not be read as an audio file"),
        ("broken.mp4", b"\x00" * 64, r"broken\.mp4 could not be read as a video file"),
        ("empty.jpg", b"", r"empty\.jpg is empty"),
        ("notes.txt", b"hello", r"unsupported file type"),
    ],
)
def test_bad_uploads_get_readable_messages(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(MediaError, match=message) as info:
        load_upload(path)
    assert " object at 0x" not in str(info.value) and "<bytes>" not in str(info.value)


def test_upload_size_limit_and_accepted_kinds(png):
    with pytest.raises(
        MediaError, match=r"cat\.png is too large \(0\.0 MB\); image uploads are limited to 0\.0001 MB"
    ):
        load_upload(png, UploadLimits(image_mb=0.0001))
    with pytest.raises(MediaError, match="does not take image inputs"):
        load_upload(png, accepted=("audio",))
    # An explicit kind (the API's `image` parameter) wins over the name.
    with pytest.raises(MediaError, match="could not be read as an audio file"):
        load_upload(png, kind="audio")


def test_options_and_seed():
    assert as_seed(-1) is None and as_seed(None) is None and as_seed("") is None and as_seed(7.0) == 7
    opts = call_options(output_modalities=["image"], seed=3, num_inference_steps={"image": 2.0})
    assert opts.output_modalities == ("image",) and opts.num_inference_steps == {"image": 2}
    assert opts.guidance_scale is None and opts.seed == 3
    # A bad control value is refused with a message naming it (what the chat and the API show).
    for bad, field in [
        (dict(num_inference_steps=2.5), "num_inference_steps"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(audio_length_in_s=-1.0), "audio_length_in_s"),
        (dict(guidance_scale={"image": float("nan")}), "guidance_scale.image"),
    ]:
        with pytest.raises(OptionError) as err:
            call_options(**bad)
        assert err.value.fields == [field] and error_message(err.value).startswith(f"Bad setting: {field}:")
    with pytest.raises(OptionError, match="seed"):
        as_seed(1.5)


def test_control_defaults_follow_the_spec(tiny_pipe):
    d = control_defaults(tiny_pipe)
    assert d["max_new_tokens"] == 24 and d["top_p"] == 0.9
    assert d["image_steps"] == 2 and d["audio_guidance"] == 2.5 and d["num_frames"] == 8
    assert d["audio_length_in_s"] == 1.0


@pytest.mark.parametrize("name", ["mini", "tiny"])
def test_every_control_accepts_its_own_default(name):
    """Gradio refuses a slider value outside its range on every message: mini's greedy temperature (0) once was."""
    import gradio as gr

    from anygen import AnyToAnyPipeline
    from anygen.demo.app import build_demo

    demo = build_demo(AnyToAnyPipeline.from_pretrained(name))
    sliders = [c for c in demo.blocks.values() if isinstance(c, gr.Slider)]
    assert len(sliders) >= 6
    for slider in sliders:
        slider.preprocess(slider.value)  # raises gradio.Error when out of bounds
    demo.close()


def test_partial_text_cuts_at_stop_strings():
    assert partial_text(" hello ### Human", ["###"]) == "hello"
    assert partial_text("no stop ", ["###"]) == "no stop"


def test_stream_call_with_on_text_and_progress():
    def call(prompt, on_text):
        for i in range(1, 4):
            on_text(prompt[:i])
            time.sleep(0.01)
        sink = ProgressSink()
        sink.write("\rimage: \x1f30\x1f34")
        sink.write("\rimage: \x1f32\x1f34")
        return AnyToAnyOutput(text=prompt)

    events = list(stream_call(call, pass_on_text=True, interval=0.0, prompt="abc"))
    texts = [e.text for e in events if e.kind == "text"]
    assert texts[-1] == "abc"
    progress = [(e.stage, e.step, e.total) for e in events if e.kind == "progress"]
    assert progress[-1] == ("image", 2, 4)  # counted from the stage's start
    assert events[-1].kind == "done" and events[-1].output.text == "abc"


def test_stream_call_reports_errors():
    def call():
        raise MediaError("bad input")

    events = list(stream_call(call, pass_on_text=False))
    assert [e.kind for e in events] == ["error"] and isinstance(events[0].error, MediaError)


def test_stream_call_cancels_the_call_when_the_consumer_leaves():
    finished = threading.Event()
    seen: list[BaseException] = []

    def call(on_text):
        try:
            for i in range(1000):
                on_text(str(i))
                time.sleep(0.005)
        except Cancelled as err:
            seen.append(err)
            raise
        finally:
            finished.set()

    stream = stream_call(call, pass_on_text=True, interval=0.0)
    assert next(stream).kind == "text"
    stream.close()  # waits for the worker: the call stopped at its next token
    assert finished.is_set() and seen


def test_streaming_the_tiny_pipeline(tiny_pipe, monkeypatch):
    """The shim (until the pipeline takes on_text) streams the text; the bar gives per-stage progress."""
    import anygen.pipeline
    from anygen import AnyToAnyPipeline

    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe._components = dict(tiny_pipe._components)  # reuse models built so far; the fixture's bar stays off
    pipe.set_progress_bar_config(**ProgressSink.bar_config())
    on_text = supports_on_text(pipe)
    if not on_text:
        monkeypatch.setattr(anygen.pipeline, "generate", anygen.pipeline.generate)  # undone after the test
        install_text_stream_shim()
        install_text_stream_shim()  # idempotent
        assert anygen.pipeline.generate._anygen_demo_shim
    events = list(
        stream_call(
            pipe,
            pass_on_text=on_text,
            interval=0.0,
            prompt="a red car",
            output_modalities=["image"],
            seed=0,
            max_new_tokens=6,
            num_inference_steps=3,
        )
    )
    done = events[-1]
    assert done.kind == "done", done.error
    texts = [e.text for e in events if e.kind == "text"]
    assert texts and texts[-1] == done.output.text
    image_steps = [(e.step, e.total) for e in events if e.kind == "progress" and e.stage == "image"]
    assert image_steps[-1] == (3, 3)
    # Without a run on the thread, the shim and the sink change nothing.
    again = pipe("a red car", output_modalities=["image"], seed=0, max_new_tokens=6, num_inference_steps=3)
    assert again.text == done.output.text


def test_save_media(tmp_path):
    out = AnyToAnyOutput(
        text="hi",
        images=[Image.new("RGB", (8, 8))],
        videos=[Video(np.zeros((2, 8, 8, 3), np.uint8), 2.0)],
        audios=[Audio(np.zeros(800, np.float32), 16000)],
    )
    saved = save_media(out, tmp_path / "o")
    assert [p.name for m in ("image", "video", "audio") for p in saved[m]] == [
        "image_0.png",
        "video_0.mp4",
        "audio_0.wav",
    ]
    assert all(p.is_file() for ps in saved.values() for p in ps)


def test_cli_parser_defaults_are_safe():
    from anygen.demo_cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo"])
    # pipeline None: $ANYGEN_PIPELINE or mini
    assert (args.pipeline, args.host, args.port, args.share) == (None, "127.0.0.1", 7860, False)
    assert args.concurrency == 1 and callable(args.handler)
    args = parser.parse_args(
        ["demo", "--pipeline", "x.yaml", "--host", "0.0.0.0", "--port", "9000", "--share"]
    )
    assert (args.pipeline, args.host, args.port, args.share) == ("x.yaml", "0.0.0.0", 9000, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--concurrency", "0"])


def test_demo_limits_default_to_the_service_limits_and_refuse_naming_the_field(tmp_path):
    from anygen.demo_cli import register
    from anygen.options import Limits

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo"])
    service = Limits.service()
    assert (args.max_steps, args.max_new_tokens, args.max_prompt_chars, args.time_limit) == (
        service.max_inference_steps,
        service.max_new_tokens,
        service.max_prompt_chars,
        service.max_seconds,
    )
    gr = pytest.importorskip("gradio")
    from anygen import AnyToAnyPipeline
    from anygen.demo.app import DemoApp

    app = DemoApp(AnyToAnyPipeline.from_pretrained("tiny"), limits=UploadLimits(), output_dir=tmp_path)
    for kwargs, field in [
        (dict(num_inference_steps=100_000), "num_inference_steps"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(num_frames=2.5), "num_frames"),
        (dict(seed=1.5), "seed"),
    ]:
        with pytest.raises(gr.Error, match=field):
            app.generate("a dog", **kwargs)
    with pytest.raises(gr.Error, match="max_prompt_chars"):
        app.generate("x" * 100_000)
    assert app.pipe.loaded_components == []  # refused before any model was built


def test_mini_offers_its_world_prompts_as_examples():
    """The demo shows the spec's example prompts (mini's: its world, one held-out combination among them)."""
    import gradio as gr

    from anygen import AnyToAnyPipeline
    from anygen.demo.app import build_demo
    from anygen.world.language import EXAMPLE_PROMPTS

    pipe = AnyToAnyPipeline.from_pretrained("mini")
    assert tuple(pipe.spec.examples) == EXAMPLE_PROMPTS
    demo = build_demo(pipe)
    datasets = [c for c in demo.blocks.values() if isinstance(c, gr.Dataset)]
    assert len(datasets) == 1
    assert [row[0]["text"] for row in datasets[0].samples] == list(EXAMPLE_PROMPTS)
    demo.close()
    tiny = build_demo(AnyToAnyPipeline.from_pretrained("tiny"))  # no examples in its spec: none shown
    assert not [c for c in tiny.blocks.values() if isinstance(c, gr.Dataset)]
    tiny.close()
