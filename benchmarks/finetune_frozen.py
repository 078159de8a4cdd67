"""Fine-tuning epoch time with frozen layers: freeze=3 against freeze=0 (and no freezing),
same data and trainer, measured in the same run. The frozen prefix's output is computed
once per crystal and reused, so more frozen layers must be faster.

    python benchmarks/finetune_frozen.py           # goal: freeze=3 epoch ≥ 2× faster than freeze=0
    python benchmarks/finetune_frozen.py --quick   # CI: tiny, goal not checked
"""

from __future__ import annotations

import argparse
import sys
import time

from _goal import finish


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--goal", type=float, default=2.0)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n, args.epochs = 100, 1
    from crystalzoo.data import CrystalDataset, bundled_dataset
    from crystalzoo import TrainConfig, make_model, train_model

    ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=args.n + 200,
                                   progress=False)
    train, val, _ = ds.split(args.n, 200, 0, seed=0)
    results = {}
    for freeze in (None, 0, 1, 2, 3, 4):
        model = make_model("formation", train, freeze=freeze, seed=0)
        t0 = time.perf_counter()
        history = train_model(model, train, val, TrainConfig(epochs=args.epochs, progress=False))
        total = time.perf_counter() - t0
        per_epoch = min(r["seconds"] for r in history.rows)
        results[freeze] = (per_epoch, total)
    print(f"fine-tuning the formation backbone on {args.n} Materials Project band gaps "
          f"(+200 validation), best epoch time of {args.epochs}\n")
    print(f"{'frozen':>22s} {'s/epoch':>9s} {'total s (incl. prefix)':>23s} {'speed-up vs freeze=0':>21s}")
    for freeze, (e, t) in results.items():
        label = "nothing" if freeze is None else f"embedding + {freeze} conv"
        print(f"{label:>22s} {e:9.2f} {t:23.1f} {results[0][0] / e:20.2f}×")
    ratio = results[0][0] / results[3][0]
    print(f"\nfreeze=3 epoch is {ratio:.2f}× faster than freeze=0 (goal ≥ {args.goal}×)")
    return finish(ratio >= args.goal, args.quick)


if __name__ == "__main__":
    sys.exit(main())
