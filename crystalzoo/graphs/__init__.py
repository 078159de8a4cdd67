"""Crystal structures → graphs with atom and bond features (the CGCNN's by default).

structures → :func:`build_arrays` (compact :class:`GraphArrays`, one per crystal, cached by
datasets) → :func:`collate` (a batched :class:`CrystalGraph` of torch tensors) → a model.
:func:`build_graph` and :func:`iter_batches` do both steps; with ``backend="dgl"`` (the
``[dgl]`` extra) ``build_graph`` returns a ``dgl.DGLGraph`` instead.

The modules, by job: :mod:`~crystalzoo.graphs.settings` (radius, neighbours, bond and atom
features), :mod:`~crystalzoo.graphs.reading` (structures and files, one crystal per input; CIF in
:mod:`~crystalzoo.graphs.cif`, plain P1 CIFs fast in :mod:`~crystalzoo.graphs.plain_cif`),
:mod:`~crystalzoo.graphs.cells` (a crystal → its checked cell),
:mod:`~crystalzoo.graphs.neighbors` (the neighbour search under the tie rule),
:mod:`~crystalzoo.graphs.building` (build, collate, worker processes),
:mod:`~crystalzoo.graphs.crystal_graph` (the batched graph and its sums) and
:mod:`~crystalzoo.graphs.dgl_adapter` (the ``[dgl]`` extra).

A crystal becomes a directed graph: one node per atom in the unit cell, and an edge
j → i from each of the ``max_neighbors`` nearest neighbours j of atom i within
``radius`` Å, periodic images included (so two atoms can share several parallel edges).
Atom feature ``atom_fea``: the 92-value CGCNN encoding of the element, or another table of
:data:`~crystalzoo.graphs.settings.ATOM_FEATURES` that ``GraphSettings.atom_features`` names
(the one a backbone family reads). Bond feature
``bond_fea``: the distance expanded in Gaussians centred every ``gaussian_step`` Å from
``gaussian_min`` to ``radius``.

Neighbour policy (documented in ``docs/graphs.md``):

* neighbours are ordered by distance. Where the ``max_neighbors``-th place is shared by
  several candidates at the same distance (within ``TIE_TOLERANCE``), all of them are kept,
  each with an equal fractional edge weight, so an atom's weights sum to ``max_neighbors``
  and the convolution sum is the average over every way to break the tie: the graph does not
  depend on the order of the atoms. Without such a tie every weight is 1;
* an atom with fewer than ``max_neighbors`` neighbours inside the radius keeps the ones it
  has — no fake padding edges (the original CGCNN padded with atom 0 at radius + 1 Å);
* an atom with *no* neighbour inside the radius takes its ``max_neighbors`` nearest
  neighbours in the crystal at whatever distance they are (the same in any cell of it), so
  every crystal gets a graph and a prediction. Their bond
  features decay to about zero beyond the radius; ``graph.extended`` marks them.

Example::

    >>> from crystalzoo.graphs import build_graph
    >>> from crystalzoo import example_structures
    >>> g = build_graph(example_structures()[0])
    >>> g.atom_fea.shape[1], g.bond_fea.shape[1]
    (92, 41)
"""

from ..checks import MAX_JOBS, check_count, check_jobs, plain, python_numbers
from .building import build_arrays, build_graph, build_graphs, collate, crystal_batches, iter_batches
from .crystal_graph import CrystalGraph
from .cells import MIN_VOLUME_PER_ATOM, known_elements
from .neighbors import MIN_DISTANCE, SEARCH_BUDGET, TIE_TOLERANCE, GraphArrays, search_cost
from .cif import MAX_CIF_POSITIONS, OCCUPANCY_TOLERANCE
from .reading import (ASE_INSTALL, FILE_FORMATS, MAX_STRUCTURE_FILE_BYTES, StructureLike,
                      crystal_list, file_format, is_ase_atoms, load_structure, read_structure_file, structure_path)
from .settings import (DEFAULT_SETTINGS, MAX_BOND_FEATURES, MAX_NEIGHBOR_FEATURES, MAX_NEIGHBORS, MAX_RADIUS,
                       GraphSettings, check_settings)

__all__ = ["ASE_INSTALL", "DEFAULT_SETTINGS", "FILE_FORMATS", "MAX_BOND_FEATURES", "MAX_CIF_POSITIONS", "MAX_JOBS",
           "MAX_NEIGHBORS", "MAX_NEIGHBOR_FEATURES", "MAX_RADIUS", "MAX_STRUCTURE_FILE_BYTES", "MIN_DISTANCE",
           "MIN_VOLUME_PER_ATOM", "OCCUPANCY_TOLERANCE", "SEARCH_BUDGET", "TIE_TOLERANCE", "CrystalGraph",
           "GraphArrays", "GraphSettings", "StructureLike", "build_arrays", "build_graph", "build_graphs",
           "check_count", "check_jobs", "check_settings", "collate", "crystal_batches", "crystal_list", "file_format",
           "is_ase_atoms", "iter_batches", "known_elements", "load_structure", "plain", "python_numbers",
           "read_structure_file", "search_cost", "structure_path"]
