"""The graph cache: built graphs kept on disk, keyed by the crystal and the graph settings."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, CrystalZooError
from ..graphs.building import build_arrays
from ..graphs.cells import known_elements
from ..graphs.neighbors import GRAPH_VERSION, MIN_DISTANCE, TIE_TOLERANCE, GraphArrays
from ..graphs.reading import load_structure, read_structure_file, structure_path
from ..graphs.settings import GraphSettings

logger = logging.getLogger("crystalzoo.data")


def default_cache_dir() -> Path:
    """``$CRYSTALZOO_CACHE`` (when set and not empty), else ``~/.cache/crystalzoo``."""
    value = os.environ.get("CRYSTALZOO_CACHE", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "crystalzoo"


def structure_key(source: Any) -> str:
    """A content hash of a structure source, of what defines the crystal: a ``Structure``'s
    lattice, coordinates, species and periodicity; a file's bytes; a CIF text itself (none is
    parsed). Any other input (an ``ase.Atoms``…) is read as a ``Structure`` first and keyed as
    one, so that two crystals never share a key (an ``ase.Atoms`` was keyed by its formula
    alone, and a rattled copy got the first one's graphs)."""
    from pymatgen.core import (
        IStructure as Structure,  # Structure and the immutable IStructure
    )

    h = hashlib.sha256()
    if isinstance(source, Structure):
        h.update(np.ascontiguousarray(source.lattice.matrix, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(source.frac_coords, dtype=np.float64).tobytes())
        h.update(" ".join(str(site.species) for site in source).encode())  # disordered sites too (then refused)
        h.update(str(tuple(source.lattice.pbc)).encode())
    elif isinstance(source, (str, os.PathLike)) and (path := structure_path(source)) is not None:
        try:
            h.update(read_structure_file(path))
        except CrystalZooError:  # the graph builder reports it with the file's name
            h.update(str(source).encode())
    elif isinstance(source, str):  # CIF text
        h.update(source.encode())
    else:
        try:
            structure = load_structure(source)
        except CrystalZooError:  # the graph builder reports it, with the crystal's position
            h.update(f"{type(source).__qualname__} {id(source)}".encode())  # never reused
            return h.hexdigest()
        return structure_key(structure)
    return h.hexdigest()


def cached_graphs(structures: list, settings: GraphSettings, cache_dir, progress: bool, n_jobs: int,
                  names: Sequence[str] | None = None) -> list[GraphArrays]:
    """Graph arrays for ``structures``, read from the cache file of exactly this list of
    structures and settings when there is one, built (and cached) otherwise."""
    if cache_dir is False:
        return build_arrays(structures, settings, progress, n_jobs, names=names)
    if not (cache_dir is None or isinstance(cache_dir, (str, os.PathLike))) \
            or (isinstance(cache_dir, str) and not cache_dir.strip()):
        raise ConfigError(f"cache_dir = {cache_dir!r}: give a folder for the graph cache, None for the default "
                          "(CRYSTALZOO_CACHE or ~/.cache/crystalzoo) or False for no cache")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    keys = [structure_key(s) for s in structures]
    h = hashlib.sha256(json.dumps({**settings.to_dict(), "format": _PACK_FORMAT, "graphs": GRAPH_VERSION},
                                  sort_keys=True).encode())
    for k in keys:
        h.update(k.encode())
    path = cache / "graphs" / f"{h.hexdigest()[:32]}.npz"
    if path.is_file():
        try:
            return _read_pack(path, len(structures), settings)
        except Exception as exc:  # an unreadable or inconsistent cache file is rebuilt, never trusted
            logger.warning("the graph cache file %s is unreadable or inconsistent (%s); rebuilding it", path,
                           str(exc)[:100])
    graphs = build_arrays(structures, settings, progress, n_jobs, names=names)
    try:
        _write_pack(path, graphs)
    except OSError as exc:  # read-only or full disk: go on without a cache
        logger.warning("could not write the graph cache %s (%s); graphs will be rebuilt next time", path, exc)
    return graphs


#: the version of the cache files' layout (2: edge weights of split neighbour shells)
_PACK_FORMAT = 2


def _write_pack(path: Path, graphs: list[GraphArrays]) -> None:
    from ..files import atomic_write

    n_atoms = np.array([g.n_atoms for g in graphs], np.int64)
    n_edges = np.array([len(g.src) for g in graphs], np.int64)
    arrays = dict(
        n_atoms=n_atoms, n_edges=n_edges,
        z=np.concatenate([g.z for g in graphs]), extended=np.concatenate([g.extended for g in graphs]),
        src=np.concatenate([g.src for g in graphs]), dst=np.concatenate([g.dst for g in graphs]),
        distance=np.concatenate([g.distance for g in graphs]),
        weight=np.concatenate([g.weight if g.weight is not None else np.ones(len(g.src), np.float32) for g in graphs]),
    )

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _read_pack(path: Path, expected: int, settings: GraphSettings) -> list[GraphArrays]:
    """The graphs of a cache file, checked for consistency first (ValueError otherwise, and
    the caller rebuilds): the counts add up, every edge joins two atoms of its own crystal,
    the elements are in the atom table, the distances are at least ``MIN_DISTANCE`` and, for
    atoms not marked extended, within the radius, and the weights are positive and add up to
    at most ``max_neighbors`` per atom. A file made to pass these checks is used: the cache
    is the user's own folder."""
    with np.load(path) as f:
        a = {k: f[k] for k in f.files}
    n_atoms, n_edges = a["n_atoms"], a["n_edges"]
    if len(n_atoms) != expected or len(n_edges) != expected:
        raise ValueError("cache holds another number of crystals")
    if n_atoms.dtype.kind != "i" or n_edges.dtype.kind != "i" or (n_atoms < 1).any() or (n_edges < 0).any():
        raise ValueError("cache holds impossible counts")
    if not (len(a["z"]) == len(a["extended"]) == n_atoms.sum()) \
            or not (len(a["src"]) == len(a["dst"]) == len(a["distance"]) == len(a["weight"]) == n_edges.sum()):
        raise ValueError("cache counts do not match its arrays")
    atoms = np.repeat(n_atoms, n_edges)  # the atom count of each edge's crystal
    for ends in (a["src"], a["dst"]):
        if ends.dtype.kind != "i" or (ends < 0).any() or (ends >= atoms).any():
            raise ValueError("cache holds an edge to an atom outside its crystal")
    z = a["z"]
    if z.dtype.kind != "i" or not known_elements(z).all():
        raise ValueError("cache holds unknown elements")
    distance, weight = a["distance"], a["weight"]
    if not (np.isfinite(distance).all() and np.isfinite(weight).all()):
        raise ValueError("cache holds non-finite distances or weights")
    if (distance < MIN_DISTANCE).any() or (weight <= 0).any():
        raise ValueError("cache holds distances below the closest approach or weights that are not positive")
    if a["extended"].dtype.kind != "b":
        raise ValueError("cache holds extended flags that are not booleans")
    centre = np.repeat(np.cumsum(n_atoms) - n_atoms, n_edges) + a["dst"]  # each edge's centre atom, over all crystals
    if (np.bincount(centre, weights=weight, minlength=len(z)) > settings.max_neighbors * (1 + 1e-5)).any():
        raise ValueError("cache holds atoms whose edge weights add up to more than max_neighbors")
    if (distance[~a["extended"][centre]] > settings.radius + TIE_TOLERANCE).any():
        raise ValueError("cache holds neighbours beyond the radius for atoms that have them within it")
    na, ne = np.cumsum(n_atoms)[:-1], np.cumsum(n_edges)[:-1]
    return [
        GraphArrays(z, src, dst, d, ext, None if np.allclose(w, 1, rtol=0, atol=1e-6) else w)
        for z, ext, src, dst, d, w in zip(np.split(z, na), np.split(a["extended"], na), np.split(a["src"], ne),
                                          np.split(a["dst"], ne), np.split(a["distance"], ne), np.split(a["weight"], ne))
    ]
