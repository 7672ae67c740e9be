"""The `mini` recipe: from an empty folder to a trained any-to-any pipeline, every step done by anygen's own code.

    anygen world train-mini --out runs/mini        (or make mini; the Python API is train_mini)

Steps, each writing a folder under ``out`` and skipped on a rerun when its settings and inputs are unchanged
(a step's key hashes its settings, the keys of the steps it reads, the world config and the initial graph):

1. ``world``       the shapes-and-tones world as NExT-GPT-format data (``anygen world make``)
2. ``gen-image``   Stable Diffusion (VAE, then UNet + CLIP text encoder) on images + captions
3. ``gen-video``   Zeroscope (VAE, then 3-D UNet + CLIP text encoder) on videos + captions
4. ``gen-audio``   AudioLDM (mel VAE, HiFi-GAN vocoder, then UNet + CLAP text encoder) on audio + captions
5. ``encoder``     ImageBind-style contrastive binding of images, videos and audio to text
6. ``lm``          the Llama LLM pre-trained on the world's conversations (``anygen train --stage lm``)
7. ``stage1``      NExT-GPT stage 1: input projector on X -> caption
8. ``stage2``      NExT-GPT stage 2: output projectors aligned to each generator's own text encoder
9. ``stage3``      NExT-GPT stage 3: LoRA + both projectors on instruction conversations
10. ``mini``      the result as shipped: ``out/stage3`` saved again with every weight stored in float16 (they
                   load as float32), named ``mini``
11. ``eval``       ``anygen eval --suite world`` on ``out/mini``: ``out/eval/report.json``

The trained pipeline is ``out/mini`` (``AnyToAnyPipeline.from_pretrained``); :func:`export_mini` copies it into
the package (``weights/mini`` and ``pipelines/mini.yaml``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from anygen.errors import AnyGenError

#: The graph of `mini` with random weights: the recipe's starting point.
INIT_SPEC = Path(__file__).with_name("mini-init.yaml")
KEY_FILE = ".recipe-key"
#: Part of every step's key: raise it when a change of anygen's code should redo the steps.
RECIPE_VERSION = 5

#: Settings of every step (the full recipe). ``quick`` scales the step counts down for a smoke run.
STEPS: dict[str, dict[str, Any]] = {
    "world": {},
    "gen-image": {"modality": "image", "vae_steps": 800, "max_steps": 2500, "batch_size": 32, "lr": 1e-3},
    # The video and audio text encoders are taught to tell their captions apart (text_steps), then frozen: trained
    # through the denoising loss they lost the direction words (video) and merged "mid" with "high" (audio).
    "gen-video": {
        "modality": "video", "init_from": "image", "text_steps": 300, "train_text_encoder": False, "max_steps": 2500,
        "batch_size": 8, "lr": 1e-3,
    },
    "gen-audio": {
        "modality": "audio", "vae_steps": 600, "vocoder_steps": 1500, "text_steps": 300, "train_text_encoder": False,
        "max_steps": 1500, "batch_size": 32, "lr": 1e-3,
    },
    "encoder": {"max_steps": 3000, "batch_size": 64, "lr": 1e-3},
    "lm": {"stage": "lm", "max_steps": 2000, "batch_size": 32, "lr": 2e-3, "data": "data-stage3.yaml"},
    "stage1": {"stage": 1, "max_steps": 600, "batch_size": 32, "lr": 1e-3, "data": "data-stage1.yaml"},
    "stage2": {"stage": 2, "max_steps": 600, "batch_size": 32, "lr": 1e-3, "data": "data-stage2.yaml"},
    "stage3": {
        "stage": 3, "max_steps": 800, "batch_size": 32, "lr": 1e-3, "data": "data-stage3.yaml",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    },
    "mini": {"dtype": "float16"},
    "eval": {},
}
ORDER = list(STEPS)
_STEP_KEYS = ("max_steps", "vae_steps", "vocoder_steps", "text_steps")


@dataclass
class RecipeResult:
    out: Path
    pipeline: Path  # the trained pipeline as shipped (out/mini)
    report: dict[str, Any] | None
    ran: list[str] = field(default_factory=list)  # steps run this time
    cached: list[str] = field(default_factory=list)  # steps whose earlier output was reused
    seconds: dict[str, float] = field(default_factory=dict)


def _settings(quick: bool) -> dict[str, dict[str, Any]]:
    steps = json.loads(json.dumps(STEPS))
    if quick:
        for name, s in steps.items():
            for k in _STEP_KEYS:
                if s.get(k):
                    s[k] = 2
            if "batch_size" in s:
                s["batch_size"] = 4
            if name == "world":
                s.update(images_per_combo=1, videos_per_combo=1, audios_per_combo=2, conversations=60)
            if name == "eval":
                s["limit"] = 2
    return steps


def _key(name: str, settings: dict[str, Any], upstream: list[str], seed: int, world: dict[str, Any]) -> str:
    graph = INIT_SPEC.read_text() if name != "world" else ""
    parts = [RECIPE_VERSION, name, settings, upstream, seed, world, graph]
    if name == "eval":  # a change of the suite's prompt set redoes the eval, not the training
        from anygen.eval.world import COMBINATION_REPEATS

        parts.append({"combination_repeats": COMBINATION_REPEATS})
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_mini(
    out: str | Path,
    *,
    world_config: str | Path | None = None,
    seed: int = 0,
    quick: bool = False,
    until: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RecipeResult:
    """Run the recipe into ``out`` (steps already done with the same settings are kept). ``quick``: a few
    iterations per step (a smoke test of the whole chain). ``until``: stop after that step."""
    from anygen.world.config import DEFAULT_WORLD, WorldConfig

    if until is not None and until not in STEPS:
        raise AnyGenError(f"train-mini: unknown step {until!r}; steps: {', '.join(ORDER)}")
    world = WorldConfig.from_yaml(world_config) if world_config else DEFAULT_WORLD
    world_dict = world.to_dict()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(quick)
    result = RecipeResult(out, out / "mini", None)
    keys: dict[str, str] = {}
    previous = None
    for name in ORDER:
        upstream = [keys[p] for p in ORDER[: ORDER.index(name)]]
        key = _key(name, settings[name], upstream, seed, world_dict)
        keys[name] = key
        folder = out / name
        done = (folder / KEY_FILE).is_file() and (folder / KEY_FILE).read_text().strip() == key
        if done:
            result.cached.append(name)
            log(f"[mini] {name}: unchanged, kept ({folder})")
        else:
            log(f"[mini] {name}: running ...")
            shutil.rmtree(folder, ignore_errors=True)
            start = time.perf_counter()
            _run_step(name, settings[name], out, previous, world, seed, progress)
            result.seconds[name] = round(time.perf_counter() - start, 1)
            (folder / KEY_FILE).write_text(key + "\n")
            result.ran.append(name)
            log(f"[mini] {name}: done in {result.seconds[name]:.0f} s")
        if name not in ("world", "eval"):
            previous = folder
        if name == until:
            break
    report_file = out / "eval" / "report.json"
    if report_file.is_file():
        result.report = json.loads(report_file.read_text())
    timings = out / "timings.json"
    old = json.loads(timings.read_text()) if timings.is_file() else {}
    timings.write_text(json.dumps({**old, **result.seconds}, indent=2) + "\n")
    return result


def _run_step(name: str, s: dict[str, Any], out: Path, previous: Path | None, world, seed: int, progress: bool):
    folder = out / name
    world_dir = out / "world"
    if name == "world":
        from anygen.world.datasets import make_world

        make_world(folder, world, seed=seed, progress=progress, **s)
        return
    if name.startswith("gen-"):
        from anygen.train.generator import train_generator

        modality = s["modality"]
        train_generator(
            {**s, "seed": seed},
            pipeline=str(previous or INIT_SPEC),
            data=str(world_dir / f"generator_{modality}.json"),
            out=str(folder),
            progress=progress,
            log_every=50,
        )
        return
    if name == "encoder":
        from anygen.train.encoder import train_encoder

        manifests = [str(world_dir / f"generator_{m}.json") for m in ("image", "video", "audio")]
        train_encoder({**s, "seed": seed}, pipeline=str(previous), data=manifests, out=str(folder),
                      progress=progress, log_every=50)
        return
    if name == "mini":
        _pack(previous, folder, s["dtype"])
        return
    if name == "eval":
        from anygen.eval.world import format_report, run_world_eval
        from anygen.pipeline import AnyToAnyPipeline

        folder.mkdir(parents=True, exist_ok=True)
        pipe = AnyToAnyPipeline.from_pretrained(previous)
        pipe.set_progress_bar_config(disable=True)
        report = run_world_eval(pipe, config=world, seed=seed, progress=progress, limit=s.get("limit"))
        (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(format_report(report))
        return
    from anygen.train.loop import train

    train(
        {k: v for k, v in s.items() if k != "data"},
        pipeline=str(previous),
        data=str(world_dir / s["data"]),
        out=str(folder),
        seed=seed,
        progress=progress,
        log_every=50,
        tensorboard=False,
        warmup_ratio=0.05,
        weight_decay=0.0,
    )


def _pack(trained: Path, folder: Path, dtype: str) -> None:
    """``trained`` saved again as ``folder`` under the name ``mini``, every weight stored in ``dtype`` (every loader
    reads it back as float32 unless asked otherwise)."""
    import torch

    from anygen.pipeline import AnyToAnyPipeline
    from anygen.world.language import EXAMPLE_PROMPTS

    pipe = AnyToAnyPipeline.from_pretrained(trained).load_all()
    pipe.to(dtype=getattr(torch, dtype))
    pipe.save_pretrained(folder)
    spec = folder / "pipeline.yaml"
    data = yaml.safe_load(spec.read_text())
    data["name"] = "mini"
    data["examples"] = list(EXAMPLE_PROMPTS)
    data["description"] = (
        "mini: trained end to end by anygen on the shapes-and-tones world (anygen world train-mini); "
        "offline, seconds per call on a CPU"
    )
    spec.write_text(yaml.safe_dump(data, sort_keys=False))


def export_mini(trained: str | Path, *, weights: str | Path, spec: str | Path) -> Path:
    """Copy the trained pipeline folder to ``weights`` (e.g. ``weights/mini``) and write ``spec`` (e.g.
    ``pipelines/mini.yaml``) naming the same files through ``${bundled_weights}``, so the bundled name loads it."""
    trained, weights, spec = Path(trained), Path(weights), Path(spec)
    if not (trained / "pipeline.yaml").is_file():
        raise AnyGenError(f"export: {trained} is not a saved pipeline (no pipeline.yaml)")
    shutil.rmtree(weights, ignore_errors=True)
    shutil.copytree(trained, weights, ignore=shutil.ignore_patterns("checkpoints", "cache", "metrics.jsonl",
                                                                    "tensorboard", KEY_FILE, "text_tower"))
    data = yaml.safe_load((weights / "pipeline.yaml").read_text())
    prefix = "${bundled_weights}/" + weights.name + "/"

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "path" and isinstance(v, str):
                    node[k] = prefix + v
                else:
                    rewrite(v)

    rewrite(data)
    data["name"] = weights.name
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return weights
