"""A fast reader for the plainest CIFs: P1, the identity operation alone, one fully occupied
element per site, as pymatgen's ``CifWriter`` writes them (the Materials Project's CIFs, and
``structure.to(filename="x.cif")``). It gives what crystalzoo keeps of a structure (elements,
lattice, Cartesian coordinates, in pymatgen's order) with the same numbers as pymatgen's
``CifParser``, about 11 times faster; any other CIF is read by pymatgen, with all its checks
(:func:`~crystalzoo.graphs.cif.parse_cif`). ``python scripts/check_plain_cif.py`` compares the two on
every crystal of the shared data; ``tests/graphs/test_plain_cif.py`` on every CIF the tests hold.

The numbers are pymatgen's because its steps are taken in its order: the lattice from
``Lattice.from_parameters``; fractional coordinates within 1e-4 (relative) of 1/3 or 2/3 set to
them (``CifParser``'s ``frac_tolerance``); coordinates wrapped into [0, 1) as ``x - floor(x)``; the
sites sorted, stably, by electronegativity and then symbol (``Structure.get_sorted_structure``);
Cartesian coordinates as the product of each row with the lattice matrix. Whatever would make
pymatgen do more (two sites within its ``site_tolerance``, as written or once wrapped, an element
without an electronegativity, a cell thinner than its ``min_thickness``, a block it skips, more
than ``MAX_SITES`` sites, any tag, quote, comment or value outside the plain form) returns
``None``, and pymatgen reads the file.
"""

from __future__ import annotations

import functools
import math
import re
import warnings

import numpy as np

#: the tags of a plain CIF outside its two loops, each at most once; the cell's six are needed
_CELL = ("_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta",
         "_cell_angle_gamma")
_IGNORED = ("_chemical_formula_structural", "_chemical_formula_sum", "_cell_volume", "_cell_formula_units_Z")
_SYMMETRY = {"_symmetry_space_group_name_H-M": "'P 1'", "_symmetry_Int_Tables_number": "1"}
_SYMMETRY_LOOP = ["_symmetry_equiv_pos_site_id", "_symmetry_equiv_pos_as_xyz"]
_SITE_LOOP = ["_atom_site_type_symbol", "_atom_site_label", "_atom_site_symmetry_multiplicity", "_atom_site_fract_x",
              "_atom_site_fract_y", "_atom_site_fract_z", "_atom_site_occupancy"]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(_NUM)
#: one row of the site loop: element symbol, label, multiplicity, x, y, z, occupancy
_SITE_ROW = re.compile(rf"([A-Z][a-z]?)\s+[A-Z][A-Za-z0-9]*\s+\d+\s+({_NUM})\s+({_NUM})\s+({_NUM})\s+({_NUM})")
#: a tag's value: one plain token (no quote, no leading '_' or ';', no '#') or one quoted value
_VALUE = re.compile(r"[A-Za-z0-9.+\-()]+|'[A-Za-z0-9.,+\-() ]*'")
_HEADER = re.compile(r"data_[A-Za-z0-9_.+\-()]*")

#: pymatgen's CifParser defaults: sites this close (fractional, per axis, through the cell's
#: edges) are one site; coordinates this close (relative) to 1/3 or 2/3 are set to them; cells
#: thinner than this (Å) are refused
SITE_TOLERANCE = 1e-4
FRAC_TOLERANCE = 1e-4
MIN_THICKNESS = 0.01
#: more sites than this are left to pymatgen (the duplicate check compares every pair: a few MB at most)
MAX_SITES = 500


@functools.lru_cache(maxsize=None)
def _element(symbol: str) -> tuple[int, float] | None:
    """(Z, electronegativity) of an element symbol, or None: not an element, or one without an
    electronegativity in pymatgen (noble gases, superheavy elements), whose sort pymatgen does
    differently."""
    from pymatgen.core import Element

    if not Element.is_valid_symbol(symbol) or Element(symbol).symbol != symbol:
        return None
    element = Element(symbol)
    with warnings.catch_warnings():  # "No Pauling electronegativity for He"
        warnings.simplefilter("ignore")
        x = float(element.X)
    return (int(element.Z), x) if math.isfinite(x) else None


def _number(token: str) -> float | None:
    value = float(token) if _NUMBER.fullmatch(token) else math.nan
    return value if math.isfinite(value) else None


def read_plain_cif(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(atomic numbers (N,), lattice matrix (3, 3) Å, Cartesian coordinates (N, 3) Å) of a plain
    P1 CIF, as pymatgen's ``CifParser`` would give them; ``None`` for any other CIF.

    Example::

        >>> from pymatgen.core import Lattice, Structure
        >>> cif = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
        >>> z, lattice, cart = read_plain_cif(cif)
        >>> z.tolist(), cart[1].round(3).tolist()
        ([55, 17], [2.06, 2.06, 2.06])
        >>> read_plain_cif(cif.replace("'P 1'", "'P m -3 m'")) is None
        True
    """
    if not text.isascii() or "\t" in text or '"' in text or "#" in text.lstrip("#").split("\n", 1)[-1]:
        return None  # (a first line of comment alone, as pymatgen writes)
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines or not _HEADER.fullmatch(lines[0]) or "powder_pattern" in lines[0]:
        return None  # (pymatgen skips a block of that name)
    tags: dict[str, str] = {}
    i = 1
    while i < len(lines) and lines[i] != "loop_":
        name, _, value = lines[i].partition(" ")
        value = value.strip()
        if name in tags or (name not in _CELL and name not in _IGNORED and name not in _SYMMETRY) \
                or not _VALUE.fullmatch(value):
            return None
        tags[name] = value
        i += 1
    if lines[i : i + 4] != ["loop_", *_SYMMETRY_LOOP, "1  'x, y, z'"][:4] or lines[i + 4 : i + 5] != ["loop_"]:
        return None
    if lines[i + 5 : i + 12] != _SITE_LOOP or any(tags.get(k, v) != v for k, v in _SYMMETRY.items()):
        return None
    sites = [_SITE_ROW.fullmatch(line) for line in lines[i + 12 :]]
    if not sites or not all(sites) or not all(k in tags for k in _CELL):
        return None
    return _arrays([_number(tags[k]) for k in _CELL], [m.groups() for m in sites])


def _arrays(cell: list, sites: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    from pymatgen.core import Lattice

    if any(v is None for v in cell) or len(sites) > MAX_SITES:
        return None
    elements = [_element(symbol) for symbol, *_ in sites]
    if None in elements or any(float(occupancy) != 1.0 for *_, occupancy in sites):
        return None
    z = [e[0] for e in elements]
    x = [e[1] for e in elements]
    f = np.array([[float(v) for v in row[1:4]] for row in sites], dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(f).all():
        return None
    matrix = Lattice.from_parameters(*cell).matrix
    a, b, c = matrix.tolist()
    normals = [_cross(b, c), _cross(c, a), _cross(a, b)]
    volume = abs(sum(p * q for p, q in zip(a, normals[0])))
    if not all(volume > 2 * MIN_THICKNESS * math.sqrt(sum(v * v for v in n)) for n in normals):
        return None  # pymatgen's thickness check (or a degenerate cell): its message
    for ideal in (1 / 3, 2 / 3):  # CifParser._sanitize_data
        f[np.abs(f / ideal - 1) <= FRAC_TOLERANCE] = ideal
    if _close_pair(f):
        return None  # pymatgen merges such sites into one (a disordered one)
    f = f + 0.0  # -0.0 as +0.0, as pymatgen's symmetry operation gives it
    f = f - np.floor(f)
    if _close_pair(f):
        return None  # pymatgen drops one of two sites that wrapping brought this close (-0.00005 is 0.99995)
    symbols = [symbol for symbol, *_ in sites]
    order = sorted(range(len(z)), key=lambda i: (x[i], symbols[i]))  # stable, as pymatgen's Site.__lt__
    f = f[order]
    cart = np.array([np.dot(row, matrix) for row in f]).reshape(-1, 3)
    return np.array(z, dtype=np.int64)[order], np.ascontiguousarray(matrix, dtype=float), cart


def _close_pair(f: np.ndarray) -> bool:
    """Whether two of the fractional coordinates ``f`` (N, 3) are within ``SITE_TOLERANCE`` on
    every axis, through the cell's edges (pymatgen's ``find_in_coord_list_pbc``)."""
    d = f[:, None, :] - f[None, :, :]
    d -= np.round(d)
    close = (np.abs(d) < SITE_TOLERANCE).all(axis=2)
    np.fill_diagonal(close, False)
    return bool(close.any())


def _cross(u: list, v: list) -> list:
    return [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]
