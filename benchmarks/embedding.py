"""End-to-end embedding throughput: ``crystalzoo.embed`` on pymatgen structures of real
Materials Project crystals, graph building included, against ``model.predict`` on the same
crystals in the same run (the same pipeline up to the head, so the ratio shows what embedding
adds), with ``n_jobs=1`` and ``n_jobs=2``.

    python benchmarks/embedding.py             # goals below
    python benchmarks/embedding.py --quick     # CI: tiny, goals not checked

Goals: embed (hidden vectors, default settings) ≥ 1,000 crystals/s on 2 cores, and ≥ 0.9×
the throughput of predict.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

from _goal import finish
from graph_building import load


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--goal", type=float, default=1000.0, help="crystals/s, embed with the default settings")
    p.add_argument("--ratio-goal", type=float, default=0.9, help="embed over predict")
    p.add_argument("--data", default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n, args.repeats = 64, 1
    warnings.filterwarnings("ignore")
    from crystalzoo import embed, load_model
    from crystalzoo.data import bundled_dataset

    model = load_model("formation")
    structures = load(Path(args.data) if args.data else bundled_dataset("mp-band-gap"), args.n)
    embed(model, structures[:10])  # warm up

    runs = {f"{what}, n_jobs={jobs}": (lambda what=what, jobs=jobs: embed(model, structures, n_jobs=jobs)
                                        if what == "embed" else model.predict(structures, n_jobs=jobs))
            for jobs in (1, 2) for what in ("embed", "predict")}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # round by round, each method once per round
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    rows = {name: len(structures) / statistics.median(t) for name, t in times.items()}
    atoms = sum(len(s) for s in structures) / len(structures)  # the rate in crystals/s falls with their size
    print(f"{len(structures)} Materials Project crystals (pymatgen structures, {atoms:.1f} atoms on average), "
          f"backbone formation, hidden vectors; median of {args.repeats} runs")
    for name, value in rows.items():
        print(f"{name:28s} {value:8.1f} crystals/s {value * atoms:10.0f} atoms/s")
    best = max(rows["embed, n_jobs=1"], rows["embed, n_jobs=2"])
    ratio = rows["embed, n_jobs=1"] / rows["predict, n_jobs=1"]
    ok = best >= args.goal and ratio >= args.ratio_goal
    print(f"embed: best {best:.0f} crystals/s (goal ≥ {args.goal:.0f}); embed / predict with n_jobs=1: {ratio:.2f}× "
          f"(goal ≥ {args.ratio_goal}) — {'met' if ok else 'missed'}")
    return finish(ok, args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
