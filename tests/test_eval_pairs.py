"""The pairs suite (``anygen eval --suite pairs``) on real NExT-GPT pair lists: the command end to end on the tiny
pipeline with tiny random CLIP/CLAP scorers (the numbers mean nothing; the plumbing and ranges are checked), the
metric code against values worked out by hand, and the bad-input errors (one line, exit 2)."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anygen.encoders.clap import ClapEncoder
from anygen.errors import AnyGenError
from anygen.eval.pairs import TASKS, PairDataError, format_report, load_pairs, run_pairs_eval
from anygen.eval.scores import ClapScorer, ClipScorer, caption_scores, caption_tokens, clip_score
from anygen.media import Audio, Video, load_media
from anygen.output import AnyToAnyOutput

PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nextgpt-samples" / "T_X_pair_data"
CC3M, AUDIOCAP, WEBVID = (
    PAIRS / "cc3m" / "cc3m.json",
    PAIRS / "audiocap" / "audiocap.json",
    PAIRS / "webvid" / "webvid.json",
)


# ---------------------------------------------------------------------------------------------- tiny scorers


def tiny_clip_model(seed: int = 0):
    """A whole random CLIPModel (both towers) with a byte-level CLIP tokenizer and a 32 px image processor."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from anygen.generators.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(32)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, processor, tokenizer


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clip")
    model, processor, tokenizer = tiny_clip_model()
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory) -> Path:
    # seed 2: one of the pairs in test_clap_score_matches_the_model_by_hand has a positive cosine
    clap = ClapEncoder.from_config({"projection_dim": 8}, seed=2)
    return clap.save_pretrained(tmp_path_factory.mktemp("clap"))


@pytest.fixture(scope="module")
def clip(clip_dir) -> ClipScorer:
    return ClipScorer.from_pretrained(clip_dir)


@pytest.fixture(scope="module")
def clap(clap_dir) -> ClapScorer:
    return ClapScorer.from_pretrained(clap_dir)


def _main(argv, capsys):
    from anygen.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


# ---------------------------------------------------------------------------------------------- the command


def test_pairs_suite_end_to_end_on_real_data(clip_dir, clap_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = ["eval", "--pipeline", "tiny", "--suite", "pairs", "--data", str(PAIRS), "--clip", str(clip_dir)]
    argv += ["--clap", str(clap_dir), "--limit", "2", "--batch-size", "2", "--steps", "1", "--out", str(out)]
    code, stdout, err = _main(argv, capsys)
    assert code == 0, err
    assert any("pairs eval" in line for line in err)  # the progress bar
    report = json.loads(out.read_text())
    assert report["suite"] == "pairs" and report["pipeline"] == "tiny"
    assert sorted(Path(f).name for f in report["data"]) == ["audiocap.json", "cc3m.json", "webvid.json"]
    assert report["limit"] == 2 and report["batch_size"] == 2 and report["not_run"] == {}
    assert report["skipped_entries"] == 0  # the first two entries of each list have their media
    assert list(report["tasks"]) == list(TASKS) and report["n"] == 2 * len(TASKS)
    for task, summary in report["tasks"].items():
        assert summary["n"] == 2, task
        if task.startswith("text->"):
            metric = "clap_score" if task == "text->audio" else "clip_score"
            assert summary["no_output"] == 0 and 0 <= summary[metric] <= 100, (task, summary)
        else:
            assert 0 <= summary["bleu4"] <= 1 and 0 <= summary["cider"] <= 10, (task, summary)
    for item in report["items"]:
        assert set(item) >= {"task", "source", "media", "caption", "prompt", "text", "scores"}
        assert Path(item["media"]).is_file()
        for value in item["scores"].values():
            assert math.isfinite(value) and value >= 0
    captions = {e["caption"] for e in json.loads(CC3M.read_text())[:2]}
    assert {i["prompt"] for i in report["items"] if i["task"] == "text->image"} == captions
    assert {i["prompt"] for i in report["items"] if i["task"] == "audio->text"} == {
        "<audio> describe this sound."
    }
    # the one-screen table: every task and the report's numbers
    assert all(task in stdout for task in TASKS) and "BLEU-4" in stdout and "CIDEr" in stdout
    assert len(stdout.splitlines()) < 25
    clip_cell = f"{report['tasks']['text->image']['clip_score']:.2f}"
    assert any(line.startswith("text->image") and clip_cell in line for line in stdout.splitlines())


def test_tasks_without_a_scorer_are_reported_not_run(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = [
        "eval",
        "--suite",
        "pairs",
        "--data",
        str(CC3M),
        "--limit",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    code, stdout, err = _main(argv, capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert list(report["tasks"]) == ["image->text"]
    assert report["not_run"]["text->image"] == "no --clip scorer given"
    assert report["not_run"]["text->audio"] == "the data has no audio pairs"
    assert "not run: text->image (no --clip scorer given)" in stdout


# ---------------------------------------------------------------------------------------------- plumbing, with a stand-in model


class Echo:
    """A test double for the MODEL: for X->text it answers the reference caption of the medium it is shown (or,
    with ``wrong``, another medium's caption); for text->X it makes a medium tagged with its prompt (:func:`_tag`),
    except for the prompts in ``no_media``."""

    def __init__(self, captions: dict[str, str], wrong: bool = False, no_media: tuple[str, ...] = ()) -> None:
        self.captions, self.wrong, self.no_media, self.calls = captions, wrong, no_media, []

    def __call__(
        self, prompts, images=None, audios=None, videos=None, *, output_modalities, only_requested, seed
    ):
        assert only_requested and isinstance(prompts, list)
        self.calls.append((list(prompts), list(output_modalities)))
        outs = []
        for i, prompt in enumerate(prompts):
            out = AnyToAnyOutput(text="")
            shown = (images or videos or audios or [None] * len(prompts))[i]
            if shown is not None and self.captions:
                known = list(self.captions.values())
                caption = self.captions[_fingerprint(shown[0])]
                out.text = known[(known.index(caption) + 1) % len(known)] if self.wrong else caption
            tag = _tag(prompt)
            for m in output_modalities if prompt not in self.no_media else ():
                if m == "image":
                    out.images.append(Image.new("RGB", (8, 8), (tag, tag, tag)))
                elif m == "video":
                    out.videos.append(Video(np.full((2, 8, 8, 3), tag, dtype=np.uint8), 8))
                else:
                    out.audios.append(Audio(np.full(100, tag / 1000, dtype=np.float32), 16000))
            outs.append(out)
        return outs


def _tag(text: str) -> int:
    return zlib.crc32(text.encode()) % 200 + 1


class Tagger:
    """A test double for the SCORERS: a medium scores its tag times 1000 plus the length of the text it is scored
    against, so each score shows which medium met which text."""

    def score_images(self, images, texts):
        return [int(np.asarray(im)[0, 0, 0]) * 1000 + len(t) for im, t in zip(images, texts, strict=True)]

    def score_videos(self, videos, texts):
        return [int(v.frames[0, 0, 0, 0]) * 1000 + len(t) for v, t in zip(videos, texts, strict=True)]

    def score_audios(self, audios, texts):
        return [
            round(float(a.waveform[0]) * 1000) * 1000 + len(t) for a, t in zip(audios, texts, strict=True)
        ]


def _fingerprint(medium) -> str:
    if isinstance(medium, Image.Image):
        array = np.asarray(medium.convert("RGB"))
    else:
        array = np.asarray(medium.waveform if isinstance(medium, Audio) else medium.frames)
    return hashlib.sha1(array.tobytes()).hexdigest()


def test_captions_are_scored_against_the_right_references():
    data = load_pairs([CC3M], limit=4)
    captions = {_fingerprint(load_media("image", p.media)): p.caption for p in data.pairs["image"]}
    assert len(captions) == 4
    right = run_pairs_eval(Echo(captions), data, batch_size=3, progress=False)
    wrong = run_pairs_eval(Echo(captions, wrong=True), data, batch_size=3, progress=False)
    r, w = right["tasks"]["image->text"], wrong["tasks"]["image->text"]
    assert r["n"] == w["n"] == 4
    assert r["bleu4"] == pytest.approx(1.0, abs=1e-6) and r["cider"] > 1.0
    assert w["bleu4"] < 0.5 and w["cider"] < r["cider"] / 2
    for item in right["items"]:
        assert item["scores"]["bleu4"] == pytest.approx(1.0, abs=1e-4) and item["references"] == [
            item["caption"]
        ]


def test_generated_media_are_scored_against_their_own_prompt():
    data = load_pairs([CC3M, WEBVID, AUDIOCAP], limit=3, skip_bad=True)
    dropped = data.pairs["image"][1].caption
    pipe = Echo({}, no_media=(dropped,))
    report = run_pairs_eval(pipe, data, clip=Tagger(), clap=Tagger(), batch_size=2, progress=False)
    for task, metric in (
        ("text->image", "clip_score"),
        ("text->video", "clip_score"),
        ("text->audio", "clap_score"),
    ):
        items = [i for i in report["items"] if i["task"] == task]
        captions = [p.caption for p in data.pairs[task.split("->")[1]]]
        assert [i["caption"] for i in items] == [i["prompt"] for i in items] == captions
        expected = [None if c == dropped else _tag(c) * 1000 + len(c) for c in captions]
        assert [i["scores"][metric] for i in items] == expected
        summary = report["tasks"][task]
        made = [e for e in expected if e is not None]
        assert summary["n"] == 3 and summary["no_output"] == 3 - len(made)
        assert summary[metric] == pytest.approx(np.mean(made), abs=1e-3)
    # batches of at most --batch-size prompts, each the caption with the one output kind requested
    gen_calls = [c for c in pipe.calls if c[1]]
    assert all(len(prompts) <= 2 for prompts, _ in pipe.calls) and len(gen_calls) == 6
    assert gen_calls[0] == ([p.caption for p in data.pairs["image"][:2]], ["image"])
    describe = [c for c in pipe.calls if c[0][0].startswith("<")]  # X->text asks for no media
    assert len(describe) == 6 and all(c[1] == [] for c in describe)


# ---------------------------------------------------------------------------------------------- the metrics by hand


def test_clip_score_matches_the_model_by_hand(clip, clip_dir):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(clip_dir), local_files_only=True).eval()
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)),
        Image.new("RGB", (32, 32), (255, 0, 0)),
        Image.open(PAIRS / "cc3m" / "images" / "001312382.jpg"),
    ]
    texts = ["a bird", "a red square", "noise and static everywhere"]
    got = clip.score_images(images, texts)
    tokens = clip.tokenizer(texts, padding=True, return_tensors="pt")
    pixels = torch.from_numpy(
        clip.processor([im.convert("RGB") for im in images], return_tensors="np")["pixel_values"]
    )
    with torch.no_grad():
        out = model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels
        )
    cos = (out.logits_per_image / model.logit_scale.exp()).diagonal()  # CLIP's own cosine of pair i
    expected = (100 * cos.clamp(min=0)).tolist()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert max(got) > 10  # this seed gives a positive pair, so the check is not only of clamped zeros
    assert all(0 <= g <= 100 for g in got)
    # a video: the mean of its frames' scores
    frames = np.stack([np.asarray(im.convert("RGB").resize((32, 32))) for im in images])
    per_frame = clip.score_images([Image.fromarray(f) for f in frames], ["a red square"] * 3)
    assert clip.score_videos([Video(frames, 4)], ["a red square"])[0] == pytest.approx(
        np.mean(per_frame), abs=1e-4
    )


def test_clip_score_formula():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [4.0, 3.0]])
    assert clip_score(a, b).tolist() == pytest.approx([100.0, 0.0, 96.0])  # cos 1, -1 (clamped), 24/25


def test_clap_score_matches_the_model_by_hand(clap):
    model, extractor = clap.encoder.model, clap.encoder.feature_extractor
    rate = extractor.sampling_rate
    t = np.arange(rate // 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    texts = ["a high tone", "a dog barks", "noise"]
    got = clap.score_audios([Audio(tone, rate)] * 3, texts)
    features = extractor([tone.astype(np.float64)], sampling_rate=rate, return_tensors="pt")
    tokens = clap.encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        audio = model.get_audio_features(
            input_features=features["input_features"].float(), is_longer=torch.zeros(1, 1, dtype=torch.bool)
        ).pooler_output
        text = model.get_text_features(**tokens).pooler_output
    # the scorer's embeddings point where the model's do (whatever the sign of their cosine)
    torch.testing.assert_close(
        clap.embed_audios([Audio(tone, rate)]), F.normalize(audio, dim=-1), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(clap.embed_texts(texts), F.normalize(text, dim=-1), atol=1e-5, rtol=0)
    expected = (100 * F.cosine_similarity(audio, text).clamp(min=0)).tolist()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert max(got) > 0 and min(got) == 0  # both sides of the clamp
    # another sample rate is resampled to the extractor's first
    up = Audio(
        np.interp(np.arange(len(tone) * 3) / 3, np.arange(len(tone)), tone).astype(np.float32), rate * 3
    )
    assert float(clap.embed_audios([up])[0] @ clap.embed_audios([Audio(tone, rate)])[0]) > 0.99


def test_caption_tokenization():
    assert caption_tokens("A Cat, sat on the MAT!  ") == "a cat sat on the mat"
    assert caption_tokens("runner - up") == "runner up"
    assert caption_tokens("it's 3:30_pm") == "it s 3 30 pm"


def test_bleu4_and_cider_by_hand():
    same = caption_scores(["A cat sat on the mat."], [["a cat sat on the mat"]])
    assert same.bleu4 == pytest.approx(1.0, abs=1e-6)
    # 6 words each, no brevity penalty; matching 1..4-grams 5/6, 3/5, 2/4, 1/3: BLEU-4 = (1/12) ** (1/4)
    near = caption_scores(["a cat sat on the mat"], [["a cat sat on a mat"]])
    assert near.bleu4 == pytest.approx((1 / 12) ** 0.25, abs=1e-6)
    # a second reference: "the" now matches too (1..4-grams 6/6, 3/5, 2/4, 1/3); the closest reference length is 6,
    # so still no brevity penalty: BLEU-4 = (1/10) ** (1/4)
    two = caption_scores(["a cat sat on the mat"], [["a cat sat on a mat", "the dog"]])
    assert two.bleu4 == pytest.approx((1 / 10) ** 0.25, abs=1e-6)
    # CIDEr-D over two items with no words in common: each n-gram's IDF is log 2 for its own item, so an exact
    # caption has cosine 1 at every n and no length penalty: 10 * mean(1, 1, 1, 1) = 10; swapped captions 0.
    refs = [["the quick brown fox jumps"], ["green apples grow on trees"]]
    exact = caption_scores(["the quick brown fox jumps", "green apples grow on trees"], refs)
    swapped = caption_scores(["green apples grow on trees", "the quick brown fox jumps"], refs)
    assert exact.cider == pytest.approx(10.0) and exact.item_cider == pytest.approx([10.0, 10.0])
    assert swapped.cider == pytest.approx(0.0) and swapped.bleu4 < 1e-6
    assert exact.bleu4 > swapped.bleu4


def test_a_perfect_caption_beats_a_wrong_one():
    refs = [[c] for c in ("a train running and then a horn honking", "roses on the garden in the afternoon")]
    refs.append(["cricket player was named award category and runner - up behind person"])
    perfect = caption_scores([r[0] for r in refs], refs)
    wrong = caption_scores([refs[1][0], refs[2][0], refs[0][0]], refs)
    partial = caption_scores(["a train and a horn", "roses in the afternoon", "a cricket player"], refs)
    assert perfect.bleu4 > partial.bleu4 > wrong.bleu4
    assert perfect.cider > partial.cider > wrong.cider
    assert all(p > w for p, w in zip(perfect.item_cider, wrong.item_cider, strict=True))


def test_missing_metric_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocoevalcap.bleu.bleu", None)
    with pytest.raises(AnyGenError, match=r"anygen\[eval\]"):
        caption_scores(["a cat"], [["a cat"]])


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_media_is_reported_or_skipped_and_counted():
    # the sample copy lacks the audio of audiocap.json's entry 3 (and of later ones)
    name = json.loads(AUDIOCAP.read_text())[3]["audio_name"]
    with pytest.raises(PairDataError, match=rf"audiocap.json entry 3 .*{name}.* not found.*--skip-bad"):
        load_pairs([AUDIOCAP], limit=5)
    assert (
        len(load_pairs([AUDIOCAP], limit=3).pairs["audio"]) == 3
    )  # entries past the limit are not looked at
    data = load_pairs([AUDIOCAP], limit=5, skip_bad=True)
    present = [
        i
        for i, e in enumerate(json.loads(AUDIOCAP.read_text()))
        if (PAIRS / "audiocap" / "audios" / e["audio_name"]).is_file()
    ]
    assert [p.source.split(" (")[0] for p in data.pairs["audio"]] == [
        f"audiocap.json entry {i}" for i in present[:5]
    ]
    assert len(data.skipped) == present[4] - 4 and all("not found" in s for s in data.skipped)


def test_unreadable_media_is_reported_or_skipped(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "images" / "ok.png").write_bytes((PAIRS / "cc3m" / "images" / "001312382.jpg").read_bytes())
    pairs = tmp_path / "mine.json"
    pairs.write_text(
        json.dumps(
            [{"caption": "broken", "image_name": "broken.jpg"}, {"caption": "a", "image_name": "ok.png"}]
        )
    )
    ok = _fingerprint(load_media("image", tmp_path / "images" / "ok.png"))
    with pytest.raises(PairDataError, match=r"mine.json entry 0 \(broken.jpg\).*--skip-bad"):
        run_pairs_eval(Echo({ok: "a"}), load_pairs([pairs]), progress=False)
    report = run_pairs_eval(
        Echo({ok: "a"}), load_pairs([pairs], skip_bad=True), skip_bad=True, progress=False
    )
    assert report["skipped_entries"] == 1 and "broken.jpg" in report["skipped"][0]
    assert report["tasks"]["image->text"]["n"] == 1


def test_malformed_entries(tmp_path):
    bad = tmp_path / "bad.json"
    image = str(PAIRS / "cc3m" / "images" / "001312382.jpg")  # an absolute path is used as it is
    entries = [{"caption": "", "image_name": "y.jpg"}, {"caption": "a", "image_name": "x.jpg"}]
    bad.write_text(json.dumps(entries))
    with pytest.raises(PairDataError, match=r"bad.json entry 0: 'caption' must be a non-empty string"):
        load_pairs([bad])
    with pytest.raises(
        PairDataError, match=r"no usable entries \(2 skipped"
    ):  # the empty caption, x.jpg missing
        load_pairs([bad], skip_bad=True)
    bad.write_text(
        json.dumps(
            [
                *entries,
                {"caption": "b", "image_name": image},
                {"caption": "c", "video_name": 7, "audio_name": 8},
            ]
        )
    )
    data = load_pairs([bad], skip_bad=True)
    assert [p.caption for p in data.pairs["image"]] == ["b"] and str(data.pairs["image"][0].media) == image
    assert len(data.skipped) == 3 and "one of image_name/video_name/audio_name" in data.skipped[2]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "--suite pairs needs --data"),
        (["--data", "/no/such/pairs.json"], "--data /no/such/pairs.json: no such file or folder"),
        (
            ["--data", str(PAIRS / "cc3m" / "cc3m_comprehension.json")],
            "cc3m_comprehension.json: not a NExT-GPT pair list",
        ),
        (["--data", str(PAIRS.parent / "embed")], "no NExT-GPT pair list in this folder"),
        (["--data", str(AUDIOCAP)], "audiocap.json entry 3"),
        (["--data", str(CC3M), "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--data", str(CC3M), "--limit", "0"], "--limit must be at least 1"),
        (["--data", str(CC3M), "--world", "w.yaml"], "--world does not apply to --suite pairs"),
        (["--data", str(CC3M), "--clip", "/no/such/clip"], "--clip /no/such/clip: CLIP weights folder"),
        (["--data", str(CC3M), "--clap", "/no/such/clap"], "--clap /no/such/clap: CLAP weights folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(extra, needle, capsys):
    code, _, err = _main(["eval", "--suite", "pairs", *extra], capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_pairs_options_refused_by_the_world_suite(capsys):
    code, _, err = _main(["eval", "--suite", "world", "--data", str(CC3M)], capsys)
    assert code == 2 and len(err) == 1 and "--data does not apply to --suite world" in err[0], err


def test_a_scorer_folder_of_the_wrong_kind(clip_dir, clap_dir, tmp_path, capsys):
    code, _, err = _main(["eval", "--suite", "pairs", "--data", str(CC3M), "--clip", str(clap_dir)], capsys)
    assert code == 2 and len(err) == 1 and f"--clip {clap_dir}" in err[0] and "model_type 'clap'" in err[0], (
        err
    )
    code, _, err = _main(["eval", "--suite", "pairs", "--data", str(CC3M), "--clap", str(clip_dir)], capsys)
    assert code == 2 and len(err) == 1 and f"--clap {clip_dir}" in err[0] and "model_type 'clip'" in err[0], (
        err
    )
    vision_only = tmp_path / "vision"
    from anygen.encoders.clip import ClipImageEncoder

    ClipImageEncoder.from_config({"output_dim": 8}).save_pretrained(vision_only)
    code, _, err = _main(
        ["eval", "--suite", "pairs", "--data", str(CC3M), "--clip", str(vision_only)], capsys
    )
    assert code == 2 and len(err) == 1 and "--clip" in err[0] and "text and vision towers" in err[0], err


def test_format_report_lists_what_did_not_run():
    report = {
        "tasks": {"image->text": {"n": 3, "bleu4": 0.25, "cider": 1.5}},
        "not_run": {"text->image": "no --clip scorer given"},
        "skipped_entries": 2,
        "data": ["/x/cc3m.json"],
        "seed": 0,
        "seconds": 1.0,
    }
    table = format_report(report)
    assert (
        "0.250" in table
        and "1.500" in table
        and "not run: text->image" in table
        and "skipped entries: 2" in table
    )
