"""Crystals whose max_neighbors-th neighbour shell is split, and what that does to predictions.

For a JSON-lines file of crystals (default: the project's Materials Project data beside the
repository) it reports

1. how close the nearest other candidate lies to each atom's 12th-neighbour distance, over all
   crystals (the data behind ``crystalzoo.graphs.TIE_TOLERANCE``);
2. the crystals with a tie at the 12th place (kept symmetrically, with fractional weights);
3. for those crystals and every registered model, the largest spread of the predictions over
   random atom orders, a 2×1×1 supercell and a shift of the origin — with the symmetric rule
   ("after"; also relative to the size of the prediction, max(1, |y|), since float32 keeps
   about 7 digits) and with ties broken by atom index as crystalzoo 0.1.0 did ("before").

    python scripts/find_ties.py                                  # ../shared/data/mp_crystals.jsonl.gz
    python scripts/find_ties.py --data FILE --limit 2000 --write-subset tests/data/tie_crystals.jsonl.gz
    python scripts/find_ties.py --models combined                 # one model's row of the table
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: issue 13: predictions of a tie crystal equal to 1e-5 over atom orders, supercells and origins —
#: relative to max(1, |y|): float32 cannot hold 1e-5 apart on larger values (one step of
#: float32 at 36.65 is 3.8e-6), so above 1 the goal is 1e-5 of the prediction
GOAL = 1e-5
sys.path.insert(0, str(ROOT))


def boundary_gaps(structure, radius: float = 8.0, k: int = 12) -> np.ndarray:
    """For each atom with more than k neighbours within ``radius``: the smallest |d - d_k| over
    the candidates other than the k-th itself (0 where a candidate is exactly tied)."""
    centres, _, _, dist = structure.get_neighbor_list(radius)
    out = []
    for i in range(len(structure)):
        d = np.sort(dist[centres == i])
        if len(d) > k:
            others = np.delete(d, k - 1)
            out.append(np.abs(others - d[k - 1]).min())
    return np.array(out)


def variants(structure, rng: np.random.Generator, orders: int = 3) -> list:
    """The crystal in ``orders`` random atom orders, as a 2×1×1 supercell and with the origin shifted."""
    from pymatgen.core import Structure

    out = []
    for _ in range(orders):
        perm = rng.permutation(len(structure))
        out.append(Structure(structure.lattice, [structure[i].species for i in perm],
                             structure.frac_coords[perm]))
    out.append(structure * (2, 1, 1))
    out.append(Structure(structure.lattice, structure.species, structure.frac_coords + rng.random(3)))
    return out


def index_tie_break(structure, radius: float = 8.0, k: int = 12):
    """The graph crystalzoo 0.1.0 built: each atom's k nearest neighbours, ties (within 1e-6 Å)
    broken by the neighbour's atom index, then its periodic image; weights all 1."""
    from crystalzoo.graphs import GraphArrays

    c, p, images, d = structure.get_neighbor_list(radius)
    order = np.lexsort((images[:, 2], images[:, 1], images[:, 0], p, np.round(d / 1e-6), c))
    c, p, d = c[order], p[order], d[order]
    starts = np.searchsorted(c, c)
    keep = np.arange(len(c)) - starts < k
    return GraphArrays(np.array(structure.atomic_numbers, np.int16), p[keep].astype(np.int32),
                       c[keep].astype(np.int32), d[keep].astype(np.float32), np.zeros(len(structure), bool))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_crystals.jsonl.gz"))
    p.add_argument("--limit", type=int, default=None, help="only the first N crystals")
    p.add_argument("--gap-sample", type=int, default=5000, help="crystals for the distance-gap histogram")
    p.add_argument("--write-subset", default=None, help="write the tie crystals (at most --subset-size) here")
    p.add_argument("--subset-size", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=None, help="registered models to check (default: all of them)")
    args = p.parse_args()
    from crystalzoo import list_backbones

    unknown = sorted(set(args.models or []) - set(list_backbones()))
    if unknown:
        p.error(f"--models {' '.join(unknown)}: not registered; registered: {' '.join(list_backbones())}")
    warnings.filterwarnings("ignore")
    from pymatgen.core import Structure
    from tqdm.auto import tqdm

    from crystalzoo import build_arrays, load_model
    from crystalzoo.graphs import TIE_TOLERANCE

    rows = []
    with gzip.open(args.data, "rt") as f:
        for line in f:
            rows.append(json.loads(line))
            if args.limit and len(rows) >= args.limit:
                break
    structures = [Structure.from_str(r["cif"], "cif") for r in tqdm(rows, desc="parsing", leave=False)]

    gaps = np.concatenate([boundary_gaps(s) for s in tqdm(structures[: args.gap_sample], desc="gaps", leave=False)])
    edges = [0, 1e-9, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, np.inf]
    hist = np.histogram(gaps, bins=edges)[0]
    print(f"distance from each atom's 12th neighbour to the nearest other candidate, {len(gaps):,} atoms of the "
          f"first {min(args.gap_sample, len(structures)):,} crystals:")
    for lo, hi, n in zip(edges[:-1], edges[1:], hist):
        print(f"  [{lo:g}, {hi:g}) Å: {n:,}")

    arrays = build_arrays(structures, progress=True)
    ties = [i for i, a in enumerate(arrays) if a.weight is not None]
    print(f"\n{len(structures):,} crystals; {len(ties):,} have a tie at the 12th place (tolerance {TIE_TOLERANCE} Å)")
    if args.write_subset:
        rng = np.random.default_rng(args.seed)
        named = [i for i in ties if rows[i]["mp_id"] in ("mp-1013710", "mp-29242", "mp-1019801")]
        pick = named + [int(i) for i in rng.permutation([i for i in ties if i not in named])][: args.subset_size - len(named)]
        with gzip.open(args.write_subset, "wt") as f:
            for i in sorted(pick):
                f.write(json.dumps({"mp_id": rows[i]["mp_id"], "cif": rows[i]["cif"],
                                    "formation_energy_per_atom": rows[i].get("formation_energy_per_atom")}) + "\n")
        print(f"wrote {len(pick)} of them to {args.write_subset}")

    rng = np.random.default_rng(args.seed)
    groups = [[structures[i], *variants(structures[i], rng)] for i in ties]
    flat = [s for g in groups for s in g]
    n = len(groups[0]) if groups else 0
    flat_arrays = build_arrays(flat, progress=True)
    before_arrays = [index_tie_break(s) for s in tqdm(flat, desc="index tie-break", leave=False)]
    print(f"\nlargest spread of the predictions over {n - 1} variants of each tie crystal (3 atom orders, 2×1×1 "
          "supercell, origin shift):")
    print(f"{'model':24s} {'before (index)':>15s} {'after (symmetric)':>18s} {'after, relative':>16s}  "
          "worst crystal after")
    worst_after = 0.0
    for name in args.models or list_backbones():
        model = load_model(name)
        spreads = {}
        for label, arr in (("before", before_arrays), ("after", flat_arrays)):
            pred = np.asarray(model.predict_arrays(arr)).reshape(len(groups), n, -1)
            spreads[label] = (pred.max(axis=1) - pred.min(axis=1)).max(axis=1)
            if label == "after":  # against the size of the prediction: float32 keeps 7 digits
                relative = ((pred.max(axis=1) - pred.min(axis=1)) / np.maximum(1, np.abs(pred).max(axis=1))).max(axis=1)
        worst = int(np.argmax(spreads["after"])) if len(groups) else 0
        print(f"{name:24s} {spreads['before'].max(initial=0):15.2e} {spreads['after'].max(initial=0):18.2e} "
              f"{relative.max(initial=0):16.1e}  {rows[ties[worst]]['mp_id'] if ties else '-'} "
              f"({np.abs(model.predict([structures[ties[worst]]])).max():.3g})", flush=True)
        worst_after = max(worst_after, float(relative.max(initial=0)))
    ok = worst_after <= GOAL
    print(f"\ngoal: largest spread after ≤ {GOAL:g} · max(1, |y|) for every model — {'met' if ok else 'MISSED'} "
          f"({worst_after:.2e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
