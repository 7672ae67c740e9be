"""The weights manifest and ``anygen weights list|download|verify`` (offline: nothing is downloaded)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from urllib.error import URLError  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from anygen import cli  # noqa: E402
from anygen.errors import WeightsError  # noqa: E402
from anygen.spec import bundled_pipelines, bundled_weights_dir, load_spec  # noqa: E402
from anygen.weights import manifest as mf  # noqa: E402
from anygen.weights.manifest import Manifest, default_manifest_path, load_manifest  # noqa: E402

NEXTGPT_COMPONENTS = [
    "imagebind-huge",
    "vicuna-7b-v0",
    "nextgpt-7b-tiva-v0",
    "stable-diffusion-v1-5",
    "zeroscope-v2-576w",
    "audioldm-l-full",
]


@pytest.fixture
def weights(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("ANYGEN_WEIGHTS", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


def require_subcommand(name: str) -> None:
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if name not in sub.choices:
        pytest.fail(f"anygen.cli.build_parser does not register `{name}` (the modules in _COMMAND_MODULES)")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    require_subcommand(argv[0])
    rc = cli.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def touch(folder: Path, files) -> None:
    for entry in files:
        path = folder / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def touch_complete(weights: Path, manifest: Manifest, names) -> None:
    """Fake a complete set: each component's prepared folder when it has one, else its download folder."""
    for name in names:
        comp = manifest.components[name]
        if comp.prepared is not None:
            touch(weights / comp.prepared.folder, comp.prepared.files)
        else:
            touch(weights / comp.folder, comp.files)


# -- the manifest ---------------------------------------------------------------------------------------------
def test_manifest_is_the_repo_file_and_validates():
    assert default_manifest_path() == Path(__file__).resolve().parents[1] / "weights" / "manifest.yaml"
    manifest = load_manifest()
    assert manifest.version == 1


def test_manifest_covers_every_bundled_pipeline_and_every_weights_path():
    manifest = load_manifest()
    assert set(manifest.pipelines) == set(bundled_pipelines())
    assert manifest.pipelines["nextgpt-7b-v0"].components == NEXTGPT_COMPONENTS
    assert manifest.pipelines["tiny"].components == []
    for name in bundled_pipelines():
        spec = load_spec(name)
        comps = [manifest.components[c] for c in manifest.pipelines[name].components]
        folders = {c.folder for c in comps} | {c.prepared.folder for c in comps if c.prepared}
        nodes = [*spec.encoders.values(), *spec.input_projectors.values(), spec.llm]
        nodes += [n for out in spec.outputs.values() for n in (out.projector, out.generator)]
        for node in nodes:
            if node.path is None:
                continue
            if node.path.startswith("${bundled_weights}/"):  # shipped in the package (mini), nothing to fetch
                shipped = bundled_weights_dir() / node.path.removeprefix("${bundled_weights}/")
                assert shipped.exists(), f"{name}: {node.path} is not in the package"
                continue
            assert node.path.startswith("${weights}/"), node.path
            relative = node.path.removeprefix("${weights}/")
            assert relative.split("/")[0] in folders, f"{name}: {node.path} is in no component's folder"
    # the spec's ImageBind file is exactly the file the manifest fetches
    imagebind = manifest.components["imagebind-huge"]
    assert load_spec("nextgpt-7b-v0").encoders["imagebind"].path == (
        f"${{weights}}/{imagebind.folder}/{imagebind.files[0].path}"
    )


def test_manifest_sources_and_licences():
    c = load_manifest().components
    assert c["imagebind-huge"].source.url == "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
    assert c["imagebind-huge"].license.startswith("CC BY-NC-SA 4.0")
    assert c["vicuna-7b-v0"].source.repo == "lmsys/vicuna-7b-delta-v0"
    assert any("apply_delta" in step for step in c["vicuna-7b-v0"].prepared.steps)
    assert c["nextgpt-7b-tiva-v0"].source.repo == "ChocoWu/nextgpt_7b_tiva_v0"
    assert [f.path for f in c["nextgpt-7b-tiva-v0"].files] == ["pytorch_model.pt"]
    assert "BSD-3-Clause" in c["nextgpt-7b-tiva-v0"].license
    assert c["stable-diffusion-v1-5"].source.repo == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert "runwayml/stable-diffusion-v1-5" in c["stable-diffusion-v1-5"].notes
    assert "OpenRAIL-M" in c["stable-diffusion-v1-5"].license
    assert c["zeroscope-v2-576w"].source.repo == "cerspense/zeroscope_v2_576w"
    assert c["zeroscope-v2-576w"].license.startswith("CC BY-NC 4.0")
    assert c["audioldm-l-full"].source.repo == "cvssp/audioldm-l-full"
    assert c["audioldm-l-full"].license.startswith("CC BY-NC-SA 4.0")
    for comp in c.values():
        assert comp.size_gb > 0
        if comp.source.repo and not comp.source.whole_repo and comp.files[0].path == "model_index.json":
            # enough to verify a diffusers folder: each component's config and weights
            paths = {f.path for f in comp.files}
            denoiser = "transformer" if "transformer/config.json" in paths else "unet"  # DiT families (CogVideoX)
            for part in (denoiser, "vae", "text_encoder"):
                assert f"{part}/config.json" in paths
                assert any(p.startswith(f"{part}/") and ("safetensors" in p or ".bin" in p) for p in paths)


def _manifest_dict() -> dict:
    return yaml.safe_load(default_manifest_path().read_text())


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["components"]["imagebind-huge"]["files"][0].update(sha256="abc"), "files.0.sha256"),
        (
            lambda d: d["components"]["imagebind-huge"]["source"].update(url="ftp://x/y"),
            "imagebind-huge.source",
        ),
        (lambda d: d["components"]["audioldm-l-full"].update(licence="x"), "audioldm-l-full.licence"),
        (lambda d: d["components"]["audioldm-l-full"].pop("license"), "audioldm-l-full.license"),
        (
            lambda d: d["components"]["zeroscope-v2-576w"].update(folder="../escape"),
            "zeroscope-v2-576w.folder",
        ),
        (lambda d: d["components"]["zeroscope-v2-576w"].update(size_gb=-1), "zeroscope-v2-576w.size_gb"),
        (lambda d: d["pipelines"]["nextgpt-7b-v0"]["components"].append("nope"), "pipelines.nextgpt-7b-v0"),
    ],
)
def test_bad_manifest_field_is_named(edit, field):
    data = _manifest_dict()
    edit(data)
    with pytest.raises(WeightsError, match="invalid weights manifest") as info:
        Manifest.from_dict(data, source="bad.yaml")
    assert field in str(info.value)


def test_bad_manifest_through_the_cli(weights, tmp_path, capsys):
    data = _manifest_dict()
    data["components"]["stable-diffusion-v1-5"]["files"][3]["sha256"] = "not-a-hash"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    rc, out, err = run(capsys, "weights", "verify", "nextgpt-7b-v0", "--manifest", str(bad))
    assert rc == 2
    assert "components.stable-diffusion-v1-5.files.3.sha256" in err
    assert "64 hexadecimal" in err


# -- verify ---------------------------------------------------------------------------------------------
def test_verify_offline_lists_each_missing_component_and_how_to_get_it(weights, capsys):
    rc, out, err = run(capsys, "weights", "verify", "nextgpt-7b-v0")
    assert rc == 1, err
    missing = [line.split()[1].rstrip(":") for line in out.splitlines() if line.strip().startswith("MISSING")]
    assert missing == NEXTGPT_COMPONENTS
    for name in NEXTGPT_COMPONENTS:
        assert f"anygen weights download {name}" in out
    assert f"curl -L --fail --create-dirs -o {weights}/imagebind/imagebind_huge.pth " in out
    assert "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth" in out
    assert (
        f"hf download lmsys/vicuna-7b-delta-v0 --revision main --local-dir {weights}/vicuna-7b-delta-v0"
        in out
    )
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 " in out
    assert "hf download cerspense/zeroscope_v2_576w " in out
    assert "hf download cvssp/audioldm-l-full " in out
    assert "hf download ChocoWu/nextgpt_7b_tiva_v0 " in out and " pytorch_model.pt" in out
    # the follow-up steps: apply the Vicuna delta (FastChat), then convert the NExT-GPT checkpoint
    assert (
        f"python -m fastchat.model.apply_delta --base {weights}/llama-7b-hf --target {weights}/vicuna-7b-v0 "
        f"--delta {weights}/vicuna-7b-delta-v0" in out
    )
    assert "fschat==0.1.10" in out and "LLaMA-1" in out
    assert (
        f"anygen convert nextgpt-legacy {weights}/nextgpt_7b_tiva_v0/pytorch_model.pt "
        f"--vicuna {weights}/vicuna-7b-v0 --out {weights}/nextgpt-7b-v0" in out
    )
    assert "6 of 6 component(s) need attention" in out


def test_verify_complete_with_fake_files(weights, capsys):
    manifest = load_manifest()
    touch_complete(weights, manifest, NEXTGPT_COMPONENTS)
    rc, out, _ = run(capsys, "weights", "verify", "nextgpt-7b-v0")
    assert rc == 0, out
    assert out.strip().endswith("nextgpt-7b-v0: complete")
    assert "MISSING" not in out
    assert out.count("  ok ") == 6


def test_verify_names_exactly_the_missing_file(weights, capsys):
    manifest = load_manifest()
    touch_complete(weights, manifest, NEXTGPT_COMPONENTS)
    (weights / "stable-diffusion-v1-5" / "unet" / "config.json").unlink()
    rc, out, _ = run(capsys, "weights", "verify", "nextgpt-7b-v0")
    assert rc == 1
    lines = [line for line in out.splitlines() if "MISSING" in line]
    assert lines == ["  MISSING  stable-diffusion-v1-5: missing stable-diffusion-v1-5/unet/config.json"]
    assert "anygen weights download stable-diffusion-v1-5" in out


def test_verify_accepts_alternative_weight_files(weights, capsys):
    manifest = load_manifest()
    touch_complete(weights, manifest, ["zeroscope-v2-576w"])
    unet = weights / "zeroscope_v2_576w" / "unet"
    (unet / "diffusion_pytorch_model.bin").rename(unet / "diffusion_pytorch_model.safetensors")
    rc, out, _ = run(capsys, "weights", "verify", "zeroscope-v2-576w")
    assert rc == 0, out


def test_verify_downloaded_but_not_prepared_prints_the_step(weights, capsys):
    manifest = load_manifest()
    comp = manifest.components["vicuna-7b-v0"]
    touch(weights / comp.folder, comp.files)  # the delta only
    rc, out, _ = run(capsys, "weights", "verify", "vicuna-7b-v0")
    assert rc == 1
    assert "downloaded to vicuna-7b-delta-v0/, but vicuna-7b-v0/ is not made yet" in out
    assert "anygen weights download" not in out  # nothing left to download
    assert "fastchat.model.apply_delta" in out


def test_verify_checks_known_sha256(weights, tmp_path, capsys):
    data = _manifest_dict()
    import hashlib

    good = hashlib.sha256(b"imagebind").hexdigest()
    data["components"]["imagebind-huge"]["files"][0]["sha256"] = good
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    target = weights / "imagebind" / "imagebind_huge.pth"
    target.parent.mkdir()
    target.write_bytes(b"imagebind")
    rc, out, _ = run(capsys, "weights", "verify", "imagebind-huge", "--manifest", str(path))
    assert rc == 0, out
    target.write_bytes(b"corrupt")
    rc, out, _ = run(capsys, "weights", "verify", "imagebind-huge", "--manifest", str(path))
    assert rc == 1
    assert f"expected {good}" in out and "delete it and download again" in out
    rc, out, _ = run(capsys, "weights", "verify", "imagebind-huge", "--manifest", str(path), "--no-hash")
    assert rc == 0


def test_verify_tiny_needs_no_files(weights, capsys):
    rc, out, _ = run(capsys, "weights", "verify", "tiny")
    assert rc == 0
    assert "tiny: complete; needs no files" in out


def test_unknown_name(weights, capsys):
    rc, _, err = run(capsys, "weights", "verify", "nope")
    assert rc == 2
    assert "unknown pipeline or component 'nope'" in err and "nextgpt-7b-v0" in err


# -- download -------------------------------------------------------------------------------------------
def test_download_offline_says_what_is_missing_and_how_to_get_it(weights, capsys):
    rc, out, err = run(capsys, "weights", "download", "nextgpt-7b-v0")
    assert rc == 2
    assert out == ""
    assert err.startswith("anygen: error: cannot download: offline (HF_HUB_OFFLINE=1)")
    lines = err.splitlines()
    per_component = [line for line in lines if line.startswith("  ") and "; get it: " in line]
    assert [line.split(":")[0].strip() for line in per_component] == NEXTGPT_COMPONENTS
    assert any("curl -L" in line and "imagebind_huge.pth" in line for line in per_component)
    assert any("hf download cvssp/audioldm-l-full" in line for line in per_component)
    after = err[err.index("After downloading:") :]
    assert "fastchat.model.apply_delta" in after and "anygen convert nextgpt-legacy" in after
    assert not any(weights.iterdir())  # nothing was created


def test_download_offline_only_lists_what_is_missing(weights, capsys):
    manifest = load_manifest()
    touch_complete(weights, manifest, ["imagebind-huge", "stable-diffusion-v1-5"])
    rc, _, err = run(capsys, "weights", "download", "nextgpt-7b-v0")
    assert rc == 2
    assert "imagebind-huge:" not in err and "stable-diffusion-v1-5:" not in err
    assert "zeroscope-v2-576w:" in err


def test_download_when_present_needs_no_network(weights, capsys):
    manifest = load_manifest()
    touch_complete(weights, manifest, ["audioldm-l-full"])
    rc, out, _ = run(capsys, "weights", "download", "audioldm-l-full")
    assert rc == 0
    assert "audioldm-l-full: already downloaded" in out


def test_download_tiny(weights, capsys):
    rc, out, _ = run(capsys, "weights", "download", "tiny")
    assert rc == 0 and "needs no files" in out


def test_download_without_network(weights, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_network(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(mf, "_download_url", no_network)
    monkeypatch.setattr(mf, "_download_hf", no_network)
    rc, out, err = run(capsys, "weights", "download", "nextgpt-7b-v0")
    assert rc == 2
    assert "cannot download: no network" in err
    assert "  imagebind-huge: missing imagebind/" in err
    assert "  audioldm-l-full: missing audioldm-l-full/" in err


def test_download_fetches_then_prints_the_next_steps(weights, monkeypatch, capsys):
    """The download itself is faked (no network here); the CLI's flow around it is real."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    fetched = []

    def fake_hf(name, component, dest):
        fetched.append(name)
        touch(dest, component.files)

    monkeypatch.setattr(mf, "_download_hf", fake_hf)
    rc, out, _ = run(capsys, "weights", "download", "vicuna-7b-v0")
    assert rc == 0, out
    assert fetched == ["vicuna-7b-v0"]
    assert "Next steps" in out and "fastchat.model.apply_delta" in out and "LLaMA-1" in out
    rc, out, _ = run(capsys, "weights", "download", "nextgpt-7b-tiva-v0")
    assert rc == 0
    assert f"anygen convert nextgpt-legacy {weights}/nextgpt_7b_tiva_v0/pytorch_model.pt" in out


def test_download_url_writes_the_file(weights, monkeypatch, tmp_path):
    """urllib path, against a local file:// stand-in for Meta's URL."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    source = tmp_path / "imagebind_huge.pth"
    source.write_bytes(b"x" * 1000)
    import urllib.request

    real = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda req, timeout=0: real(source.as_uri()))
    comp = load_manifest().components["imagebind-huge"]
    mf.download_component("imagebind-huge", comp, weights)
    assert (weights / "imagebind" / "imagebind_huge.pth").read_bytes() == b"x" * 1000
    assert not (weights / "imagebind" / "imagebind_huge.pth.part").exists()


# -- list -----------------------------------------------------------------------------------------------
def test_list_table(weights, capsys):
    touch_complete(weights, load_manifest(), ["stable-diffusion-v1-5"])
    rc, out, _ = run(capsys, "weights", "list")
    assert rc == 0
    rows = {line.split()[1]: line for line in out.splitlines()[2:] if line.startswith(("nextgpt-7b-v0", "tiny"))}
    assert set(rows) == {*NEXTGPT_COMPONENTS, "-"}
    newer = {line.split()[1] for line in out.splitlines()[2:] if line.startswith("nextgpt-7b-v1.5")}
    assert newer == {"imagebind-huge", "vicuna-7b-v1.5", "stable-diffusion-2", "zeroscope-v2-xl", "audioldm-s-full"}
    assert rows["stable-diffusion-v1-5"].rstrip().endswith("present")
    assert "hf:stable-diffusion-v1-5/stable-diffusion-v1-5@main" in rows["stable-diffusion-v1-5"]
    assert rows["imagebind-huge"].rstrip().endswith("missing")
    assert rows["-"].startswith("tiny") and "needs no files" in rows["-"]
    assert out.splitlines()[1].split() == ["PIPELINE", "COMPONENT", "SOURCE", "SIZE", "STATUS"]
