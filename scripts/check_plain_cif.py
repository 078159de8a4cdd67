"""Compare crystalzoo's plain-CIF reader with pymatgen's CifParser on every crystal of a JSON
lines file of CIFs (the shared Materials Project data by default) and on every CIF under the
given folders: the same elements, lattice and Cartesian coordinates, in the same order, to the
last bit, wherever the plain reader reads a file; and how many it reads.

    python scripts/check_plain_cif.py --data ../shared/data/mp_crystals.jsonl.gz tests bundled

Exits non-zero on any difference.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import warnings
from pathlib import Path


SECONDS = {"plain": 0.0, "pymatgen": 0.0}  # the two readers' time on the CIFs the plain reader reads


def compare(text: str, name: str) -> str:
    """'plain' (read alike), 'other' (left to pymatgen) or 'differs: …'."""
    import numpy as np

    from crystalzoo.errors import CrystalZooError
    from crystalzoo.graphs.cif import parse_cif
    from crystalzoo.graphs.cells import _cell
    from crystalzoo.graphs.plain_cif import read_plain_cif

    t0 = time.perf_counter()
    plain = read_plain_cif(text)
    t1 = time.perf_counter()
    if plain is None:
        return "other"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cell = _cell(parse_cif(text, name), name)
    except CrystalZooError as exc:
        return f"differs: pymatgen's reader refuses it ({exc})"
    SECONDS["plain"] += t1 - t0
    SECONDS["pymatgen"] += time.perf_counter() - t1
    z, lattice, cart = plain
    for what, mine, theirs in (("elements", z, cell.z), ("lattice", lattice, cell.lattice)):
        if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
            return f"differs: {what}"
    if cart.shape != cell.cart.shape or cart.tobytes() != np.ascontiguousarray(cell.cart).tobytes():
        return "differs: coordinates"
    return "plain"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="JSON lines with a 'cif' field (may be gzipped)")
    p.add_argument("folders", nargs="*", help="folders whose *.cif files (recursively) are compared too")
    args = p.parse_args()
    sources = []
    if args.data:
        path = Path(args.data)
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
            for i, line in enumerate(f):
                sources.append((f"{path.name}:{i + 1}", json.loads(line)["cif"]))
    for folder in args.folders:
        sources += [(str(f), f.read_text(errors="replace")) for f in sorted(Path(folder).rglob("*.cif"))]
    t0 = time.perf_counter()
    counts = {"plain": 0, "other": 0}
    bad = []
    for name, text in sources:
        result = compare(text, name)
        if result.startswith("differs"):
            bad.append((name, result))
        else:
            counts[result] += 1
    print(f"{len(sources)} CIFs: {counts['plain']} read by the plain reader exactly as by pymatgen, {counts['other']} "
          f"left to pymatgen, {len(bad)} different ({time.perf_counter() - t0:.0f} s)")
    if counts["plain"]:
        print(f"on those it reads, the plain reader took {SECONDS['plain']:.1f} s and pymatgen's (with crystalzoo's "
              f"checks) {SECONDS['pymatgen']:.1f} s: {SECONDS['pymatgen'] / SECONDS['plain']:.1f}x")
    for name, result in bad[:20]:
        print(f"  {name}: {result}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
