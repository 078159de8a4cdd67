"""Deprecated: moved to :mod:`crystalzoo.graphs.dgl_adapter` in crystalzoo 0.2.0; this path is kept for one release
(CHANGELOG.md). Import from ``crystalzoo.graphs.dgl_adapter`` (or ``crystalzoo``) instead."""

import warnings

from .graphs.dgl_adapter import DGL_INSTALL, dgl_fields, import_dgl, to_dgl  # noqa: F401

warnings.warn("crystalzoo.dgl_graphs is deprecated: import from crystalzoo.graphs.dgl_adapter (crystalzoo 0.2.0 moved it)",
              DeprecationWarning, stacklevel=2)
