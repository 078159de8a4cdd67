"""Deprecated: moved to :mod:`crystalzoo.models.factory` in crystalzoo 0.2.0; this path is kept for one release
(CHANGELOG.md). Import from ``crystalzoo.models.factory`` (or ``crystalzoo``) instead."""

import warnings

from .models.factory import load_backbone, load_model  # noqa: F401

warnings.warn("crystalzoo.loading is deprecated: import from crystalzoo.models.factory (crystalzoo 0.2.0 moved it)",
              DeprecationWarning, stacklevel=2)
