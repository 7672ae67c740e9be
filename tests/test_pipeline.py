"""The whole pipeline on the tiny default: outputs, seeds, saving, inputs, laziness, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from anygen import AnyToAnyPipeline
from anygen.errors import AnyGenError, MediaError
from anygen.media import Audio, Video


def _same(a, b):
    assert a.text == b.text and a.token_ids == b.token_ids
    assert (
        len(a.images) == len(b.images) and len(a.videos) == len(b.videos) and len(a.audios) == len(b.audios)
    )
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(a.videos, b.videos, strict=True):
        np.testing.assert_array_equal(x.frames, y.frames)
    for x, y in zip(a.audios, b.audios, strict=True):
        np.testing.assert_array_equal(x.waveform, y.waveform)


def test_text_to_all_modalities(tiny_pipe, tmp_path):
    out = tiny_pipe("a dog barking on a beach", output_modalities=("image", "video", "audio"), seed=0)
    assert isinstance(out.text, str)
    assert len(out.images) >= 1 and isinstance(out.images[0], Image.Image)
    assert isinstance(out.videos[0], Video) and out.videos[0].frames.shape[0] >= 8
    assert isinstance(out.audios[0], Audio) and out.audios[0].waveform.size > 0
    paths = out.save(tmp_path)
    names = {p.name for p in paths}
    assert {"response.txt", "image_0.png", "video_0.mp4", "audio_0.wav"} <= names
    assert Image.open(tmp_path / "image_0.png").size == out.images[0].size
    assert Video.load(tmp_path / "video_0.mp4").num_frames == out.videos[0].num_frames


def test_same_seed_same_output_different_seed_differs(tiny_pipe):
    kw = dict(output_modalities=("image",), max_new_tokens=8)
    a = tiny_pipe("a red car", seed=3, **kw)
    b = tiny_pipe("a red car", seed=3, **kw)
    _same(a, b)
    c = tiny_pipe("a red car", seed=4, **kw)
    assert c.token_ids != a.token_ids or not np.array_equal(np.asarray(c.images[0]), np.asarray(a.images[0]))


def test_save_pretrained_then_from_pretrained_gives_identical_outputs(tiny_pipe, tmp_path, samples):
    kw = dict(
        images=[samples / "assets" / "bird_image.jpg"],
        output_modalities=("image", "video", "audio"),
        seed=11,
        max_new_tokens=6,
    )
    before = tiny_pipe("what is this bird saying?", **kw)
    tiny_pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "pipeline.yaml").is_file()
    assert not list((tmp_path / "saved").rglob("*.bin")), "weights must be saved as safetensors"
    reloaded = AnyToAnyPipeline.from_pretrained(tmp_path / "saved")
    reloaded.set_progress_bar_config(disable=True)
    _same(before, reloaded("what is this bird saying?", **kw))


def test_media_inputs_enter_the_llm(tiny_pipe, samples):
    bird = Image.open(samples / "assets" / "bird_image.jpg")
    other = Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8))
    audio = samples / "assets" / "bird_audio.wav"
    kw = dict(output_modalities=("image",), seed=5, max_new_tokens=6, temperature=0)
    a = tiny_pipe("describe this", images=[bird], audios=[audio], **kw)
    b = tiny_pipe("describe this", images=[other], audios=[audio], **kw)
    # The image enters the prompt, so the states at the signal tokens, and the generated image, change.
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    c = tiny_pipe("describe this", images=[bird], audios=[samples / "assets" / "test.wav"], **kw)
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(c.images[0]))


def test_video_input_and_placeholders(tiny_pipe, samples):
    out = tiny_pipe(
        "<video> what happens here, and in <image>?",
        videos=[samples / "assets" / "test.mp4"],
        images=[samples / "assets" / "bird_image.jpg"],
        seed=0,
        max_new_tokens=4,
    )
    assert isinstance(out.text, str)
    with pytest.raises(AnyGenError, match=r"2 <image> placeholder\(s\) but 1 image"):
        tiny_pipe("<image> and <image>", images=[samples / "assets" / "bird_image.jpg"], max_new_tokens=2)


def test_batch_equals_one_by_one(tiny_pipe):
    prompts = ["a cat on a sofa", "a loud trumpet in a long empty hall"]
    kw = dict(output_modalities=("image", "audio"), seed=2, max_new_tokens=6)
    batch = tiny_pipe(prompts, **kw)
    assert isinstance(batch, list) and len(batch) == 2
    for prompt, out in zip(prompts, batch, strict=True):
        alone = tiny_pipe(prompt, **kw)
        assert alone.token_ids == out.token_ids
        np.testing.assert_allclose(
            np.asarray(alone.images[0], dtype=float), np.asarray(out.images[0], dtype=float), atol=2
        )
        np.testing.assert_allclose(alone.audios[0].waveform, out.audios[0].waveform, atol=1e-4)


def test_text_to_image_builds_nothing_else():
    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.loaded_components == []
    out = pipe(
        "a dog", output_modalities=("image",), only_requested=True, seed=0, max_new_tokens=8, temperature=0
    )
    assert len(out.images) >= 1 and not out.videos and not out.audios
    loaded = set(pipe.loaded_components)
    assert "generator:image" in loaded
    assert not loaded & {"generator:video", "generator:audio", "encoder:imagebind"}


def test_chat_keeps_history_and_caches_features(samples, monkeypatch):
    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    chat = pipe.chat(seed=0, max_new_tokens=4)
    image = samples / "assets" / "bird_image.jpg"
    first = chat.send("what bird is this?", images=[image])
    encoder = pipe.encoder("imagebind")
    calls = []
    original = encoder.encode
    monkeypatch.setattr(
        encoder, "encode", lambda m, items: calls.append((m, len(items))) or original(m, items)
    )
    second = chat.send("and what does it eat?", output_modalities=("image",))
    assert calls == [], "the image of turn 1 must not be encoded again"
    assert [t.role for t in chat.turns] == ["user", "assistant", "user", "assistant"]
    assert chat.turns[1].text == first.text
    # History is in the prompt: without it the states at the signal tokens, so the image, differ.
    alone = pipe("and what does it eat?", seed=0, max_new_tokens=4, output_modalities=("image",))
    assert not np.array_equal(np.asarray(alone.images[0]), np.asarray(second.images[0]))


def test_generator_and_options_pass_through(tiny_pipe):
    g = torch.Generator().manual_seed(0)
    out = tiny_pipe(
        "a waterfall",
        generator=g,
        output_modalities=("video", "audio"),
        num_frames=9,
        audio_length_in_s=0.5,
        num_inference_steps=1,
        max_new_tokens=2,
    )
    assert out.videos[0].num_frames == 9
    assert abs(out.audios[0].duration - 0.5) < 0.1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(prompt="   "), AnyGenError, "empty, and no image"),
        (dict(prompt="x", output_modalities=("smell",)), AnyGenError, "'smell' is not an output"),
        (dict(prompt="x", images=["/no/such/cat.jpg"]), MediaError, "cat.jpg"),
        (dict(prompt="x", images=[b"not an image at all"]), MediaError, "images\\[0\\]"),
        (dict(prompt="x", top_p=0.0), AnyGenError, "top_p"),
        (dict(prompt=["a", "b"], images=["x.png"]), AnyGenError, "one list of images per prompt"),
    ],
)
def test_bad_inputs_get_clear_errors(tiny_pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_pipe(**kwargs)


def test_on_text_streams_the_answer(tiny_pipe):
    seen = []
    out = tiny_pipe("a bell", seed=1, max_new_tokens=6, on_text=seen.append)
    assert seen and seen[-1] == out.text
    assert len(seen) == len(out.token_ids)
