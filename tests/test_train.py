"""Training (anygen.train): NExT-GPT's three stages on the tiny pipeline and the shared NExT-GPT samples, on CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anygen import AnyToAnyPipeline
from anygen.prompt import Turn
from anygen.train import ConfigError, DataError, TrainConfig, apply_lora_adapter, load_sets, train
from anygen.train.captions import CaptionTargets
from anygen.train.data import read_set
from anygen.train.losses import alignment_loss, diffusion_target, min_snr_weights
from anygen.train.sampler import ModalityBatchSampler
from anygen.train.sequences import IGNORE, SequenceBuilder

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "train"
QUIET = dict(progress=False, verbose=False, tensorboard=False)


@pytest.fixture(scope="module")
def pairs(samples) -> Path:
    return samples / "T_X_pair_data"


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# -- config ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"stage": 4}, "stage"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"align_loss": "cosine"}, "align_loss"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"lora": {"save": "both"}}, "lora.save"),
        ({"learning_rate": 1e-3}, "learning_rate: unknown setting"),
        ({"stop_after": 20, "max_steps": 10}, "stop_after"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        TrainConfig.build({"stage": 2, "data": "d.yaml", "out": "o"}, **overrides)


def test_config_file_and_missing_required(tmp_path, capsys):
    from anygen.train import cli

    (tmp_path / "s.yaml").write_text("stage: 2\nlr: 0.01\nlora: {r: 8}\n")
    args = cli.build_parser().parse_args(
        [
            "--config",
            str(tmp_path / "s.yaml"),
            "--data",
            "d.json",
            "--out",
            "o",
            "--lr",
            "0.02",
            "--lora-alpha",
            "16",
        ]
    )
    cfg = cli.config_from_args(args)
    assert (cfg.stage, cfg.lr, cfg.lora.r, cfg.lora.alpha) == (2, 0.02, 8, 16.0)
    assert cli.main(["--data", "d.json"]) == 2
    assert "--stage, --out required" in capsys.readouterr().err


# -- data -----------------------------------------------------------------------------------------------------
def test_pair_list_as_captioning_and_as_generation(pairs):
    s1 = read_set("cc3m", pairs / "cc3m" / "cc3m.json", media_root=None, embed_root=None, stage=1)
    assert len(s1.examples) == 20 and not s1.skipped
    ex = s1.examples[0]
    assert [t.role for t in ex.turns] == ["user", "assistant"]
    assert ex.turns[0].media["image"] == [pairs / "cc3m" / "images" / "001312382.jpg"]  # found under images/
    assert ex.turns[1].text == "cricket player was named award category and runner - up behind person"
    assert ex.group == "image->text" and not ex.targets

    s2 = read_set("cc3m", pairs / "cc3m" / "cc3m.json", media_root=None, embed_root=None, stage=2)
    ex = s2.examples[0]
    caption = "cricket player was named award category and runner - up behind person"
    assert (ex.turns[0].text, ex.turns[1].text) == (caption, caption + "<image>")  # NExT-GPT's stage-2 answer
    assert ex.targets[0].caption == caption and ex.targets[0].media.name == "001312382.jpg"
    assert ex.group == "text->image"


def test_comprehension_and_generation_files(pairs, samples):
    comp = read_set(
        "c",
        pairs / "audiocap" / "audiocap_comprehension.json",
        media_root=None,
        embed_root=None,
        stage=1,
        skip_bad=True,
    )
    ex = comp.examples[0]
    assert ex.turns[0].text.startswith("<audio>\n") and ex.turns[0].media["audio"][0].name == "106158.wav"
    gen = read_set(
        "g", pairs / "cc3m" / "cc3m_generation.json", media_root=None, embed_root=samples / "embed", stage=2
    )
    ex = gen.examples[0]
    assert ex.turns[1].text == "Sure thing! <image>"
    t = ex.targets[0]
    assert t.caption == "cricket player was named award category and runner - up behind person"
    assert t.embedding == samples / "embed" / "001312382.jpg.npy" and t.media.name == "001312382.jpg"


def test_instruction_tuning_forms(samples):
    root = REPO.parent / "shared" / "data" / "nextgpt-samples" / "T_X_pair_data" / "cc3m" / "images"
    new = read_set("n", EXAMPLES / "instruction_new.json", media_root=root, embed_root=None, stage=3).examples
    assert new[0].targets[0].caption == "players wait for a conversion"
    assert new[1].turns[0].media["image"] == [root / "001312382.jpg"] and len(new[1].turns) == 4
    assert [(t.modality, t.caption) for t in new[1].targets] == [("audio", "A crowd cheers and applauds")]
    assert new[1].group == "image->audio"
    legacy = read_set(
        "l", EXAMPLES / "instruction_legacy.json", media_root=root, embed_root=samples / "embed", stage=3
    ).examples
    # Legacy answers carry output_modality + caption; the signal tokens follow the text.
    assert legacy[0].turns[1].text == "Sure, a train running and then a horn honking.<audio>"
    assert legacy[0].targets[0].caption == "A train running and then a horn honking"
    assert legacy[0].targets[0].embedding == samples / "embed" / "106158.wav.npy"  # <mm_name>.npy
    assert legacy[1].turns[0].media["image"] == [root / "001319946.jpg"] and not legacy[1].targets


def test_malformed_entries_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"conversations": [{"from": "gpt", "value": "hi"}]}]))
    with pytest.raises(DataError, match=r"bad\.json entry 0: the conversation must start with a human turn"):
        read_set("b", bad, media_root=None, embed_root=None, stage=3)
    bad.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(DataError, match=r"bad\.json entry 0: not a NExT-GPT entry"):
        read_set("b", bad, media_root=None, embed_root=None, stage=3)
    with pytest.raises(DataError, match="stage 2 trains the output projectors"):
        load_sets(EXAMPLES / "DATA-stage3.yaml", stage=2)


def test_missing_media_is_an_error_naming_file_and_entry_or_skipped(pairs, capsys, tmp_path):
    data = pairs / "audiocap" / "audiocap.json"
    with pytest.raises(
        DataError,
        match=r"audiocap\.json entry 3 \(audio_name '88693\.wav'\): audio file .*audios/88693\.wav not found",
    ):
        load_sets(data, stage=1)
    (s,) = load_sets(data, stage=1, skip_bad=True)
    assert (len(s.examples), len(s.skipped)) == (6, 14)
    from anygen.train import cli

    assert cli.main(["--stage", "1", "--data", str(data), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anygen: error: audiocap.json entry 3") and "\n" not in err


def test_unreadable_media_is_named_or_skipped_and_counted(tmp_path, pairs):
    (tmp_path / "broken.jpg").write_text("not an image")
    data = tmp_path / "pairs.json"
    data.write_text(
        json.dumps(
            [
                {"caption": "players wait", "image_name": str(pairs / "cc3m" / "images" / "001319946.jpg")},
                {"caption": "a broken file", "image_name": "broken.jpg"},
            ]
        )
    )
    kw = dict(stage=1, data=str(data), max_steps=1, batch_size=2, **QUIET)
    with pytest.raises(
        DataError, match=r"pairs\.json entry 1 \(image_name 'broken\.jpg'\): image .*broken\.jpg"
    ):
        train(out=str(tmp_path / "a"), **kw)
    result = train(out=str(tmp_path / "b"), skip_bad=True, **kw)
    assert result.skipped_examples == 1 and _metrics(tmp_path / "b")[0]["skipped"] == 1


def test_sampler_draws_one_group_per_batch_with_the_mixing_weights():
    sets = load_sets(EXAMPLES / "DATA-stage3.yaml", stage=3)
    sampler = ModalityBatchSampler(sets, batch_size=4, seed=3)
    assert sampler.groups == ["image->audio", "image->text", "text->audio", "text->image"]
    # it_new (weight 2) spreads over 2 entries, the others (weight 1 each) over theirs.
    assert np.allclose(sampler.group_probs, [0.2, 0.3, 0.3, 0.2])
    for k in range(50):
        batch = sampler.batch(k)
        assert len({sampler.examples[i].group for i in batch}) == 1
        assert batch == ModalityBatchSampler(sets, batch_size=4, seed=3).batch(k)  # stateless: resumable
    assert sampler.local_batch(7, 1, 2) == sampler.batch(7)[2:]


# -- prompts --------------------------------------------------------------------------------------------------
def test_training_prompts_are_the_pipelines_prompts(tiny_pipe, pairs):
    from anygen.media import load_image

    ex = read_set(
        "c", pairs / "cc3m" / "cc3m_comprehension.json", media_root=None, embed_root=None, stage=1
    ).examples[0]
    image = load_image(ex.turns[0].media["image"][0])
    turns = [Turn("user", ex.turns[0].text, {"image": [image]}), Turn("assistant", ex.turns[1].text)]
    enc = SequenceBuilder(tiny_pipe).encode(turns)
    prompt_len = next(i for i, label in enumerate(enc.labels) if label != IGNORE)
    lm = tiny_pipe.llm
    with torch.no_grad():
        embeds = lm.embeddings(torch.tensor(enc.ids[:prompt_len]))
        ((start, _, item),) = enc.media
        embeds[start] = tiny_pipe.encode_media("image", [item])[0][0]
        expected = tiny_pipe._embed_conversation(turns[:1], None)
    assert torch.equal(embeds, expected)
    answer = lm.tokenizer.decode([t for t in enc.labels if t != IGNORE])
    assert answer == f" {ex.turns[1].text}\n###"  # the template's answer, closed by its stop string


def test_only_assistant_turns_are_labelled_and_tags_become_signal_spans(tiny_pipe):
    turns = [
        Turn("user", "hi"),
        Turn("assistant", "hello"),
        Turn("user", "a cat?"),
        Turn("assistant", "here <image> and <audio>"),
    ]
    enc = SequenceBuilder(tiny_pipe).encode(turns)
    lm = tiny_pipe.llm
    labelled = [t for t in enc.labels if t != IGNORE]
    img, aud = list(lm.spans["image"].token_ids), list(lm.spans["audio"].token_ids)
    text = lm.tokenizer.decode(labelled, skip_special_tokens=True)
    assert text == " hello\n here  and \n###"
    assert [(m, k) for _, m, k in enc.spans] == [("image", 0), ("audio", 1)]
    for start, m, _ in enc.spans:
        span = img if m == "image" else aud
        assert enc.ids[start : start + len(span)] == span == enc.labels[start : start + len(span)]
    assert "hi" not in lm.tokenizer.decode(labelled) and "a cat" not in lm.tokenizer.decode(labelled)


# -- caption embeddings ---------------------------------------------------------------------------------------
def test_caption_embeddings_are_cached_on_disk_and_match_the_text_encoder(tiny_pipe, pairs, tmp_path):
    examples = read_set(
        "g", pairs / "cc3m" / "cc3m.json", media_root=None, embed_root=None, stage=2, limit=5
    ).examples
    first = CaptionTargets(tiny_pipe, tmp_path)
    assert first.prepare(examples) == {"npy": 0, "cached": 0, "encoded": 5}
    second = CaptionTargets(tiny_pipe, tmp_path)
    assert second.prepare(examples) == {"npy": 0, "cached": 5, "encoded": 0}
    t = examples[2].targets[0]
    expected = tiny_pipe.generator("image").encode_text([t.caption])[0]
    assert torch.equal(second.get(t, "x"), expected)
    assert len(list(tmp_path.glob("image-*/*/*.npy"))) == 5


def test_nextgpt_npy_embeddings_must_fit_the_generator(tiny_pipe, pairs, samples, tmp_path):
    for name in ("cc3m/cc3m_generation.json", "audiocap/audiocap_generation.json"):
        examples = read_set(
            "g", pairs / name, media_root=None, embed_root=samples / "embed", stage=2, limit=1
        ).examples
        want = re.escape("(77, 1024)" if "cc3m" in name else "(512,)")
        with pytest.raises(DataError, match=rf"has shape {want} but the .* generator .* is conditioned on"):
            CaptionTargets(tiny_pipe, tmp_path).prepare(examples)
    # Files of the generator's own shape are read as they are.
    (tmp_path / "emb").mkdir()
    np.save(tmp_path / "emb" / "001312382.jpg.npy", np.full((77, 32), 0.5, np.float16))
    examples = read_set(
        "g",
        pairs / "cc3m" / "cc3m_generation.json",
        media_root=None,
        embed_root=tmp_path / "emb",
        stage=2,
        limit=1,
    ).examples
    targets = CaptionTargets(tiny_pipe, tmp_path / "cache")
    assert targets.prepare(examples)["npy"] == 1
    assert torch.equal(targets.batch([(examples[0].targets[0], "x")]), torch.full((1, 77, 32), 0.5))


# -- losses ---------------------------------------------------------------------------------------------------
def test_alignment_losses():
    pred, target = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    target[..., 0] = 3.0
    target[..., 1] = 4.0  # every token's error has norm 5
    assert torch.allclose(
        alignment_loss(pred, target, "l2"), torch.tensor([5.0, 5.0])
    )  # NExT-GPT's l2_loss.mean()
    assert torch.allclose(alignment_loss(pred, target, "mse"), torch.tensor([25 / 4, 25 / 4]))


def test_diffusion_targets_follow_the_prediction_type():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    assert torch.equal(diffusion_target(sched, "epsilon", x0, noise, t), noise)
    ab = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    assert torch.allclose(diffusion_target(sched, "v_prediction", x0, noise, t), v, atol=1e-6)
    snr = ab.flatten() / (1 - ab.flatten())
    assert torch.allclose(min_snr_weights(sched, t, 5.0, "epsilon"), torch.clamp(snr, max=5) / snr)
    assert torch.allclose(min_snr_weights(sched, t, 5.0, "v_prediction"), torch.clamp(snr, max=5) / (snr + 1))


def test_diffusion_loss_reads_each_generators_media_and_prediction_type(samples):
    from anygen.generators import build_generator
    from anygen.media import Audio, Video, load_image
    from anygen.train.diffusion import DiffusionLoss

    pairs = samples / "T_X_pair_data"
    items = {
        "stable-diffusion": load_image(pairs / "cc3m" / "images" / "001312382.jpg"),
        "zeroscope": Video.load(samples / "assets" / "test.mp4"),
        "audioldm": Audio.load(pairs / "audiocap" / "audios" / "106158.wav"),
    }
    for kind, item in items.items():
        for prediction in ("epsilon", "v_prediction"):
            gen = build_generator(kind, config={"prediction_type": prediction}, seed=0)
            loss_fn = DiffusionLoss(gen, snr_gamma=5.0)
            assert loss_fn.prediction_type == prediction
            cond = torch.zeros(2, *gen.condition_shape, requires_grad=True)
            loss = loss_fn(cond, [item, item], seeds=[1, 2])
            assert loss.shape == (2,) and torch.isfinite(loss).all() and loss[0] != loss[1]
            loss.sum().backward()
            assert cond.grad.abs().sum() > 0  # gradients reach the conditioning through the frozen UNet


# -- stages ---------------------------------------------------------------------------------------------------
def test_stage1_trains_the_input_projector_only(tmp_path, pairs):
    out = tmp_path / "s1"
    train(
        stage=1,
        data=str(pairs / "cc3m" / "cc3m_comprehension.json"),
        out=str(out),
        max_steps=3,
        batch_size=2,
        **QUIET,
    )
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3] and all("loss" in r and "align_loss" not in r for r in rows)
    base, trained = AnyToAnyPipeline.from_pretrained("tiny"), AnyToAnyPipeline.from_pretrained(out)
    assert not torch.equal(
        base.input_projector("imagebind").proj.weight, trained.input_projector("imagebind").proj.weight
    )
    for (name, a), b in zip(
        base.llm.model.state_dict().items(), trained.llm.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name  # LLM frozen
    assert torch.equal(base.output_projector("image").fc.weight, trained.output_projector("image").fc.weight)
    trained.set_progress_bar_config(disable=True)
    out_img = trained(
        "what is this?", images=[pairs / "cc3m" / "images" / "001319946.jpg"], seed=0, max_new_tokens=4
    )
    assert isinstance(out_img.text, str)


def test_stage2_learns_the_alignment(tmp_path, pairs):
    """The alignment loss on 8 training captions falls by >= 80%, and each caption's projected conditioning is
    nearer its own target embedding than any other caption's.

    The tiny pipeline's image targets (its random one-layer CLIP text encoder) are distinct enough for this: each
    caption's embedding lies ~2.5 per token from the mean of all (per-token norm 5.7); the test checks that too.
    (Its audio targets, unit CLAP vectors, are nearly identical: cosine ~0.999 between captions, so they would
    not make a meaningful test.) Nearest-target is judged by Euclidean distance, which subtracting the mean
    target would not change."""
    from anygen.train.evaluate import teacher_forced_conditioning

    data = tmp_path / "DATA.yaml"
    data.write_text(f"sets:\n  cc3m: {{path: {pairs / 'cc3m' / 'cc3m.json'}, limit: 8}}\n")
    out = tmp_path / "s2"
    result = train(
        stage=2,
        data=str(data),
        out=str(out),
        max_steps=300,
        batch_size=8,
        lr=5e-3,
        warmup_ratio=0.05,
        **QUIET,
    )
    align = [r["align_loss"] for r in _metrics(out)]
    assert len(align) == 300 and [r["align_loss"] for r in result.metrics] == align
    drop = 1 - np.mean(align[-5:]) / align[0]
    assert drop >= 0.8, f"alignment loss fell only {drop:.0%} ({align[0]:.3f} -> {np.mean(align[-5:]):.3f})"

    pipe = AnyToAnyPipeline.from_pretrained(out)
    examples = load_sets(data, stage=2)[0].examples
    targets = pipe.generator("image").encode_text([e.targets[0].caption for e in examples]).float()
    spread = (targets - targets.mean(0)).norm(dim=-1).mean()
    assert spread > 0.3 * targets.norm(dim=-1).mean()  # the targets differ: the test means something
    pred = teacher_forced_conditioning(pipe, examples, "image")
    dist = torch.cdist(pred.flatten(1), targets.flatten(1))
    assert torch.equal(dist.argmin(dim=1), torch.arange(len(examples))), dist
    pipe.set_progress_bar_config(disable=True)
    made = pipe("players wait for a conversion", output_modalities=["image"], seed=0, max_new_tokens=4)
    assert len(made.images) == 1


def test_stage3_resume_is_exact_and_lora_saves_merged_or_as_adapter(tmp_path):
    kw = dict(
        stage=3,
        data=str(EXAMPLES / "DATA-stage3.yaml"),
        max_steps=6,
        batch_size=2,
        lora={"r": 4},
        embed_cache=str(tmp_path / "cache"),
        **QUIET,
    )
    straight = train(out=str(tmp_path / "a"), **kw)
    first = train(out=str(tmp_path / "b"), stop_after=3, **kw)
    assert not first.finished and not (tmp_path / "b" / "pipeline.yaml").exists()
    ckpt = tmp_path / "b" / "checkpoints" / "step-0000003"
    assert {p.name for p in ckpt.iterdir()} == {
        "trainable.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "scheduler.json",
        "rng-0.json",
        "state.json",
    }  # no pickles: tests/test_safe_resume.py
    resumed = train(out=str(tmp_path / "b"), resume=str(tmp_path / "b"), **kw)
    losses = [r["loss"] for r in first.metrics + resumed.metrics]
    assert losses == pytest.approx([r["loss"] for r in straight.metrics], rel=1e-6)
    assert [r["step"] for r in _metrics(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]
    worst = 0.0
    for f in (
        "llm/model.safetensors",
        "input_projectors/imagebind.safetensors",
        "outputs/image/projector.safetensors",
        "outputs/audio/projector.safetensors",
    ):
        a, b = load_file(tmp_path / "a" / f), load_file(tmp_path / "b" / f)
        worst = max(worst, max((a[k] - b[k]).abs().max().item() for k in a))
    assert worst <= 1e-6, worst

    # Adapter instead of merged: llm/ without the LoRA, llm-lora/ the adapter; together they equal the merged LLM.
    train(out=str(tmp_path / "c"), **{**kw, "lora": {"r": 4, "save": "adapter"}})
    adapter = json.loads((tmp_path / "c" / "llm-lora" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (4, 32.0, 0.1)
    assert sorted(adapter["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    merged = AnyToAnyPipeline.from_pretrained(tmp_path / "a")
    split = AnyToAnyPipeline.from_pretrained(tmp_path / "c")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(split.llm.model.state_dict()[q], merged.llm.model.state_dict()[q])
    apply_lora_adapter(split, tmp_path / "c" / "llm-lora")
    for name, w in merged.llm.model.state_dict().items():
        assert torch.allclose(split.llm.model.state_dict()[name], w, atol=1e-6), name
    merged.set_progress_bar_config(disable=True)
    made = merged("a train", output_modalities=["audio"], seed=0, max_new_tokens=4)
    assert len(made.audios) == 1


def test_stage2_with_the_diffusion_loss(tmp_path, pairs):
    out = tmp_path / "d"
    train(
        stage=2,
        data=str(pairs / "cc3m" / "cc3m_generation.json"),
        out=str(out),
        max_steps=2,
        batch_size=2,
        diffusion_weight=1.0,
        snr_gamma=5.0,
        **QUIET,
    )
    rows = _metrics(out)
    assert all(r["diffusion_loss"] > 0 and "align_loss" in r for r in rows)


def test_anygen_cli_registers_train():
    from anygen import cli

    parser = cli.build_parser()
    try:
        args = parser.parse_args(["train", "--stage", "2", "--data", "d.json", "--out", "o"])
    except SystemExit:
        pytest.fail("anygen.cli.build_parser does not register `train` (the modules in _COMMAND_MODULES)")
    assert args.handler.__module__ == "anygen.train.cli"
