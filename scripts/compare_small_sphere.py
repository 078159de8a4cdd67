"""Build every crystal's graph with two sizes of the neighbour search's first sphere
(``crystalzoo.graphs.neighbors.SMALL_SPHERE``) and compare them byte for byte, with the time each
took: the size changes the speed only, never a graph.

    python scripts/compare_small_sphere.py --data ../shared/data/mp_crystals.jsonl.gz --sizes 3 1.5

Exits non-zero when any graph differs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import warnings
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="JSON lines with a 'cif' field (may be gzipped)")
    p.add_argument("--sizes", nargs=2, type=float, default=[3.0, 1.5])
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    import crystalzoo.graphs.neighbors as neighbors
    from crystalzoo.errors import StructureError
    from crystalzoo.graphs import DEFAULT_SETTINGS
    from crystalzoo.graphs.cells import to_cell

    path = Path(args.data)
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        cells = []
        for line in f:
            try:
                cells.append(to_cell(json.loads(line)["cif"]))
            except StructureError:
                cells.append(None)

    def build(size: float) -> tuple[list, float]:
        neighbors.SMALL_SPHERE = size
        out, t0 = [], time.perf_counter()
        for c in cells:
            try:
                out.append(None if c is None else neighbors.cell_arrays(c, DEFAULT_SETTINGS))
            except StructureError as exc:
                out.append(str(exc))
        return out, time.perf_counter() - t0

    (a, ta), (b, tb) = build(args.sizes[0]), build(args.sizes[1])
    fields = ("z", "src", "dst", "distance", "extended", "weight")

    def same(x, y) -> bool:
        if not hasattr(x, "z") or not hasattr(y, "z"):
            return x == y
        return all((getattr(x, k) is None) == (getattr(y, k) is None) and (getattr(x, k) is None or (
            getattr(x, k).dtype == getattr(y, k).dtype and getattr(x, k).tobytes() == getattr(y, k).tobytes()))
            for k in fields)

    differ = sum(not same(x, y) for x, y in zip(a, b))
    print(f"{len(cells)} crystals: SMALL_SPHERE {args.sizes[0]:g} {ta:.1f} s, {args.sizes[1]:g} {tb:.1f} s "
          f"({ta / tb:.2f}x); {differ} graphs differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
