"""No loader of anygen runs code from a file: resume, every weights file of a pipeline folder (LLM, generators'
UNet, VAE, text encoder and vocoder, encoders, projectors, the LLM adapter), ImageBind, CLIP, CLAP,
``apply_lora_adapter``, the legacy converter and NExT-GPT's .npy captions refuse a malicious pickle without
executing it, with an anygen error that never advises ``weights_only=False``."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from anygen.errors import AnyGenError
from anygen.train import ConfigError, train
from anygen.train.resume_state import load_rng, load_state, save_rng, save_state

QUIET = dict(progress=False, verbose=False, tensorboard=False)


class _Payload:
    """Unpickling this creates ``marker`` (through os.system): proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> Path:
    """A malicious pickle at ``path`` (torch.save's zip format, which torch.load reads)."""
    torch.save({"state": {0: _Payload(marker)}, "param_groups": []}, path)
    return path


def _refused(err: pytest.ExceptionInfo, marker: Path) -> str:
    message = str(err.value)
    assert not marker.exists(), "the pickle's code ran"
    assert "weights_only=False" not in message and "\n" not in message, message
    return message


def test_the_payload_is_live(tmp_path):
    """The planted file really runs code when unpickled: the other tests prove something."""
    marker = tmp_path / "ran"
    path = _plant(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


# -- the state files: round trip -----------------------------------------------------------------------------
def test_optimizer_scheduler_and_rng_state_round_trip_without_pickle(tmp_path):
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** (s + 1))
    for _ in range(2):
        (params[0].square().sum() + params[1].sum()).backward()
        opt.step()
        sched.step()
    save_state(opt.state_dict(), tmp_path, "optimizer")
    save_state(sched.state_dict(), tmp_path, "scheduler")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "optimizer.json",
        "optimizer.safetensors",
        "scheduler.json",
    ]
    opt2 = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone()) for p in params], lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 0.5 ** (s + 1))
    opt2.load_state_dict(load_state(tmp_path, "optimizer"))
    sched2.load_state_dict(load_state(tmp_path, "scheduler"))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]  # tuples (betas) and int keys survive
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]), (i, k)
    assert sched.state_dict() == sched2.state_dict()

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # a cached gaussian in numpy's state
    save_rng(tmp_path / "rng-0.json")
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    load_rng(tmp_path / "rng-0.json")
    assert (random.random(), np.random.standard_normal()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])


def test_state_that_needs_pickle_is_refused_at_save(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer\.x.*object"):
        save_state({"x": object()}, tmp_path, "optimizer")


# -- resume ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, samples) -> tuple[Path, dict]:
    """A stage-1 run stopped after step 1 (new format) and the settings to resume it."""
    root = tmp_path_factory.mktemp("resume")
    kw = dict(
        stage=1,
        data=str(samples / "T_X_pair_data" / "cc3m" / "cc3m_comprehension.json"),
        max_steps=2,
        batch_size=2,
        **QUIET,
    )
    train(out=str(root / "run"), stop_after=1, **kw)
    ckpt = root / "run" / "checkpoints" / "step-0000001"
    assert {"optimizer.json", "scheduler.json", "rng-0.json"} <= {p.name for p in ckpt.iterdir()}
    assert not list(ckpt.glob("*.pt"))
    return ckpt, kw


def _copy(ckpt: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(ckpt, folder)
    return folder


@pytest.mark.parametrize("planted", ["optimizer.pt", "scheduler.pt", "rng-0.pt"])
def test_resume_refuses_an_old_pickled_checkpoint_without_running_it(checkpoint, tmp_path, planted):
    ckpt, kw = checkpoint
    folder = _copy(ckpt, tmp_path)
    for name in ("optimizer.json", "optimizer.safetensors", "scheduler.json", "rng-0.json"):
        (folder / name).unlink()  # the layout of a checkpoint of an older anygen
    marker = tmp_path / "ran"
    _plant(folder / planted, marker)
    with pytest.raises(ConfigError) as err:
        train(out=str(tmp_path / "out"), resume=str(folder), **kw)
    message = _refused(err, marker)
    assert f"({planted})" in message and "never unpickles" in message and "without --resume" in message


@pytest.mark.parametrize(
    "planted",
    ["optimizer.safetensors", "optimizer.json", "scheduler.json", "rng-0.json", "trainable.safetensors"],
)
def test_resume_refuses_a_pickle_planted_as_a_state_file(checkpoint, tmp_path, planted):
    ckpt, kw = checkpoint
    folder = _copy(ckpt, tmp_path)
    marker = tmp_path / "ran"
    _plant(folder / planted, marker)
    with pytest.raises(ConfigError) as err:
        train(out=str(tmp_path / "out"), resume=str(folder), **kw)
    assert planted in _refused(err, marker)


def test_stray_pickles_beside_a_safe_checkpoint_are_never_read(checkpoint, tmp_path):
    ckpt, kw = checkpoint
    folder = _copy(ckpt, tmp_path)
    marker = tmp_path / "ran"
    for name in ("optimizer.pt", "scheduler.pt", "rng-0.pt"):
        _plant(folder / name, marker)
    result = train(out=str(tmp_path / "out"), resume=str(folder), **kw)
    assert result.steps == 2 and not marker.exists()


# -- every other loader ----------------------------------------------------------------------------------------
def test_imagebind_loader_refuses_a_malicious_pickle(tmp_path):
    from anygen.encoders.imagebind import load_imagebind_state_dict

    marker = tmp_path / "ran"
    path = _plant(tmp_path / "imagebind_huge.pth", marker)
    with pytest.raises(AnyGenError) as err:
        load_imagebind_state_dict(path)
    assert "imagebind_huge.pth" in _refused(err, marker)


def test_legacy_converter_refuses_a_malicious_pickle(tmp_path):
    from anygen.convert.nextgpt_legacy import load_legacy_checkpoint

    marker = tmp_path / "ran"
    path = _plant(tmp_path / "pytorch_model.pt", marker)
    with pytest.raises(AnyGenError) as err:
        load_legacy_checkpoint(path)
    message = _refused(err, marker)
    assert "never unpickles" in message


def test_caption_npy_files_are_read_without_pickle(tiny_pipe, tmp_path):
    from anygen.train.captions import CaptionTargets
    from anygen.train.data import DataError, Target

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    captions = CaptionTargets(tiny_pipe, tmp_path / "cache")
    target = Target(modality="image", caption="a cat", embedding=evil)
    with pytest.raises(DataError) as err:
        captions.read_npy(target, "entry 0")
    assert "evil.npy" in _refused(err, marker)

    # The embedding cache (files anygen wrote itself) is read the same way.
    cached = captions._file("image", "a cat")
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(evil, cached)
    with pytest.raises(DataError) as err:
        captions.get(Target(modality="image", caption="a cat"), "entry 0")
    assert cached.name in _refused(err, marker)


# A saved tiny pipeline with one weights file swapped for the malicious pickle: under the .bin name the library
# would fall back to, or under the safetensors name itself.
_G = "outputs/image/generator"
_COMPONENTS = {
    "llm as pytorch_model.bin": ("llm/model.safetensors", "llm/pytorch_model.bin"),
    "llm as model.safetensors": ("llm/model.safetensors", "llm/model.safetensors"),
    "vae as .bin": (
        f"{_G}/vae/diffusion_pytorch_model.safetensors",
        f"{_G}/vae/diffusion_pytorch_model.bin",
    ),
    "vae as safetensors": (
        f"{_G}/vae/diffusion_pytorch_model.safetensors",
        f"{_G}/vae/diffusion_pytorch_model.safetensors",
    ),
    "unet as .bin": (
        f"{_G}/unet/diffusion_pytorch_model.safetensors",
        f"{_G}/unet/diffusion_pytorch_model.bin",
    ),
    "text encoder as .bin": (f"{_G}/text_encoder/model.safetensors", f"{_G}/text_encoder/pytorch_model.bin"),
    "vocoder as .bin": (
        "outputs/audio/generator/vocoder/model.safetensors",
        "outputs/audio/generator/vocoder/pytorch_model.bin",
    ),
    "tiny encoder": ("encoders/imagebind/model.safetensors", "encoders/imagebind/model.safetensors"),
    "input projector": ("input_projectors/imagebind.safetensors", "input_projectors/imagebind.safetensors"),
    "output projector": ("outputs/video/projector.safetensors", "outputs/video/projector.safetensors"),
}


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    from anygen import AnyToAnyPipeline

    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.load_all()
    return pipe.save_pretrained(tmp_path_factory.mktemp("saved") / "pipe")


def _load_all(folder: Path):
    from anygen import AnyToAnyPipeline

    AnyToAnyPipeline.from_pretrained(folder).load_all()


@pytest.mark.parametrize("case", list(_COMPONENTS))
def test_pipeline_weights_loaders_refuse_a_malicious_pickle(saved_pipeline, tmp_path, case):
    removed, planted = _COMPONENTS[case]
    folder = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, folder)
    (folder / removed).unlink()
    marker = tmp_path / "ran"
    _plant(folder / planted, marker)
    with pytest.raises(AnyGenError) as err:
        _load_all(folder)
    _refused(err, marker)


def test_llm_adapter_loader_refuses_a_malicious_pickle(saved_pipeline, tmp_path):
    folder = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, folder)
    spec = folder / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("  adapter: null\n", "  adapter: llm-lora\n", 1))
    (folder / "llm-lora").mkdir()
    (folder / "llm-lora" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}')
    marker = tmp_path / "ran"
    _plant(folder / "llm-lora" / "adapter_model.bin", marker)
    with pytest.raises(AnyGenError) as err:
        _load_all(folder)
    assert "adapter_model.safetensors" in _refused(err, marker)


def test_clip_encoder_loader_refuses_a_malicious_pickle(tmp_path):
    from anygen.encoders.clip import ClipImageEncoder

    root = ClipImageEncoder.from_config({"output_dim": 20}, seed=0).save_pretrained(tmp_path / "clip")
    (root / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    _plant(root / "pytorch_model.bin", marker)
    with pytest.raises(AnyGenError) as err:
        ClipImageEncoder.from_pretrained(root)
    _refused(err, marker)


def test_clap_encoder_loader_refuses_a_malicious_pickle(tmp_path):
    from anygen.encoders.clap import ClapEncoder

    root = ClapEncoder.from_config(None, seed=0).save_pretrained(tmp_path / "clap")
    (root / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    _plant(root / "pytorch_model.bin", marker)
    with pytest.raises(AnyGenError) as err:
        ClapEncoder.from_pretrained(root)
    _refused(err, marker)
    # Under the safetensors name itself: not a safetensors file, refused unread.
    (root / "pytorch_model.bin").rename(root / "model.safetensors")
    with pytest.raises(AnyGenError) as err:
        ClapEncoder.from_pretrained(root)
    _refused(err, marker)


@pytest.mark.parametrize("planted", ["adapter_model.bin", "adapter_model.safetensors"])
def test_apply_lora_adapter_refuses_a_malicious_pickle(tmp_path, planted):
    """``anygen.train.apply_lora_adapter`` (a stage-3 run's ``llm-lora/`` over its pipeline) reads only
    safetensors: peft's pickled ``adapter_model.bin`` is refused, a pickle under the safetensors name too."""
    from peft import LoraConfig

    from anygen import AnyToAnyPipeline
    from anygen.train import apply_lora_adapter

    folder = tmp_path / "llm-lora"
    LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]).save_pretrained(str(folder))
    marker = tmp_path / "ran"
    _plant(folder / planted, marker)
    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    before = {k: v.clone() for k, v in pipe.llm.model.state_dict().items()}
    with pytest.raises(AnyGenError) as err:
        apply_lora_adapter(pipe, folder)
    message = _refused(err, marker)
    assert "llm-lora" in message
    if planted.endswith(".bin"):
        assert "adapter_model.safetensors" in message
    after = pipe.llm.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_apply_lora_adapter_still_applies_a_safetensors_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    from anygen import AnyToAnyPipeline
    from anygen.train import apply_lora_adapter

    source = AnyToAnyPipeline.from_pretrained("tiny")
    peft_model = get_peft_model(source.llm.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(generator=torch.Generator().manual_seed(0))
    peft_model.save_pretrained(str(tmp_path / "llm-lora"))
    assert (tmp_path / "llm-lora" / "adapter_model.safetensors").is_file()
    expected = peft_model.merge_and_unload().state_dict()

    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    apply_lora_adapter(pipe, tmp_path / "llm-lora")
    merged = pipe.llm.model.state_dict()
    assert merged.keys() == expected.keys()
    assert all(torch.allclose(merged[k], expected[k], atol=1e-6) for k in expected)
