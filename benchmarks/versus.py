"""Graph building, training and inference throughput of this working tree against another
commit of crystalzoo, in the same run: each round runs one worker process per version,
alternating, on the same crystals, and the ratios compare the median over rounds.

    python benchmarks/versus.py --base 2965e57   # issue 13: symmetric ties cost ≤ 5 % (goal ≥ 0.95×)
    python benchmarks/versus.py --quick           # CI: HEAD against the working tree, tiny, goal not checked

The other version is taken from git (``git archive BASE crystalzoo``) into a temporary folder;
both run with this environment's packages. The crystals are the first ``--n`` of the bundled
Materials Project data set, whose crystals have split shells as often as the full data does.
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import json
import pickle
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

from _goal import finish

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"build": "graph building (build_arrays)", "train": "training (forward + backward, batch 256)",
           "infer": "inference (backbone, batch 64)"}
GOALS = {"build": 0.95, "train": 0.95}  # inference: reported


def _best_rate(n: int, run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return n / min(times)


def worker(tree: str, structures_file: str, repeats: int) -> dict[str, float]:
    """Rates (crystals/s) of the crystalzoo in ``tree``."""
    sys.path.insert(0, tree)
    import torch

    import crystalzoo
    from crystalzoo import build_arrays, collate, load_backbone

    assert Path(crystalzoo.__file__).resolve().is_relative_to(Path(tree).resolve()), crystalzoo.__file__
    structures = pickle.loads(Path(structures_file).read_bytes())
    n = len(structures)
    arrays = build_arrays(structures, progress=False)  # warm-up
    out = {"build": _best_rate(n, lambda: build_arrays(structures, progress=False), repeats)}
    backbone = load_backbone("formation").train()
    batches = [collate(arrays[i: i + 256]) for i in range(0, n, 256)]

    def train():
        for g in batches:
            backbone.zero_grad()
            backbone(g).square().mean().backward()

    train()
    out["train"] = _best_rate(n, train, repeats)
    backbone.eval()
    small = [collate(arrays[i: i + 64]) for i in range(0, n, 64)]

    def infer():
        with torch.no_grad():
            for g in small:
                backbone(g)

    infer()
    out["infer"] = _best_rate(n, infer, repeats)
    out["edges"] = sum(len(a.src) for a in arrays) / n
    return out


def _export(rev: str, into: Path) -> None:
    data = subprocess.run(["git", "archive", rev, "crystalzoo"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="HEAD", help="the git revision to compare with (default HEAD)")
    p.add_argument("--n", type=int, default=1024, help="crystals")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per worker (best counts)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", nargs=2, metavar=("TREE", "STRUCTURES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats)))
        return 0
    if args.quick:
        args.n, args.rounds, args.repeats = 32, 1, 1
    sys.path.insert(0, str(ROOT))
    from pymatgen.core import Structure

    from crystalzoo.data import bundled_dataset

    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        _export(rev, base)
        with gzip.open(bundled_dataset("mp-band-gap"), "rt") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen's notes on rounded CIF coordinates
            structures = [Structure.from_str(json.loads(line)["cif"], "cif") for line in itertools.islice(f, args.n)]
        (tmp / "structures.pkl").write_bytes(pickle.dumps(structures))
        trees = {f"{rev}": base, "working tree": ROOT}
        results: dict[str, list[dict]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, tree in list(trees.items())[:: 1 if r % 2 == 0 else -1]:  # ABBA…: order effects cancel
                run = subprocess.run([sys.executable, __file__, "--worker", str(tree), str(tmp / "structures.pkl"),
                                      "--repeats", str(args.repeats)], capture_output=True, text=True, cwd=tmp)
                if run.returncode:
                    print(run.stderr[-3000:], file=sys.stderr)
                    return 2
                results[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
    (old, new) = ({k: statistics.median(r[k] for r in rs) for k in [*METRICS, "edges"]} for rs in results.values())
    print(f"{args.n} bundled Materials Project crystals; {args.rounds} rounds alternating {rev} and the working "
          f"tree (ABBA order), each the best of {args.repeats}; medians over rounds (crystals/s)\n")
    print(f"{'':42s} {rev:>10s} {'working':>10s} {'ratio':>7s}  goal")
    ok = True
    for key, label in METRICS.items():
        rounds = "  ".join(f"{a[key]:.0f}/{b[key]:.0f}" for a, b in zip(*results.values()))
        print(f"{'':4s}rounds ({rev}/working): {rounds}", file=sys.stderr)
        ratio = new[key] / old[key]
        goal = GOALS.get(key)
        ok &= goal is None or ratio >= goal
        print(f"{label:42s} {old[key]:10.1f} {new[key]:10.1f} {ratio:6.2f}×  {f'≥ {goal}×' if goal else '(reported)'}")
    print(f"{'edges per crystal':42s} {old['edges']:10.1f} {new['edges']:10.1f} {new['edges'] / old['edges']:6.2f}×")
    return finish(ok, args.quick)


if __name__ == "__main__":
    sys.exit(main())
