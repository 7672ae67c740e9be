"""Training settings are checked before anything is built: every number finite, seeds within what numpy and
accelerate's ``set_seed`` take (0..2**32-1); through ``anygen train`` a bad one is one line naming the field,
exit 2 (not a raw ValueError from ``set_seed``, not a run with ``lr=inf``)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from anygen.train.config import MAX_SEED, ConfigError, TrainConfig

BASE = ["train", "--data", "data.json", "--out", "{out}", "--no-progress", "--quiet"]
STAGE = {
    "1": ["--stage", "1"],
    "3": ["--stage", "3"],
    "generator": ["--stage", "generator", "--modality", "image"],
    "encoder": ["--stage", "encoder"],
}


def _run(tmp_path, capsys, stage, *args):
    from anygen.cli import main

    out = tmp_path / "out"
    argv = [a.format(out=out) for a in BASE] + STAGE[stage] + list(args)
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err, out


@pytest.mark.parametrize(
    "stage, args, fragment",
    [
        ("1", ["--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        ("1", ["--seed", str(2**64)], "seed: Input should be less than or equal to 4294967295"),
        ("1", ["--seed", str(2**32)], "seed: Input should be less than or equal to 4294967295"),
        ("1", ["--lr", "inf"], "lr: Input should be a finite number"),
        ("1", ["--lr", "nan"], "lr: Input should be a finite number"),
        ("1", ["--weight-decay", "inf"], "weight_decay: Input should be a finite number"),
        ("1", ["--warmup-ratio", "nan"], "warmup_ratio: Input should be a finite number"),
        ("1", ["--max-grad-norm", "inf"], "max_grad_norm: Input should be a finite number"),
        ("1", ["--betas", "nan,0.95"], "betas.0: Input should be a finite number"),
        ("1", ["--lm-weight", "inf"], "lm_weight: Input should be a finite number"),
        ("1", ["--align-weight", "nan"], "align_weight: Input should be a finite number"),
        ("1", ["--diffusion-weight", "inf"], "diffusion_weight: Input should be a finite number"),
        ("1", ["--snr-gamma", "inf"], "snr_gamma: Input should be a finite number"),
        ("3", ["--lora-alpha", "inf"], "lora.alpha: Input should be a finite number"),
        ("3", ["--lora-dropout", "nan"], "lora.dropout: Input should be a finite number"),
        (
            "generator",
            ["--seed", "-1"],
            "generator train config: seed: Input should be greater than or equal to 0",
        ),
        ("generator", ["--seed", str(2**64)], "seed: Input should be less than or equal to 4294967295"),
        ("generator", ["--lr", "inf"], "lr: Input should be a finite number"),
        ("generator", ["--snr-gamma", "nan"], "snr_gamma: Input should be a finite number"),
        ("generator", ["--caption-dropout", "nan"], "caption_dropout: Input should be a finite number"),
        (
            "encoder",
            ["--seed", str(2**32)],
            "encoder train config: seed: Input should be less than or equal to",
        ),
        ("encoder", ["--lr", "nan"], "lr: Input should be a finite number"),
    ],
)
def test_bad_training_settings_are_one_line_naming_the_field(tmp_path, capsys, stage, args, fragment):
    code, err, out = _run(tmp_path, capsys, stage, *args)
    assert code == 2 and len(err) == 1, (code, err)
    assert err[0].startswith("anygen: error: ") and fragment in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    "stage, setting, fragment",
    [
        ("1", "lr: .inf", "lr: Input should be a finite number"),
        ("1", "seed: -5", "seed: Input should be greater than or equal to 0"),
        ("generator", "vae_lr: .nan", "vae_lr: Input should be a finite number"),
        ("generator", "kl_weight: .inf", "kl_weight: Input should be a finite number"),
        ("encoder", "temperature: .inf", "temperature: Input should be a finite number"),
    ],
)
def test_settings_from_a_yaml_config_are_checked_the_same(tmp_path, capsys, stage, setting, fragment):
    config = tmp_path / "train.yaml"
    config.write_text(setting + "\n")
    code, err, _ = _run(tmp_path, capsys, stage, "--config", str(config))
    assert code == 2 and len(err) == 1 and fragment in err[0], (code, err)


def test_the_largest_seed_is_accepted_and_set_seed_takes_it():
    from accelerate.utils import set_seed

    from anygen.train.encoder import EncoderTrainConfig
    from anygen.train.generator import GeneratorTrainConfig

    assert MAX_SEED == 2**32 - 1
    assert TrainConfig.build(stage=1, data="d", out="o", seed=MAX_SEED).seed == MAX_SEED
    assert GeneratorTrainConfig.build(modality="image", data="d", out="o", seed=MAX_SEED).seed == MAX_SEED
    assert EncoderTrainConfig.build(data="d", out="o", seed=0).seed == 0
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        set_seed(MAX_SEED)  # what the training loop calls with cfg.seed
        with pytest.raises(ValueError):
            set_seed(MAX_SEED + 1)  # the raw error the config now prevents
    finally:
        random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])
    with pytest.raises(ConfigError, match="seed"):
        TrainConfig.build(stage=1, data="d", out="o", seed=MAX_SEED + 1)


def test_data_set_weights_are_finite(tmp_path):
    from anygen.train.data import DataError, read_data_spec

    spec = tmp_path / "data.yaml"
    spec.write_text("sets:\n  a: {path: a.json, weight: .inf}\n")
    with pytest.raises((ConfigError, DataError), match="weight"):
        read_data_spec(spec)
