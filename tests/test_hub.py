"""Hub ids, push_to_hub and the model card, offline.

A Hugging Face cache is laid out in tmp_path exactly as ``huggingface_hub`` lays it out
(``models--org--name/{refs,snapshots,blobs}``) and read with ``HF_HUB_OFFLINE=1``; ``push_to_hub`` runs
against stubs of ``HfApi``'s create/upload calls, so nothing here reaches the network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import yaml
from huggingface_hub import constants

from anygen import AnyToAnyPipeline, hub, model_card
from anygen.errors import AnyGenError, SpecError, WeightsError
from anygen.spec import PipelineSpec, bundled_pipelines, load_spec, weights_dir

COMMIT_MAIN = "a" * 40
COMMIT_V1 = "b" * 40
CALL = dict(output_modalities=("image",), seed=7, max_new_tokens=6)


def add_to_cache(
    cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)
) -> Path:
    """Put ``folder`` into ``cache`` as huggingface_hub does: content-addressed blobs, a snapshot of symlinks
    to them per commit, and a ref file per branch or tag naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(*[".."] * (len(link.relative_to(repo).parts) - 1), "blobs", blob.name))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def same(a, b) -> None:
    assert a.text == b.text and a.token_ids == b.token_ids
    assert len(a.images) == len(b.images) >= 1
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, in the environment and in the constant huggingface_hub read at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """tiny, saved with save_pretrained (it is deterministic: its random weights come from its seeds)."""
    return AnyToAnyPipeline.from_pretrained("tiny").save_pretrained(tmp_path_factory.mktemp("saved") / "tiny")


@pytest.fixture(scope="module")
def expected(tiny_pipe):
    return tiny_pipe("a red car", **CALL)


@pytest.fixture
def cache(tmp_path, saved) -> Path:
    """A Hub cache holding org/tiny: main -> the saved tiny; tag v1 -> the same, renamed 'tiny-v1'."""
    cache = tmp_path / "hf-cache"
    add_to_cache(cache, "org/tiny", saved, COMMIT_MAIN)
    variant = tmp_path / "variant"
    shutil.copytree(saved, variant)
    data = yaml.safe_load((variant / "pipeline.yaml").read_text())
    data["name"] = "tiny-v1"
    (variant / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    add_to_cache(cache, "org/tiny", variant, COMMIT_V1, refs=("v1",))
    return cache


@pytest.fixture
def downloads(monkeypatch) -> list[dict]:
    """Every snapshot_download call anygen makes (the real function still runs, offline)."""
    calls: list[dict] = []
    real = huggingface_hub.snapshot_download

    def spy(repo_id, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    return calls


# -- recognising Hub ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, ok",
    [
        ("org/name", True),
        ("Org-1/name_2.v3", True),
        ("tiny", False),
        ("./org/name", False),
        ("~/org/name", False),
        ("/org/name", False),
        ("org/name.yaml", False),
        ("org/name/sub", False),
        ("org/../name", False),
        ("org--x/name", False),
    ],
)
def test_repo_id_recognition(text, ok):
    assert hub.is_repo_id(text) is ok


def test_node_path_parsing():
    assert hub.parse_node_path("org/name") == hub.HubRef("org/name")
    assert hub.parse_node_path("org/name/outputs/image") == hub.HubRef("org/name", None, "outputs/image")
    assert hub.parse_node_path("org/name@v1/llm") == hub.HubRef("org/name", "v1", "llm")
    assert hub.parse_node_path("hf://org/name/llm") == hub.HubRef("org/name", None, "llm")
    for local in ("llm", "./org/name", "/abs/org/name", "~/org/name", "org/name/../x", "${foo}/x"):
        assert hub.parse_node_path(local) is None, local
    with pytest.raises(SpecError, match=r"'hf://nope': not a Hub id"):
        hub.parse_node_path("hf://nope")


# -- from_pretrained("org/name") ------------------------------------------------------------------------
def test_from_pretrained_hub_id_reads_the_cache_offline_and_matches_the_original(cache, expected):
    pipe = AnyToAnyPipeline.from_pretrained("org/tiny", cache_dir=cache)
    assert pipe.spec.root == cache / "models--org--tiny" / "snapshots" / COMMIT_MAIN
    assert str(pipe.spec.hub_source) == "hf://org/tiny"
    pipe.set_progress_bar_config(disable=True)
    same(expected, pipe("a red car", **CALL))


def test_revision_selects_a_tag_or_a_commit(cache):
    assert load_spec("org/tiny", cache_dir=cache).name == "tiny"
    by_tag = load_spec("org/tiny", revision="v1", cache_dir=cache)
    assert by_tag.name == "tiny-v1" and by_tag.root.name == COMMIT_V1
    assert load_spec("org/tiny", revision=COMMIT_V1, cache_dir=cache).name == "tiny-v1"


def test_missing_repo_offline_names_it_and_how_to_fetch_it(cache):
    with pytest.raises(SpecError) as err:
        AnyToAnyPipeline.from_pretrained("org/absent", cache_dir=cache)
    message = str(err.value)
    assert "Hub repo 'org/absent' (revision 'main') is not in the local Hugging Face cache" in message
    assert f"hf download org/absent --revision main --cache-dir {cache}" in message
    assert "HF_HUB_OFFLINE" in message


def test_missing_revision_offline_names_it_and_the_cached_ones(cache):
    with pytest.raises(SpecError) as err:
        AnyToAnyPipeline.from_pretrained("org/tiny", revision="v9", cache_dir=cache)
    message = str(err.value)
    assert "revision 'v9' of Hub repo 'org/tiny' is not in the local Hugging Face cache" in message
    assert "cached revisions: main, v1" in message
    assert "hf download org/tiny --revision v9" in message


def test_repo_without_a_pipeline_is_a_clear_error(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    add_to_cache(tmp_path / "c", "org/model", other, COMMIT_MAIN)
    with pytest.raises(SpecError, match=r"Hub repo 'org/model' \(revision 'main'\) has no pipeline.yaml"):
        load_spec("org/model", cache_dir=tmp_path / "c")


def test_revision_is_refused_for_a_bundled_name_or_a_local_folder(saved):
    with pytest.raises(
        SpecError, match=r"revision='v1' applies to Hub repo ids .* 'tiny' is a bundled pipeline"
    ):
        load_spec("tiny", revision="v1")
    with pytest.raises(SpecError, match=r"revision='v1' applies to Hub repo ids .* is a local folder"):
        AnyToAnyPipeline.from_pretrained(saved, revision="v1")


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(saved, tmp_path, monkeypatch, downloads):
    shutil.copytree(saved, tmp_path / "org" / "tiny")
    monkeypatch.chdir(tmp_path)
    spec = load_spec("org/tiny", cache_dir=tmp_path / "empty-cache")
    assert spec.root.resolve() == (tmp_path / "org" / "tiny").resolve() and spec.hub_source is None
    assert downloads == []


# -- Hub ids in spec paths ------------------------------------------------------------------------------
def _tiny_with_hub_llm(tmp_path: Path, llm_path: str, config: dict | None = None) -> Path:
    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    data["llm"].update(path=llm_path, config=config, tokenizer={"type": "pretrained"})
    spec = tmp_path / "spec" / "pipeline.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec


def test_spec_path_hub_subfolder_is_fetched_on_first_use_only(cache, tmp_path, expected, downloads):
    spec_file = _tiny_with_hub_llm(tmp_path, "org/tiny/llm")
    pipe = AnyToAnyPipeline.from_pretrained(spec_file, cache_dir=cache)
    # Loading validated the LLM's widths from the cached copy, without fetching anything.
    assert downloads and all(c["local_files_only"] for c in downloads)
    assert "llm" not in pipe.loaded_components
    downloads.clear()
    llm_folder = pipe.spec.resolve("org/tiny/llm")
    assert llm_folder == cache / "models--org--tiny" / "snapshots" / COMMIT_MAIN / "llm"
    assert downloads == [
        {
            "repo_id": "org/tiny",
            "revision": None,
            "cache_dir": cache,
            "allow_patterns": ["llm", "llm/*"],
            "local_files_only": False,
        }
    ]
    pipe.set_progress_bar_config(disable=True)
    same(expected, pipe("a red car", **CALL))  # the same LLM weights, the rest from the same seeds
    assert len(downloads) == 1, "a Hub path is looked up once per spec"


def test_spec_path_with_a_pinned_revision(cache, tmp_path):
    spec = load_spec(_tiny_with_hub_llm(tmp_path, "org/tiny@v1/llm"), cache_dir=cache)
    assert spec.resolve("org/tiny@v1/llm") == cache / "models--org--tiny" / "snapshots" / COMMIT_V1 / "llm"


def test_relative_paths_under_the_spec_folder_are_not_hub_ids(saved, downloads):
    spec = load_spec(saved)
    assert spec.resolve("outputs/image/generator") == saved / "outputs" / "image" / "generator"
    assert spec.resolve("llm") == saved / "llm"
    assert spec.resolve("${weights}/x/y") == weights_dir() / "x" / "y"
    assert spec.resolve("./org/name") == saved / "org" / "name"
    assert downloads == []


def test_uncached_hub_path_without_declared_widths_fails_at_load_with_how_to_fetch(tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(_tiny_with_hub_llm(tmp_path, "org/absent/llm"), cache_dir=tmp_path / "c")
    message = str(err.value)
    assert "llm.path 'org/absent/llm' is read as Hub id hf://org/absent/llm" in message
    assert "hf download org/absent --revision main" in message and "--include llm" in message


def test_uncached_hub_path_with_declared_widths_loads_and_fails_clearly_when_built(tmp_path, downloads):
    config = yaml.safe_load(bundled_pipelines()["tiny"].read_text())["llm"]["config"]
    pipe = AnyToAnyPipeline.from_pretrained(
        _tiny_with_hub_llm(tmp_path, "org/absent/llm", config), cache_dir=tmp_path / "c"
    )
    assert all(c["local_files_only"] for c in downloads)
    with pytest.raises(WeightsError) as err:
        _ = pipe.llm
    message = str(err.value)
    assert "path 'org/absent/llm' is not under" in message
    assert "Hub repo 'org/absent' (revision 'main') is not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message


def test_hub_subfolder_missing_from_the_repo_names_it(cache, tmp_path):
    data = yaml.safe_load(bundled_pipelines()["tiny"].read_text())
    data["encoders"]["imagebind"].update(path="hf://org/tiny/encoders/nope", config={"output_dim": 32})
    spec = PipelineSpec.from_dict(data, root=tmp_path, cache_dir=cache)
    with pytest.raises(
        WeightsError, match=r"hf://org/tiny/encoders/nope: Hub repo 'org/tiny' .* no 'encoders/nope'"
    ):
        spec.resolve(data["encoders"]["imagebind"]["path"])


# -- push_to_hub ---------------------------------------------------------------------------------------
def test_push_to_hub_uploads_the_saved_layout_with_its_card(tiny_pipe, monkeypatch, tmp_path, expected):
    calls: dict[str, dict] = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}

    def create_branch(self, repo_id, **kwargs):
        calls["create_branch"] = {"repo_id": repo_id, **kwargs}

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        calls["upload_folder"] = {
            **kwargs,
            "files": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")),
        }
        # What was uploaded, as the Hub would serve it: load it back through a cache.
        add_to_cache(tmp_path / "cache", kwargs["repo_id"], folder, COMMIT_MAIN, refs=(kwargs["revision"],))
        calls["card"] = {"text": (folder / "README.md").read_text()}
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    result = tiny_pipe.push_to_hub("me/tiny-copy", revision="dev", private=True, commit_message="first")
    assert result == "commit-info"
    assert calls["create_repo"] == {"repo_id": "me/tiny-copy", "private": True, "exist_ok": True}
    assert calls["create_branch"] == {"repo_id": "me/tiny-copy", "branch": "dev", "exist_ok": True}
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "me/tiny-copy" and upload["revision"] == "dev"
    assert upload["commit_message"] == "first"
    files = upload["files"]
    assert {
        "pipeline.yaml",
        "README.md",
        "llm/model.safetensors",
        "input_projectors/imagebind.safetensors",
    } <= set(files)
    assert "outputs/image/projector.safetensors" in files and not [
        f for f in files if f.endswith((".bin", ".pt"))
    ]
    assert "AnyToAnyPipeline.from_pretrained('me/tiny-copy')" in calls["card"]["text"]
    pulled = AnyToAnyPipeline.from_pretrained("me/tiny-copy", revision="dev", cache_dir=tmp_path / "cache")
    pulled.set_progress_bar_config(disable=True)
    same(expected, pulled("a red car", **CALL))


def test_push_to_hub_refuses_a_bad_repo_id_before_any_call(tiny_pipe, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("no Hub call may be made")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", fail)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", fail)
    with pytest.raises(AnyGenError, match=r"repo_id='no-slash' is not a Hub repo id"):
        tiny_pipe.push_to_hub("no-slash")


# -- the model card ---------------------------------------------------------------------------------------
def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_saved_card_lists_every_part_with_its_source_and_licence(saved):
    text = (saved / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "anygen" and meta["license"] == "apache-2.0"
    assert "any-to-any" in meta["tags"] and "non-commercial" not in meta["tags"]
    for node, seed, widths in [
        ("encoders.imagebind", 1, "image, video, audio -> 32"),
        ("input_projectors.imagebind", 2, "32 -> 1 x 64"),
        ("llm", 3, "hidden 64, 2 layers"),
        ("outputs.image.projector", 4, "[IMG0]..[IMG3]: 4 x 64 -> 77 x 32"),
        ("outputs.audio.generator", 9, "conditioned on 1 x 32"),
    ]:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{node}` |"))
        assert (
            widths in row and f"initialised at random (seed {seed})" in row and "Apache-2.0 (anygen)" in row
        )
    assert "ImageBind" not in text and "## Evaluation" not in text


def test_provenance_survives_saving_a_saved_pipeline(saved, tmp_path):
    again = AnyToAnyPipeline.from_pretrained(saved).save_pretrained(tmp_path / "again")
    text = (again / "README.md").read_text()
    assert "initialised at random (seed 1)" in text and "local path" not in text
    assert yaml.safe_load((again / "pipeline.yaml").read_text())["llm"]["license"] == "Apache-2.0 (anygen)"


def test_imagebind_card_says_non_commercial():
    text = model_card.render(load_spec("nextgpt-7b-v0"))
    meta = _front_matter(text)
    assert meta["license"] == "other" and "non-commercial" in meta["tags"]
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in meta["base_model"]
    row = next(line for line in text.splitlines() if line.startswith("| `encoders.imagebind` |"))
    assert "imagebind-huge" in row and "CC BY-NC-SA 4.0 (non-commercial)" in row
    assert "**ImageBind is licensed CC BY-NC-SA 4.0: non-commercial use only.**" in text
    assert "CreativeML OpenRAIL-M" in next(
        line for line in text.splitlines() if "`outputs.image.generator`" in line
    )


def test_imagebind_licence_holds_whatever_its_path(tmp_path):
    data = yaml.safe_load(bundled_pipelines()["nextgpt-7b-v0"].read_text())
    data["encoders"]["imagebind"]["path"] = str(tmp_path / "my-imagebind.pth")
    parts = {p.node: p for p in model_card.parts(PipelineSpec.from_dict(data))}
    assert parts["encoders.imagebind"].license == model_card.IMAGEBIND_LICENSE
    assert parts["encoders.imagebind"].source == f"local path {tmp_path / 'my-imagebind.pth'}"


def test_eval_report_becomes_a_table(tmp_path):
    report = {
        "suite": "world",
        "seed": 0,
        "n": 6,
        "output_kind": 0.5,
        "attributes": {"colour": 0.25, "pitch": 1.0},
        "tasks": {
            "text->image": {
                "n": 4,
                "output_kind": 0.75,
                "attributes": {"colour": 0.25},
                "all": 0.125,
                "unseen": {"n": 1, "output_kind": 1.0, "attributes": {"colour": 0.0}, "all": 0.0},
            },
            "text->audio": {"n": 2, "output_kind": 0.0, "attributes": {"pitch": 1.0}, "all": 1.0},
        },
        "chance": {"colour": 0.2, "pitch": 1 / 3},
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    text = model_card.render(load_spec("tiny"), eval_report=tmp_path / "report.json")
    assert "## Evaluation (`anygen eval`)" in text and "suite `world`" in text
    assert "| task | n | output kind | colour | pitch | all |" in text
    assert "| text->image | 4 | 75.0% | 25.0% |  | 12.5% |" in text
    assert "| &nbsp;&nbsp;unseen | 1 | 100.0% | 0.0% |  | 0.0% |" in text
    assert "| text->audio | 2 | 0.0% |  | 100.0% | 100.0% |" in text
    assert "| **all tasks** | 6 | 50.0% | 25.0% | 100.0% |  |" in text
    assert "| chance |  |  | 20.0% | 33.3% |  |" in text


def test_bad_eval_report_names_the_argument(tiny_pipe, tmp_path):
    with pytest.raises(AnyGenError, match=r"eval_report: expected the report `anygen eval` writes"):
        tiny_pipe.save_pretrained(tmp_path / "x", eval_report={"accuracy": 1.0})
    with pytest.raises(AnyGenError, match=r"eval_report: cannot read .*missing.json"):
        tiny_pipe.save_pretrained(tmp_path / "x", eval_report=tmp_path / "missing.json")
    assert not (tmp_path / "x").exists(), "a bad report is refused before anything is written"


def test_card_of_a_pipeline_loaded_from_the_hub_names_the_repo(cache, tmp_path):
    folder = AnyToAnyPipeline.from_pretrained("org/tiny", cache_dir=cache).save_pretrained(tmp_path / "out")
    text = (folder / "README.md").read_text()
    assert "Saved from the pipeline at `hf://org/tiny`." in text
    assert "initialised at random (seed 3)" in text  # the sources recorded in the repo's pipeline.yaml


def test_card_of_the_modern_preset_shows_tokens_tensors_and_licences():
    text = model_card.render(load_spec("qwen2.5-7b-sdxl-cogvideox"))
    lines = text.splitlines()
    assert "729 x 1152 per image" in next(line for line in lines if "`encoders.siglip`" in line)
    image = next(line for line in lines if "`outputs.image.generator`" in line)
    assert "prompt_embeds 77x2048, pooled_prompt_embeds 1280" in image and "Open RAIL++-M" in image
    audio = next(line for line in lines if "`outputs.audio.generator`" in line)
    assert "generated_prompt_embeds 8x768" in audio and "CC BY-NC-SA 4.0" in audio
    assert "non-commercial" in _front_matter(text)["tags"]  # AudioLDM2 makes the whole graph non-commercial


def test_saving_keeps_a_readme_the_user_wrote(tiny_pipe, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("# My notes\nDo not lose me.\n")
    with pytest.warns(UserWarning, match="was not written by anygen: it is kept"):
        tiny_pipe.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "# My notes\nDo not lose me.\n"
    card = (folder / "MODEL_CARD.md").read_text()
    assert "library_name: anygen" in card
    tiny_pipe.save_pretrained(tmp_path / "fresh")  # anygen's own card is replaced on the next save, silently
    first = (tmp_path / "fresh" / "README.md").read_text()
    tiny_pipe.save_pretrained(tmp_path / "fresh")
    assert (tmp_path / "fresh" / "README.md").read_text() == first
    assert not (tmp_path / "fresh" / "MODEL_CARD.md").exists()
