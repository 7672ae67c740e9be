"""``anygen weights list|download|verify``: the checkpoints of the bundled pipelines (``weights/manifest.yaml``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from anygen.weights.manifest import (
    ComponentStatus,
    Manifest,
    NetworkUnavailable,
    component_status,
    download_component,
    fetch_command,
    is_offline,
    load_manifest,
    prepare_steps,
)


def register(subparsers) -> None:
    weights = subparsers.add_parser(
        "weights",
        help="list, download and verify the checkpoints of the bundled pipelines",
        description="Checkpoints live in the weights folder: $ANYGEN_WEIGHTS, else weights/ of a source "
        "checkout, else ~/.cache/anygen/weights. What each pipeline needs is in weights/manifest.yaml.",
    )
    sub = weights.add_subparsers(dest="weights_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--manifest", default=None, help="a manifest file (default: weights/manifest.yaml)")

    ls = sub.add_parser("list", help="every component of every pipeline: source, size, present or missing")
    common(ls)
    ls.set_defaults(handler=_list)

    dl = sub.add_parser("download", help="download a pipeline's (or one component's) missing checkpoints")
    dl.add_argument(
        "name", help="a pipeline (e.g. nextgpt-7b-v0) or a component (e.g. stable-diffusion-v1-5)"
    )
    common(dl)
    dl.set_defaults(handler=_download)

    vf = sub.add_parser(
        "verify", help="check that a pipeline's files are all there (exit 1 and say how to get what is not)"
    )
    vf.add_argument("name", help="a pipeline or a component")
    vf.add_argument("--no-hash", action="store_true", help="skip sha256 checks (existence only)")
    common(vf)
    vf.set_defaults(handler=_verify)


def _weights() -> Path:
    from anygen.spec import weights_dir

    return weights_dir()


def _where(weights: Path) -> str:
    origin = "from ANYGEN_WEIGHTS" if os.environ.get("ANYGEN_WEIGHTS") else "set ANYGEN_WEIGHTS to change"
    return f"{weights} ({origin})"


def _size(gb: float) -> str:
    return f"~{gb:g} GB" if gb else "0"


def _state_word(st: ComponentStatus) -> str:
    return {
        "present": "present",
        "needs-prepare": "downloaded, not prepared",
        "partial": "partial",
        "missing": "missing",
        "bad-hash": "wrong sha256",
    }[st.state]


# -- list -------------------------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    weights = _weights()
    rows = [("PIPELINE", "COMPONENT", "SOURCE", "SIZE", "STATUS")]
    listed: set[str] = set()
    for pipeline, entry in manifest.pipelines.items():
        if not entry.components:
            rows.append((pipeline, "-", "none: built from config", "0", "ready (needs no files)"))
        for name in entry.components:
            comp = manifest.components[name]
            st = component_status(name, comp, weights, hashes=False)
            rows.append((pipeline, name, comp.source.describe(), _size(comp.size_gb), _state_word(st)))
            listed.add(name)
    for name, comp in manifest.components.items():
        if name not in listed:
            st = component_status(name, comp, weights, hashes=False)
            rows.append(("-", name, comp.source.describe(), _size(comp.size_gb), _state_word(st)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"weights folder: {_where(weights)}")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print("(existence only; `anygen weights verify NAME` also checks sha256 where known)")
    return 0


# -- what is missing, and how to get it --------------------------------------------------------------------
def _missing_files(status, weights: Path) -> str:
    """The missing files of a folder, relative to the weights folder (or the folder itself when absent)."""
    folder = status.folder
    base = (folder.relative_to(weights) if folder.is_relative_to(weights) else folder).as_posix()
    if not folder.exists():
        return f"{base}/ (the whole folder)"
    return ", ".join(status.missing_names(prefix=f"{base}/"))


def _missing_text(st: ComponentStatus, weights: Path) -> str:
    comp = st.component
    if st.state == "bad-hash":
        bad = [*st.download.bad_hash, *(st.prepared.bad_hash if st.prepared else [])]
        return "; ".join(
            f"{comp.folder}/{f} has sha256 {actual}, expected {expected} (delete it and download again)"
            for f, expected, actual in bad
        )
    if st.state == "needs-prepare":
        prepared = st.prepared
        return (
            f"downloaded to {comp.folder}/, but {comp.prepared.folder}/ is not made yet "
            f"(missing {_missing_files(prepared, weights)})"
        )
    text = f"missing {_missing_files(st.download, weights)}"
    if st.prepared is not None:
        text += f" (and {comp.prepared.folder}/, made from it)"
    return text


def _how_to_get(st: ComponentStatus, weights: Path) -> list[str]:
    lines = []
    if st.state != "needs-prepare":
        lines.append(f"get it:  anygen weights download {st.name}")
        lines.append(f"    or:  {fetch_command(st.name, st.component, weights)}")
    steps = prepare_steps(st.component, weights)
    for i, step in enumerate(steps):
        lines.append(("then:    " if i == 0 else "         ") + step)
    return lines


# -- verify -----------------------------------------------------------------------------------------------
def _needs_no_files(manifest: Manifest, pipeline: str) -> int:
    notes = manifest.pipelines[pipeline].notes
    print(f"{pipeline}: complete; needs no files" + (f" ({notes})" if notes else ""))
    return 0


def _verify(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    pipeline, names = manifest.select(args.name)
    if pipeline is not None and not names:
        return _needs_no_files(manifest, pipeline)
    weights = _weights()
    print(f"{args.name}: checking {len(names)} component(s) in {_where(weights)}")
    statuses = [component_status(n, manifest.components[n], weights, hashes=not args.no_hash) for n in names]
    for st in statuses:
        if st.complete:
            folder = st.prepared if st.prepared is not None else st.download
            checked = "sha256 not checked" if args.no_hash else f"sha256 unknown for {folder.unchecked}"
            print(f"  ok       {st.name}: {folder.folder} ({folder.found} files; {checked})")
            continue
        print(f"  MISSING  {st.name}: {_missing_text(st, weights)}")
        for line in _how_to_get(st, weights):
            print(f"           {line}")
    bad = [st.name for st in statuses if not st.complete]
    if not bad:
        print(f"{args.name}: complete")
        return 0
    print(
        f"{args.name}: incomplete: {len(bad)} of {len(statuses)} component(s) need attention: {', '.join(bad)}"
    )
    return 1


# -- download ---------------------------------------------------------------------------------------------
def _offline_message(todo: list[ComponentStatus], weights: Path, reason: str) -> str:
    lines = [
        f"cannot download: {reason}. Missing in {weights}, with the command that gets each "
        "(run it where there is network, or copy the files into that folder):"
    ]
    for st in todo:
        lines.append(
            f"  {st.name}: {_missing_text(st, weights)}; get it: {fetch_command(st.name, st.component, weights)}"
        )
    after = [(st.name, prepare_steps(st.component, weights)) for st in todo if st.component.prepared]
    if after:
        lines.append("After downloading:")
        for name, steps in after:
            lines.append(f"  {name}: " + "; then ".join(steps))
    return "\n".join(lines)


def _report_offline(message: str) -> int:
    """What cannot be downloaded: the error on its first line (as every anygen error), then the list of what is
    missing and the command that gets each; exit code 2. A report, so it is not folded into one line."""
    print(f"anygen: error: {message}", file=sys.stderr)
    return 2


def _download(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    pipeline, names = manifest.select(args.name)
    if pipeline is not None and not names:
        return _needs_no_files(manifest, pipeline)
    weights = _weights()
    statuses = [component_status(n, manifest.components[n], weights, hashes=False) for n in names]
    todo = [st for st in statuses if st.state in ("missing", "partial", "bad-hash")]
    if todo and is_offline():
        return _report_offline(_offline_message(todo, weights, "offline (HF_HUB_OFFLINE=1)"))
    print(f"weights folder: {_where(weights)}")
    for i, st in enumerate(statuses):
        comp = st.component
        if st not in todo:
            print(f"{st.name}: already downloaded ({comp.folder}/)")
            continue
        print(
            f"{st.name}: downloading {_size(comp.size_gb)} from {comp.source.describe()} into {comp.folder}/"
        )
        print(f"  licence: {comp.license}")
        try:
            download_component(st.name, comp, weights)
        except NetworkUnavailable as err:
            remaining = [s for s in todo if statuses.index(s) >= i]
            return _report_offline(_offline_message(remaining, weights, f"no network ({err})"))
    pending = [component_status(n, manifest.components[n], weights, hashes=False) for n in names]
    steps = [st for st in pending if st.state == "needs-prepare"]
    if steps:
        print("Next steps (anygen cannot do these for you):")
        for st in steps:
            print(f"  {st.name}:")
            for step in prepare_steps(st.component, weights):
                print(f"    {step}")
        return 0
    print(f"{args.name}: downloaded; check with `anygen weights verify {args.name}`")
    return 0
