"""How graph building and inference grow with the number of atoms, and what building and
caching graphs for the whole Materials Project data set costs in memory and disk.

    python benchmarks/scaling.py                                     # supercells 2 … 2,000 atoms
    python benchmarks/scaling.py --full-data ../shared/data/mp_crystals.jsonl.gz   # + all 34,745 crystals
    python benchmarks/scaling.py --quick                             # CI

Goals: fitted exponent of time vs atoms ≤ 1.15 (linear), peak memory of the full build < 4 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np

from _goal import finish


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


FULL_BUILD = """
import json, resource, sys, time
from pathlib import Path
from crystalzoo.data import CrystalDataset
t0 = time.perf_counter()
ds = CrystalDataset.from_jsonl(sys.argv[1], targets=["band_gap"], progress=False, cache_dir=sys.argv[2], n_jobs=1)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
size = sum(p.stat().st_size for p in Path(sys.argv[2]).rglob("*") if p.is_file())
print(json.dumps({"crystals": len(ds), "atoms": int(sum(g.n_atoms for g in ds.graphs)),
                  "edges": int(sum(len(g.src) for g in ds.graphs)), "seconds": seconds, "peak_rss": peak,
                  "cache_bytes": size}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-repeat", type=int, default=10, help="largest supercell is N×N×N of a 2-atom cell")
    p.add_argument("--full-data", default=None, help="JSON lines of all crystals, for the memory/disk check")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.max_repeat = 4
    from pymatgen.core import Lattice, Structure

    from crystalzoo import build_graph, load_model

    model = load_model("formation")
    # rock-salt NaCl (mp-22862 structure), primitive cell of 2 atoms
    nacl = Structure(Lattice.from_parameters(3.99, 3.99, 3.99, 60, 60, 60), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rows = []
    for n in range(1, args.max_repeat + 1):
        s = nacl * (n, n, n)
        reps = 5 if len(s) < 200 else 2
        rows.append((len(s), _best(lambda: build_graph(s), reps), _best(lambda: model.predict([s]), reps)))
    atoms = np.array([r[0] for r in rows], float)
    fits = {}
    print(f"{'atoms':>7s} {'build s':>10s} {'predict s':>10s}")
    for a, b, c in rows:
        print(f"{int(a):7d} {b:10.4f} {c:10.4f}")
    big = atoms >= 50  # fixed per-call overheads dominate tiny cells
    for j, name in ((1, "graph building"), (2, "inference (predict, building included)")):
        t = np.array([r[j] for r in rows])
        fits[name] = np.polyfit(np.log(atoms[big]), np.log(t[big]), 1)[0]
        print(f"fitted exponent of {name} time vs atoms ({int(atoms[big][0])}–{int(atoms[-1])} atoms): {fits[name]:.2f}")
    ok = all(v <= 1.15 for v in fits.values())
    if args.full_data:
        with tempfile.TemporaryDirectory() as cache:
            out = subprocess.run([sys.executable, "-c", FULL_BUILD, args.full_data, cache], capture_output=True,
                                 text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\nall {r['crystals']:,} crystals ({r['atoms']:,} atoms, {r['edges']:,} edges): built and cached in "
              f"{r['seconds']:.0f} s, peak memory {r['peak_rss'] / 2**30:.2f} GB (goal < 4 GB), "
              f"cache on disk {r['cache_bytes'] / 2**20:.0f} MiB")
        ok = ok and r["peak_rss"] < 4 * 2**30
    return finish(ok, args.quick)


if __name__ == "__main__":
    sys.exit(main())
