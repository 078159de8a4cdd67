"""How long pymatgen takes to read a CIF whose sites are expanded by a space group's symmetry
operations: the measurement behind ``graphs.MAX_CIF_POSITIONS`` (docs/robustness.md).

    python scripts/cif_expansion_cost.py 25 50 100 200

Each argument is a number of general-position sites in a 40 Å cubic cell under Fm-3m (192
operations, given by the space group's name only, as ICSD CIFs often do); the time grows with
the square of sites × operations.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np


def symmetric_cif(n_sites: int, spacegroup: str = "F m -3 m") -> str:
    rng = np.random.default_rng(0)
    lines = ["data_big", "_cell_length_a 40", "_cell_length_b 40", "_cell_length_c 40", "_cell_angle_alpha 90",
             "_cell_angle_beta 90", "_cell_angle_gamma 90", f"_symmetry_space_group_name_H-M '{spacegroup}'", "loop_",
             "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x", "_atom_site_fract_y",
             "_atom_site_fract_z", "_atom_site_occupancy"]
    lines += [f"Na{i} Na {x:.5f} {y:.5f} {z:.5f} 1" for i, (x, y, z) in enumerate(rng.random((n_sites, 3)))]
    return "\n".join(lines) + "\n"


def main() -> int:
    from pymatgen.io.cif import CifParser

    print(f"{'sites':>6s} {'positions':>10s} {'atoms':>7s} {'seconds':>8s}")
    for n in map(int, sys.argv[1:] or ["25", "50", "100", "200"]):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = CifParser.from_str(symmetric_cif(n)).parse_structures(primitive=False)[0]
        print(f"{n:6d} {n * 192:10,d} {len(structure):7d} {time.perf_counter() - t0:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
