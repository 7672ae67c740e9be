"""``anygen convert nextgpt-legacy``: NExT-GPT's legacy checkpoint -> an anygen pipeline folder.

The real checkpoint (and Vicuna-7B) are far too big for a test, so a synthetic one is made here with exactly
the released key *names* (``legacy_delta_keys.json``: 32 layers, four encoder and four decoder layers per
output projector) at tiny widths, over a tiny 32-layer "Vicuna" with a 32000-token tokenizer. The full-size
*shapes* are checked separately on the ``meta`` device (no memory used).

Widths of the synthetic checkpoint are chosen to fit the tiny pipeline's nodes, which stand in for ImageBind
and the three generators: ``llama_proj`` reads the tiny encoder's ``output_dim`` and each output projector
writes the tiny generator's conditioning shape (tokens x width), all read from the saved tiny pipeline.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from anygen import cli  # noqa: E402
from anygen.convert.nextgpt_legacy import (  # noqa: E402
    BASE_VOCAB_SIZE,
    LEGACY_TOKENS,
    LEGACY_VOCAB_SIZE,
    OUTPUT_PREFIXES,
    check_legacy_keys,
    convert_nextgpt_legacy,
    inspect_legacy_checkpoint,
    legacy_key_shapes,
    load_legacy_checkpoint,
    output_projectors_from_state_dict,
)
from anygen.errors import AnyGenError, WeightsError  # noqa: E402
from anygen.projectors import InputProjector, OutputProjector, output_projector_from_state_dict  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "nextgpt-legacy"
HIDDEN = 32  # the tiny Vicuna's hidden size
RANK = 4  # LoRA rank of the synthetic checkpoint (the real one: 32); read back from the shapes
ALPHA = 32.0  # NExT-GPT's lora_alpha (the converter's default)
D_MODEL = 16  # output projectors' transformer width (feed-forward 4 x d_model, as NExT-GPT)
_LORA = re.compile(r"layers\.(\d+)\.self_attn\.(\w_proj)\.lora_([AB])")


class NotATensor:
    """Saved with plain torch.save: a pickle of an arbitrary object, which weights_only must refuse."""

    def __init__(self):
        self.payload = [1, 2, 3]


# -- the parity fixture ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["image", "video", "audio"])
def test_legacy_projector_parity(case):
    tensors = load_file(FIXTURES / "projector_parity.safetensors")
    meta = json.loads((FIXTURES / "projector_parity.json").read_text())["cases"][case]
    projectors = output_projectors_from_state_dict(tensors)  # the whole file: keys under the legacy prefixes
    assert set(projectors) == {"image", "video", "audio"}
    proj = projectors[case]
    assert (proj.num_queries, proj.out_dim, proj.in_dim) == (meta["q"], meta["out"], 48)
    with torch.no_grad():
        out = proj(tensors[f"inputs.{case}.hidden_states"], tensors[f"inputs.{case}.input_embeds"])
    expected = tensors[f"expected.{case}.output"]
    assert out.shape == expected.shape == tuple(meta["output_shape"])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_packaged_key_list_is_the_shared_one():
    shared = {k: tuple(v) for k, v in json.loads((FIXTURES / "legacy_delta_keys.json").read_text()).items()}
    assert legacy_key_shapes() == shared
    assert len(shared) == 647


def test_legacy_tokens_are_nextgpts():
    assert LEGACY_TOKENS[:6] == ("<Img>", "</Img>", "[IMG0]", "[IMG1]", "[IMG2]", "[IMG3]")
    assert LEGACY_TOKENS[6] == "[VID0]" and LEGACY_TOKENS[29] == "[VID23]"
    assert LEGACY_TOKENS[30] == "[AUD0]" and LEGACY_TOKENS[-1] == "[AUD7]"
    assert LEGACY_VOCAB_SIZE == 32038


# -- the full-size shapes, on the meta device -----------------------------------------------------------------
def test_full_size_shapes_match_nextgpt_spec_on_meta_device(tmp_path, monkeypatch):
    """Every shape of legacy_delta_keys.json against the modules the nextgpt-7b-v0 spec builds (no memory)."""
    monkeypatch.setenv("ANYGEN_WEIGHTS", str(tmp_path))  # no weights: widths come from the spec's configs
    from transformers import AutoConfig, AutoModelForCausalLM

    from anygen import widths
    from anygen.spec import load_spec

    spec = load_spec("nextgpt-7b-v0")
    config = dict(spec.llm.config)
    hidden = widths.llm_hidden_size(spec)
    assert config["vocab_size"] == LEGACY_VOCAB_SIZE
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(config.pop("model_type"), **config))
        proj_in = InputProjector("linear", widths.encoder_output_dim(spec, "imagebind"), hidden, 1)
        proj_out = {}
        for modality, out in spec.outputs.items():
            tokens, width = widths.generator_condition_shape(spec, modality)
            p = out.projector
            proj_out[modality] = OutputProjector(
                p.type, hidden, width, tokens, p.d_model, p.nhead, p.num_encoder_layers, p.num_decoder_layers
            )
    assert next(llm.parameters()).is_meta
    params = dict(llm.named_parameters())
    checked = 0
    for key, shape in legacy_key_shapes().items():
        if key.startswith("llama_proj."):
            actual = dict(proj_in.named_parameters())["proj." + key.split(".", 1)[1]].shape
        elif m := _LORA.search(key):
            layer, name, half = int(m.group(1)), m.group(2), m.group(3)
            out_f, in_f = params[f"model.layers.{layer}.self_attn.{name}.weight"].shape
            actual = (32, in_f) if half == "A" else (out_f, 32)  # r = 32
        elif key.startswith("llama_model.base_model.model."):
            actual = params[key.removeprefix("llama_model.base_model.model.")].shape
        else:
            modality, prefix = next((m, p) for m, p in OUTPUT_PREFIXES.items() if key.startswith(p))
            actual = proj_out[modality].state_dict()[key.removeprefix(prefix)].shape
        assert tuple(actual) == shape, key
        checked += 1
    assert checked == 647
    # and nothing the modules have is left out of the checkpoint's projector keys
    for modality, prefix in OUTPUT_PREFIXES.items():
        names = {prefix + k for k in proj_out[modality].state_dict()}
        assert names <= set(legacy_key_shapes())


# -- a synthetic legacy checkpoint over a tiny Vicuna -------------------------------------------------------------
def make_vicuna(folder: Path, vocab_size: int = BASE_VOCAB_SIZE, extra_tokens: int = 0, **overrides) -> Path:
    """A tiny 32-layer Llama standing in for Vicuna-7B v0, with a 32000-token tokenizer built locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}  # LLaMA's special ids
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    while len(vocab) < BASE_VOCAB_SIZE:  # fillers up to LLaMA-1's 32000 tokens
        vocab[f"<filler{len(vocab)}>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if extra_tokens:
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    settings = dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=32,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    settings.update(overrides)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**settings)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_legacy_state(encoder_dim: int, conditions: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Every key of the released checkpoint, at tiny widths; projectors sized for ``conditions``."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key in legacy_key_shapes():
        m = _LORA.search(key)
        if key == "llama_proj.weight":
            state[key] = torch.randn(HIDDEN, encoder_dim, generator=g) * 0.1
        elif key == "llama_proj.bias":
            state[key] = torch.randn(HIDDEN, generator=g) * 0.1
        elif m:
            shape = (RANK, HIDDEN) if m.group(3) == "A" else (HIDDEN, RANK)
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith(("embed_tokens.weight", "lm_head.weight")):
            state[key] = torch.randn(LEGACY_VOCAB_SIZE, HIDDEN, generator=g) * 0.1
    for modality, prefix in OUTPUT_PREFIXES.items():
        tokens, width = conditions[modality]
        torch.manual_seed(len(modality))
        proj = OutputProjector("transformer", HIDDEN, width, tokens, d_model=D_MODEL, nhead=4)
        state.update({prefix + k: v.clone() for k, v in proj.state_dict().items()})
    assert set(state) == set(legacy_key_shapes())
    return state


@pytest.fixture(scope="module")
def tiny_saved(tmp_path_factory) -> Path:
    """The tiny pipeline saved to disk: its encoder and generators stand in for ImageBind/SD/Zeroscope/AudioLDM."""
    from anygen.pipeline import AnyToAnyPipeline

    return AnyToAnyPipeline.from_pretrained("tiny").save_pretrained(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def stand_ins(tiny_saved) -> dict[str, Path]:
    return {
        "imagebind": tiny_saved / "encoders" / "imagebind",
        "sd": tiny_saved / "outputs" / "image" / "generator",
        "zeroscope": tiny_saved / "outputs" / "video" / "generator",
        "audioldm": tiny_saved / "outputs" / "audio" / "generator",
    }


@pytest.fixture(scope="module")
def legacy_state(tiny_saved) -> dict[str, torch.Tensor]:
    from anygen import widths
    from anygen.spec import load_spec

    tiny = load_spec(tiny_saved)
    conditions = {m: widths.generator_condition_shape(tiny, m) for m in ("image", "video", "audio")}
    return make_legacy_state(widths.encoder_output_dim(tiny, "imagebind"), conditions)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, legacy_state) -> Path:
    path = tmp_path_factory.mktemp("legacy") / "pytorch_model.pt"
    torch.save(legacy_state, path)
    return path


@pytest.fixture(scope="module")
def vicuna(tmp_path_factory) -> Path:
    return make_vicuna(tmp_path_factory.mktemp("vicuna") / "vicuna-7b-v0")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, checkpoint, vicuna, stand_ins) -> Path:
    out = tmp_path_factory.mktemp("converted") / "nextgpt-7b-v0"
    return convert_nextgpt_legacy(checkpoint, vicuna, out, log=lambda *_: None, **stand_ins)


@pytest.fixture(scope="module")
def converted_lora(tmp_path_factory, checkpoint, vicuna) -> Path:
    out = tmp_path_factory.mktemp("converted-lora") / "nextgpt-7b-v0"
    return convert_nextgpt_legacy(checkpoint, vicuna, out, keep_lora=True, log=lambda *_: None)


def _load_llm(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()


def test_synthetic_checkpoint_has_the_released_layout(legacy_state):
    check_legacy_keys(legacy_state)
    layout = inspect_legacy_checkpoint(legacy_state)
    assert (layout.hidden_size, layout.num_layers, layout.lora_rank, layout.vocab_size) == (
        HIDDEN,
        32,
        RANK,
        LEGACY_VOCAB_SIZE,
    )


def test_converted_folder_loads_as_a_pipeline(converted, stand_ins):
    from anygen.pipeline import AnyToAnyPipeline

    for name in ("llm/config.json", "input_projectors/imagebind.safetensors", "pipeline.yaml"):
        assert (converted / name).is_file()
    for modality in ("image", "video", "audio"):
        assert (converted / "outputs" / modality / "projector.safetensors").is_file()
    pipe = AnyToAnyPipeline.from_pretrained(converted)
    spec = pipe.spec
    assert spec.name == "nextgpt-7b-v0"
    assert spec.llm.path == "llm" and spec.input_projectors["imagebind"].path.startswith("input_projectors/")
    assert spec.encoders["imagebind"].path == str(stand_ins["imagebind"].resolve())
    assert spec.outputs["video"].generator.path == str(stand_ins["zeroscope"].resolve())
    # the legacy prompt template travels with the spec
    template = spec.llm.template
    assert template.user == "### Human: {content}\n### Assistant:" and template.stop == ["###"]
    assert template.media["image"] == ("<Img>", "</Img>")
    pipe.load_all()
    lm = pipe.llm
    assert len(lm.tokenizer) == LEGACY_VOCAB_SIZE
    assert lm.spans["image"].token_ids == tuple(range(32002, 32006))
    assert lm.spans["video"].token_ids == tuple(range(32006, 32030))
    assert lm.spans["audio"].token_ids == tuple(range(32030, 32038))


def test_converted_pipeline_runs_end_to_end(converted):
    """Text in, an image out, through the converted LLM and projector and the tiny stand-in generator."""
    from anygen.pipeline import AnyToAnyPipeline

    pipe = AnyToAnyPipeline.from_pretrained(converted)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a dog",
        output_modalities=["image"],
        max_new_tokens=4,
        seed=0,
        num_inference_steps=1,
        height=64,
        width=64,
    )
    assert len(out.images) == 1
    assert list(range(32002, 32006)) == [t for t in out.token_ids if t >= BASE_VOCAB_SIZE][:4]


def test_tokenizer_has_the_legacy_tokens_at_their_ids(converted):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted / "llm", local_files_only=True)
    assert len(tokenizer) == LEGACY_VOCAB_SIZE
    assert tokenizer.convert_tokens_to_ids(list(LEGACY_TOKENS)) == list(range(32000, 32038))
    assert tokenizer("<Img>x</Img>[IMG0][AUD7]", add_special_tokens=False).input_ids[0] == 32000
    ids = tokenizer("<Img>x</Img>[IMG0][AUD7]", add_special_tokens=False).input_ids
    assert ids[-3:] == [32001, 32002, 32037]


def test_merged_lora_embeddings_and_head(converted, vicuna, legacy_state):
    base, merged = _load_llm(vicuna), _load_llm(converted / "llm")
    assert merged.config.vocab_size == LEGACY_VOCAB_SIZE
    p = "llama_model.base_model.model."
    for layer in (0, 17, 31):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            stem = f"{p}model.layers.{layer}.self_attn.{proj}"
            a, b = (
                legacy_state[f"{stem}.lora_A.default.weight"],
                legacy_state[f"{stem}.lora_B.default.weight"],
            )
            name = f"model.layers.{layer}.self_attn.{proj}"
            w = base.get_submodule(name).weight
            torch.testing.assert_close(merged.get_submodule(name).weight, w + b @ a * ALPHA / RANK)
    # untouched: the MLPs and norms are Vicuna's
    torch.testing.assert_close(
        merged.model.layers[5].mlp.up_proj.weight, base.model.layers[5].mlp.up_proj.weight
    )
    torch.testing.assert_close(merged.model.norm.weight, base.model.norm.weight)
    # replaced whole: every row of the embeddings and LM head
    torch.testing.assert_close(
        merged.get_input_embeddings().weight, legacy_state[p + "model.embed_tokens.weight"]
    )
    torch.testing.assert_close(merged.get_output_embeddings().weight, legacy_state[p + "lm_head.weight"])


def test_lora_alpha_option(tmp_path, checkpoint, vicuna, legacy_state, stand_ins):
    out = convert_nextgpt_legacy(
        checkpoint, vicuna, tmp_path / "out", lora_alpha=8.0, log=lambda *_: None, **stand_ins
    )
    base, merged = _load_llm(vicuna), _load_llm(out / "llm")
    stem = "llama_model.base_model.model.model.layers.3.self_attn.v_proj"
    a, b = legacy_state[f"{stem}.lora_A.default.weight"], legacy_state[f"{stem}.lora_B.default.weight"]
    w = base.model.layers[3].self_attn.v_proj.weight
    torch.testing.assert_close(merged.model.layers[3].self_attn.v_proj.weight, w + b @ a * 8.0 / RANK)


def test_projectors_reproduce_the_checkpoint(converted, legacy_state):
    legacy = output_projectors_from_state_dict(legacy_state)
    g = torch.Generator().manual_seed(1)
    for modality, prefix in OUTPUT_PREFIXES.items():
        saved = load_file(converted / "outputs" / modality / "projector.safetensors")
        assert set(saved) == {k.removeprefix(prefix) for k in legacy_state if k.startswith(prefix)}
        for key, tensor in saved.items():
            torch.testing.assert_close(tensor, legacy_state[prefix + key])
        proj = output_projector_from_state_dict(saved).eval()
        n = {"image": 4, "video": 24, "audio": 8}[modality]
        h, e = torch.randn(2, n, HIDDEN, generator=g), torch.randn(2, n, HIDDEN, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(proj(h, e), legacy[modality](h, e))
    inputs = load_file(converted / "input_projectors" / "imagebind.safetensors")
    torch.testing.assert_close(inputs["proj.weight"], legacy_state["llama_proj.weight"])
    torch.testing.assert_close(inputs["proj.bias"], legacy_state["llama_proj.bias"])


def test_keep_lora_writes_a_peft_adapter_equal_to_the_merge(converted_lora, converted):
    from peft import PeftModel

    assert not (converted_lora / "pipeline.yaml").exists()
    assert not (converted_lora / "llm").exists()  # the bundled spec's llm/ must not be an unmerged model
    adapter = converted_lora / "llm-lora"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (RANK, ALPHA, 0.1)
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (adapter / "adapter_model.safetensors").is_file()
    peft_model = PeftModel.from_pretrained(_load_llm(converted_lora / "llm-base"), adapter).eval()
    merged = _load_llm(converted / "llm")
    ids = torch.tensor([[1, 40, 41, 42, 32000, 32002, 32003, 32037]])
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, merged(ids).logits, atol=1e-4, rtol=0)
        base_only = _load_llm(converted_lora / "llm-base")(ids).logits
    assert not torch.allclose(base_only, merged(ids).logits, atol=1e-4)  # the LoRA matters


# -- refusals -----------------------------------------------------------------------------------------------------
def _save(state, folder: Path) -> Path:
    path = folder / "pytorch_model.pt"
    torch.save(state, path)
    return path


def test_missing_key_is_refused_with_the_list(tmp_path, legacy_state, vicuna):
    state = dict(legacy_state)
    gone = "llama_model.base_model.model.model.layers.7.self_attn.k_proj.lora_B.default.weight"
    del state[gone]
    with pytest.raises(WeightsError, match=r"missing 1 key\(s\): " + re.escape(gone)) as info:
        convert_nextgpt_legacy(_save(state, tmp_path), vicuna, tmp_path / "out", log=lambda *_: None)
    assert "unexpected" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_renamed_key_is_refused_with_both_names(tmp_path, legacy_state, vicuna):
    state = dict(legacy_state)
    old = "gen_text_hidden_fcs_audio.0.fc.weight"
    state["gen_text_hidden_fcs_audio.0.fc_renamed.weight"] = state.pop(old)
    with pytest.raises(WeightsError) as info:
        convert_nextgpt_legacy(_save(state, tmp_path), vicuna, tmp_path / "out", log=lambda *_: None)
    message = str(info.value)
    assert f"missing 1 key(s): {old}" in message
    assert "unexpected 1 key(s): gen_text_hidden_fcs_audio.0.fc_renamed.weight" in message
    assert "strict=False" in message


def test_inconsistent_shapes_are_refused(legacy_state):
    state = dict(legacy_state)
    key = "llama_model.base_model.model.model.layers.2.self_attn.q_proj.lora_A.default.weight"
    state[key] = torch.zeros(RANK, HIDDEN + 1)
    with pytest.raises(WeightsError, match=r"layer 2 q_proj: lora_A reads 33 features, hidden size is 32"):
        inspect_legacy_checkpoint(state)
    state = dict(legacy_state)
    state["llama_model.base_model.model.lm_head.weight"] = torch.zeros(32001, HIDDEN)
    with pytest.raises(WeightsError, match="lm_head"):
        inspect_legacy_checkpoint(state)


def test_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.pt"
    torch.save(NotATensor(), path)
    with pytest.raises(WeightsError, match="is not a plain tensor checkpoint .*never unpickles") as err:
        load_legacy_checkpoint(path)
    assert "NotATensor" in str(err.value) and "weights_only=False" not in str(err.value)
    torch.save({"llama_proj.weight": NotATensor()}, path)  # hidden inside a dict: refused too
    with pytest.raises(WeightsError, match="not a plain tensor checkpoint"):
        load_legacy_checkpoint(path)


def test_wrong_vicuna_base_is_refused(tmp_path, checkpoint):
    padded = make_vicuna(tmp_path / "tok32001", extra_tokens=1)  # a 32001-token tokenizer
    with pytest.raises(WeightsError, match=r"tokenizer has 32001 tokens, expected 32000.*LLaMA-1"):
        convert_nextgpt_legacy(checkpoint, padded, tmp_path / "out", log=lambda *_: None)
    wide = make_vicuna(tmp_path / "vocab32064", vocab_size=32064)
    with pytest.raises(WeightsError, match=r"vocab_size 32064, expected 32000.*Vicuna-7B v0"):
        convert_nextgpt_legacy(checkpoint, wide, tmp_path / "out", log=lambda *_: None)
    llama2 = make_vicuna(tmp_path / "llama2", max_position_embeddings=4096)
    with pytest.raises(WeightsError, match=r"max_position_embeddings is 4096.*Llama 2"):
        convert_nextgpt_legacy(checkpoint, llama2, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_fastchat_v0_pad_row_is_accepted(tmp_path, checkpoint, stand_ins):
    """FastChat 0.1.10's apply_delta leaves a 32001-row model with a 32000-token tokenizer: that is v0."""
    vicuna = make_vicuna(tmp_path / "vicuna", vocab_size=BASE_VOCAB_SIZE + 1)
    out = convert_nextgpt_legacy(checkpoint, vicuna, tmp_path / "out", log=lambda *_: None, **stand_ins)
    assert _load_llm(out / "llm").get_input_embeddings().weight.shape == (LEGACY_VOCAB_SIZE, HIDDEN)


def test_existing_output_needs_force(converted, checkpoint, vicuna, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(converted, copy)
    with pytest.raises(WeightsError, match="--force"):
        convert_nextgpt_legacy(checkpoint, vicuna, copy, log=lambda *_: None)


def test_generator_width_mismatch_is_refused(tmp_path, checkpoint, vicuna):
    """Without stand-ins the spec points at the real SD-1.5 (77 x 768): the tiny projectors do not fit it."""
    with pytest.raises(AnyGenError, match=r"outputs.image.projector gives 32-wide vectors but .* 768-wide"):
        convert_nextgpt_legacy(checkpoint, vicuna, tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_encoder_width_mismatch_is_refused(tmp_path, legacy_state, vicuna, stand_ins):
    state = dict(legacy_state)
    state["llama_proj.weight"] = torch.zeros(HIDDEN, 48)
    with pytest.raises(WeightsError, match="llama_proj reads 48-wide encoder features.* gives 32-wide"):
        convert_nextgpt_legacy(
            _save(state, tmp_path), vicuna, tmp_path / "out", log=lambda *_: None, **stand_ins
        )


# -- the CLI ------------------------------------------------------------------------------------------------------
@pytest.fixture
def convert_cli():
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "convert" not in sub.choices:
        pytest.fail("anygen.cli.build_parser does not register `convert` (the modules in _COMMAND_MODULES)")
    return cli.main


def test_cli_bad_checkpoint_path_is_one_line(tmp_path, capsys, convert_cli):
    rc = convert_cli(
        [
            "convert",
            "nextgpt-legacy",
            str(tmp_path / "nope.pt"),
            "--vicuna",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("anygen: error: checkpoint ")
    assert "no such file" in err and "anygen weights download nextgpt-7b-tiva-v0" in err


def test_cli_pickle_is_one_line(tmp_path, capsys, convert_cli):
    path = tmp_path / "pytorch_model.pt"
    torch.save(NotATensor(), path)
    rc = convert_cli(
        ["convert", "nextgpt-legacy", str(path), "--vicuna", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "not a plain tensor checkpoint" in err


def test_cli_converts(tmp_path, checkpoint, vicuna, stand_ins, capsys, convert_cli):
    out = tmp_path / "out"
    argv = ["convert", "nextgpt-legacy", str(checkpoint), "--vicuna", str(vicuna), "--out", str(out)]
    argv += ["--sd", str(stand_ins["sd"]), "--imagebind", str(stand_ins["imagebind"])]
    argv += ["--zeroscope", str(stand_ins["zeroscope"]), "--audioldm", str(stand_ins["audioldm"])]
    assert convert_cli(argv) == 0, capsys.readouterr().err
    assert (out / "pipeline.yaml").is_file()
    assert "AnyToAnyPipeline.from_pretrained" in capsys.readouterr().out
