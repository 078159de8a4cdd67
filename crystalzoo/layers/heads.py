"""Heads: crystal vector → predictions. :class:`RegressionHead` keeps the target normaliser and units;
:class:`ClassificationHead` gives class logits."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..checks import MAX_FEATURES, MAX_OUTPUTS, check_count
from ..errors import ConfigError, CrystalZooError, DataError
from ..losses import check_loss


class RegressionHead(nn.Module):
    """Linear layer to one value per target, de-normalised into the target's units."""

    def __init__(self, in_features: int, targets: Sequence[str], units: Sequence[str] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 composition_reference: int = 0):
        super().__init__()
        self.targets = check_names(targets, "targets")
        self.units = check_names(units, "units") if units is not None else [""] * len(self.targets)
        if len(self.units) != len(self.targets):
            raise ConfigError(f"{len(self.targets)} targets but {len(self.units)} units: give one unit per target")
        n = len(self.targets)
        self.fc_out = nn.Linear(in_features, n)
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0] * n, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0] * n, dtype=torch.float32))
        #: a linear term of the crystal's mean element features (its composition), added to the
        #: output: per-element reference values (fitted by least squares on the training split)
        self.reference = nn.Linear(composition_reference, n, bias=False) if composition_reference else None
        if self.reference is not None:
            nn.init.zeros_(self.reference.weight)

    task = "regression"

    def forward(self, x: torch.Tensor, composition: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised outputs (what the loss sees); :meth:`denormalize` turns them into units.
        ``composition``: the crystals' mean element features, for a head with a composition
        reference (:meth:`~crystalzoo.models.crystal_model.CrystalModel.forward` gives them)."""
        out = self.fc_out(x)
        if self.reference is not None:
            if composition is None:
                raise CrystalZooError("this head has a composition reference and needs the crystals' mean element "
                                      "features: call the model on the graph (model(g)), which gives them")
            out = out + self.reference(composition)
        return out

    def denormalize(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.std + self.mean

    def normalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean) / self.std

    def to_units(self, out: torch.Tensor) -> torch.Tensor:
        """Outputs → predictions in the targets' units."""
        return self.denormalize(out)

    def loss(self, out: torch.Tensor, y: torch.Tensor, kind: str = "mse") -> torch.Tensor:
        """Mean squared (``kind="mse"``) or absolute (``"l1"``) error on the normalised targets,
        over every label of the batch; missing labels (NaN) are left out."""
        check_loss(kind)
        mask = ~torch.isnan(y)
        diff = out - self.normalize(torch.nan_to_num(y))
        return ((diff ** 2 if kind == "mse" else diff.abs()) * mask).sum() / mask.sum().clamp(min=1)

    def errors(self, pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Per crystal and target: |prediction − label| (NaN where the label is missing)."""
        return (pred - y).abs().cpu().numpy()

    def scores(self, errors: np.ndarray) -> dict[str, float]:
        """``mae_TARGET`` for each target (NaN where no label) and ``mae``, their mean over the scored ones."""
        result = {}
        for j, t in enumerate(self.targets):
            col = errors[:, j][~np.isnan(errors[:, j])]
            result[f"mae_{t}"] = float(col.mean()) if len(col) else float("nan")
        scored = [result[f"mae_{t}"] for t in self.targets if not math.isnan(result[f"mae_{t}"])]
        result["mae"] = float(np.mean(scored)) if scored else float("nan")
        return result

    def check_labels(self, labels: np.ndarray, ids: Sequence[str], what: str) -> None:
        """Any finite number (or NaN, a missing label) is a regression label: nothing to check."""

    def columns(self) -> list[str]:
        """The names of the prediction columns, with units."""
        return [f"{t} ({u})" if u else t for t, u in zip(self.targets, self.units)]

    def as_returned(self, pred: np.ndarray) -> np.ndarray:
        """What ``predict`` returns: shape (n,) for one target, (n, n_targets) for several."""
        return pred[:, 0] if pred.shape[1] == 1 else pred

    def combine(self, outs: Sequence[torch.Tensor], heads: Sequence["RegressionHead"] | None = None) -> torch.Tensor:
        """The raw output of an ensemble's mean prediction, normalised as this head normalises:
        the mean of the members' outputs where they share this head's normaliser (it is affine),
        else the mean of their predictions in the targets' units (each member's ``heads[i]``
        de-normalising its own output), normalised by this head."""
        outs = list(outs)
        if heads is None or all(torch.equal(h.mean, self.mean) and torch.equal(h.std, self.std) for h in heads):
            return torch.stack(outs).mean(0)
        return self.normalize(torch.stack([h.denormalize(o) for h, o in zip(heads, outs)]).mean(0))

    def to_config(self) -> dict[str, Any]:
        return {"task": "regression", "targets": self.targets, "units": self.units,
                **({"composition_reference": self.reference.in_features} if self.reference is not None else {})}


class ClassificationHead(nn.Module):
    """Dropout then a linear layer to class logits (the original CGCNN classifier)."""

    task = "classification"

    def __init__(self, in_features: int, classes: Sequence[str], target: str = "class", dropout: float = 0.5):
        super().__init__()
        self.classes = check_names(classes, "classes", minimum=2)
        self.targets = check_names([target], "targets")
        self.dropout_p = dropout
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(in_features, len(self.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.dropout(x))

    def to_units(self, out: torch.Tensor) -> torch.Tensor:
        """Logits → class probabilities."""
        return torch.softmax(out, dim=1)

    def loss(self, out: torch.Tensor, y: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """Cross-entropy of the class labels (column 0 of ``y``). ``kind`` is a regression's
        setting, which a classifier does not have (training refuses ``loss="l1"`` for one)."""
        return nn.functional.cross_entropy(out, y[:, 0].long())

    def errors(self, pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Per crystal: 1 where the most probable class is the label, else 0."""
        return (pred.argmax(1) == y[:, 0].long()).float().cpu().numpy()[:, None]

    def scores(self, errors: np.ndarray) -> dict[str, float]:
        return {"accuracy": float(errors.mean())}

    def check_labels(self, labels: np.ndarray, ids: Sequence[str], what: str) -> None:
        """Every label must be one of the classes 0 … C-1 (:class:`DataError` naming the crystal)."""
        y = labels[:, 0]
        n = len(self.classes)
        for i in np.flatnonzero(np.isnan(y) | (y != np.round(y)) | (y < 0) | (y >= n))[:1]:
            crystal, v = ids[i], float(y[i])
            if np.isnan(v):
                raise DataError(f"crystal {crystal!r} of {what} has no class label; a classifier needs one for every "
                                "crystal")
            if v != round(v) or v < 0:
                raise DataError(f"label {v:g} of crystal {crystal!r} in {what} is not a class: classification labels "
                                "are the integers 0 … C-1")
            raise DataError(f"class {int(v)} (crystal {crystal!r}) is in {what} but not in the training split, whose "
                            f"classes are 0 … {n - 1}: the model cannot predict it. Use more data or another seed, "
                            "so that every class is in the training split")

    def columns(self) -> list[str]:
        """The names of the prediction columns: the class probabilities."""
        return list(self.classes)

    def as_returned(self, pred: np.ndarray) -> np.ndarray:
        """What ``predict`` returns: the class probabilities, shape (n, n_classes)."""
        return pred

    def combine(self, outs: Sequence[torch.Tensor], heads: Sequence[nn.Module] | None = None) -> torch.Tensor:
        """The logits of an ensemble's mean class probabilities (``heads``: the members', which a
        classifier's probabilities do not depend on)."""
        return torch.stack([torch.softmax(o, dim=1) for o in outs]).mean(0).log()

    def to_config(self) -> dict[str, Any]:
        return {"task": "classification", "targets": self.targets, "classes": self.classes,
                "dropout": self.dropout_p}


def check_names(value: Any, what: str, minimum: int = 1) -> list[str]:
    """A list of ``minimum`` to ``MAX_OUTPUTS`` strings (targets, units, classes; a tuple is
    taken as a list), else :class:`ConfigError`."""
    value = list(value) if isinstance(value, tuple) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) \
            or not minimum <= len(value) <= MAX_OUTPUTS:
        raise ConfigError(f"head {what} must be a list of {minimum} to {MAX_OUTPUTS} strings, got {str(value)[:80]}")
    for v in value:  # names go into tables, file headers and the model card's YAML: one printable line each
        if any(not ch.isprintable() for ch in v):
            raise ConfigError(f"head {what} {v!r} holds a line break or another control character; give a name on "
                              "one line (e.g. 'band_gap')")
    return value


def make_head(config: dict[str, Any], in_features: int) -> nn.Module:
    """A head from its config dict (``{"task": "regression", "targets": [...], "units": [...]}``),
    checked (types, at most ``MAX_OUTPUTS`` outputs) before it is built."""
    if not isinstance(config, dict):
        raise ConfigError(f"head config must be a JSON object, got {type(config).__name__}")
    task = config.get("task")
    if task == "regression":
        reference = config.get("composition_reference") or 0  # absent or null: none
        check_count(reference, "head composition_reference (atom features)", 0, MAX_FEATURES)
        return RegressionHead(in_features, config.get("targets"), config.get("units"),
                              composition_reference=reference)
    if task == "classification":
        target = check_names(config.get("targets", ["class"]), "targets")
        dropout = config.get("dropout", 0.5)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"head dropout must be a number in [0, 1), got {dropout!r}")
        return ClassificationHead(in_features, config.get("classes"), target[0], dropout)
    raise ConfigError(f"unknown head task {task!r}; valid: 'regression', 'classification'")


def _deprecated_config(self) -> dict[str, Any]:
    """Deprecated (crystalzoo 0.2.0): ``head.to_config()``."""
    warnings.warn("head.config() is deprecated: use head.to_config()", DeprecationWarning, stacklevel=2)
    return self.to_config()


RegressionHead.config = ClassificationHead.config = _deprecated_config
