import copy

import pytest
import yaml

from anygen.errors import SpecError
from anygen.spec import PipelineSpec, bundled_pipelines, load_spec


@pytest.fixture
def tiny_dict():
    return yaml.safe_load(bundled_pipelines()["tiny"].read_text())


def test_bundled_specs_validate():
    names = bundled_pipelines()
    assert {"tiny", "nextgpt-7b-v0"} <= set(names)
    for name in names:
        spec = load_spec(name)
        assert spec.name == name


def test_nextgpt_spec_widths_match_released_checkpoint():
    spec = load_spec("nextgpt-7b-v0")
    assert [spec.outputs[m].signal_tokens.count for m in ("image", "video", "audio")] == [4, 24, 8]
    assert spec.outputs["image"].signal_tokens.names()[0] == "[IMG0]"
    from anygen import widths

    assert widths.llm_hidden_size(spec) == 4096
    assert widths.generator_condition_shape(spec, "image") == (77, 768)
    assert widths.generator_condition_shape(spec, "video") == (77, 1024)
    assert widths.generator_condition_shape(spec, "audio") == (1, 512)


def test_unknown_pipeline_name_lists_bundled():
    with pytest.raises(SpecError, match=r"unknown pipeline 'nope'.*tiny"):
        load_spec("nope")


def test_unknown_node_type_names_node(tiny_dict):
    tiny_dict["outputs"]["image"]["generator"]["type"] = "dall-e"
    with pytest.raises(SpecError, match=r"outputs\.image\.generator\.type"):
        PipelineSpec.from_dict(tiny_dict)


def test_missing_field_names_node(tiny_dict):
    del tiny_dict["outputs"]["video"]["signal_tokens"]["count"]
    with pytest.raises(SpecError, match=r"outputs\.video\.signal_tokens\.count: missing field"):
        PipelineSpec.from_dict(tiny_dict)


def test_unknown_field_is_an_error(tiny_dict):
    tiny_dict["llm"]["temprature"] = 0.3
    with pytest.raises(SpecError, match=r"llm\.temprature: unknown field"):
        PipelineSpec.from_dict(tiny_dict)


def test_width_mismatch_names_both_nodes_and_widths():
    spec = yaml.safe_load(bundled_pipelines()["nextgpt-7b-v0"].read_text())
    bad = copy.deepcopy(spec)
    bad["outputs"]["video"]["projector"]["out_dim"] = 768
    with pytest.raises(SpecError) as err:
        PipelineSpec.from_dict(bad)
    msg = str(err.value)
    assert "outputs.video.projector" in msg and "outputs.video.generator" in msg
    assert "768" in msg and "1024" in msg


def test_token_count_mismatch(tiny_dict):
    tiny_dict["outputs"]["image"]["projector"]["num_queries"] = 5
    with pytest.raises(SpecError, match=r"gives 5 tokens .* conditioned on 77 tokens"):
        PipelineSpec.from_dict(tiny_dict)


def test_input_projector_must_name_existing_encoder(tiny_dict):
    tiny_dict["input_projectors"]["imagebind"]["encoder"] = "clip"
    with pytest.raises(SpecError, match=r"input_projectors\.imagebind\.encoder names 'clip'"):
        PipelineSpec.from_dict(tiny_dict)


def test_signal_format_needs_index(tiny_dict):
    tiny_dict["outputs"]["audio"]["signal_tokens"]["format"] = "[AUD]"
    with pytest.raises(SpecError, match=r"outputs\.audio\.signal_tokens\.format"):
        PipelineSpec.from_dict(tiny_dict)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_spec_yaml_round_trip(tmp_path):
    spec = load_spec("tiny")
    (tmp_path / "pipeline.yaml").write_text(spec.to_yaml())
    again = load_spec(tmp_path)
    assert again.model_dump(exclude={"root"}) == spec.model_dump(exclude={"root"})


# -- issue 11: head counts, hidden_layer, bundled names ---------------------------------------------------------
def test_projector_heads_must_divide_d_model(tiny_dict):
    tiny_dict["outputs"]["image"]["projector"]["nhead"] = 3  # d_model 32
    with pytest.raises(SpecError, match=r"outputs\.image\.projector\.nhead=3 does not divide .*d_model=32"):
        PipelineSpec.from_dict(tiny_dict)


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"num_attention_heads": 5}, r"llm\.config: num_attention_heads=5 does not divide hidden_size=64"),
        (
            {"num_key_value_heads": 3},
            r"llm\.config: num_key_value_heads=3 does not divide num_attention_heads=4",
        ),
    ],
)
def test_llm_heads_must_divide_the_width(tiny_dict, config, fragment):
    tiny_dict["llm"]["config"].update(config)
    with pytest.raises(SpecError, match=fragment):
        PipelineSpec.from_dict(tiny_dict)


def test_llm_head_dim_given_explicitly_is_accepted(tiny_dict):
    tiny_dict["llm"]["config"].update(num_attention_heads=3, num_key_value_heads=3, head_dim=16)
    PipelineSpec.from_dict(tiny_dict)


@pytest.mark.parametrize("layer, ok", [(-3, True), (0, True), (2, True), (3, False), (-4, False)])
def test_hidden_layer_must_be_within_the_llms_layers(tiny_dict, layer, ok):
    tiny_dict["llm"]["hidden_layer"] = layer  # 2 layers: hidden states -3..2
    if ok:
        assert PipelineSpec.from_dict(tiny_dict).llm.hidden_layer == layer
    else:
        with pytest.raises(
            SpecError, match=rf"llm\.hidden_layer={layer} is out of range.*must be in -3\.\.2"
        ):
            PipelineSpec.from_dict(tiny_dict)


def test_llm_sizes_are_read_from_a_folders_config_json(tiny_dict, tmp_path):
    import json

    (tmp_path / "llm").mkdir()
    config = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 32}
    (tmp_path / "llm" / "config.json").write_text(json.dumps(config))
    tiny_dict["llm"].update(path=str(tmp_path / "llm"), config=None, tokenizer={"type": "pretrained"})
    tiny_dict["llm"]["hidden_layer"] = -33
    assert PipelineSpec.from_dict(tiny_dict).llm.hidden_layer == -33
    tiny_dict["llm"]["hidden_layer"] = 40
    with pytest.raises(SpecError, match=r"llm\.hidden_layer=40 is out of range.*config\.json.*-33\.\.32"):
        PipelineSpec.from_dict(tiny_dict)


def test_bundled_name_wins_over_a_folder_of_that_name(tiny_dict, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # not a pipeline at all: once shadowed the bundled default
    assert load_spec("tiny").name == "tiny"
    (tmp_path / "tiny" / "pipeline.yaml").write_text(yaml.safe_dump({**tiny_dict, "name": "mine"}))
    assert load_spec("tiny").name == "tiny"
    for path_like in ("./tiny", str(tmp_path / "tiny"), tmp_path / "tiny"):
        assert load_spec(path_like).name == "mine", path_like


@pytest.mark.parametrize(
    "node, defaults, field",
    [
        ("llm", {"max_new_token": 8}, r"llm\.defaults\.max_new_token: unknown option"),
        (
            "image",
            {"num_inference_step": 2},
            r"outputs\.image\.generator\.defaults\.num_inference_step: unknown",
        ),
        ("image", {"num_frames": 8}, r"outputs\.image\.generator\.defaults\.num_frames: unknown option"),
        ("audio", {"bogus": 3}, r"outputs\.audio\.generator\.defaults\.bogus: unknown option"),
        ("video", {"num_inference_steps": 0}, r"outputs\.video\.generator\.defaults\.num_inference_steps"),
    ],
)
def test_unknown_or_bad_defaults_are_caught_when_the_spec_is_read(tiny_dict, node, defaults, field):
    target = tiny_dict["llm"] if node == "llm" else tiny_dict["outputs"][node]["generator"]
    target["defaults"] = {**target.get("defaults", {}), **defaults}
    with pytest.raises(SpecError, match=field):
        PipelineSpec.from_dict(tiny_dict)
