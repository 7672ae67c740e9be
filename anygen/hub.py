"""Hugging Face Hub ids: pipelines saved in a Hub repo (``org/name``) and spec paths inside one
(``org/name/subfolder``), read through ``huggingface_hub``'s cache.

``huggingface_hub`` does the work: with ``HF_HUB_OFFLINE=1`` it reads only its cache, and a snapshot already
in the cache is not downloaded again. Its errors (repo or revision not found, not cached while offline, gated,
an incomplete cached copy) become anygen errors that name the repo and revision and say how to fetch it.

A spec path may pin a revision with ``@``: ``org/name@v1/llm``; ``hf://org/name/llm`` always means the Hub.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from anygen.errors import AnyGenError, SpecError

#: Spelling that always means the Hub in a spec ``path:`` (a bare ``org/name/...`` means it only when no
#: file or folder of that name exists under the spec's folder).
HUB_PREFIX = "hf://"

# Hub owner and repo names: letters, digits, '-', '_', '.' (huggingface_hub checks the finer rules).
_NAME = r"[A-Za-z0-9][\w.-]*"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")
_NODE_PATH = re.compile(rf"^(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[\w.-]+))?(?:/(?P<subfolder>.+))?$")

_DOWNLOADS: ContextVar[bool] = ContextVar("anygen_hub_downloads", default=True)


@dataclass(frozen=True)
class HubRef:
    """A Hub repo, a revision (None: the default branch) and a file or folder inside it (None: all of it)."""

    repo_id: str
    revision: str | None = None
    subfolder: str | None = None

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        inside = f"/{self.subfolder}" if self.subfolder else ""
        return f"{HUB_PREFIX}{self.repo_id}{at}{inside}"


# -- recognising Hub ids -------------------------------------------------------------------------------
def is_repo_id(text: object) -> bool:
    """``org/name``: two path parts, no leading ``.``/``~``/``/``, no ``.yaml`` suffix (a string only)."""
    return (
        isinstance(text, str)
        and _REPO_ID.match(text) is not None
        and not text.endswith((".yaml", ".yml"))
        and ".." not in text
        and "--" not in text
    )


def parse_node_path(text: str) -> HubRef | None:
    """A spec ``path:`` read as a Hub id (``org/name``, ``org/name/sub/folder``, ``org/name@rev/...``, or any
    of these after ``hf://``), or None when it cannot be one. A malformed ``hf://`` path is a
    :class:`SpecError`."""
    explicit = text.startswith(HUB_PREFIX)
    body = text[len(HUB_PREFIX) :] if explicit else text
    match = _NODE_PATH.match(body)
    subfolder = match["subfolder"] if match else None
    bad_subfolder = subfolder is not None and (
        subfolder.startswith("/") or "\\" in subfolder or ".." in subfolder.split("/")
    )
    if match is None or bad_subfolder or "--" in match["repo"] or ".." in match["repo"]:
        if explicit:
            raise SpecError(
                f"path {text!r}: not a Hub id; write hf://org/name, hf://org/name/subfolder or "
                "hf://org/name@revision/subfolder"
            )
        return None
    return HubRef(match["repo"], match["revision"], subfolder.rstrip("/") if subfolder else None)


# -- downloads on or off -------------------------------------------------------------------------------
def downloads_allowed() -> bool:
    """False inside :func:`no_downloads` (then Hub paths are read from the cache only)."""
    return _DOWNLOADS.get()


@contextmanager
def no_downloads() -> Iterator[None]:
    """Within this block a Hub spec path resolves to its cached copy, or to a path that does not exist; nothing
    is downloaded (used while a spec is validated, so loading one never fetches weights)."""
    token = _DOWNLOADS.set(False)
    try:
        yield
    finally:
        _DOWNLOADS.reset(token)


# -- snapshots -------------------------------------------------------------------------------------------
def hub_cache(cache_dir: str | Path | None) -> Path:
    """The Hugging Face cache folder used: ``cache_dir``, else ``$HF_HUB_CACHE`` (``~/.cache/huggingface/hub``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_cache_folder(repo_id: str, cache_dir: str | Path | None) -> Path:
    """Where the cache keeps ``repo_id``: ``<cache>/models--org--name``."""
    return hub_cache(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def snapshot(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    allow_patterns: list[str] | None = None,
    local_only: bool = False,
    error: type[AnyGenError] = SpecError,
) -> Path:
    """``huggingface_hub.snapshot_download``: the local folder of ``repo_id`` at ``revision`` (only the files
    matching ``allow_patterns`` are fetched). Offline (``HF_HUB_OFFLINE=1``) or with ``local_only`` it reads
    the cache only. Failures raise ``error`` naming the repo and revision and how to fetch it."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=allow_patterns,
            local_files_only=local_only,
        )
    except Exception as err:
        message = explain_error(err, repo_id, revision, cache_dir, allow_patterns)
        if message is None:
            raise
        raise error(message) from None
    return Path(folder)


def node_path(ref: HubRef, *, cache_dir: str | Path | None, error: type[AnyGenError]) -> Path:
    """The local path of a Hub spec path: the subfolder (or file) inside the repo's snapshot, fetching only it.

    Inside :func:`no_downloads` only the cache is read: a part that is not cached resolves to a path that does
    not exist (so width checks fall back to the node's declared ``config``)."""
    patterns = [ref.subfolder, f"{ref.subfolder}/*"] if ref.subfolder else None
    if not downloads_allowed():
        try:
            folder = snapshot(
                ref.repo_id,
                revision=ref.revision,
                cache_dir=cache_dir,
                allow_patterns=patterns,
                local_only=True,
            )
        except AnyGenError:
            folder = repo_cache_folder(ref.repo_id, cache_dir) / "snapshots" / "not-downloaded"
        return folder / ref.subfolder if ref.subfolder else folder
    folder = snapshot(
        ref.repo_id, revision=ref.revision, cache_dir=cache_dir, allow_patterns=patterns, error=error
    )
    target = folder / ref.subfolder if ref.subfolder else folder
    if not target.exists():
        raise error(
            f"{ref}: Hub repo {ref.repo_id!r} (revision {ref.revision or 'main'!r}) has no {ref.subfolder!r} "
            f"(looked in {folder})"
        )
    return target


# -- errors ---------------------------------------------------------------------------------------------
def fetch_command(
    repo_id: str,
    revision: str | None,
    cache_dir: str | Path | None,
    allow_patterns: list[str] | None = None,
) -> str:
    """The ``hf download`` command that puts ``repo_id`` at ``revision`` into the cache anygen reads."""
    cmd = f"hf download {repo_id} --revision {shlex.quote(revision or 'main')}"
    if cache_dir is not None:
        cmd += f" --cache-dir {shlex.quote(str(cache_dir))}"
    if allow_patterns:
        cmd += "".join(f" --include {shlex.quote(p)}" for p in allow_patterns)
    return cmd


def cached_revisions(repo_id: str, cache_dir: str | Path | None) -> list[str]:
    """Branch and tag names of ``repo_id`` the cache holds (its ``refs/`` files)."""
    refs = repo_cache_folder(repo_id, cache_dir) / "refs"
    if not refs.is_dir():
        return []
    return sorted(p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file())


def explain_error(
    err: BaseException,
    repo_id: str,
    revision: str | None,
    cache_dir: str | Path | None,
    allow_patterns: list[str] | None = None,
) -> str | None:
    """A message for a ``huggingface_hub`` error naming the repo and revision and how to fetch it; None for
    errors that are not the Hub's (they propagate unchanged)."""
    from huggingface_hub import errors

    rev = revision or "main"
    what = f"Hub repo {repo_id!r} (revision {rev!r})"
    fetch = fetch_command(repo_id, revision, cache_dir, allow_patterns)
    login = "log in with `hf auth login` or set HF_TOKEN"
    if isinstance(err, errors.HFValidationError):
        return f"{repo_id!r} is not a valid Hub repo id (expected org/name): {err}"
    if isinstance(err, errors.GatedRepoError):
        return f"{what} is gated: accept its conditions on https://huggingface.co/{repo_id} and {login}"
    if isinstance(err, errors.RepositoryNotFoundError):
        return f"{what}: the repo does not exist on the Hub, or it is private and you are not logged in ({login})"
    if isinstance(err, errors.RevisionNotFoundError):
        return f"{what}: the repo has no revision {rev!r} (a branch, tag or commit)"
    incomplete = getattr(errors, "IncompleteSnapshotError", ())
    if incomplete and isinstance(err, incomplete):
        return f"{what}: the cached copy is incomplete ({err}); fetch it again: {fetch}"
    if isinstance(err, errors.LocalEntryNotFoundError):
        return _not_cached(repo_id, rev, cache_dir, fetch, err)
    if isinstance(err, errors.HfHubHTTPError):
        return f"{what}: the Hub request failed: {err}"
    return None


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to 1 / true / yes / on (any case)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def offline() -> bool:
    """True when the Hub is off: ``HF_HUB_OFFLINE`` set now, or when huggingface_hub was imported."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or env_flag("HF_HUB_OFFLINE")


def _not_cached(repo_id: str, rev: str, cache_dir: str | Path | None, fetch: str, err: BaseException) -> str:
    cache = hub_cache(cache_dir)
    if repo_cache_folder(repo_id, cache_dir).is_dir():
        known = cached_revisions(repo_id, cache_dir)
        missing = (
            f"revision {rev!r} of Hub repo {repo_id!r} is not in the local Hugging Face cache ({cache}; "
            f"cached revisions: {', '.join(known) or 'none'})"
        )
    else:
        missing = f"Hub repo {repo_id!r} (revision {rev!r}) is not in the local Hugging Face cache ({cache})"
    if offline():
        return (
            f"{missing}, and HF_HUB_OFFLINE is set, so it is not downloaded. Fetch it with `{fetch}` where the "
            "Hub is reachable, or unset HF_HUB_OFFLINE"
        )
    return (
        f"{missing}, and the Hub could not be reached ({err}). Fetch it with `{fetch}` where it is reachable"
    )
