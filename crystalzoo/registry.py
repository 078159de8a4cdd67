"""Registered backbones: names → verified weights and configs (models are built from them by
:mod:`crystalzoo.models.factory`: ``load_model``, ``load_backbone``).

Every source of weights goes through one path (:func:`resolve`): a registered name (its
file bundled in the package, else from the Hugging Face Hub at the pinned revision, its
sha256 checked), ``hf-hub:ORG/NAME[@REVISION]`` (any model written by crystalzoo), or a
local folder holding ``config.json`` + ``model.safetensors``.

Resolution order of a name (the same for ``load_model``, ``load_backbone`` and every CLI
command): 1. ``hf-hub:…`` is a Hub repo; 2. a path object, or a string naming an existing
folder, is that folder — where the name is also registered, only a model folder (one with
``config.json``) wins, and a note on stderr says so; 3. a registered name; 4. anything else is an
:class:`~crystalzoo.errors.UnknownBackboneError`.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError, UnknownBackboneError, WeightsError
from .graphs.settings import GraphSettings
from .manifest import read_manifest
from .files import check_sha256
from .serialization import CONFIG_NAME, WEIGHTS_NAME, read_config, read_weights

logger = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class WeightsInfo:
    """What a user needs to trust, use and cite one set of registered weights."""

    name: str
    description: str
    task: str
    targets: list[str]
    units: list[str]
    normalizer: dict[str, Any] | None
    training_data: dict[str, Any]
    metrics: list[dict[str, Any]]
    num_params: int
    graph_settings: GraphSettings
    source: str
    license: str
    citation: str
    filename: str
    sha256: str
    size: int
    bundled: bool
    repo_id: str
    revision: str | None
    config: dict[str, Any] = field(repr=False)


def _entries() -> dict[str, dict[str, Any]]:
    return read_manifest()["weights"]


def _entry(name: str) -> dict[str, Any]:
    entries = _entries()
    if not isinstance(name, str) or name not in entries:
        close = difflib.get_close_matches(str(name), list(entries), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownBackboneError(
            f"unknown backbone {name!r}.{hint} Registered: {', '.join(sorted(entries))}; "
            f"or use '{HF_PREFIX}ORG/NAME[@REVISION]' or a folder with {CONFIG_NAME} and {WEIGHTS_NAME}."
        )
    return entries[name]


def list_backbones(task: str | None = None) -> list[str]:
    """Names of the registered backbones, optionally only those of one ``task``
    (``"regression"`` or ``"classification"``).

    Example::

        >>> "formation" in list_backbones()
        True
    """
    if task not in (None, "regression", "classification"):
        raise ConfigError(f"task = {task!r}: valid are 'regression', 'classification' (or None for all)")
    return sorted(n for n, e in _entries().items() if task is None or e["config"]["head"]["task"] == task)


def get_backbone_info(name: str) -> WeightsInfo:
    """Metadata of a registered backbone: target, units, normaliser, training data,
    metrics, parameter count, graph settings, file and its sha256, Hub location.

    Example::

        >>> get_backbone_info("bulk").units
        ['log10(GPa)']
    """
    e = _entry(name)
    head = e["config"]["head"]
    return WeightsInfo(
        name=name, description=e.get("description", ""), task=head["task"], targets=head["targets"],
        units=head.get("units", [""] * len(head["targets"])), normalizer=e.get("normalizer"),
        training_data=e.get("training_data", {}), metrics=e.get("metrics", []), num_params=e["num_params"],
        graph_settings=GraphSettings.from_dict(e["config"]["graph"]), source=e.get("source", ""),
        license=e.get("license", ""), citation=e.get("citation", ""), filename=e["file"]["filename"],
        sha256=e["file"]["sha256"], size=e["file"]["size"], bundled=e["file"]["bundled"],
        repo_id=e["hub"]["repo_id"], revision=e["hub"]["revision"], config=e["config"],
    )


def bundled_path(filename: str) -> Path:
    return Path(str(resources.files("crystalzoo").joinpath("weights", filename)))


def weights_file(name: str, local_files_only: bool | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the verified weights file of a registered name: the bundled copy, else the
    Hugging Face Hub cache, else a download at the pinned revision (sha256 checked)."""
    e = _entry(name)
    f = e["file"]
    if not (f["bundled"] and bundled_path(f["filename"]).is_file()):
        from . import hub

        return hub.fetch_registered(name, e, local_files_only=local_files_only, cache_dir=cache_dir)  # verified there
    path = bundled_path(f["filename"])
    check_sha256(path, f["sha256"], f"the manifest ({name!r})", "Reinstall crystalzoo to get the bundled file back.")
    return path


def source_kind(name: str | os.PathLike) -> str:
    """What a model name refers to, by the resolution order of this module's docstring:
    ``"hub"`` (``hf-hub:…``), ``"folder"`` or ``"registered"`` (also for an unknown name, which
    loading then refuses). Nothing is read or downloaded.

    Example::

        >>> source_kind("formation"), source_kind("hf-hub:me/my-model")
        ('registered', 'hub')
    """
    if not isinstance(name, (str, os.PathLike)):
        raise UnknownBackboneError(f"a model name is a string or a path (a registered name, '{HF_PREFIX}ORG/NAME' or a "
                                   f"model folder), not a {type(name).__name__}")
    if isinstance(name, str) and not name.strip():
        raise UnknownBackboneError("the model name is empty: give a registered name (crystalzoo list), "
                                   f"'{HF_PREFIX}ORG/NAME' or a model folder ('.' for the current one)")
    if isinstance(name, (str, os.PathLike)) and str(name).startswith(HF_PREFIX):
        return "hub"
    if isinstance(name, os.PathLike) or (isinstance(name, str) and _is_dir(name)
                                         and (name not in _entries() or _is_dir(name, CONFIG_NAME))):
        return "folder"
    return "registered"


def resolve(name: str, local_files_only: bool | None = None, with_weights: bool = True,
            cache_dir: str | os.PathLike | None = None):
    """(config, state dict or None, description of the source) for any model name."""
    kind = source_kind(name)
    if kind == "hub":
        from . import hub

        folder, revision = hub.fetch_model_repo(str(name)[len(HF_PREFIX):], local_files_only=local_files_only,
                                                cache_dir=cache_dir)
        source = f"{name} (commit {revision})"
    elif kind == "folder":
        folder, source = Path(name), str(name)
        if isinstance(name, str) and name in _entries():
            logger.warning("loading the folder ./%s, not the registered model %r (an existing folder wins; run from "
                           "another folder to load the registered one)", name, name)
    else:
        e = _entry(name)
        state = read_weights(weights_file(name, local_files_only, cache_dir)) if with_weights else None
        return e["config"], state, f"registered backbone {name!r}"
    config = read_config(folder / CONFIG_NAME)
    # a Hub repo pushed with push_to_hub(filename=…) names its weights file (checked when it was fetched)
    weights = config.get("weights_file", WEIGHTS_NAME) if kind == "hub" else WEIGHTS_NAME
    state = read_weights(folder / weights) if with_weights else None
    return config, state, source


def _is_dir(name: str, holding: str | None = None) -> bool:
    """Whether ``name`` is an existing folder (holding the file ``holding``, if given)."""
    try:
        return (Path(name) / holding).is_file() if holding else Path(name).is_dir()
    except (OSError, ValueError):  # a name too long for a path, a NUL character
        return False


def backbone_config(name: str | os.PathLike) -> dict[str, Any]:
    """The config (architecture, graph settings, head) of a registered name or a model folder,
    resolved as :func:`load_model` resolves it, without reading the weights: what a run checks
    its options against before it starts. :class:`~crystalzoo.errors.UnknownBackboneError` for
    a name that is neither.

    Example::

        >>> backbone_config("formation")["backbone"]["n_conv"]
        4
    """
    config = resolve(name, with_weights=False)[0]
    if not isinstance(config.get("backbone"), dict):
        raise WeightsError(f"{name}: its {CONFIG_NAME} has no 'backbone' settings; is it a crystalzoo model?")
    return config
