"""Frame positions in a Zeroscope UNet3D's temporal attention: order-aware, weightless, kept by save/load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from anygen.errors import SpecError, WeightsError
from anygen.generators.diffusion import ZeroscopeGenerator
from anygen.generators.frame_positions import FramePositions, add_frame_positions, has_frame_positions


def test_the_embedding_is_diffusers_sinusoid_for_any_frame_count():
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    x = torch.randn(3, 24, 16)
    assert torch.allclose(FramePositions(16)(x), SinusoidalPositionalEmbedding(16, 32)(x), atol=1e-6)
    assert FramePositions(16)(torch.zeros(1, 100, 16)).shape == (1, 100, 16)  # no maximum length


def test_temporal_attention_with_positions_knows_the_order_of_frames():
    from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel

    torch.manual_seed(0)
    block = TransformerTemporalModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=16, norm_num_groups=4
    )
    torch.nn.init.normal_(block.proj_out.weight)  # diffusers starts it at zero (the identity)
    frames = torch.randn(6, 16, 4, 4)  # [batch * frames, channels, h, w], one video of 6 frames
    reverse = torch.arange(5, -1, -1)

    def run(x):
        with torch.no_grad():
            return block(x, num_frames=6).sample

    # Without positions the frames are a set: reversing them reverses the output.
    assert torch.allclose(run(frames[reverse]), run(frames)[reverse], atol=1e-5)
    assert add_frame_positions(block) == 1
    assert not torch.allclose(run(frames[reverse]), run(frames)[reverse], atol=1e-3)


def test_a_generator_with_frame_positions_saves_and_loads_them_in_unchanged_files(tmp_path):
    with_positions = ZeroscopeGenerator.from_config({"frame_positions": True}, seed=0)
    plain = ZeroscopeGenerator.from_config({}, seed=0)
    assert has_frame_positions(with_positions.pipeline.unet) and not has_frame_positions(plain.pipeline.unet)
    with_positions.save_pretrained(tmp_path / "p")
    plain.save_pretrained(tmp_path / "q")
    sidecar = json.loads((tmp_path / "p" / "anygen_generator.json").read_text())
    assert sidecar["architecture"] == {"frame_positions": True}
    assert "architecture" not in json.loads((tmp_path / "q" / "anygen_generator.json").read_text())
    keys = []
    for folder in ("p", "q"):
        with safe_open(str(tmp_path / folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
            keys.append(sorted(f.keys()))
    assert keys[0] == keys[1]  # weightless: a stock UNet3DConditionModel reads the same file

    loaded = ZeroscopeGenerator.from_pretrained(tmp_path / "p")
    assert loaded.architecture() == {"frame_positions": True}

    def video(gen):
        return gen.generate_from_text(["x"], generator=torch.Generator().manual_seed(0))[0].frames

    assert (video(loaded) == video(with_positions)).all()
    assert (video(loaded) != video(plain)).any()


def test_bad_frame_positions_are_named(tmp_path):
    from anygen.spec import load_spec
    from anygen.world.recipe import INIT_SPEC

    with pytest.raises(SpecError, match="frame_positions"):
        ZeroscopeGenerator.from_config({"frame_positions": "yes"})
    spec = tmp_path / "spec.yaml"  # a spec is checked when it loads, before any model is built
    spec.write_text(INIT_SPEC.read_text().replace("frame_positions: true", "frame_positions: maybe"))
    with pytest.raises(SpecError, match="frame_positions.*maybe"):
        load_spec(spec)
    ZeroscopeGenerator.from_config({}).save_pretrained(tmp_path)
    sidecar = tmp_path / "anygen_generator.json"
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "architecture": {"motion_module": True}}))
    with pytest.raises(WeightsError, match="architecture.*motion_module"):
        ZeroscopeGenerator.from_pretrained(tmp_path)
