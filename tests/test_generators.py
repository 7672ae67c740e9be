"""Generators on tiny random-weight diffusers pipelines (real classes, tiny widths), offline."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import PIL.Image
import pytest
import torch

from anygen.errors import AnyGenError, SpecError, WeightsError
from anygen.generators import (
    GENERATOR_TYPES,
    build_generator,
    condition_shape_from_config,
    condition_shape_from_folder,
)
from anygen.generators.base import Generator
from anygen.media import Audio, Video

KINDS = ["stable-diffusion", "zeroscope", "audioldm"]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_array(outputs: list) -> np.ndarray:
    """One array for a list of generator outputs, whatever the modality."""
    first = outputs[0]
    if isinstance(first, PIL.Image.Image):
        return np.stack([np.asarray(o) for o in outputs])
    if isinstance(first, Video):
        return np.stack([o.frames for o in outputs])
    return np.stack([o.waveform for o in outputs])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from more threads, and OpenMP threads slow down many-fold on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def generators():
    return {kind: build_generator(kind, config={}, seed=0) for kind in KINDS}


@pytest.fixture(scope="module")
def saved(generators, tmp_path_factory):
    """Each tiny generator saved once (diffusers layout)."""
    folders = {}
    for kind, gen in generators.items():
        folder = tmp_path_factory.mktemp(kind)
        gen.save_pretrained(folder)
        folders[kind] = folder
    return folders


# ---- registry ----------------------------------------------------------------------------------------------


def test_registry_maps_types_to_classes():
    from anygen.generators.shapes import GENERATOR_MODALITIES

    assert sorted(GENERATOR_TYPES) == sorted(GENERATOR_MODALITIES) and set(KINDS) <= set(GENERATOR_TYPES)
    assert {cls.modality for cls in GENERATOR_TYPES.values()} == {"image", "video", "audio"}
    assert [GENERATOR_TYPES[k].__name__ for k in KINDS] == [
        "StableDiffusionGenerator",
        "ZeroscopeGenerator",
        "AudioLDMGenerator",
    ]
    for name, cls in GENERATOR_TYPES.items():  # the newer families: tests/test_modern_generators.py
        assert cls.type_name == name and cls.modality == GENERATOR_MODALITIES[name]


def test_unknown_type_lists_known_ones():
    with pytest.raises(
        SpecError, match="unknown generator type 'dalle'; known types: audioldm, .*stable-diffusion, .*zeroscope"
    ):
        build_generator("dalle", config={})


def test_build_needs_exactly_one_source(tmp_path):
    with pytest.raises(SpecError, match="exactly one"):
        build_generator("stable-diffusion")
    with pytest.raises(SpecError, match="exactly one"):
        build_generator("stable-diffusion", config={}, path=tmp_path)


def test_unknown_tiny_knob_is_named():
    with pytest.raises(SpecError, match="'text_widht'"):
        build_generator("stable-diffusion", config={"text_widht": 8})


def test_package_import_is_light():
    code = "import sys, anygen.generators; print('diffusers' in sys.modules, 'torch' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=repo
    )
    loaded_diffusers, _ = out.stdout.split()
    assert loaded_diffusers == "False"


# ---- protocol and outputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_implements_protocol(generators, kind):
    gen = generators[kind]
    assert isinstance(gen, Generator)
    assert gen.modality == {"stable-diffusion": "image", "zeroscope": "video", "audioldm": "audio"}[kind]


def test_image_outputs(generators):
    gen = generators["stable-diffusion"]
    embeds = gen.encode_text(["a red cube", "a blue ball"])
    images = gen.generate(embeds, generator=seeded(0))
    assert len(images) == 2
    assert all(isinstance(im, PIL.Image.Image) and im.size == (64, 64) and im.mode == "RGB" for im in images)
    (small,) = gen.generate(embeds[:1], height=32, width=48, generator=seeded(0))
    assert small.size == (48, 32)


def test_video_outputs(generators):
    gen = generators["zeroscope"]
    (video,) = gen.generate(gen.encode_text(["a red cube spins"]), generator=seeded(0))
    assert isinstance(video, Video)
    assert video.frames.dtype == np.uint8
    assert video.frames.shape == (8, 64, 64, 3)
    assert video.fps == 8.0
    (other,) = gen.generate(
        gen.encode_text(["x"]), num_frames=10, height=32, width=64, fps=12, generator=seeded(0)
    )
    assert other.frames.shape == (10, 32, 64, 3)
    assert other.fps == 12.0


@pytest.mark.parametrize("seconds", [1.0, 0.5, 0.73])
def test_audio_outputs(generators, seconds):
    gen = generators["audioldm"]
    clips = gen.generate(
        gen.encode_text(["a dog barks", "rain"]), audio_length_in_s=seconds, generator=seeded(0)
    )
    assert len(clips) == 2
    for clip in clips:
        assert isinstance(clip, Audio)
        assert clip.sample_rate == 16000
        assert clip.waveform.dtype == np.float32 and clip.waveform.ndim == 1
        assert abs(len(clip.waveform) - seconds * 16000) <= 1
        assert np.abs(clip.waveform).max() <= 1.0


def test_audio_default_length_is_native(generators):
    gen = generators["audioldm"]
    (clip,) = gen.generate(gen.encode_text(["a dog barks"]), generator=seeded(0))
    assert len(clip.waveform) == 16000  # tiny: 50 latent frames * VAE 2 * hop 160 / 16 kHz = 1.0 s


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output_different_seed_different(generators, kind):
    gen = generators[kind]
    embeds = gen.encode_text(["a red cube"])
    first = as_array(gen.generate(embeds, generator=seeded(1)))
    again = as_array(gen.generate(embeds, generator=seeded(1)))
    other = as_array(gen.generate(embeds, generator=seeded(2)))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("kind", KINDS)
def test_callback_once_per_step(generators, kind):
    gen = generators[kind]
    calls = []
    gen.generate(
        gen.encode_text(["x"]),
        num_inference_steps=3,
        generator=seeded(0),
        callback=lambda *a: calls.append(a),
    )
    # Stable Diffusion's PNDM has one more timestep than steps; still one call per step.
    assert calls == [(1, 3), (2, 3), (3, 3)]


# ---- text conditioning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_encode_text_shape(generators, kind):
    gen = generators[kind]
    embeds = gen.encode_text(["a", "a much longer prompt about a cat", ""])
    assert tuple(embeds.shape) == (3, *gen.condition_shape)
    assert embeds.dtype == torch.float32
    assert gen.condition_shape == ((1, 32) if kind == "audioldm" else (77, 32))
    if kind == "audioldm":  # CLAP projection, L2-normalised as AudioLDMPipeline does
        torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3, 1))


@pytest.mark.parametrize("kind", KINDS)
def test_generate_from_text_matches_diffusers_text_path(generators, kind):
    """encode_text + the cached "" negative reproduce the pipeline's own text conditioning exactly."""
    gen = generators[kind]
    ours = as_array(gen.generate_from_text(["a red cube"], generator=seeded(3)))
    options = {
        "num_inference_steps": 2,
        "guidance_scale": gen.defaults.guidance_scale,
        "generator": seeded(3),
    }
    if kind == "stable-diffusion":
        ref = np.stack([np.asarray(im) for im in gen.pipeline(prompt=["a red cube"], **options).images])
    elif kind == "zeroscope":
        frames = gen.pipeline(prompt=["a red cube"], num_frames=8, output_type="np", **options).frames
        ref = (np.clip(np.asarray(frames), 0, 1) * 255).round().astype(np.uint8)
    else:
        ref = gen.pipeline(prompt=["a red cube"], output_type="np", **options).audios
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("kind", KINDS)
def test_explicit_negative_equals_default_empty_prompt(generators, kind):
    gen = generators[kind]
    embeds = gen.encode_text(["a red cube", "a blue ball"])
    default = as_array(gen.generate(embeds, generator=seeded(4)))
    explicit = as_array(
        gen.generate(embeds, negative_prompt_embeds=gen.encode_text([""]), generator=seeded(4))
    )
    assert np.array_equal(default, explicit)
    other = as_array(
        gen.generate(embeds, negative_prompt_embeds=gen.encode_text(["blurry"]), generator=seeded(4))
    )
    assert not np.array_equal(default, other)


def test_no_guidance_runs_without_negative(generators):
    gen = generators["stable-diffusion"]
    (image,) = gen.generate(gen.encode_text(["x"]), guidance_scale=1.0, generator=seeded(0))
    assert image.size == (64, 64)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_prompt_embeds_shape_is_explained(generators, kind):
    gen = generators[kind]
    tokens, width = gen.condition_shape
    bad = torch.zeros(1, tokens, width + 1)
    expected = f"{gen.modality} generator expects prompt_embeds [B, {tokens}, {width}], got [1, {tokens}, {width + 1}]"
    with pytest.raises(AnyGenError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        gen.generate(bad)
    with pytest.raises(ValueError, match="expects prompt_embeds"):
        gen.generate(torch.zeros(tokens, width))
    with pytest.raises(TypeError, match="torch.Tensor"):
        gen.generate(np.zeros((1, tokens, width), dtype=np.float32))
    with pytest.raises(ValueError, match=r"negative_prompt_embeds \[1 or 2"):
        gen.generate(torch.zeros(2, tokens, width), negative_prompt_embeds=torch.zeros(3, tokens, width))


def test_unknown_option_is_rejected(generators):
    gen = generators["stable-diffusion"]
    with pytest.raises(
        TypeError, match="'num_frames'.*accepted: num_inference_steps, guidance_scale, height, width"
    ):
        gen.generate(gen.encode_text(["x"]), num_frames=8)


# ---- defaults --------------------------------------------------------------------------------------------------


def test_defaults_come_from_config_and_can_be_overridden():
    gen = build_generator("zeroscope", config={"defaults": {"num_frames": 9}}, defaults={"fps": 4})
    assert gen.defaults.num_frames == 9 and gen.defaults.fps == 4 and gen.defaults.num_inference_steps == 2
    assert gen.default_options() == {
        "num_inference_steps": 2,
        "guidance_scale": 7.5,
        "height": None,
        "width": None,
        "num_frames": 9,
        "fps": 4,
    }
    gen.set_defaults(num_inference_steps=1, height=32)
    (video,) = gen.generate(gen.encode_text(["x"]), generator=seeded(0))
    assert video.frames.shape == (9, 32, 64, 3) and video.fps == 4
    with pytest.raises(SpecError, match="'audio_length_in_s'"):
        gen.set_defaults(audio_length_in_s=2.0)


def test_real_defaults_follow_nextgpt_settings():
    from anygen.generators import AudioDefaults, ImageDefaults, VideoDefaults

    assert (ImageDefaults().num_inference_steps, ImageDefaults().guidance_scale) == (50, 7.5)
    assert (VideoDefaults().height, VideoDefaults().width, VideoDefaults().num_frames) == (320, 576, 24)
    assert AudioDefaults().audio_length_in_s is None


# ---- construction ------------------------------------------------------------------------------------------


def test_from_config_is_deterministic_and_keeps_global_rng():
    state = torch.random.get_rng_state()
    a = build_generator("stable-diffusion", config={}, seed=5)
    b = build_generator("stable-diffusion", config={}, seed=5)
    c = build_generator("stable-diffusion", config={}, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name in ("unet", "vae", "text_encoder"):
        sa, sb, sc = (getattr(g.pipeline, name).state_dict() for g in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    embeds = a.encode_text(["x"])
    assert np.array_equal(
        as_array(a.generate(embeds, generator=seeded(0))), as_array(b.generate(embeds, generator=seeded(0)))
    )


@pytest.mark.parametrize(
    ("kind", "knobs", "shape"),
    [
        ("stable-diffusion", {}, (77, 32)),
        ("stable-diffusion", {"text_width": 48}, (77, 48)),
        ("image", {"max_length": 16}, (16, 32)),
        ("zeroscope", {"text_width": 24}, (77, 24)),
        ("audioldm", {}, (1, 32)),
        ("audio", {"projection_dim": 24}, (1, 24)),
        ("stable-diffusion", {"condition_shape": [16, 48]}, (16, 48)),
        ("audioldm", {"condition_shape": [1, 24], "projection_dim": 24}, (1, 24)),
    ],
)
def test_condition_shape_from_config(kind, knobs, shape):
    assert condition_shape_from_config(kind, knobs) == shape


def test_condition_shape_knob_must_agree():
    with pytest.raises(SpecError, match="text_width=48 but text_width is 32"):
        condition_shape_from_config("stable-diffusion", {"condition_shape": [77, 48], "text_width": 32})
    with pytest.raises(SpecError, match=r"must be \[1, width\]"):
        condition_shape_from_config("audioldm", {"condition_shape": [77, 32]})
    gen = build_generator("zeroscope", config={"condition_shape": [20, 16]})
    assert gen.condition_shape == (20, 16)
    assert tuple(gen.encode_text(["x"]).shape) == (1, 20, 16)


def test_condition_shape_from_config_matches_built_model():
    gen = build_generator("audioldm", config={"projection_dim": 24, "text_width": 16})
    assert gen.condition_shape == condition_shape_from_config(
        "audioldm", {"projection_dim": 24, "text_width": 16}
    )
    assert tuple(gen.encode_text(["x"]).shape) == (1, 1, 24)


@pytest.mark.parametrize("kind", KINDS)
def test_condition_shape_from_saved_folder(generators, saved, kind):
    assert condition_shape_from_folder(kind, saved[kind]) == generators[kind].condition_shape


def _json_folder(root, files: dict) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("kind", "files", "shape"),
    [
        (  # SD-1.5: CLIP ViT-L/14 text encoder
            "stable-diffusion",
            {
                "text_encoder/config.json": {"model_type": "clip_text_model", "hidden_size": 768},
                "tokenizer/tokenizer_config.json": {"model_max_length": 77},
                "unet/config.json": {"cross_attention_dim": 768},
            },
            (77, 768),
        ),
        (  # SD-2 / Zeroscope: OpenCLIP ViT-H text encoder
            "zeroscope",
            {
                "text_encoder/config.json": {"hidden_size": 1024, "max_position_embeddings": 77},
                "tokenizer/tokenizer_config.json": {"model_max_length": 77},
            },
            (77, 1024),
        ),
        (  # AudioLDM: CLAP text projection; transformers omits values equal to the class default (512)
            "audioldm",
            {
                "text_encoder/config.json": {"model_type": "clap_text_model", "hidden_size": 768},
                "unet/config.json": {"projection_class_embeddings_input_dim": 512},
            },
            (1, 512),
        ),
        (  # a tokenizer without a real limit: the encoder's positions bound it
            "stable-diffusion",
            {
                "text_encoder/config.json": {"hidden_size": 1024},
                "tokenizer/tokenizer_config.json": {"model_max_length": 1000000000000000019884624838656},
            },
            (77, 1024),
        ),
    ],
)
def test_condition_shape_from_json_only_folder(tmp_path, kind, files, shape):
    _json_folder(tmp_path, files)
    assert condition_shape_from_folder(kind, tmp_path) == shape


def test_condition_shape_from_folder_errors(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        condition_shape_from_folder("image", tmp_path / "nope")
    with pytest.raises(WeightsError, match="missing text_encoder/config.json"):
        condition_shape_from_folder("image", tmp_path)
    _json_folder(
        tmp_path,
        {
            "text_encoder/config.json": {"hidden_size": 1024},
            "tokenizer/tokenizer_config.json": {"model_max_length": 77},
            "unet/config.json": {"cross_attention_dim": 768},
        },
    )
    with pytest.raises(WeightsError, match="width 1024 but unet/config.json expects 768"):
        condition_shape_from_folder("stable-diffusion", tmp_path)
    with pytest.raises(SpecError, match="unknown generator kind"):
        condition_shape_from_folder("smell", tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_reproduce_outputs(generators, saved, kind):
    gen = generators[kind]
    loaded = build_generator(kind, path=saved[kind])
    assert type(loaded) is type(gen)
    assert loaded.condition_shape == gen.condition_shape
    assert loaded.defaults == gen.defaults  # kept in anygen_generator.json
    assert (saved[kind] / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert torch.equal(loaded.encode_text(["a red cube"]), gen.encode_text(["a red cube"]))
    embeds = gen.encode_text(["a red cube"])
    assert np.array_equal(
        as_array(gen.generate(embeds, generator=seeded(7))),
        as_array(loaded.generate(embeds, generator=seeded(7))),
    )


def test_missing_folder_is_a_weights_error(tmp_path):
    with pytest.raises(
        WeightsError, match=f"stable-diffusion weights folder {tmp_path / 'none'} does not exist"
    ):
        build_generator("stable-diffusion", path=tmp_path / "none")
    assert issubclass(WeightsError, AnyGenError)


def test_incomplete_folder_names_missing_files(saved, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(saved["audioldm"], folder)
    (folder / "vocoder" / "model.safetensors").unlink()
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(WeightsError) as err:
        build_generator("audioldm", path=folder)
    message = str(err.value)
    assert str(folder) in message
    assert "vocoder/model.safetensors" in message and "scheduler/scheduler_config.json" in message


def test_folder_of_another_pipeline_is_refused(saved):
    with pytest.raises(
        WeightsError,
        match="holds a StableDiffusionPipeline.*audioldm generator loads AudioLDMPipeline folders",
    ):
        build_generator("audioldm", path=saved["stable-diffusion"])


def test_corrupt_weights_are_a_weights_error(saved, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(saved["stable-diffusion"], folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="cannot load stable-diffusion weights"):
        build_generator("stable-diffusion", path=folder)


# ---- schedulers as shipped -------------------------------------------------------------------------------------


def test_v_prediction_survives_save_and_load(tmp_path):
    """SD-2 ships a DDIM scheduler with prediction_type v_prediction."""
    config = {"scheduler": "ddim", "prediction_type": "v_prediction", "text_width": 32}
    gen = build_generator("stable-diffusion", config=config, seed=1)
    eps = build_generator("stable-diffusion", config={**config, "prediction_type": "epsilon"}, seed=1)
    embeds = gen.encode_text(["a red cube"])
    out = as_array(gen.generate(embeds, generator=seeded(0)))
    assert not np.array_equal(out, as_array(eps.generate(embeds, generator=seeded(0))))  # same weights

    gen.save_pretrained(tmp_path)
    loaded = build_generator("stable-diffusion", path=tmp_path)
    assert type(loaded.pipeline.scheduler).__name__ == "DDIMScheduler"
    assert loaded.pipeline.scheduler.config.prediction_type == "v_prediction"
    assert np.array_equal(out, as_array(loaded.generate(embeds, generator=seeded(0))))


@pytest.mark.parametrize(
    ("kind", "scheduler"),
    [("stable-diffusion", "PNDMScheduler"), ("zeroscope", "DDIMScheduler"), ("audioldm", "DDIMScheduler")],
)
def test_tiny_schedulers_as_shipped(generators, kind, scheduler):
    assert type(generators[kind].pipeline.scheduler).__name__ == scheduler


def test_dpmsolver_scheduler_runs():
    gen = build_generator("zeroscope", config={"scheduler": "dpmsolver"})
    (video,) = gen.generate(gen.encode_text(["x"]), generator=seeded(0))
    assert video.frames.shape == (8, 64, 64, 3)


# ---- diffusers quirks --------------------------------------------------------------------------------------------


def test_only_the_deprecated_pipeline_notice_is_silenced():
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    handler = Collect()
    logger.addHandler(handler)
    try:
        build_generator("zeroscope", config={})
        build_generator("audioldm", config={})
        logger.warning("The SomeOtherPipeline has been deprecated and will not receive bug fixes")
    finally:
        logger.removeHandler(handler)
    assert not any("TextToVideoSDPipeline" in r or "AudioLDMPipeline" in r for r in records)
    assert any("SomeOtherPipeline" in r for r in records)


def test_to_returns_self_and_keeps_outputs(generators):
    gen = generators["stable-diffusion"]
    embeds = gen.encode_text(["x"])
    before = as_array(gen.generate(embeds, generator=seeded(0)))
    assert gen.to("cpu", torch.float32) is gen
    assert gen.device.type == "cpu" and gen.dtype == torch.float32
    assert np.array_equal(before, as_array(gen.generate(embeds, generator=seeded(0))))


def test_load_in_another_dtype(saved):
    loaded = build_generator("stable-diffusion", path=saved["stable-diffusion"], torch_dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16 and loaded.pipeline.unet.dtype == torch.bfloat16
    embeds = torch.zeros(1, *loaded.condition_shape)  # float32 embeddings are cast to the model's dtype
    (image,) = loaded.generate(embeds, generator=seeded(0))
    assert image.size == (64, 64)
