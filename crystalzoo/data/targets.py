"""Targets and labels: names, transforms (``log10:k_vrh``), checks, split sizes."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..checks import short
from ..errors import ConfigError, DataError

#: largest magnitude a label may have: labels are trained in float32
MAX_LABEL = float(np.finfo(np.float32).max)


#: spellings of a missing label in a CSV file (as pandas reads them)
MISSING = {"", "nan", "na", "n/a", "null", "none", "-nan"}


def target_list(targets: Any) -> list:
    """Targets as a list: one name given as a string is one target (never its characters)."""
    return [targets] if isinstance(targets, str) else list(targets)


def split_target(spec: str) -> tuple[str, str, str | None]:
    """``"log10:k_vrh"`` → (label name ``log10_k_vrh``, column ``k_vrh``, transform ``log10``)."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"a target is the name of a label column (a string), got {spec!r}")
    transform, sep, column = spec.partition(":")
    if not sep:
        return spec, spec, None
    if transform != "log10":
        raise DataError(f"unknown target transform {transform!r} in {spec!r}; valid: 'log10:COLUMN'")
    if not column.strip():
        raise ConfigError(f"target {spec!r} names no column: write log10:COLUMN, e.g. log10:k_vrh")
    return f"log10_{column}", column, transform


def as_read(targets: list[str], has: Callable[[str], bool]) -> list[str]:
    """``targets`` with the label name of a transformed target (``log10_k_vrh``) read as its
    transform (``log10:k_vrh``) where the table has no such column but has its source: so that
    ``targets=model.targets`` reads a model's labels from a table like the one it was trained on
    (the documented ``model.calibrate(CrystalDataset.from_jsonl(path, targets=model.targets))``).

    Example::

        >>> as_read(["log10_k_vrh", "band_gap"], {"k_vrh", "band_gap"}.__contains__)
        ['log10:k_vrh', 'band_gap']
    """
    return [f"log10:{t[len('log10_'):]}" if ":" not in t and t.startswith("log10_") and not has(t)
            and has(t[len("log10_"):]) else t for t in targets]


def transformed(values: np.ndarray, transforms: list[str | None]) -> np.ndarray:
    """Apply per-column transforms to checked float labels; log10 of a value <= 0 is missing."""
    out = values.copy()
    for j, t in enumerate(transforms):
        if t == "log10":
            col = out[:, j]
            col[~(col > 0)] = np.nan
            out[:, j] = np.log10(col)
    return out


def check_labels(values: np.ndarray, targets: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    out = np.full(values.shape, np.nan, dtype=np.float64)
    for (i, j), v in np.ndenumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise DataError(f"label {targets[j]!r} of {ids[i]!r} is {short(v)}, not a number")
        try:
            x = float(v)
        except OverflowError:  # an integer beyond any float
            x = float("inf")
        if not np.isfinite(x):
            raise DataError(f"label {targets[j]!r} of {ids[i]!r} is {str(v)[:40]}: labels must be finite (or missing)")
        if abs(x) > MAX_LABEL:
            raise DataError(
                f"label {targets[j]!r} of {ids[i]!r} is {x:.3g}, beyond float32's range (±{MAX_LABEL:.3g}) that "
                "training uses: rescale the target (other units, or a 'log10:COLUMN' target)"
            )
        out[i, j] = x
    return out


def check_split_size(name: str, value: Any) -> int | float:
    """A split size as the CLI and the API both read it: an integer ≥ 0 is a count of
    crystals, a number strictly between 0 and 1 a fraction of the data. Anything else is a
    :class:`ConfigError` naming ``name``: ``1.0`` (one crystal or all of them? say ``1`` or
    give a fraction below 1), other non-integral numbers, negatives, NaN, booleans, text.

    Example::

        >>> check_split_size("train_size", 100), check_split_size("train_size", 0.8)
        (100, 0.8)
    """
    how = "a split size is a count of crystals (an integer, e.g. 1000) or a fraction of the data between 0 and 1 (e.g. 0.8)"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} = {value!r}: {how}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ConfigError(f"{name} = {value}: a count of crystals cannot be negative; {how}")
        return int(value)
    if not 0 < value < 1:
        if value == 1:
            what = "1.0 could mean one crystal or all of them"
        elif value > 1 and float(value).is_integer():
            what = f"a count is written as an integer ({int(value)}), a fraction is below 1"
        else:
            what = "it is neither an integer nor a fraction"
        raise ConfigError(f"{name} = {value!r}: {what}; {how}")
    return float(value)
