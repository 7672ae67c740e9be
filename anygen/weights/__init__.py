"""Checkpoints of the bundled pipelines: the manifest (``weights/manifest.yaml``) and ``anygen weights``.

* :func:`load_manifest` -> :class:`Manifest` (validated; errors name the bad field);
* :func:`component_status`: what of a component is present, missing, or needs a preparation step;
* :func:`download_component`: fetch one component into the weights folder (:func:`anygen.spec.weights_dir`).
"""

from __future__ import annotations

from anygen.weights.manifest import (
    Component,
    ComponentStatus,
    FileEntry,
    Manifest,
    NetworkUnavailable,
    component_status,
    default_manifest_path,
    download_component,
    fetch_command,
    is_offline,
    load_manifest,
    prepare_steps,
)

__all__ = [
    "Component",
    "ComponentStatus",
    "FileEntry",
    "Manifest",
    "NetworkUnavailable",
    "component_status",
    "default_manifest_path",
    "download_component",
    "fetch_command",
    "is_offline",
    "load_manifest",
    "prepare_steps",
]
