import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from anygen.encoders.base import Encoder
from anygen.encoders.tiny import TinyImageBindConfig, TinyImageBindEncoder
from anygen.errors import AnyGenError, MediaError, WeightsError
from anygen.media import Audio, Video, load_image

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nextgpt-samples" / "assets"
CONFIG = TinyImageBindConfig(output_dim=24, audio_max_frames=50, num_video_frames=3)


@pytest.fixture(scope="module")
def encoder():
    return TinyImageBindEncoder.from_config(CONFIG, seed=0)


def images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)),
        Image.new("RGB", (32, 32), (255, 0, 0)),
        Image.new("RGB", (5, 90), (0, 0, 255)),
    ]


def sine(freq, rate=16000, seconds=1.0):
    return Audio(
        (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32), rate
    )


def check_vectors(vectors, n, dim=CONFIG.output_dim):
    assert vectors.shape == (n, dim)
    assert vectors.dtype == torch.float32
    assert not vectors.requires_grad
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(n), atol=1e-5, rtol=0)


def test_implements_encoder_protocol(encoder):
    assert isinstance(encoder, Encoder)
    assert encoder.modalities == ("image", "video", "audio")
    assert encoder.output_dim == 24
    assert encoder.vision.config.projection_dim == 24


def test_image_shapes_norm_and_distinct(encoder):
    vectors = encoder.encode("image", images())
    check_vectors(vectors, 3)
    sims = vectors @ vectors.T
    assert (sims - torch.eye(3)).abs().max() < 0.999  # different images -> different vectors
    # batching does not change the result
    torch.testing.assert_close(encoder.encode("image", images()[1:2])[0], vectors[1], atol=1e-5, rtol=0)


def test_image_preprocessing_matches_clip_recipe(encoder):
    pixels = encoder.preprocess_images([Image.new("RGB", (50, 20), (255, 255, 255))])
    assert pixels.shape == (1, 3, 32, 32)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(pixels[0, :, 5, 5], (1 - mean) / std, atol=1e-5, rtol=0)


def test_image_accepts_arrays_and_paths(encoder):
    array = np.asarray(images()[0])
    from_array = encoder.encode("image", [array, ASSETS / "bird_image.jpg"])
    check_vectors(from_array, 2)
    torch.testing.assert_close(from_array[0], encoder.encode("image", [images()[0]])[0], atol=1e-6, rtol=0)


def test_video_is_average_of_sampled_frames(encoder):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (7, 24, 24, 3), dtype=np.uint8)
    video = Video(frames, fps=4)
    vectors = encoder.encode("video", [video, Video(frames[::-1].copy(), fps=4)])
    check_vectors(vectors, 2)
    frame_vectors = encoder.encode("image", [Image.fromarray(f) for f in video.sample_frames(3)])
    expected = torch.nn.functional.normalize(frame_vectors.mean(0), dim=0)
    torch.testing.assert_close(vectors[0], expected, atol=1e-5, rtol=0)
    still = Video(np.repeat(frames[:1], 5, axis=0), fps=4)
    torch.testing.assert_close(
        encoder.encode("video", [still])[0],
        encoder.encode("image", [Image.fromarray(frames[0])])[0],
        atol=1e-5,
        rtol=0,
    )


def test_sample_video_and_audio(encoder):
    check_vectors(encoder.encode("video", [Video.load(ASSETS / "test.mp4")]), 1)
    audios = [Audio.load(ASSETS / "bird_audio.wav"), Audio.load(ASSETS / "test.wav")]
    vectors = encoder.encode("audio", audios)
    check_vectors(vectors, 2)
    assert float(vectors[0] @ vectors[1]) < 0.999


def test_audio_resampled_to_16k_and_clipped(encoder):
    config = encoder.config
    assert config.audio_clip_samples == (50 - 1) * 160 + 400
    clips = encoder.audio_clips(sine(440, rate=8000, seconds=3.0))
    assert len(clips) == config.audio_clips
    assert all(len(c) == config.audio_clip_samples for c in clips)
    features = encoder.preprocess_audio(clips)
    assert features.shape == (3, 50, 32)
    # the same tone at another sample rate lands close to the 16 kHz version
    a, b, c = encoder.encode("audio", [sine(440), sine(440, rate=44100), sine(3000)])
    assert float(a @ b) > 0.99
    assert float(a @ c) < float(a @ b)


def test_audio_shorter_than_one_window(encoder):
    check_vectors(encoder.encode("audio", [Audio(np.full(10, 0.1, np.float32), 8000)]), 1)


def test_same_seed_same_weights_and_rng_untouched():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = TinyImageBindEncoder.from_config(CONFIG, seed=7)
    torch.testing.assert_close(torch.rand(3), expected_next)  # caller's RNG stream unaffected
    b = TinyImageBindEncoder.from_config(CONFIG, seed=7)
    c = TinyImageBindEncoder.from_config(CONFIG, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    torch.testing.assert_close(a.encode("image", images()), b.encode("image", images()), atol=0, rtol=0)


def test_save_load_round_trip(encoder, tmp_path):
    out = encoder.save_pretrained(tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "tiny-imagebind" and config["output_dim"] == 24
    assert set(load_file(str(out / "model.safetensors"))) == set(encoder.state_dict())
    loaded = TinyImageBindEncoder.from_pretrained(out)
    assert loaded.config == encoder.config
    clip = [sine(330)]
    video = [Video(np.random.default_rng(2).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8), fps=2)]
    for modality, items in [("image", images()), ("audio", clip), ("video", video)]:
        torch.testing.assert_close(
            loaded.encode(modality, items), encoder.encode(modality, items), atol=0, rtol=0
        )


def test_from_pretrained_reports_missing_and_unexpected_keys(encoder, tmp_path):
    out = encoder.save_pretrained(tmp_path / "ckpt")
    state = load_file(str(out / "model.safetensors"))
    del state["audio_projection.weight"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(
        WeightsError, match=r"missing keys: audio_projection.weight.*unexpected keys: extra.weight"
    ):
        TinyImageBindEncoder.from_pretrained(out)


def test_from_pretrained_reports_shape_mismatch_and_missing_files(encoder, tmp_path):
    out = encoder.save_pretrained(tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "output_dim": 16}))
    with pytest.raises(WeightsError, match=r"wrong shapes.*audio_projection.weight"):
        TinyImageBindEncoder.from_pretrained(out)
    (out / "config.json").write_text(json.dumps({**config, "bogus": 1}))
    with pytest.raises(WeightsError, match=r"not a valid tiny ImageBind config.*bogus"):
        TinyImageBindEncoder.from_pretrained(out)
    (out / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"has no model.safetensors"):
        TinyImageBindEncoder.from_pretrained(out)
    with pytest.raises(WeightsError, match=r"has no config.json"):
        TinyImageBindEncoder.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"output_dim": 0}, r"output_dim must be a positive integer"),
        ({"hidden_size": 30, "num_heads": 4}, r"hidden_size \(30\) must be divisible by num_heads \(4\)"),
        ({"image_size": 30}, r"image_size \(30\) must be a multiple of patch_size"),
        ({"num_mel_bins": 8}, r"num_mel_bins \(8\) must be at least audio_patch_size"),
        ({"num_video_frames": 2.5}, r"num_video_frames must be a positive integer"),
    ],
)
def test_config_validation(changes, match):
    with pytest.raises(AnyGenError, match=match):
        TinyImageBindConfig(**changes)


def test_encode_errors(encoder):
    with pytest.raises(AnyGenError, match=r"cannot encode modality 'text'; expected one of"):
        encoder.encode("text", ["hello"])
    with pytest.raises(MediaError, match=r"encode\('audio'\) got an empty list"):
        encoder.encode("audio", [])
    with pytest.raises(MediaError, match=r"encode\('image'\) expects a list"):
        encoder.encode("image", images()[0])
    with pytest.raises(MediaError, match=r"items\[1\] is a ndarray; expected anygen.media.Audio"):
        encoder.encode("audio", [sine(100), np.zeros(100, np.float32)])
    with pytest.raises(MediaError, match=r"items\[0\] is a Image; expected anygen.media.Video"):
        encoder.encode("video", [images()[0]])
    with pytest.raises(MediaError, match=r"<array> \(items\[0\]\) has shape"):
        encoder.encode("image", [np.zeros((4, 4, 2), np.uint8)])


def test_identical_images_in_a_batch_give_identical_vectors(encoder):
    image = load_image(ASSETS / "bird_image.jpg")
    vectors = encoder.encode("image", [image] * 8)
    check_vectors(vectors, 8)
    torch.testing.assert_close(vectors[0], vectors[7], atol=1e-6, rtol=0)
