"""Stable Diffusion 3 (``stable-diffusion-3``): its two tensors read from the configs, the folder errors naming the
file and key, T5 left out (zeros, as the pipeline does), and guidance's unconditional input as the pipeline's own."""

import json

import numpy as np
import pytest
import torch

from anygen.errors import SpecError, WeightsError
from anygen.generators import build_generator
from anygen.generators.modern_sd3 import StableDiffusion3Generator
from anygen.generators.shapes import layout_from_config, layout_from_folder

TYPE = "stable-diffusion-3"


@pytest.fixture(scope="module")
def gen():
    return build_generator(TYPE, config={}, seed=0)


@pytest.fixture(scope="module")
def folder(gen, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3") / "g"
    gen.save_pretrained(root)
    return root


def _write(root, component, file_name, data):
    (root / component).mkdir(parents=True, exist_ok=True)
    (root / component / file_name).write_text(json.dumps(data))


def _sd3_medium_configs(root, t5=True):
    """The conditioning-relevant keys of stabilityai/stable-diffusion-3-medium-diffusers' configs (no weights)."""
    index = {"_class_name": "StableDiffusion3Pipeline"}
    if not t5:
        index.update(text_encoder_3=[None, None], tokenizer_3=[None, None])
    _write(root, ".", "model_index.json", index)
    clip = {"architectures": ["CLIPTextModelWithProjection"], "max_position_embeddings": 77}
    _write(root, "text_encoder", "config.json", {**clip, "hidden_size": 768, "projection_dim": 768})
    _write(root, "text_encoder_2", "config.json", {**clip, "hidden_size": 1280, "projection_dim": 1280})
    if t5:
        _write(root, "text_encoder_3", "config.json", {"d_model": 4096})
    _write(root, "tokenizer", "tokenizer_config.json", {"model_max_length": 77})
    _write(
        root,
        "transformer",
        "config.json",
        {"joint_attention_dim": 4096, "pooled_projection_dim": 2048, "caption_projection_dim": 1536},
    )


def test_the_tiny_layout_is_the_pipelines_encoding(gen):
    assert gen.layout.names == ("prompt_embeds", "pooled_prompt_embeds")
    # 77 CLIP tokens + max_sequence_length 16 T5 tokens, T5's width 32; both CLIP projections: 16 + 16.
    assert gen.layout["prompt_embeds"].shape == (93, 32)
    assert gen.layout["pooled_prompt_embeds"].shape == (32,)
    assert layout_from_config(TYPE, {}) == gen.layout
    assert layout_from_config(TYPE, {"max_sequence_length": 8})["prompt_embeds"].shape == (85, 32)
    cond = gen.encode_conditioning(["a red circle"])
    clip_rows, t5_rows = cond["prompt_embeds"][0, :77], cond["prompt_embeds"][0, 77:]
    # The two CLIPs side by side (16 + 16) fill the width here; their rows come first, T5's after.
    p = gen.pipeline
    clip_1, _ = p._get_clip_prompt_embeds(["a red circle"], device=torch.device("cpu"), clip_model_index=0)
    t5 = p._get_t5_prompt_embeds(["a red circle"], max_sequence_length=16, device=torch.device("cpu"))
    torch.testing.assert_close(clip_rows[:, :16], clip_1[0])
    torch.testing.assert_close(t5_rows, t5[0])


def test_a_wider_t5_pads_the_clip_rows_with_zeros():
    gen = build_generator(TYPE, config={"t5_width": 48, "max_sequence_length": 4}, seed=0)
    assert gen.layout["prompt_embeds"].shape == (81, 48)
    embeds = gen.encode_conditioning(["x"])["prompt_embeds"][0]
    assert torch.count_nonzero(embeds[:77, 32:]) == 0 and torch.count_nonzero(embeds[:77, :32]) > 0
    assert torch.count_nonzero(embeds[77:, 32:]) > 0


def test_the_real_layout_comes_from_the_configs(tmp_path):
    _sd3_medium_configs(tmp_path / "m")
    layout = layout_from_folder(TYPE, tmp_path / "m")
    assert layout["prompt_embeds"].shape == (77 + 256, 4096)  # max_sequence_length defaults to 256
    assert layout["pooled_prompt_embeds"].shape == (768 + 1280,)
    (tmp_path / "m" / "anygen_generator.json").write_text(
        json.dumps({"type": TYPE, "architecture": {"max_sequence_length": 77}})
    )
    assert layout_from_folder(TYPE, tmp_path / "m")["prompt_embeds"].shape == (77 + 77, 4096)
    (tmp_path / "m" / "anygen_generator.json").write_text(
        json.dumps({"type": TYPE, "architecture": {"max_sequence_length": 600}})
    )
    with pytest.raises(WeightsError, match=r"architecture\.max_sequence_length: .* 1 to 512 .*got 600"):
        layout_from_folder(TYPE, tmp_path / "m")
    # Without T5 the pipeline feeds zeros of the transformer's joint_attention_dim: the same layout.
    _sd3_medium_configs(tmp_path / "no-t5", t5=False)
    assert layout_from_folder(TYPE, tmp_path / "no-t5") == layout


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda r: (r / "text_encoder_3" / "config.json").unlink(),
            r"text_encoder_3/config\.json is missing \(needed for d_model\)",
        ),
        (
            lambda r: _write(r, "text_encoder", "config.json", {"hidden_size": 768}),
            r"text_encoder/config\.json does not say projection_dim",
        ),
        (
            lambda r: (r / "tokenizer" / "tokenizer_config.json").unlink(),
            r"tokenizer/tokenizer_config\.json is missing \(needed for model_max_length\)",
        ),
        (
            lambda r: _write(r, "tokenizer", "tokenizer_config.json", {"model_max_length": int(1e30)}),
            r"model_max_length 1000000000000000019884624838656, but text_encoder/config\.json has "
            r"max_position_embeddings 77",
        ),
        (
            lambda r: _write(r, "transformer", "config.json", {"joint_attention_dim": 2048}),
            r"gives width 4096 but transformer/config\.json expects joint_attention_dim 2048",
        ),
        (
            lambda r: _write(r, "transformer", "config.json", {"pooled_projection_dim": 1280}),
            r"projections give 768 \+ 1280 but transformer/config\.json expects pooled_projection_dim 1280",
        ),
        (
            lambda r: (
                _write(r, "text_encoder_3", "config.json", {"d_model": 1024}),
                _write(r, "transformer", "config.json", {"joint_attention_dim": 1024}),
            ),
            r"CLIP encoders give width 768 \+ 1280, wider than T5's 1024",
        ),
    ],
)
def test_a_folder_whose_conditioning_cannot_be_read_names_the_file_and_key(tmp_path, edit, match):
    root = tmp_path / "m"
    _sd3_medium_configs(root)
    layout_from_folder(TYPE, root)  # readable before the edit
    edit(root)
    with pytest.raises(WeightsError, match=match):
        layout_from_folder(TYPE, root)


def test_without_t5_only_the_transformer_can_say_the_width(tmp_path):
    _sd3_medium_configs(tmp_path / "m", t5=False)
    (tmp_path / "m" / "transformer" / "config.json").unlink()
    with pytest.raises(
        WeightsError, match=r"transformer/config\.json is missing \(needed for joint_attention_dim\)"
    ):
        layout_from_folder(TYPE, tmp_path / "m")


def test_the_unconditional_input_is_the_pipelines_own(gen):
    empty = gen.layout.unpack(gen._empty_prompt_embeds(torch.device("cpu"), torch.float32))
    # SD3's rule: the negative prompt "" through all three encoders (no force_zeros_for_empty_prompt as SDXL).
    assert "force_zeros_for_empty_prompt" not in gen.pipeline.config
    want = gen.encode_conditioning([""])
    for name in gen.layout.names:
        torch.testing.assert_close(empty[name], want[name])
        assert torch.count_nonzero(empty[name]) > 0
    # With guidance, generate() gives what the pipeline makes when it builds its negative itself.
    cond = gen.encode_conditioning(["a red circle"])
    ours = gen.generate(cond, guidance_scale=5.0, generator=torch.Generator().manual_seed(3))
    theirs = gen.pipeline(
        prompt_embeds=cond["prompt_embeds"],
        pooled_prompt_embeds=cond["pooled_prompt_embeds"],
        guidance_scale=5.0,
        num_inference_steps=gen.defaults.num_inference_steps,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
        max_sequence_length=gen.max_sequence_length,
    ).images
    np.testing.assert_array_equal(
        np.asarray(ours[0]), np.asarray(gen.pipeline.image_processor.numpy_to_pil(theirs)[0])
    )
    unguided = gen.generate(cond, guidance_scale=1.0, generator=torch.Generator().manual_seed(3))
    assert not np.array_equal(np.asarray(ours[0]), np.asarray(unguided[0]))


def test_without_t5_the_pipeline_uses_zeros_and_the_folder_loads(gen, tmp_path):
    no_t5 = build_generator(TYPE, config={"t5": False}, seed=0)
    assert no_t5.pipeline.text_encoder_3 is None
    assert no_t5.layout == gen.layout
    cond = no_t5.encode_conditioning(["a red circle"])
    assert torch.count_nonzero(cond["prompt_embeds"][:, 77:]) == 0  # T5's rows: zeros, as the pipeline makes
    assert torch.count_nonzero(cond["prompt_embeds"][:, :77]) > 0
    empty = no_t5.layout.unpack(no_t5._empty_prompt_embeds(torch.device("cpu"), torch.float32))
    assert torch.count_nonzero(empty["prompt_embeds"][:, 77:]) == 0
    assert torch.count_nonzero(empty["prompt_embeds"][:, :77]) > 0
    no_t5.save_pretrained(tmp_path / "g")
    assert not (tmp_path / "g" / "text_encoder_3").exists()
    assert layout_from_folder(TYPE, tmp_path / "g") == no_t5.layout
    again = StableDiffusion3Generator.from_pretrained(tmp_path / "g")
    assert again.pipeline.text_encoder_3 is None
    kw = dict(generator=torch.Generator().manual_seed(0))
    first = no_t5.generate(cond, **kw)
    kw = dict(generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(np.asarray(first[0]), np.asarray(again.generate(cond, **kw)[0]))


def test_a_folder_with_t5_still_needs_its_files(folder, tmp_path):
    import shutil

    root = tmp_path / "g"
    shutil.copytree(folder, root)
    shutil.rmtree(root / "tokenizer_3")
    with pytest.raises(WeightsError, match=r"missing: tokenizer_3/tokenizer_config\.json"):
        StableDiffusion3Generator.from_pretrained(root)


@pytest.mark.parametrize(
    "config, match",
    [
        ({"max_sequence_length": 513}, r"max_sequence_length: expected an integer from 1 to 512"),
        ({"text_width": 32, "t5_width": 32}, r"t5_width \(32\) must be at least 2 x text_width \(64\)"),
        ({"clip_skip": 1}, r"unknown knob\(s\) clip_skip"),
    ],
)
def test_bad_tiny_configs_name_the_knob(config, match):
    with pytest.raises(SpecError, match=match):
        build_generator(TYPE, config=config, seed=0)
