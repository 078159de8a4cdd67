"""End-to-end inference throughput: ``model.predict`` on pymatgen structures of real
Materials Project crystals, graph building included, against the same model fed by a
pure-Python neighbour loop, measured in the same run; and ``n_jobs=2`` against ``n_jobs=1``,
for ``predict`` and for building the compact graphs a ``CrystalDataset`` caches.

    python benchmarks/inference.py             # goals: ≥ 500 crystals/s, faster than the baseline,
                                               # and graph building with n_jobs=2 ≥ 1.5× n_jobs=1
    python benchmarks/inference.py --quick     # CI: tiny, goals not checked
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _goal import finish  # noqa: E402
from graph_building import load, pure_python  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--baseline-n", type=int, default=200)
    p.add_argument("--goal", type=float, default=500.0, help="crystals/s")
    p.add_argument("--parallel-goal", type=float, default=1.5, help="n_jobs=2 over n_jobs=1, graph building")
    p.add_argument("--data", default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n, args.baseline_n = 100, 20
    warnings.filterwarnings("ignore")
    from crystalzoo import load_model
    from crystalzoo.data import bundled_dataset
    from crystalzoo import build_arrays
    from crystalzoo.graphs import GraphArrays

    model = load_model("formation")
    structures = load(Path(args.data) if args.data else bundled_dataset("mp-band-gap"), args.n)
    model.predict(structures[:10])  # warm up

    def timed(fn, items):
        t0 = time.perf_counter()
        out = fn(items)
        return len(items) / (time.perf_counter() - t0), out

    def baseline(items):
        arrays = []
        for s in items:
            nbrs = pure_python(s)
            src = np.array([j for site in nbrs for _, j in site], np.int32)
            dst = np.array([i for i, site in enumerate(nbrs) for _ in site], np.int32)
            dist = np.array([d for site in nbrs for d, _ in site], np.float32)
            arrays.append(GraphArrays(np.array(s.atomic_numbers, np.int16), src, dst, dist, np.zeros(len(s), bool)))
        return model.predict_arrays(arrays)

    rate1, pred1 = timed(lambda x: model.predict(x), structures)
    rate2, pred2 = timed(lambda x: model.predict(x, n_jobs=2), structures)
    rate_b, pred_b = timed(baseline, structures[: args.baseline_n])
    build1, arrays1 = timed(lambda x: build_arrays(x, model.graph_settings, progress=False), structures)
    build2, arrays2 = timed(lambda x: build_arrays(x, model.graph_settings, progress=False, n_jobs=2), structures)
    assert np.allclose(pred1, pred2)
    assert all(np.array_equal(a.src, b.src) and np.array_equal(a.distance, b.distance) for a, b in zip(arrays1, arrays2))
    print(f"{len(structures)} Materials Project crystals, formation model, graph building included\n")
    print(f"{'crystalzoo predict, n_jobs=1':45s} {rate1:9.1f} crystals/s")
    print(f"{'crystalzoo predict, n_jobs=2':45s} {rate2:9.1f} crystals/s   ({rate2 / rate1:.2f}× n_jobs=1)")
    print(f"{'pure-Python neighbour loop + same model':45s} {rate_b:9.1f} crystals/s   (on {args.baseline_n})")
    print(f"{'graph building only (compact), n_jobs=1':45s} {build1:9.1f} crystals/s")
    print(f"{'graph building only (compact), n_jobs=2':45s} {build2:9.1f} crystals/s   ({build2 / build1:.2f}× n_jobs=1)")
    # the two pipelines agree except where the 12th neighbour is tied
    agree = np.mean(np.abs(pred_b - pred1[: args.baseline_n]) < 1e-3)
    print(f"\npredictions agreeing with the baseline pipeline (|Δ| < 1e-3): {agree:.0%}")
    best = max(rate1, rate2)
    print(f"best: {best:.0f} crystals/s (goal ≥ {args.goal:.0f}); {best / rate_b:.1f}× the pure-Python baseline; "
          f"graph building n_jobs=2: {build2 / build1:.2f}× n_jobs=1 (goal ≥ {args.parallel_goal}×)")
    return finish(best >= args.goal and best > rate_b and build2 / build1 >= args.parallel_goal, args.quick)


if __name__ == "__main__":
    sys.exit(main())
