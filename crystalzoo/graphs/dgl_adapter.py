"""DGL interoperability (the ``[dgl]`` extra): :class:`~crystalzoo.graphs.crystal_graph.CrystalGraph`
↔ ``dgl.DGLGraph``. The only module of crystalzoo that imports ``dgl``.

DGL's last release (2.1.0) runs only with torch 2.0–2.2.1 and numpy < 2, so it is an extra:
``pip install "crystalzoo[dgl]"`` installs it with those pins. The DGL graph has the node data
``atom_fea``, ``z``, ``extended`` and the edge data ``bond_fea``, ``distance`` (and
``edge_weight`` when the graph has edge weights, ``bond_of_edge`` when edges of one bond length
share one row of features), batched per crystal, so ``dgl.unbatch``,
``dgl.mean_nodes`` and your own DGL layers work on it; every crystalzoo model also takes it
as input and gives the same outputs as for the ``CrystalGraph``.

Example (with the extra installed)::

    >>> from crystalzoo import build_graph
    >>> from crystalzoo import example_structures
    >>> g = build_graph(example_structures()[0], backend="dgl")  # doctest: +SKIP
    >>> g.num_nodes(), g.edata["bond_fea"].shape  # doctest: +SKIP
    (8, torch.Size([72, 41]))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import CrystalZooError, GraphSettingsMismatchError, MissingExtraError

if TYPE_CHECKING:  # pragma: no cover
    import dgl

    # "CrystalGraph" in the hints below is crystalzoo.graphs.crystal_graph.CrystalGraph, not imported here: that
    # module imports this one (for to_dgl), and the import graph stays acyclic, type-only imports included


DGL_INSTALL = 'pip install "crystalzoo[dgl]"'


def import_dgl():
    """The ``dgl`` module, or a :class:`MissingExtraError` that says how to install it."""
    import os

    os.environ.setdefault("DGLBACKEND", "pytorch")
    try:
        import dgl
    except ImportError as exc:
        raise MissingExtraError(
            f"DGL graphs need the [dgl] extra: {DGL_INSTALL} (DGL 2.1.0 with torch 2.2.1 and numpy<2, in a separate "
            f"environment if yours has a newer torch). crystalzoo itself runs without DGL: use CrystalGraph "
            f"(backend='torch', the default). ({type(exc).__name__}: {exc})"
        ) from None
    except Exception as exc:  # dgl is there but its C++ library does not fit this torch
        import torch as _torch

        raise MissingExtraError(
            f"DGL is installed but does not load with torch {_torch.__version__} ({type(exc).__name__}: {exc}). "
            f"DGL 2.1.0 supports torch 2.0-2.2.1 only: {DGL_INSTALL} in a fresh environment."
        ) from None
    return dgl


def to_dgl(g: Any) -> "dgl.DGLGraph":
    """A batched ``dgl.DGLGraph`` with the same atoms, edges (in the same order) and features."""
    dgl = import_dgl()
    out = dgl.graph((g.src, g.dst), num_nodes=g.total_atoms, device=g.device)
    out.ndata["atom_fea"] = g.atom_fea
    out.edata["bond_fea"] = g.bond_fea
    for name in ("z", "extended"):
        if getattr(g, name) is not None:
            out.ndata[name] = getattr(g, name)
    if g.distance is not None:
        out.edata["distance"] = g.distance
    # every graph carries its edge weights (ones where no neighbour is tied at the last place), so
    # that dgl.batch takes graphs with and without ties alike: dropping the weights to batch them
    # moved predictions by up to 1.3 eV/atom
    out.edata["edge_weight"] = g.edge_weight if g.edge_weight is not None else torch.ones(
        len(g.src), dtype=g.bond_fea.dtype, device=g.device)
    out.ndata["crystal"] = g.crystal  # checked against the batch sizes on the way back
    if g.shares_bonds(g.bond_fea):  # the model then projects each distinct bond length once, as for g itself
        out.edata["bond_of_edge"] = g.bond_of_edge
    n_edges = g.n_edges if g.n_edges is not None else torch.bincount(g.crystal[g.dst], minlength=g.n_crystals)
    out.set_batch_num_nodes(g.n_atoms)
    out.set_batch_num_edges(n_edges)
    return out


def dgl_fields(g: "dgl.DGLGraph") -> dict[str, Any]:
    """The fields of a :class:`~crystalzoo.graphs.crystal_graph.CrystalGraph` (all but ``degree``)
    from a DGL graph with crystalzoo's node and edge data, edges in the same order; turned into
    one by :func:`crystalzoo.graphs.crystal_graph.as_crystal_graph`."""
    missing = [k for k in ("atom_fea",) if k not in g.ndata] + [k for k in ("bond_fea",) if k not in g.edata]
    if missing:
        raise GraphSettingsMismatchError(
            f"the DGL graph has no {missing} data: build it with crystalzoo.build_graph(..., backend='dgl') "
            "or CrystalGraph.to_dgl()"
        )
    src, dst = g.edges()
    n_atoms = g.batch_num_nodes()
    crystal = torch.repeat_interleave(torch.arange(len(n_atoms), device=n_atoms.device), n_atoms)
    if "crystal" in g.ndata:  # atoms of several crystals in one segment: the batch sizes were lost
        marks = g.ndata["crystal"]
        start = torch.cumsum(n_atoms, 0) - n_atoms
        if len(marks) and bool((n_atoms > 0).all()) and not torch.equal(marks, marks[start][crystal]):
            raise CrystalZooError("the DGL graph holds atoms of several crystals in one batch segment: its batch "
                                  "sizes were lost (dgl.save_graphs/load_graphs, add_self_loop, node_subgraph and "
                                  "the like drop them). Batch the graphs of single crystals with dgl.batch, or "
                                  "restore them with g.set_batch_num_nodes(...) and g.set_batch_num_edges(...)")
    weight = g.edata["edge_weight"] if "edge_weight" in g.edata else None
    if weight is not None and bool((weight == 1).all()):
        weight = None  # no tie anywhere: the graph of collate, which holds no weights
    distinct, of_edge = (_distinct_bonds(g.edata["bond_fea"], g.edata["bond_of_edge"]) if "bond_of_edge" in g.edata
                         else (None, None))
    return dict(
        atom_fea=g.ndata["atom_fea"],
        bond_fea=g.edata["bond_fea"],
        src=src,
        dst=dst,
        crystal=crystal,
        n_atoms=n_atoms,
        n_edges=g.batch_num_edges(),
        distance=g.edata["distance"] if "distance" in g.edata else None,
        z=g.ndata["z"] if "z" in g.ndata else None,
        extended=g.ndata["extended"] if "extended" in g.ndata else None,
        edge_weight=weight,
        distinct_bonds=distinct,
        bond_of_edge=of_edge,
    )


def _distinct_bonds(bond_fea: torch.Tensor, labels: torch.Tensor) -> tuple:
    """``(distinct_bonds, bond_of_edge)`` of a :class:`~crystalzoo.graphs.crystal_graph.CrystalGraph`
    from the ``bond_of_edge`` edge data that :func:`to_dgl` writes, or ``(None, None)`` where edges
    of one label do not all hold the same bond features: the graph was batched, sliced or edited
    in DGL since, and the model then projects every edge's features itself."""
    _, of_edge = torch.unique(labels, return_inverse=True)
    n = len(of_edge)
    first = torch.full((int(of_edge.max()) + 1 if n else 0,), n, dtype=torch.int64, device=of_edge.device)
    first.scatter_reduce_(0, of_edge, torch.arange(n, device=of_edge.device), "amin")
    if not torch.equal(bond_fea.index_select(0, first).index_select(0, of_edge), bond_fea):
        return None, None
    return first, of_edge
