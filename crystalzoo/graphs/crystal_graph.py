"""``CrystalGraph``: a batch of crystal graphs as plain torch tensors, and the few
segment operations message passing needs (gather per edge, sum into atoms, softmax over
an atom's edges, mean per crystal). torch alone: no graph library.

A batch of C crystals with N atoms and E edges in all. Edge e carries a message from atom
``src[e]`` (the neighbour j) into atom ``dst[e]`` (the centre i); edges are stored grouped
by their centre atom (``dst`` sorted), crystal after crystal. ``crystal[i]`` is the index
(0 … C-1) of the crystal atom i belongs to.

Example::

    >>> from crystalzoo import build_graph
    >>> from crystalzoo import example_structures
    >>> g = build_graph(example_structures()[0])
    >>> g.n_crystals, g.total_atoms, g.total_edges, tuple(g.bond_fea.shape)
    (1, 8, 72, (72, 41))
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_TENSORS = ("atom_fea", "bond_fea", "src", "dst", "crystal", "n_atoms", "n_edges", "distance", "z", "extended",
            "edge_weight", "distinct_bonds", "bond_of_edge")


@dataclass
class CrystalGraph:
    """A batch of crystal graphs (one crystal is a batch of one).

    Made by :func:`crystalzoo.graphs.collate` from the builder's compact arrays, or by
    :func:`crystalzoo.build_graph` / :func:`~crystalzoo.graphs.iter_batches`.

    Attributes:
        atom_fea: (N, 92) float32 CGCNN element features.
        bond_fea: (E, n_bond_features) float32 Gaussian-expanded distances.
        src: (E,) int64 neighbour atom j of each edge.
        dst: (E,) int64 centre atom i of each edge (sorted in graphs crystalzoo builds).
        crystal: (N,) int64 crystal index of each atom.
        n_atoms: (C,) int64 atoms per crystal.
        n_edges: (C,) int64 edges per crystal.
        distance: (E,) float32 bond length in Å.
        z: (N,) int64 atomic numbers.
        extended: (N,) bool, atoms whose neighbours were found beyond the radius.
        edge_weight: (E,) float32 weight of each edge's message in the sum, or ``None``
            (every edge counts once).
        degree: K when every atom has exactly K edges and edge e goes into atom e // K (what
            the builder gives a dense crystal: its 12 nearest neighbours per atom); ``None``
            otherwise. Set by :func:`uniform_degree`; without autograd, sums then run on an
            (N, K, …) view.
        settings: the :class:`~crystalzoo.graphs.GraphSettings` the graph was built with, or
            ``None`` where unknown; a model refuses a graph of other settings.
        distinct_bonds: (B,) int64, one edge of each distinct bond length, or ``None``.
        bond_of_edge: (E,) int64, the position in ``distinct_bonds`` of an edge of the same
            length as edge e (so ``bond_fea[e] == bond_fea[distinct_bonds[bond_of_edge[e]]]``),
            or ``None``. Set by :func:`~crystalzoo.graphs.collate`: symmetry makes most bond
            lengths of a crystal recur (about 1 in 6 is distinct in Materials Project
            crystals), so a layer computes a function of the bond features once per distinct
            length (:func:`per_bond`).

    A model reads the first six (and ``edge_weight``, ``degree``); the builder fills in the
    rest (``None`` where a graph was made without them, as in an exported model).
    """

    atom_fea: torch.Tensor
    bond_fea: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    crystal: torch.Tensor
    n_atoms: torch.Tensor
    n_edges: torch.Tensor | None = None
    distance: torch.Tensor | None = None
    z: torch.Tensor | None = None
    extended: torch.Tensor | None = None
    edge_weight: torch.Tensor | None = None
    degree: int | None = None
    settings: Any = None  # the GraphSettings it was built with (None: unknown, e.g. from DGL)
    distinct_bonds: torch.Tensor | None = None
    bond_of_edge: torch.Tensor | None = None
    #: the ``bond_fea`` tensor (its version and its sum) that ``distinct_bonds`` describes: a graph
    #: whose bond features were replaced or edited since computes them edge by edge (:meth:`shares_bonds`)
    bonds_made: Any = dataclasses.field(default=None, repr=False, compare=False)
    #: the (E, 3) rows of each edge's terms that :func:`edge_sum` looks up (with the tensors they
    #: were made from), made on first use
    edge_rows: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def shares_bonds(self, bond_fea: torch.Tensor) -> bool:
        """Whether ``bond_fea`` is the tensor ``collate`` made for this graph, unedited (so that
        edges of one bond length have equal rows) and not asked for its gradient (each edge
        then gets its own): the condition of :func:`per_bond`."""
        made = self.bonds_made
        return (made is not None and self.distinct_bonds is not None and self.bond_of_edge is not None
                and bond_fea is made[0] and bond_fea._version == made[1] and not bond_fea.requires_grad
                and len(self.bond_of_edge) == len(bond_fea) and bond_sum(bond_fea) == made[2])

    def _rebound(self, moved: "CrystalGraph") -> "CrystalGraph":
        """``moved`` (this graph's tensors converted) still sharing bonds where this one did."""
        if self.shares_bonds(self.bond_fea):
            moved.bonds_made = made_bonds(moved.bond_fea)
        return moved

    @property
    def n_crystals(self) -> int:
        return self.n_atoms.shape[0]

    @property
    def total_atoms(self) -> int:
        """Atoms of all the crystals together (``n_atoms`` holds each crystal's)."""
        return self.atom_fea.shape[0]

    @property
    def total_edges(self) -> int:
        """Edges of all the crystals together (``n_edges`` holds each crystal's)."""
        return self.src.shape[0]

    @property
    def num_atoms(self) -> int:
        """Deprecated (crystalzoo 0.2.0): :attr:`total_atoms` (``n_atoms`` is per crystal)."""
        warnings.warn("CrystalGraph.num_atoms is deprecated: use total_atoms (n_atoms holds each crystal's)",
                      DeprecationWarning, stacklevel=2)
        return self.total_atoms

    @property
    def num_edges(self) -> int:
        """Deprecated (crystalzoo 0.2.0): :attr:`total_edges` (``n_edges`` is per crystal)."""
        warnings.warn("CrystalGraph.num_edges is deprecated: use total_edges (n_edges holds each crystal's)",
                      DeprecationWarning, stacklevel=2)
        return self.total_edges

    @property
    def device(self) -> torch.device:
        return self.atom_fea.device

    def in_degrees(self) -> torch.Tensor:
        """(N,) number of edges into each atom."""
        return torch.bincount(self.dst, minlength=self.total_atoms)

    def to(self, device: Any) -> "CrystalGraph":
        """The same graph with every tensor on ``device`` (a no-op where they are already)."""
        return self._rebound(dataclasses.replace(self, **{k: None if getattr(self, k) is None
                                                          else getattr(self, k).to(device) for k in _TENSORS}))

    def to_float(self, dtype: torch.dtype) -> "CrystalGraph":
        """The same graph with its floating-point tensors (features, distances, edge weights) in
        ``dtype``, e.g. for a model converted with ``model.double()``."""
        return self._rebound(dataclasses.replace(self, **{k: getattr(self, k).to(dtype) for k in _TENSORS if getattr(
            self, k) is not None and getattr(self, k).is_floating_point()}))

    def to_dgl(self):
        """A ``dgl.DGLGraph`` of this batch, with ``ndata`` ``atom_fea``, ``z``, ``extended`` and
        ``edata`` ``bond_fea``, ``distance`` (and ``edge_weight`` when set, ``bond_of_edge`` when
        the bond features are as :func:`~crystalzoo.graphs.collate` made them), batched per crystal.
        Needs the ``[dgl]`` extra: ``pip install "crystalzoo[dgl]"``."""
        from .dgl_adapter import to_dgl

        return to_dgl(self)


def bond_sum(bond_fea: torch.Tensor) -> float:
    """The sum of the bond features in float64: an edit that torch's version counter misses
    (a write through ``.numpy()`` or ``.data``) changes it."""
    return float(bond_fea.sum(dtype=torch.float64))


def made_bonds(bond_fea: torch.Tensor) -> tuple:
    """What :attr:`CrystalGraph.bonds_made` holds for ``bond_fea``: the tensor, its version and its sum."""
    return (bond_fea, bond_fea._version, bond_sum(bond_fea))


def as_crystal_graph(g: Any) -> CrystalGraph:
    """``g`` itself if it is a :class:`CrystalGraph`; a ``dgl.DGLGraph`` (as made by
    :meth:`CrystalGraph.to_dgl` or ``build_graph(..., backend="dgl")``) converted to one."""
    if isinstance(g, CrystalGraph):
        return g
    if type(g).__module__.split(".")[0] == "dgl":
        from .dgl_adapter import dgl_fields

        fields = dgl_fields(g)
        made = made_bonds(fields["bond_fea"]) if fields["distinct_bonds"] is not None else None
        return CrystalGraph(**fields, degree=uniform_degree(fields["dst"], g.num_nodes()), bonds_made=made)
    from ..errors import CrystalZooError

    raise CrystalZooError(
        f"a model takes a CrystalGraph (or a dgl.DGLGraph from the [dgl] extra), not a {type(g).__name__}; "
        "make one with crystalzoo.build_graph(structure) or crystalzoo.graphs.collate(arrays, settings)"
    )


def uniform_degree(dst: torch.Tensor, num_atoms: int) -> int | None:
    """K if ``dst`` is 0 (K times), 1 (K times), …, num_atoms - 1 (K times), else ``None``.

    Example::

        >>> uniform_degree(torch.tensor([0, 0, 1, 1, 2, 2]), 3), uniform_degree(torch.tensor([0, 1, 1]), 2)
        (2, None)
    """
    if num_atoms == 0 or dst.numel() % num_atoms:
        return None
    k = dst.numel() // num_atoms
    if k == 0 or not torch.equal(dst.view(num_atoms, k), torch.arange(num_atoms, device=dst.device).view(-1, 1).expand(
            num_atoms, k)):
        return None
    return k


def add_centre(g: CrystalGraph, per_edge: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """``per_edge`` (E, F) plus, on each edge, the row of ``centre`` (N, F) of its centre atom:
    per_edge[e] + centre[dst[e]] (in place where autograd allows)."""
    if g.degree is not None and not _needs_grad(per_edge, centre):
        per_edge.view(g.total_atoms, g.degree, -1).add_(centre.unsqueeze(1))
        return per_edge
    return per_edge.add_(centre.index_select(0, g.dst))


def per_bond(g: CrystalGraph, fn: Any, bond_fea: torch.Tensor) -> torch.Tensor:
    """``fn(bond_fea)`` for a function ``fn`` of each edge's bond features alone (row by row,
    e.g. a linear map): computed once per distinct bond length where the graph knows them
    (``g.distinct_bonds``, set by :func:`~crystalzoo.graphs.collate`), then gathered per edge.
    The same numbers as ``fn(bond_fea)``, with about a sixth of the work on real crystals; a
    graph whose ``bond_fea`` was replaced or edited since, or that is asked for the gradient of
    its bond features, gets ``fn(bond_fea)`` (:meth:`CrystalGraph.shares_bonds`).

    Example::

        >>> from crystalzoo import build_graph, example_structures
        >>> g = build_graph(example_structures()[0])
        >>> w = torch.randn(41, 8)
        >>> torch.allclose(per_bond(g, lambda b: b @ w, g.bond_fea), g.bond_fea @ w)
        True
    """
    if not g.shares_bonds(bond_fea):  # bond features replaced or edited since collate, or asked for a gradient
        return fn(bond_fea)
    return fn(bond_fea.index_select(0, g.distinct_bonds)).index_select(0, g.bond_of_edge)


def edge_sum(g: CrystalGraph, neighbour: torch.Tensor, bonds: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(E, F): ``neighbour[src[e]] + bonds[bond_of_edge[e]] + centre[dst[e]]`` for each edge e, for
    per-atom rows ``neighbour`` and ``centre`` (N, F) and per-distinct-bond rows ``bonds`` (B, F),
    in one pass over the edges (an embedding-bag sum over the three tables side by side) instead
    of three gathers and two adds. For inference (no gradient); the graph must know its distinct
    bonds (:meth:`CrystalGraph.shares_bonds`).

    Example::

        >>> from crystalzoo import build_graph, example_structures
        >>> g = build_graph(example_structures()[0])
        >>> a, c = torch.randn(g.total_atoms, 4), torch.randn(g.total_atoms, 4)
        >>> b = torch.randn(len(g.distinct_bonds), 4)
        >>> want = a[g.src] + b[g.bond_of_edge] + c[g.dst]
        >>> torch.allclose(edge_sum(g, a, b, c), want, atol=1e-6)
        True
    """
    made = g.edge_rows
    if made is None or made[0] is not g.src or made[1] is not g.dst or made[2] is not g.bond_of_edge:
        n = g.total_atoms
        made = g.edge_rows = (g.src, g.dst, g.bond_of_edge, torch.stack([g.src, g.dst + n, g.bond_of_edge + 2 * n], 1))
    return nn.functional.embedding_bag(made[3], torch.cat([neighbour, centre, bonds]), mode="sum")


def _needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on ``tensors``. Sums and centre terms then use index
    operations: the (N, K, …) views are faster without autograd only (measured on 2 CPU cores:
    about 1.2× for inference, 0.9× for training, where an in-place add on a view makes autograd
    copy the whole edge gradient)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _per_edge(g: CrystalGraph, like: torch.Tensor) -> torch.Tensor:
    return g.edge_weight.view(-1, *([1] * (like.dim() - 1)))


def sum_into_atoms(g: CrystalGraph, messages: torch.Tensor, weighted: bool = True) -> torch.Tensor:
    """Σ over the edges into each atom: (E, …) → (N, …), each message times its edge weight
    (``weighted=False``: the messages as they are, e.g. when the weights are in an attention)."""
    if weighted and g.edge_weight is not None:
        messages = messages * _per_edge(g, messages)
    if g.degree is not None and not _needs_grad(messages):
        return messages.view(g.total_atoms, g.degree, *messages.shape[1:]).sum(1)
    out = messages.new_zeros((g.total_atoms, *messages.shape[1:]))
    return out.index_add_(0, g.dst, messages)


def softmax_over_edges(g: CrystalGraph, scores: torch.Tensor) -> torch.Tensor:
    """Softmax of ``scores`` (E, …) over the edges into each atom, an edge of weight w counting
    as w edges: w_e exp(s_e) / Σ w exp(s). The per-atom maximum is subtracted first (it cancels
    in the ratio), so large scores do not overflow."""
    with torch.no_grad():
        index = g.dst.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
        top = scores.new_full((g.total_atoms, *scores.shape[1:]), float("-inf"))
        top = top.scatter_reduce(0, index, scores, "amax", include_self=True)
    e = torch.exp(scores - top.index_select(0, g.dst))
    if g.edge_weight is not None:
        e = e * _per_edge(g, e)
    total = e.new_zeros(top.shape).index_add_(0, g.dst, e)
    return e / total.index_select(0, g.dst)


def mean_per_crystal(g: CrystalGraph, atom_values: torch.Tensor) -> torch.Tensor:
    """Mean of atom vectors (N, F) over each crystal: (C, F). Summed in float64 (except on
    MPS), so that the result does not depend on the order of the atoms, or on a supercell, to
    float32 precision."""
    wide = torch.float32 if atom_values.device.type == "mps" else torch.float64  # MPS has no float64
    out = atom_values.new_zeros((g.n_crystals, *atom_values.shape[1:]), dtype=wide)
    out.index_add_(0, g.crystal, atom_values.to(wide))
    n = g.n_atoms.to(wide).clamp(min=1).view(-1, *([1] * (atom_values.dim() - 1)))
    return (out / n).to(atom_values.dtype)
