import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anygen.projectors import InputProjector, OutputProjector, output_projector_from_state_dict

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "nextgpt-legacy"


@pytest.mark.parametrize("case", ["image", "video", "audio"])
def test_legacy_transformer_projector_parity(case):
    tensors = load_file(FIXTURES / "projector_parity.safetensors")
    meta = json.loads((FIXTURES / "projector_parity.json").read_text())["cases"][case]
    prefix = meta["prefix"]
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    proj = output_projector_from_state_dict(state).eval()
    assert proj.kind == "transformer"
    with torch.no_grad():
        out = proj(tensors[f"inputs.{case}.hidden_states"], tensors[f"inputs.{case}.input_embeds"])
    expected = tensors[f"expected.{case}.output"]
    assert out.shape == expected.shape == tuple(meta["output_shape"])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["linear", "mlp", "transformer"])
def test_output_projector_shapes_and_state_dict_round_trip(kind):
    proj = OutputProjector(
        kind, in_dim=16, out_dim=24, num_queries=5, d_model=32, num_encoder_layers=1, num_decoder_layers=2
    )
    h, e = torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    out = proj(h, e)
    assert out.shape == (3, 5, 24)
    rebuilt = output_projector_from_state_dict(proj.state_dict())
    assert rebuilt.kind == kind
    torch.testing.assert_close(rebuilt(h, e), out)


def test_output_projector_rejects_wrong_width():
    proj = OutputProjector("linear", in_dim=16, out_dim=8, num_queries=4)
    with pytest.raises(ValueError, match=r"\[B, n, 16\]"):
        proj(torch.randn(1, 4, 12), torch.randn(1, 4, 12))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_input_projector_tokens(kind):
    proj = InputProjector(kind, in_dim=32, out_dim=64, num_tokens=3)
    assert proj(torch.randn(2, 32)).shape == (2, 3, 64)


def test_unknown_projector_type():
    with pytest.raises(ValueError, match="transformer"):
        OutputProjector("conv", 4, 4, 1)
