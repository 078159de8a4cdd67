"""Building graphs: crystals → compact graphs (in worker processes with ``n_jobs``) → batched
:class:`~crystalzoo.graphs.CrystalGraph` tensors."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..checks import check_count, check_jobs
from ..errors import ConfigError, CrystalZooError, StructureError
from .crystal_graph import CrystalGraph, made_bonds, uniform_degree
from .cells import Cell, to_cell
from .neighbors import GraphArrays, cell_arrays, structure_arrays
from .reading import StructureLike, crystal_list, structure_list
from .settings import DEFAULT_SETTINGS, GraphSettings, check_settings


#: fewer crystals than this are built in the calling process whatever ``n_jobs`` is: starting worker
#: processes costs more than they save on a few batches (benchmarks/inference.py --quick: 0.7× with 100)
MIN_PARALLEL = 256

#: Gaussian bond features below this are 0 (e^-46; a bond's largest one is about 1). Each adds less than
#: TINY × |weight| to a layer's sums, ten orders of magnitude below float32's resolution of a sum near 1e-3
TINY = 1e-20


def crystal_batches(structures: Any, settings: GraphSettings, batch_size: int, n_jobs: int = 1,
                    progress: bool = False, what: str = "predict") -> Iterator[CrystalGraph]:
    """Batched graphs for ``predict`` / ``embed``: of a data set's cached graphs (a
    ``CrystalDataset`` whose graphs are those of ``settings``; the atom features, looked up
    from the atomic numbers, are those of ``settings``), or built here from crystals
    (:func:`crystal_list`, :func:`iter_batches`)."""
    if hasattr(structures, "graphs") and hasattr(structures, "settings"):  # a CrystalDataset: graphs built already
        check_count(batch_size, "batch_size")
        check_jobs(n_jobs)  # checked as for crystals, though a data set's graphs need no worker
        if not settings.same_graphs(structures.settings):
            settings.check_same(structures.settings, "this model")
        graphs = structures.graphs
        return (collate(graphs[i : i + batch_size], settings) for i in range(0, len(graphs), batch_size))
    return iter_batches(crystal_list(structures, what), settings, batch_size, n_jobs, progress)


def _gaussian(distance: np.ndarray, settings: GraphSettings) -> np.ndarray:
    centers = settings.gaussian_centers
    out = np.exp(-((distance[:, None] - centers[None, :]) ** 2) / settings.gaussian_width**2).astype(np.float32)
    # Gaussians below TINY are 0: they and their products with a layer's weights were subnormal numbers, which made
    # every product with the bond features several times slower on x86 CPUs, and they add nothing a float32 sum holds
    out[out < TINY] = 0.0
    return out


def collate(arrays: Sequence[GraphArrays], settings: GraphSettings = DEFAULT_SETTINGS) -> CrystalGraph:
    """One batched :class:`~crystalzoo.graphs.crystal_graph.CrystalGraph` (atom and bond features
    included) from the compact graphs of several crystals.

    Example::

        >>> from crystalzoo import example_structures
        >>> arrays = build_arrays(example_structures()[:2], progress=False)
        >>> g = collate(arrays)
        >>> g.n_crystals, g.n_atoms.tolist()
        (2, [8, 2])
    """
    import torch

    check_settings(settings)
    arrays = list(arrays)
    if not arrays:
        raise CrystalZooError("collate needs at least one crystal")
    if not all(isinstance(a, GraphArrays) for a in arrays):
        bad = next(a for a in arrays if not isinstance(a, GraphArrays))
        raise CrystalZooError(f"collate takes the GraphArrays of build_arrays, not a {type(bad).__name__}; for "
                              "structures or CIF files use build_graph or iter_batches")
    n_atoms = np.array([a.n_atoms for a in arrays], dtype=np.int64)
    n_edges = np.array([len(a.src) for a in arrays], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(n_atoms)[:-1]))
    src = np.concatenate([a.src.astype(np.int64) + o for a, o in zip(arrays, offsets)])
    dst = np.concatenate([a.dst.astype(np.int64) + o for a, o in zip(arrays, offsets)])
    z = np.concatenate([a.z for a in arrays]).astype(np.int64)
    dist = np.concatenate([a.distance for a in arrays]).astype(np.float32, copy=False)
    # symmetry makes most bond lengths recur: the Gaussians (and a model's functions of them) once per distinct one
    lengths, first, of_edge = np.unique(dist, return_index=True, return_inverse=True)
    dst_t = torch.from_numpy(dst)
    weighted = any(a.weight is not None for a in arrays)
    weight = (torch.from_numpy(np.concatenate([a.weight if a.weight is not None else np.ones(len(a.src), np.float32)
                                               for a in arrays])) if weighted else None)
    bond_fea = torch.from_numpy(_gaussian(lengths, settings)[of_edge])
    return CrystalGraph(
        atom_fea=torch.from_numpy(settings.atom_table()[z]),
        bond_fea=bond_fea,
        src=torch.from_numpy(src),
        dst=dst_t,
        crystal=torch.from_numpy(np.repeat(np.arange(len(arrays), dtype=np.int64), n_atoms)),
        n_atoms=torch.from_numpy(n_atoms),
        n_edges=torch.from_numpy(n_edges),
        distance=torch.from_numpy(dist),
        z=torch.from_numpy(z),
        extended=torch.from_numpy(np.concatenate([a.extended for a in arrays]).astype(bool, copy=False)),
        edge_weight=weight,
        degree=uniform_degree(dst_t, len(z)),
        settings=settings,
        distinct_bonds=torch.from_numpy(first.astype(np.int64, copy=False)),
        bond_of_edge=torch.from_numpy(of_edge.astype(np.int64, copy=False).reshape(-1)),
        bonds_made=made_bonds(bond_fea),
    )


def build_graph(structure: StructureLike, settings: GraphSettings = DEFAULT_SETTINGS, backend: str = "torch"):
    """The CGCNN graph of one crystal (a pymatgen ``Structure``, a CIF path or CIF text): a
    :class:`~crystalzoo.graphs.crystal_graph.CrystalGraph`, or with ``backend="dgl"`` a
    ``dgl.DGLGraph`` (the ``[dgl]`` extra).

    Example::

        >>> from pymatgen.core import Lattice, Structure
        >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        >>> g = build_graph(cscl)  # per atom: 8 neighbours, then 6 own images sharing 4 places (one edge)
        >>> g.total_edges, sorted(g.edge_weight[g.dst == 0].tolist())
        (18, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0])
    """
    return build_graphs([structure], settings, progress=False, backend=backend)[0]


def build_arrays(
    structures: Iterable[StructureLike],
    settings: GraphSettings = DEFAULT_SETTINGS,
    progress: bool = True,
    n_jobs: int = 1,
    names: Sequence[str] | None = None,
) -> list[GraphArrays]:
    """The compact graphs (:class:`GraphArrays`) of many crystals, in order, with a progress
    bar; ``n_jobs > 1`` builds them in parallel processes (``-1``: one per core). This is
    what a ``CrystalDataset`` caches; :func:`collate` batches them for a model. A crystal that
    cannot be built is a :class:`StructureError` that says which one: its position, or its
    name in ``names`` (e.g. the data set's ids).

    Example::

        >>> from crystalzoo import example_structures
        >>> [a.n_atoms for a in build_arrays(example_structures()[:1], progress=False)]
        [8]
    """
    return [a for part in _iter_arrays(structures, settings, progress, n_jobs, names=names) for a in part]


def iter_batches(
    structures: Iterable[StructureLike],
    settings: GraphSettings = DEFAULT_SETTINGS,
    batch_size: int = 256,
    n_jobs: int = 1,
    progress: bool = False,
) -> Iterator[CrystalGraph]:
    """Batched graphs of ``structures``, ``batch_size`` crystals at a time, in order. With
    ``n_jobs > 1`` cores for files and CIF texts, half of them (at least one) are worker
    processes that read and build the next batches while the caller runs a model on this one
    with the other half (torch's threads, while the batches are read; at most two batches per
    worker ahead: memory stays bounded). Structures already in memory are built in the calling
    process whatever ``n_jobs`` is: beside a model on the same cores, workers made ``predict``
    slower (docs/results/performance.md).

    Example::

        >>> from crystalzoo import example_structures
        >>> [g.n_crystals for g in iter_batches(example_structures()[:1] * 3, batch_size=2)]
        [2, 1]
    """
    check_count(batch_size, "batch_size")
    n_jobs = check_jobs(n_jobs)
    structures = structure_list(structures)
    if not any(isinstance(s, (str, os.PathLike)) for s in structures):  # nothing for the workers to read
        n_jobs = 1
    for part in _iter_arrays(structures, settings, progress, n_jobs, chunk=batch_size, workers=max(1, n_jobs // 2)):
        yield collate(part, settings)


@contextlib.contextmanager
def _threads_at_most(n: int) -> Iterator[None]:
    """torch's threads in this process at most ``n`` inside the block: the cores left beside
    graph-building workers (4 busy threads on 2 cores made predict 0.9× its
    speed with one process)."""
    import torch

    before = torch.get_num_threads()
    if n < before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _iter_arrays(
    structures: Iterable[StructureLike],
    settings: GraphSettings,
    progress: bool = True,
    n_jobs: int = 1,
    chunk: int | None = None,
    names: Sequence[str] | None = None,
    workers: int | None = None,
) -> Iterator[list[GraphArrays]]:
    """The compact graphs of ``structures`` in order, ``chunk`` crystals at a time. With
    ``n_jobs > 1`` worker processes (``workers`` of them, default ``n_jobs``) build the next
    chunks while the caller uses this one, its torch on the ``n_jobs - workers`` cores left (at
    least one) meanwhile. A
    :class:`StructureError` says which crystal failed (``names[i]``, or its position) where
    there are several."""
    from ..progress import progress_bar

    n_jobs = check_jobs(n_jobs)
    check_settings(settings)
    structures = structure_list(structures)
    if names is not None and (isinstance(names, str) or not isinstance(names, Sequence) or len(names) != len(structures)
                              or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"names must be a list of {len(structures)} strings, one per crystal, got "
                          f"{str(names)[:60]}")
    parallel = n_jobs > 1 and len(structures) >= MIN_PARALLEL
    if chunk is None:
        chunk = max(16, len(structures) // (8 * n_jobs)) if parallel else max(1, len(structures))
    chunks = [structures[i : i + chunk] for i in range(0, len(structures), chunk)]
    parallel = parallel and len(chunks) > 1
    n = len(structures)
    try:
        with progress_bar(total=n, desc="building graphs", unit="crystal", disable=not progress, leave=False) as bar:
            if not parallel:
                for k, part in enumerate(chunks):
                    out = []
                    for i, s in enumerate(part, k * chunk):
                        out.append(_at(i, structure_arrays, s, settings))
                        bar.update()
                    yield out
                return
            workers = min(workers or n_jobs, len(chunks))
            with _threads_at_most(max(1, n_jobs - workers)):  # the caller's torch on the cores left
                for part in _in_workers(chunks, chunk, settings, workers):
                    bar.update(len(part))
                    yield part
    except StructureError as exc:
        i = getattr(exc, "position", None)
        if i is None or n == 1:
            raise
        which = f"crystal {names[i]!r}" if names is not None and i < len(names) else f"crystal {i + 1} of {n}"
        raise StructureError(f"{which}: {exc}") from None


def _in_workers(chunks: list, chunk: int, settings: GraphSettings, workers: int) -> Iterator[list[GraphArrays]]:
    """The compact graphs of ``chunks`` (``chunk`` crystals each, the last maybe fewer), built
    in ``workers`` processes, in order. At most two chunks per worker are in flight (memory
    stays bounded whatever the input's length); stopping early cancels the rest."""
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers)
    try:
        pending: deque = deque()
        for k, part in enumerate(chunks):
            sources = [_at(i, _for_worker, s) for i, s in enumerate(part, k * chunk)]
            pending.append(pool.submit(_build_chunk, sources, settings, k * chunk))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _at(i: int, build, *args):
    """``build(*args)``, a :class:`StructureError` marked with the crystal's position ``i``."""
    try:
        return build(*args)
    except StructureError as exc:
        exc.position = i
        raise


def _build_chunk(sources: list, settings: GraphSettings, start: int = 0) -> list[GraphArrays]:
    return [_at(i, cell_arrays, s, settings) if isinstance(s, Cell) else _at(i, structure_arrays, s, settings)
            for i, s in enumerate(sources, start)]


def _for_worker(source: StructureLike) -> "Cell | StructureLike":
    """What to send to a worker process: a ``Structure`` as its small cell arrays, a CIF
    path or text as it is (the worker reads it)."""
    from pymatgen.core import (
        IStructure as Structure,  # Structure and the immutable IStructure
    )

    return to_cell(source) if isinstance(source, Structure) else source


def build_graphs(
    structures: Iterable[StructureLike],
    settings: GraphSettings = DEFAULT_SETTINGS,
    progress: bool = True,
    n_jobs: int = 1,
    backend: str = "torch",
) -> list:
    """One graph per crystal (``CrystalGraph``, or ``dgl.DGLGraph`` with ``backend="dgl"``),
    with a progress bar; ``n_jobs > 1`` builds them in parallel processes (``-1``: one per
    core). To batch many crystals for a model, :func:`iter_batches` (or :func:`build_arrays`
    then :func:`collate`) is faster than building single graphs.

    Example::

        >>> from crystalzoo import example_structures
        >>> graphs = build_graphs(example_structures()[:2], progress=False)
        >>> len(graphs)
        2
    """
    if backend not in ("torch", "dgl"):
        raise CrystalZooError(f"backend must be 'torch' or 'dgl', got {backend!r}")
    graphs = [collate([a], settings) for a in build_arrays(structures, settings, progress, n_jobs)]
    return [g.to_dgl() for g in graphs] if backend == "dgl" else graphs
