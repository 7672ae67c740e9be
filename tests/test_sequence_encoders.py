"""Token-sequence inputs: ``*-tokens`` encoders (CLIP / SigLIP patch features, Whisper states), the ``mlp-tokens``
and ``resampler`` input projectors, and the spec checks across them; tiny random parts, end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from anygen import AnyToAnyPipeline
from anygen.encoders.base import TokenSequenceEncoder
from anygen.encoders.token_configs import VisionTokensConfig, WhisperTokensConfig
from anygen.encoders.vision_tokens import VisionTokenEncoder
from anygen.encoders.whisper_tokens import WhisperTokenEncoder
from anygen.errors import AnyGenError, SpecError, WeightsError
from anygen.media import Audio, Video
from anygen.projectors import ResamplerProjector, TokenMLPProjector
from anygen.spec import PipelineSpec

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "pipelines" / "tiny.yaml").read_text())
PAIRS = REPO.parent / "shared" / "data" / "nextgpt-samples" / "T_X_pair_data"

# LLaVA-style: CLIP patch tokens (penultimate layer, no CLS) through a per-token MLP; Whisper states through a
# resampler of 6 queries.
CLIP_GRAPH = {
    "encoders": {
        "vision": {
            "type": "clip-vision-tokens",
            "modalities": ["image", "video"],
            "config": {"num_video_frames": 2},
            "seed": 1,
        },
        "audio": {"type": "whisper-audio-tokens", "modalities": ["audio"], "config": {"pool": 2}, "seed": 11},
    },
    "input_projectors": {
        "vision": {"type": "mlp-tokens", "encoder": "vision", "seed": 2},
        "audio": {"type": "resampler", "encoder": "audio", "num_tokens": 6, "seed": 12},
    },
}
# The other way round: SigLIP (video frames' tokens concatenated) through a resampler; Whisper through an MLP.
SIGLIP_GRAPH = {
    "encoders": {
        "vision": {
            "type": "siglip-vision-tokens",
            "modalities": ["image", "video"],
            "config": {"num_video_frames": 3, "video_tokens": "concat", "feature_layer": -1},
            "seed": 1,
        },
        "audio": {"type": "whisper-audio-tokens", "modalities": ["audio"], "config": {"pool": 5}, "seed": 11},
    },
    "input_projectors": {
        "vision": {
            "type": "resampler",
            "encoder": "vision",
            "num_tokens": 5,
            "d_model": 16,
            "nhead": 2,
            "num_layers": 1,
            "seed": 2,
        },
        "audio": {"type": "mlp-tokens", "encoder": "audio", "seed": 12},
    },
}


def spec_data(graph: dict, **llm_config) -> dict:
    data = copy.deepcopy(TINY)
    data["name"] = "tiny-tokens"
    data.update(copy.deepcopy(graph))
    data["llm"]["config"].update(llm_config)
    return data


def make_spec(data: dict, root: Path | None = None) -> PipelineSpec:
    return PipelineSpec.from_dict(copy.deepcopy(data), root=root)


def make_pipe(graph: dict) -> AnyToAnyPipeline:
    pipe = AnyToAnyPipeline(make_spec(spec_data(graph)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def clip_pipe():
    return make_pipe(CLIP_GRAPH)


@pytest.fixture(scope="module")
def siglip_pipe():
    return make_pipe(SIGLIP_GRAPH)


def images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)),
        Image.new("RGB", (32, 32), "red"),
    ]


def videos():
    rng = np.random.default_rng(1)
    return [
        Video(rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8), 4.0),
        Video(np.zeros((2, 20, 30, 3), np.uint8), 2.0),
    ]


def sounds():
    rng = np.random.default_rng(2)
    t = np.arange(12000) / 16000
    return [
        Audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000),
        Audio(rng.normal(0, 0.2, 9000).astype(np.float32), 22050),
    ]


MEDIA = {"image": images, "video": videos, "audio": sounds}


# -- encoders --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, config, expected",
    [
        ("clip-vision-tokens", {}, {"image": 16, "video": 16}),
        (
            "clip-vision-tokens",
            {"drop_cls": False, "video_tokens": "concat", "num_video_frames": 3},
            {"image": 17, "video": 51},
        ),
        (
            "siglip-vision-tokens",
            {"image_size": 24, "patch_size": 6, "video_tokens": "concat"},
            {"image": 16, "video": 64},
        ),
        ("whisper-audio-tokens", {"pool": 3}, {"audio": 16}),
    ],
)
def test_encoders_give_the_declared_token_count(kind, config, expected):
    if kind == "whisper-audio-tokens":
        enc = WhisperTokenEncoder.from_config(config, seed=0)
    else:
        enc = VisionTokenEncoder.from_config(kind, config, seed=0)
    assert isinstance(enc, TokenSequenceEncoder) and not isinstance(enc.output_tokens, int)
    assert enc.output_tokens == expected == enc.config.tokens()
    for modality, count in expected.items():
        items = MEDIA[modality]()
        out = enc.encode(modality, items)
        assert out.shape == (len(items), count, enc.output_dim) and out.dtype == torch.float32
        assert not out.requires_grad and torch.isfinite(out).all()
        assert not torch.allclose(out[0], out[1])  # different inputs, different tokens
        torch.testing.assert_close(
            enc.encode(modality, items[1:]), out[1:], atol=1e-5, rtol=1e-5
        )  # batch-free


def test_clip_tokens_equal_the_transformers_layer():
    """LLaVA's features: hidden_states[-2] of CLIPVisionModel without the class token, on the processor's pixels."""
    enc = VisionTokenEncoder.from_config("clip-vision-tokens", {"num_layers": 3}, seed=0)
    pics = images()
    pixels = torch.from_numpy(enc.image_processor(pics, return_tensors="np")["pixel_values"])
    with torch.no_grad():
        out = enc.model(pixel_values=pixels, output_hidden_states=True)
    assert len(out.hidden_states) == 4  # embeddings + 3 layers
    torch.testing.assert_close(enc.encode("image", pics), out.hidden_states[-2][:, 1:], atol=0, rtol=0)
    last = VisionTokenEncoder(
        "clip-vision-tokens",
        enc.model,
        enc.image_processor,
        VisionTokensConfig(num_layers=3, feature_layer=-1, drop_cls=False),
    )
    torch.testing.assert_close(last.encode("image", pics), out.last_hidden_state, atol=0, rtol=0)


def test_siglip_tokens_equal_the_transformers_layer():
    enc = VisionTokenEncoder.from_config(
        "siglip-vision-tokens", {"feature_layer": -1, "num_layers": 2}, seed=3
    )
    pics = images()
    pixels = torch.from_numpy(enc.image_processor(pics, return_tensors="np")["pixel_values"])
    with torch.no_grad():
        out = enc.model(pixel_values=pixels, output_hidden_states=True)
    got = enc.encode("image", pics)
    torch.testing.assert_close(got, out.hidden_states[-1], atol=0, rtol=0)  # every patch: SigLIP has no CLS
    assert not torch.allclose(got, out.last_hidden_state)  # the layer's states, before the post-layernorm


def test_video_tokens_are_the_frames_through_the_tower():
    mean = VisionTokenEncoder.from_config("clip-vision-tokens", {"num_video_frames": 3}, seed=0)
    concat = VisionTokenEncoder(
        "clip-vision-tokens",
        mean.model,
        mean.image_processor,
        VisionTokensConfig(num_video_frames=3, video_tokens="concat"),
    )
    video = videos()[0]
    frames = [Image.fromarray(f) for f in video.sample_frames(3)]
    per_frame = mean.encode("image", frames)  # [3, 16, 32]
    torch.testing.assert_close(mean.encode("video", [video])[0], per_frame.mean(0), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(concat.encode("video", [video])[0], per_frame.reshape(48, -1), atol=0, rtol=0)


def test_whisper_tokens_equal_the_encoder_states_pooled():
    enc = WhisperTokenEncoder.from_config({"pool": 2}, seed=0)
    clip = sounds()[0]
    features = enc.feature_extractor(
        clip.waveform,
        sampling_rate=16000,
        padding="max_length",
        max_length=enc.config.window_samples,
        return_tensors="np",
    )["input_features"]
    with torch.no_grad():
        states = enc.model(torch.from_numpy(features)).last_hidden_state  # [1, 50, 32]
    expected = states.reshape(1, 25, 2, -1).mean(2)
    torch.testing.assert_close(enc.encode("audio", [clip]), expected, atol=1e-6, rtol=1e-6)
    # A longer input is cut to the window: what lies past it changes nothing; any length gives 25 tokens.
    window = enc.config.window_samples
    rng = np.random.default_rng(5)
    head = rng.normal(0, 0.2, window).astype(np.float32)
    long = Audio(np.concatenate([head, rng.normal(0, 0.2, 7000).astype(np.float32)]), 16000)
    torch.testing.assert_close(
        enc.encode("audio", [long]), enc.encode("audio", [Audio(head, 16000)]), atol=0, rtol=0
    )


def test_encoders_load_whole_transformers_checkpoints(tmp_path):
    """A whole CLIPModel / WhisperForConditionalGeneration folder: the text tower / decoder is skipped, the features
    equal the model's own."""
    from transformers import CLIPConfig, CLIPModel, WhisperConfig, WhisperForConditionalGeneration

    tiny = VisionTokenEncoder.from_config("clip-vision-tokens", {}, seed=0)
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    text = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 99,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).eval()
    clip.save_pretrained(tmp_path / "clip")
    tiny.image_processor.save_pretrained(tmp_path / "clip")
    loaded = VisionTokenEncoder.from_pretrained(
        "clip-vision-tokens", tmp_path / "clip", settings={"feature_layer": -1}
    )
    pics = images()
    pixels = torch.from_numpy(tiny.image_processor(pics, return_tensors="np")["pixel_values"])
    with torch.no_grad():
        expected = clip.vision_model(pixel_values=pixels).last_hidden_state[:, 1:]
    torch.testing.assert_close(loaded.encode("image", pics), expected, atol=0, rtol=0)

    audio = WhisperTokenEncoder.from_config({}, seed=0)
    config = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        num_mel_bins=16,
        max_source_positions=50,
        max_target_positions=16,
    )
    whisper = WhisperForConditionalGeneration(config).eval()
    whisper.save_pretrained(tmp_path / "whisper")
    audio.feature_extractor.save_pretrained(tmp_path / "whisper")
    loaded = WhisperTokenEncoder.from_pretrained(tmp_path / "whisper")
    clip_audio = sounds()[0]
    with torch.no_grad():
        expected = whisper.model.encoder(loaded.preprocess_audio([clip_audio.waveform])).last_hidden_state
    torch.testing.assert_close(loaded.encode("audio", [clip_audio]), expected, atol=0, rtol=0)


def test_encoder_folders_are_strict_and_safetensors_only(tmp_path):
    enc = VisionTokenEncoder.from_config("siglip-vision-tokens", {}, seed=0)
    folder = enc.save_pretrained(tmp_path / "siglip")
    settings = json.loads((folder / "anygen_encoder.json").read_text())
    assert settings == {"encoder": "siglip-vision-tokens", **enc.config.settings()}
    again = VisionTokenEncoder.from_pretrained("siglip-vision-tokens", folder)
    torch.testing.assert_close(again.encode("image", images()), enc.encode("image", images()), atol=0, rtol=0)
    state = load_file(folder / "model.safetensors")
    key = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != key}, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=f"missing {key}"):
        VisionTokenEncoder.from_pretrained("siglip-vision-tokens", folder)
    state[key] = torch.zeros(3)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(WeightsError, match="checkpoint \\(3,\\)"):
        VisionTokenEncoder.from_pretrained("siglip-vision-tokens", folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="has no model.safetensors.*pytorch_model.bin is not read"):
        VisionTokenEncoder.from_pretrained("siglip-vision-tokens", folder)


@pytest.mark.parametrize(
    "config, field",
    [
        ({"feature_layer": 3}, "feature_layer=3 is out of range"),
        ({"video_tokens": "stack"}, "video_tokens"),
        ({"num_video_frames": 0}, "num_video_frames"),
        ({"hidden_size": 30, "num_heads": 4}, "hidden_size"),
        ({"layers": 2}, "unknown fields \\['layers'\\]"),
    ],
)
def test_vision_config_errors_name_the_field(config, field):
    with pytest.raises(AnyGenError, match=field):
        VisionTokenEncoder.from_config("clip-vision-tokens", config)


def test_whisper_and_siglip_config_errors():
    with pytest.raises(AnyGenError, match="pool"):
        WhisperTokensConfig(pool=51)
    with pytest.raises(AnyGenError, match="drop_cls is false, but SigLIP has no class token"):
        VisionTokenEncoder.from_config("siglip-vision-tokens", {"drop_cls": False})


# -- projectors ------------------------------------------------------------------------------------------------
def test_mlp_tokens_maps_each_token_and_resampler_gives_a_fixed_count():
    torch.manual_seed(0)
    mlp = TokenMLPProjector(8, 12)
    x = torch.randn(2, 5, 8)
    out = mlp(x)
    assert out.shape == (2, 5, 12)
    torch.testing.assert_close(mlp(x.flip(1)), out.flip(1))  # per token: order in, order out
    torch.testing.assert_close(mlp(x[:, :1]), out[:, :1])
    res = ResamplerProjector(8, 12, num_tokens=3, d_model=16, nhead=2, num_layers=2)
    for length in (1, 5, 40):
        assert res(torch.randn(2, length, 8)).shape == (2, 3, 12)
    a, b = res(x), res(torch.randn(2, 5, 8))
    assert not torch.allclose(a, b)  # the queries read the tokens
    with pytest.raises(ValueError, match=r"\[B, tokens, 8\]"):
        res(torch.randn(2, 8))
    with pytest.raises(ValueError, match="nhead=3 does not divide d_model=16"):
        ResamplerProjector(8, 12, 3, d_model=16, nhead=3)


# -- pipelines -------------------------------------------------------------------------------------------------
def _spy_rows(pipe, monkeypatch) -> list[int]:
    """Rows of every media feature block the LLM embeds (tensors among the prompt's segments)."""
    rows: list[int] = []
    real = pipe.llm.embed_segments

    def spy(segments, *args, **kwargs):
        rows.extend(int(s.shape[0]) for s in segments if isinstance(s, torch.Tensor))
        return real(segments, *args, **kwargs)

    monkeypatch.setattr(pipe.llm, "embed_segments", spy)
    return rows


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_pipeline_call_puts_the_declared_tokens_in_the_prompt(which, clip_pipe, siglip_pipe, monkeypatch):
    pipe = clip_pipe if which == "clip" else siglip_pipe
    spec = pipe.spec
    expected = {
        "clip": {"image": 16, "video": 16, "audio": 6},
        "siglip": {"image": 5, "video": 5, "audio": 10},
    }[which]
    for modality, n in expected.items():
        _, proj = pipe._encoder_for(modality)
        assert spec.input_projectors[proj].num_tokens == n
    rows = _spy_rows(pipe, monkeypatch)
    out = pipe(
        "what is in these?",
        images=images()[:1],
        videos=videos()[:1],
        audios=sounds()[:1],
        seed=0,
        max_new_tokens=3,
        only_requested=True,
    )
    assert isinstance(out.text, str)
    # media are embedded in the order image, video, audio of the template's slots; each block is one input
    assert sorted(rows) == sorted(expected.values())
    for modality, n in expected.items():
        block = pipe.encode_media(modality, MEDIA[modality]()[:1])[0]
        assert block.shape == (n, 64)


def test_feature_cache_keeps_token_blocks(clip_pipe, monkeypatch):
    cache: dict = {}
    first = clip_pipe.encode_media("video", videos(), cache)
    assert [f.shape for f in first] == [(16, 64), (16, 64)] and len(cache) == 2
    encoder = clip_pipe.encoder("vision")
    monkeypatch.setattr(encoder, "encode", lambda *a, **k: pytest.fail("cached inputs were encoded again"))
    again = clip_pipe.encode_media("video", videos()[::-1], cache)
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])


def test_save_and_load_give_identical_outputs(siglip_pipe, tmp_path):
    folder = siglip_pipe.save_pretrained(tmp_path / "saved")
    saved = yaml.safe_load((folder / "pipeline.yaml").read_text())
    assert (
        saved["input_projectors"]["audio"]["num_tokens"] == 10
    )  # mlp-tokens: the encoder's count, filled in
    assert saved["input_projectors"]["vision"]["d_model"] == 16
    assert saved["encoders"]["vision"]["config"] is None  # settings live in the folder's anygen_encoder.json
    loaded = AnyToAnyPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    for modality, make in MEDIA.items():
        a, b = siglip_pipe.encode_media(modality, make()), loaded.encode_media(modality, make())
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, atol=0, rtol=0)
    kw = dict(images=images()[:1], audios=sounds()[:1], seed=3, max_new_tokens=5, only_requested=True)
    assert siglip_pipe("describe", **kw).token_ids == loaded("describe", **kw).token_ids


def test_info_reports_tokens_per_input(tmp_path):
    from anygen.graph import describe

    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(spec_data(CLIP_GRAPH)))
    text = describe(str(path), parameters=False)
    assert "image, video -> 16 x 32 per image, 16 x 32 per video" in text
    assert "input_projectors.vision (mlp-tokens): 16 x 32 per image, 16 x 32 per video -> 16 x 64" in text
    assert "input_projectors.audio (resampler): 25 x 32 per audio -> 6 x 64" in text


def test_stage1_trains_the_sequence_projectors(tmp_path):
    from anygen.train import train

    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump(spec_data(CLIP_GRAPH)))
    data = {
        "sets": {
            name: {
                "path": str(PAIRS / name / f"{name}_comprehension.json"),
                "media_root": str(PAIRS / name / sub),
                "limit": 2,
            }
            for name, sub in (("cc3m", "images"), ("audiocap", "audios"), ("webvid", "videos"))
        }
    }
    (tmp_path / "DATA.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "s1"
    train(
        stage=1,
        pipeline=str(path),
        data=str(tmp_path / "DATA.yaml"),
        out=str(out),
        max_steps=6,
        batch_size=2,
        lr=1e-2,
        progress=False,
        verbose=False,
        tensorboard=False,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in rows)
    base, trained = AnyToAnyPipeline.from_pretrained(path), AnyToAnyPipeline.from_pretrained(out)
    for name in ("vision", "audio"):
        before, after = base.input_projector(name).state_dict(), trained.input_projector(name).state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before), (
            f"input_projectors.{name} did not train"
        )
    for (name, a), b in zip(
        base.llm.model.state_dict().items(), trained.llm.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name  # the LLM is frozen in stage 1
    for name in ("vision", "audio"):
        for (key, a), b in zip(
            base.encoder(name).state_dict().items(), trained.encoder(name).state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), f"encoders.{name}: {key}"  # and so are the encoders


# -- spec checks (nothing is built or loaded) ------------------------------------------------------------------
def _graph(**changes) -> dict:
    graph = copy.deepcopy(CLIP_GRAPH)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = graph
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return graph


@pytest.mark.parametrize(
    "changes, message",
    [
        (  # a pooled encoder feeding a sequence projector
            {
                "encoders__vision": {
                    "type": "tiny-imagebind",
                    "modalities": ["image", "video"],
                    "config": {"output_dim": 32},
                }
            },
            r"input_projectors\.vision \(mlp-tokens\) reads a token sequence, but encoders\.vision \(tiny-imagebind\) "
            "gives one pooled 32-wide vector",
        ),
        (  # a token encoder feeding a pooled-vector projector
            {"input_projectors__audio": {"type": "linear", "encoder": "audio"}},
            r"input_projectors\.audio \(linear\) maps one pooled vector per input, but encoders\.audio "
            r"\(whisper-audio-tokens\) gives a token sequence \(25 x 32 per audio\)",
        ),
        (
            {"encoders__vision__config": {"video_tokens": "concat", "num_video_frames": 2}},
            r"input_projectors\.vision \(mlp-tokens\) gives one embedding per encoder token, but encoders\.vision "
            r"\(clip-vision-tokens\) gives 16 x 32 per image, 32 x 32 per video",
        ),
        (
            {"input_projectors__vision__num_tokens": 8},
            r"input_projectors\.vision\.num_tokens=8, but an mlp-tokens projector gives one embedding per token",
        ),
        (
            {"input_projectors__audio__num_tokens": None},
            "num_tokens: a resampler needs its number of queries",
        ),
        (
            {"input_projectors__vision__nhead": 2},
            r"input_projectors\.vision: nhead: only a resampler takes it",
        ),
        (
            {"input_projectors__audio__nhead": 5},
            r"input_projectors\.audio\.nhead=5 does not divide its d_model=32 \(the width of encoders\.audio",
        ),
        (
            {"encoders__vision__config": {"feature_layer": -4}},
            r"encoders\.vision \(clip-vision-tokens\): config\.feature_layer=-4 is out of range",
        ),
        (
            {"encoders__audio__modalities": ["audio", "image"], "encoders__vision__modalities": ["video"]},
            r"encoders\.audio\.modalities lists \['image'\], but whisper-audio-tokens encodes \['audio'\] only",
        ),
        (
            {
                "encoders__vision__path": "./clip-vit-not-downloaded",
                "encoders__vision__config": {"feature_layer": -2},
            },
            r"encoders\.vision \(clip-vision-tokens\): cannot tell its output shape: its path is not there yet",
        ),
    ],
)
def test_spec_errors_name_the_nodes(changes, message):
    with pytest.raises(SpecError, match=message):
        make_spec(spec_data(_graph(**changes)))


def test_spec_catches_a_projector_made_for_another_width_before_loading(tmp_path):
    """The projector's weights file (its header) against the encoder's and the LLM's widths, naming both nodes."""
    save_file(
        {k: v.contiguous() for k, v in TokenMLPProjector(48, 64).state_dict().items()},
        tmp_path / "vision.safetensors",
    )
    graph = _graph(input_projectors__vision__path="vision.safetensors")
    with pytest.raises(SpecError) as err:
        make_spec(spec_data(graph), root=tmp_path)
    text = str(err.value)
    assert "input_projectors.vision (mlp-tokens)" in text and "encoders.vision (32-wide tokens)" in text
    assert "llm (hidden 64)" in text and "(64, 48)" in text and "(64, 32)" in text
    save_file(
        {k: v.contiguous() for k, v in TokenMLPProjector(32, 64).state_dict().items()},
        tmp_path / "vision.safetensors",
    )
    assert make_spec(spec_data(graph), root=tmp_path).input_projectors["vision"].num_tokens == 16


def test_spec_checks_an_encoder_folder_against_its_declared_sizes(tmp_path):
    VisionTokenEncoder.from_config("clip-vision-tokens", {}, seed=0).save_pretrained(tmp_path / "clip")
    graph = _graph(encoders__vision__path="clip", encoders__vision__config={"hidden_size": 48})
    with pytest.raises(
        SpecError, match=r"encoders\.vision \(clip-vision-tokens\): config\.hidden_size=48, but .* gives 32"
    ):
        make_spec(spec_data(graph), root=tmp_path)
    # with the folder's sizes, the node's config holds settings only: they override the folder's
    graph = _graph(encoders__vision__path="clip", encoders__vision__config={"drop_cls": False})
    spec = make_spec(spec_data(graph), root=tmp_path)
    assert spec.input_projectors["vision"].num_tokens == 17


def test_spec_refuses_more_tokens_than_the_llm_context_holds():
    with pytest.raises(
        SpecError,
        match=r"input_projectors\.vision \(mlp-tokens\) puts 16 embeddings per input .* is 17 positions",
    ):
        make_spec(spec_data(CLIP_GRAPH, max_position_embeddings=17))
    assert (
        make_spec(spec_data(CLIP_GRAPH, max_position_embeddings=18)).input_projectors["vision"].num_tokens
        == 16
    )


def test_pooled_pipelines_are_unchanged():
    spec = make_spec(TINY)
    dumped = spec.model_dump(mode="json")["input_projectors"]["imagebind"]
    assert dumped["num_tokens"] == 1 and not {"d_model", "nhead", "num_layers"} & set(dumped)


def test_token_encoders_default_to_the_modalities_they_encode():
    graph = _graph(encoders__vision__modalities=None, encoders__audio__modalities=None)
    spec = make_spec(spec_data(graph))
    assert spec.encoders["vision"].modalities == ["image", "video"]
    assert spec.encoders["audio"].modalities == ["audio"]
