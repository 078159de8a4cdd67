"""``weights_manifest.json``: the one description of every registered set of weights.

The file lives in the package (``crystalzoo/weights_manifest.json``, so it ships in the
wheel); the repository's top-level ``weights_manifest.json`` is a link to it. Each entry::

    {"description", "config": {architecture, backbone, graph, head},
     "file": {"filename", "sha256", "size", "bundled"},
     "hub": {"repo_id", "revision" (a commit id, or null while unpublished), "published"},
     "num_params", "normalizer", "training_data", "metrics": [...], "source", "license", "citation"}

This module only reads it; the functions that write it (and the weights beside it) are for
maintainers and live in :mod:`crystalzoo.maintainer`, which the library never imports.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


def manifest_path() -> Path:
    return Path(str(resources.files("crystalzoo").joinpath("weights_manifest.json")))


@lru_cache(maxsize=1)
def _cached(path: str, mtime: float) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def read_manifest() -> dict[str, Any]:
    """The manifest as a dict (``{"format_version": 1, "weights": {name: entry}}``)."""
    path = manifest_path()
    if not path.exists():
        return {"format_version": FORMAT_VERSION, "weights": {}}
    return json.loads(json.dumps(_cached(str(path), path.stat().st_mtime)))  # a private copy
