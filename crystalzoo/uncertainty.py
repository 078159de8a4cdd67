"""Calibrated prediction intervals: split-conformal calibration of a regression model.

A model is calibrated on crystals it was not trained on (``finetune`` uses its validation
split; ``model.calibrate(dataset)`` any labelled set). Each of those n crystals gives a
nonconformity score, its absolute error divided by the model's *scale* there:

* an ensemble: the standard deviation over its members plus a floor, the median of that
  standard deviation over the calibration crystals (so that no interval collapses where the
  members happen to agree, and intervals are wider where they disagree);
* a single model: 1 (every interval has the same width).

For a coverage c, the interval of a new crystal is ``prediction ± q · scale``, where q is the
⌈(n + 1) c⌉-th smallest score. When the new crystals are drawn like the calibration crystals
(exchangeable), at least a fraction c of them falls inside their intervals, whatever the
model (Vovk, Gammerman & Shafer 2005; Lei et al. 2018). Crystals unlike the calibration
set have no such guarantee: the measured coverage on other Materials Project crystals is in
docs/uncertainty.md.

This module is numpy only; the models use it (``predict_interval``, ``calibrate``).

Example::

    >>> import numpy as np
    >>> cal = calibration_from(np.zeros((99, 1)), None, np.arange(1.0, 100.0)[:, None], ["y"])
    >>> cal.quantile(0.9)  # the 90th of the 99 absolute errors 1 … 99
    array([90.])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError

#: scores kept per target; beyond it, every k-th order statistic (intervals stay valid, a bit wider)
MAX_SCORES = 4000
#: scores kept over all the targets together, so that config.json stays small (under its 1 MB limit: a
#: student of 64 targets calibrated on 3,474 crystals wrote 4 MB, which no longer loaded). Up to 10 targets
#: keep MAX_SCORES each; 64 keep 625 each
MAX_TOTAL_SCORES = 40_000


#: method name recorded in configs and model cards
METHOD = "split-conformal"


def max_scores(n_targets: int) -> int:
    """How many scores each of ``n_targets`` targets keeps at most."""
    return max(1, min(MAX_SCORES, MAX_TOTAL_SCORES // max(1, n_targets)))


def check_coverage(coverage: Any) -> float:
    """``coverage`` as a float in (0, 1), else :class:`ConfigError` with an example."""
    if isinstance(coverage, (bool, np.bool_)) or not isinstance(coverage, (int, float, np.integer, np.floating)) \
            or not 0 < float(coverage) < 1:
        raise ConfigError(f"coverage = {coverage!r}: the fraction of crystals an interval should hold, a number "
                          "between 0 and 1 (both excluded), e.g. 0.9")
    return float(coverage)


@dataclass
class Calibration:
    """The sorted nonconformity scores of a regression model's calibration crystals, per target.

    ``counts[t]``: crystals with a label for target t (n; 0: no interval for it); ``scores[t]``: their sorted scores,
    or every k-th order statistic of them when there are more than :func:`max_scores` (4,000
    for up to 10 targets);
    ``floor``: per target, what is added to the ensemble's standard deviation (``None``: a
    single model, constant width); ``split``: where the crystals came from.
    """

    targets: list[str]
    counts: list[int]
    scores: list[list[float]]
    floor: list[float] | None
    split: str = "validation"

    @property
    def scaled(self) -> bool:
        """Whether intervals scale with the ensemble's standard deviation."""
        return self.floor is not None

    def quantile(self, coverage: float) -> np.ndarray:
        """q per target: ``prediction ± q · scale`` holds ``coverage`` of the crystals.
        :class:`ConfigError` when a target has too few calibration crystals for it."""
        coverage = check_coverage(coverage)
        q = []
        for target, n, scores in zip(self.targets, self.counts, self.scores):
            k = math.ceil((n + 1) * coverage - 1e-9)  # the rank of the score: 1 … n
            if k > n:
                need = math.ceil(coverage / (1 - coverage) - 1e-9)
                raise ConfigError(f"coverage {coverage:g} needs at least {need} calibration crystals with a {target} "
                                  f"label; this model was calibrated on {n}: ask for a lower coverage, or calibrate "
                                  "on more crystals (model.calibrate(dataset))")
            m = len(scores)
            q.append(scores[math.ceil(k * m / n - 1e-9) - 1])  # thinned: the stored rank at or above k
        return np.asarray(q, dtype=np.float64)

    def interval(self, mean: np.ndarray, std: np.ndarray | None, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) around ``mean`` (n, T) for ``coverage``; ``std`` (n, T) is the
        ensemble's spread (needed when the calibration is scaled)."""
        q = self.quantile(coverage)
        half = q * (std + np.asarray(self.floor)) if self.scaled else np.broadcast_to(q, mean.shape)
        return mean - half, mean + half

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in a model's ``config.json``."""
        return {"method": METHOD, "split": self.split, "targets": list(self.targets), "counts": list(self.counts),
                "scale": "ensemble std + floor" if self.scaled else "constant",
                **({"floor": [float(f) for f in self.floor]} if self.scaled else {}),
                "scores": [list(col) for col in self.scores]}

    @classmethod
    def from_dict(cls, d: Any, targets: Sequence[str]) -> "Calibration":
        """A calibration from ``config.json`` for a model of ``targets``, every value checked
        (:class:`ConfigError`)."""
        if not isinstance(d, dict) or d.get("method") != METHOD:
            raise ConfigError(f"'calibration' must be an object with method {METHOD!r}, got {str(d)[:80]}")
        unknown = sorted(set(map(str, d)) - {"method", "split", "targets", "counts", "scale", "floor", "scores"})
        if unknown:
            raise ConfigError(f"calibration has unknown keys {unknown}; valid: method, split, targets, counts, scale, "
                              "floor, scores")
        if d.get("targets") != list(targets):
            raise ConfigError(f"the calibration is for the targets {d.get('targets')!r}, the model predicts "
                              f"{list(targets)}")
        counts, scores, floor = d.get("counts"), d.get("scores"), d.get("floor")
        t = len(targets)
        if not (isinstance(counts, list) and len(counts) == t and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
            raise ConfigError(f"calibration 'counts' must hold one count >= 0 per target, got {str(counts)[:80]}")
        if not (isinstance(scores, list) and len(scores) == t):
            raise ConfigError("calibration 'scores' must hold one list per target")
        checked, most = [], max_scores(t)
        for n, col in zip(counts, scores):
            ok = isinstance(col, list) and len(col) == min(n, most) and all(_bounded(s) for s in col)
            if not ok or any(a > b for a, b in zip(col, col[1:])):
                raise ConfigError("calibration 'scores' must be sorted lists of numbers from 0 to float32's largest, "
                                  f"one per calibration crystal (its 'counts'), or {most} of them for more "
                                  "crystals")
            checked.append([float(s) for s in col])
        if floor is not None and not (isinstance(floor, list) and len(floor) == t and all(
                _bounded(f) and f > 0 for f in floor)):
            raise ConfigError(f"calibration 'floor' must hold one number > 0 per target, got {str(floor)[:80]}")
        scale = d.get("scale", "ensemble std + floor" if floor is not None else "constant")
        if scale != ("ensemble std + floor" if floor is not None else "constant"):
            raise ConfigError(f"calibration 'scale' {scale!r} does not fit its 'floor' {floor!r}: 'ensemble std + floor' "
                              "has a floor per target, 'constant' none")
        split = d.get("split", "validation")
        if not isinstance(split, str):
            raise ConfigError(f"calibration 'split' must be a name, got {split!r}")
        return cls(list(targets), list(counts), checked, None if floor is None else [float(f) for f in floor], split)


#: the largest score or floor a calibration may hold: the float32 range of labels and predictions
MAX_SCORE = float(np.finfo(np.float32).max)


def _bounded(value: Any) -> bool:
    """Whether ``value`` is a number in [0, :data:`MAX_SCORE`] (an integer too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return 0 <= float(value) <= MAX_SCORE
    except OverflowError:
        return False


def _round_up(v: float) -> float:
    """``v`` to 6 significant digits, never below it (an interval never narrows by the rounding)."""
    r = float(f"{v:.6g}")
    return r if r >= v else float(f"{v + 10 ** (math.floor(math.log10(v)) - 5):.6g}")


def _thin(sorted_scores: np.ndarray, m: int) -> list[float]:
    """At most ``m`` order statistics: ranks ⌈j n / m⌉, j = 1 … m."""
    n = len(sorted_scores)
    if n <= m:
        return sorted_scores.tolist()
    ranks = np.ceil(np.arange(1, m + 1) * n / m - 1e-9).astype(int)
    return sorted_scores[ranks - 1].tolist()


def calibration_from(mean: np.ndarray, std: np.ndarray | None, labels: np.ndarray, targets: Sequence[str],
              split: str = "validation") -> Calibration:
    """A :class:`Calibration` from predictions ``mean`` (n, T), the ensemble's ``std`` (n, T;
    ``None`` for a single model) and ``labels`` (n, T; NaN where a crystal has no label).
    Models call it from ``model.calibrate(dataset)``."""
    mean, labels = np.asarray(mean, np.float64), np.asarray(labels, np.float64)
    counts, scores, floor = [], [], []
    for t, target in enumerate(targets):
        have = ~np.isnan(labels[:, t])
        if not have.any():  # no interval for this target (quantile says so); the others are calibrated
            counts.append(0)
            scores.append([])
            floor.append(1.0)
            continue
        err = np.abs(labels[have, t] - mean[have, t])
        if std is not None:
            s = np.asarray(std, np.float64)[have, t]
            f = float(np.median(s))
            if not f > 0:  # every member agrees on most crystals (e.g. identical members): no scale to use
                f = float(np.mean(s)) if np.mean(s) > 0 else 1.0
            floor.append(f)
            err = err / (s + f)
        if not np.isfinite(err).all():
            raise ConfigError(f"the model's predictions of {target} on the calibration crystals are not finite")
        counts.append(int(have.sum()))
        scores.append([_round_up(v) for v in _thin(np.sort(err), max_scores(len(targets)))])  # as config.json keeps them
    return Calibration(list(targets), counts, scores, floor if std is not None else None, split)


def weights_digest(model: Any) -> str | None:
    """A digest of every weight and buffer of the torch module ``model``, by value: the same
    after ``model.to(device)`` or ``model.double()``, another after any training step,
    ``load_state_dict`` or edit; ``None`` while it is on the meta device (being built). A
    calibration holds for the weights it was made with only
    (:meth:`~crystalzoo.models.predictor.Predictor.check_own_calibration`).

    Example::

        >>> from crystalzoo import load_model
        >>> weights_digest(load_model("formation")) == weights_digest(load_model("formation").double())
        True
    """
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        if tensor.is_meta:
            return None
        value = tensor.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        digest.update(name.encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()
