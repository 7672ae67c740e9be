"""A spec's ``llm.adapter`` applies a peft LoRA adapter over the saved LLM."""

import pytest
import torch
import yaml

from anygen import AnyToAnyPipeline


def test_adapter_from_spec_changes_the_llm_like_the_merged_lora(tmp_path):
    peft = pytest.importorskip("peft")
    base = AnyToAnyPipeline.from_pretrained("tiny")
    base.save_pretrained(tmp_path / "pipe")
    # A LoRA on q/k/v/o with non-zero B, saved as a peft adapter folder.
    lora = peft.get_peft_model(
        base.llm.model,
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5, generator=torch.Generator().manual_seed(0))
    lora.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 40, 50, 60]])
    with torch.no_grad():
        expected = lora(input_ids=ids).logits

    spec = yaml.safe_load((tmp_path / "pipe" / "pipeline.yaml").read_text())
    spec["llm"]["adapter"] = str(tmp_path / "adapter")
    (tmp_path / "pipe" / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    adapted = AnyToAnyPipeline.from_pretrained(tmp_path / "pipe")
    plain = AnyToAnyPipeline.from_pretrained("tiny")
    with torch.no_grad():
        got = adapted.llm.model(input_ids=ids).logits
        before = plain.llm.model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, before, atol=1e-3)


def test_missing_adapter_folder_is_a_clear_error(tmp_path):
    from anygen.errors import WeightsError

    AnyToAnyPipeline.from_pretrained("tiny").save_pretrained(tmp_path / "pipe")
    spec = yaml.safe_load((tmp_path / "pipe" / "pipeline.yaml").read_text())
    spec["llm"]["adapter"] = "no-such-adapter"
    (tmp_path / "pipe" / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    pipe = AnyToAnyPipeline.from_pretrained(tmp_path / "pipe")
    with pytest.raises(WeightsError, match="llm.adapter"):
        _ = pipe.llm
