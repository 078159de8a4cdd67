"""Ensembles: several models of one architecture and targets, trained with different seeds,
that predict together (``finetune(..., ensemble=5)``, ``crystalzoo finetune --ensemble 5``).

An ensemble predicts the mean over its members, gives their standard deviation on request
(``predict(..., return_std=True)``) and calibrated intervals that are wider where the members
disagree (``predict_interval``, :mod:`crystalzoo.uncertainty`). It is saved as one model
folder (one safetensors file, its tensors under ``members.0.…``, ``members.1.…``; one
``config.json`` with ``"ensemble": {"members": N}``), loads with ``load_model`` and pushes to
the Hub as one repo.

Example::

    >>> from crystalzoo import finetune
    >>> r = finetune("bundled:mp-band-gap", "band_gap", freeze=2, ensemble=3, train_size=200,
    ...              val_size=100, test_size=100, epochs=2, progress=False)
    >>> from crystalzoo import example_structures
    >>> mean, std = r.model.predict(example_structures()[:1], return_std=True)
    >>> mean.shape, std.shape
    ((1,), (1,))
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..graphs.settings import GraphSettings
from ..uncertainty import Calibration
from .crystal_model import (
    CrystalModel,
    calibration_in,
    config_format,
    model_from_config,
)
from .predictor import Predictor

#: most members an ensemble may have
MAX_MEMBERS = 32


def check_members(n: Any) -> int:
    """``n`` as the number of members of an ensemble (1 … :data:`MAX_MEMBERS`; 1 is a single
    model), else :class:`ConfigError`."""
    import numpy as np

    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_MEMBERS:
        raise ConfigError(f"ensemble = {n!r}: the number of models to train, an integer from 1 (a single model) to "
                          f"{MAX_MEMBERS}, e.g. 5")
    return int(n)


class CrystalEnsemble(Predictor):
    """Models of one architecture, graph settings and head that predict together: the mean of
    their predictions, their spread, calibrated intervals (:class:`~crystalzoo.models.Predictor`).

    Example::

        >>> from crystalzoo import load_model
        >>> ens = CrystalEnsemble([load_model("formation"), load_model("formation")])
        >>> from crystalzoo import example_structures
        >>> ens.predict(example_structures()[:1], return_std=True)[1]
        array([0.], dtype=float32)
    """

    def __init__(self, members: Sequence[CrystalModel], meta: dict[str, Any] | None = None,
                 calibration: Calibration | None = None):
        super().__init__()
        members = list(members)
        if not 2 <= len(members) <= MAX_MEMBERS or not all(isinstance(m, CrystalModel) for m in members):
            raise ConfigError(f"an ensemble takes 2 to {MAX_MEMBERS} CrystalModels, got "
                              f"{[type(m).__name__ for m in members][:5]}")
        seen: dict[int, int] = {}
        for i, m in enumerate(members):
            if id(m) in seen:
                raise ConfigError(f"member {i} is member {seen[id(m)]} again: an ensemble's members are different "
                                  "models (e.g. CrystalEnsemble([load_model(a), load_model(b)]), or finetune(..., "
                                  "ensemble=N))")
            seen[id(m)] = i
        first = _shape(members[0])
        for i, m in enumerate(members[1:], 1):
            other = _shape(m)
            if other != first:
                diff = sorted(k for k in first if first[k] != other.get(k))
                raise ConfigError(f"member {i} differs from member 0 in {diff}: an ensemble's members share the "
                                  "architecture, graph settings, targets and units")
        self.members = nn.ModuleList(members)
        self.meta = dict(meta if meta is not None else members[0].meta)
        self.calibration = calibration

    def member_models(self) -> list[CrystalModel]:
        return list(self.members)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CrystalEnsemble":
        """An untrained ensemble of the shape ``config`` describes: :func:`ensemble_from_config`."""
        return ensemble_from_config(config)

    @property
    def head(self) -> nn.Module:
        """The first member's head: targets, units, columns (every member's are the same)."""
        return self.members[0].head

    @property
    def graph_settings(self) -> GraphSettings:
        return self.members[0].graph_settings

    def forward(self, g) -> torch.Tensor:
        """The raw output of the mean prediction (normalised values, or the logits of the mean
        class probabilities)."""
        return self.head.combine([m(g) for m in self.members], [m.head for m in self.members])

    def embed(self, *args: Any, **kwargs: Any):
        raise ConfigError(f"an ensemble's {len(self.members)} members give different crystal vectors: embed with one "
                          "of them, e.g. model.members[0].embed(structures)")

    def to_config(self) -> dict[str, Any]:
        """The members' shared config, with ``"ensemble": {"members": N}`` (format 2, or 3 with a
        composition reference)."""
        self.check_own_calibration()  # never a config that does not load
        return {**_shape(self.members[0]), "format_version": config_format(self.members[0].head, ensemble=True),
                "ensemble": {"members": len(self.members)},
                **({"meta": self.meta} if self.meta else {}),
                **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {})}


def _shape(model: CrystalModel) -> dict[str, Any]:
    """A member's config without what is its own (``meta``, ``calibration``): what the members share."""
    return {k: v for k, v in model.to_config().items() if k not in ("meta", "calibration")}


def ensemble_from_config(config: dict[str, Any]) -> CrystalEnsemble:
    """An untrained :class:`CrystalEnsemble` of the shape ``config`` describes, checked as
    :func:`~crystalzoo.models.model_from_config` checks a single model's."""
    spec = config.get("ensemble")
    if spec is None:
        raise ConfigError("this config describes a single model, not an ensemble: load it with load_model or "
                          "CrystalModel.from_pretrained")
    if not isinstance(spec, dict) or set(spec) != {"members"}:
        raise ConfigError(f"'ensemble' must be an object {{\"members\": N}}, got {str(spec)[:80]}")
    n = check_members(spec["members"])
    if n < 2:
        raise ConfigError("an ensemble config has 2 or more members; a single model has no 'ensemble' key")
    single = {k: v for k, v in config.items() if k not in ("ensemble", "calibration")}
    members = [model_from_config(single) for _ in range(n)]
    return CrystalEnsemble(members, members[0].meta, calibration_in(config, members[0].head, ensemble=True))
