"""AudioLDM 2 (tiny, random): its two tensors read from the configs, folders whose conditioning cannot be read,
the pipeline's own encoding of a caption and of its unconditional input, and transformers 5's GPT2Model."""

import json

import numpy as np
import pytest
import torch

from anygen.errors import SpecError, WeightsError
from anygen.generators import build_generator
from anygen.generators.shapes import layout_from_config, layout_from_folder

# The tests call the pipeline's encode_prompt themselves: transformers 5 warns on each GPT-2 call there.
pytestmark = pytest.mark.filterwarnings("ignore:.*past_key_values.* is deprecated:FutureWarning")
CPU = torch.device("cpu")
# Longer than the tiny tokenizers' 16 tokens: the pipeline's own encoding of it is then 16 T5 tokens, the layout's.
LONG = "a dog barks twice while rain falls on a tin roof"


@pytest.fixture(scope="module")
def gen():
    return build_generator("audioldm2", config={}, seed=0)


@pytest.fixture(scope="module")
def folder(gen, tmp_path_factory):
    root = tmp_path_factory.mktemp("audioldm2") / "g"
    gen.save_pretrained(root)
    return root


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "g")


def _edit(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_the_layout_is_a_t5_sequence_and_the_gpt2_states(gen):
    assert gen.layout.names == ("prompt_embeds", "generated_prompt_embeds")
    # T5 d_model 32 over tokenizer_2's 16 tokens; GPT-2 n_embd 16 over its config's max_new_tokens 8
    assert gen.layout["prompt_embeds"].shape == (16, 32)
    assert gen.layout["generated_prompt_embeds"].shape == (8, 16)
    assert gen.pipeline.tokenizer_2.model_max_length == 16
    assert gen.pipeline.language_model.config.max_new_tokens == 8
    assert gen.layout.shape == (1, 16 * 32 + 8 * 16)
    assert layout_from_config("audioldm2", {}) == gen.layout


def test_the_architecture_knobs_size_the_layout_and_travel_with_the_folder(tmp_path):
    config = {"max_new_tokens": 4, "max_sequence_length": 6, "text_width": 24}
    small = build_generator("audioldm2", config=config, seed=0)
    assert small.layout["prompt_embeds"].shape == (6, 24)
    assert small.layout["generated_prompt_embeds"].shape == (4, 16)
    assert layout_from_config("audioldm2", config) == small.layout
    cond = small.encode_conditioning([LONG, "hi"])
    assert tuple(cond["prompt_embeds"].shape) == (2, 6, 24)
    assert tuple(cond["generated_prompt_embeds"].shape) == (2, 4, 16)
    small.save_pretrained(tmp_path / "g")
    sidecar = json.loads((tmp_path / "g" / "anygen_generator.json").read_text())
    assert sidecar["architecture"] == {"max_new_tokens": 4, "max_sequence_length": 6}
    assert layout_from_folder("audioldm2", tmp_path / "g") == small.layout
    with pytest.raises(SpecError, match=r"max_new_tokens: expected an integer >= 1 .*got 0"):
        build_generator("audioldm2", config={"max_new_tokens": 0}, seed=0)


def test_a_caption_is_encoded_as_the_pipeline_encodes_it(gen):
    """A caption as long as the layout: the pipeline's own conditional encoding is the layout's shape, and ours is
    the same; a shorter one is padded (its encoding does not depend on the batch it comes in)."""
    pipe = gen.pipeline
    with torch.no_grad():
        embeds, mask, generated = pipe.encode_prompt([LONG], CPU, 1, False)
    assert tuple(embeds.shape[1:]) == gen.layout["prompt_embeds"].shape and bool(mask.all())
    mine = gen.encode_conditioning([LONG])
    torch.testing.assert_close(mine["prompt_embeds"], embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(mine["generated_prompt_embeds"], generated, rtol=0, atol=1e-5)
    alone = gen.encode_conditioning(["hi"])
    together = gen.encode_conditioning([LONG, "hi"])
    for name in gen.layout.names:
        torch.testing.assert_close(together[name][1:], alone[name], rtol=0, atol=1e-5)
    # T5's states of the caption's own tokens are the pipeline's unpadded ones
    with torch.no_grad():
        short, _, _ = pipe.encode_prompt(["hi"], CPU, 1, False)
    torch.testing.assert_close(alone["prompt_embeds"][:, : short.shape[1]], short, rtol=0, atol=1e-5)
    assert short.shape[1] < gen.layout["prompt_embeds"].tokens


def test_the_unconditional_input_is_the_pipelines_own(gen):
    """AudioLDM2Pipeline's rule with guidance and no negative prompt: "" through CLAP, T5 (padded to the
    conditional input's length) and the GPT-2; not zeros."""
    empty = gen.layout.unpack(gen._empty_prompt_embeds(CPU, torch.float32))
    with torch.no_grad():
        embeds, mask, generated = gen.pipeline.encode_prompt([LONG], CPU, 1, True)
    assert mask[0].sum() < mask.shape[1]  # the pipeline's own negative: "" padded to the conditional's length
    torch.testing.assert_close(empty["prompt_embeds"], embeds[:1], rtol=0, atol=1e-5)
    torch.testing.assert_close(empty["generated_prompt_embeds"], generated[:1], rtol=0, atol=1e-5)
    assert all(torch.count_nonzero(v) > 0 for v in empty.values())
    encoded = gen.encode_conditioning([""])
    for name in gen.layout.names:
        torch.testing.assert_close(encoded[name], empty[name], rtol=0, atol=1e-5)


def test_guidance_uses_the_unconditional_input(gen):
    cond = gen.encode_conditioning(["rain"])
    plain = gen.generate(cond, guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    guided = gen.generate(cond, guidance_scale=3.5, generator=torch.Generator().manual_seed(0))
    own = gen.generate(
        cond,
        negative_prompt_embeds=gen.encode_conditioning([""]),
        guidance_scale=3.5,
        generator=torch.Generator().manual_seed(0),
    )
    assert not np.array_equal(plain[0].waveform, guided[0].waveform)
    np.testing.assert_allclose(guided[0].waveform, own[0].waveform, rtol=0, atol=1e-6)
    assert guided[0].sample_rate == 16000 and guided[0].waveform.shape == (int(0.32 * 16000),)


@pytest.mark.parametrize(
    "component, match",
    [
        ("text_encoder_2", r"text_encoder_2/config\.json is missing \(needed for d_model\)"),
        ("language_model", r"language_model/config\.json is missing \(needed for n_embd\)"),
    ],
)
def test_a_folder_whose_conditioning_cannot_be_read_names_the_file_and_key(
    folder, tmp_path, component, match
):
    root = _copy(folder, tmp_path)
    (root / component / "config.json").unlink()
    with pytest.raises(WeightsError, match=match):
        layout_from_folder("audioldm2", root)


def test_a_language_model_config_without_max_new_tokens_names_the_key(folder, tmp_path):
    root = _copy(folder, tmp_path)
    (root / "anygen_generator.json").unlink()  # no architecture knob: the config's value is needed
    path = root / "language_model" / "config.json"
    data = json.loads(path.read_text())
    del data["max_new_tokens"]
    path.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match=r"language_model/config\.json does not say max_new_tokens"):
        layout_from_folder("audioldm2", root)


@pytest.mark.parametrize(
    "component, changes, match",
    [
        (
            "unet",
            {"cross_attention_dim": [[None, 16, 48], [None, 16, 48]]},
            r"the T5 encoder gives prompt_embeds width 32 but unet/config\.json expects cross_attention_dim 48",
        ),
        (
            "unet",
            {"cross_attention_dim": [[None, 12, 32], [None, 12, 32]]},
            r"language model gives generated_prompt_embeds width 16 but unet/config\.json expects "
            r"cross_attention_dim 12",
        ),
        (
            "projection_model",
            {"text_encoder_1_dim": 64},
            r"text_encoder_2/config\.json d_model \(T5\) is 32 but projection_model/config\.json expects "
            r"text_encoder_1_dim 64",
        ),
        (
            "language_model",
            {"n_positions": 20},
            r"language_model/config\.json has n_positions 20, fewer than the 29",
        ),
        ("text_encoder_2", {"model_type": "vits"}, r"VITS model .* only the T5 text-to-audio variants"),
    ],
)
def test_configs_that_disagree_name_both_numbers(folder, tmp_path, component, changes, match):
    root = _copy(folder, tmp_path)
    _edit(root / component / "config.json", **changes)
    with pytest.raises(WeightsError, match=match):
        layout_from_folder("audioldm2", root)


def test_a_tokenizer_without_a_length_asks_for_max_sequence_length(folder, tmp_path):
    root = _copy(folder, tmp_path)
    _edit(root / "tokenizer_2" / "tokenizer_config.json", model_max_length=int(1e30))
    with pytest.raises(
        WeightsError, match=r"tokenizer_2/tokenizer_config\.json says model_max_length .*max_sequence_length"
    ):
        layout_from_folder("audioldm2", root)
    _edit(root / "anygen_generator.json", architecture={"max_sequence_length": 12})
    assert layout_from_folder("audioldm2", root)["prompt_embeds"].shape == (12, 32)


def test_a_gpt2model_language_model_is_wrapped_with_the_same_states(gen):
    """transformers 5's GPT2Model has no generation helpers (the pipeline calls them): a folder that ships one
    (as the published checkpoints' model_index.json may) is wrapped, its weights shared, its states the same."""
    from transformers import GPT2LMHeadModel, GPT2Model

    from anygen.generators._pipelines import pipeline_class

    bare = gen.pipeline.language_model.transformer
    assert isinstance(bare, GPT2Model) and not hasattr(bare, "_update_model_kwargs_for_generation")
    components = {**gen.pipeline.components, "language_model": bare}
    other = type(gen)(pipeline_class("audioldm2")(**components), max_new_tokens=8)
    assert isinstance(other.pipeline.language_model, GPT2LMHeadModel)
    assert other.pipeline.language_model.transformer is bare
    assert other.pipeline.config.language_model[1] == "GPT2LMHeadModel"
    mine, theirs = gen.encode_conditioning([LONG]), other.encode_conditioning([LONG])
    for name in gen.layout.names:
        torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=0)
