"""CIF text → a pymatgen ``Structure``, checked before pymatgen parses it: the size of its
symmetry expansion, magnetic CIFs, unknown elements, one data block per file (docs/robustness.md,
"Structures and CIF files")."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from ..errors import StructureError

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Structure


#: a site of one element whose occupancy is this close to 1 is fully occupied (CIFs round
#: occupancies: 0.99999, 1.00001); pymatgen scales a total occupancy up to 1 + this down to 1
OCCUPANCY_TOLERANCE = 1e-3


def full_occupancy(occupancy: float) -> bool:
    """Whether ``occupancy`` is 1 within :data:`OCCUPANCY_TOLERANCE` (and float rounding: 1 - 0.999
    is 0.0010000000000000009): the one rule for a fully occupied site."""
    return abs(occupancy - 1) <= OCCUPANCY_TOLERANCE + 1e-9


def parse_cif(text: str, name: str) -> "Structure":
    from pymatgen.io.cif import CifParser

    text = text.replace("\r\n", "\n").replace("\r", "\n")  # Windows and old Mac line ends read alike
    if not text.strip():
        raise StructureError(f"{name}: empty file")
    if "data_" not in text:
        raise StructureError(f"{name}: not a CIF (no 'data_' block)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parser = CifParser.from_str(text, occupancy_tolerance=1 + OCCUPANCY_TOLERANCE)
            _check_cif_block(parser, text, name)
            structures = parser.parse_structures(primitive=False, on_error="raise")
        _check_symmetry_read(caught, parser, name)
    except StructureError:
        raise
    except Exception as exc:  # pymatgen raises many types for broken CIFs
        reason = " ".join(str(exc).split())[:300]  # one line
        raise StructureError(f"{name}: cannot be read as a crystal structure ({reason})") from None
    if not structures:
        raise StructureError(f"{name}: has no crystal structure in it")
    if len(structures) > 1:
        raise StructureError(
            f"{name}: holds {len(structures)} data blocks; split it into one CIF per crystal"
        )
    return structures[0]


def _first_text(value: Any) -> str:
    """The first value of a CIF item (a loop's first row), as text without quotes or spaces."""
    return str(_listed(value)[0]).strip().strip("'\"")


def _group_keys(data: dict) -> tuple[bool, bool]:
    """Whether a CIF block names a space group (an H-M or Hall symbol, an IT number; not the
    placeholders ``?`` and ``.``), and whether it lists operations as xyz triplets under any name."""
    named = listed = False
    for key, value in data.items():
        low = key.lower().replace(".", "_")
        if low.endswith(("operation_xyz", "equiv_pos_as_xyz", "operation_xyz_", "equiv_pos_as_xyz_")):
            listed = True
        elif any(word in low for word in ("name_h-m", "name_hall", "it_number", "int_tables_number")):
            named = named or _first_text(value) not in ("", "?", ".")
    return named, listed


def _check_symmetry_read(caught: list, parser: Any, name: str) -> None:
    """:class:`StructureError` when pymatgen read no symmetry operations although the CIF lists
    them under a name it does not know (CIF 2's ``_space_group_symop.operation_xyz``), or fell
    back to P1 although the CIF names a space group it cannot parse (``'F d -3 m S'``, a Hall
    symbol alone): the listed sites alone would be taken for the whole crystal."""
    messages = [str(w.message) for w in caught]
    unread = any("No _symmetry_equiv_pos_as_xyz type key found" in m for m in messages)
    fallback = any("Defaulting to P1" in m for m in messages)
    if not (unread or fallback):
        return
    for block in getattr(getattr(parser, "_cif", None), "data", {}).values():
        named, listed = _group_keys(block.data)
        if unread and listed:
            raise StructureError(f"{name}: lists symmetry operations under a name pymatgen does not read (such as "
                                 "CIF 2's _space_group_symop.operation_xyz), so they would be ignored. Write them "
                                 "under _symmetry_equiv_pos_as_xyz, or write the CIF in P1 with every atom listed")
        if fallback and named:
            raise StructureError(f"{name}: names a space group whose symmetry operations could not be read (pymatgen "
                                 "would take the listed sites alone, as P1). Write the operations under "
                                 "_symmetry_equiv_pos_as_xyz, or write the CIF in P1 with every atom listed")


#: the space groups the International Tables give in two origin choices (centrosymmetric groups
#: with an origin at -1 and another at a site of higher symmetry)
TWO_ORIGIN_GROUPS = frozenset({48, 50, 59, 68, 70, 85, 86, 88, 125, 126, 129, 130, 133, 134, 137, 138, 141, 142, 201,
                               203, 222, 224, 227, 228})


def _check_origin_choice(data: dict, name: str) -> None:
    """:class:`StructureError` for a CIF block that names a space group of two origin choices
    but lists no symmetry operations: which origin its coordinates use is not said, and pymatgen
    takes the first (Si at 1/8, 1/8, 1/8 in F d -3 m, origin choice 2, became 16 atoms)."""
    if _group_keys(data)[1]:
        return  # the operations are listed: no origin to guess
    number = None
    for key, value in data.items():
        low = key.lower().replace(".", "_")
        if low in ("_space_group_it_number", "_symmetry_int_tables_number"):
            try:
                number = int(_first_text(value))
            except ValueError:
                pass
        elif number is None and "name_h-m" in low:
            from pymatgen.symmetry.groups import SpaceGroup

            symbol = _first_text(value)
            if ":" in symbol:  # the setting is named ('F d -3 m :2'): nothing to guess
                return
            try:
                number = SpaceGroup(symbol).int_number
            except Exception:  # a symbol pymatgen cannot read: _check_symmetry_read says so
                pass
    if number in TWO_ORIGIN_GROUPS:
        raise StructureError(f"{name}: names space group {number}, which has two origin choices, without listing its "
                             "symmetry operations, so which origin the coordinates use is unclear. List the "
                             "operations under _symmetry_equiv_pos_as_xyz, or write the CIF in P1")


#: most positions a CIF's symmetry operations may generate (sites listed × operations) before
#: pymatgen merges the duplicates, a step whose time grows with the square of this number
#: (``python scripts/cif_expansion_cost.py`` on 2 cores: 9,600 positions 8 s, 19,200 29 s,
#: 38,400 126 s). A 1,728-atom supercell listed in P1 has 1,728; a zeolite's 30 sites in a
#: group of order 192 have 5,760
#: (docs/robustness.md)
MAX_CIF_POSITIONS = 20_000


_SYMOP_KEYS = ("_symmetry_equiv_pos_as_xyz", "_symmetry_equiv_pos_as_xyz_", "_space_group_symop_operation_xyz",
               "_space_group_symop_operation_xyz_")


_MAGNETIC_KEYS = ("_space_group_symop_magn_operation.xyz", "_space_group_symop.magn_operation_xyz",
                  "_space_group_symop_magn_centering.xyz", "_space_group_symop.magn_centering_xyz")


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _n_operations(data: dict) -> int:
    """How many symmetry operations pymatgen will apply to the sites of a CIF block, at most:
    the operations listed, when every one of them reads (pymatgen drops a list it cannot read
    and takes the operations of the space group's name instead); 192, the most any space group
    has, otherwise; listed magnetic operations times their centerings."""
    from pymatgen.core.operations import SymmOp

    magnetic = [len(_listed(data[k])) for k in _MAGNETIC_KEYS if k in data]
    if magnetic:
        return math.prod(magnetic)
    for key in _SYMOP_KEYS:
        if key in data:
            ops = _listed(data[key])
            try:
                for op in ops:
                    if not str(op).strip():
                        raise ValueError("empty")
                    SymmOp.from_xyz_str(str(op))
            except Exception:  # unreadable or empty: pymatgen falls back to the space group
                return 192
            return max(len(ops), 1)
    return 192


def _element_of(symbol: str) -> bool:
    """Whether a CIF type symbol or site label names an element as pymatgen reads it: an
    element symbol (capitalised), then digits, charges or other characters (``K1+``, ``O2-``,
    ``Na1``); ``?``, ``.``, numbers and lower-case names are not."""
    from pymatgen.core import Element

    symbol = str(symbol).strip()
    if not symbol[:1].isupper():
        return False
    return Element.is_valid_symbol(symbol[:2]) if symbol[1:2].islower() and Element.is_valid_symbol(symbol[:2]) \
        else Element.is_valid_symbol(symbol[:1])


def _check_cif_block(parser: Any, text: str, name: str) -> None:
    """:class:`StructureError` before pymatgen expands a CIF whose sites × symmetry operations
    exceed ``MAX_CIF_POSITIONS``, or silently drops a site (occupancy 0 or below, an unknown
    type symbol ``?`` / ``.``)."""
    from pymatgen.io.cif import CifFile

    blocks = getattr(getattr(parser, "_cif", None), "data", None)
    if blocks is None:
        blocks = CifFile.from_str(text).data
    for block in blocks.values():
        data = block.data
        _check_origin_choice(data, name)
        labels = _listed(data.get("_atom_site_label", data.get("_atom_site_fract_x", [])))
        for label, value in zip(labels, _listed(data.get("_atom_site_occupancy", []))):
            try:
                occupancy = float(str(value).split("(")[0])
            except ValueError:
                occupancy = math.nan
            if not occupancy > 0:  # 0, negative, NaN, '?', '.': pymatgen drops the atom
                raise StructureError(f"{name}: site {label} has occupancy {value}: not an atom (a vacancy or an "
                                     "unknown occupancy; pymatgen would drop the atom); give it its occupancy (1 for "
                                     "an ordered site) or remove the site")
            if occupancy > 1 and not full_occupancy(occupancy):
                raise StructureError(f"{name}: site {label} has occupancy {value}, more than 1: a site holds at most one "
                                     "atom; correct its occupancy (1 for an ordered site)")
        symbols = data.get("_atom_site_type_symbol")
        for label, symbol in zip(labels, _listed(symbols) if symbols is not None else labels):
            if not _element_of(symbol):
                what = "type symbol" if symbols is not None else "label (the CIF has no type symbols)"
                raise StructureError(f"{name}: site {label} has the {what} {symbol!r}, which names no element "
                                     "(pymatgen would drop the atom); give its element")
        n_sites = len(_listed(data.get("_atom_site_fract_x", data.get("_atom_site_Cartn_x", labels)))) if labels \
            else 0
        n_ops = _n_operations(data)
        if n_sites * n_ops > MAX_CIF_POSITIONS:
            raise StructureError(
                f"{name}: {n_sites:,} sites under {n_ops} symmetry operations make {n_sites * n_ops:,} positions to "
                f"expand, more than the {MAX_CIF_POSITIONS:,} crystalzoo reads (crystalzoo.graphs.MAX_CIF_POSITIONS): "
                "is it one crystal? Write it in P1 (the sites of one cell listed) if it really is"
            )

