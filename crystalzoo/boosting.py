"""Gradient boosting on frozen crystal vectors and composition descriptors, tuned on a
validation split (``pip install "crystalzoo[sklearn]"``).

On 1,000 band gaps the pooled vectors of ``combined`` with the composition descriptors of
:mod:`crystalzoo.composition` in scikit-learn's ``HistGradientBoostingRegressor`` tie the best
fine-tuned ``combined``, and :class:`Blend`, the mean of the two, has the lowest error the
small-data suite has measured (docs/which_backbone.md, from ``benchmarks/small_data.py``). The
backbones stay as they were pretrained; only the booster learns, so a fit takes seconds once
the vectors are computed.

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
        """One prediction per crystal of ``crystals`` (as for :meth:`features`; none for none)."""
        x = self.features(crystals)
        return self.estimator.predict(x) if len(x) else np.empty(0, np.int64 if self.task == "classification" else
                                                                    np.float64)


@dataclass
class Blend:
    """The mean of the predictions of fitted regressors of one target, e.g. a fine-tuned network
    and a :class:`Booster` on frozen vectors, ``weights`` (default: equal) summing to 1.

    On 1,000 band gaps, fine-tuned ``combined`` and ``fit_booster`` on its frozen vectors, half
    each, have the lowest error the small-data suite has measured, 6–8 % below each of them on
    every seed (docs/which_backbone.md). That is not a rule: on 300 Fermi energies blending
    ``formation`` with its booster was worse than ``formation`` alone. Compare the blend with its
    members on the validation split before you use it.

    Example::

        >>> import pytest; _ = pytest.importorskip("sklearn")
        >>> from crystalzoo import Blend, CrystalDataset, TrainConfig, fit_booster, make_model, train_model
        >>> from crystalzoo.data import bundled_dataset
        >>> ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=60,
        ...                                progress=False)
        >>> train, val = ds.subset(range(40)), ds.subset(range(40, 60))
        >>> network = make_model("combined", train)
        >>> _ = train_model(network, train, val, TrainConfig(epochs=1, progress=False))
        >>> blend = Blend([network, fit_booster(train, val, grid=[{"max_iter": 20}])])
        >>> blend.predict(ds.subset(range(3))).shape
        (3,)
    """

    members: list[Any]
    weights: list[float] | None = None
    #: validation MAEs of the members and the blend, where :func:`fit_blend` made it
    val_scores: dict[str, float] | None = None

    def __post_init__(self) -> None:
        members = self.members
        if isinstance(members, (str, bytes, dict)) or not hasattr(members, "__iter__") or len(
                members := list(members)) < 2:
            raise ConfigError(f"Blend takes a list of two or more fitted regressors (a fine-tuned model, a Booster), "
                              f"got {self.members!r}")
        self.members = members
        targets = [_target_of(m, i) for i, m in enumerate(self.members)]
        if len(set(targets)) > 1:
            raise ConfigError(f"the members predict different targets {targets}: a blend averages one quantity. Fit "
                              "them on one data set (the same target name), e.g. fit_booster(train, val) on the "
                              "network's training split")
        self.weights = _blend_weights(self.weights, len(self.members))

    @property
    def target(self) -> str:
        return _target_of(self.members[0], 0)

    def predict(self, crystals: Any) -> np.ndarray:
        """One prediction per crystal of ``crystals`` (a ``CrystalDataset``, or structures, CIF
        paths or CIF texts): the weighted mean of the members'."""
        weights = _blend_weights(self.weights, len(self.members))  # checked again: they may have been changed
        readers = [(f"member {i} of the blend", s) for i, m in enumerate(self.members) for s in _settings_of(m)]
        crystals = _read_once(crystals, readers, "the blend")
        return sum(w * np.ravel(m.predict(crystals)).astype(np.float64) for w, m in zip(weights, self.members))


def _blend_weights(weights: Any, n: int) -> list[float]:
    """The ``weights`` of a blend of ``n`` members, checked: default equal; otherwise a list or
    array of ``n`` real numbers in [0, 1] that sum to 1."""
    import numbers

    if weights is None:
        return [1 / n] * n
    if isinstance(weights, (str, bytes, dict, set, frozenset)) or not hasattr(weights, "__iter__"):
        raise ConfigError(f"weights = {weights!r}: a list of {n} numbers in [0, 1], one per member in order, "
                          "summing to 1")
    values = list(weights)
    if len(values) != n or not all(isinstance(w, numbers.Real) and not isinstance(w, (bool, np.bool_))
                                   and 0 <= w <= 1 for w in values) or abs(sum(values) - 1) > 1e-9:
        raise ConfigError(f"weights = {weights!r}: one number in [0, 1] per member ({n}), summing to 1")
    return [float(w) for w in values]


def _target_of(member: Any, i: int) -> str:
    """The one target of a blend's member ``i`` (a Booster or a model), checked to be a regression."""
    if isinstance(member, Booster):
        task, targets = member.task, [member.target]
    elif hasattr(member, "head") and hasattr(member, "graph_settings"):  # a CrystalModel or CrystalEnsemble
        task, targets = member.head.task, list(member.targets)
    else:
        raise ConfigError(f"member {i} of the blend is a {type(member).__name__}: give fitted crystalzoo regressors "
                          "(a fine-tuned model, a Booster from fit_booster)")
    if task != "regression":
        raise ConfigError(f"member {i} of the blend is a classifier: a blend averages predicted values of a "
                          "regression")
    if len(targets) != 1:
        raise ConfigError(f"member {i} of the blend predicts {targets}: a blend averages one target "
                          "(fine-tune a model of that target alone)")
    return targets[0]


def _settings_of(member: Any) -> list[Any]:
    """The graph settings a blend's member reads (each backbone's, for a Booster)."""
    return [m.graph_settings for m in member.models] if isinstance(member, Booster) else [member.graph_settings]


def _read_once(crystals: Any, readers: list[tuple[str, Any]], what: str) -> Any:
    """``crystals`` ready for several models, ``readers`` (who, graph settings) pairs: a
    ``CrystalDataset`` as it is, once every reader can read its graphs (:class:`ConfigError`
    naming the one that cannot); other inputs read once (a generator serves every model), and
    where the models' graphs are the same but for the atom features, built once (not cached: each
    model reads its own atom features from them)."""
    from .data.dataset import CrystalDataset
    from .graphs.reading import crystal_list

    settings = [s for _, s in readers]
    if isinstance(crystals, CrystalDataset):
        other = next(((who, s) for who, s in readers if not s.same_graphs(crystals.settings)), None)
        if other is not None:
            raise ConfigError(f"{other[0]} reads graphs of other settings ({other[1]}) than the data set's "
                              f"({crystals.settings}): give structures, CIF paths or CIF texts (each model builds "
                              "its own graphs), or a data set built with those settings")
        return crystals
    crystals = crystal_list(crystals, what)
    if crystals and len(settings) > 1 and all(settings[0].same_graphs(s) for s in settings):
        crystals = CrystalDataset.from_structures(crystals, settings=settings[0], cache_dir=False, progress=False)
    return crystals


def _features(models: list[Any], crystals: Any, kind: str, composition: bool) -> np.ndarray:
    from .embeddings import embed

    crystals = _read_once(crystals, [("a backbone of the booster", m.graph_settings) for m in models], "the booster")
    return np.concatenate([embed(m, crystals, kind=kind, composition=composition and i == 0)
                           for i, m in enumerate(models)], axis=1)


def _labels(dataset: Any, what: str, task: str, least: int = 1) -> tuple[Any, np.ndarray]:
    """The labelled crystals of ``dataset`` (one target) and their labels (classes for a
    classifier, ``least`` of them at the least)."""
    from .checks import class_labels
    from .training.batches import check_dataset

    check_dataset(dataset, what)
    if len(dataset.targets) != 1:
        raise ConfigError(f"a booster predicts one target; {what} has {dataset.targets}: pick one with "
                          f"{what}.select_targets([NAME])")
    labelled = np.flatnonzero(~np.isnan(dataset.labels[:, 0]))
    if len(labelled) < 2:
        raise DataError(f"{what} has {len(labelled)} crystals with a {dataset.targets[0]} label: a booster needs "
                        "at least 2")
    labels = dataset.labels[labelled, 0].astype(np.float64)
    if task == "classification":
        labels = class_labels(labels, f"{what}'s {dataset.targets[0]}", "a classifier", least)
    return dataset.subset(labelled), labels


def _estimators(make: Any, grid: Any, seed: int) -> list[tuple[dict[str, Any], Any]]:
    """One unfitted estimator per setting of ``grid``, each checked by scikit-learn before any
    crystal is embedded."""
    settings = [] if isinstance(grid, (dict, str, bytes)) or not hasattr(grid, "__iter__") else list(grid)
    if not settings or not all(isinstance(s, dict) for s in settings):
        raise ConfigError(f"grid = {grid!r}: a list of settings (dicts of {make.__name__} options), e.g. "
                          "crystalzoo.boosting.GRID or [{'max_iter': 300}]")
    out = []
    for setting in settings:
        try:  # an unknown option is a TypeError, a bad value scikit-learn's InvalidParameterError (a ValueError)
            estimator = make(random_state=seed, early_stopping=False, **setting)
            estimator._validate_params()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"grid setting {setting}: {exc}; see scikit-learn's {make.__name__}") from None
        out.append((dict(setting), estimator))
    return out


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
    if task == "classification":
        make, better = HistGradientBoostingClassifier, max
    else:
        make, better = HistGradientBoostingRegressor, min
    estimators = _estimators(make, grid, seed)
    train, y_train = _labels(train, "train", task, least=2)  # a classifier learns two classes or more
    val, y_val = _labels(val, "val", task)  # its validation split may hold one
    if val.targets != train.targets:
        raise ConfigError(f"train has the target {train.targets[0]!r}, val {val.targets[0]!r}: give both the same")
    models = [load_backbone(n).eval() for n in names]
    x_train, x_val = (_features(models, d, kind, composition) for d in (train, val))
    unseen = sorted(set(y_val.tolist()) - set(y_train.tolist())) if task == "classification" else []
    if unseen:
        raise DataError(f"val has the {train.targets[0]} classes {unseen}, which train has not: a classifier learns "
                        f"only the classes of its training split ({sorted(set(y_train.tolist()))})")
    scored = []
    for setting, estimator in estimators:
        try:  # options whose shape follows the features (monotonic_cst, categorical_features, …) fail only here
            estimator.fit(x_train, y_train)
        except ValueError as exc:
            raise ConfigError(f"grid setting {setting} does not suit these {x_train.shape[1]} features: {exc}; see "
                              f"scikit-learn's {make.__name__}") from None
        predicted = estimator.predict(x_val)
        scored.append((float(np.mean(predicted == y_val) if task == "classification" else
                             np.mean(np.abs(predicted - y_val))), setting, estimator))
    val_score, setting, estimator = better(scored, key=lambda t: t[0])
    return Booster(train.targets[0], task, names, kind, composition, setting, val_score, estimator, models)


def fit_blend(train: Any, val: Any, *, backbone: str | Sequence[str] = "combined", config: Any = None,
              seed: int = 0, grid: Sequence[dict[str, Any]] = GRID, ensemble: int = 1) -> Blend:
    """The small-data suite's best path in one call: fine-tune every layer of ``backbone`` on
    ``train`` (``make_model`` + ``train_model`` with ``config``, a
    :class:`~crystalzoo.training.config.TrainConfig`, default its defaults: 30 epochs, the best
    validation epoch kept), fit :func:`fit_booster` on the same backbone's frozen pooled vectors
    and the composition, tuned on ``val``, and blend the two half each. One regression target.
    ``ensemble=N`` (N ≥ 2) fine-tunes N networks (member i with ``config.seed + i`` and head seed
    ``seed + i``), and their :class:`~crystalzoo.models.ensembles.CrystalEnsemble` is the blend's
    network half.

    ``backbone`` may name several backbones (e.g. the first three of
    :func:`~crystalzoo.transfer.rank_backbones`): each is fine-tuned (``ensemble`` networks each),
    the networks share the network half equally, and the booster reads all their vectors side by
    side.

    The validation MAEs of the network half (the networks' mean), the booster and the blend are
    in ``blend.val_scores``: keep the blend only where it is the lowest (the booster's is
    optimistic, its setting was chosen on the same split).

    Example::

        >>> import pytest; _ = pytest.importorskip("sklearn")
        >>> from crystalzoo import CrystalDataset, TrainConfig
        >>> from crystalzoo.data import bundled_dataset
        >>> ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=60,
        ...                                progress=False)
        >>> blend = fit_blend(ds.subset(range(40)), ds.subset(range(40, 60)),
        ...                   config=TrainConfig(epochs=1, progress=False), grid=[{"max_iter": 20}])
        >>> sorted(blend.val_scores)
        ['blend', 'booster', 'network']
    """
    import dataclasses

    from .checks import check_count
    from .models.ensembles import MAX_MEMBERS, CrystalEnsemble
    from .training.config import TrainConfig
    from .training.heads import make_model
    from .training.loop import train_model
    from .training.runs import backbone_atom_features

    names = [backbone] if isinstance(backbone, str) else backbone
    if isinstance(names, (bytes, dict, set, frozenset)) or not hasattr(names, "__iter__") or not (
            names := list(names)) or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        raise ConfigError(f"backbone = {backbone!r}: the name of a registered backbone (crystalzoo list), a "
                          "hf-hub:… id or a model folder, or a list of different ones")

    config = TrainConfig(seed=seed) if config is None else config
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config = {config!r}: a crystalzoo TrainConfig (or None for its defaults)")
    check_count(ensemble, "ensemble", 1, MAX_MEMBERS)
    booster = fit_booster(train, val, backbones=names, grid=grid, seed=seed)  # checks the splits and the grid
    networks = []
    for name in names:
        features = backbone_atom_features(name)  # the graphs with the atom features its family reads
        train_net, val_net = (d.select_targets([booster.target]).with_atom_features(features) for d in (train, val))
        own = []
        for i in range(ensemble):
            own.append(make_model(name, train_net, task="regression", seed=seed + i))
            train_model(own[-1], train_net, val_net, dataclasses.replace(config, seed=config.seed + i))
        networks.append(own[0] if ensemble == 1 else CrystalEnsemble(own))
    half = 0.5 / len(networks)
    blend = Blend([*networks, booster], weights=[half] * len(networks) + [0.5])
    val_target = val.select_targets([booster.target], drop_missing=False)
    y = val_target.labels[:, 0]
    labelled = ~np.isnan(y)

    def mae(predicted: np.ndarray) -> float:
        return float(np.mean(np.abs(np.ravel(predicted)[labelled] - y[labelled])))

    network_half = Blend(networks) if len(networks) > 1 else networks[0]
    blend.val_scores = {"network": mae(network_half.predict(val_target)), "booster": booster.val_score,
                        "blend": mae(blend.predict(val_target))}
    return blend
