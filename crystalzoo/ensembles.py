"""Deprecated: moved to :mod:`crystalzoo.models.ensembles` in crystalzoo 0.2.0; this path is kept for one release
(CHANGELOG.md). Import from ``crystalzoo.models.ensembles`` (or ``crystalzoo``) instead."""

import warnings

from .models.ensembles import MAX_MEMBERS, CrystalEnsemble, check_members, ensemble_from_config  # noqa: F401
from .models.factory import from_config  # noqa: F401

warnings.warn("crystalzoo.ensembles is deprecated: import from crystalzoo.models.ensembles (crystalzoo 0.2.0 moved it)",
              DeprecationWarning, stacklevel=2)
