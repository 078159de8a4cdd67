"""Deprecated: moved to :mod:`crystalzoo.graphs.crystal_graph` in crystalzoo 0.2.0; this path is kept for one release
(CHANGELOG.md). Import from ``crystalzoo.graphs.crystal_graph`` (or ``crystalzoo``) instead."""

import warnings

from .graphs.crystal_graph import (  # noqa: F401
    CrystalGraph, add_centre, as_crystal_graph, mean_per_crystal, softmax_over_edges, sum_into_atoms, uniform_degree)

warnings.warn("crystalzoo.crystal_graph is deprecated: import from crystalzoo.graphs.crystal_graph (crystalzoo 0.2.0 moved it)",
              DeprecationWarning, stacklevel=2)
