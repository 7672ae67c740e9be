"""The weights manifest (``weights/manifest.yaml``): every checkpoint of every bundled pipeline.

For each component it records where the files come from (a Hugging Face repo and revision, or a URL), the
folder under the weights directory (:func:`anygen.spec.weights_dir`) they land in, the files a complete copy
holds (with sha256 where known), the licence and the approximate size. A component may also name a
*prepared* folder that is made from the download by a step the user runs (applying the Vicuna delta,
``anygen convert nextgpt-legacy``); the pipeline reads that folder.

Checking is existence (and sha256 where the manifest knows it); nothing here loads weights.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from anygen.errors import WeightsError

MANIFEST_FILENAME = "manifest.yaml"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _relative(value: str, what: str) -> str:
    p = Path(value)
    if not value or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{what} must be a relative path inside the weights folder, got {value!r}")
    return p.as_posix()


class FileEntry(_Model):
    """One file of a component, relative to its folder.

    ``alternatives`` are other names that serve the same purpose (``.bin`` for ``.safetensors``, a sharded
    index for a single file); a file counts as present when it or any alternative exists. ``sha256`` is
    checked only for ``path`` and only when known. ``optional`` files are downloaded when the repo has them
    but are not required.
    """

    path: str
    alternatives: list[str] = Field(default_factory=list)
    sha256: str | None = None
    optional: bool = False

    @field_validator("path")
    @classmethod
    def _path_is_relative(cls, value: str) -> str:
        return _relative(value, "path")

    @field_validator("alternatives")
    @classmethod
    def _alternatives_are_relative(cls, value: list[str]) -> list[str]:
        return [_relative(v, "alternative") for v in value]

    @field_validator("sha256")
    @classmethod
    def _sha256_is_hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("must be 64 hexadecimal digits (or null when unknown)")
        return value.lower() if value else None

    def names(self) -> list[str]:
        return [self.path, *self.alternatives]


class Source(_Model):
    """Either a Hugging Face repo (``repo`` + ``revision``) or a plain ``url`` (https)."""

    repo: str | None = None
    revision: str = "main"
    url: str | None = None
    whole_repo: bool = Field(False, description="download the whole repo (else only the listed files)")

    @model_validator(mode="after")
    def _repo_or_url(self) -> Source:
        if (self.repo is None) == (self.url is None):
            raise ValueError("give exactly one of 'repo' (Hugging Face repo id) or 'url'")
        if self.repo is not None and not re.match(r"^[\w.-]+/[\w.-]+$", self.repo):
            raise ValueError(f"repo must look like 'owner/name', got {self.repo!r}")
        if self.url is not None and not self.url.startswith("https://"):
            raise ValueError(f"url must start with https://, got {self.url!r}")
        return self

    def describe(self) -> str:
        return f"hf:{self.repo}@{self.revision}" if self.repo else str(self.url)


class Prepared(_Model):
    """A folder made from the download by ``steps`` (commands; ``{weights}`` is the weights folder)."""

    folder: str
    files: list[FileEntry] = Field(min_length=1)
    steps: list[str] = Field(min_length=1)

    @field_validator("folder")
    @classmethod
    def _folder_is_relative(cls, value: str) -> str:
        return _relative(value, "folder")


class Component(_Model):
    description: str
    source: Source
    folder: str = Field(description="where the download lands, relative to the weights folder")
    files: list[FileEntry] = Field(min_length=1)
    prepared: Prepared | None = None
    license: str
    size_gb: float = Field(ge=0, description="approximate download size")
    notes: str = ""

    @field_validator("folder")
    @classmethod
    def _folder_is_relative(cls, value: str) -> str:
        return _relative(value, "folder")

    @model_validator(mode="after")
    def _url_is_one_file(self) -> Component:
        if self.source.url is not None and len([f for f in self.files if not f.optional]) != 1:
            raise ValueError("a 'url' source downloads exactly one file: list exactly one required file")
        return self


class PipelineEntry(_Model):
    description: str = ""
    components: list[str] = Field(default_factory=list)
    notes: str = ""


class Manifest(_Model):
    version: Literal[1]
    pipelines: dict[str, PipelineEntry]
    components: dict[str, Component]
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _names(self) -> Manifest:
        for name, entry in self.pipelines.items():
            unknown = [c for c in entry.components if c not in self.components]
            if unknown:
                raise ValueError(
                    f"pipelines.{name}.components names {unknown}, not among the components "
                    f"{sorted(self.components)}"
                )
        clash = sorted(set(self.pipelines) & set(self.components))
        if clash:
            raise ValueError(f"names used both as a pipeline and a component: {clash}")
        return self

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: object, source: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise WeightsError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            lines = []
            for e in err.errors():
                where = ".".join(str(p) for p in e["loc"]) or "<top level>"
                msg = {"extra_forbidden": "unknown field", "missing": "missing field"}.get(
                    e["type"], e["msg"]
                )
                lines.append(f"  {where}: {msg}")
            raise WeightsError(f"{source}: invalid weights manifest:\n" + "\n".join(lines)) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Manifest:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"weights manifest {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise WeightsError(f"{path}: not valid YAML: {err}") from None
        manifest = cls.from_dict(data, source=str(path))
        manifest.path = path
        return manifest

    # -- lookup --------------------------------------------------------------------------------------
    def select(self, name: str) -> tuple[str | None, list[str]]:
        """``(pipeline or None, component names)`` for a pipeline or component name."""
        if name in self.pipelines:
            return name, list(self.pipelines[name].components)
        if name in self.components:
            return None, [name]
        raise WeightsError(
            f"unknown pipeline or component {name!r}; pipelines: {', '.join(sorted(self.pipelines))}; "
            f"components: {', '.join(sorted(self.components))}"
        )


def default_manifest_path() -> Path:
    """``weights/manifest.yaml`` of a source checkout, else the copy packaged as ``anygen.bundled_weights``."""
    if os.environ.get("ANYGEN_MANIFEST"):
        return Path(os.environ["ANYGEN_MANIFEST"]).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "weights" / MANIFEST_FILENAME
    if checkout.is_file():
        return checkout
    try:
        packaged = resources.files("anygen.bundled_weights") / MANIFEST_FILENAME
        if packaged.is_file():
            return Path(str(packaged))
    except ModuleNotFoundError:
        pass
    raise WeightsError(
        f"cannot find the weights manifest ({checkout} is missing and no packaged copy is installed); "
        "set ANYGEN_MANIFEST to its path"
    )


def load_manifest(path: str | Path | None = None) -> Manifest:
    return Manifest.from_file(path or default_manifest_path())


# -- status ---------------------------------------------------------------------------------------------
def sha256_of(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class FolderStatus:
    """Which required files of one folder are missing or have the wrong sha256."""

    folder: Path
    missing: list[FileEntry] = field(default_factory=list)
    bad_hash: list[tuple[str, str, str]] = field(default_factory=list)  # (file, expected, actual)
    unchecked: int = 0  # files present whose sha256 the manifest does not know (or hashing was skipped)
    found: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing and not self.bad_hash

    def missing_names(self, prefix: str = "") -> list[str]:
        """Each missing file as ``prefix + path``, alternatives joined by ``or``."""
        return [" or ".join(prefix + n for n in f.names()) for f in self.missing]


def check_folder(folder: Path, files: list[FileEntry], hashes: bool = True) -> FolderStatus:
    status = FolderStatus(folder)
    for entry in files:
        if entry.optional:
            continue
        present = next((folder / n for n in entry.names() if (folder / n).is_file()), None)
        if present is None:
            status.missing.append(entry)
            continue
        status.found += 1
        if hashes and entry.sha256 and present == folder / entry.path:
            actual = sha256_of(present)
            if actual != entry.sha256:
                status.bad_hash.append((entry.path, entry.sha256, actual))
        else:
            status.unchecked += 1
    return status


State = Literal["present", "needs-prepare", "partial", "missing", "bad-hash"]


@dataclass
class ComponentStatus:
    name: str
    component: Component
    download: FolderStatus
    prepared: FolderStatus | None

    @property
    def state(self) -> State:
        if self.prepared is not None and self.prepared.complete:
            return "present"
        if self.download.bad_hash or (self.prepared is not None and self.prepared.bad_hash):
            return "bad-hash"
        if self.download.complete:
            return "present" if self.prepared is None else "needs-prepare"
        return "partial" if self.download.found else "missing"

    @property
    def complete(self) -> bool:
        return self.state == "present"


def component_status(name: str, component: Component, weights: Path, hashes: bool = True) -> ComponentStatus:
    prepared = None
    if component.prepared is not None:
        prepared = check_folder(weights / component.prepared.folder, component.prepared.files, hashes)
        if prepared.complete:  # the download is only an intermediate; no need to look at it
            return ComponentStatus(name, component, FolderStatus(weights / component.folder), prepared)
    download = check_folder(weights / component.folder, component.files, hashes)
    return ComponentStatus(name, component, download, prepared)


# -- instructions ----------------------------------------------------------------------------------------
def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def fetch_command(name: str, component: Component, weights: Path) -> str:
    """A shell command that downloads the component without anygen (hf CLI or curl)."""
    src = component.source
    dest = weights / component.folder
    if src.url is not None:
        target = dest / next(f.path for f in component.files if not f.optional)
        return f"curl -L --fail --create-dirs -o {_q(target)} {_q(src.url)}"
    cmd = f"hf download {src.repo} --revision {_q(src.revision)} --local-dir {_q(dest)}"
    if not src.whole_repo:
        cmd += " " + " ".join(_q(f.path) for f in component.files if not f.optional)
    return cmd


def prepare_steps(component: Component, weights: Path) -> list[str]:
    if component.prepared is None:
        return []
    return [step.replace("{weights}", _q(weights)) for step in component.prepared.steps]


# -- downloading -----------------------------------------------------------------------------------------
_TRUE = {"1", "ON", "YES", "TRUE"}
_NETWORK_ERRORS = {
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "TimeoutException",
    "NetworkError",
    "TimeoutError",
    "gaierror",
}


class NetworkUnavailable(Exception):
    """The download could not reach the network (offline mode, no route, DNS failure, time-out)."""


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: anygen then attempts no download at all (URLs included)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def _is_network_error(err: BaseException) -> bool:
    from urllib.error import HTTPError, URLError

    if isinstance(err, HTTPError):  # the server answered: not a network problem
        return False
    if isinstance(err, URLError):
        return True
    names = {cls.__name__ for cls in type(err).__mro__}
    if names & _NETWORK_ERRORS:
        return True
    cause = err.__cause__ or err.__context__
    return cause is not None and cause is not err and _is_network_error(cause)


def download_component(name: str, component: Component, weights: Path) -> None:
    """Fetch ``component`` into ``weights/<folder>``; raises :class:`NetworkUnavailable` when offline."""
    if is_offline():
        raise NetworkUnavailable("HF_HUB_OFFLINE is set")
    dest = weights / component.folder
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if component.source.url is not None:
            entry = next(f for f in component.files if not f.optional)
            _download_url(component.source.url, dest / entry.path)
        else:
            _download_hf(name, component, dest)
    except (WeightsError, NetworkUnavailable):
        raise
    except Exception as err:
        if _is_network_error(err):
            raise NetworkUnavailable(f"{type(err).__name__}: {err}") from err
        raise WeightsError(f"{name}: download from {component.source.describe()} failed: {err}") from err
    status = check_folder(dest, component.files, hashes=True)
    if status.bad_hash:
        bad = "; ".join(f"{f}: expected {e}, got {a}" for f, e, a in status.bad_hash)
        raise WeightsError(f"{name}: downloaded files have the wrong sha256 ({bad}); delete them and retry")
    if status.missing:
        raise WeightsError(
            f"{name}: after downloading, {dest} still lacks {', '.join(status.missing_names())}"
        )


def _download_hf(name: str, component: Component, dest: Path) -> None:
    from huggingface_hub import HfApi, snapshot_download

    src = component.source
    if src.whole_repo:
        snapshot_download(repo_id=src.repo, revision=src.revision, local_dir=dest)
        return
    available = set(HfApi().list_repo_files(src.repo, revision=src.revision))
    chosen, absent = [], []
    for entry in component.files:
        found = next((n for n in entry.names() if n in available), None)
        if found is not None:
            chosen.append(found)
        elif not entry.optional:
            absent.append(" or ".join(entry.names()))
    if absent:
        raise WeightsError(
            f"{name}: {src.repo}@{src.revision} has no {', '.join(absent)} (the manifest may be out of date)"
        )
    snapshot_download(repo_id=src.repo, revision=src.revision, local_dir=dest, allow_patterns=chosen)


def _download_url(url: str, target: Path, chunk: int = 1 << 20) -> None:
    import urllib.request

    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "anygen"})
    with urllib.request.urlopen(request, timeout=60) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            while block := response.read(chunk):
                out.write(block)
                bar.update(len(block))
    partial.replace(target)
