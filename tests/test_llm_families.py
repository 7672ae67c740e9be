"""Any transformers causal LM as the pipeline's LLM: one tiny random model per family (Llama 3, Qwen2.5, Mistral,
Gemma 2, Phi-3), each with a tokenizer built here (a small BPE with the family's real special tokens) and the
family's real chat template, saved as a Hugging Face folder that ``llm.path`` points at.

Each family: the rendered prompt has the family's format with the image's features exactly where the template puts
the user's text; an end-to-end call makes an image; decoding stops at the template's end-of-turn token; a stage-2
step trains the output projector; save_pretrained -> from_pretrained gives the same output. Plus the legacy
template (by name, and for specs that give patterns) is today's prompt, errors name ``llm.template``, and tied
embeddings stay tied.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from anygen import AnyToAnyPipeline
from anygen.errors import AnyGenError, SpecError, WeightsError
from anygen.llm import tied_embeddings
from anygen.prompt import MediaSlot, Turn, conversation_segments
from anygen.spec import PipelineSpec, TemplateSpec, bundled_pipelines

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, verbose=False, tensorboard=False)

# -- the families: real special tokens and chat templates (shortened to the parts a conversation uses) -----------
LLAMA3 = (  # Meta-Llama-3-8B-Instruct
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN2 = (  # Qwen2.5-Instruct, without the tool-calling branches
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
MISTRAL = (  # Mistral-7B-Instruct-v0.1
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA2 = (  # gemma-2-2b-it
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
PHI3 = (  # Phi-3-mini-4k-instruct
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str
    template: str
    tokens: dict[str, str]  # bos/eos/pad/unk -> token
    special: list[str]  # every special token, in id order
    end_of_turn: str
    # The prompt around one image input (before the image's features, after them) for "what is this?".
    before: str
    after: str
    generation_eos: list[str]  # the generation config's eos_token_id
    tied: bool = False
    config: dict = field(default_factory=dict)


FAMILIES = [
    Family(
        "llama3",
        "llama",
        LLAMA3,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<Img>",
        "</Img>what is this?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        ["<|end_of_text|>"],  # as first released: <|eot_id|> is known from the template alone
    ),
    Family(
        "qwen2",
        "qwen2",
        QWEN2,
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "<|im_end|>",
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<Img>",
        "</Img>what is this?<|im_end|>\n<|im_start|>assistant\n",
        ["<|im_end|>", "<|endoftext|>"],
        tied=True,  # Qwen2.5-0.5B/1.5B/3B tie the LM head to the input embeddings
    ),
    Family(
        "mistral",
        "mistral",
        MISTRAL,
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        ["<unk>", "<s>", "</s>"],
        "</s>",
        "<s>[INST] <Img>",
        "</Img>what is this? [/INST]",
        ["</s>"],
        config={"sliding_window": 64},
    ),
    Family(
        "gemma2",
        "gemma2",
        GEMMA2,
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"},
        ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        "<end_of_turn>",
        "<bos><start_of_turn>user\n<Img>",
        "</Img>what is this?<end_of_turn>\n<start_of_turn>model\n",
        ["<eos>", "<end_of_turn>"],
        tied=True,
        config={"head_dim": 16, "sliding_window": 64, "query_pre_attn_scalar": 16},
    ),
    Family(
        "phi3",
        "phi3",
        PHI3,
        {
            "bos_token": "<s>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<unk>",
        },
        ["<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"],
        "<|end|>",
        "<|user|>\n<Img>",
        "</Img>what is this?<|end|>\n<|assistant|>\n",
        ["<|endoftext|>", "<|end|>"],
    ),
]
BY_NAME = {f.name: f for f in FAMILIES}
TIED = [f.name for f in FAMILIES if f.tied]

CORPUS = [
    "what is this? a dog on the grass, a cat on a red car.",
    "Sure thing! here is a picture of a bird in the sky.",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "user assistant system model [INST] [/INST]",
    "cricket player was named award category and runner - up behind person",
]


def build_tokenizer(family: Family):
    """A small byte-level BPE trained on a few sentences, with the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=family.special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=family.template, **family.tokens)


def build_folder(family: Family, folder: Path) -> Path:
    """A Hugging Face folder: the family's config class at tiny width, random weights, the tokenizer above."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    tok = build_tokenizer(family)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in family.tokens.items()}
    eos = [tok.convert_tokens_to_ids(t) for t in family.generation_eos]
    config = AutoConfig.for_model(
        family.model_type,
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=family.tied,
        bos_token_id=ids.get("bos_token"),
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=ids.get("pad_token", ids["eos_token"]),
        **family.config,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FAMILIES.index(family))
        model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def spec_dict(llm_path: Path, name: str, **llm) -> dict:
    """tiny.yaml's encoder and image output around an LLM folder."""
    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    data["name"] = f"tiny-{name}"
    data["llm"] = {"type": "causal-lm", "path": str(llm_path), "defaults": {"max_new_tokens": 6}, **llm}
    data["outputs"] = {"image": data["outputs"]["image"]}
    return data


def write_spec(tmp: Path, data: dict) -> Path:
    path = tmp / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llm-families")
    return {f.name: build_folder(f, root / f.name) for f in FAMILIES}


@pytest.fixture(scope="module")
def pipes(folders) -> dict[str, AnyToAnyPipeline]:
    out = {}
    for name, folder in folders.items():
        pipe = AnyToAnyPipeline(PipelineSpec.from_dict(spec_dict(folder, name)))
        pipe.set_progress_bar_config(disable=True)
        out[name] = pipe
    return out


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def _same(a, b) -> None:
    assert a.text == b.text and a.token_ids == b.token_ids and len(a.images) == len(b.images)
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# -- every family ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BY_NAME)
def test_prompt_has_the_familys_format_and_the_features_land_in_place(name, pipes, picture):
    family, pipe = BY_NAME[name], pipes[name]
    lm = pipe.llm
    turn = Turn("user", "what is this?", {"image": [picture]})
    segments = [s for s, _ in conversation_segments([turn], pipe.spec.llm.template)]
    assert segments == [family.before, MediaSlot("image", 0), family.after]
    # exactly the text the tokenizer's own apply_chat_template writes around the input
    messages = [{"role": "user", "content": "<Img>@</Img>what is this?"}]
    rendered = lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == family.before + "@" + family.after
    # the embedded prompt: the template's tokens (its own BOS only, none added), the features in place
    embedded = pipe._embed_conversation([turn], None)
    ids = [lm.tokenizer(t, add_special_tokens=False).input_ids for t in (family.before, family.after)]
    with torch.no_grad():
        expected = torch.cat(
            [
                lm.embeddings(torch.tensor(ids[0])),
                pipe.encode_media("image", [picture])[0],
                lm.embeddings(torch.tensor(ids[1])),
            ]
        )
    assert torch.equal(embedded, expected)
    eot = lm.tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert pipe.spec.llm.template.resolved.end_of_turn == family.end_of_turn
    assert eot in lm.stop_token_ids() and lm.tokenizer.eos_token_id in lm.stop_token_ids()


@pytest.mark.parametrize("name", BY_NAME)
def test_history_and_system_turns_are_rendered_by_the_template(name, pipes, picture):
    family, pipe = BY_NAME[name], pipes[name]
    tok = pipe.llm.tokenizer
    turns = [
        Turn("user", "a cat <image>", {"image": [picture]}),
        Turn("assistant", "a red car"),
        Turn("user", "what is this?"),
    ]
    segments = conversation_segments(turns, pipe.spec.llm.template)
    text = "".join(s if isinstance(s, str) else "@" for s, _ in segments)
    messages = [
        {"role": "user", "content": "a cat <Img>@</Img>"},
        {"role": "assistant", "content": "a red car"},
        {"role": "user", "content": "what is this?"},
    ]
    assert text == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ("a red car", 1) in segments and (
        family.end_of_turn,
        1,
    ) in segments  # the answer, closed, is turn 1's
    assert [(s, t) for s, t in segments if isinstance(s, MediaSlot)] == [(MediaSlot("image", 0), 0)]
    system = [Turn("system", "Be brief."), Turn("user", "what is this?")]
    if name in (
        "mistral",
        "gemma2",
    ):  # their templates take no system message: a clear error, not a silent drop
        with pytest.raises(AnyGenError, match=r"llm\.template: the chat template of .* refused"):
            conversation_segments(system, pipe.spec.llm.template)
    else:
        (rendered,) = conversation_segments(system, pipe.spec.llm.template)
        assert rendered[0] == tok.apply_chat_template(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is this?"}],
            add_generation_prompt=True,
            tokenize=False,
        )
        assert "Be brief." in rendered[0] and "You are Qwen" not in rendered[0]


@pytest.mark.parametrize("name", BY_NAME)
def test_end_to_end_stops_at_the_end_of_turn_and_saves_and_loads_identically(name, pipes, picture, tmp_path):
    family, pipe = BY_NAME[name], pipes[name]
    kw = dict(images=[picture], output_modalities=("image",), seed=5, max_new_tokens=6)
    out = pipe("what is this?", **kw)
    assert len(out.images) == 1 and isinstance(out.images[0], Image.Image)
    # When the LLM writes the end-of-turn token, the answer ends there, without it (and the image is still made).
    lm = pipe.llm
    eot = lm.tokenizer.convert_tokens_to_ids(family.end_of_turn)
    hook = lm.model.get_output_embeddings().register_forward_hook(
        lambda module, args, logits: logits.index_fill(-1, torch.tensor([eot]), 1e4)
    )
    try:
        ended = pipe("what is this?", **kw)
    finally:
        hook.remove()
    image_span = list(lm.spans["image"].token_ids)
    assert ended.token_ids == image_span and ended.text == "" and len(ended.images) == 1
    # save_pretrained -> from_pretrained: the same output for the same seed; the chat template travels along
    pipe.save_pretrained(tmp_path / "saved")
    saved = yaml.safe_load((tmp_path / "saved" / "pipeline.yaml").read_text())
    assert saved["llm"]["template"] == "chat"
    again = AnyToAnyPipeline.from_pretrained(tmp_path / "saved")
    again.set_progress_bar_config(disable=True)
    _same(again("what is this?", **kw), out)
    assert tied_embeddings(again.llm.model) == family.tied


@pytest.mark.parametrize("name", BY_NAME)
def test_training_labels_the_answer_and_its_end_of_turn_only(name, pipes, picture):
    from anygen.train.sequences import IGNORE, SequenceBuilder

    family, pipe = BY_NAME[name], pipes[name]
    lm = pipe.llm
    turns = [
        Turn("user", "what is this?", {"image": [picture]}),
        Turn("assistant", "a cat"),
        Turn("user", "and now?"),
        Turn("assistant", "a bird <image>"),
    ]
    enc = SequenceBuilder(pipe).encode(turns)
    labelled = [t for t in enc.labels if t != IGNORE]
    tokens = [lm.tokenizer(t, add_special_tokens=False).input_ids for t in ("a cat", "a bird ")]
    eot = lm.tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert labelled == tokens[0] + [eot] + tokens[1] + list(lm.spans["image"].token_ids) + [eot]
    assert enc.ids[-1] == eot  # nothing after the last answer's end-of-turn token
    # the prompt of the last answer is exactly what inference embeds for the conversation before it
    prompt_len = max(i for i, t in enumerate(enc.labels) if t == IGNORE) + 1
    ((start, _, item),) = enc.media
    with torch.no_grad():
        embeds = lm.embeddings(torch.tensor(enc.ids[:prompt_len]))
        embeds[start] = pipe.encode_media("image", [item])[0][0]
    assert torch.equal(embeds, pipe._embed_conversation(turns[:3], None))


@pytest.mark.parametrize("name", BY_NAME)
def test_a_stage2_step_trains_the_output_projector(name, folders, tmp_path, samples):
    from anygen.train import train

    family = BY_NAME[name]
    spec = write_spec(tmp_path, spec_dict(folders[name], name))
    data = tmp_path / "DATA.yaml"
    data.write_text(
        f"sets:\n  cc3m: {{path: {samples / 'T_X_pair_data' / 'cc3m' / 'cc3m.json'}, limit: 2}}\n"
    )
    train(
        stage=2,
        pipeline=str(spec),
        data=str(data),
        out=str(tmp_path / "out"),
        max_steps=1,
        batch_size=2,
        **QUIET,
    )
    base, trained = AnyToAnyPipeline.from_pretrained(spec), AnyToAnyPipeline.from_pretrained(tmp_path / "out")
    before, after = (
        base.output_projector("image").state_dict(),
        trained.output_projector("image").state_dict(),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before)
    ids = torch.tensor(sorted(trained.llm.signal_token_ids()))
    emb_a, emb_b = base.llm.embeddings.weight, trained.llm.embeddings.weight
    assert not torch.equal(emb_a[ids], emb_b[ids])  # the signal tokens' rows trained ...
    others = torch.ones(emb_a.shape[0], dtype=torch.bool)
    others[ids] = False
    assert torch.equal(emb_a[others], emb_b[others])  # ... and only they
    assert tied_embeddings(trained.llm.model) == family.tied
    trained.set_progress_bar_config(disable=True)
    assert len(trained("a bird", output_modalities=("image",), seed=0, max_new_tokens=4).images) == 1


# -- tied embeddings -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TIED)
def test_tied_embeddings_stay_tied_and_signal_rows_merge_once(name, pipes):
    from anygen.train.stages import SignalTokenRows

    pipe = pipes[name]
    lm = pipe.llm
    assert lm.embeddings.weight.shape[0] == len(lm.tokenizer)  # resized for the signal tokens
    assert tied_embeddings(lm.model)
    backup = lm.embeddings.weight.detach().clone()
    try:
        rows = SignalTokenRows(lm)
        assert rows.tied and rows.output_rows is None  # one set of rows for both ends
        with torch.no_grad():
            rows.input_rows.add_(1.0)
        ids = torch.tensor([[rows.ids[0].item(), 5]])
        hidden = torch.randn(3, lm.hidden_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = lm.model.get_output_embeddings()(hidden)  # the LM head reads the same trained rows
        torch.testing.assert_close(logits[:, rows.ids], hidden @ rows.input_rows.T, rtol=1e-5, atol=1e-5)
        scale = getattr(lm.embeddings, "embed_scale", torch.tensor(1.0))
        torch.testing.assert_close(
            lm.embeddings(ids)[0, 0], rows.input_rows[0] * scale.to(backup.dtype), rtol=1e-6, atol=1e-6
        )
        rows.merge()
        assert tied_embeddings(lm.model)
        torch.testing.assert_close(
            lm.embeddings.weight[rows.ids], backup[rows.ids] + 1.0
        )  # added once, not twice
    finally:
        with torch.no_grad():
            lm.embeddings.weight.copy_(backup)


# -- legacy template, errors -----------------------------------------------------------------------------------------
LEGACY_SEGMENTS = [  # today's tiny/mini/nextgpt-7b-v0 prompt, pinned
    "Be brief.\n",
    "### Human: ",
    "a ",
    "<Img>",
    MediaSlot("image", 0),
    "</Img>",
    " b",
    "\n### Assistant:",
    " ",
    "ok",
    "\n",
    "### Human: ",
    "more",
    "\n### Assistant:",
]


@pytest.mark.parametrize("template", ["given", "nextgpt-legacy", "omitted"])
def test_the_legacy_template_is_todays_prompt(template, picture):
    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    if template == "nextgpt-legacy":
        data["llm"]["template"] = "nextgpt-legacy"
    elif template == "omitted":  # the byte-level tokenizer has no chat template: the legacy one
        del data["llm"]["template"]
    pipe = AnyToAnyPipeline(PipelineSpec.from_dict(data))
    _ = pipe.llm
    turns = [
        Turn("system", "Be brief."),
        Turn("user", "a <image> b", {"image": [picture]}),
        Turn("assistant", "ok"),
        Turn("user", "more"),
    ]
    assert [s for s, _ in conversation_segments(turns, pipe.spec.llm.template)] == LEGACY_SEGMENTS
    assert pipe.spec.llm.template.stop == ["###"] and pipe.llm.add_bos
    tiny = AnyToAnyPipeline.from_pretrained("tiny")
    assert torch.equal(pipe._embed_conversation(turns, None), tiny._embed_conversation(turns, None))
    # a saved pipeline writes the patterns out
    assert PipelineSpec.from_dict(yaml.safe_load(pipe.spec.to_yaml())).llm.template == TemplateSpec()


def test_bundled_specs_keep_the_legacy_patterns():
    for name in ("tiny", "mini", "nextgpt-7b-v0"):
        data = yaml.safe_load(bundled_pipelines()[name].read_text())
        assert PipelineSpec.model_validate({**data, "root": None}).llm.template == TemplateSpec(), name
    mini = yaml.safe_load((REPO / "weights" / "mini" / "pipeline.yaml").read_text())
    assert TemplateSpec.model_validate(mini["llm"]["template"]) == TemplateSpec()


def test_chat_template_asked_of_a_tokenizer_without_one_is_a_clear_error(folders, tmp_path):
    folder = shutil.copytree(folders["qwen2"], tmp_path / "no-template")
    (folder / "chat_template.jinja").unlink()
    pipe = AnyToAnyPipeline(PipelineSpec.from_dict(spec_dict(folder, "plain", template="chat")))
    with pytest.raises(WeightsError, match=rf"llm\.template: 'chat' .* tokenizer in {folder} has none"):
        _ = pipe.llm
    # without `template`, the same folder falls back to the legacy patterns
    auto = AnyToAnyPipeline(PipelineSpec.from_dict(spec_dict(folder, "plain")))
    _ = auto.llm
    assert auto.spec.llm.template.resolved == TemplateSpec()
    # a byte-level tokenizer has none: refused when the spec is read
    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    data["llm"]["template"] = "chat"
    with pytest.raises(SpecError, match=r"llm\.template: 'chat' .* byte-level tokenizer"):
        PipelineSpec.from_dict(data)


@pytest.mark.parametrize(
    "template, message",
    [
        ("llama3", r"llm\.template: unknown template 'llama3'"),
        ({"type": "jinja"}, r"llm\.template: type: 'jinja'"),
        ({"user": "no placeholder"}, r"llm\.template\.user: must contain \{content\}"),
        ({"type": "chat", "stop": ["x"]}, r"llm\.template\.stop: unknown field"),
    ],
)
def test_bad_templates_name_the_field(template, message):
    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    data["llm"]["template"] = template
    with pytest.raises(SpecError, match=message):
        PipelineSpec.from_dict(data)


def test_chat_media_markers_can_be_set(folders, picture):
    data = spec_dict(
        folders["qwen2"], "marked", template={"type": "chat", "media": {"image": ["<img>", "</img>"]}}
    )
    pipe = AnyToAnyPipeline(PipelineSpec.from_dict(data))
    _ = pipe.llm
    segments = [
        s
        for s, _ in conversation_segments([Turn("user", "hi", {"image": [picture]})], pipe.spec.llm.template)
    ]
    assert segments[0].endswith("<|im_start|>user\n<img>") and segments[2].startswith("</img>hi<|im_end|>")
    assert yaml.safe_load(pipe.spec.to_yaml())["llm"]["template"] == {
        "type": "chat",
        "media": {"image": ["<img>", "</img>"]},
    }


def test_an_llm_folder_without_a_hidden_size_is_named(tmp_path):
    """The LLM's width cannot be read: the error names the part and what was missing (not a KeyError)."""
    import json as _json

    import yaml as _yaml

    from anygen.errors import SpecError as _SpecError
    from anygen.spec import PipelineSpec as _Spec
    from anygen.spec import bundled_pipelines as _bundled

    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "config.json").write_text(_json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    data = _yaml.safe_load(_bundled()["tiny"].read_text())
    data["llm"] = {**data["llm"], "path": str(llm), "config": None}
    with pytest.raises(_SpecError, match=r"llm: .*config\.json has no hidden size \(hidden_size, n_embd, d_model\)"):
        _Spec.from_dict(data)
