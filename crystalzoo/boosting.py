"""Gradient boosting on frozen crystal vectors and composition descriptors, tuned on a
validation split (``pip install "crystalzoo[sklearn]"``).

On 1,000 band gaps this is the best path the small-data suite has measured: the pooled
vectors of ``combined`` with the composition descriptors of :mod:`crystalzoo.composition` in
scikit-learn's ``HistGradientBoostingRegressor`` (docs/which_backbone.md, from
``benchmarks/small_data.py``). The backbones stay as they were pretrained; only the booster
learns, so a fit takes seconds once the vectors are computed.

Example::

    >>> import pytest; _ = pytest.importorskip("sklearn")  # the [sklearn] extra
    >>> from crystalzoo import CrystalDataset
    >>> from crystalzoo.boosting import fit_booster
    >>> from crystalzoo.data import bundled_dataset
    >>> ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=60,
    ...                                progress=False)
    >>> booster = fit_booster(ds.subset(range(40)), ds.subset(range(40, 60)), grid=[{"max_iter": 50}])
    >>> booster.predict(ds.subset(range(3))).shape
    (3,)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, DataError, MissingExtraError

#: the settings tried, each fitted on the training split and scored on the validation split
#: (those of the small-data suite's ``…+hgb`` methods)
GRID: tuple[dict[str, Any], ...] = tuple(
    {"max_leaf_nodes": leaves, "learning_rate": rate, "max_iter": n}
    for leaves in (15, 31) for rate in (0.03, 0.1) for n in (300, 1000))


@dataclass
class Booster:
    """A booster fitted by :func:`fit_booster`. ``predict(crystals)`` gives one value per crystal
    (a class for ``task="classification"``); ``setting`` is the grid entry that did best on the
    validation split, ``val_score`` its validation MAE (or accuracy)."""

    target: str
    task: str
    backbones: list[str]
    kind: str
    composition: bool
    setting: dict[str, Any]
    val_score: float
    estimator: Any = field(repr=False)
    models: list[Any] = field(repr=False, default_factory=list)

    def features(self, crystals: Any) -> np.ndarray:
        """The booster's input for ``crystals`` (a ``CrystalDataset``, or structures, CIF paths or
        CIF texts): each backbone's frozen vectors side by side, the first with the composition."""
        return _features(self.models, crystals, self.kind, self.composition)

    def predict(self, crystals: Any) -> np.ndarray:
        """One prediction per crystal of ``crystals`` (as for :meth:`features`)."""
        return self.estimator.predict(self.features(crystals))


def _features(models: list[Any], crystals: Any, kind: str, composition: bool) -> np.ndarray:
    from .data.dataset import CrystalDataset
    from .embeddings import embed

    blocks = []
    for i, backbone in enumerate(models):
        view = crystals.with_atom_features(backbone.graph_settings.atom_features) \
            if isinstance(crystals, CrystalDataset) else crystals  # each family reads its own atom features
        blocks.append(embed(backbone, view, kind=kind, composition=composition and i == 0))
    return np.concatenate(blocks, axis=1)


def _labels(dataset: Any, what: str) -> tuple[Any, np.ndarray]:
    """The labelled crystals of ``dataset`` (one target) and their labels."""
    from .training.batches import check_dataset

    check_dataset(dataset, what)
    if len(dataset.targets) != 1:
        raise ConfigError(f"a booster predicts one target; {what} has {dataset.targets}: pick one with "
                          f"{what}.select_targets([NAME])")
    labelled = np.flatnonzero(~np.isnan(dataset.labels[:, 0]))
    if len(labelled) < 2:
        raise DataError(f"{what} has {len(labelled)} crystals with a {dataset.targets[0]} label: a booster needs "
                        "at least 2")
    return dataset.subset(labelled), dataset.labels[labelled, 0]


def fit_booster(train: Any, val: Any, *, backbones: str | Sequence[str] = "combined", kind: str = "pooled",
                composition: bool = True, task: str = "regression", grid: Sequence[dict[str, Any]] = GRID,
                seed: int = 0) -> Booster:
    """Fit scikit-learn's histogram gradient boosting on the frozen vectors of ``backbones``
    (registered names, ``hf-hub:…`` or model folders; several side by side) plus, with
    ``composition=True``, the crystal's composition descriptors, for the one target of
    ``train`` (a ``CrystalDataset``); each setting of ``grid`` is fitted on ``train``, and the one
    with the best MAE (accuracy for ``task="classification"``) on ``val`` is kept. Crystals
    without a label are left out. ``kind``: ``"pooled"`` (the default, best in the suite) or
    ``"hidden"``. Returns a :class:`Booster`.

    Example::

        >>> import pytest; _ = pytest.importorskip("sklearn")
        >>> from crystalzoo import CrystalDataset
        >>> from crystalzoo.data import bundled_dataset
        >>> ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=60,
        ...                                progress=False)
        >>> b = fit_booster(ds.subset(range(40)), ds.subset(range(40, 60)), grid=[{"max_iter": 20}])
        >>> b.backbones, b.kind, b.composition
        (['combined'], 'pooled', True)
    """
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    except ImportError as exc:
        raise MissingExtraError(f'fit_booster needs scikit-learn: pip install "crystalzoo[sklearn]" ({exc})') from None
    from .checks import check_count
    from .training.options import check_task
    from .models.factory import load_backbone

    check_task(task)
    check_count(seed, "seed", 0, 2**32 - 1)
    if kind not in ("pooled", "hidden"):
        raise ConfigError(f"kind = {kind!r}: a booster reads one vector per crystal, 'pooled' (the default) or "
                          "'hidden'")
    if not isinstance(composition, bool):
        raise ConfigError(f"composition = {composition!r}: True (the default) or False")
    names = [backbones] if isinstance(backbones, str) else list(backbones)
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"backbones = {backbones!r}: one name or a list of names (crystalzoo list)")
    grid = list(grid)
    if not grid or not all(isinstance(s, dict) for s in grid):
        raise ConfigError(f"grid = {grid!r}: a list of settings (dicts of HistGradientBoosting options), e.g. "
                          "crystalzoo.boosting.GRID")
    train, y_train = _labels(train, "train")
    val, y_val = _labels(val, "val")
    if val.targets != train.targets:
        raise ConfigError(f"train has the target {train.targets[0]!r}, val {val.targets[0]!r}: give both the same")
    models = [load_backbone(n).eval() for n in names]
    x_train, x_val = (_features(models, d, kind, composition) for d in (train, val))
    if task == "classification":
        make, better = HistGradientBoostingClassifier, max
        score = lambda m: float(np.mean(m.predict(x_val) == y_val))  # noqa: E731
    else:
        make, better = HistGradientBoostingRegressor, min
        score = lambda m: float(np.mean(np.abs(m.predict(x_val) - y_val)))  # noqa: E731
    fitted = []
    for setting in grid:
        try:  # an unknown option is a TypeError, a bad value scikit-learn's InvalidParameterError (a ValueError)
            fitted.append((setting, make(random_state=seed, early_stopping=False, **setting).fit(x_train, y_train)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"grid setting {setting}: {exc}; see scikit-learn's {make.__name__}") from None
    scored = [(score(est), setting, est) for setting, est in fitted]
    val_score, setting, estimator = better(scored, key=lambda t: t[0])
    return Booster(train.targets[0], task, names, kind, composition, dict(setting), val_score, estimator, models)
