"""Token-level behaviour of the decoding loop, on the tiny LLM."""

import pytest
import torch

from anygen.generation import SamplingOptions, generate
from anygen.llm import LanguageModel
from anygen.tokenizer import byte_level_tokenizer

SIGNALS = {
    "image": [f"[IMG{i}]" for i in range(4)],
    "video": [f"[VID{i}]" for i in range(24)],
    "audio": [f"[AUD{i}]" for i in range(8)],
}
CONFIG = dict(
    model_type="llama",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
)


@pytest.fixture(scope="module")
def lm():
    return LanguageModel.from_config(CONFIG, byte_level_tokenizer(), SIGNALS, seed=3)


@pytest.fixture(scope="module")
def biased_lm():
    """The tiny LLM with its output head pushed towards the first signal token of every span and EOS,
    so that spans start on their own, at random places, and sometimes next to the end of the budget."""
    model = LanguageModel.from_config(CONFIG, byte_level_tokenizer(), SIGNALS, seed=3)
    head = model.model.get_output_embeddings()
    with torch.no_grad():
        for span in model.spans.values():
            head.weight[span.token_ids[0]] *= 40
            head.weight[span.token_ids[1]] *= 40  # a later span token: must never be sampled on its own
    return model


def _prompt(lm, text="### Human: draw me a dog\n### Assistant:"):
    return lm.embed_segments([text])


def _spans_complete(lm, ids):
    i = 0
    while i < len(ids):
        for span in lm.spans.values():
            if ids[i] in span.token_ids:
                assert tuple(ids[i : i + len(span.token_ids)]) == span.token_ids, (
                    f"partial span at {i}: {ids}"
                )
                i += len(span.token_ids)
                break
        else:
            i += 1


def test_signal_spans_are_always_complete(biased_lm):
    starts = 0
    for seed in range(30):
        gen = torch.Generator().manual_seed(seed)
        opts = SamplingOptions(max_new_tokens=6 + seed % 5, temperature=1.5, top_p=1.0)
        (seq,) = generate(biased_lm, [_prompt(biased_lm)], opts, generators=[gen])
        _spans_complete(biased_lm, seq.token_ids)
        for signal in seq.signals:
            assert signal.hidden_states.shape == (len(biased_lm.spans[signal.modality].token_ids), 64)
        starts += len(seq.signals)
    assert starts > 5, "the biased head should make the model start spans by itself"


def test_required_modalities_are_forced(lm):
    (seq,) = generate(
        lm, [_prompt(lm)], SamplingOptions(max_new_tokens=5, temperature=0), required=[["audio", "image"]]
    )
    assert [s.modality for s in seq.signals] == ["audio", "image"]
    _spans_complete(lm, seq.token_ids)
    assert len(seq.token_ids) == 5 + 8 + 4  # the budget, then the forced spans


def test_captured_hidden_states_equal_plain_forward(lm):
    prompt = _prompt(lm)
    (seq,) = generate(
        lm,
        [prompt],
        SamplingOptions(max_new_tokens=7, temperature=0.9),
        required=[["image", "video"]],
        generators=[torch.Generator().manual_seed(0)],
    )
    ids = torch.tensor(seq.token_ids)
    with torch.no_grad():
        full = torch.cat([prompt, lm.embeddings(ids)])[None]
        reference = lm.model(inputs_embeds=full, output_hidden_states=True).hidden_states[-1][
            0, prompt.shape[0] :
        ]
    signal_positions = [i for i, t in enumerate(seq.token_ids) if t in lm.signal_token_ids()]
    captured = torch.cat([s.hidden_states for s in seq.signals])
    torch.testing.assert_close(captured, reference[signal_positions], atol=1e-5, rtol=1e-4)
    embeds = torch.cat([s.input_embeds for s in seq.signals])
    torch.testing.assert_close(embeds, lm.embeddings(ids[signal_positions]))


def test_hidden_layer_is_configurable():
    lm = LanguageModel.from_config(CONFIG, byte_level_tokenizer(), SIGNALS, seed=3, hidden_layer=1)
    prompt = _prompt(lm)
    (seq,) = generate(lm, [prompt], SamplingOptions(max_new_tokens=2, temperature=0), required=[["image"]])
    ids = torch.tensor(seq.token_ids)
    with torch.no_grad():
        full = torch.cat([prompt, lm.embeddings(ids)])[None]
        layer1 = lm.model(inputs_embeds=full, output_hidden_states=True).hidden_states[1][
            0, prompt.shape[0] :
        ]
    torch.testing.assert_close(seq.signals[0].hidden_states, layer1[2:6], atol=1e-5, rtol=1e-4)


def test_batch_equals_one_by_one(lm):
    texts = [
        "### Human: a cat\n### Assistant:",
        "### Human: a much longer prompt about a dog on a beach\n### Assistant:",
    ]
    opts = SamplingOptions(max_new_tokens=8, temperature=0.8, top_p=0.9)
    required = [["image"], ["audio", "image"]]
    batch = generate(
        lm,
        [_prompt(lm, t) for t in texts],
        opts,
        required=required,
        generators=[torch.Generator().manual_seed(7) for _ in texts],
    )
    for i, text in enumerate(texts):
        (alone,) = generate(
            lm,
            [_prompt(lm, text)],
            opts,
            required=[required[i]],
            generators=[torch.Generator().manual_seed(7)],
        )
        assert alone.token_ids == batch[i].token_ids
        assert alone.text == batch[i].text
        for a, b in zip(alone.signals, batch[i].signals, strict=True):
            torch.testing.assert_close(a.hidden_states, b.hidden_states, atol=1e-5, rtol=1e-4)


def test_stop_string_ends_answer_and_is_cut(lm):
    # Feed a prompt that makes greedy decoding irrelevant: check the cutting helper on real decoding.
    from anygen.generation import strip_stop

    assert strip_stop(" a dog ### Human: more", ["###"]) == "a dog"
    (seq,) = generate(
        lm, [_prompt(lm)], SamplingOptions(max_new_tokens=12, temperature=0), stop_strings=["###"]
    )
    assert "###" not in seq.text


def test_sampling_options_are_validated():
    with pytest.raises(ValueError, match="top_p"):
        SamplingOptions(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingOptions(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingOptions(temperature=-1)


def test_allowed_modalities_ban_other_spans(biased_lm):
    for seed in range(10):
        (seq,) = generate(
            biased_lm,
            [_prompt(biased_lm)],
            SamplingOptions(max_new_tokens=10, temperature=1.5),
            required=[["image"]],
            allowed=[["image"]],
            generators=[torch.Generator().manual_seed(seed)],
        )
        assert {s.modality for s in seq.signals} == {"image"}
