"""A scikit-learn transformer that turns crystals into the vectors of a pretrained backbone
(``pip install "crystalzoo[sklearn]"``): frozen crystal-graph descriptors (of any backbone) plus a small model of your
own, inside a ``Pipeline``, tuned with ``GridSearchCV``.

Example::

    >>> import pytest; _ = pytest.importorskip("sklearn")  # the [sklearn] extra
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.pipeline import make_pipeline
    >>> from crystalzoo.featurizer import CrystalFeaturizer
    >>> pipe = make_pipeline(CrystalFeaturizer("formation"), Ridge(alpha=1.0))
    >>> from crystalzoo import example_structures
    >>> pipe.fit(example_structures()[:2], [1.0, 2.0]).predict(
    ...     example_structures()[:1]).shape
    (1,)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import ConfigError, MissingExtraError
from .graphs.reading import is_ase_atoms

try:
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.utils.validation import check_is_fitted
    _MISSING = None
except ImportError as exc:  # the [sklearn] extra is not installed: CrystalFeaturizer() says how to get it
    BaseEstimator = TransformerMixin = object
    _MISSING = f'CrystalFeaturizer needs scikit-learn: pip install "crystalzoo[sklearn]" ({exc})'


def _crystals(X: Any) -> list:
    """The crystals of ``X``: a list, a pandas Series or one-column DataFrame, a 1-D array or
    an (n, 1) array of structures, CIF paths or CIF texts (or one crystal)."""
    from pymatgen.core import IStructure

    if X is None:
        raise ConfigError("CrystalFeaturizer needs crystals (structures, CIF paths or CIF texts), got None")
    if isinstance(X, (str, os.PathLike, IStructure)) or is_ase_atoms(X):  # one crystal (an Atoms is not its atoms)
        return [X]
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # a DataFrame
        if X.shape[1] != 1:
            raise ConfigError(f"CrystalFeaturizer takes one column of crystals, got a table of {X.shape[1]} columns; "
                              "select the column of structures (e.g. with a ColumnTransformer)")
        X = X.iloc[:, 0]
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == 1:
        X = X[:, 0]
    if isinstance(X, np.ndarray) and X.ndim != 1:
        raise ConfigError(f"CrystalFeaturizer takes one crystal per row, got an array of shape {X.shape}")
    return list(X)


class CrystalFeaturizer(TransformerMixin, BaseEstimator):
    """Crystal vectors of a pretrained backbone as features (``crystalzoo.embeddings.embed``).

    ``backbone``: a registered name, ``hf-hub:ORG/NAME`` or a model folder, loaded at ``fit``
    (nothing is learnt: the backbone stays as it was pretrained). ``kind``, ``layer``,
    ``batch_size`` and ``n_jobs`` as for ``embed``; ``composition=True`` appends the
    composition descriptors of :mod:`crystalzoo.composition` (for a booster, the pooled
    vectors with the composition do best: docs/which_backbone.md). Rows of ``X`` are crystals:
    pymatgen structures, CIF paths or CIF texts.
    """

    def __init__(self, backbone: str = "formation", kind: str = "hidden", layer: int | None = None,
                 batch_size: int | None = None, n_jobs: int = 1, composition: bool = False):
        if _MISSING:
            raise MissingExtraError(_MISSING)
        self.backbone = backbone
        self.kind = kind
        self.layer = layer
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.composition = composition

    def fit(self, X: Any, y: Any = None) -> "CrystalFeaturizer":
        """Load the backbone (``X`` and ``y`` are not used: the features are pretrained)."""
        from .models.factory import load_backbone

        self._check_kind()
        self.backbone_ = load_backbone(self.backbone)
        self.backbone_name_ = self.backbone
        self.backbone_.eval()
        self.get_feature_names_out()  # checks kind and layer before any crystal is embedded
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit`` then ``transform``, reading ``X`` once (a generator included); with pandas
        output (``set_output(transform="pandas")``) the rows keep ``X``'s index."""
        crystals = _crystals(X)
        return self.fit(crystals, y)._vectors(crystals)

    def transform(self, X: Any) -> np.ndarray:
        """(n, width) float32 features of the crystals in ``X``."""
        return self._vectors(_crystals(X))

    def _vectors(self, crystals: list) -> np.ndarray:
        """The features of ``crystals`` (the settings checked again: ``set_params`` may have changed them)."""
        from .embeddings import embed

        self._check_fitted()
        return embed(self.backbone_, crystals, kind=self.kind, layer=self.layer, batch_size=self.batch_size,
                     n_jobs=self.n_jobs, composition=self.composition)

    def _check_kind(self) -> None:
        if self.kind not in ("hidden", "pooled"):
            raise ConfigError(f"CrystalFeaturizer gives one vector per crystal: kind 'hidden' or 'pooled', not "
                              f"{self.kind!r}")

    def _check_fitted(self) -> None:
        """Fitted, with the settings fit saw or ones that need no new fit (``kind``, ``layer``: checked again)."""
        check_is_fitted(self, "backbone_")
        if self.backbone != self.backbone_name_:
            raise ConfigError(f"backbone is {self.backbone!r} now, but {self.backbone_name_!r} was loaded by fit: "
                              "fit again after set_params(backbone=…)")
        self._check_kind()

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``crystal_0``, ``crystal_1``, … (one per vector component, for the current ``kind``),
        then with ``composition`` the names of :data:`crystalzoo.composition.COMPOSITION_NAMES`."""
        from .composition import COMPOSITION_NAMES
        from .embeddings import embed

        self._check_fitted()
        width = embed(self.backbone_, [], kind=self.kind, layer=self.layer).shape[1]  # a one-atom crystal's width
        if not isinstance(self.composition, bool):
            raise ConfigError(f"composition = {self.composition!r}: True or False")
        return np.array([f"crystal_{i}" for i in range(width)] + (COMPOSITION_NAMES if self.composition else []),
                        dtype=object)
