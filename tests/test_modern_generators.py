"""Newer diffusers generators (SDXL, PixArt-Σ, CogVideoX), tiny and random: conditioning read from configs,
several conditioning tensors through one projector, end to end, a stage-2 step, save/load, spec errors."""

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from anygen import AnyToAnyPipeline
from anygen.errors import AnyGenError, SpecError, WeightsError
from anygen.generators import build_generator
from anygen.generators.conditioning import ConditioningLayout, ConditionTensor
from anygen.generators.shapes import layout_from_folder
from anygen.spec import PipelineSpec, bundled_pipelines
from anygen.train import train
from anygen.train.losses import alignment_loss

FAMILIES = [("stable-diffusion-xl", "image"), ("pixart-sigma", "image"), ("cogvideox", "video"), ("stable-audio", "audio"), ("ltx-video", "video"), ("stable-diffusion-3", "image"), ("audioldm2", "audio"), ("flux", "image"), ("wan", "video")]
QUIET = dict(progress=False, verbose=False, tensorboard=False)


def _spec_data(type_name: str, modality: str, projector: dict | None = None) -> dict:
    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    data["outputs"][modality]["generator"] = {
        "type": type_name,
        "config": {},
        "seed": 5,
        "defaults": {"num_inference_steps": 2},
    }
    if projector is not None:
        data["outputs"][modality]["projector"].update(projector)
    return data


def _pipe(type_name: str, modality: str) -> AnyToAnyPipeline:
    pipe = AnyToAnyPipeline(PipelineSpec.from_dict(_spec_data(type_name, modality)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _media(out, modality):
    return _as_array(getattr(out, modality + "s")[0])


@pytest.mark.parametrize("type_name, modality", FAMILIES)
def test_conditioning_comes_from_the_configs_and_drives_the_pipeline(type_name, modality, tmp_path):
    gen = build_generator(type_name, config={}, seed=0)
    cond = gen.encode_conditioning(["a red circle", "a blue square"])
    assert list(cond) == list(gen.layout.names)
    for t in gen.layout.tensors:
        assert tuple(cond[t.name].shape) == (2, *t.shape)
    # The same layout from the saved folder's configs alone (no weights read), and from the tiny config.
    gen.save_pretrained(tmp_path / "g")
    assert layout_from_folder(type_name, tmp_path / "g") == gen.layout
    made = gen.generate(cond, generator=torch.Generator().manual_seed(0))
    packed = gen.generate(gen.layout.pack(cond), generator=torch.Generator().manual_seed(0))
    assert len(made) == 2
    np.testing.assert_array_equal(_as_array(made[0]), _as_array(packed[0]))
    other = gen.generate(
        gen.encode_conditioning(["a green triangle"]), generator=torch.Generator().manual_seed(0)
    )
    assert not np.array_equal(_as_array(made[0]), _as_array(other[0]))  # the conditioning reaches the model


def _as_array(item):
    if hasattr(item, "waveform"):  # audio
        return item.waveform
    return np.asarray(item) if not hasattr(item, "frames") else item.frames


def test_sdxl_has_two_tensors_and_its_own_empty_prompt_for_guidance():
    gen = build_generator("stable-diffusion-xl", config={}, seed=0)
    assert gen.layout.names == ("prompt_embeds", "pooled_prompt_embeds")
    assert gen.layout["prompt_embeds"].shape == (77, 32) and gen.layout["pooled_prompt_embeds"].shape == (16,)
    assert gen.pipeline.config.force_zeros_for_empty_prompt
    empty = gen.layout.unpack(gen._empty_prompt_embeds(torch.device("cpu"), torch.float32))
    assert all(torch.count_nonzero(v) == 0 for v in empty.values())  # SDXL's own rule: zeros, not encode("")


@pytest.mark.parametrize("type_name, modality", FAMILIES)
def test_end_to_end_and_save_load_give_identical_media(type_name, modality, tmp_path):
    pipe = _pipe(type_name, modality)
    out = pipe("hi", output_modalities=(modality,), seed=0, max_new_tokens=4)
    assert len(getattr(out, modality + "s")) == 1
    pipe.save_pretrained(tmp_path / "p")
    again = AnyToAnyPipeline.from_pretrained(tmp_path / "p")
    again.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(
        _media(out, modality),
        _media(again("hi", output_modalities=(modality,), seed=0, max_new_tokens=4), modality),
    )


@pytest.mark.parametrize("type_name, modality", FAMILIES)
def test_a_stage2_step_trains_the_projector(type_name, modality, tmp_path, samples):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec_data(type_name, modality)))
    pair = {"image": "cc3m/cc3m.json", "video": "webvid/webvid.json", "audio": "audiocap/audiocap.json"}[modality]
    data = tmp_path / "DATA.yaml"
    data.write_text(f"sets:\n  s: {{path: {samples / 'T_X_pair_data' / pair}, limit: 4}}\n")
    before = AnyToAnyPipeline.from_pretrained(spec).output_projector(modality).state_dict()
    train(
        stage=2,
        pipeline=str(spec),
        data=str(data),
        out=str(tmp_path / "s2"),
        max_steps=2,
        batch_size=2,
        lr=1e-3,
        skip_bad=True,
        **QUIET,
    )
    metrics = [json.loads(line) for line in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(np.isfinite(m["align_loss"]) and m["align_loss"] > 0 for m in metrics)
    after = load_file(tmp_path / "s2" / "outputs" / modality / "projector.safetensors")
    assert set(after) == set(before)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_alignment_loss_sums_the_tensors():
    from anygen.projectors import MultiOutputProjector
    from anygen.train.stages import _alignment

    layout = ConditioningLayout(
        (ConditionTensor("prompt_embeds", (3, 4)), ConditionTensor("pooled_prompt_embeds", (5,)))
    )
    proj = MultiOutputProjector(
        layout, "transformer", 8, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1
    )
    torch.manual_seed(0)
    pred = {"prompt_embeds": torch.randn(2, 3, 4), "pooled_prompt_embeds": torch.randn(2, 5)}
    want = {"prompt_embeds": torch.randn(2, 3, 4), "pooled_prompt_embeds": torch.randn(2, 5)}
    got = _alignment(proj, layout.pack(pred), layout.pack(want), "l2")
    by_hand = alignment_loss(pred["prompt_embeds"], want["prompt_embeds"]) + torch.linalg.vector_norm(
        pred["pooled_prompt_embeds"] - want["pooled_prompt_embeds"], dim=-1
    )
    torch.testing.assert_close(got, by_hand)
    out = proj(torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    assert tuple(out.shape) == (2, 1, 3 * 4 + 5)
    assert {k: tuple(v.shape) for k, v in layout.unpack(out).items()} == {
        "prompt_embeds": (2, 3, 4),
        "pooled_prompt_embeds": (2, 5),
    }


@pytest.mark.parametrize(
    "projector, match",
    [
        (
            {"tensors": {"pooled_prompt_embeds": {"out_dim": 12}}},
            r"outputs\.image\.projector\.tensors\.pooled_prompt_embeds gives 12-wide vectors but outputs\.image\.generator "
            r"\(stable-diffusion-xl\) is conditioned on pooled_prompt_embeds 16 wide",
        ),
        (
            {"tensors": {"prompt_embeds": {"num_queries": 20}}},
            r"tensors\.prompt_embeds gives 20 tokens but outputs\.image\.generator \(stable-diffusion-xl\) is conditioned "
            r"on prompt_embeds of 77 tokens",
        ),
        (
            {"tensors": {"text_embeds": {"out_dim": 4}}},
            r"tensors: text_embeds is not a conditioning tensor of",
        ),
        (
            {"out_dim": 32},
            r"conditioned on several tensors .*declare each head under outputs\.image\.projector\.tensors",
        ),
        ({"type": "linear"}, r"tensors\.prompt_embeds gives 4 tokens .* use type transformer"),
    ],
)
def test_spec_catches_a_multi_tensor_mismatch_before_loading(projector, match):
    with pytest.raises(SpecError, match=match):
        PipelineSpec.from_dict(_spec_data("stable-diffusion-xl", "image", projector))


def test_declared_conditioning_for_weights_not_downloaded_yet(tmp_path):
    data = _spec_data(
        "stable-diffusion-xl", "image", {"tensors": {"pooled_prompt_embeds": {"out_dim": 1280}}}
    )
    data["outputs"]["image"]["generator"] = {
        "type": "stable-diffusion-xl",
        "path": str(tmp_path / "not-yet"),
        "config": {"conditioning": {"prompt_embeds": [77, 2048], "pooled_prompt_embeds": [1280]}},
    }
    spec = PipelineSpec.from_dict(data)  # validates: the heads match the declared tensors
    data["outputs"]["image"]["projector"]["tensors"]["pooled_prompt_embeds"]["out_dim"] = 1024
    with pytest.raises(SpecError, match="pooled_prompt_embeds 1280 wide"):
        PipelineSpec.from_dict(data)
    assert spec.outputs["image"].generator.type == "stable-diffusion-xl"


def test_a_folder_whose_conditioning_cannot_be_read_names_the_part(tmp_path):
    gen = build_generator("stable-diffusion-xl", config={}, seed=0)
    gen.save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "text_encoder_2" / "config.json").unlink()
    with pytest.raises(
        WeightsError, match=r"text_encoder_2/config\.json is missing \(needed for hidden_size\)"
    ):
        layout_from_folder("stable-diffusion-xl", tmp_path / "g")


def test_bad_conditioning_names_the_tensor():
    gen = build_generator("stable-diffusion-xl", config={}, seed=0)
    cond = gen.encode_conditioning(["x"])
    with pytest.raises(AnyGenError, match=r"missing pooled_prompt_embeds"):
        gen.generate({"prompt_embeds": cond["prompt_embeds"]})
    with pytest.raises(AnyGenError, match=r"pooled_prompt_embeds: expected \[B, 16\], got \[1, 8\]"):
        gen.generate({**cond, "pooled_prompt_embeds": torch.zeros(1, 8)})


def test_nextgpt_generators_keep_one_unpacked_tensor():
    spec = copy.deepcopy(yaml.safe_load(bundled_pipelines()["tiny"].read_text()))
    pipe = AnyToAnyPipeline(PipelineSpec.from_dict(spec))
    for modality in ("image", "video", "audio"):
        layout = pipe.generator(modality).layout
        assert not layout.packed and layout.names == ("prompt_embeds",)
        assert layout.shape == pipe.generator(modality).condition_shape


def test_unload_after_use_frees_the_generator_and_changes_nothing_else():
    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    data["outputs"]["image"]["generator"]["unload_after_use"] = True
    pipe = AnyToAnyPipeline(PipelineSpec.from_dict(data))
    keep = AnyToAnyPipeline.from_pretrained("tiny")
    for p in (pipe, keep):
        p.set_progress_bar_config(disable=True)
    kw = dict(output_modalities=("image",), seed=0, max_new_tokens=4)
    first = pipe("hi", **kw)
    assert "generator:image" not in pipe.loaded_components and "llm" in pipe.loaded_components
    again = pipe("hi", **kw)  # rebuilt from the same seed: the same image
    np.testing.assert_array_equal(_media(first, "image"), _media(again, "image"))
    np.testing.assert_array_equal(_media(first, "image"), _media(keep("hi", **kw), "image"))
    assert "generator:image" in keep.loaded_components


def test_the_readme_swap_to_sdxl_and_qwen_validates_without_weights():
    """README's worked example: nextgpt-7b-v1.5 with its LLM swapped to Qwen2.5 and its image generator to SDXL."""
    from anygen import widths

    data = yaml.safe_load(bundled_pipelines()["nextgpt-7b-v1.5"].read_text())
    data["llm"] = {
        "type": "causal-lm", "path": "${weights}/qwen2.5-7b-instruct", "torch_dtype": "bfloat16",
        "config": {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "intermediate_size": 18944, "max_position_embeddings": 32768,
                   "vocab_size": 152064},
    }
    data["outputs"]["image"]["generator"] = {
        "type": "stable-diffusion-xl", "path": "${weights}/stable-diffusion-xl-base-1.0", "torch_dtype": "float16",
        "config": {"conditioning": {"prompt_embeds": [77, 2048], "pooled_prompt_embeds": [1280]}},
    }
    spec = PipelineSpec.from_dict(data, root=bundled_pipelines()["nextgpt-7b-v1.5"].parent)
    assert widths.llm_hidden_size(spec) == 3584
    assert widths.generator_layout(spec, "image").names == ("prompt_embeds", "pooled_prompt_embeds")
    data["outputs"]["image"]["projector"]["tensors"] = {"prompt_embeds": {"out_dim": 1024}}  # the SD-2 width left over
    with pytest.raises(SpecError, match=r"tensors\.prompt_embeds gives 1024-wide vectors .* prompt_embeds 2048 wide"):
        PipelineSpec.from_dict(data, root=bundled_pipelines()["nextgpt-7b-v1.5"].parent)


@pytest.mark.parametrize("type_name, step, size", [("cogvideox", 4, 16), ("ltx-video", 8, 32), ("wan", 4, 16)])
def test_video_frame_and_size_rules_are_checked_before_any_model_runs(type_name, step, size):
    from anygen.errors import OptionError

    data = _spec_data(type_name, "video")
    pipe = AnyToAnyPipeline(PipelineSpec.from_dict(data))
    with pytest.raises(OptionError, match=rf"num_frames: 24 frames; the video generator makes {step}k \+ 1"):
        pipe.check_inputs("hi", output_modalities=("video",), num_frames=24)
    pipe.check_inputs("hi", output_modalities=("video",), num_frames=2 * step + 1)
    with pytest.raises(OptionError, match=rf"height: {size + 8} is not a multiple of {size}"):
        pipe("hi", output_modalities=("video",), height=size + 8, width=size, max_new_tokens=2)
    assert pipe.loaded_components == []  # refused before the LLM was even built
    data["outputs"]["video"]["generator"]["defaults"] = {"num_frames": 24}
    with pytest.raises(SpecError, match=r"outputs\.video\.generator\.defaults\.num_frames: 24 frames"):
        PipelineSpec.from_dict(data)
