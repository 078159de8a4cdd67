"""The Hugging Face Hub: the only module that talks to it.

* :func:`fetch_registered` — a registered name's weights at its pinned revision (cache
  first; the sha256 from the manifest is checked, a corrupt cached copy is replaced).
* :func:`fetch_model_repo` — any crystalzoo model repo, ``ORG/NAME[@REVISION]``.
* :func:`push_to_hub` — upload a model (``model.safetensors``, ``config.json``, a model
  card) and return the commit id.

``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` / ``HF_HOME`` and ``HF_TOKEN`` are
read when a function is called, so they can be changed at run time (huggingface_hub reads
them once, when it is imported, and takes explicit arguments after that). The commit a file
was loaded at is the name of its snapshot folder in huggingface_hub's cache
(``snapshots/<commit>/``, its documented layout), which is also known offline, where no API
call can ask.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError, HubError
from .files import check_sha256, check_small_file, sha256_file, write_json
from .model_card import CARD_MARK, base_model, card_tags, card_text, target_units, unit_note
from .serialization import CONFIG_NAME, WEIGHTS_NAME, is_model, read_config, save_pretrained

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return bool(local_files_only)
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_dir(cache_dir: str | os.PathLike | None = None) -> str:
    """The Hugging Face cache folder: ``cache_dir`` when given, else ``$HF_HUB_CACHE``, else the default."""
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)) or not str(cache_dir).strip() \
                or (Path(cache_dir).exists() and not Path(cache_dir).is_dir()):
            raise ConfigError(f"cache_dir = {cache_dir!r}: the folder of the Hugging Face cache (a path), or leave it "
                              "out for $HF_HUB_CACHE")
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME", os.path.join(Path.home(), ".cache", "huggingface"))
    return os.path.join(home, "hub")


def _download(repo_id: str, filename: str, revision: str | None, local_files_only: bool | None,
              force_download: bool = False, cache_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(local path, commit id) of one file, from the cache or the Hub; Hub errors become
    :class:`HubError` with what to do."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    offline = _offline(local_files_only)
    cache_dir = _cache_dir(cache_dir)  # checked here, not reported as a failed download
    where = f"{repo_id}/{filename} at revision {revision or 'main'}"
    try:
        path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=_endpoint(),
                               local_files_only=offline, force_download=force_download)
    except RevisionNotFoundError:
        raise HubError(f"revision {revision!r} does not exist in the Hub repo {repo_id} ({_endpoint()})") from None
    except RepositoryNotFoundError:
        raise HubError(f"no Hub repo {repo_id} at {_endpoint()} (or it is private: set HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        reason = "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline else \
            f"the Hub ({_endpoint()}) cannot be reached"
        raise HubError(
            f"{where} is not in the local cache ({cache_dir}) and {reason}. On a machine with network, "
            "run `crystalzoo download NAME…` and copy the cache folder, or point HF_HUB_CACHE at it."
        ) from None
    except EntryNotFoundError:
        raise HubError(f"{where}: no such file in the Hub repo (a crystalzoo repo has {CONFIG_NAME} and {WEIGHTS_NAME})") from None
    except Exception as exc:  # HTTP errors, broken connections (httpx), disk errors
        raise HubError(
            f"could not fetch {where} from {_endpoint()}: {exc}. Try again; to use only cached "
            "files, set HF_HUB_OFFLINE=1 (or pass local_files_only=True)."
        ) from None
    path = Path(path)
    return path, path.parent.name  # the cache keeps files in snapshots/<commit id>/


def _plain_weights_name(name: Any) -> bool:
    """Whether ``name`` is a plain file name ending in .safetensors (no folder, no ``..``)."""
    return isinstance(name, str) and Path(name).name == name and name.endswith(".safetensors") \
        and name != ".safetensors"


def _check_repo_id(repo_id: Any) -> None:
    """:class:`HubError` unless ``repo_id`` is a valid Hub repo id, before any request."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str):
        raise HubError(f"the Hub repo id must be a string ORG/NAME, e.g. 'me/band-gap-cgcnn', got {repo_id!r}")
    if repo_id.startswith("hf-hub:"):
        raise HubError(f"{repo_id!r}: a repo id has no 'hf-hub:' prefix (that marks a model name for load_model); "
                       f"push to {repo_id[len('hf-hub:'):]!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"{repo_id!r} is not a valid Hub repo id: [ORG/]NAME of letters, digits, '-', '_' and '.', "
                       "not starting or ending with '-' or '.', without '--' or '..', at most 96 characters") from None


def fetch_registered(name: str, entry: dict[str, Any], local_files_only: bool | None = None,
                     cache_dir: str | os.PathLike | None = None) -> Path:
    """The verified weights file of a registered entry, at its pinned revision."""
    hub, f = entry["hub"], entry["file"]
    if hub.get("revision") is None:
        raise HubError(
            f"the weights of {name!r} are not bundled in this install and not published on the Hub yet "
            f"(no pinned revision in the manifest); reinstall crystalzoo to get the bundled file"
        )
    path, _ = _download(hub["repo_id"], f["filename"], hub["revision"], local_files_only, cache_dir=cache_dir)
    if sha256_file(path) != f["sha256"]:
        # never use a corrupt copy: replace it once from the Hub, unless offline
        if not _offline(local_files_only):
            logger.warning("cached %s of %r failed its sha256 check; downloading it again", f["filename"], name)
            path, _ = _download(hub["repo_id"], f["filename"], hub["revision"], False, force_download=True,
                                cache_dir=cache_dir)
        check_sha256(path, f["sha256"], f"the manifest ({name!r} from {hub['repo_id']}@{hub['revision']})",
                     f"Delete it and run `crystalzoo download {name}` with network access.")
    return path


def fetch_model_repo(spec: str, local_files_only: bool | None = None,
                     cache_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(snapshot folder, commit id) of a crystalzoo model repo ``ORG/NAME[@REVISION]``;
    config and weights come from the same commit, and the weights' sha256 is checked
    against the one ``config.json`` records."""
    repo_id, _, revision = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"{spec!r} is not ORG/NAME[@REVISION]")
    _check_repo_id(repo_id)
    config_path, commit = _download(repo_id, CONFIG_NAME, revision or None, local_files_only, cache_dir=cache_dir)
    config = read_config(config_path)
    name = config.get("weights_file", WEIGHTS_NAME)  # push_to_hub(filename=…) records another name
    if not _plain_weights_name(name):
        raise ConfigError(f"{config_path} ({repo_id}@{commit}): weights_file must be a plain *.safetensors file name, "
                          f"got {str(name)[:60]!r}")
    weights_path, _ = _download(repo_id, name, commit, local_files_only, cache_dir=cache_dir)
    expected = config.get("weights_sha256")
    if expected is not None and not isinstance(expected, str):
        raise ConfigError(f"{config_path} ({repo_id}@{commit}): weights_sha256 must be a string, got {expected!r}")
    if expected is not None:
        check_sha256(weights_path, expected, f"its {CONFIG_NAME} ({repo_id}@{commit})",
                     "Delete it from the Hugging Face cache and load again.")
    logger.info("loaded hf-hub:%s at commit %s", repo_id, commit)
    return weights_path.parent, commit


# ---------------------------------------------------------------------------- publishing


def _no_local_paths(meta: dict[str, Any] | None) -> None:
    """Remove this machine's paths from a config's ``meta`` before it is published: where the
    model was loaded from, and a backbone that was a local folder (its name is kept)."""
    if not meta:
        return
    meta.pop("source", None)
    backbone = meta.get("backbone")
    if isinstance(backbone, str) and not backbone.startswith("hf-hub:") and ("/" in backbone or "\\" in backbone
                                                                           or Path(backbone).is_dir()):
        meta["backbone"] = f"{Path(backbone).name} (a local folder)"


def _card_yaml(repo_id: str, config: dict[str, Any], metrics: dict[str, Any] | None, tags: list[str]) -> str:
    """The card's metadata: library, license, pipeline tag, tags, base model, data set and a
    ``model-index`` with the metrics of each split (with their units), as the Hub reads them."""
    from huggingface_hub import EvalResult, ModelCardData

    head, meta = config["head"], config.get("meta", {})
    units = target_units(head)
    data = (metrics or {}).get("data")
    results = []
    for split in ("val", "test"):
        for key, value in ((metrics or {}).get(split) or {}).items():
            if key == "loss" or value is None or value != value:
                continue
            label = f"{'validation' if split == 'val' else 'test'} {key}" + unit_note(key, units)
            results.append(EvalResult(task_type="graph-ml", task_name=f"{head.get('task')} of "
                                      f"{', '.join(head['targets'])}", dataset_type=str(data or "unknown"),
                                      dataset_name=str(data or "training data of this model"),
                                      dataset_split="validation" if split == "val" else "test",
                                      metric_type=key, metric_value=float(value), metric_name=label))
    card = ModelCardData(library_name="crystalzoo", license="mit", pipeline_tag="graph-ml",
                         tags=(fixed := card_tags(config)) + [t for t in tags if t not in fixed],
                         base_model=base_model(meta.get("backbone")), datasets=[str(data)] if data else None,
                         model_name=repo_id, eval_results=results or None)
    return card.to_yaml()


def _model_card(model, repo_id: str, config: dict[str, Any], metrics: dict[str, Any] | None,
                tags: list[str] = ()) -> str:
    return card_text(model, repo_id, config, metrics, _card_yaml(repo_id, config, metrics, list(tags)))


def _card_is_replaceable(api, repo_id: str, revision: str | None, scratch: Path) -> bool:
    """Whether the README.md at ``revision`` of ``repo_id`` may be replaced: there is none, or
    crystalzoo made it (:data:`CARD_MARK`)."""
    if not api.file_exists(repo_id, "README.md", revision=revision):
        return True
    path = api.hf_hub_download(repo_id, "README.md", revision=revision, cache_dir=str(scratch))
    return CARD_MARK in Path(path).read_text(encoding="utf-8", errors="replace")


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """The metrics in a ``metrics.json`` (as training writes it), checked for the model card:
    :class:`ConfigError` naming the file when it is not JSON, not an object, or has values of
    the wrong type."""
    path = Path(path)
    check_small_file(path, f"metrics file {path} (pass the metrics.json that training wrote, or no --metrics)")
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"metrics file {path} does not exist") from None
    except (OSError, ValueError, RecursionError) as exc:  # unreadable, not UTF-8, not JSON
        raise ConfigError(f"metrics file {path} is not readable JSON ({str(exc)[:200]}); pass the metrics.json "
                          "that training wrote, or no --metrics") from None
    return check_metrics(metrics, f"metrics file {path}")


def check_metrics(metrics: Any, what: str) -> dict[str, Any]:
    """``metrics`` as plain JSON values (numpy numbers become numbers); :class:`ConfigError`
    unless it is an object whose ``val`` / ``test`` are objects of numbers and whose ``sizes``
    is an object (what the model card shows)."""
    def plain(value: Any) -> Any:
        if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy number
            return value.item()
        raise TypeError(f"{type(value).__name__} is not a JSON value")

    try:
        metrics = json.loads(json.dumps(metrics, default=plain))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{what} must hold JSON values (numbers, strings, lists, objects): {exc}") from None
    if not isinstance(metrics, dict):
        raise ConfigError(f"{what} holds a JSON {type(metrics).__name__}, not an object like the metrics.json "
                          "training writes ({\"val\": {\"mae\": …}, \"test\": {…}, \"sizes\": {…}})")
    for split in ("val", "test"):
        values = metrics.get(split)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{what}: {split!r} must be an object of metric values, got {str(values)[:60]}")
        bad = {k: v for k, v in values.items()  # None: a score that does not exist, as training writes it
               if k != "loss" and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))}
        if bad:
            raise ConfigError(f"{what}: {split} metrics must be numbers, got {str(bad)[:80]}")
    if metrics.get("sizes") is not None and not isinstance(metrics["sizes"], dict):
        raise ConfigError(f"{what}: 'sizes' must be an object (train, val, test counts)")
    return metrics


def _stale_model_files(api, repo_id: str, revision: str | None, written: set[str]) -> list[str]:
    """The files of an earlier push that this one does not write and that would contradict it:
    config.json, metrics.json and weights (``*.safetensors``) at the top of the repo. Other files
    (a README its author wrote, data, notebooks) stay."""
    siblings = api.model_info(repo_id, revision=revision).siblings or []
    return sorted(name for name in (s.rfilename for s in siblings)
                  if "/" not in name and name not in written
                  and (name in (CONFIG_NAME, "metrics.json") or name.endswith(".safetensors")))


def push_to_hub(model, repo_id: str, *, token: str | None = None, private: bool = False,
                commit_message: str = "Upload crystalzoo model", metrics: dict[str, Any] | None = None,
                metrics_file: str | os.PathLike | None = None, filename: str = WEIGHTS_NAME,
                revision: str | None = None, create_pr: bool = False, tags: list[str] | None = None,
                overwrite_card: bool = False, extra: dict[str, Any] | None = None) -> str:
    """Upload ``model`` to the Hub repo ``repo_id`` (created if needed) and return the commit id.

    A push leaves the repo holding exactly this model's files, in one commit: the weights,
    config.json and metrics.json of an earlier push that this one does not write are deleted
    (other files, such as a README its author wrote, stay).

    The repo gets ``model.safetensors``, ``config.json`` (architecture, graph settings,
    targets, units, source backbone, calibration, weights sha256; no local path) and a
    ``README.md`` model card built from them and the metrics: its YAML holds
    ``library_name``, ``license``, ``pipeline_tag`` (graph-ml), ``tags`` (with ``tags``),
    ``base_model`` (a fine-tune's backbone), ``datasets`` and a ``model-index`` with the
    metrics of each split and their units. A README already in the repo (one its author
    wrote) is kept unless ``overwrite_card=True``. ``revision``: the branch to push to
    (created from the main branch if needed); ``create_pr=True`` opens a pull request
    instead of committing to it. Load it back with ``load_model("hf-hub:REPO_ID@COMMIT")``.

    Example::

        >>> commit = push_to_hub(result.model, "me/band-gap-cgcnn", metrics=result.metrics)  # doctest: +SKIP
    """
    from huggingface_hub import HfApi

    if not is_model(model):
        raise ConfigError(f"push_to_hub takes a CrystalModel or CrystalEnsemble (e.g. load_model(folder)), not a "
                          f"{type(model).__name__}; for a backbone, make a model with a head first")
    _check_repo_id(repo_id)
    if not isinstance(private, bool):
        raise ConfigError(f"private = {private!r}: True (a private repo) or False")
    if not _plain_weights_name(filename):
        raise ConfigError(f"filename = {filename!r}: the weights' name in the repo, a plain file name ending in "
                          f".safetensors (default {WEIGHTS_NAME})")
    if metrics is not None and metrics_file is not None:
        raise ConfigError("give metrics= or metrics_file=, not both")
    for name, flag in (("create_pr", create_pr), ("overwrite_card", overwrite_card)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{name} = {flag!r}: True or False")
    if create_pr and revision is not None:
        raise ConfigError("create_pr opens a pull request against the main branch: leave out revision (or push to the "
                          "branch revision without create_pr)")
    if revision is not None and (not isinstance(revision, str) or not revision.strip() or ".." in revision
                                 or revision.startswith(("/", "-", "refs/")) or revision.endswith(("/", ".lock"))
                                 or any(c.isspace() or c in "~^:?*[\\" or not c.isprintable() for c in revision)):
        raise ConfigError(f"revision = {revision!r}: the name of a branch to push to, e.g. 'dev' (None: main)")
    tags = [] if tags is None else tags
    if isinstance(tags, str) or not all(isinstance(t, str) and t.strip() and len(t) <= 100 for t in tags):
        raise ConfigError(f"tags = {tags!r}: a list of short strings, e.g. ['band-gap', 'perovskites']")
    found = None  # the metrics.json beside the folder the model was loaded from
    if metrics is None and metrics_file is None and model.meta.get("source") and Path(str(model.meta["source"])).is_dir():
        candidate = Path(str(model.meta["source"])) / "metrics.json"
        found = candidate if candidate.is_file() else None
    if metrics_file is not None or found is not None:
        metrics = read_metrics(metrics_file if metrics_file is not None else found)
    elif metrics is not None:
        metrics = check_metrics(metrics, "metrics")
    from . import __version__

    api = HfApi(endpoint=_endpoint(), token=token or os.environ.get("HF_TOKEN"), library_name="crystalzoo",
                library_version=__version__)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_pretrained(model, folder, extra=extra)  # extra: the keys save_pretrained(extra=…) adds to config.json
        if found is not None:  # only while the weights are still the folder's: trained further, they are not
            saved = found.parent / WEIGHTS_NAME
            if not saved.is_file() or sha256_file(saved) != sha256_file(folder / WEIGHTS_NAME):
                logger.warning("the model's weights differ from those in %s (trained further since it was loaded?): "
                               "its metrics.json is not uploaded; pass metrics= for these weights", found.parent)
                metrics = None
        if filename != WEIGHTS_NAME:
            (folder / WEIGHTS_NAME).rename(folder / filename)
        config = json.loads((folder / CONFIG_NAME).read_text())
        _no_local_paths(config.get("meta"))
        if metrics:
            metrics = dict(metrics)
            _no_local_paths(metrics)  # a fine-tune's metrics name its backbone, which may be a local folder
        config["weights_sha256"] = sha256_file(folder / filename)
        if filename != WEIGHTS_NAME:
            config["weights_file"] = filename  # load_model("hf-hub:…") reads the weights under this name
        # in a temporary folder that is uploaded whole or not at all; strict JSON (NaN → null)
        write_json(folder / CONFIG_NAME, config)
        card = _model_card(model, repo_id, config, metrics, tags)
        if metrics:
            write_json(folder / "metrics.json", metrics)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            if overwrite_card or _card_is_replaceable(api, repo_id, revision, Path(tmp) / "old-card"):
                (folder / "README.md").write_text(card)
            else:
                logger.warning("%s has a README.md that crystalzoo did not make (or whose author removed its "
                               "crystalzoo line): kept; pass overwrite_card=True (--overwrite-card) to replace it with "
                               "the card made from this model", repo_id)
            from huggingface_hub import CommitOperationAdd, CommitOperationDelete

            files = sorted(p for p in folder.iterdir() if p.is_file())
            stale = _stale_model_files(api, repo_id, revision, {p.name for p in files})
            info = api.create_commit(repo_id, [*(CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
                                                 for p in files),
                                               *(CommitOperationDelete(path_in_repo=name) for name in stale)],
                                     commit_message=commit_message, revision=revision, create_pr=create_pr)
        except Exception as exc:  # HTTP errors, broken connections (httpx), disk errors
            raise HubError(f"could not push to {repo_id} at {_endpoint()}: {exc}") from None
    if create_pr:
        logger.warning("opened a pull request on %s: %s", repo_id, info.pr_url)
    return info.oid
