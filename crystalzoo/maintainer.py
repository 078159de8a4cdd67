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
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError
from .hub import push_to_hub
from . import manifest as _manifest  # by module: tests point manifest_path at a copy
from .manifest import FORMAT_VERSION, read_manifest
from .models.factory import load_model
from .registry import bundled_path
from .files import atomic_write, sha256_file

DEFAULT_HUB_ORG = "crystalzoo"


def write_manifest(manifest: dict[str, Any]) -> None:
    """Rewrite the package's manifest, entries in the order given, atomically."""
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    atomic_write(_manifest.manifest_path(), lambda tmp: Path(tmp).write_text(text))


def weights_stem(config: dict[str, Any], name: str) -> str:
    """The name of the weights ``name`` of a model config on disk and on the Hub: its family, then
    its name (``cgcnn-formation``; a name that starts with the family keeps it once:
    ``schnet-combined``). Configs before families were named are ``cgcnn``."""
    from .models.architectures import DEFAULT_ARCHITECTURE

    family = str(config.get("architecture", DEFAULT_ARCHITECTURE))
    return name if name.startswith(f"{family}-") else f"{family}-{name}"


def check_free(manifest: dict[str, Any], name: str, filename: str, repo_id: str | None = None) -> None:
    """:class:`ConfigError` when another entry than ``name`` already stores its weights as
    ``filename`` or on the Hub as ``repo_id``: names ``x`` and ``schnet-x`` of a SchNet model
    map to one file (:func:`weights_stem`), and the second would overwrite the first."""
    for other, entry in manifest.get("weights", {}).items():
        if other == name:
            continue
        # compared without case: Hub repo ids, and the file systems of macOS and Windows, ignore it
        if str(entry.get("file", {}).get("filename", "")).lower() == filename.lower():
            raise ConfigError(f"the registered weights {other!r} are stored as {filename}, the file {name!r} would "
                              f"be written to: pick another name")
        if repo_id is not None and str(entry.get("hub", {}).get("repo_id", "")).lower() == repo_id.lower():
            raise ConfigError(f"the registered weights {other!r} are published as {repo_id}, the Hub repo of "
                              f"{name!r}: pick another name or repo_id")


def update_entry(manifest: dict[str, Any], name: str, model, weights_file: Path, *, bundled: bool,
                 repo_id: str | None = None, revision: str | None = None, **info: Any) -> dict[str, Any]:
    """Add or refresh the entry ``name`` for ``model`` whose weights are in ``weights_file``
    (sha256 and size are read from the file). ``revision`` stays ``None`` until the file is
    published on the Hub; pass the commit id that ``push_to_hub`` returned."""
    entries = manifest.setdefault("weights", {})
    old = entries.get(name, {})
    config = model.to_config()
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
            "repo_id": repo_id or old.get("hub", {}).get("repo_id") or f"{DEFAULT_HUB_ORG}/{weights_stem(config, name)}",
            "revision": revision if revision is not None else old_hub.get("revision"),
        },
    }
    entry["hub"]["published"] = entry["hub"]["revision"] is not None
    if head.task == "regression":
        entry["normalizer"] = {"mean": head.mean.tolist(), "std": head.std.tolist(),
                               **({"of": "what the composition reference leaves"}
                                  if getattr(head, "reference", None) is not None else {})}
    entries[name] = entry
    manifest["format_version"] = FORMAT_VERSION
    return entry


def _cell(text: Any) -> str:
    """``text`` safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _short_license(text: str) -> str:
    """``"MIT, Copyright (c) 2018 Tian Xie (see …)"`` → ``"MIT"``."""
    return re.split(r"[,(]", text, maxsplit=1)[0].strip() or "–"


_AUTHOR = re.compile(r"^(?:[A-Z]\.\s?)+(?:[a-z]+\s)*[A-Z][\w'-]*(?: et al\.)?$")  # "T. Xie", "M. de Jong et al."


def _short_citation(text: str) -> str:
    """Each reference of ``text`` (``;``-separated) as first author's surname and year:
    ``"T. Xie and J. C. Grossman, …, Phys. Rev. Lett. 120, 145301 (2018)"`` → ``"Xie & Grossman 2018"``."""
    refs = []
    for ref in (r.strip() for r in text.split(";")):
        label, _, ref = ref.rpartition(": ") if re.match(r"^\w+: ", ref) else ("", "", ref)
        parts = ref.split(", ")
        authors = []
        for part in parts:
            names = [n.strip() for n in part.split(" and ")]
            if not all(_AUTHOR.match(n) for n in names):
                break
            authors += names
        if not authors:
            refs.append(ref)  # not "initials surname, …": kept whole
            continue
        surnames = [re.sub(r"^(?:[A-Z]\.\s?)+", "", a) for a in authors]
        if len(surnames) > 2 or surnames[0].endswith("et al."):
            who = surnames[0].removesuffix(" et al.") + " et al."
        else:
            who = " & ".join(surnames)
        year = re.findall(r"\((\d{4})\)", ref)
        refs.append(f"{label + ': ' if label else ''}{who}{' ' + year[-1] if year else ''}")
    return "; ".join(refs)


def _training_cell(data: dict[str, Any]) -> str:
    sizes = " / ".join(f"{data[k]:,}" for k in ("train", "val", "test") if isinstance(data.get(k), int))
    parts = [data.get("dataset", "")] + ([f"{sizes} (train / val / test)"] if sizes else [])
    return "<br>".join(_cell(p) for p in parts if p) or "–"


def _metric_cell(metrics: list[dict[str, Any]], several_targets: bool) -> str:
    """One line per target and metric, its splits side by side: ``mae 0.0835 / 0.09 eV/atom (val / test)``."""
    groups: dict[tuple, list[tuple[Any, str]]] = {}
    for m in metrics:
        key = (m.get("target", "") if several_targets else "", m.get("name", ""), m.get("units", ""))
        split = m.get("split", "")
        groups.setdefault(key, []).append((m.get("value", ""), "val" if split == "validation" else split))
    lines = []
    for (target, name, units), scores in groups.items():
        values = " / ".join(str(v) for v, _ in scores)
        splits = " / ".join(s for _, s in scores if s)
        line = f"{target + ': ' if target else ''}{name} {values} {units}".strip()
        lines.append(line + (f" ({splits})" if splits else ""))
    return "<br>".join(_cell(line) for line in lines) or "–"


def markdown_table(manifest: dict[str, Any] | None = None) -> str:
    """The manifest as the Markdown table shown in ``docs/backbones.md``: per registered model
    its task, targets with units, training data, metrics, license, sha256 and citation (each
    shortened; ``crystalzoo info NAME`` and :func:`crystalzoo.get_backbone_info` give them in
    full)."""
    manifest = manifest or read_manifest()
    rows = ["| name | task | targets (units) | training data | metrics | license | sha256 | citation |",
            "|---|---|---|---|---|---|---|---|"]
    for name, e in manifest["weights"].items():
        head = e["config"]["head"]
        if head["task"] == "classification":
            targets = [f"{t} (classes: {', '.join(head.get('classes', []))})" for t in head["targets"]]
        else:
            units = head.get("units") or [""] * len(head["targets"])
            targets = [f"{t} ({u})" if u else t for t, u in zip(head["targets"], units)]
        rows.append(
            f"| `{name}` | {head['task']} | {'<br>'.join(_cell(t) for t in targets)} | "
            f"{_training_cell(e.get('training_data', {}))} | "
            f"{_metric_cell(e.get('metrics', []), len(head['targets']) > 1)} | "
            f"{_cell(_short_license(e.get('license', '')))} | `{e['file']['sha256'][:12]}` | "
            f"{_cell(_short_citation(e.get('citation', '')) or '–')} |"
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
    stem = weights_stem(model.to_config(), name)
    target = bundled_path(f"{stem}.safetensors")
    manifest = read_manifest()
    check_free(manifest, name, target.name,
               manifest["weights"].get(name, {}).get("hub", {}).get("repo_id") or f"{DEFAULT_HUB_ORG}/{stem}")
    shutil.copyfile(Path(folder) / "model.safetensors", target)
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
    stem = weights_stem(entry["config"], new)
    filename = f"{stem}.safetensors"
    check_free(manifest, old, filename, f"{DEFAULT_HUB_ORG}/{stem}" if entry["hub"].get("revision") is None else None)
    if entry["file"]["bundled"]:
        shutil.move(bundled_path(entry["file"]["filename"]), bundled_path(filename))
    entry["file"]["filename"] = filename
    if entry["hub"].get("revision") is None:
        entry["hub"]["repo_id"] = f"{DEFAULT_HUB_ORG}/{stem}"
    if description is not None:
        entry["description"] = description
    manifest["weights"] = {new if k == old else k: v for k, v in entries.items()}
    write_manifest(manifest)
    return entry
