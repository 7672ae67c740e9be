"""FLUX.1 (``flux``) and Wan (``wan``): their tensors read from the configs, the folder errors naming the file and
key, and guidance as each pipeline does it (FLUX: distilled guidance, no unconditional branch unless true CFG; Wan:
the pipeline's own UMT5 of "")."""

import json

import numpy as np
import pytest
import torch

from anygen.errors import OptionError, SpecError, WeightsError
from anygen.generators import build_generator
from anygen.generators.shapes import layout_from_config, layout_from_folder

CPU = torch.device("cpu")


def _write(root, component, file_name, data):
    (root / component).mkdir(parents=True, exist_ok=True)
    (root / component / file_name).write_text(json.dumps(data))


def _seed(n=3):
    return torch.Generator().manual_seed(n)


# -- FLUX.1 -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flux():
    return build_generator("flux", config={}, seed=0)


@pytest.fixture(scope="module")
def schnell():
    return build_generator("flux", config={"guidance_embeds": False}, seed=0)


def _flux_dev_configs(root):
    """The conditioning-relevant keys of black-forest-labs/FLUX.1-dev's configs (no weights)."""
    _write(root, ".", "model_index.json", {"_class_name": "FluxPipeline"})
    _write(root, "text_encoder", "config.json", {"architectures": ["CLIPTextModel"], "hidden_size": 768})
    _write(root, "text_encoder_2", "config.json", {"architectures": ["T5EncoderModel"], "d_model": 4096})
    _write(
        root,
        "transformer",
        "config.json",
        {
            "joint_attention_dim": 4096,
            "pooled_projection_dim": 768,
            "guidance_embeds": True,
            "in_channels": 64,
        },
    )


def test_flux_tiny_layout_is_the_pipelines_encoding(flux):
    assert flux.layout.names == ("prompt_embeds", "pooled_prompt_embeds")  # text_ids: not conditioning
    assert flux.layout["prompt_embeds"].shape == (16, 32)  # max_sequence_length T5 tokens, T5 d_model
    assert flux.layout["pooled_prompt_embeds"].shape == (16,)  # the CLIP text model's hidden size
    assert layout_from_config("flux", {}) == flux.layout
    assert layout_from_config("flux", {"max_sequence_length": 8})["prompt_embeds"].shape == (8, 32)
    cond = flux.encode_conditioning(["a red circle"])
    t5 = flux.pipeline._get_t5_prompt_embeds(["a red circle"], max_sequence_length=16, device=CPU)
    pooled = flux.pipeline._get_clip_prompt_embeds(["a red circle"], device=CPU)
    torch.testing.assert_close(cond["prompt_embeds"], t5)
    torch.testing.assert_close(cond["pooled_prompt_embeds"], pooled)


def test_flux_real_layout_comes_from_the_configs(tmp_path):
    _flux_dev_configs(tmp_path / "m")
    layout = layout_from_folder("flux", tmp_path / "m")
    assert layout["prompt_embeds"].shape == (512, 4096)  # max_sequence_length defaults to the pipeline's 512
    assert layout["pooled_prompt_embeds"].shape == (768,)
    sidecar = tmp_path / "m" / "anygen_generator.json"
    sidecar.write_text(
        json.dumps({"type": "flux", "architecture": {"max_sequence_length": 256}})
    )  # schnell's
    assert layout_from_folder("flux", tmp_path / "m")["prompt_embeds"].shape == (256, 4096)
    sidecar.write_text(json.dumps({"type": "flux", "architecture": {"max_sequence_length": 600}}))
    with pytest.raises(WeightsError, match=r"architecture: max_sequence_length: .*1 to 512.*got 600"):
        layout_from_folder("flux", tmp_path / "m")


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda r: (r / "text_encoder_2" / "config.json").unlink(),
            r"text_encoder_2/config\.json is missing \(needed for d_model\)",
        ),
        (
            lambda r: _write(r, "text_encoder", "config.json", {"projection_dim": 768}),
            r"text_encoder/config\.json does not say hidden_size",
        ),
        (
            lambda r: _write(r, "text_encoder_2", "config.json", {"d_model": "4096"}),
            r"text_encoder_2/config\.json says d_model '4096'; expected a positive integer",
        ),
        (
            lambda r: _write(r, "transformer", "config.json", {"joint_attention_dim": 2048}),
            r"gives width 4096 \(text_encoder_2/config\.json d_model\) but transformer/config\.json expects "
            r"joint_attention_dim 2048",
        ),
        (
            lambda r: _write(r, "transformer", "config.json", {"pooled_projection_dim": 1280}),
            r"pooled output is 768 wide \(text_encoder/config\.json hidden_size\) but transformer/config\.json "
            r"expects pooled_projection_dim 1280",
        ),
    ],
)
def test_flux_folder_whose_conditioning_cannot_be_read_names_the_file_and_key(tmp_path, edit, match):
    root = tmp_path / "m"
    _flux_dev_configs(root)
    layout_from_folder("flux", root)  # readable before the edit
    edit(root)
    with pytest.raises(WeightsError, match=match):
        layout_from_folder("flux", root)


def _flux_pipeline_images(gen, cond, **call):
    out = gen.pipeline(
        prompt_embeds=cond["prompt_embeds"],
        pooled_prompt_embeds=cond["pooled_prompt_embeds"],
        num_inference_steps=gen.defaults.num_inference_steps,
        height=gen.defaults.height,
        width=gen.defaults.width,
        generator=_seed(),
        output_type="np",
        max_sequence_length=gen.max_sequence_length,
        **call,
    ).images
    return np.asarray(gen.pipeline.image_processor.numpy_to_pil(out)[0])


def test_flux_distilled_guidance_has_no_unconditional_input(flux, schnell):
    """guidance_scale feeds FLUX.1-dev's guidance embedding, never a negative branch; schnell ignores it."""
    assert flux.guidance_embeds and not schnell.guidance_embeds
    cond = flux.encode_conditioning(["a red circle"])
    flux._empty_cache.clear()
    ours = np.asarray(flux.generate(cond, guidance_scale=5.0, generator=_seed())[0])
    assert not flux._empty_cache  # no unconditional input was made: the pipeline runs none
    np.testing.assert_array_equal(ours, _flux_pipeline_images(flux, cond, guidance_scale=5.0))
    other = np.asarray(flux.generate(cond, guidance_scale=1.0, generator=_seed())[0])
    assert not np.array_equal(ours, other)  # the guidance value reaches FLUX.1-dev's transformer
    cond = schnell.encode_conditioning(["a red circle"])
    at_0 = np.asarray(schnell.generate(cond, guidance_scale=0.0, generator=_seed())[0])
    at_5 = np.asarray(schnell.generate(cond, guidance_scale=5.0, generator=_seed())[0])
    np.testing.assert_array_equal(at_0, at_5)  # no guidance embedding: the pipeline ignores it
    assert not schnell._empty_cache


def test_flux_true_cfg_uses_the_pipelines_empty_negative(flux, schnell):
    empty = flux.layout.unpack(flux._empty_prompt_embeds(CPU, torch.float32))
    want = flux.encode_conditioning([""])  # the pipeline's encode_prompt of negative_prompt="": no zeros rule
    for name in flux.layout.names:
        torch.testing.assert_close(empty[name], want[name])
        assert torch.count_nonzero(empty[name]) > 0
    cond = flux.encode_conditioning(["a red circle"])
    ours = np.asarray(flux.generate(cond, true_cfg_scale=2.0, generator=_seed())[0])
    theirs = _flux_pipeline_images(flux, cond, guidance_scale=3.5, true_cfg_scale=2.0, negative_prompt="")
    np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(ours, np.asarray(flux.generate(cond, generator=_seed())[0]))
    # A given negative is used for true CFG whatever the distilled guidance_scale (schnell runs at 0).
    cond = schnell.encode_conditioning(["a red circle"])
    negative = schnell.encode_conditioning(["blurry"])
    kw = dict(negative_prompt_embeds=negative, guidance_scale=0.0, true_cfg_scale=2.0)
    ours = np.asarray(schnell.generate(cond, **kw, generator=_seed())[0])
    theirs = _flux_pipeline_images(
        schnell,
        cond,
        guidance_scale=0.0,
        true_cfg_scale=2.0,
        negative_prompt_embeds=negative["prompt_embeds"],
        negative_pooled_prompt_embeds=negative["pooled_prompt_embeds"],
    )
    np.testing.assert_array_equal(ours, theirs)
    ignored = np.asarray(schnell.generate(cond, negative_prompt_embeds=negative, generator=_seed())[0])
    np.testing.assert_array_equal(ignored, _flux_pipeline_images(schnell, cond))  # true_cfg_scale 1: unused


@pytest.mark.parametrize(
    "config, match",
    [
        ({"max_sequence_length": 513}, r"max_sequence_length: expected an integer from 1 to 512"),
        ({"guidance_embeds": "yes"}, r"guidance_embeds: expected true or false, got 'yes'"),
        ({"clip_skip": 1}, r"unknown knob\(s\) clip_skip"),
    ],
)
def test_flux_bad_tiny_configs_name_the_knob(config, match):
    with pytest.raises(SpecError, match=match):
        build_generator("flux", config=config, seed=0)


# -- Wan ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wan():
    return build_generator("wan", config={}, seed=0)


def _wan_21_configs(root):
    """The conditioning-relevant keys of Wan-AI/Wan2.1-T2V-1.3B-Diffusers' configs (no weights)."""
    _write(root, ".", "model_index.json", {"_class_name": "WanPipeline"})
    _write(root, "text_encoder", "config.json", {"architectures": ["UMT5EncoderModel"], "d_model": 4096})
    _write(root, "transformer", "config.json", {"text_dim": 4096, "patch_size": [1, 2, 2]})


def test_wan_tiny_layout_is_the_pipelines_encoding(wan):
    from transformers import UMT5EncoderModel

    assert isinstance(wan.pipeline.text_encoder, UMT5EncoderModel)  # Wan's own text encoder class, tiny
    assert wan.layout.names == ("prompt_embeds",) and not wan.layout.packed
    assert wan.layout["prompt_embeds"].shape == (16, 32)
    assert layout_from_config("wan", {}) == wan.layout
    assert layout_from_config("wan", {"max_sequence_length": 8, "text_width": 24}).shape == (8, 24)
    embeds = wan.encode_conditioning(["a red circle"])["prompt_embeds"]
    tokens = int(wan.pipeline.tokenizer(["a red circle"], return_tensors="pt").attention_mask.sum())
    assert 1 < tokens < 16
    torch.testing.assert_close(
        embeds, wan.pipeline._get_t5_prompt_embeds(["a red circle"], max_sequence_length=16, device=CPU)
    )
    assert torch.count_nonzero(embeds[0, tokens:]) == 0 and torch.count_nonzero(embeds[0, :tokens]) > 0


def test_wan_real_layout_comes_from_the_configs(tmp_path):
    _wan_21_configs(tmp_path / "m")
    assert layout_from_folder("wan", tmp_path / "m")["prompt_embeds"].shape == (512, 4096)
    (tmp_path / "m" / "anygen_generator.json").write_text(
        json.dumps({"type": "wan", "architecture": {"max_sequence_length": 226}})
    )
    assert layout_from_folder("wan", tmp_path / "m")["prompt_embeds"].shape == (226, 4096)


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda r: (r / "text_encoder" / "config.json").unlink(),
            r"text_encoder/config\.json is missing \(needed for d_model\)",
        ),
        (
            lambda r: _write(r, "text_encoder", "config.json", {"hidden_size": 4096}),
            r"text_encoder/config\.json does not say d_model",
        ),
        (
            lambda r: _write(r, "transformer", "config.json", {"text_dim": 2048}),
            r"UMT5 encoder gives width 4096 \(text_encoder/config\.json d_model\) but transformer/config\.json "
            r"expects text_dim 2048",
        ),
        (
            lambda r: _write(r, "transformer_2", "config.json", {"text_dim": 1024}),
            r"but transformer_2/config\.json expects text_dim 1024",
        ),
    ],
)
def test_wan_folder_whose_conditioning_cannot_be_read_names_the_file_and_key(tmp_path, edit, match):
    root = tmp_path / "m"
    _wan_21_configs(root)
    layout_from_folder("wan", root)
    edit(root)
    with pytest.raises(WeightsError, match=match):
        layout_from_folder("wan", root)


def test_wan_unconditional_input_is_the_pipelines_own(wan):
    empty = wan._empty_prompt_embeds(CPU, torch.float32)
    torch.testing.assert_close(empty, wan.encode_conditioning([""])["prompt_embeds"])
    # UMT5 of "" is one token (</s>); the pipeline zeroes the rows after it.
    assert torch.count_nonzero(empty[0, 0]) > 0 and torch.count_nonzero(empty[0, 1:]) == 0
    cond = wan.encode_conditioning(["a red circle"])
    ours = wan.generate(cond, guidance_scale=5.0, generator=_seed())[0].frames
    theirs = wan.pipeline(  # the pipeline builds its own negative (negative_prompt None -> "")
        prompt_embeds=cond["prompt_embeds"],
        guidance_scale=5.0,
        num_inference_steps=wan.defaults.num_inference_steps,
        height=wan.defaults.height,
        width=wan.defaults.width,
        num_frames=wan.defaults.num_frames,
        generator=_seed(),
        output_type="np",
        max_sequence_length=wan.max_sequence_length,
    ).frames[0]
    np.testing.assert_array_equal(ours, (np.clip(theirs, 0, 1) * 255).round().astype(np.uint8))
    unguided = wan.generate(cond, guidance_scale=1.0, generator=_seed())[0].frames
    assert not np.array_equal(ours, unguided)


@pytest.mark.parametrize(
    "options, fields",
    [
        ({"num_frames": 10}, ["num_frames"]),
        ({"height": 24}, ["height"]),
        ({"width": 8, "num_frames": 4}, ["width", "num_frames"]),
    ],
)
def test_wan_sizes_it_cannot_make_name_the_option(wan, options, fields):
    cond = wan.encode_conditioning(["x"])
    with pytest.raises(OptionError) as err:
        wan.generate(cond, **options)
    assert err.value.fields == fields
    if "num_frames" in fields:
        assert "4k + 1" in str(err.value)
