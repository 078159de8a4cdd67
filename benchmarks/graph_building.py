"""Graph-building throughput on real Materials Project crystals, against plain baselines
measured in the same run.

    python benchmarks/graph_building.py                  # 400 crystals of the bundled data
    python benchmarks/graph_building.py --n 2000 --data ../shared/data/mp_crystals.jsonl.gz
    python benchmarks/graph_building.py --quick          # CI

Compared (structures already parsed; the same 12-nearest-neighbours-within-8-Å graph):
- crystalzoo's builder (pymatgen's compiled neighbour list + vectorised selection + DGL graph),
- the original CGCNN loader's way: ``get_all_neighbors`` then a per-site Python sort,
- a pure-Python neighbour loop over periodic images (the naive baseline),
- pymatgen's and vesin's neighbour searches alone (vesin when installed), for the choice of
  backend: pymatgen's search is a small part of the build time, so crystalzoo keeps it and
  needs no extra dependency (vesin >= 0.4 does not import with the pinned torch 2.2.1).
Exits non-zero if crystalzoo is not at least ``--goal`` times faster than the pure-Python loop.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _goal import finish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, n: int):
    from pymatgen.core import Structure

    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            out.append(Structure.from_str(json.loads(line)["cif"], "cif"))
            if len(out) >= n:
                break
    return out


def cgcnn_style(s, radius=8.0, k=12):
    """What the original CGCNN loader does for each crystal."""
    nbrs = s.get_all_neighbors(radius, include_index=True)
    idx, dist = [], []
    for site_nbrs in nbrs:
        site_nbrs = sorted(site_nbrs, key=lambda x: x[1])[:k]
        idx.append([n[2] for n in site_nbrs])
        dist.append([n[1] for n in site_nbrs])
    return idx, dist


def pure_python(s, radius=8.0, k=12):
    """Every atom against every periodic image of every atom, in Python."""
    m = s.lattice.matrix.tolist()
    cart = s.cart_coords.tolist()
    # how many images along each axis can lie within the radius
    recip = np.linalg.inv(np.array(m)).T
    reach = [int(math.ceil(radius * float(np.linalg.norm(recip[a])))) for a in range(3)]
    shifts = []
    for a, b, c in itertools.product(*(range(-r, r + 1) for r in reach)):
        shifts.append([a * m[0][x] + b * m[1][x] + c * m[2][x] for x in range(3)])
    out = []
    for i, pi in enumerate(cart):
        found = []
        for j, pj in enumerate(cart):
            for sh in shifts:
                dx, dy, dz = pj[0] + sh[0] - pi[0], pj[1] + sh[1] - pi[1], pj[2] + sh[2] - pi[2]
                d = math.sqrt(dx * dx + dy * dy + dz * dz)
                if 1e-8 < d <= radius:
                    found.append((d, j))
        found.sort()
        out.append(found[:k])
    return out


def vesin_search(s, radius=8.0):
    from vesin import NeighborList

    nl = NeighborList(cutoff=radius, full_list=True)
    return nl.compute(points=s.cart_coords, box=s.lattice.matrix, periodic=True, quantities="ijSd")


def rate(fn, structures, budget: float) -> tuple[float, int]:
    """Structures per second over as many structures as fit in ``budget`` seconds (at least 3)."""
    t0 = time.perf_counter()
    done = 0
    for s in structures:
        fn(s)
        done += 1
        if done >= 3 and time.perf_counter() - t0 > budget:
            break
    return done / (time.perf_counter() - t0), done


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="JSON lines of crystals (default: the bundled band-gap set)")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--budget", type=float, default=20.0, help="seconds per baseline")
    p.add_argument("--goal", type=float, default=5.0, help="required speed-up over the pure-Python loop")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n, args.budget = 60, 3.0
    from crystalzoo.data import bundled_dataset
    from crystalzoo.graphs import DEFAULT_SETTINGS, _structure_arrays, build_graphs

    warnings.filterwarnings("ignore")
    structures = load(Path(args.data) if args.data else bundled_dataset("mp-band-gap"), args.n)
    atoms = np.mean([len(s) for s in structures])
    print(f"{len(structures)} Materials Project crystals, {atoms:.1f} atoms on average; 2 CPU cores\n")
    build_graphs(structures[:5], progress=False)  # warm up: imports, first DGL calls
    results = {}
    t0 = time.perf_counter()
    build_graphs(structures, progress=False)
    results["crystalzoo build_graphs (DGL graphs with features)"] = (len(structures) / (time.perf_counter() - t0), len(structures))
    results["crystalzoo neighbour selection only (no DGL graph)"] = rate(lambda s: _structure_arrays(s, DEFAULT_SETTINGS), structures, 1e9)
    results["pymatgen get_neighbor_list search only"] = rate(lambda s: s.get_neighbor_list(8.0), structures, 1e9)
    t0 = time.perf_counter()
    build_graphs(structures, progress=False, n_jobs=2)
    results["crystalzoo build_graphs, n_jobs=2"] = (len(structures) / (time.perf_counter() - t0), len(structures))
    results["original CGCNN loader (get_all_neighbors + Python sort)"] = rate(cgcnn_style, structures, args.budget)
    results["pure-Python neighbour loop"] = rate(pure_python, structures, args.budget)
    try:
        results["vesin neighbour search only"] = rate(vesin_search, structures, 1e9)
    except Exception as exc:  # not installed, or not for this torch
        print(f"(vesin not measured: {type(exc).__name__}: {exc})\n")
    ours = results["crystalzoo build_graphs (DGL graphs with features)"][0]
    naive = results["pure-Python neighbour loop"][0]
    print(f"{'method':58s} {'crystals/s':>11s} {'measured on':>12s} {'crystalzoo is':>14s}")
    for name, (r, n) in results.items():
        print(f"{name:58s} {r:11.1f} {n:12d} {ours / r:13.2f}×")
    ratio = ours / naive
    print(f"\nspeed-up over the pure-Python loop: {ratio:.1f}× (goal ≥ {args.goal}×)")
    return finish(ratio >= args.goal, args.quick)


if __name__ == "__main__":
    sys.exit(main())
