"""Deprecated: moved to :mod:`crystalzoo.training.config` in crystalzoo 0.2.0; this path is kept for one release
(CHANGELOG.md). Import from ``crystalzoo.training.config`` (or ``crystalzoo``) instead."""

import warnings

from .training.config import OPTIMIZERS, SCHEDULES, TrainConfig  # noqa: F401

warnings.warn("crystalzoo.train_config is deprecated: import from crystalzoo.training.config (crystalzoo 0.2.0 moved it)",
              DeprecationWarning, stacklevel=2)
