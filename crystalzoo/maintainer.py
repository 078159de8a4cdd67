"""Maintainers only: register, bundle and publish the package's own weights, and write
``weights_manifest.json`` and its docs table. These functions write into the package's folder
(the manifest and ``crystalzoo/weights/``), so the library never imports this module: only the
scripts in ``scripts/`` (and their tests) do.

Bottom to top, the weights stack is :mod:`crystalzoo.manifest` (reads the manifest),
:mod:`crystalzoo.hub` (Hub I/O, nothing about the manifest), :mod:`crystalzoo.registry` (names →
verified weights → models) and this module on top.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError
from .hub import push_to_hub
from . import manifest as _manifest  # by module: tests point manifest_path at a copy
from .manifest import FORMAT_VERSION, read_manifest
from .loading import load_model
from .registry import bundled_path
from .files import atomic_write, sha256_file

DEFAULT_HUB_ORG = "crystalzoo"


def write_manifest(manifest: dict[str, Any]) -> None:
    """Rewrite the package's manifest, entries in the order given, atomically."""
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    atomic_write(_manifest.manifest_path(), lambda tmp: Path(tmp).write_text(text))


def update_entry(manifest: dict[str, Any], name: str, model, weights_file: Path, *, bundled: bool,
                 repo_id: str | None = None, revision: str | None = None, **info: Any) -> dict[str, Any]:
    """Add or refresh the entry ``name`` for ``model`` whose weights are in ``weights_file``
    (sha256 and size are read from the file). ``revision`` stays ``None`` until the file is
    published on the Hub; pass the commit id that ``push_to_hub`` returned."""
    entries = manifest.setdefault("weights", {})
    old = entries.get(name, {})
    config = model.config()
    for key in ("meta", "format_version"):  # the manifest describes weights, not a saved model
        config.pop(key, None)
    head = model.head
    sha256 = sha256_file(weights_file)
    old_hub = old.get("hub", {}) if old.get("file", {}).get("sha256") == sha256 else {}  # new weights: not yet published
    entry = {
        **{k: v for k, v in old.items() if k not in ("config", "file", "hub")},
        **info,
        "config": config,
        "num_params": sum(p.numel() for p in model.parameters()),
        "file": {
            "filename": weights_file.name,
            "sha256": sha256,
            "size": weights_file.stat().st_size,
            "bundled": bundled,
        },
        "hub": {
            "repo_id": repo_id or old.get("hub", {}).get("repo_id") or f"{DEFAULT_HUB_ORG}/cgcnn-{name}",
            "revision": revision if revision is not None else old_hub.get("revision"),
        },
    }
    entry["hub"]["published"] = entry["hub"]["revision"] is not None
    if head.task == "regression":
        entry["normalizer"] = {"mean": head.mean.tolist(), "std": head.std.tolist()}
    entries[name] = entry
    manifest["format_version"] = FORMAT_VERSION
    return entry


def markdown_table(manifest: dict[str, Any] | None = None) -> str:
    """The manifest as the Markdown table shown in ``docs/backbones.md``."""
    manifest = manifest or read_manifest()
    rows = ["| name | target | units | training crystals | metric (split) | params | bundled | Hub repo @ revision | sha256 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, e in manifest["weights"].items():
        head = e["config"]["head"]
        m = e["metrics"][0] if e.get("metrics") else {}
        metric = f"{m.get('name', '')} {m.get('value', '')} {m.get('units', '')} ({m.get('split', '')})".strip()
        hub = e["hub"]
        rev = hub["revision"][:12] if hub["revision"] else "unpublished"
        rows.append(
            f"| `{name}` | {', '.join(head['targets'])} | {', '.join(head.get('units', [])) or '–'} | "
            f"{e.get('training_data', {}).get('train', '?')} | {metric} | {e['num_params']:,} | "
            f"{'yes' if e['file']['bundled'] else 'no'} | {hub['repo_id']} @ {rev} | `{e['file']['sha256'][:16]}…` |"
        )
    return "\n".join(rows) + "\n"


def register_weights(name: str, folder: str | Path, *, description: str, training_data: dict[str, Any],
                     metrics: list[dict[str, Any]], source: str, license: str = "MIT",
                     citation: str = "", units: Sequence[str] | None = None) -> dict[str, Any]:
    """Maintainers: bundle the model in ``folder`` (written by ``finetune``/``pretrain``) as the
    registered backbone ``name`` — copies its weights into ``crystalzoo/weights/`` and adds or
    updates its manifest entry (sha256, size, config, metrics). Publish it on the Hub
    afterwards with :func:`publish_registered` to pin a revision. ``units`` (one
    per target) replace the units stored in the folder, for models trained without them."""
    model = load_model(str(folder))
    model.meta.clear()
    if units is not None:
        if len(units) != len(model.targets):
            raise ConfigError(f"{len(model.targets)} targets {model.targets} but {len(units)} units")
        model.head.units = list(units)
    target = bundled_path(f"cgcnn-{name}.safetensors")
    shutil.copyfile(Path(folder) / "model.safetensors", target)
    manifest = read_manifest()
    entry = update_entry(manifest, name, model, target, bundled=True, description=description,
                         training_data=training_data, metrics=metrics, source=source, license=license,
                         citation=citation)
    write_manifest(manifest)
    return entry


def publish_registered(name: str, *, repo_id: str | None = None, token: str | None = None) -> str:
    """Maintainers: upload a registered (bundled) set of weights under its manifest file name
    and pin the returned commit id in the package's manifest."""
    manifest = read_manifest()
    entry = manifest["weights"][name]
    repo_id = repo_id or entry["hub"]["repo_id"]
    model = load_model(name)
    commit = push_to_hub(model, repo_id, token=token, filename=entry["file"]["filename"],
                         commit_message=f"crystalzoo weights {name}")
    info = {k: v for k, v in entry.items() if k not in ("config", "file", "hub", "num_params", "normalizer")}
    update_entry(manifest, name, model, bundled_path(entry["file"]["filename"]), bundled=entry["file"]["bundled"],
                 repo_id=repo_id, revision=commit, **info)
    write_manifest(manifest)
    return commit


def rename_registered(old: str, new: str, description: str | None = None) -> dict[str, Any]:
    """Maintainers: give the registered weights ``old`` the name ``new`` (its bundled file and,
    while unpublished, its Hub repo are renamed too; the entry keeps its place and data), e.g.
    to free a name for newer weights."""
    manifest = read_manifest()
    entries = manifest["weights"]
    if old not in entries or new in entries:
        raise ConfigError(f"cannot rename {old!r} to {new!r}: registered are {sorted(entries)}")
    entry = entries[old]
    filename = f"cgcnn-{new}.safetensors"
    if entry["file"]["bundled"]:
        shutil.move(bundled_path(entry["file"]["filename"]), bundled_path(filename))
    entry["file"]["filename"] = filename
    if entry["hub"].get("revision") is None:
        entry["hub"]["repo_id"] = f"{DEFAULT_HUB_ORG}/cgcnn-{new}"
    if description is not None:
        entry["description"] = description
    manifest["weights"] = {new if k == old else k: v for k, v in entries.items()}
    write_manifest(manifest)
    return entry
