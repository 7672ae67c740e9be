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
