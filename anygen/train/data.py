"""NExT-GPT's training data, read as it ships, into :class:`Example` conversations.

Formats (recognised per entry, so one reader serves every file):

* pair lists ``cc3m.json`` / ``audiocap.json`` / ``webvid.json``: ``caption`` + ``image_name`` / ``audio_name`` /
  ``video_name``. Read as captioning (user gives the media, assistant answers the caption: stage 1) or as
  generation (user gives the caption, assistant answers the caption and the signal tokens, as NExT-GPT's
  stage 2 did), per the set's ``task`` (``auto``: captioning in stage 1, generation otherwise).
* ``*_comprehension.json``: ``input_image`` / ``input_audio`` / ``input_video`` + ``conversations``, the user
  turn holding ``<image>`` / ``<audio>`` / ``<video>``.
* ``*_generation.json``: ``output_<m>``, ``<m>_captions``, ``<m>_caption_embeddings`` + ``conversations``, the
  assistant turn holding the tag (where the signal tokens go).
* instruction tuning, new form: ``conversations`` (``from``/``value``, ``input_modality``, ``output_modality``,
  ``caption``) with ``<m>_captions`` / ``<m>_caption_embeddings`` lists; legacy form: ``conversation`` whose
  assistant turns carry ``output_modality`` and ``caption`` (the signal tokens follow the text), with
  ``mm_name`` naming the caption embedding (``<mm_name>.npy``) and ``image_name`` an input image.

A ``DATA.yaml`` names the sets, their media roots and mixing weights (see ``examples/train/DATA.yaml``).
Media paths are checked when the data is read: a missing file is an error naming the file and the entry,
or, with ``skip_bad``, the entry is skipped and counted.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anygen.errors import AnyGenError

MODALITIES = ("image", "video", "audio")
MEDIA_DIRS = {"image": "images", "audio": "audios", "video": "videos"}
_TAG = re.compile(r"<(image|audio|video)>", re.IGNORECASE)
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_EXTENSIONS = {
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"), "image"),
    **dict.fromkeys((".wav", ".flac", ".mp3", ".ogg"), "audio"),
    **dict.fromkeys((".mp4", ".avi", ".mov", ".mkv", ".webm"), "video"),
}


class DataError(AnyGenError):
    """Training data is malformed, or names media that is missing or unreadable."""


# ----------------------------------------------------------------------------------------------------------
# Examples


@dataclass
class Target:
    """One medium the assistant produces: what its signal tokens must be aligned to."""

    modality: str
    caption: str | None = None  # encoded by the generator's own text encoder
    embedding: Path | None = None  # NExT-GPT's *.npy (used when the set has an embed_root)
    media: Path | None = None  # the medium itself (the diffusion loss)


@dataclass
class ExampleTurn:
    role: str  # "user" | "assistant"
    text: str  # tags in lower case; in assistant turns each tag is a signal span
    media: dict[str, list[Path]] = field(default_factory=dict)  # user turns: inputs by modality


@dataclass
class Example:
    turns: list[ExampleTurn]
    targets: list[Target]  # one per assistant tag, in order of appearance
    source: str  # "cc3m.json entry 3", for messages
    set_name: str = ""

    @property
    def input_modalities(self) -> list[str]:
        return [m for m in MODALITIES if any(t.media.get(m) for t in self.turns)]

    @property
    def output_modalities(self) -> list[str]:
        return [m for m in MODALITIES if any(t.modality == m for t in self.targets)]

    @property
    def group(self) -> str:
        """The sampler's batching key, e.g. ``image->text`` (stage 1), ``text->audio`` (stage 2): batches hold one
        group (NExT-GPT draws one modality at a time)."""
        ins, outs = self.input_modalities, self.output_modalities
        return f"{'+'.join(ins) or 'text'}->{'+'.join(outs) or 'text'}"

    def media_files(self, with_targets: bool) -> list[tuple[str, Path]]:
        files = [(m, p) for t in self.turns for m in MODALITIES for p in t.media.get(m, [])]
        if with_targets:
            files += [(t.modality, t.media) for t in self.targets if t.media is not None]
        return files


# ----------------------------------------------------------------------------------------------------------
# DATA.yaml


class SetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str = Field(description="a NExT-GPT JSON file")
    media_root: str | None = Field(
        None, description="default: the JSON's folder (and its images/ audios/ videos/)"
    )
    embed_root: str | None = Field(None, description="folder of the *.npy caption embeddings the JSON names")
    weight: float = Field(1.0, gt=0, description="mixing weight: the share of examples drawn from this set")
    task: Literal["auto", "comprehension", "generation"] = "auto"
    limit: int | None = Field(None, ge=1, description="read only the first N entries")


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str | None = Field(
        None, description="folder the paths below are relative to (default: this file's)"
    )
    sets: dict[str, SetSpec] = Field(min_length=1)


@dataclass
class DataSet:
    name: str
    path: Path
    weight: float
    examples: list[Example]
    skipped: list[str] = field(default_factory=list)  # why each skipped entry was skipped
    entries: int = 0


def read_data_spec(path: str | Path) -> tuple[DataSpec, Path]:
    """A DATA.yaml and the folder its relative paths start from."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping with 'sets', got {type(raw).__name__}")
    try:
        spec = DataSpec.model_validate(raw)
    except ValidationError as err:
        from anygen.train.config import format_validation_error

        raise DataError(f"{path}: {format_validation_error(err)}") from None
    base = path.parent
    if spec.root:
        base = _join(base, spec.root)
    return spec, base


def _join(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def load_sets(
    data: str | Path,
    *,
    stage: int,
    media_root: str | None = None,
    embed_root: str | None = None,
    task: str = "auto",
    skip_bad: bool = False,
    check_targets: bool = False,
) -> list[DataSet]:
    """Read a DATA.yaml (or one NExT-GPT JSON file) into data sets of examples for ``stage``.

    ``check_targets``: the target media must exist too (the diffusion loss reads them).
    """
    data = Path(data).expanduser()
    if data.suffix.lower() == ".json":
        sets = {data.stem: SetSpec(path=str(data), media_root=media_root, embed_root=embed_root, task=task)}
        base = Path.cwd()
    else:
        if media_root or embed_root:
            raise DataError(
                "--media-root / --embed-root go with a JSON file as data; in DATA.yaml give them per set"
            )
        spec, base = read_data_spec(data)
        sets = spec.sets
    out = []
    for name, s in sets.items():
        out.append(
            read_set(
                name,
                _join(base, s.path),
                media_root=_join(base, s.media_root) if s.media_root else None,
                embed_root=_join(base, s.embed_root) if s.embed_root else None,
                weight=s.weight,
                task=s.task,
                limit=s.limit,
                stage=stage,
                skip_bad=skip_bad,
                check_targets=check_targets,
            )
        )
    if not any(s.examples for s in out):
        skipped = sum(len(s.skipped) for s in out)
        raise DataError(f"no usable training examples in {data} ({skipped} entries skipped)")
    return out


def read_set(
    name: str,
    path: Path,
    *,
    media_root: Path | None,
    embed_root: Path | None,
    weight: float = 1.0,
    task: str = "auto",
    limit: int | None = None,
    stage: int = 3,
    skip_bad: bool = False,
    check_targets: bool = False,
) -> DataSet:
    if not path.is_file():
        raise DataError(f"data set {name!r}: {path} does not exist")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"data set {name!r}: cannot read {path}: {err}") from None
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of entries, got {type(entries).__name__}")
    if limit is not None:
        entries = entries[:limit]
    if task == "auto":
        task = "comprehension" if stage == 1 else "generation"
    reader = _EntryReader(path, media_root, embed_root, task, name)
    result = DataSet(name, path, weight, [], entries=len(entries))
    for i, entry in enumerate(entries):
        try:
            example = reader.read(entry, i)
            _check_for_stage(example, stage)
            _check_files(example, check_targets)
        except DataError as err:
            if not skip_bad:
                raise
            result.skipped.append(str(err))
            continue
        result.examples.append(example)
    return result


def _check_for_stage(example: Example, stage: int) -> None:
    if stage == 1 and not example.input_modalities:
        raise DataError(
            f"{example.source}: stage 1 trains the input projectors on media -> caption, but this entry gives "
            "no media input (use a pair list such as cc3m.json or a *_comprehension.json)"
        )
    if stage == 2 and not example.targets:
        raise DataError(
            f"{example.source}: stage 2 trains the output projectors on text -> media, but no assistant turn "
            "of this entry produces media (use a pair list or a *_generation.json)"
        )
    if stage in (2, 3):
        for t in example.targets:
            if t.caption is None and t.embedding is None:
                raise DataError(
                    f"{example.source}: the assistant produces <{t.modality}> but the entry gives neither its "
                    f"caption ({t.modality}_captions / caption) nor its caption embedding"
                )


def _check_files(example: Example, with_targets: bool) -> None:
    for modality, p in example.media_files(with_targets):
        if not p.is_file():
            raise DataError(f"{example.source}: {modality} file {p} not found")
    for t in example.targets:
        if t.embedding is not None and not t.embedding.is_file():
            raise DataError(f"{example.source}: caption embedding {t.embedding} not found")


# ----------------------------------------------------------------------------------------------------------
# Entry formats


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _EntryReader:
    def __init__(
        self, path: Path, media_root: Path | None, embed_root: Path | None, task: str, set_name: str
    ):
        self.path = path
        self.media_root = media_root
        self.embed_root = embed_root
        self.task = task
        self.set_name = set_name

    # -- paths -------------------------------------------------------------------------------------
    def media(self, name: Any, modality: str, source: str) -> Path:
        if not isinstance(name, (str, int)) or str(name) == "":
            raise DataError(f"{source}: expected a {modality} file name, got {name!r}")
        p = Path(str(name)).expanduser()
        if p.is_absolute():
            return p
        root = self.media_root or self.path.parent
        candidates = [root / p, root / MEDIA_DIRS[modality] / p]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            return found
        # Not there: name the file where NExT-GPT's layout (<set>/images/...) puts it, if that folder exists.
        return candidates[1] if candidates[1].parent.is_dir() else candidates[0]

    def embedding(self, name: Any, source: str) -> Path | None:
        if self.embed_root is None or name is None:
            return None
        if not isinstance(name, str):
            raise DataError(f"{source}: expected a caption-embedding file name, got {name!r}")
        p = Path(name).expanduser()
        return p if p.is_absolute() else self.embed_root / p

    # -- entries -----------------------------------------------------------------------------------
    def read(self, entry: Any, index: int) -> Example:
        source = f"{self.path.name} entry {index}"
        if not isinstance(entry, dict):
            raise DataError(f"{source}: expected an object, got {type(entry).__name__}")
        conv = entry.get("conversations", entry.get("conversation"))
        if conv is None:
            pair = [m for m in MODALITIES if f"{m}_name" in entry]
            if "caption" in entry and len(pair) == 1:
                return self.pair(entry, pair[0], source)
            raise DataError(
                f"{source}: not a NExT-GPT entry: expected 'conversations' (or legacy 'conversation'), or "
                f"'caption' with one of image_name/audio_name/video_name; got keys {sorted(entry)}"
            )
        return self.conversation(entry, conv, source)

    def pair(self, entry: dict, modality: str, source: str) -> Example:
        key = f"{modality}_name"
        caption = entry["caption"]
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{source}: 'caption' must be a non-empty string, got {caption!r}")
        path = self.media(entry[key], modality, source)
        source = f"{source} ({key} {entry[key]!r})"
        if self.task == "comprehension":
            turns = [ExampleTurn("user", "", {modality: [path]}), ExampleTurn("assistant", caption)]
            return Example(turns, [], source, self.set_name)
        embedding = self.embedding(f"{entry[key]}.npy", source)
        turns = [ExampleTurn("user", caption), ExampleTurn("assistant", f"{caption}<{modality}>")]
        return Example(turns, [Target(modality, caption, embedding, path)], source, self.set_name)

    def conversation(self, entry: dict, conv: Any, source: str) -> Example:
        if not isinstance(conv, list) or not conv:
            raise DataError(f"{source}: the conversation must be a non-empty list of turns")
        turns: list[ExampleTurn] = []
        raw_turns: list[dict] = []
        for j, t in enumerate(conv):
            if not isinstance(t, dict) or "from" not in t or "value" not in t:
                raise DataError(f"{source}: turn {j} must be an object with 'from' and 'value'")
            role = _ROLES.get(str(t["from"]).lower())
            if role is None:
                raise DataError(
                    f"{source}: turn {j} is from {t['from']!r}; expected human/gpt (or user/assistant)"
                )
            if not isinstance(t["value"], str):
                raise DataError(f"{source}: turn {j}: 'value' must be a string")
            text = _TAG.sub(lambda m: f"<{m.group(1).lower()}>", t["value"])
            if role == "assistant":
                out = str(t.get("output_modality") or "text").lower()
                if out in MODALITIES and f"<{out}>" not in text:
                    text = text + f"<{out}>"  # legacy: the signal tokens follow the answer
            if turns and turns[-1].role == role:
                raise DataError(f"{source}: turns {j - 1} and {j} are both from {t['from']!r}")
            if not turns and role != "user":
                raise DataError(f"{source}: the conversation must start with a human turn")
            turns.append(ExampleTurn(role, text))
            raw_turns.append(t)
        while turns and turns[-1].role == "user":  # nothing to learn after the last answer
            turns.pop()
            raw_turns.pop()
        if not turns:
            raise DataError(f"{source}: the conversation has no assistant turn")
        self._place_inputs(entry, turns, raw_turns, source)
        targets = self._targets(entry, turns, raw_turns, source)
        return Example(turns, targets, source, self.set_name)

    def _place_inputs(self, entry: dict, turns: list[ExampleTurn], raw: list[dict], source: str) -> None:
        users = [t for t in turns if t.role == "user"]
        for m in MODALITIES:
            names = _as_list(entry.get(f"input_{m}"))
            legacy = entry.get(f"{m}_name")
            # Legacy sets name their input image as image_name (LLaVA-style); MosIT puts a placeholder there, so
            # it counts only when a user turn refers to it.
            if not names and legacy is not None:
                referred = any(
                    f"<{m}>" in t.text or str(r.get("input_modality", "")).lower() == m
                    for t, r in zip(turns, raw, strict=True)
                    if t.role == "user"
                )
                if referred:
                    names = _as_list(legacy)
            paths = [self.media(n, m, source) for n in names]
            tags = [t.text.count(f"<{m}>") for t in users]
            if sum(tags) > len(paths):
                raise DataError(
                    f"{source}: the user turns hold {sum(tags)} <{m}> tag(s) but the entry gives {len(paths)} "
                    f"{m} input(s) (input_{m})"
                )
            pos = 0
            for turn, n in zip(users, tags, strict=True):
                if n:
                    turn.media[m] = paths[pos : pos + n]
                    pos += n
            if pos < len(paths):  # untagged inputs go to the first user turn, before its text
                if any(tags):
                    raise DataError(
                        f"{source}: {len(paths)} {m} input(s) but only {sum(tags)} <{m}> tag(s) in the user turns"
                    )
                users[0].media[m] = paths[pos:]

    def _targets(self, entry: dict, turns: list[ExampleTurn], raw: list[dict], source: str) -> list[Target]:
        captions = {m: _as_list(entry.get(f"{m}_captions")) for m in MODALITIES}
        embeds = {m: _as_list(entry.get(f"{m}_caption_embeddings")) for m in MODALITIES}
        outputs = {m: _as_list(entry.get(f"output_{m}")) for m in MODALITIES}
        mm_name = entry.get("mm_name")  # legacy T-T+X: the target's name; its embedding is <mm_name>.npy
        if mm_name is not None:
            kind = _EXTENSIONS.get(Path(str(mm_name)).suffix.lower())
            if kind is not None and not embeds[kind]:
                embeds[kind] = [f"{Path(str(mm_name)).name}.npy"]
        seen = dict.fromkeys(MODALITIES, 0)
        targets = []
        for turn, r in zip(turns, raw, strict=True):
            if turn.role != "assistant":
                continue
            for match in _TAG.finditer(turn.text):
                m = match.group(1)
                k = seen[m]
                seen[m] += 1
                caption = captions[m][k] if k < len(captions[m]) else r.get("caption")
                if caption is not None and not isinstance(caption, str):
                    raise DataError(f"{source}: the caption of <{m}> #{k} must be a string, got {caption!r}")
                embed = self.embedding(embeds[m][k], source) if k < len(embeds[m]) else None
                media = self.media(outputs[m][k], m, source) if k < len(outputs[m]) else None
                targets.append(Target(m, caption, embed, media))
        return targets
