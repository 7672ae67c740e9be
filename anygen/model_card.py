"""The model card (``README.md``) that :meth:`~anygen.pipeline.AnyToAnyPipeline.save_pretrained` writes.

It holds a YAML front matter for the Hub (``library_name: anygen``, the licence, tags), the graph (every node,
its type and the widths where it meets its neighbours), where every part's weights came from and under which
licence, and the ``anygen eval`` results when a report is given.

A part's source and licence are, in order: what its spec node declares (``source:``, ``license:``;
``save_pretrained`` records them, so they survive saving again); the weights manifest's component when the
path is under ``${weights}``; anygen's own licence for parts built from a config (random weights) or shipped
in the package (``${bundled_weights}``, the trained ``mini``); the Hub repo for a Hub path. An ``imagebind``
encoder is always Meta's ImageBind, licensed CC BY-NC-SA 4.0 (non-commercial), and the card says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from anygen.errors import AnyGenError, WeightsError

if TYPE_CHECKING:
    from anygen.spec import PipelineSpec

CARD_FILENAME = "README.md"
ANYGEN_LICENSE = "Apache-2.0 (anygen)"
IMAGEBIND_LICENSE = "CC BY-NC-SA 4.0 (non-commercial)"
NOT_RECORDED = "not recorded"

# Hub licence ids for the licences anygen's parts come under (the front matter's ``license``).
_HUB_LICENSES = (
    ("Apache-2.0", "apache-2.0"),
    ("CC BY-NC-SA 4.0", "cc-by-nc-sa-4.0"),
    ("CC BY-NC 4.0", "cc-by-nc-4.0"),
    ("CreativeML OpenRAIL-M", "creativeml-openrail-m"),
    ("BSD-3-Clause", "bsd-3-clause"),
)
_NON_COMMERCIAL = re.compile(r"non-commercial|BY-NC", re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    """One node of the graph for the card: its dotted name, type, widths, source and licence."""

    node: str
    type: str
    widths: str
    source: str
    license: str

    @property
    def non_commercial(self) -> bool:
        return bool(_NON_COMMERCIAL.search(self.license))


# -- provenance -----------------------------------------------------------------------------------------
def _nodes(spec: PipelineSpec) -> dict[str, Any]:
    nodes: dict[str, Any] = {f"encoders.{n}": e for n, e in spec.encoders.items()}
    nodes.update({f"input_projectors.{n}": p for n, p in spec.input_projectors.items()})
    nodes["llm"] = spec.llm
    for modality, out in spec.outputs.items():
        nodes[f"outputs.{modality}.projector"] = out.projector
        nodes[f"outputs.{modality}.generator"] = out.generator
    return nodes


def _manifest_component(folder: str) -> tuple[str, Any] | None:
    """The weights-manifest component whose download or prepared folder is ``folder``."""
    from anygen.weights.manifest import load_manifest

    try:
        manifest = load_manifest()
    except WeightsError:
        return None
    for name, component in manifest.components.items():
        prepared = component.prepared.folder if component.prepared else None
        if folder in (component.folder, prepared):
            return name, component
    return None


def _computed(spec: PipelineSpec, node: Any) -> tuple[str, str]:
    """Source and licence of a node from its path (see the module docstring), ignoring what it declares."""
    path = node.path
    if path is None:
        return f"anygen: built from its config, initialised at random (seed {node.seed})", ANYGEN_LICENSE
    if path.startswith("${bundled_weights}/"):
        return f"anygen's bundled weights ({path.removeprefix('${bundled_weights}/')})", ANYGEN_LICENSE
    if path.startswith("${weights}/"):
        rest = path.removeprefix("${weights}/")
        found = _manifest_component(rest.split("/", 1)[0])
        if found is None:
            return f"{path} (not in the weights manifest)", NOT_RECORDED
        name, component = found
        return f"{name} ({component.source.describe()}), read from {path}", " ".join(
            component.license.split()
        )
    ref = spec._hub_ref(path)
    if ref is not None:
        return str(ref), f"{NOT_RECORDED} (see https://huggingface.co/{ref.repo_id})"
    if spec.hub_source is not None and not Path(path).is_absolute():
        return f"{spec.hub_source}/{path}", NOT_RECORDED
    return f"local path {path}", NOT_RECORDED


def part_source_and_license(spec: PipelineSpec, node: Any) -> tuple[str, str]:
    """A node's source and licence: declared ones first, else from its path; an ``imagebind`` encoder's
    licence is ImageBind's (CC BY-NC-SA 4.0, non-commercial) unless declared."""
    source, license = _computed(spec, node)
    if getattr(node, "type", None) == "imagebind" and "BY-NC-SA" not in license:
        license = IMAGEBIND_LICENSE
    return node.source or source, node.license or license


def record_provenance(spec: PipelineSpec, data: dict[str, Any]) -> None:
    """Write every node's source and licence into ``data`` (``spec``'s dump, about to be saved), so a saved
    pipeline keeps them although its paths then point into the saved folder."""
    for name, node in _nodes(spec).items():
        source, license = part_source_and_license(spec, node)
        target = data
        for key in name.split("."):
            target = target[key]
        target.update(source=source, license=license)


# -- the graph ------------------------------------------------------------------------------------------
def _widths(spec: PipelineSpec) -> dict[str, str]:
    """The widths where nodes meet, per node (read from configs; nothing is downloaded or built)."""
    from anygen import hub, widths

    out: dict[str, str] = {}
    with hub.no_downloads():
        try:
            hidden = widths.llm_hidden_size(spec)
            _, sizes = widths.llm_shape(spec)
        except AnyGenError:
            hidden, sizes = None, {}
        layers = sizes.get("num_hidden_layers")
        out["llm"] = f"hidden {hidden}" + (f", {layers} layers" if layers else "")
        out["llm"] += f"; layer {spec.llm.hidden_layer} feeds the output projectors"
        for name, proj in spec.input_projectors.items():
            enc = spec.encoders[proj.encoder]
            try:
                dim = widths.encoder_output_text(spec, proj.encoder)  # "1024", or "729 x 1152 per image, ..."
            except AnyGenError:
                dim = "?"
            out[f"encoders.{proj.encoder}"] = f"{', '.join(enc.modalities)} -> {dim}"
            out[f"input_projectors.{name}"] = f"{dim} -> {proj.num_tokens} x {hidden}"
        for modality, output in spec.outputs.items():
            try:
                layout = widths.generator_layout(spec, modality)
                made = layout.describe() if layout.packed else " x ".join(map(str, layout.shape))
            except AnyGenError:
                made = "?"
            names = output.signal_tokens.names()
            out[f"outputs.{modality}.projector"] = (
                f"{names[0]}..{names[-1]}: {output.signal_tokens.count} x {hidden} -> {made}"
            )
            out[f"outputs.{modality}.generator"] = f"conditioned on {made}"
    return out


def parts(spec: PipelineSpec) -> list[Part]:
    """Every node of ``spec`` in graph order, with its type, widths, source and licence."""
    shapes = _widths(spec)
    result = []
    for name, node in _nodes(spec).items():
        source, license = part_source_and_license(spec, node)
        result.append(Part(name, node.type, shapes.get(name, ""), source, license))
    return result


# -- the eval report ------------------------------------------------------------------------------------
def load_eval_report(report: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    """An ``anygen eval`` report: the dict itself or the JSON file ``anygen eval --out`` wrote."""
    if isinstance(report, (str, Path)):
        path = Path(report).expanduser()
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AnyGenError(
                f"eval_report: cannot read {str(path)!r} as an anygen eval report: {err}"
            ) from None
    if not isinstance(report, Mapping) or not isinstance(report.get("tasks"), Mapping):
        got = sorted(report) if isinstance(report, Mapping) else type(report).__name__
        raise AnyGenError(
            f"eval_report: expected the report `anygen eval` writes (a dict with 'tasks' and 'attributes'), got {got}"
        )
    return report


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def eval_table(report: Mapping[str, Any]) -> str:
    """The report as a Markdown table: a row per task (and its seen/unseen split), a column per attribute."""
    report = load_eval_report(report)
    overall = report.get("attributes") or {}
    columns = list(overall) or sorted({a for s in report["tasks"].values() for a in s.get("attributes", {})})
    head = ["task", "n", "output kind", *columns, "all"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label: str, s: Mapping[str, Any]) -> str:
        attrs = s.get("attributes") or {}
        cells = [
            label,
            str(s.get("n", "")),
            _pct(s.get("output_kind")),
            *(_pct(attrs.get(a)) for a in columns),
        ]
        return "| " + " | ".join([*cells, _pct(s.get("all"))]) + " |"

    for task, summary in report["tasks"].items():
        lines.append(row(_cell(task), summary))
        for split in ("seen", "unseen"):
            if isinstance(summary.get(split), Mapping):
                lines.append(row(f"&nbsp;&nbsp;{split}", summary[split]))
    lines.append(row("**all tasks**", report))
    chance = report.get("chance") or {}
    if chance:
        lines.append(row("chance", {"attributes": chance}))
    return "\n".join(lines)


def _eval_section(report: Mapping[str, Any]) -> list[str]:
    facts = [f"suite `{report.get('suite', '?')}`"]
    for key, label in (("pipeline", "pipeline"), ("seed", "seed"), ("limit", "limit"), ("n", "prompts")):
        if report.get(key) is not None:
            facts.append(f"{label} {report[key]}")
    if report.get("shuffle_conditioning"):
        facts.append("conditioning shuffled (a chance-level control)")
    return [
        "## Evaluation (`anygen eval`)",
        "",
        "Accuracy of the answers judged by `anygen eval` (" + ", ".join(facts) + "); the model decides what "
        "to make, and `output kind` is how often it made the kinds of media asked for.",
        "",
        eval_table(report),
        "",
    ]


# -- the card -------------------------------------------------------------------------------------------
def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _hub_license(licenses: list[str]) -> str:
    """The front matter's licence id: the one licence all parts share, else ``other``."""
    distinct = set(licenses)
    if len(distinct) == 1:
        only = distinct.pop()
        for name, hub_id in _HUB_LICENSES:
            if only.startswith(name):
                return hub_id
    return "other"


def _base_models(spec: PipelineSpec, found: list[Part]) -> list[str]:
    """Hub repos the parts came from (manifest components' repos, Hub paths), for the front matter."""
    repos = []
    for part in found:
        for match in re.finditer(r"(?:hf:|hf://)([\w.-]+/[\w.-]+)", part.source):
            if match[1] not in repos:
                repos.append(match[1])
    return repos


def front_matter(spec: PipelineSpec, found: list[Part]) -> dict[str, Any]:
    """The card's YAML header for the Hub."""
    license = _hub_license([p.license for p in found])
    data: dict[str, Any] = {"library_name": "anygen", "license": license}
    if license == "other":
        data["license_name"] = "mixed"
    data["pipeline_tag"] = "any-to-any"
    tags = ["anygen", "any-to-any", "multimodal", "next-gpt"]
    if any(p.non_commercial for p in found):
        tags.append("non-commercial")
    data["tags"] = tags
    base = _base_models(spec, found)
    if base:
        data["base_model"] = base
    return data


def _license_section(found: list[Part]) -> list[str]:
    lines = ["## Licences", ""]
    by_license: dict[str, list[str]] = {}
    for part in found:
        by_license.setdefault(part.license, []).append(f"`{part.node}`")
    for license, nodes in by_license.items():
        lines.append(f"- **{license}**: {', '.join(nodes)}")
    lines.append("")
    imagebind = [p.node for p in found if p.type == "imagebind"]
    if imagebind:
        lines += [
            f"**ImageBind is licensed CC BY-NC-SA 4.0: non-commercial use only.** `{'`, `'.join(imagebind)}` "
            "is Meta's ImageBind; its weights may not be used commercially, and what you share of them must be "
            "shared under the same licence (https://github.com/facebookresearch/ImageBind).",
            "",
        ]
    restricted = [p.node for p in found if p.non_commercial]
    if restricted:
        lines += [
            f"**Non-commercial**: {', '.join(f'`{n}`' for n in restricted)} come under non-commercial licences, "
            "so this pipeline as a whole may be used for non-commercial purposes only.",
            "",
        ]
    unknown = [p.node for p in found if p.license.startswith(NOT_RECORDED)]
    if unknown:
        lines += [
            f"The licence of {', '.join(f'`{n}`' for n in unknown)} is not recorded: check the source of those "
            "weights before you use or share them.",
            "",
        ]
    return lines


def render(
    spec: PipelineSpec,
    *,
    eval_report: Mapping[str, Any] | str | Path | None = None,
    repo_id: str | None = None,
) -> str:
    """The model card's Markdown for ``spec`` (a saved pipeline's spec); ``repo_id`` goes in the usage
    example (else the folder it is saved in)."""
    report = load_eval_report(eval_report) if eval_report is not None else None
    found = parts(spec)
    header = yaml.safe_dump(front_matter(spec, found), sort_keys=False).strip()
    where = repo_id or "path/to/this/folder"
    lines = ["---", header, "---", "", f"# {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        "An any-to-any pipeline for anygen (NExT-GPT style): media and text in, text and media out.",
        "",
    ]
    if spec.hub_source is not None:
        lines += [f"Saved from the pipeline at `{spec.hub_source}`.", ""]
    lines += [
        "## Usage",
        "",
        "```python",
        "from anygen import AnyToAnyPipeline",
        "",
        f"pipe = AnyToAnyPipeline.from_pretrained({where!r})",
        'out = pipe("draw a blue square on the right", seed=0)',
        "out.save('out/')",
        "```",
        "",
        "## Graph",
        "",
        "media -> encoders -> input projectors -> LLM (emits signal tokens) -> output projectors -> generators "
        "-> media",
        "",
        "| node | type | widths | source | licence |",
        "|---|---|---|---|---|",
    ]
    for part in found:
        cells = [f"`{part.node}`", part.type, part.widths, part.source, part.license]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += [
        "",
        "A part's source is where its weights started from; a part trained or fine-tuned from them (`anygen "
        "train`) keeps their licence terms.",
        "",
    ]
    lines += _license_section(found)
    if report is not None:
        lines += _eval_section(report)
    return "\n".join(lines).rstrip() + "\n"


def write(
    folder: Path,
    spec: PipelineSpec,
    *,
    eval_report: Mapping[str, Any] | str | Path | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``folder/README.md`` (see :func:`render`). A README.md already there that anygen did not write (no
    ``library_name: anygen`` in its front matter) is the user's: it is kept, and the card goes to
    ``MODEL_CARD.md`` beside it (with a warning), so saving never destroys what the user wrote."""
    path = Path(folder) / CARD_FILENAME
    if path.is_file() and not _written_by_anygen(path):
        import warnings

        kept = path
        path = path.with_name("MODEL_CARD.md")
        warnings.warn(
            f"{kept} was not written by anygen: it is kept, and the model card is written to {path.name}",
            stacklevel=3,
        )
    path.write_text(render(spec, eval_report=eval_report, repo_id=repo_id), encoding="utf-8")
    return path


def _written_by_anygen(path: Path) -> bool:
    """True when ``path`` starts with a front matter naming ``library_name: anygen`` (a card this module wrote)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if not text.startswith("---\n"):
        return False
    end = text.find("\n---", 4)
    try:
        meta = yaml.safe_load(text[4:end]) if end > 0 else None
    except yaml.YAMLError:
        return False
    return isinstance(meta, dict) and meta.get("library_name") == "anygen"
