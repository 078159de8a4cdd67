"""A crystal → its checked cell (:class:`Cell`, what the neighbour search needs): elements with
CGCNN atom features, one per site, finite numbers, a physical density, periodic in three
directions. From a pymatgen ``Structure``, an ASE ``Atoms``, a structure file or CIF text; plain
P1 CIFs by :func:`~crystalzoo.graphs.plain_cif.read_plain_cif`, the others by pymatgen."""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StructureError
from .cif import full_occupancy
from .plain_cif import read_plain_cif
from .reading import StructureLike, from_text, load_structure, read_text
from .settings import atom_table

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Structure


#: less volume per atom (Å³) than this is no real crystal (the densest solids have ≈ 5).
MIN_VOLUME_PER_ATOM = 1.0


def _atomic_numbers(structure: "Structure", name: Any = None) -> np.ndarray:
    """The atomic numbers of an ordered structure's sites; ``name`` (None: the structure's
    formula) in the message where it is not one."""
    if name is None:
        name = _FormulaOf(structure)
    species = []
    for site in structure:  # as pymatgen's ``site.specie``, without its second pass through the composition
        occupancy = list(site.species.items())  # (species, occupancy) pairs
        if len(occupancy) != 1 or not full_occupancy(occupancy[0][1]):
            raise StructureError(
                f"{name}: has partially occupied (disordered) sites; CGCNN needs one element per "
                "site. Order it first, e.g. with pymatgen's OrderDisorderedStructureTransformation."
            )
        species.append(occupancy[0][0])
    if not species:
        raise StructureError(f"{name}: has no atoms")
    z = np.array([getattr(sp, "Z", 0) for sp in species], dtype=np.int64)
    _check_known(z, name, species)
    return z


def _check_known(z: np.ndarray, name: Any, species: list | None = None) -> None:
    """:class:`StructureError` where an atomic number of ``z`` has no CGCNN atom features,
    naming the ``species`` (their atomic numbers' elements if not given)."""
    known = known_elements(z)
    if not known.all():
        if species is None:
            from pymatgen.core import Element

            species = [Element.from_Z(int(v)) if 0 < v < 119 else f"Z={v}" for v in z]
        bad = [str(sp) for sp, ok in zip(species, known) if not ok]
        raise StructureError(
            f"{name}: no CGCNN atom features for {sorted(set(bad))} (the table covers "
            f"elements Z = 1…{len(atom_table()) - 1}); dummy species and heavier elements "
            "cannot be featurised"
        )


def known_elements(z: np.ndarray) -> np.ndarray:
    """Whether each atomic number in ``z`` has CGCNN atom features (a bool array)."""
    table = atom_table()
    known = (z > 0) & (z < len(table))
    known[known] = ~np.isnan(table[z[known], 0])
    return known


@dataclass
class Cell:
    """What the neighbour search needs from a validated crystal: a few small arrays, cheap to
    send to worker processes (pickling a pymatgen ``Structure`` costs more than its graph)."""

    name: Any  # in messages: a path, "CIF text", or the crystal's Formula
    z: np.ndarray  # (N,) int64 atomic numbers
    lattice: np.ndarray  # (3, 3) Å
    pbc: np.ndarray  # (3,) int64, all 1: only crystals periodic in all three directions get this far
    cart: np.ndarray  # (N, 3) Å
    volume: float  # Å³
    extent: tuple  # (cartesian min, max, fractional min, max, lattice-plane spacings), each 3 floats


_PERIODIC = np.ones(3, dtype=np.int64)


def _cell(structure: "Structure", name: Any = None) -> Cell:
    """Check a structure (elements, finite numbers, density, periodicity) and take its arrays;
    ``name`` (None: its formula) in messages."""
    z = _atomic_numbers(structure, name)
    name = Formula(tuple(z.tolist())) if name is None else name
    pbc = structure.lattice.pbc
    if not all(pbc):
        raise StructureError(f"{name}: is periodic only along {[bool(p) for p in pbc]} (pbc): CGCNN graphs are for "
                             "crystals, periodic in all three directions; a molecule or a slab is not one")
    return cell_of(name, z, structure.lattice.matrix, structure.cart_coords)


def cell_of(name: Any, z: np.ndarray, lattice: np.ndarray, cart: np.ndarray) -> Cell:
    """The :class:`Cell` of a crystal periodic in three directions, from its atomic numbers (of
    elements with atom features), lattice matrix and Cartesian coordinates, checked: finite
    numbers, a physical density."""
    lattice = np.ascontiguousarray(lattice, dtype=float)
    cart = np.ascontiguousarray(cart, dtype=float)  # not finite if the fractional ones are not
    if not (np.isfinite(lattice).all() and np.isfinite(cart).all()):
        raise StructureError(f"{name}: lattice or coordinates are not finite numbers")
    # plain arithmetic on 9 numbers (numpy's det and inv cost more than a small crystal's search):
    # the cross products of the lattice vectors are the reciprocal vectors times the volume
    a, b, c = lattice.tolist()
    normals = (_cross(b, c), _cross(c, a), _cross(a, b))
    signed = a[0] * normals[0][0] + a[1] * normals[0][1] + a[2] * normals[0][2]
    volume = abs(signed)
    if not volume / len(z) >= MIN_VOLUME_PER_ATOM:
        raise StructureError(
            f"{name}: {volume / len(z):.3g} Å³ per atom is not a physical crystal (solids have about 5 Å³ per "
            "atom or more): check the lattice parameters and their units (Å)"
        )
    spacing = [volume / math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) for v in normals]  # between lattice planes
    to_frac = np.array(normals).T / signed
    frac = cart @ to_frac
    both = np.concatenate([cart, frac], axis=1)
    lo, hi = both.min(axis=0).tolist(), both.max(axis=0).tolist()
    if min(lo[3:]) < -1 or max(hi[3:]) > 2:
        # atoms listed cells away (unwrapped coordinates, as from a trajectory): the same crystal
        # with them moved into the cell, where the search looks at far fewer periodic images
        frac = frac - np.floor(frac)
        cart = np.ascontiguousarray(frac @ lattice)
        both = np.concatenate([cart, frac], axis=1)
        lo, hi = both.min(axis=0).tolist(), both.max(axis=0).tolist()
    extent = (lo[:3], hi[:3], lo[3:], hi[3:], spacing)
    return Cell(name, z, lattice, _PERIODIC, cart, volume, extent)


def _cross(u: list, v: list) -> tuple:
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


@dataclass(frozen=True)
class Formula:
    """A crystal's name in messages, its formula (as pymatgen's ``Structure.formula``), written
    only when a message needs it: the formula cost more than a fifth of building a small
    crystal's graph."""

    z: tuple

    def __str__(self) -> str:
        from pymatgen.core import Composition, Element

        return Composition({Element.from_Z(v): n for v, n in Counter(self.z).items()}).formula


@dataclass(frozen=True)
class _FormulaOf:
    """A structure's formula in a message, written only when a message needs it."""

    structure: Any

    def __str__(self) -> str:
        return self.structure.formula


def to_cell(source: StructureLike) -> Cell:
    """Read and check one crystal (a ``Structure``, an ASE ``Atoms``, a structure file or CIF
    text). A plain P1 CIF is read by :func:`~crystalzoo.graphs.plain_cif.read_plain_cif`, the
    same numbers as pymatgen's reader about 11 times faster (scripts/check_plain_cif.py); any other by pymatgen."""
    if isinstance(source, (str, os.PathLike)):
        text, fmt, path = read_text(source)
        name = "CIF text" if path is None else str(path)
        plain = read_plain_cif(text) if fmt == "cif" else None
        if plain is not None:
            _check_known(plain[0], name)
            return cell_of(name, *plain)
        return _cell(from_text(text, fmt, path), name)
    return _cell(load_structure(source))
