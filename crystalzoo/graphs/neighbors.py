"""The neighbour search under the tie rule: a crystal's cell → its compact graph (:class:`GraphArrays`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import StructureError
from .cells import Cell, to_cell
from .reading import StructureLike
from .settings import GraphSettings


#: atoms closer than this (Å) are taken as overlapping, which no real crystal has.
MIN_DISTANCE = 0.1


#: neighbours whose distances differ by less than this (Å) are tied (docs/graphs.md: measured on
#: the Materials Project data, scripts/find_ties.py)
TIE_TOLERANCE = 1e-4


#: most (centre, neighbour) pairs, periodic images or grid entries one neighbour search may
#: hold (:func:`search_cost`; at most about 1 GB in pymatgen's search). A 1,728-atom supercell
#: needs about 0.2 million pairs; the most any crystal of the Materials Project sample needs is
#: far below this.
SEARCH_BUDGET = 20_000_000
#: the first search's sphere holds about this many times k atoms at the crystal's mean density; atoms without k
#: neighbours safely inside it are searched again over the whole radius (the same graphs whatever it is). On the
#: 34,745 Materials Project crystals 1.5 built the graphs 1.26x faster than 3, every one the same
#: (python scripts/compare_small_sphere.py --data ../shared/data/mp_crystals.jsonl.gz)
SMALL_SPHERE = 1.5
#: the version of the graphs this neighbour search makes, part of the graph cache's key: bumped
#: whenever a crystal's graph changes, so that no cache of an older crystalzoo is reused
#: (2: an isolated atom takes the crystal's 12 nearest atoms, whatever its cell)
GRAPH_VERSION = 2


@dataclass
class GraphArrays:
    """The compact form of one crystal graph (numpy arrays, no features): what the builder
    produces, a ``CrystalDataset`` caches and worker processes send back. :func:`~crystalzoo.graphs.building.collate`
    turns a list of them into a batched :class:`~crystalzoo.graphs.crystal_graph.CrystalGraph`."""

    z: np.ndarray  # (N,) int16 atomic numbers
    src: np.ndarray  # (E,) int32 neighbour j
    dst: np.ndarray  # (E,) int32 centre atom i
    distance: np.ndarray  # (E,) float32 Å
    extended: np.ndarray  # (N,) bool: neighbours found beyond the radius
    weight: np.ndarray | None = None  # (E,) float32 edge weights where a neighbour shell is split; None: all 1

    @property
    def n_atoms(self) -> int:
        return len(self.z)


def _nearest(centers: np.ndarray, dists: np.ndarray, n_centers: int, k: int):
    """For each centre, its k nearest neighbours, ties at the k-th place kept symmetrically.

    Returns (the pairs kept, their weights, the number of pairs each centre had). Let d_k be
    the k-th smallest distance of a centre. Pairs closer than d_k - TIE_TOLERANCE are kept with
    weight 1; the t pairs within TIE_TOLERANCE of d_k share the m places left (m = k - the
    number closer) with weight m / t each, so every centre's weights sum to k (fewer where it
    has fewer pairs, all of weight 1). Without a split shell the weights are None (all 1).
    """
    order = np.lexsort((dists, centers))
    c, d = centers[order], dists[order]
    counts = np.bincount(c, minlength=n_centers)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    kth = np.full(n_centers, np.inf)
    full = counts >= k
    kth[full] = d[starts[full] + k - 1]
    boundary = kth[c]
    kept = d <= boundary + TIE_TOLERANCE
    certain = d < boundary - TIE_TOLERANCE
    tied = kept & ~certain
    if not tied.any():
        return order[kept], None, counts
    n_certain = np.bincount(c[certain], minlength=n_centers)
    n_tied = np.bincount(c[tied], minlength=n_centers)
    ct = c[tied]
    share = (k - n_certain[ct]) / n_tied[ct]
    if (share == 1).all():  # every tied group fills its places exactly: no shell is split
        return order[kept], None, counts
    weight = np.ones(len(d))
    weight[tied] = share
    return order[kept], weight[kept], counts


def search_cost(cell: Cell, centers: np.ndarray, radius: float) -> dict[str, float]:
    """What a search of ``radius`` Å around the atoms ``centers`` of ``cell`` would hold at
    most, as pymatgen's ``find_points_in_spheres`` works: ``pairs`` (centres × atoms per
    sphere at the crystal's mean density), ``images`` (atoms × the periodic images of the
    cell its loop visits) and ``cubes`` (27 × the cells of its linked-cell grid of side
    ``radius`` over the atoms' bounding box widened by ``radius``: the cost of a nearly empty
    huge cell). The box of all atoms bounds that of any centres: plain arithmetic on the
    cell's :attr:`Cell.extent`, so the check costs next to nothing per search."""
    n = len(cell.z)
    lo, hi, flo, fhi, spacing = cell.extent
    side = max(radius, 0.1)
    cubes, images = 27.0, float(n)
    for i in range(3):
        cubes *= math.ceil((hi[i] - lo[i] + 2 * radius) / side)
        if cell.pbc[i]:
            reach = math.ceil((radius + 0.15) / spacing[i])
            images *= math.ceil(fhi[i] + reach) - math.floor(flo[i] - reach)
    return {"pairs": len(centers) * n * (4 / 3) * math.pi * radius**3 / cell.volume, "images": images, "cubes": cubes}


def _check_search_budget(cell: Cell, centers: np.ndarray, radius: float) -> None:
    """:class:`StructureError` before a search whose pairs, images or grid exceed ``SEARCH_BUDGET``."""
    cost = search_cost(cell, centers, radius)
    what, amount = max(cost.items(), key=lambda kv: kv[1])
    if amount > SEARCH_BUDGET:
        raise StructureError(
            f"{cell.name}: the neighbour search within {radius:.4g} Å of {len(centers)} of its {len(cell.z)} atoms "
            f"would hold about {amount:.3g} {what}, more than the budget of {SEARCH_BUDGET:,} "
            "(crystalzoo.graphs.SEARCH_BUDGET). The cell is too large, too empty or too thin for a crystal "
            "graph: check the lattice and the atoms (a nearly empty cell is a molecule or a surface, not a crystal)"
        )


def _search(cell: Cell, centers: np.ndarray, radius: float):
    """All (centre, neighbour, distance) pairs within ``radius`` of the atoms ``centers`` (one per
    periodic image), self-pairs excluded (pymatgen's compiled periodic search, as
    ``Structure.get_neighbor_list``)."""
    from pymatgen.optimization.neighbors import find_points_in_spheres

    _check_search_budget(cell, centers, radius)
    c, p, _, d = find_points_in_spheres(cell.cart, np.ascontiguousarray(cell.cart[centers]), r=float(radius),
                                        pbc=cell.pbc, lattice=cell.lattice, tol=1e-8)
    keep = ~((centers[c] == p) & (d <= 1e-8))
    return c[keep], p[keep], d[keep]


def _candidates(cell: Cell, radius: float, k: int):
    """The neighbour pairs the k nearest neighbours within ``radius`` are chosen from: those of
    a smaller sphere that holds about ``SMALL_SPHERE`` × k atoms at the crystal's mean density, and of the whole
    ``radius`` only for atoms that do not have k neighbours safely inside the small sphere. The
    k nearest (and any tied with the k-th) of the other atoms lie inside it, so the graph is the
    same as from a search of the whole radius, for a fraction of the pairs."""
    n = len(cell.z)
    everyone = np.arange(n)
    small = (3 * SMALL_SPHERE * k * cell.volume / (4 * np.pi * n)) ** (1 / 3)
    if small > 0.8 * radius:
        return _search(cell, everyone, radius)
    c, p, d = _search(cell, everyone, small)
    done = np.bincount(c[d < small - 3 * TIE_TOLERANCE], minlength=n) >= k
    if done.all():
        return c, p, d
    rest = np.flatnonzero(~done)
    c2, p2, d2 = _search(cell, rest, radius)
    first = done[c]
    return np.concatenate([c[first], rest[c2]]), np.concatenate([p[first], p2]), np.concatenate([d[first], d2])


def _beyond(cell: Cell, lonely: np.ndarray, radius: float, k: int):
    """The candidates of the ``k`` nearest neighbours of the atoms ``lonely`` (none within
    ``radius``), at whatever distance they are: (index into ``lonely``, neighbour, distance).

    The sphere grows until it holds ``k`` neighbours of each atom safely inside (with any tied
    with the k-th), starting from the one that holds about k atoms at the crystal's density.
    What it finds depends on the crystal alone, not on its cell: a supercell, or the same cell
    in another basis, gives the same neighbours (a search bounded by the shortest lattice vector
    did not)."""
    n = len(cell.z)
    r = max(radius, (3 * k * cell.volume / (4 * np.pi * n)) ** (1 / 3)) * 1.0001 + 10 * TIE_TOLERANCE
    position = np.full(n, -1)
    position[lonely] = np.arange(len(lonely))
    todo, parts = lonely, []
    while len(todo):
        c, p, d = _search(cell, todo, r)  # refused by the search budget long before a sphere grows without end
        done = np.bincount(c[d < r - 3 * TIE_TOLERANCE], minlength=len(todo)) >= k
        mine = done[c]
        parts.append((position[todo[c[mine]]], p[mine], d[mine]))
        todo, r = todo[~done], 1.5 * r
    return tuple(np.concatenate(a) for a in zip(*parts))


def _merge_images(src, dst, dist, weight):
    """One edge for the tied candidates of a centre that are periodic images of the same atom:
    they carry the same message, so one edge with their summed weight (at their mean distance)
    gives the same sum with fewer edges (rock salt's 12 second neighbours in a 2-atom cell are
    one edge of weight 6). The edges come sorted by centre and neighbour, and within those by
    distance, so the tied images of a pair are neighbours in the arrays."""
    tied = weight < 1
    same = tied[1:] & tied[:-1] & (src[1:] == src[:-1]) & (dst[1:] == dst[:-1])
    if not same.any():
        return src, dst, dist, weight
    first = np.concatenate(([True], ~same))
    group = np.cumsum(first) - 1
    size = np.bincount(group)
    return src[first], dst[first], np.bincount(group, weights=dist) / size, np.bincount(group, weights=weight)


def cell_arrays(cell: Cell, settings: GraphSettings) -> GraphArrays:
    n = len(cell.z)
    k = settings.max_neighbors
    centers, points, dists = _candidates(cell, settings.radius, k)
    keep, weight, counts = _nearest(centers, dists, n, k)
    src, dst, dist = points[keep], centers[keep], dists[keep]
    extended = counts == 0
    if extended.any():
        # no neighbour within the radius: take the k nearest atoms further out
        lonely = np.flatnonzero(extended)
        c2, p2, d2 = _beyond(cell, lonely, settings.radius, k)
        keep2, weight2, _ = _nearest(c2, d2, len(lonely), k)
        src = np.concatenate([src, p2[keep2]])
        dst = np.concatenate([dst, lonely[c2[keep2]]])
        dist = np.concatenate([dist, d2[keep2]])
        if weight is not None or weight2 is not None:
            weight = np.concatenate([np.ones(len(keep)) if weight is None else weight,
                                     np.ones(len(keep2)) if weight2 is None else weight2])
    if len(dist) and dist.min() < MIN_DISTANCE:
        from pymatgen.core import Element

        e = int(np.argmin(dist))
        i, j = int(dst[e]), int(src[e])
        raise StructureError(
            f"{cell.name}: atoms {i} ({Element.from_Z(int(cell.z[i]))}) and {j} ({Element.from_Z(int(cell.z[j]))}) "
            f"are {dist[e]:.3f} Å apart, which is closer than {MIN_DISTANCE} Å: overlapping atoms; fix the structure"
        )
    # grouped by centre atom; within a centre by neighbour, then (stable) by distance as found
    order = np.lexsort((src, dst))
    src, dst, dist = src[order], dst[order], dist[order]
    if weight is not None:
        src, dst, dist, weight = _merge_images(src, dst, dist, weight[order])
        if np.abs(weight - 1).max() < 1e-6:  # e.g. two images of one atom sharing one place: one edge of weight 1
            weight = None
    return GraphArrays(
        z=cell.z.astype(np.int16),
        src=src.astype(np.int32),
        dst=dst.astype(np.int32),
        distance=dist.astype(np.float32),
        extended=extended,
        weight=None if weight is None else weight.astype(np.float32),
    )


def structure_arrays(source: StructureLike, settings: GraphSettings) -> GraphArrays:
    return cell_arrays(to_cell(source), settings)
