import json
import math
import os
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from anygen.encoders import imagebind_preprocess as pre
from anygen.encoders.base import Encoder
from anygen.encoders.imagebind import (
    ImageBindConfig,
    ImageBindEncoder,
    ImageBindModel,
    config_from_state_dict,
    default_num_heads,
    imagebind_from_state_dict,
)
from anygen.errors import AnyGenError, MediaError, WeightsError
from anygen.media import Audio, Video

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURE = SHARED / "fixtures" / "imagebind"
ASSETS = SHARED / "data" / "nextgpt-samples" / "assets"
CASES = {"vision": "vision", "video": "vision", "text": "text", "audio": "audio"}


@pytest.fixture(scope="module")
def fixture():
    return load_file(FIXTURE / "imagebind_parity.safetensors")


@pytest.fixture(scope="module")
def heads():
    cfg = json.loads((FIXTURE / "imagebind_parity.json").read_text())["config"]
    return {m: cfg[f"{m}_num_heads"] for m in ("vision", "text", "audio")}


@pytest.fixture(scope="module")
def model(fixture, heads):
    return imagebind_from_state_dict(fixture, num_heads=heads)


def _model_only(tensors):
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}


def _scale(tensors, modality):
    """The factor Meta's postprocessor applied, read straight from the fixture's tensors."""
    key = f"model.modality_postprocessors.{modality}.1.log_logit_scale"
    return tensors[key].exp().clamp(max=100.0) if key in tensors else torch.tensor(1.0)


# --------------------------------------------------------------------------------------------------
# Parity with Meta's model
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_parity_scaled_and_unit(model, fixture, case):
    modality = CASES[case]
    x, expected = fixture[f"inputs.{case}"], fixture[f"expected.{case}"]
    with torch.no_grad():
        scaled = model({modality: x})[modality]
        unit = model.embed({modality: x})[modality]
    torch.testing.assert_close(scaled, expected, atol=1e-5, rtol=0)
    # Averaging over clips is linear, so the unscaled output is Meta's output divided by the scale.
    torch.testing.assert_close(unit, expected / _scale(fixture, modality), atol=1e-5, rtol=0)
    if case in ("vision", "text"):  # one clip: exactly unit length
        torch.testing.assert_close(unit.norm(dim=-1), torch.ones(len(unit)), atol=1e-5, rtol=0)


def test_all_modalities_in_one_call(model, fixture):
    inputs = {
        "vision": fixture["inputs.vision"],
        "text": fixture["inputs.text"],
        "audio": fixture["inputs.audio"],
    }
    with torch.no_grad():
        out = model(inputs)
    assert set(out) == set(inputs)
    for name in inputs:
        torch.testing.assert_close(out[name], fixture[f"expected.{name}"], atol=1e-5, rtol=0)


def test_audio_and_text_scales(model, fixture):
    assert model.logit_scale("vision") is None
    assert model.logit_scale("audio") == pytest.approx(20.0, rel=1e-6)
    assert model.logit_scale("text") == pytest.approx(float(_scale(fixture, "text")))


def test_head_count_matters_and_is_configurable(fixture):
    # Width 64 would default to one head; the fixture was made with four, and one head does not match.
    default = imagebind_from_state_dict(fixture)
    assert default.config.text.heads == 1
    with torch.no_grad():
        out = default.encode("text", fixture["inputs.text"])
    assert not torch.allclose(out, fixture["expected.text"], atol=1e-3)
    assert imagebind_from_state_dict(fixture, num_heads=4).config.audio.heads == 4
    with pytest.raises(WeightsError, match="divisible"):
        imagebind_from_state_dict(fixture, num_heads={"vision": 5})
    with pytest.raises(AnyGenError, match="unknown modalities"):
        imagebind_from_state_dict(fixture, num_heads={"depth": 4})


def test_config_read_from_shapes(model):
    cfg = model.config
    assert cfg.out_dim == 32
    assert (cfg.vision.width, cfg.vision.depth, cfg.vision.mlp_hidden) == (64, 2, 256)
    assert (cfg.text.width, cfg.text.depth, cfg.audio.width, cfg.audio.depth) == (64, 2, 64, 2)
    assert cfg.vision.pre_norm and not cfg.text.pre_norm and not cfg.audio.pre_norm
    assert cfg.audio.bias_kv and not cfg.vision.bias_kv and not cfg.text.bias_kv
    assert (cfg.vision_kernel, cfg.image_size, cfg.video_frames) == ((2, 14, 14), 224, 2)
    assert (cfg.vocab_size, cfg.context_length) == (49408, 77)
    assert (cfg.audio_kernel, cfg.audio_tokens) == (16, 228)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_huge_config_round_trips_through_shapes():
    assert default_num_heads("vision", 1280) == 16
    assert default_num_heads("text", 1024) == 16
    assert default_num_heads("audio", 768) == 12
    assert default_num_heads("vision", 256) == 4
    with torch.device("meta"):
        huge = ImageBindModel()
    state = huge.state_dict()
    assert config_from_state_dict(state) == ImageBindConfig()
    assert config_from_state_dict({f"model.{k}": v for k, v in state.items()}) == ImageBindConfig()
    cfg = huge.config
    assert (cfg.vision.width, cfg.vision.depth, cfg.vision.heads) == (1280, 32, 16)
    assert (cfg.text.width, cfg.text.depth, cfg.text.heads) == (1024, 24, 16)
    assert (cfg.audio.width, cfg.audio.depth, cfg.audio.heads, cfg.out_dim) == (768, 12, 12, 1024)


# --------------------------------------------------------------------------------------------------
# Loading: prefixes, ignored modalities, strictness, files
# --------------------------------------------------------------------------------------------------


def test_prefix_optional_and_other_modalities_ignored(fixture, heads, model):
    plain = _model_only(fixture)
    assert any(".depth." in k for k in plain) and any(".imu." in k for k in plain)
    unprefixed = imagebind_from_state_dict(plain, num_heads=heads)
    only_three = {
        k: v for k, v in plain.items() if not any(f".{m}." in k for m in ("depth", "thermal", "imu"))
    }
    trimmed = imagebind_from_state_dict(only_three, num_heads=heads)
    with torch.no_grad():
        for m in (unprefixed, trimmed):
            for case, modality in CASES.items():
                x = fixture[f"inputs.{case}"]
                torch.testing.assert_close(m.encode(modality, x), model.encode(modality, x), atol=0, rtol=0)


@pytest.mark.parametrize(
    "key",
    [
        "modality_trunks.audio.blocks.1.mlp.fc2.bias",
        "modality_preprocessors.text.mask",
        "modality_postprocessors.text.1.log_logit_scale",
        "modality_trunks.vision.pre_transformer_layer.0.bias",
        "modality_trunks.audio.blocks.0.attn.bias_v",
    ],
)
def test_missing_key_is_named(fixture, heads, key):
    broken = {k: v for k, v in fixture.items() if k != f"model.{key}"}
    with pytest.raises(WeightsError, match="missing") as info:
        imagebind_from_state_dict(broken, num_heads=heads)
    assert key in str(info.value)


def test_architecture_keys_are_required(fixture, heads):
    # The vision pre-trunk LayerNorm and the audio key/value biases are part of ImageBind, not optional.
    for gone in ("modality_trunks.vision.pre_transformer_layer.0.", ".audio.blocks.0.attn.bias_"):
        broken = {k: v for k, v in fixture.items() if gone not in k}
        with pytest.raises(WeightsError, match="missing") as info:
            imagebind_from_state_dict(broken, num_heads=heads)
        assert gone.strip(".") in str(info.value)


def test_unexpected_and_misshaped_keys_are_named(fixture, heads):
    extra = dict(fixture)
    extra["model.modality_heads.vision.3.weight"] = torch.zeros(2)
    with pytest.raises(WeightsError, match=r"unexpected keys: modality_heads\.vision\.3\.weight"):
        imagebind_from_state_dict(extra, num_heads=heads)
    wrong = dict(fixture)
    wrong["model.modality_trunks.text.blocks.0.mlp.fc2.bias"] = torch.zeros(65)
    with pytest.raises(WeightsError, match=r"modality_trunks\.text\.blocks\.0\.mlp\.fc2\.bias \(65,\)"):
        imagebind_from_state_dict(wrong, num_heads=heads)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_encoder_from_checkpoint_files(tmp_path, fixture, heads, suffix):
    path = tmp_path / f"imagebind{suffix}"
    plain = _model_only(fixture)
    if suffix == ".pth":
        torch.save(plain, path)
    else:
        save_file(plain, path)
    encoder = ImageBindEncoder.from_checkpoint(path, num_heads=heads)
    with torch.no_grad():
        out = encoder.model.encode("vision", fixture["inputs.video"])
    torch.testing.assert_close(out, fixture["expected.video"], atol=1e-5, rtol=0)


def test_missing_or_bad_checkpoint_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        ImageBindEncoder.from_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        ImageBindEncoder.from_checkpoint(bad)


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------


def test_image_preprocessing_matches_torchvision_rules():
    from transformers import CLIPImageProcessorPil

    hf = CLIPImageProcessorPil()
    bird = Image.open(ASSETS / "bird_image.jpg")
    x = pre.image_to_tensor(bird)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and torch.isfinite(x).all()
    for size in [(300, 200), (201, 500), (224, 224), (100, 80), (640, 480)]:
        im = bird.resize(size)
        reference = hf(images=im, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(pre.image_to_tensor(im), reference, atol=0, rtol=0)
    # bird_image.jpg (640x855) scales to 224x299: a 37.5-row margin, which torchvision's CenterCrop
    # rounds half-to-even (38) while transformers floors it (37); the crops are one row apart.
    reference = hf(images=bird, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(x[:, :-1], reference[:, 1:], atol=0, rtol=0)
    gray = pre.image_to_tensor(bird.convert("L"))
    assert gray.shape == (3, 224, 224)
    with pytest.raises(MediaError):
        pre.image_to_tensor(np.zeros((4, 4, 3)))


def _test_wav():
    waveform, rate = sf.read(ASSETS / "test.wav", dtype="float32", always_2d=True)
    return Audio(waveform.mean(axis=1), rate)


def test_kaldi_fbank_against_ast_feature_extractor():
    from transformers import ASTFeatureExtractor

    audio = _test_wav()
    clip = torch.from_numpy(audio.waveform[: 2 * 16000].copy())
    clip -= clip.mean()
    fbank = pre.kaldi_fbank(clip)
    assert fbank.shape == (198, 128)
    with warnings.catch_warnings():  # "at least one mel filter has all zero values": Kaldi's too
        warnings.simplefilter("ignore", UserWarning)
        ast = ASTFeatureExtractor(num_mel_bins=128, do_normalize=False)
    reference = ast(clip.numpy(), sampling_rate=16000, return_tensors="np")["input_values"][0][:198]
    diff = np.abs(fbank.numpy() - reference)
    assert diff.max() < 2e-3  # float32 rounding in near-empty low-frequency bins
    assert diff.mean() < 1e-4
    banks = pre.kaldi_mel_banks(128, 512, 16000)
    assert banks.shape == (128, 257)
    np.testing.assert_allclose(banks.numpy(), ast.mel_filters.T, atol=1e-4)
    assert pre.kaldi_fbank(torch.zeros(399)).shape == (0, 128)


def test_clip_times_follow_constant_clip_sampler():
    assert pre.constant_clip_times(9.0, 2, 3) == [(0, 2), (Fraction(7, 2), Fraction(11, 2)), (7, 9)]
    assert pre.constant_clip_times(1.0, 2, 3) == [(0, 2)] * 3
    assert [s for s, _ in pre.constant_clip_times(3.0, 2, 5)] == [Fraction(i, 4) for i in range(5)]


def test_audio_preprocessing_real_files():
    x = pre.audio_to_tensor(_test_wav())  # 16 kHz mono float, 9 s
    assert x.shape == (3, 1, 128, 204) and torch.isfinite(x).all()
    # 2 s clips give 198 frames; the last 6 columns are zero-padding, normalised.
    pad = (0.0 - pre.AUDIO_MEAN) / pre.AUDIO_STD
    torch.testing.assert_close(x[..., 198:], torch.full_like(x[..., 198:], pad))
    assert not torch.allclose(x[..., 197], torch.full_like(x[..., 197], pad))
    waveform, rate = sf.read(ASSETS / "bird_audio.wav", dtype="float32", always_2d=True)  # 44.1 kHz stereo
    assert rate == 44100 and waveform.shape[1] == 2
    y = pre.audio_to_tensor(Audio(waveform.mean(axis=1), rate))
    assert y.shape == (3, 1, 128, 204) and torch.isfinite(y).all()
    short = pre.audio_to_tensor(
        Audio(np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32), 16000)
    )
    assert short.shape == (3, 1, 128, 204)
    torch.testing.assert_close(short[..., 48:], torch.full_like(short[..., 48:], pad))  # 0.5 s -> 48 frames
    with pytest.raises(MediaError):
        pre.audio_to_tensor(np.zeros(16000, np.float32))


def test_video_preprocessing_real_file():
    video = pre.read_video(ASSETS / "test.mp4")
    assert video.frames.shape == (24, 320, 576, 3) and video.frames.dtype == np.uint8
    assert video.fps == 8.0
    # 3 s at 8 fps: clip starts 0, .25, .5, .75, 1 s; first and last frame of each 2 s window.
    assert pre.video_frame_indices(24, 8.0) == [[0, 15], [2, 17], [4, 19], [6, 21], [8, 23]]
    x = pre.video_to_tensor(video)
    assert x.shape == (15, 3, 2, 224, 224) and torch.isfinite(x).all()
    assert not torch.equal(x[0], x[2])  # left and right crops of the same clip differ


def test_video_layout_and_crops_exactly():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(12, 224, 300, 3), dtype=np.uint8)  # short side already 224
    x = pre.video_to_tensor(Video(frames, fps=4.0), num_clips=2)
    assert x.shape == (6, 3, 2, 224, 224)
    mean = torch.tensor(pre.CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(pre.CLIP_STD).view(3, 1, 1)
    indices = pre.video_frame_indices(12, 4.0, num_clips=2)
    assert indices == [[0, 7], [4, 11]]
    offsets = [0, math.ceil((300 - 224) / 2), 300 - 224]
    for c, clip in enumerate(indices):
        for k, left in enumerate(offsets):
            for t, frame in enumerate(clip):
                image = torch.from_numpy(frames[frame]).permute(2, 0, 1).float() / 255.0
                expected = ((image - mean) / std)[:, :, left : left + 224]
                torch.testing.assert_close(x[3 * c + k, :, t], expected, atol=1e-6, rtol=0)
    tall = pre.video_to_tensor(Video(frames.transpose(0, 2, 1, 3).copy(), fps=4.0), num_clips=1)
    assert tall.shape == (3, 3, 2, 224, 224)
    with pytest.raises(MediaError):
        pre.video_to_tensor(Video(np.zeros((0, 4, 4, 3), np.uint8), fps=4.0))


# --------------------------------------------------------------------------------------------------
# The Encoder wrapper, end to end on the sample files
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(fixture, heads):
    return ImageBindEncoder.from_state_dict(fixture, num_heads=heads)


def test_encoder_protocol(encoder):
    assert isinstance(encoder, Encoder)
    assert encoder.modalities == ("image", "video", "audio")
    assert encoder.output_dim == 32


def test_encode_sample_files(encoder):
    bird = Image.open(ASSETS / "bird_image.jpg")
    images = encoder.encode("image", [bird, bird.transpose(Image.FLIP_LEFT_RIGHT)])
    assert images.shape == (2, 32) and images.dtype == torch.float32
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)
    assert not images.requires_grad

    video = encoder.encode("video", [pre.read_video(ASSETS / "test.mp4")])
    waveform, rate = sf.read(ASSETS / "bird_audio.wav", dtype="float32", always_2d=True)
    audio = encoder.encode("audio", [Audio(waveform.mean(axis=1), rate), _test_wav()])
    for out, n in ((video, 1), (audio, 2)):
        assert out.shape == (n, 32) and torch.isfinite(out).all()
        # Mean of per-clip unit vectors, as NExT-GPT feeds them: at most unit length.
        assert (out.norm(dim=-1) <= 1 + 1e-5).all() and (out.norm(dim=-1) > 0.1).all()

    with torch.no_grad():
        direct = encoder.model.embed({"audio": pre.audios_to_tensor([_test_wav()])})["audio"]
    torch.testing.assert_close(audio[1:], direct, atol=1e-6, rtol=0)


def test_encode_batching_renormalising_and_errors(fixture, heads, encoder):
    bird = Image.open(ASSETS / "bird_image.jpg")
    items = [bird, bird.rotate(90, expand=True), bird.crop((0, 0, 300, 300))]
    one_by_one = ImageBindEncoder.from_state_dict(fixture, num_heads=heads, batch_size=1)
    torch.testing.assert_close(
        one_by_one.encode("image", items), encoder.encode("image", items), atol=1e-6, rtol=0
    )
    unit = ImageBindEncoder.from_state_dict(fixture, num_heads=heads, renormalize=True)
    out = unit.encode("audio", [_test_wav()])
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(1), atol=1e-5, rtol=0)
    assert encoder.encode("image", []).shape == (0, 32)
    with pytest.raises(AnyGenError, match="text"):
        encoder.encode("text", ["a bird"])
    with pytest.raises(MediaError):
        encoder.encode("video", [bird])
    with pytest.raises(MediaError):
        encoder.encode("audio", [bird])
