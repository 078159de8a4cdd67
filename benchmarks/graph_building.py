"""Graph-building throughput on real Materials Project crystals, against plain baselines
measured in the same run.

    python benchmarks/graph_building.py                  # 400 crystals of the bundled data
    python benchmarks/graph_building.py --n 2000 --data ../shared/data/mp_crystals.jsonl.gz
    python benchmarks/graph_building.py --quick          # CI

Compared (structures already parsed; the same 12-nearest-neighbours-within-8-Å graph):
- crystalzoo's builder (pymatgen's compiled neighbour list + vectorised selection + features,
  collated into one ``CrystalGraph``),
- the original CGCNN loader's way: ``get_all_neighbors`` then a per-site Python sort,
- a pure-Python neighbour loop over periodic images (the naive baseline),
- pymatgen's and vesin's neighbour searches alone (vesin when installed), for the choice of
  backend: pymatgen's search is a small part of the build time, so crystalzoo keeps it and
  needs no extra dependency.
Exits non-zero if crystalzoo is not at least ``--goal`` times faster than the pure-Python loop
and ``--original-goal`` times faster than the original CGCNN loader.
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

from _goal import finish

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
    """What the original CGCNN loader (``CIFData.__getitem__``) does for each parsed crystal:
    ``get_all_neighbors``, a per-site Python sort, padding to k, the Gaussian expansion of the
    distances and the atom-feature lookup."""
    from crystalzoo.graphs.settings import DEFAULT_SETTINGS, atom_table

    nbrs = s.get_all_neighbors(radius, include_index=True)
    idx, dist = [], []
    for site_nbrs in nbrs:
        site_nbrs = sorted(site_nbrs, key=lambda x: x[1])
        idx.append([n[2] for n in site_nbrs[:k]] + [0] * (k - len(site_nbrs[:k])))
        dist.append([n[1] for n in site_nbrs[:k]] + [radius + 1.0] * (k - len(site_nbrs[:k])))
    dist = np.array(dist)
    centers = DEFAULT_SETTINGS.gaussian_centers
    bond = np.exp(-((dist[..., None] - centers) ** 2) / DEFAULT_SETTINGS.gaussian_width**2)
    atoms = np.vstack([atom_table()[site.specie.Z] for site in s])
    return atoms, bond, np.array(idx), dist


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
    p.add_argument("--original-goal", type=float, default=30.0, help="required speed-up over the original CGCNN loader")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n, args.budget = 60, 3.0
    from crystalzoo import build_arrays, build_graphs, collate
    from crystalzoo.data import bundled_dataset

    warnings.filterwarnings("ignore")
    structures = load(Path(args.data) if args.data else bundled_dataset("mp-band-gap"), args.n)
    atoms = np.mean([len(s) for s in structures])
    print(f"{len(structures)} Materials Project crystals, {atoms:.1f} atoms on average; 2 CPU cores\n")
    collate(build_arrays(structures[:5], progress=False))  # warm up: imports, first torch calls

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return len(structures) / (time.perf_counter() - t0), len(structures)

    main = "crystalzoo structures -> CrystalGraph (build_arrays + collate)"
    results = {
        main: timed(lambda: collate(build_arrays(structures, progress=False))),
        "crystalzoo neighbour selection only (build_arrays)": timed(lambda: build_arrays(structures, progress=False)),
        "crystalzoo build_graphs (one CrystalGraph per crystal)": timed(lambda: build_graphs(structures, progress=False)),
        "crystalzoo structures -> CrystalGraph, n_jobs=2": timed(
            lambda: collate(build_arrays(structures, progress=False, n_jobs=2))),
        "pymatgen get_neighbor_list search only": rate(lambda s: s.get_neighbor_list(8.0), structures, 1e9),
        "original CGCNN loader (get_all_neighbors + Python sort)": rate(cgcnn_style, structures, args.budget),
        "pure-Python neighbour loop": rate(pure_python, structures, args.budget),
    }
    try:
        results["vesin neighbour search only"] = rate(vesin_search, structures, 1e9)
    except Exception as exc:  # not installed, or not for this torch
        print(f"(vesin not measured: {type(exc).__name__}: {exc})\n")
    ours = results[main][0]
    naive = results["pure-Python neighbour loop"][0]
    original = results["original CGCNN loader (get_all_neighbors + Python sort)"][0]
    print(f"{'method':62s} {'crystals/s':>11s} {'measured on':>12s} {'crystalzoo is':>14s}")
    for name, (r, n) in results.items():
        print(f"{name:62s} {r:11.1f} {n:12d} {ours / r:13.2f}×")
    ratio = ours / naive
    print(f"\nspeed-up over the pure-Python loop: {ratio:.1f}× (goal ≥ {args.goal}×); over the original CGCNN "
          f"loader: {ours / original:.1f}× (goal ≥ {args.original_goal}×)")
    return finish(ratio >= args.goal and ours / original >= args.original_goal, args.quick)


if __name__ == "__main__":
    sys.exit(main())
