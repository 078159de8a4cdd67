"""Deprecated: moved to :mod:`crystalzoo.training.recipes` in crystalzoo 0.2.0; this path is kept for one release
(CHANGELOG.md). Import from ``crystalzoo.training.recipes`` (or ``crystalzoo``) instead."""

import warnings

from .training.recipes import (  # noqa: F401
    L2SP_ALPHA, LR_DECAY, RECIPES, check_phases, check_recipe, frozen_at, param_groups, penalty, phases, probe, set_frozen, stages_and_rates)

warnings.warn("crystalzoo.recipes is deprecated: import from crystalzoo.training.recipes (crystalzoo 0.2.0 moved it)",
              DeprecationWarning, stacklevel=2)
