"""``make_world``: the shapes-and-tones world written as NExT-GPT-format training data.

Under ``out_dir``::

    world.yaml                       the WorldConfig used (seed included)
    images/ videos/ audios/          the media (PNG, MP4, WAV)
    image_pairs.json ...             pair lists: caption + image_name / video_name / audio_name
    image_comprehension.json ...     <image> what is in this image? -> caption
    image_generation.json ...        draw a red circle on the left -> A red circle on the left.<image>
    stage3_<form>.json               instruction conversations (new form), one file per task form
    data-stage1.yaml                 X -> caption (pair lists + comprehension)
    data-stage2.yaml                 text -> X (the generation files)
    data-stage3.yaml                 every task form, incl. image->video, video->image, two outputs
    generator_image.json ...         [{"media": "images/....png", "caption": ...}] for the diffusion generators
    text_corpus.json                 [{"user": ..., "assistant": ...}] every distinct exchange, for the LLM

No image and no image caption shows a held-out (colour, shape, position) combination. Each kind of file
draws from its own seeded random stream, so the same config and seed give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from anygen.world import language as L
from anygen.world.config import DEFAULT_WORLD, WorldConfig, WorldError
from anygen.world.render import render_audio, render_image, render_video

MEDIA_DIRS = {"image": "images", "video": "videos", "audio": "audios"}
#: The instruction-tuning task forms (stage 3), each written to ``stage3_<slug>.json``.
STAGE3_FORMS = (
    "text->image",
    "text->image (any position)",
    "text->video",
    "text->audio",
    "image->text",
    "video->text",
    "audio->text",
    "image->video",
    "video->image",
    "text->image+audio",
    "text->image+video",
    "text->video+audio",
    "text->image+video+audio",
)
# One random stream per kind of file (the second word of each stream's seed).
_STREAMS = {
    "image": 1,
    "video": 2,
    "audio": 3,
    "comprehension": 4,
    "generation": 5,
    "stage3": 6,
    "corpus": 7,
}


@dataclass
class WorldFiles:
    """What :func:`make_world` wrote (absolute paths)."""

    root: Path
    data_stage1: Path
    data_stage2: Path
    data_stage3: Path
    generators: dict[str, Path]  # modality -> generator_<modality>.json
    text_corpus: Path
    config: Path  # world.yaml
    counts: dict[str, int] = field(default_factory=dict)  # files and entries written, by kind


@dataclass(frozen=True)
class Medium:
    """One media file of the world and what it shows."""

    modality: str
    name: str  # file name inside images/ videos/ audios/
    attrs: dict[str, str]

    @property
    def relpath(self) -> str:
        return f"{MEDIA_DIRS[self.modality]}/{self.name}"

    def caption(self, *, position: bool = True) -> str:
        a = self.attrs
        if self.modality == "image":
            return L.image_caption(a["colour"], a["shape"], a["position"] if position else None)
        if self.modality == "video":
            return L.video_caption(a["colour"], a["shape"], a["direction"])
        return L.audio_caption(a["pitch"], a["pattern"])


def stream(seed: int, kind: str) -> np.random.Generator:
    """The random stream of one kind of file."""
    return np.random.default_rng([seed, _STREAMS[kind]])


def stage3_filename(form: str) -> str:
    slug = form.replace(" (any position)", "_any").replace("->", "_to_").replace("+", "_")
    return f"stage3_{slug}.json"


# -- media ---------------------------------------------------------------------------------------------
def _write_media(
    root: Path, config: WorldConfig, seed: int, counts: dict[str, int], tick: Callable[[], None]
) -> dict[str, list[Medium]]:
    pools: dict[str, list[Medium]] = {m: [] for m in MEDIA_DIRS}
    for d in MEDIA_DIRS.values():
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = stream(seed, "image")
    for c, s, p in config.seen_combinations():
        for k in range(counts["image"]):
            m = Medium("image", f"{c}_{s}_{p}_{k:03d}.png", {"colour": c, "shape": s, "position": p})
            render_image(c, s, p, config=config, rng=rng).save(root / m.relpath)
            pools["image"].append(m)
            tick()
    rng = stream(seed, "video")
    for c in config.colours:
        for s in config.shapes:
            for d in config.directions:
                for k in range(counts["video"]):
                    m = Medium(
                        "video", f"{c}_{s}_moving_{d}_{k:03d}.mp4", {"colour": c, "shape": s, "direction": d}
                    )
                    render_video(c, s, d, config=config, rng=rng).save(root / m.relpath)
                    pools["video"].append(m)
                    tick()
    rng = stream(seed, "audio")
    for pitch in config.pitches:
        for pattern in config.patterns:
            for k in range(counts["audio"]):
                m = Medium("audio", f"{pitch}_{pattern}_{k:03d}.wav", {"pitch": pitch, "pattern": pattern})
                render_audio(pitch, pattern, config=config, rng=rng).save(root / m.relpath)
                pools["audio"].append(m)
                tick()
    return pools


# -- entries -------------------------------------------------------------------------------------------
def conversation(
    user: str,
    inputs: list[Medium] = (),
    outputs: list[tuple[Medium, str]] = (),
    text_answer: str | None = None,
) -> dict[str, Any]:
    """One NExT-GPT entry (new form): the user's ``inputs`` (placed by the tags in ``user``), and either the
    ``outputs`` made (each a medium and its caption) or a text answer."""
    entry: dict[str, Any] = {}
    for m in inputs:
        entry.setdefault(f"input_{m.modality}", []).append(m.name)
    for m, caption in outputs:
        entry.setdefault(f"output_{m.modality}", []).append(m.name)
        entry.setdefault(f"{m.modality}_captions", []).append(caption)
    parts = [(caption, m.modality) for m, caption in outputs] if outputs else [(text_answer, None)]
    gpt: dict[str, Any] = {"from": "gpt", "value": L.answer(*parts)}
    gpt["output_modality"] = "+".join(m.modality for m, _ in outputs) or "text"
    if len(outputs) == 1:
        gpt["caption"] = outputs[0][1]
    human = {"from": "human", "value": user, "input_modality": "+".join(m.modality for m in inputs) or "text"}
    entry["conversations"] = [human, gpt]
    return entry


def _pick(rng: np.random.Generator, pool: list[Medium], **attrs: str) -> Medium:
    matching = [m for m in pool if all(m.attrs[k] == v for k, v in attrs.items())]
    return matching[int(rng.integers(len(matching)))]


def _variant(rng: np.random.Generator) -> int:
    return int(rng.integers(1 << 16))


def _comprehension(pools: dict[str, list[Medium]], rng: np.random.Generator) -> dict[str, list[dict]]:
    return {
        mod: [conversation(L.describe_prompt(mod, _variant(rng)), [m], text_answer=m.caption()) for m in pool]
        for mod, pool in pools.items()
    }


def _generation_prompt(m: Medium, variant: int, *, position: bool = True) -> str:
    a = m.attrs
    if m.modality == "image":
        return L.image_prompt(a["colour"], a["shape"], a["position"] if position else None, variant)
    if m.modality == "video":
        return L.video_prompt(a["colour"], a["shape"], a["direction"], variant)
    return L.audio_prompt(a["pitch"], a["pattern"], variant)


def _generation(pools: dict[str, list[Medium]], rng: np.random.Generator) -> dict[str, list[dict]]:
    """Text -> X. A quarter of the image requests give no position (``draw a blue square``): the answer's caption
    has none either, and the image shows the shape wherever it is."""
    out: dict[str, list[dict]] = {}
    for mod, pool in pools.items():
        entries = []
        for m in pool:
            position = mod != "image" or rng.random() >= 0.25
            prompt = _generation_prompt(m, _variant(rng), position=position)
            entries.append(conversation(prompt, outputs=[(m, m.caption(position=position))]))
        out[mod] = entries
    return out


def _stage3_entry(form: str, pools: dict[str, list[Medium]], rng: np.random.Generator) -> dict:
    def any_of(mod: str, **attrs: str) -> Medium:
        return _pick(rng, pools[mod], **attrs)

    v = _variant(rng)
    if form in ("text->image", "text->image (any position)", "text->video", "text->audio"):
        m = any_of(form.split("->")[1].split(" ")[0])
        position = form != "text->image (any position)"
        return conversation(
            _generation_prompt(m, v, position=position), outputs=[(m, m.caption(position=position))]
        )
    if form.endswith("->text"):
        m = any_of(form.split("->")[0])
        return conversation(L.describe_prompt(m.modality, v), [m], text_answer=m.caption())
    if form == "image->video":
        img = any_of("image")
        vid = any_of("video", colour=img.attrs["colour"], shape=img.attrs["shape"])
        return conversation(L.image_to_video_prompt(vid.attrs["direction"], v), [img], [(vid, vid.caption())])
    if form == "video->image":
        vid = any_of("video")
        img = any_of("image", colour=vid.attrs["colour"], shape=vid.attrs["shape"])
        return conversation(L.video_to_image_prompt(v), [vid], [(img, img.caption(position=False))])
    # Several outputs at once: "draw a red circle and play a low steady tone".
    media = [any_of(kind) for kind in form.split("->")[1].split("+")]
    pos = bool(rng.random() >= 0.25)
    prompts = [_generation_prompt(m, v if i == 0 else _variant(rng), position=pos) for i, m in enumerate(media)]
    return conversation(L.joint_prompt(*prompts), outputs=[(m, m.caption(position=pos)) for m in media])


def _stage3(pools: dict[str, list[Medium]], total: int, rng: np.random.Generator) -> dict[str, list[dict]]:
    n, extra = divmod(total, len(STAGE3_FORMS))
    return {
        form: [_stage3_entry(form, pools, rng) for _ in range(n + (i < extra))]
        for i, form in enumerate(STAGE3_FORMS)
    }


def _text_corpus(
    pools: dict[str, list[Medium]], sets: list[list[dict]], rng: np.random.Generator
) -> list[dict[str, str]]:
    pairs = {(f"<{m.modality}>", m.caption()): None for pool in pools.values() for m in pool}
    for entries in sets:
        for e in entries:
            turns = e["conversations"]
            pairs[(turns[0]["value"], turns[1]["value"])] = None
    ordered = list(pairs)
    return [{"user": ordered[i][0], "assistant": ordered[i][1]} for i in rng.permutation(len(ordered))]


def _generator_manifest(pool: list[Medium]) -> list[dict[str, str]]:
    """Every medium with its full caption. (Image rows are not repeated with the position-free caption: with a
    quarter of them repeated so, mini's 3.7 M-parameter UNet ignored the position words altogether (17 of 45
    right, chance); without, 45 of 45, and it still draws the right colour and shape for a position-free
    caption (30 of 30), somewhere.)"""
    return [{"media": m.relpath, "caption": m.caption()} for m in pool]


# -- writing -------------------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _write_data_yaml(path: Path, header: str, sets: dict[str, dict[str, Any]]) -> Path:
    text = (
        f"# {header}\n# Paths are relative to this folder; media lie in images/ videos/ audios/ beside it.\n"
    )
    text += yaml.safe_dump({"sets": sets}, sort_keys=False, width=110)
    path.write_text(text, encoding="utf-8")
    return path


def make_world(
    out_dir: str | Path,
    config: WorldConfig = DEFAULT_WORLD,
    *,
    images_per_combo: int = 56,
    videos_per_combo: int = 13,
    audios_per_combo: int = 100,
    conversations: int = 6000,
    seed: int | None = None,
    progress: bool = True,
) -> WorldFiles:
    """Write the world's media and NExT-GPT-format data under ``out_dir`` (see the module docstring).

    Defaults: 56 images per seen (colour, shape, position) (36 × 56 = 2016), 13 videos per (colour, shape,
    direction) (60 × 13 = 780), 100 audios per (pitch, pattern) (600), 6000 stage-3 conversations. ``seed``
    defaults to ``config.seed``; the config written to ``world.yaml`` carries the seed used.
    """
    from tqdm.auto import tqdm

    for name, value in (
        ("images_per_combo", images_per_combo),
        ("videos_per_combo", videos_per_combo),
        ("audios_per_combo", audios_per_combo),
    ):
        if not isinstance(value, int) or value < 1:
            raise WorldError(f"make_world: {name} must be a positive integer, got {value!r}")
    if not isinstance(conversations, int) or conversations < len(STAGE3_FORMS):
        raise WorldError(
            f"make_world: conversations must be at least {len(STAGE3_FORMS)}, got {conversations!r}"
        )
    seed = config.seed if seed is None else int(seed)
    config = config.model_copy(update={"seed": seed})
    root = Path(out_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    per_combo = {"image": images_per_combo, "video": videos_per_combo, "audio": audios_per_combo}
    total = (
        len(config.seen_combinations()) * images_per_combo
        + len(config.colours) * len(config.shapes) * len(config.directions) * videos_per_combo
        + len(config.pitches) * len(config.patterns) * audios_per_combo
    )
    with tqdm(total=total, desc="world media", unit="file", disable=not progress) as bar:
        pools = _write_media(root, config, seed, per_combo, lambda: bar.update(1))

    counts = {f"{m}s": len(pool) for m, pool in pools.items()}
    stage1: dict[str, dict[str, Any]] = {}
    stage2: dict[str, dict[str, Any]] = {}
    stage3: dict[str, dict[str, Any]] = {}
    for mod, pool in pools.items():
        pairs = [
            {"caption": m.caption(), f"{mod}_name": m.name, "id": m.name.rsplit(".", 1)[0]} for m in pool
        ]
        _write_json(root / f"{mod}_pairs.json", pairs)
        stage1[f"{mod}_pairs"] = {"path": f"{mod}_pairs.json", "task": "comprehension"}
    comprehension = _comprehension(pools, stream(seed, "comprehension"))
    for mod, entries in comprehension.items():
        _write_json(root / f"{mod}_comprehension.json", entries)
        stage1[f"{mod}_comprehension"] = {"path": f"{mod}_comprehension.json"}
    generation = _generation(pools, stream(seed, "generation"))
    for mod, entries in generation.items():
        _write_json(root / f"{mod}_generation.json", entries)
        stage2[f"{mod}_generation"] = {"path": f"{mod}_generation.json", "task": "generation"}
    instructions = _stage3(pools, conversations, stream(seed, "stage3"))
    for form, entries in instructions.items():
        name = stage3_filename(form)
        _write_json(root / name, entries)
        stage3[name.removesuffix(".json")] = {"path": name}
    counts["conversations"] = sum(len(e) for e in instructions.values())

    generators = {
        mod: _write_json(root / f"generator_{mod}.json", _generator_manifest(pool))
        for mod, pool in pools.items()
    }
    corpus = _text_corpus(
        pools,
        [*comprehension.values(), *generation.values(), *instructions.values()],
        stream(seed, "corpus"),
    )
    text_corpus = _write_json(root / "text_corpus.json", corpus)
    counts["text_pairs"] = len(corpus)

    files = WorldFiles(
        root=root,
        data_stage1=_write_data_yaml(
            root / "data-stage1.yaml", "Stage 1: image, video and audio -> caption.", stage1
        ),
        data_stage2=_write_data_yaml(
            root / "data-stage2.yaml",
            "Stage 2: a request in words -> the caption and the signal tokens.",
            stage2,
        ),
        data_stage3=_write_data_yaml(
            root / "data-stage3.yaml", "Stage 3: instruction conversations, every task form.", stage3
        ),
        generators=generators,
        text_corpus=text_corpus,
        config=root / "world.yaml",
        counts=counts,
    )
    config.to_yaml(files.config)
    return files
