"""Component training: ``--stage generator`` (VAE, vocoder, denoiser + text encoder), ``--stage encoder``
(contrastive binding), ``--stage lm`` (language pre-training), on the tiny pipeline and a small generated world."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anygen import AnyToAnyPipeline
from anygen.cli import main as cli_main
from anygen.world.datasets import make_world
from anygen.world.render import render_video

SMALL = dict(images_per_combo=1, videos_per_combo=1, audios_per_combo=2, conversations=24, progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), **SMALL)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_generator_stage_trains_each_part_and_saves_a_loadable_pipeline(world, tmp_path, modality):
    from anygen.train.generator import train_generator

    base = AnyToAnyPipeline.from_pretrained("tiny").generator(modality).pipeline
    before = {name: _state(getattr(base, name)) for name in ("vae", "unet", "text_encoder")}
    if modality == "audio":
        before["vocoder"] = _state(base.vocoder)
    out = train_generator(
        modality=modality, pipeline="tiny", data=world.generators[modality], out=tmp_path / "g",
        max_steps=2, vae_steps=2, vocoder_steps=2 if modality == "audio" else 0, batch_size=2,
        vae_batch_size=2, log_every=1, progress=False, verbose=False,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    phases = {r["phase"] for r in rows}
    assert {"vae", f"{modality} denoiser"} <= phases and all(np.isfinite(r["loss"]) for r in rows)
    assert ("vocoder" in phases) == (modality == "audio")
    trained = AnyToAnyPipeline.from_pretrained(out).generator(modality).pipeline
    for name, state in before.items():
        assert _changed(state, getattr(trained, name)), f"{name} did not change"
    assert trained.vae.config.scaling_factor != base.vae.config.scaling_factor
    media = AnyToAnyPipeline.from_pretrained(out).generator(modality).generate_from_text(
        ["A red circle."], num_inference_steps=2
    )
    assert len(media) == 1


def test_generator_stage_errors_name_the_setting(world, tmp_path):
    from anygen.train.config import ConfigError
    from anygen.train.data import DataError
    from anygen.train.generator import train_generator

    with pytest.raises(ConfigError, match="vocoder_steps"):
        train_generator(modality="image", data=world.generators["image"], out=tmp_path, vocoder_steps=1,
                        max_steps=0, verbose=False, progress=False)
    with pytest.raises(ConfigError, match="modality"):
        train_generator(modality="smell", data=world.generators["image"], out=tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"media": "nope.png", "caption": "x"}]))
    with pytest.raises(DataError, match="nope.png"):
        train_generator(modality="image", data=bad, out=tmp_path / "o", verbose=False, progress=False)


def test_optimise_gives_each_parameter_group_its_own_rate(tmp_path):
    from anygen.train.simple import optimise

    fast, slow = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    groups = [{"params": [fast]}, {"params": [slow], "lr": 1e-4}]
    optimise(groups, lambda k: {"loss": (fast - 1).pow(2).sum() + (slow - 1).pow(2).sum()}, steps=1, lr=1e-3,
             name="groups", metrics=tmp_path / "m.jsonl", warmup=1, max_grad_norm=None, progress=False)
    moved_fast, moved_slow = float(fast.detach().abs().mean()), float(slow.detach().abs().mean())  # Adam's first step: about the rate
    assert moved_fast == pytest.approx(10 * moved_slow, rel=1e-3) and moved_fast > 0


def test_generator_text_encoder_rate_is_checked(world, tmp_path):
    from anygen.train.config import ConfigError
    from anygen.train.generator import GeneratorTrainConfig

    with pytest.raises(ConfigError, match="text_encoder_lr"):
        GeneratorTrainConfig.of(None, modality="image", data="x.json", out=str(tmp_path), text_encoder_lr=0)
    cfg = GeneratorTrainConfig.of(None, modality="image", data="x.json", out=str(tmp_path), text_encoder_lr=5e-3)
    assert cfg.text_encoder_lr == 5e-3


def _caption_similarity(generator, captions) -> float:
    """Mean cosine between the conditioning (mean over tokens) of different captions."""
    with torch.no_grad():
        e = torch.nn.functional.normalize(generator._encode(captions, "cpu").mean(dim=1), dim=-1)
    sims = e @ e.T
    return float(sims[~torch.eye(len(captions), dtype=torch.bool)].mean())


def test_text_steps_teach_the_text_encoder_to_tell_captions_apart(world, tmp_path):
    from anygen.train.generator import read_manifest, train_generator

    captions = sorted(set(read_manifest(world.generators["audio"])[1]))
    before = _caption_similarity(AnyToAnyPipeline.from_pretrained("tiny").generator("audio"), captions)
    out = train_generator(
        modality="audio", pipeline="tiny", data=world.generators["audio"], out=tmp_path / "g", text_steps=100,
        max_steps=0, batch_size=8, log_every=10, progress=False, verbose=False,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["text encoder"] * 10 and rows[-1]["loss"] < rows[0]["loss"]
    after = _caption_similarity(AnyToAnyPipeline.from_pretrained(out).generator("audio"), captions)
    assert before > 0.95 and after < before - 0.3, (before, after)
    print(before, after)  # AudioLDM's pooled CLAP starts collapsed


def test_generator_stage_from_the_command_line(world, tmp_path, capsys):
    code = cli_main(["train", "--stage", "generator", "--modality", "image", "--data",
                     str(world.generators["image"]), "--out", str(tmp_path / "g"), "--lora-r", "4"])
    assert code == 2 and "--lora-r not taken by --stage generator" in capsys.readouterr().err
    code = cli_main(["train", "--stage", "generator", "--modality", "image", "--data",
                     str(world.generators["image"]), "--out", str(tmp_path / "g"), "--max-steps", "1",
                     "--vae-steps", "1", "--batch-size", "2", "--no-progress", "--quiet"])
    assert code == 0 and (tmp_path / "g" / "pipeline.yaml").is_file()


def test_encoder_stage_binds_media_to_text(world, tmp_path):
    from anygen.train.encoder import contrastive_loss, train_encoder

    # The loss: perfectly matched pairs score lower than mismatched ones.
    text = torch.eye(3)
    labels = torch.tensor([0, 1, 2, 0])
    good = contrastive_loss(text[labels], text, labels, torch.tensor(10.0))
    bad = contrastive_loss(text[labels.roll(1)], text, labels, torch.tensor(10.0))
    assert good < bad

    before = _state(AnyToAnyPipeline.from_pretrained("tiny").encoder("imagebind"))
    out = train_encoder(
        pipeline="tiny", data=[str(p) for p in world.generators.values()], out=tmp_path / "e", max_steps=3,
        batch_size=4, log_every=1, progress=False, verbose=False,
    )
    assert _changed(before, AnyToAnyPipeline.from_pretrained(out).encoder("imagebind"))
    assert (out / "text_tower" / "config.json").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)


def test_lm_stage_trains_the_whole_llm_and_the_input_projector(world, tmp_path):
    from anygen.train.loop import train

    base = AnyToAnyPipeline.from_pretrained("tiny")
    llm_before, proj_before = _state(base.llm), _state(base.input_projector("imagebind"))
    result = train(stage="lm", pipeline="tiny", data=str(world.data_stage3), out=str(tmp_path / "lm"),
                   max_steps=2, batch_size=4, progress=False, verbose=False, tensorboard=False)
    trained = AnyToAnyPipeline.from_pretrained(result.out_dir)
    assert _changed(llm_before, trained.llm)
    assert _changed(proj_before, trained.input_projector("imagebind"))
    # every LLM weight moved, not only the signal-token rows
    moved = [k for k, v in trained.llm.state_dict().items() if not torch.equal(v, llm_before[k])]
    assert any("layers.0.self_attn" in k for k in moved) and any("mlp" in k for k in moved)


def test_tiny_encoder_with_two_frame_clips_sees_motion():
    from anygen.encoders.tiny import TinyImageBindConfig, TinyImageBindEncoder

    right = render_video("red", "square", "right")
    left = type(right)(frames=right.frames[::-1].copy(), fps=right.fps)  # the same frames, played backwards
    averaging = TinyImageBindEncoder.from_config(TinyImageBindConfig(), seed=0)
    a, b = averaging.encode("video", [right, left])
    assert torch.allclose(a, b, atol=1e-5)  # one frame at a time: the direction is lost
    pairs = TinyImageBindEncoder.from_config(TinyImageBindConfig(temporal_frames=2), seed=0)
    a, b = pairs.encode("video", [right, left])
    assert not torch.allclose(a, b, atol=1e-3)
    assert pairs.encode("image", [np.full((32, 32, 3), 255, np.uint8)]).shape == (1, 32)


def test_the_mini_recipe_runs_end_to_end_and_caches_its_steps(tmp_path):
    """The whole recipe, a few iterations per step: it cannot rot. A rerun redoes nothing; a changed step and
    the steps after it run again."""
    from anygen.world import recipe

    logs: list[str] = []
    result = recipe.train_mini(tmp_path / "run", quick=True, progress=False, log=logs.append)
    assert result.ran == recipe.ORDER and not result.cached
    pipe = AnyToAnyPipeline.from_pretrained(result.pipeline)
    assert set(pipe.output_modalities) == {"image", "video", "audio"}
    # stored in float16 (half the bytes), loaded as float32 by every loader
    from safetensors import safe_open

    for stored in (result.pipeline / "llm" / "model.safetensors", result.pipeline / "encoders" / "imagebind" /
                   "model.safetensors", next((result.pipeline / "outputs" / "video" / "generator" / "unet").glob(
                       "*.safetensors"))):
        with safe_open(str(stored), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}, stored  # noqa: SIM118
    pipe.load_all()
    assert pipe.llm.dtype == torch.float32 and pipe.generator("video").pipeline.unet.dtype == torch.float32
    assert next(pipe.encoder("imagebind").parameters()).dtype == torch.float32
    report = result.report
    assert report is not None and (tmp_path / "run" / "eval" / "report.json").is_file()
    assert {"text->image", "image->text", "text->audio"} <= set(report["tasks"])

    again = recipe.train_mini(tmp_path / "run", quick=True, progress=False, log=logs.append)
    assert again.ran == [] and again.cached == recipe.ORDER

    exported = recipe.export_mini(result.pipeline, weights=tmp_path / "w" / "mini", spec=tmp_path / "mini.yaml")
    assert (exported / "pipeline.yaml").is_file() and not (exported / "checkpoints").exists()
    assert "${bundled_weights}/mini/llm" in (tmp_path / "mini.yaml").read_text()
