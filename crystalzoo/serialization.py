"""Weights on disk: safetensors files (never pickles), their sha256, and model folders
(``model.safetensors`` + ``config.json``, the layout crystalzoo pushes to the Hub)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch

from .errors import ConfigError, WeightsError
from .files import finite, atomic_write, check_small_file, write_json

#: most parameters a model built from a config may have (about 200 MB in float32; the
#: registered models have about 0.1 million)
MAX_PARAMETERS = 50_000_000
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: what a training run writes beside its model (crystalzoo.training)
RUN_RECORDS = ("checkpoint.pt", "history.json", "metrics.json")
#: largest weights file read: MAX_PARAMETERS float64 values and a header
MAX_WEIGHTS_BYTES = 8 * MAX_PARAMETERS + 1_000_000


def save_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write the model's state dict as safetensors (atomically)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp))


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a safetensors file (callers verify its sha256 where it came from:
    ``registry.weights_file``, ``hub.fetch_registered``, ``hub.fetch_model_repo``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} is not a regular file (a folder, FIFO or device)" if path.exists()
                           else f"weights file {path} does not exist")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise WeightsError(f"weights file {path} has {path.stat().st_size:,} bytes, more than a crystalzoo model "
                           f"may have ({MAX_WEIGHTS_BYTES:,}: {MAX_PARAMETERS:,} parameters in float64); not loaded")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise WeightsError(f"weights file {path} holds NaN or infinite values in {', '.join(bad[:5])}"
                           f"{' …' if len(bad) > 5 else ''}: such weights predict NaN; use weights of a run that did "
                           "not diverge")
    return state


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
              drop: Iterable[str] = ()) -> None:
    """Strict loading: every key must match in name and shape, except keys under the
    prefixes in ``drop`` (for example ``"head."`` when a new head replaces the old one)."""
    drop = tuple(drop)
    state = {k: v for k, v in state.items() if not k.startswith(drop)} if drop else state
    check_fits(model, state, source, drop)
    model.load_state_dict(state, strict=not drop)


def check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, drop: tuple[str, ...] = ()) -> None:
    """:class:`WeightsError` unless ``state`` has exactly the tensors (names and shapes) of
    ``model`` outside the prefixes in ``drop``. ``model`` may live on the meta device."""
    state = {k: v for k, v in state.items() if not k.startswith(drop)} if drop else state
    own = model.state_dict()
    expected = {k for k in own if not k.startswith(drop)} if drop else set(own)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append("wrong shape " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]))
        raise WeightsError(
            f"weights from {source} do not fit the architecture in its config: "
            + "; ".join(parts)
        )


def is_model(obj: Any) -> bool:
    """Whether ``obj`` is a crystalzoo model (a ``CrystalModel`` or ``CrystalEnsemble``), told
    without importing :mod:`crystalzoo.models` (which imports this module)."""
    return isinstance(obj, torch.nn.Module) and hasattr(obj, "member_models") and hasattr(obj, "to_config")


def save_pretrained(model: torch.nn.Module, folder: str | os.PathLike, extra: dict[str, Any] | None = None,
                    overwrite: bool = False) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder``; returns the folder. A
    model already there is replaced; a training run's folder (with its checkpoint, history or
    metrics) only with ``overwrite=True``.

    Example::

        >>> from crystalzoo import load_model
        >>> save_pretrained(load_model("formation"), "/tmp/my-model")
        PosixPath('/tmp/my-model')
    """
    if not is_model(model):
        raise ConfigError(f"save_pretrained takes a CrystalModel (a backbone with its head) or a CrystalEnsemble, got "
                          f"a {type(model).__name__}; for a backbone, make a model with a head first")
    model.check_own_calibration(weights=True)  # never scores of other weights
    own = model.to_config()
    if extra is not None and not isinstance(extra, dict):
        raise ConfigError(f"extra= takes a dict of JSON values to add to config.json, not a {type(extra).__name__}")
    taken = sorted(set(extra or {}) & {*own, "format_version", "meta", "weights_sha256", "weights_file", "calibration",
                                       "ensemble", "architecture", "backbone", "graph", "head"})
    if taken:
        raise ConfigError(f"extra= would set the model's own config keys {taken}; they describe the weights "
                          "and are written from the model (a calibration: model.calibrate(dataset) or "
                          "model.calibration = …; notes under other keys, e.g. extra={'notes': …})")
    if isinstance(folder, str) and not folder.strip():
        raise ConfigError("the folder name is empty; give the model's folder, e.g. save_pretrained(model, 'my-model') "
                          "('.' for the current folder)")
    config = {**own, **(extra or {})}
    try:  # the config is checked before anything is written: weights never go beside another model's config
        json.dumps(finite(config), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the model's config cannot be written as JSON ({exc}); extra= takes JSON values "
                          "(strings, numbers, lists, dicts)") from None
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file: save_pretrained writes a model folder (model.safetensors and "
                          "config.json); give the folder's name")
    run = [name for name in RUN_RECORDS if (folder / name).exists()]
    if run and not overwrite:
        raise ConfigError(f"{folder} holds a training run ({', '.join(run)}): saving another model there would leave "
                          "the run's records beside weights they do not describe. Save elsewhere, or pass "
                          "overwrite=True")
    save_weights(model, folder / WEIGHTS_NAME)  # creates the folder (a failure is a WriteError)
    write_json(folder / CONFIG_NAME, config)
    return folder


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in a model's ``config.json``: :class:`WeightsError` when it is missing
    or not JSON, :class:`ConfigError` naming the file when it is not an object or too large.
    Its values are checked by :func:`~crystalzoo.models.builder.build_model`."""
    path = Path(path)
    check_small_file(path, f"{path} (a crystalzoo {CONFIG_NAME} is a small JSON file)")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path} does not exist: a crystalzoo model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers, deep nesting
        raise WeightsError(f"{path} is not valid JSON ({str(exc)[:200]})") from None
    except OSError as exc:
        raise WeightsError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: holds a JSON {type(config).__name__}, not an object; a crystalzoo "
                          f"{CONFIG_NAME} is an object with 'backbone', 'graph' and 'head'")
    return config
