"""The ``pairs`` suite: a pipeline on real NExT-GPT pair lists, scored with standard reference-based and
reference-free metrics (:mod:`anygen.eval.scores`).

Data: NExT-GPT's pair lists (``T_X_pair_data/cc3m/cc3m.json``, ``audiocap/audiocap.json``,
``webvid/webvid.json``): entries ``{"caption", "image_name" | "video_name" | "audio_name"}``, the media found
next to the JSON or in its ``images/`` / ``videos/`` / ``audios/`` folder (NExT-GPT's layout). A folder is
searched for such lists (``*_comprehension.json`` / ``*_generation.json`` are not pair lists and are passed by).

Tasks, per modality ``m`` the data holds (each over the first ``limit`` usable entries of ``m``):

- ``text->m`` (needs ``--clip`` for image/video, ``--clap`` for audio): the caption is the prompt, ``m`` is
  requested (``output_modalities=[m], only_requested=True``) and the output scored against the caption:
  CLIP score (a video: the mean over its frames) or CLAP score, ``100 * max(cos, 0)``.
- ``m->text``: ``<m> describe this ...`` with the medium; the answer scored with BLEU-4 and CIDEr-D against
  every caption the lists give that medium.

Every call uses the same ``seed`` (a prompt gives the same answer alone or in a batch of any size). An entry
whose medium is missing or unreadable, or that is malformed, is an error naming the file and entry, or, with
``skip_bad``, skipped and counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anygen.errors import AnyGenError
from anygen.eval.scores import ClapScorer, ClipScorer, caption_scores

__all__ = ["TASKS", "Pair", "PairData", "load_pairs", "run_pairs_eval", "format_report"]

MODALITIES = ("image", "video", "audio")
TASKS = tuple(f"text->{m}" for m in MODALITIES) + tuple(f"{m}->text" for m in MODALITIES)
MEDIA_DIRS = {"image": "images", "video": "videos", "audio": "audios"}
DESCRIBE = {
    "image": "<image> describe this image.",
    "video": "<video> describe this video.",
    "audio": "<audio> describe this sound.",
}
SCORERS = {"image": "clip", "video": "clip", "audio": "clap"}
_NOT_PAIR_LISTS = ("_comprehension.json", "_generation.json")


class PairDataError(AnyGenError):
    """A pair list is missing, malformed, or names media that is missing or unreadable."""


@dataclass(frozen=True)
class Pair:
    """One pair-list entry: a medium and its caption."""

    modality: str
    media: Path
    caption: str
    source: str  # "cc3m.json entry 3", for messages


@dataclass
class PairData:
    """The entries the suite uses (per modality, at most ``limit``), every caption per medium, what was skipped."""

    files: list[Path]
    pairs: dict[str, list[Pair]]
    references: dict[Path, list[str]]
    skipped: list[str] = field(default_factory=list)
    limit: int | None = None


# ---------------------------------------------------------------------------------------------- reading


def _pair_modality(entry: Any) -> str | None:
    """The modality of a pair-list entry (``caption`` + exactly one ``<m>_name``), else None."""
    if not isinstance(entry, dict) or "caption" not in entry or "conversations" in entry:
        return None
    names = [m for m in MODALITIES if f"{m}_name" in entry]
    return names[0] if len(names) == 1 else None


def _read_json(path: Path, arg: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PairDataError(f"{arg} {path}: cannot read it as JSON: {err}") from None


def find_pair_lists(data: Sequence[str | Path]) -> list[tuple[Path, list]]:
    """Each pair list named by ``data`` (files, or folders searched recursively) with its entries."""
    if isinstance(data, (str, Path)):
        data = [data]
    if not data:
        raise PairDataError(
            "--data: give at least one NExT-GPT pair list (e.g. T_X_pair_data/cc3m/cc3m.json)"
        )
    found: list[tuple[Path, list]] = []
    for item in data:
        path = Path(item).expanduser()
        if path.is_file():
            entries = _read_json(path, "--data")
            if not isinstance(entries, list) or not entries or _pair_modality(entries[0]) is None:
                first = entries[0] if isinstance(entries, list) and entries else entries
                keys = sorted(first) if isinstance(first, dict) else type(first).__name__
                raise PairDataError(
                    f"--data {path}: not a NExT-GPT pair list (a JSON list of {{'caption', 'image_name' | "
                    f"'video_name' | 'audio_name'}}); its first entry has {keys}"
                )
            found.append((path, entries))
        elif path.is_dir():
            before = len(found)
            for json_file in sorted(path.rglob("*.json")):
                if json_file.name.endswith(_NOT_PAIR_LISTS):
                    continue
                entries = _read_json(json_file, "--data")
                if isinstance(entries, list) and entries and _pair_modality(entries[0]) is not None:
                    found.append((json_file, entries))
            if len(found) == before:
                raise PairDataError(
                    f"--data {path}: no NExT-GPT pair list in this folder (*.json of {{'caption', "
                    "'image_name' | 'video_name' | 'audio_name'}})"
                )
        else:
            raise PairDataError(f"--data {path}: no such file or folder")
    return found


def _media_path(json_file: Path, name: Any, modality: str) -> Path:
    p = Path(str(name)).expanduser()
    if p.is_absolute():
        return p
    candidates = [json_file.parent / MEDIA_DIRS[modality] / p, json_file.parent / p]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _read_entry(json_file: Path, entry: Any, index: int) -> Pair:
    source = f"{json_file.name} entry {index}"
    modality = _pair_modality(entry)
    if modality is None:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise PairDataError(
            f"{source}: expected 'caption' and one of image_name/video_name/audio_name, got {keys}"
        )
    caption, name = entry["caption"], entry[f"{modality}_name"]
    if not isinstance(caption, str) or not caption.strip():
        raise PairDataError(f"{source}: 'caption' must be a non-empty string, got {caption!r}")
    if not isinstance(name, (str, int)) or str(name) == "":
        raise PairDataError(f"{source}: '{modality}_name' must be a file name, got {name!r}")
    return Pair(modality, _media_path(json_file, name, modality), caption.strip(), f"{source} ({name})")


def load_pairs(data: Sequence[str | Path], *, limit: int | None = None, skip_bad: bool = False) -> PairData:
    """Read the pair lists ``data`` names: per modality the first ``limit`` entries whose medium exists.

    A malformed entry or a missing medium raises :class:`PairDataError` naming the file and entry, or, with
    ``skip_bad``, is skipped (and listed in ``skipped``). Every entry is read (the captions of a medium are all its
    references), but media are looked for only up to ``limit``."""
    if limit is not None and limit < 1:
        raise AnyGenError(f"--limit must be at least 1, got {limit}")
    lists = find_pair_lists(data)
    pairs: dict[str, list[Pair]] = {m: [] for m in MODALITIES}
    references: dict[Path, list[str]] = {}
    skipped: list[str] = []
    for json_file, entries in lists:
        for i, entry in enumerate(entries):
            try:
                pair = _read_entry(json_file, entry, i)
            except PairDataError as err:
                if not skip_bad:
                    raise
                skipped.append(str(err))
                continue
            references.setdefault(pair.media, []).append(pair.caption)
            chosen = pairs[pair.modality]
            if limit is not None and len(chosen) >= limit:
                continue
            if not pair.media.is_file():
                problem = f"{pair.source}: {pair.modality} file {pair.media} not found"
                if not skip_bad:
                    raise PairDataError(f"{problem} (--skip-bad skips such entries and counts them)")
                skipped.append(problem)
                continue
            chosen.append(pair)
    if not any(pairs.values()):
        names = ", ".join(str(f) for f, _ in lists)
        raise PairDataError(f"--data {names}: no usable entries ({len(skipped)} skipped: {skipped[0]})")
    return PairData([f for f, _ in lists], {m: p for m, p in pairs.items() if p}, references, skipped, limit)


# ---------------------------------------------------------------------------------------------- running


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _distinct_media(pairs: list[Pair]) -> list[Pair]:
    seen: set[Path] = set()
    return [p for p in pairs if not (p.media in seen or seen.add(p.media))]


def plan_tasks(data: PairData, scorers: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The tasks that run on ``data`` with ``scorers`` (``{"clip": ..., "clap": ...}``), and why the others do not."""
    run, skipped = [], {}
    for task in TASKS:
        src, dst = task.split("->")
        m = dst if src == "text" else src
        if m not in data.pairs:
            skipped[task] = f"the data has no {m} pairs"
        elif src == "text" and scorers.get(SCORERS[m]) is None:
            skipped[task] = f"no --{SCORERS[m]} scorer given"
        else:
            run.append(task)
    return run, skipped


def run_pairs_eval(
    pipe: Callable[..., Any],
    data: PairData,
    *,
    clip: ClipScorer | None = None,
    clap: ClapScorer | None = None,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = True,
    skip_bad: bool = False,
    call_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the pairs suite on ``pipe`` (an :class:`~anygen.AnyToAnyPipeline` or anything called the same way
    with a list of prompts). Returns a JSON-able report (:func:`format_report` prints it)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise AnyGenError(f"--batch-size must be at least 1, got {batch_size}")
    scorers = {"clip": clip, "clap": clap}
    tasks, not_run = plan_tasks(data, scorers)
    work: dict[str, list[Pair]] = {}
    for t in tasks:
        src, dst = t.split("->")
        work[t] = data.pairs[dst] if src == "text" else _distinct_media(data.pairs[src])
    start = time.perf_counter()
    skipped = list(data.skipped)
    rows: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    options = dict(call_options or {})
    inner = getattr(pipe, "set_progress_bar_config", None)
    before = dict(getattr(pipe, "_progress", {}) or {})
    if inner is not None:
        inner(disable=True)  # one bar for the suite
    bar = tqdm(total=sum(len(w) for w in work.values()), desc="pairs eval", unit="item", disable=not progress)
    try:
        for task in tasks:
            src, dst = task.split("->")
            task_rows: list[dict[str, Any]] = []
            for batch in _batches(work[task], batch_size):
                if src == "text":
                    task_rows += _generate(pipe, task, batch, scorers, seed, options)
                else:
                    task_rows += _describe(pipe, task, batch, skipped, skip_bad, seed, options)
                bar.update(len(batch))
            summaries[task] = _summarise(task, task_rows, data)
            rows.extend(task_rows)
    finally:
        bar.close()
        if inner is not None:
            inner(**before) if before else inner(disable=False)
    spec = getattr(pipe, "spec", None)
    return {
        "suite": "pairs",
        "pipeline": getattr(spec, "name", None) or type(pipe).__name__,
        "data": [str(f) for f in data.files],
        "seed": seed,
        "limit": data.limit,
        "batch_size": batch_size,
        "n": len(rows),
        "tasks": summaries,
        "not_run": not_run,
        "skipped_entries": len(skipped),
        "skipped": skipped,
        "tokenization": "lower case, punctuation removed, split on whitespace (pycocoevalcap's Java PTB "
        "tokenizer is not used)",
        "seconds": round(time.perf_counter() - start, 2),
        "items": rows,
    }


def _generate(
    pipe, task: str, batch: list[Pair], scorers: dict[str, Any], seed: int, options: dict
) -> list[dict]:
    """text->m on one batch: the captions as prompts, ``m`` requested, each output scored against its caption."""
    m = task.split("->")[1]
    outs = pipe([p.caption for p in batch], output_modalities=[m], only_requested=True, seed=seed, **options)
    made = [getattr(o, f"{m}s")[0] if getattr(o, f"{m}s") else None for o in outs]
    have = [i for i, x in enumerate(made) if x is not None]
    values: list[float | None] = [None] * len(batch)
    if have:
        scorer = scorers[SCORERS[m]]
        score = {"image": "score_images", "video": "score_videos", "audio": "score_audios"}[m]
        got = getattr(scorer, score)([made[i] for i in have], [batch[i].caption for i in have])
        for i, v in zip(have, got, strict=True):
            values[i] = float(v)
    metric = f"{SCORERS[m]}_score"
    return [
        _row(task, p, p.caption, o.text, {metric: v}) for p, o, v in zip(batch, outs, values, strict=True)
    ]


def _describe(
    pipe, task: str, batch: list[Pair], skipped: list[str], skip_bad: bool, seed: int, options: dict
) -> list[dict]:
    """m->text on one batch: each medium loaded (an unreadable one raises, or is skipped and counted) and
    described; no media may be made."""
    from anygen.media import load_media

    m = task.split("->")[0]
    loaded, keep = [], []
    for p in batch:
        try:
            loaded.append(load_media(m, p.media, name=str(p.media)))
            keep.append(p)
        except AnyGenError as err:
            if not skip_bad:
                raise PairDataError(f"{p.source}: {err} (--skip-bad skips such entries)") from None
            skipped.append(f"{p.source}: {err}")
    if not keep:
        return []
    prompts = [DESCRIBE[m]] * len(keep)
    media = {f"{m}s": [[x] for x in loaded]}
    outs = pipe(prompts, **media, output_modalities=[], only_requested=True, seed=seed, **options)
    return [_row(task, p, DESCRIBE[m], o.text, {}) for p, o in zip(keep, outs, strict=True)]


def _row(task: str, pair: Pair, prompt: str, text: str, scores: dict) -> dict[str, Any]:
    return {
        "task": task,
        "source": pair.source,
        "media": str(pair.media),
        "caption": pair.caption,
        "prompt": prompt,
        "text": text,
        "scores": scores,
    }


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _summarise(task: str, rows: list[dict[str, Any]], data: PairData) -> dict[str, Any]:
    """Per task: the mean CLIP/CLAP score (and how many answers made no medium), or corpus BLEU-4 and CIDEr-D."""
    if task.startswith("text->"):
        metric = f"{SCORERS[task.split('->')[1]]}_score"
        values = [r["scores"][metric] for r in rows if r["scores"][metric] is not None]
        return {"n": len(rows), metric: _mean(values), "no_output": len(rows) - len(values)}
    if not rows:
        return {"n": 0, "bleu4": None, "cider": None}
    refs = [data.references[Path(r["media"])] for r in rows]
    scores = caption_scores([r["text"] for r in rows], refs)
    for r, b, c in zip(rows, scores.item_bleu4, scores.item_cider, strict=True):
        r["scores"] = {"bleu4": round(b, 4), "cider": round(c, 4)}
        r["references"] = data.references[Path(r["media"])]
    return {"n": len(rows), "bleu4": round(scores.bleu4, 4), "cider": round(scores.cider, 4)}


# ---------------------------------------------------------------------------------------------- the table


def format_report(report: dict[str, Any]) -> str:
    """The report as one screen: a row per task with its scores, then what did not run and what was skipped."""

    def cell(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    head = f"{'task':14s} {'n':>5s} {'CLIP':>7s} {'CLAP':>7s} {'BLEU-4':>7s} {'CIDEr':>7s}"
    lines = [head, "-" * len(head)]
    for task, s in report["tasks"].items():
        lines.append(
            f"{task:14s} {s['n']:>5d} {cell(s.get('clip_score'), 2):>7s} {cell(s.get('clap_score'), 2):>7s} "
            f"{cell(s.get('bleu4'), 3):>7s} {cell(s.get('cider'), 3):>7s}"
        )
    lines.append("-" * len(head))
    for task, why in report["not_run"].items():
        lines.append(f"not run: {task} ({why})")
    if report["skipped_entries"]:
        lines.append(f"skipped entries: {report['skipped_entries']} (see 'skipped' in the JSON report)")
    names = ", ".join(Path(f).name for f in report["data"])
    lines.append(f"pairs suite on {names}: seed {report['seed']}, {report['seconds']} s")
    lines.append("CLIP/CLAP: 100 * max(cos, 0); BLEU-4 in [0, 1]; CIDEr-D as pycocoevalcap gives it (0-10)")
    return "\n".join(lines)
