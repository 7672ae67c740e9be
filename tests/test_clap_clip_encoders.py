import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from anygen.encoders.base import Encoder
from anygen.encoders.clap import ClapEncoder, TinyClapConfig
from anygen.encoders.clip import ClipImageEncoder, TinyClipConfig
from anygen.errors import AnyGenError, MediaError, WeightsError
from anygen.media import Audio, Video

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nextgpt-samples" / "assets"
BIRD_AUDIO, BIRD_IMAGE = ASSETS / "bird_audio.wav", ASSETS / "bird_image.jpg"
CLAP_CONFIG = {"projection_dim": 24}
CLIP_CONFIG = {"output_dim": 20, "num_video_frames": 3}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The models are tiny: extra threads only add synchronisation cost (large on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clap():
    return ClapEncoder.from_config(CLAP_CONFIG, seed=0)


@pytest.fixture(scope="module")
def clip():
    return ClipImageEncoder.from_config(CLIP_CONFIG, seed=0)


@pytest.fixture(scope="module")
def clap_dir(clap, tmp_path_factory):
    return clap.save_pretrained(tmp_path_factory.mktemp("clap"))


@pytest.fixture(scope="module")
def clip_dir(clip, tmp_path_factory):
    return clip.save_pretrained(tmp_path_factory.mktemp("clip"))


def sine(freq, rate=16000, seconds=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return Audio((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def sounds():
    noise = np.random.default_rng(0).normal(0, 0.3, 12000).astype(np.float32)
    return [sine(440), Audio(noise, 22050), Audio.load(BIRD_AUDIO)]


def images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)),
        Image.new("RGB", (32, 32), (255, 0, 0)),
        BIRD_IMAGE,
    ]


def check_vectors(vectors, n, dim):
    assert vectors.shape == (n, dim)
    assert vectors.dtype == torch.float32
    assert not vectors.requires_grad
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(n), atol=1e-5, rtol=0)


def all_distinct(vectors, tol=1e-4):
    n = len(vectors)
    return all((vectors[i] - vectors[j]).abs().max() > tol for i in range(n) for j in range(i + 1, n))


def copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


# ---------------------------------------------------------------------- CLAP


def test_clap_implements_encoder_protocol(clap):
    assert isinstance(clap, Encoder)
    assert clap.modalities == ("audio",)
    assert clap.output_dim == 24 == clap.model.config.projection_dim
    assert clap.sampling_rate == 16000 and clap.window_samples == 16000
    assert "laion_clap" not in sys.modules


def test_clap_audio_shapes_norm_distinct_and_batch_invariant(clap):
    vectors = clap.encode("audio", sounds())
    check_vectors(vectors, 3, 24)
    assert all_distinct(vectors)
    single = clap.encode("audio", sounds()[1:2])
    torch.testing.assert_close(single[0], vectors[1], atol=1e-5, rtol=0)


def test_clap_real_sample_audio(clap):
    bird = Audio.load(BIRD_AUDIO)  # 5 s, 44.1 kHz stereo -> mono
    assert bird.sample_rate == 44100 and bird.duration == pytest.approx(5.0)
    windows = clap.audio_windows(bird)  # longer than the 1 s window: 3 evenly spaced windows at 16 kHz
    assert [len(w) for w in windows] == [16000] * 3
    np.testing.assert_array_equal(windows[-1], bird.resample(16000).waveform[-16000:])
    from_path = clap.encode("audio", [BIRD_AUDIO])
    check_vectors(from_path, 1, 24)
    torch.testing.assert_close(from_path, clap.encode("audio", [bird]), atol=0, rtol=0)
    # the average of the per-window unit vectors, renormalised
    manual = F.normalize(clap.embed_clips(windows).mean(dim=0), dim=-1)
    torch.testing.assert_close(from_path[0], manual, atol=1e-5, rtol=0)


def test_clap_resamples_to_the_feature_extractor_rate(clap):
    a16, a48 = sine(440, 16000), sine(440, 48000)
    v16, v48 = clap.encode("audio", [a16, a48])
    assert float(v16 @ v48) > 0.999
    assert clap.preprocess_audio([a16.waveform])[0].shape == (1, 1, 63, 16)  # [N, channels, frames, mel]


def test_clap_text_shares_the_audio_space(clap):
    texts = ["a bird sings", "a dog barks loudly in the park", "ünïcödé ♪ and emoji 🐦"]
    vectors = clap.encode_text(texts)
    check_vectors(vectors, 3, clap.output_dim)
    assert all_distinct(vectors)
    # padding in a batch does not change a text's vector
    torch.testing.assert_close(clap.encode_text(texts[:1])[0], vectors[0], atol=1e-5, rtol=0)
    # over-long text is truncated to the position table
    assert clap.max_text_length == 64
    check_vectors(clap.encode_text(["tweet " * 200]), 1, 24)
    audio = clap.encode("audio", [sine(440)])
    assert audio.shape[-1] == vectors.shape[-1]
    assert torch.isfinite(vectors @ audio.T).all()


def test_clap_text_errors(clap):
    with pytest.raises(AnyGenError, match="empty"):
        clap.encode_text([])
    with pytest.raises(AnyGenError, match="list of strings"):
        clap.encode_text("a bird")
    with pytest.raises(AnyGenError, match=r"texts\[1\]"):
        clap.encode_text(["ok", 3])


def test_clap_bad_requests(clap):
    with pytest.raises(AnyGenError, match="cannot encode modality 'image'"):
        clap.encode("image", [Image.new("RGB", (8, 8))])
    with pytest.raises(AnyGenError, match="encode_text"):
        clap.encode("text", ["a bird"])
    with pytest.raises(MediaError, match="empty list"):
        clap.encode("audio", [])
    with pytest.raises(MediaError, match="list of audio"):
        clap.encode("audio", sine(440))
    with pytest.raises(MediaError, match="bare array"):
        clap.encode("audio", [np.zeros(100, dtype=np.float32)])
    with pytest.raises(MediaError, match="not found"):
        clap.encode("audio", [ASSETS / "missing.wav"])


def test_clap_deterministic_from_seed_and_rng_untouched(clap):
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    again = ClapEncoder.from_config(CLAP_CONFIG, seed=0)
    other = ClapEncoder.from_config(CLAP_CONFIG, seed=1)
    a = again.encode("audio", sounds()[:2])
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    torch.testing.assert_close(a, clap.encode("audio", sounds()[:2]), atol=0, rtol=0)
    torch.testing.assert_close(again.encode_text(["a bird"]), clap.encode_text(["a bird"]), atol=0, rtol=0)
    assert (other.encode("audio", sounds()[:1]) - a[:1]).abs().max() > 1e-4


def test_clap_fusion_variant(tmp_path):
    fused = ClapEncoder.from_config({"enable_fusion": True, "projection_dim": 16}, seed=0)
    assert fused.model.config.audio_config.enable_fusion
    np.random.seed(7)
    state = np.random.get_state()[1].copy()
    vectors = fused.encode("audio", [sine(440), Audio.load(BIRD_AUDIO)])
    check_vectors(vectors, 2, 16)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # the extractor's random pick is undone
    loaded = ClapEncoder.from_pretrained(fused.save_pretrained(tmp_path / "fused"))
    torch.testing.assert_close(
        loaded.encode("audio", [sine(440), Audio.load(BIRD_AUDIO)]), vectors, atol=0, rtol=0
    )


def test_clap_save_and_load_identical(clap, clap_dir):
    names = {p.name for p in clap_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= names
    loaded = ClapEncoder.from_pretrained(clap_dir)
    assert isinstance(loaded, Encoder) and loaded.output_dim == 24 and loaded.audio_clips == 3
    torch.testing.assert_close(
        loaded.encode("audio", sounds()), clap.encode("audio", sounds()), atol=0, rtol=0
    )
    texts = ["a bird sings", "rain"]
    torch.testing.assert_close(loaded.encode_text(texts), clap.encode_text(texts), atol=0, rtol=0)
    assert ClapEncoder.from_pretrained(clap_dir, audio_clips=1).audio_clips == 1
    assert not loaded.model.training


def test_clap_folder_without_anygen_settings_uses_defaults(clap_dir, tmp_path):
    folder = copy_folder(clap_dir, tmp_path / "hub")
    (folder / "anygen_encoder.json").unlink()  # a folder downloaded from the hub has no such file
    assert ClapEncoder.from_pretrained(folder).audio_clips == 3


@pytest.mark.parametrize(
    "remove, match",
    [
        ("model.safetensors", "model.safetensors"),
        ("config.json", "config.json"),
        ("preprocessor_config.json", "preprocessor_config.json"),
        ("tokenizer.json", "tokenizer.json or vocab.json"),
    ],
)
def test_clap_missing_files(clap_dir, tmp_path, remove, match):
    folder = copy_folder(clap_dir, tmp_path / "f")
    (folder / remove).unlink()
    with pytest.raises(WeightsError, match=match):
        ClapEncoder.from_pretrained(folder)


def test_clap_missing_folder_and_wrong_model_type(clap_dir, tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        ClapEncoder.from_pretrained(tmp_path / "nope")
    folder = copy_folder(clap_dir, tmp_path / "text-only")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({**config["text_config"], "model_type": "clap_text_model"})
    )
    with pytest.raises(WeightsError, match="clap_text_model"):
        ClapEncoder.from_pretrained(folder)


def test_clap_strict_weights(clap_dir, tmp_path):
    folder = copy_folder(clap_dir, tmp_path / "missing")
    state = load_file(str(folder / "model.safetensors"))
    del state["audio_projection.linear2.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="audio_projection.linear2.weight"):
        ClapEncoder.from_pretrained(folder)

    folder = copy_folder(clap_dir, tmp_path / "shape")
    state = load_file(str(folder / "model.safetensors"))
    state["text_projection.linear1.weight"] = torch.zeros(3, 3)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        WeightsError, match=r"shape mismatches.*text_projection.linear1.weight: checkpoint \(3, 3\)"
    ):
        ClapEncoder.from_pretrained(folder)

    folder = copy_folder(clap_dir, tmp_path / "corrupt")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="could not be loaded"):
        ClapEncoder.from_pretrained(folder)

    folder = copy_folder(clap_dir, tmp_path / "extra")
    state = load_file(str(folder / "model.safetensors"))
    state["stray.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="stray.weight"):
        ClapEncoder.from_pretrained(folder)


def test_clap_config_validation():
    assert TinyClapConfig.from_dict({"audio_depths": [2, 1]}).audio_depths == (2, 1)
    with pytest.raises(AnyGenError, match="unknown fields"):
        TinyClapConfig.from_dict({"hidden": 3})
    with pytest.raises(AnyGenError, match="multiple of num_mel_bins"):
        TinyClapConfig(spec_size=24)
    with pytest.raises(AnyGenError, match="frames"):
        TinyClapConfig(max_length_s=2)
    with pytest.raises(AnyGenError, match="differ in length"):
        TinyClapConfig(audio_heads=(2,))
    with pytest.raises(AnyGenError, match="heads"):
        TinyClapConfig(audio_heads=(3, 2))


# ---------------------------------------------------------------------- CLIP


def test_clip_implements_encoder_protocol(clip):
    assert isinstance(clip, Encoder)
    assert clip.modalities == ("image", "video")
    assert clip.output_dim == 20 == clip.model.config.projection_dim
    assert clip.num_video_frames == 3


def test_clip_images_shapes_norm_distinct(clip):
    vectors = clip.encode("image", images())
    check_vectors(vectors, 3, 20)
    assert all_distinct(vectors)
    torch.testing.assert_close(clip.encode("image", images()[1:2])[0], vectors[1], atol=1e-5, rtol=0)
    bird = clip.encode("image", [Image.open(BIRD_IMAGE)])
    torch.testing.assert_close(bird[0], vectors[2], atol=1e-6, rtol=0)


def test_clip_video_is_mean_of_normalised_frames(clip):
    rng = np.random.default_rng(1)
    video = Video(rng.integers(0, 256, (7, 24, 30, 3), dtype=np.uint8), fps=8)
    vectors = clip.encode("video", [video, Video(video.frames[::-1].copy(), fps=8)])
    check_vectors(vectors, 2, 20)
    frames = [Image.fromarray(f) for f in video.sample_frames(3)]  # frames 0, 3 and 6
    manual = F.normalize(clip.encode("image", frames).mean(dim=0), dim=-1)
    torch.testing.assert_close(vectors[0], manual, atol=1e-5, rtol=0)
    torch.testing.assert_close(vectors[1], vectors[0], atol=1e-5, rtol=0)  # same frames, reversed
    still = Video(np.repeat(np.asarray(Image.open(BIRD_IMAGE).convert("RGB"))[None], 2, axis=0), fps=1)
    torch.testing.assert_close(
        clip.encode("video", [still]), clip.encode("image", [BIRD_IMAGE]), atol=1e-5, rtol=0
    )
    check_vectors(clip.encode("video", [ASSETS / "test.mp4"]), 1, 20)


def test_clip_bad_requests(clip):
    with pytest.raises(AnyGenError, match="cannot encode modality 'audio'"):
        clip.encode("audio", [sine(440)])
    with pytest.raises(MediaError, match="empty list"):
        clip.encode("image", [])
    with pytest.raises(MediaError, match="empty list"):
        clip.encode("video", [])
    with pytest.raises(MediaError, match="bare array"):
        clip.encode("video", [np.zeros((2, 8, 8, 3), dtype=np.uint8)])
    with pytest.raises(MediaError, match="not found"):
        clip.encode("image", [ASSETS / "missing.png"])


def test_clip_deterministic_from_seed(clip):
    state = torch.get_rng_state()
    again = ClipImageEncoder.from_config(CLIP_CONFIG, seed=0)
    other = ClipImageEncoder.from_config(TinyClipConfig(**CLIP_CONFIG), seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(
        again.encode("image", images()), clip.encode("image", images()), atol=0, rtol=0
    )
    assert (other.encode("image", images()[:1]) - clip.encode("image", images()[:1])).abs().max() > 1e-4


def test_clip_save_and_load_identical(clip, clip_dir):
    names = {p.name for p in clip_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    loaded = ClipImageEncoder.from_pretrained(clip_dir)
    assert loaded.num_video_frames == 3 and loaded.output_dim == 20
    torch.testing.assert_close(
        loaded.encode("image", images()), clip.encode("image", images()), atol=0, rtol=0
    )
    video = Video(np.random.default_rng(2).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8), fps=4)
    torch.testing.assert_close(loaded.encode("video", [video]), clip.encode("video", [video]), atol=0, rtol=0)
    assert ClipImageEncoder.from_pretrained(clip_dir, num_video_frames=5).num_video_frames == 5


def test_clip_loads_a_whole_clip_checkpoint(clip, tmp_path):
    """The openai/clip-vit-* layout: a full CLIPModel (text tower skipped, top-level projection_dim used)."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={
            "vocab_size": 64,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=12,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = CLIPModel(config).eval()
    folder = tmp_path / "clip-full"
    full.save_pretrained(folder)
    clip.image_processor.save_pretrained(folder)
    encoder = ClipImageEncoder.from_pretrained(folder)
    assert encoder.output_dim == 12 and encoder.num_video_frames == 8
    with torch.no_grad():
        pixels = encoder.preprocess_images([Image.open(BIRD_IMAGE).convert("RGB")])
        reference = F.normalize(full.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    torch.testing.assert_close(encoder.encode("image", [BIRD_IMAGE]), reference, atol=1e-6, rtol=0)


def test_clip_missing_and_broken_folders(clip_dir, tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        ClipImageEncoder.from_pretrained(tmp_path / "nope")
    for name in ("model.safetensors", "preprocessor_config.json", "config.json"):
        folder = copy_folder(clip_dir, tmp_path / name)
        (folder / name).unlink()
        with pytest.raises(WeightsError, match=name.replace(".", r"\.")):
            ClipImageEncoder.from_pretrained(folder)
    folder = copy_folder(clip_dir, tmp_path / "wrong-type")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "siglip_vision_model"}))
    with pytest.raises(WeightsError, match="siglip_vision_model"):
        ClipImageEncoder.from_pretrained(folder)
    folder = copy_folder(clip_dir, tmp_path / "shape")
    state = load_file(str(folder / "model.safetensors"))
    state["visual_projection.weight"] = torch.zeros(7, 32)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"shape mismatches.*visual_projection.weight"):
        ClipImageEncoder.from_pretrained(folder)


def test_clip_config_validation():
    with pytest.raises(AnyGenError, match="unknown fields"):
        TinyClipConfig.from_dict({"width": 8})
    with pytest.raises(AnyGenError, match="multiple of patch_size"):
        TinyClipConfig(image_size=30)
    with pytest.raises(AnyGenError, match="positive integer"):
        TinyClipConfig(num_video_frames=0)
