"""Composition descriptors in the style of Magpie (Ward et al., npj Comput. Mater. 2, 16028,
2016): statistics of element properties over a crystal's composition, weighted by the atom
fractions, beside the graph vectors (``embed(..., composition=True)``,
``CrystalFeaturizer(composition=True)``). A crystal-graph vector and these together are what a
booster on 1,000 crystals does best with (docs/which_backbone.md).

The element properties are pymatgen's periodic-table data (MIT), read once: atomic number,
Mendeleev number, atomic mass, melting point, group, row, atomic radius, Pauling
electronegativity, molar volume, first ionisation energy, electron affinity, and the valence
electrons counted from the electron configuration (outer s; p of the outer shell; d one shell
below; f two below, as Magpie counts them), each with its unfilled places. A property pymatgen
does not know for an element (e.g. the electronegativity of He) takes the median of the
elements that have it. Per property: the weighted mean, the weighted mean absolute deviation,
the minimum, the maximum, the range and the value of the most abundant element; and the
fraction norms p = 0 (the number of elements), 2, 3, 5, 7, 10. These are Magpie's kinds of
statistics over pymatgen's numbers, not Magpie's own table: the values differ from matminer's.

Example::

    >>> import numpy as np
    >>> x = element_statistics(np.array([11, 17]), np.array([0, 0]), 1)  # NaCl
    >>> x.shape, float(x[0, COMPOSITION_NAMES.index("mean Z")]), float(x[0, COMPOSITION_NAMES.index("norm 0")])
    ((1, 132), 14.0, 2.0)
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: the element properties, in the order of the table's columns
PROPERTIES = ("Z", "mendeleev number", "atomic mass", "melting point", "group", "row", "atomic radius",
              "electronegativity", "molar volume", "ionisation energy", "electron affinity", "s valence",
              "p valence", "d valence", "f valence", "valence", "s unfilled", "p unfilled", "d unfilled",
              "f unfilled", "unfilled")

STATISTICS = ("mean", "deviation", "min", "max", "range", "mode")

NORMS = (0, 2, 3, 5, 7, 10)

#: the names of the descriptors, in the order of their columns ("mean Z", …, "norm 10")
COMPOSITION_NAMES = [f"{s} {p}" for p in PROPERTIES for s in STATISTICS] + [f"norm {p}" for p in NORMS]

#: the elements the table holds (Z 1 … 100, as the CGCNN atom features)
MAX_Z = 100

_SHELL_SIZE = {"s": 2, "p": 6, "d": 10, "f": 14}


def _valence(element) -> list[float]:
    """Valence electrons per orbital kind and their unfilled places (Magpie's way of counting)."""
    shells = element.full_electronic_structure
    # the outer shell is the period's: palladium ([Kr] 4d10, no 5s) has none of its electrons there,
    # and taking its highest occupied n (4) counted the core 4s2 4p6 as valence
    outer = next(period for period, last in enumerate((2, 10, 18, 36, 54, 86, 118), 1) if element.Z <= last)
    below = {"s": outer, "p": outer, "d": outer - 1, "f": outer - 2}
    count = {k: float(sum(e for n, l, e in shells if l == k and n == below[k])) for k in "spdf"}
    unfilled = {k: (_SHELL_SIZE[k] - count[k] if count[k] else 0.0) for k in "spdf"}
    return [*(count[k] for k in "spdf"), sum(count.values()), *(unfilled[k] for k in "spdf"), sum(unfilled.values())]


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@functools.lru_cache(maxsize=1)
def element_table() -> np.ndarray:
    """(MAX_Z + 1, len(PROPERTIES)) float64: row z holds element z's properties (row 0 unused)."""
    import warnings

    from pymatgen.core.periodic_table import Element

    rows = [[math.nan] * len(PROPERTIES)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about each value it does not have
        for z in range(1, MAX_Z + 1):
            e = Element.from_Z(z)
            row = []
            for name in ("Z", "mendeleev_no", "atomic_mass", "melting_point", "group", "row", "atomic_radius", "X",
                         "molar_volume", "ionization_energy", "electron_affinity"):
                try:
                    row.append(_number(getattr(e, name)))
                except (AttributeError, KeyError, ValueError, TypeError):
                    row.append(math.nan)
            try:
                row.extend(_valence(e))
            except (AttributeError, KeyError, ValueError):
                row.extend([math.nan] * 10)
            rows.append(row)
    table = np.array(rows, dtype=np.float64)
    known = table[1:]
    fill = np.nanmedian(known, axis=0)
    table[1:] = np.where(np.isnan(known), fill, known)
    return table


def element_statistics(z: np.ndarray, crystal: np.ndarray, n_crystals: int) -> np.ndarray:
    """(n_crystals, len(COMPOSITION_NAMES)) float32 descriptors of the crystals whose atoms have
    atomic numbers ``z`` and belong to crystals ``crystal`` (0 … n_crystals - 1, each with at
    least one atom), as a batch's ``g.z`` and ``g.crystal``."""
    z, crystal = np.asarray(z, dtype=np.int64), np.asarray(crystal, dtype=np.int64)
    if len(z) and (z.min() < 1 or z.max() > MAX_Z):
        from .errors import StructureError

        raise StructureError(f"atomic number {int(z.max() if z.max() > MAX_Z else z.min())} has no composition "
                             f"descriptors: the element table holds Z 1 to {MAX_Z}")
    pairs, counts = np.unique(crystal * (MAX_Z + 1) + z, return_counts=True)
    owner, element = pairs // (MAX_Z + 1), pairs % (MAX_Z + 1)
    frac = counts / np.bincount(owner, weights=counts, minlength=n_crystals)[owner]
    props = element_table()[element]
    starts = np.searchsorted(owner, np.arange(n_crystals))
    mean = np.add.reduceat(frac[:, None] * props, starts)
    deviation = np.add.reduceat(frac[:, None] * np.abs(props - mean[owner]), starts)
    low, high = np.minimum.reduceat(props, starts), np.maximum.reduceat(props, starts)
    # the most abundant element (of equal fractions, the lightest): first in the order (crystal, -fraction, Z)
    order = np.lexsort((element, -frac, owner))
    mode = props[order[np.searchsorted(owner[order], np.arange(n_crystals))]]
    stats = np.stack([mean, deviation, low, high, high - low, mode], axis=2).reshape(n_crystals, -1)
    norms = [np.bincount(owner, minlength=n_crystals).astype(np.float64)]
    norms += [np.add.reduceat(frac ** p, starts) ** (1.0 / p) for p in NORMS[1:]]
    return np.concatenate([stats, np.stack(norms, axis=1)], axis=1).astype(np.float32)
