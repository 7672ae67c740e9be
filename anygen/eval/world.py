"""The ``world`` suite: does a pipeline make and understand the shapes-and-tones world?

A fixed prompt set (the same for every pipeline and seed) is sent WITHOUT ``output_modalities``: the LLM
decides what to make. Tasks: text->image (all 45 colour/shape/position combinations, the held-out ones
reported as ``unseen``), text->video, text->audio, image->text, video->text, audio->text, image->video,
video->image and text->image+audio. Media inputs are drawn by the world's renderer with a fixed random
stream. Each answer is judged with the analytic judges (:mod:`anygen.eval.judges`) for media and
:func:`anygen.world.language.parse_attributes` for text, and counted right for an attribute only when the
medium or text that should carry it does, with the expected word. ``output_kind`` is right when the answer
holds exactly the expected kinds of media.

``shuffle_conditioning=True`` judges each answer against the expectations of another item of the same task
(a fixed permutation): whatever link there was between prompt and output is gone, so accuracies fall to
chance. A test uses it to show that the suite can fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anygen.eval.judges import judge_audio, judge_image, judge_video
from anygen.world import language as L
from anygen.world.config import DEFAULT_WORLD, WorldConfig
from anygen.world.render import render_audio, render_image, render_video

__all__ = [
    "TASKS",
    "ATTRIBUTES",
    "EvalItem",
    "WorldSuite",
    "run_world_eval",
    "format_report",
    "judge_image",
    "judge_video",
    "judge_audio",
]

TASKS = (
    "text->image",
    "text->video",
    "text->audio",
    "image->text",
    "video->text",
    "audio->text",
    "image->video",
    "video->image",
    "text->image+audio",
)
ATTRIBUTES = ("colour", "shape", "position", "direction", "pitch", "pattern")
#: Which output carries which attributes.
_CARRIES = {
    "image": ("colour", "shape", "position"),
    "video": ("colour", "shape", "direction"),
    "audio": ("pitch", "pattern"),
}
_EVAL_STREAM = 20240  # the fixed random stream of the eval's inputs and order (not the generation seed)
#: Items per (colour, shape, position) in the tasks that compare seen with unseen combinations. The held-out 20%
#: are 9 combinations; the issue's floor is "unseen within 10 points of seen". At accuracy p ~ 0.94 the gap's
#: standard error is sqrt(p(1-p)(1/9 + 1/36) / R) ~ 8.9 / sqrt(R) points: R = 3 (27 unseen items) left it at 5 points,
#: and `mini` read 85% vs 96% there while 180 fresh calls read 94% vs 94%. R = 8 brings it to 3 points, so a
#: 10-point gap is three standard errors away from none.
COMBINATION_REPEATS = 8


@dataclass
class EvalItem:
    """One prompt of the suite and what a right answer shows."""

    task: str
    prompt: str
    inputs: dict[str, list] = field(default_factory=dict)  # modality -> rendered media
    # "image" / "video" / "audio" (a medium made) or "text" (the answer's words) -> the attributes it shows
    expected: dict[str, dict[str, str]] = field(default_factory=dict)
    seen: bool | None = None  # for items naming a (colour, shape, position): not held out

    @property
    def kinds(self) -> tuple[str, ...]:
        """The media kinds a right answer makes (none for X->text)."""
        return tuple(m for m in ("image", "video", "audio") if m in self.expected)


def _spread(seen: list, unseen: list) -> list:
    """Both lists in one, the unseen items spread evenly (so any prefix holds its share of them)."""
    keyed = [((i + 0.5) / len(seen), 0, x) for i, x in enumerate(seen)]
    keyed += [((i + 0.5) / len(unseen), 1, x) for i, x in enumerate(unseen)]
    return [x for *_, x in sorted(keyed, key=lambda k: (k[0], k[1]))]


class WorldSuite:
    """The fixed items of the world suite for a :class:`WorldConfig`, and their scoring."""

    name = "world"

    def __init__(self, config: WorldConfig = DEFAULT_WORLD) -> None:
        self.config = config

    # -- the prompt set -------------------------------------------------------------------------------
    def items(self, limit: int | None = None) -> list[EvalItem]:
        """Every task's items in a fixed order; ``limit``: at most that many per task (a fixed prefix)."""
        cfg = self.config
        rng = np.random.default_rng(_EVAL_STREAM)

        def shuffled(xs: list) -> list:
            return [xs[i] for i in rng.permutation(len(xs))]

        def img(c, s, p, stream=rng):
            return render_image(c, s, p, config=cfg, rng=stream)

        def vid(c, s, d):
            return render_video(c, s, d, config=cfg, rng=rng)

        triples = cfg.all_combinations()
        seen_base = [t for t in triples if not cfg.is_held_out(*t)]
        unseen_base = [t for t in triples if cfg.is_held_out(*t)]
        triples = _spread(shuffled(seen_base), shuffled(unseen_base))
        moving = shuffled([(c, s, d) for c in cfg.colours for s in cfg.shapes for d in cfg.directions])
        tones = shuffled([(p, q) for p in cfg.pitches for q in cfg.patterns] * 2)
        pairs = shuffled([(c, s) for c in cfg.colours for s in cfg.shapes])
        out: dict[str, list[EvalItem]] = {t: [] for t in TASKS}

        def image_attrs(c, s, p=None):
            return {"colour": c, "shape": s, **({"position": p} if p else {})}

        def add_combinations(triples: list, start: int, stream: np.random.Generator) -> None:
            for i, (c, s, p) in enumerate(triples, start):
                out["text->image"].append(
                    EvalItem(
                        "text->image",
                        L.image_prompt(c, s, p, i),
                        expected={"image": image_attrs(c, s, p)},
                        seen=not cfg.is_held_out(c, s, p),
                    )
                )
                out["image->text"].append(
                    EvalItem(
                        "image->text",
                        L.describe_prompt("image", i),
                        inputs={"image": [img(c, s, p, stream)]},
                        expected={"text": image_attrs(c, s, p)},
                        seen=not cfg.is_held_out(c, s, p),
                    )
                )
                pitch, pattern = tones[i % len(tones)]
                out["text->image+audio"].append(
                    EvalItem(
                        "text->image+audio",
                        L.joint_prompt(L.image_prompt(c, s, p, i), L.audio_prompt(pitch, pattern, i)),
                        expected={
                            "image": image_attrs(c, s, p),
                            "audio": {"pitch": pitch, "pattern": pattern},
                        },
                        seen=not cfg.is_held_out(c, s, p),
                    )
                )

        add_combinations(triples, 0, rng)
        for i, (c, s, d) in enumerate(moving):
            attrs = {"colour": c, "shape": s, "direction": d}
            out["text->video"].append(
                EvalItem("text->video", L.video_prompt(c, s, d, i), expected={"video": attrs})
            )
            out["video->text"].append(
                EvalItem(
                    "video->text",
                    L.describe_prompt("video", i),
                    inputs={"video": [vid(c, s, d)]},
                    expected={"text": attrs},
                )
            )
            out["video->image"].append(
                EvalItem(
                    "video->image",
                    L.video_to_image_prompt(i),
                    inputs={"video": [vid(c, s, d)]},
                    expected={"image": image_attrs(c, s)},
                )
            )
        for i, (c, s) in enumerate(pairs * 4):
            d = cfg.directions[i % len(cfg.directions)]
            p = next(q for q in shuffled(list(cfg.positions)) if not cfg.is_held_out(c, s, q))
            out["image->video"].append(
                EvalItem(
                    "image->video",
                    L.image_to_video_prompt(d, i),
                    inputs={"image": [img(c, s, p)]},
                    expected={"video": {"colour": c, "shape": s, "direction": d}},
                )
            )
        for i, (pitch, pattern) in enumerate(tones):
            attrs = {"pitch": pitch, "pattern": pattern}
            out["text->audio"].append(
                EvalItem("text->audio", L.audio_prompt(pitch, pattern, i), expected={"audio": attrs})
            )
            out["audio->text"].append(
                EvalItem(
                    "audio->text",
                    L.describe_prompt("audio", i),
                    inputs={"audio": [render_audio(pitch, pattern, config=cfg, rng=rng)]},
                    expected={"text": attrs},
                )
            )
        # The repeats come last, from their own stream: the items before them are those of a single pass.
        repeats = np.random.default_rng(_EVAL_STREAM + 1)
        more = COMBINATION_REPEATS - 1
        add_combinations(
            _spread(
                [seen_base[j] for j in repeats.permutation(len(seen_base) * more) % len(seen_base)],
                [unseen_base[j] for j in repeats.permutation(len(unseen_base) * more) % len(unseen_base)],
            ),
            len(triples),
            repeats,
        )
        return [item for t in TASKS for item in out[t][:limit]]

    # -- judging --------------------------------------------------------------------------------------
    def judge(self, output: Any) -> dict[str, dict[str, str | None]]:
        """What an answer shows: per output kind it made (and its text), the attributes the judges read."""
        cfg = self.config
        got: dict[str, dict[str, str | None]] = {"text": L.parse_attributes(output.text or "", cfg)}
        if output.images:
            got["image"] = judge_image(output.images[0], config=cfg)
        if output.videos:
            got["video"] = judge_video(output.videos[0], config=cfg)
        if output.audios:
            got["audio"] = judge_audio(output.audios[0], config=cfg)
        return got

    def run(
        self,
        pipe: Callable[..., Any],
        *,
        limit: int | None = None,
        seed: int = 0,
        progress: bool = True,
        shuffle_conditioning: bool = False,
        call_options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        from tqdm.auto import tqdm

        items = self.items(limit)
        start = time.perf_counter()
        records = []
        inner = getattr(pipe, "set_progress_bar_config", None)
        before = dict(getattr(pipe, "_progress", {}) or {})
        if inner is not None:
            inner(disable=True)  # one bar for the suite, not one per call
        try:
            for i, item in enumerate(tqdm(items, desc="world eval", unit="prompt", disable=not progress)):
                out = pipe(
                    item.prompt,
                    images=item.inputs.get("image"),
                    audios=item.inputs.get("audio"),
                    videos=item.inputs.get("video"),
                    seed=seed + i,
                    **(call_options or {}),
                )
                kinds = tuple(m for m in ("image", "video", "audio") if getattr(out, f"{m}s"))
                records.append({"item": item, "text": out.text, "kinds": kinds, "got": self.judge(out)})
        finally:
            if inner is not None:
                inner(**before) if before else inner(disable=False)
        if shuffle_conditioning:
            rng = np.random.default_rng(_EVAL_STREAM + 1)
            for task in TASKS:
                rows = [r for r in records if r["item"].task == task]
                expectations = [r["item"] for r in rows]
                for r, j in zip(rows, rng.permutation(len(rows)), strict=True):
                    r["judged_against"] = expectations[j]
        report = self.report(records, seed=seed, limit=limit, shuffle=shuffle_conditioning, start=start)
        spec = getattr(pipe, "spec", None)
        report["pipeline"] = getattr(spec, "name", None) or type(pipe).__name__
        return report

    # -- the report -----------------------------------------------------------------------------------
    def report(
        self, records: list[dict], *, seed: int, limit: int | None, shuffle: bool, start: float
    ) -> dict:
        rows = []
        for r in records:
            item: EvalItem = r["item"]
            against: EvalItem = r.get("judged_against", item)
            scores = {}
            for where, attrs in against.expected.items():
                for attr, word in attrs.items():
                    scores[attr] = r["got"].get(where, {}).get(attr) == word
            rows.append(
                {
                    "task": item.task,
                    "prompt": item.prompt,
                    "inputs": sorted(item.inputs),
                    "expected": against.expected,
                    "seen": against.seen,
                    "text": r["text"],
                    "kinds": list(r["kinds"]),
                    "got": r["got"],
                    "output_kind": tuple(r["kinds"]) == item.kinds,
                    "correct": scores,
                    "all": all(scores.values()),
                }
            )
        tasks = {}
        for task in TASKS:
            mine = [row for row in rows if row["task"] == task]
            if not mine:
                continue
            tasks[task] = _summary(mine)
            if any(row["seen"] is not None for row in mine):
                for label, flag in (("seen", True), ("unseen", False)):
                    part = [row for row in mine if row["seen"] is flag]
                    if part:
                        tasks[task][label] = _summary(part)
        cfg = self.config
        sizes = {
            "colour": len(cfg.colours),
            "shape": len(cfg.shapes),
            "position": len(cfg.positions),
            "direction": len(cfg.directions),
            "pitch": len(cfg.pitches),
            "pattern": len(cfg.patterns),
        }
        return {
            "suite": self.name,
            "seed": seed,
            "limit": limit,
            "shuffle_conditioning": shuffle,
            "n": len(rows),
            "output_kind": _mean([row["output_kind"] for row in rows]),
            "attributes": {
                a: _mean([row["correct"][a] for row in rows if a in row["correct"]])
                for a in ATTRIBUTES
                if any(a in row["correct"] for row in rows)
            },
            "tasks": tasks,
            "chance": {a: 1 / n for a, n in sizes.items()},
            "seconds": round(time.perf_counter() - start, 2),
            "world": cfg.to_dict(),
            "items": rows,
        }


def _mean(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _summary(rows: list[dict]) -> dict[str, Any]:
    attrs = [a for a in ATTRIBUTES if any(a in row["correct"] for row in rows)]
    return {
        "n": len(rows),
        "output_kind": _mean([row["output_kind"] for row in rows]),
        "attributes": {a: _mean([row["correct"][a] for row in rows if a in row["correct"]]) for a in attrs},
        "all": _mean([row["all"] for row in rows]),
    }


def run_world_eval(
    pipe: Callable[..., Any],
    *,
    config: WorldConfig = DEFAULT_WORLD,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    shuffle_conditioning: bool = False,
    call_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the world suite on ``pipe`` (an :class:`~anygen.AnyToAnyPipeline` or anything called the same way:
    ``pipe(prompt, images=, audios=, videos=, seed=)`` returning an object with ``text``, ``images``,
    ``videos``, ``audios``). ``limit``: at most that many prompts per task. ``call_options``: more keywords
    for every call (e.g. ``{"num_inference_steps": 10}``); ``output_modalities`` is never given. Returns a
    JSON-able report (:func:`format_report` prints it)."""
    return WorldSuite(config).run(
        pipe,
        limit=limit,
        seed=seed,
        progress=progress,
        shuffle_conditioning=shuffle_conditioning,
        call_options=call_options,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: one row per task (and its seen/unseen split), a column per attribute."""
    cols = [a for a in ATTRIBUTES if a in report.get("attributes", {})]
    head = f"{'task':22s} {'n':>4s} {'kind':>5s} " + " ".join(f"{a:>9s}" for a in cols) + f" {'all':>5s}"
    lines = [head, "-" * len(head)]

    def row(label: str, s: dict) -> str:
        values = " ".join(f"{_pct(s['attributes'].get(a)):>9s}" for a in cols)
        return f"{label:22s} {s['n']:>4d} {_pct(s['output_kind']):>5s} {values} {_pct(s['all']):>5s}"

    for task, s in report["tasks"].items():
        lines.append(row(task, s))
        for part in ("seen", "unseen"):
            if part in s:
                lines.append(row(f"  {part}", s[part]))
    lines.append("-" * len(head))
    overall = " ".join(f"{_pct(report['attributes'].get(a)):>9s}" for a in cols)
    lines.append(f"{'all tasks':22s} {report['n']:>4d} {_pct(report['output_kind']):>5s} {overall}")
    chance = " ".join(f"{_pct(report['chance'][a]):>9s}" for a in cols)
    lines.append(f"{'chance':22s} {'':>4s} {'':>5s} {chance}")
    note = " (conditioning shuffled)" if report.get("shuffle_conditioning") else ""
    lines.append(f"world suite, seed {report['seed']}, {report['seconds']} s{note}")
    return "\n".join(lines)
