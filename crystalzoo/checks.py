"""Generic checks of user-given values, in one place: counts, numbers of jobs, plain Python numbers,
short quotes of bad values, and the limits of a model's config (docs/robustness.md).

Example::

    >>> check_count(3, "epochs")
    3
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from .errors import ConfigError, DataError


def real_number(value: Any, name: str) -> float:
    """``value`` as a finite float, or :class:`ConfigError` naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_count(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum], or :class:`ConfigError` saying the range.

    Example::

        >>> check_count(64, "batch_size")
        64
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum \
        and (maximum is None or value <= maximum)
    if not ok:
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


#: most graph-building processes (``n_jobs``): more than a machine's cores only adds start-up
#: time and memory, and thousands of forked processes bring a machine to a halt
MAX_JOBS = 256


def check_jobs(n_jobs: Any) -> int:
    """The number of graph-building processes: an integer from 1 to ``MAX_JOBS``, or -1 for one
    per core."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) \
            or not (1 <= n_jobs <= MAX_JOBS or n_jobs == -1):
        raise ConfigError(f"n_jobs must be a number of processes from 1 to {MAX_JOBS} (this machine has "
                          f"{os.cpu_count()} cores) or -1 (one per core), got {n_jobs!r}")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


def check_finite_predictions(out: np.ndarray, what: str = "predicts a value", offset: int = 0) -> None:
    """Predictions ``out`` (members, crystals, …) all finite, else :class:`WeightsError` naming
    how many crystals and the first (numbered from ``offset`` + 1): a NaN is never handed on
    as a prediction (``what``: what the model gives, for the message)."""
    if out.size == 0:
        return
    bad = ~np.isfinite(out).reshape(out.shape[0], out.shape[1], -1).all(axis=(0, 2))
    if bad.any():
        from .errors import WeightsError

        raise WeightsError(f"the model {what} that is not finite for {int(bad.sum())} of {len(bad)} crystals (the "
                           f"first: crystal {offset + int(np.argmax(bad)) + 1}): its weights are broken, e.g. by a "
                           "training that diverged, or overflow in half precision. Use the weights as they were saved "
                           "(load_model), or train again with a lower learning rate")


def plain(value: Any) -> Any:
    """``value`` as a Python number where it is a numpy one (JSON cannot hold those); anything
    else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def python_numbers(settings: Any) -> None:
    """Turn the numpy numbers among the fields of a (frozen) settings dataclass into Python
    numbers, in place: what its ``__post_init__`` calls first."""
    for f in dataclasses.fields(settings):
        object.__setattr__(settings, f.name, plain(getattr(settings, f.name)))


def class_labels(labels: np.ndarray, target: str, needs: str, least: int = 2) -> np.ndarray:
    """The finite ``labels`` of ``target`` as integer classes, for ``needs`` (what uses them,
    e.g. ``"the H-score"``): :class:`DataError` unless they are whole numbers of ``least``
    classes or more.

    Example::

        >>> class_labels(np.array([0.0, 1.0, 1.0]), "is_metal", "a classifier").tolist()
        [0, 1, 1]
    """
    whole = np.isfinite(labels) & (labels == np.round(labels)) & (np.abs(labels) < 2**31)
    if not whole.all():
        raise DataError(f"task='classification' needs class labels (0, 1, …); {target} has values such as "
                        f"{labels[np.flatnonzero(~whole)[0]]:g}: use task='regression'")
    labels = labels.astype(np.int64)
    if len(np.unique(labels)) < least:
        raise DataError(f"every crystal has the {target} class {labels[0]}: {needs} needs {least} classes or more")
    return labels


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for a one-line message (a label column holding CIF texts)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: limits of a model's config (docs/robustness.md, "Models and configs"); the registered
#: models have 64 atom features, 4 convolutions, 32 hidden features, 1 hidden layer
MAX_FEATURES = 1024  # atom_fea_len, h_fea_len


MAX_LAYERS = 32  # n_conv, n_h


MAX_HEADS = 64


MAX_OUTPUTS = 1024  # targets of a regression head, classes of a classifier
