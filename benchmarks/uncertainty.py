"""Calibrated uncertainty on Materials Project band gaps: a 5-member ensemble against one model.

Per seed: 1000 training, 1000 validation (the calibration crystals) and 2000 evaluation
crystals, drawn from a fixed pool of 10000 MP crystals with a band gap (seed 1234); the
`formation` backbone with the embedding and 2 convolutions frozen, 30 epochs, as
``finetune(..., ensemble=5)`` runs it. The single model is ``finetune(..., ensemble=1)`` on the
same split and seed (it is the ensemble's member 0), timed separately. Reports over the seeds:

* the empirical coverage of nominal 50-95 % intervals on the evaluation crystals, for the
  ensemble (width scaled by its spread) and the single model (constant width);
* the mean width of the 90 % intervals;
* Spearman's correlation of the ensemble's standard deviation with the absolute error, and
  the MAE of the 10 % of crystals with the largest spread against the rest (the spread as a
  warning);
* the MAE of the ensemble mean against the single model;
* the training time of the ensemble over that of the single model.

    python benchmarks/uncertainty.py --data ../shared/data/mp_crystals.jsonl.gz

Finished seeds are appended to ``--out``/uncertainty_runs.jsonl; rerun the command to resume.
Writes ``--out``/uncertainty.md and uncertainty.png. ``--quick``: a tiny run on bundled data.

``--timing`` times the single model and the ensemble of seed 0 once more, alone, and keeps the
ratio in ``--out``/uncertainty_timing.json; the report takes the time ratio from there when it
exists (run it on a quiet machine: the seeds' own timings share the machine with whatever else
runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from _goal import finish
from transfer_band_gap import pool_of, add_pool_arguments

ROOT = Path(__file__).resolve().parents[1]
LEVELS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
GOALS = "coverage of 90 % intervals in [0.88, 0.92]; Spearman(std, |error|) >= 0.3; ensemble MAE <= single; time <= 2.5x"


def _coverage(model, test, level: float) -> tuple[float, float]:
    """(fraction of crystals inside, mean width) of ``model``'s intervals on ``test``."""
    lower, upper = model.predict_interval(test, level)
    y = test.labels[:, 0]
    return float(((lower <= y) & (y <= upper)).mean()), float((upper - lower).mean())


def run_seed(ds, seed: int, args) -> dict:
    from scipy import stats

    from crystalzoo import finetune

    sizes = dict(train_size=args.sizes[0], val_size=args.sizes[1], test_size=args.sizes[2])
    common = dict(backbone="formation", freeze=2, seed=seed, epochs=args.epochs, progress=False, **sizes)
    t0 = time.perf_counter()
    single = finetune(ds, "band_gap", **common)
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    ens = finetune(ds, "band_gap", ensemble=args.members, **common)
    t_ens = time.perf_counter() - t0
    test = ds.split(*args.sizes, seed=seed)[2]  # finetune's evaluation split
    y = test.labels[:, 0]
    mean, std = ens.model.predict(test, return_std=True)
    err = np.abs(mean - y)
    top = std >= np.quantile(std, 0.9)
    r = {
        "seed": seed, "members": args.members, "epochs": args.epochs, "sizes": args.sizes,
        "single_mae": float(np.abs(single.model.predict(test) - y).mean()),
        "ensemble_mae": float(err.mean()),
        "member_maes": [m["test"]["mae"] for m in ens.metrics["members"]],
        "spearman_std_error": float(stats.spearmanr(std, err).statistic),
        "mae_top10_std": float(err[top].mean()), "mae_rest": float(err[~top].mean()),
        "single_seconds": t_single, "ensemble_seconds": t_ens,
        "coverage": {}, "width": {}, "single_coverage": {}, "single_width": {},
    }
    for level in LEVELS:
        r["coverage"][str(level)], r["width"][str(level)] = _coverage(ens.model, test, level)
        r["single_coverage"][str(level)], r["single_width"][str(level)] = _coverage(single.model, test, level)
    return r


def report(runs: list[dict], out: Path, args) -> bool:
    lines = [
        "# Calibrated uncertainty: ensembles and conformal intervals on MP band gaps", "",
        f"Command: `{' '.join(['python', 'benchmarks/uncertainty.py', *sys.argv[1:]])}`", "",
        f"Per seed: {args.sizes[0]} training, {args.sizes[1]} validation (calibration) and {args.sizes[2]} evaluation "
        "crystals drawn from "
        + ("the bundled band-gap data (quick run)" if args.quick else
           f"a fixed pool of {args.pool} Materials Project crystals with a band gap (seed 1234)")
        + f"; backbone `formation`, embedding and 2 convolutions frozen (pretrained deeper layers), {args.epochs} "
        f"epochs, Adam lr 1e-3, batch 64. Ensemble: {args.members} members, `finetune(..., ensemble="
        f"{args.members})`; single model: `finetune(..., ensemble=1)` (the ensemble's member 0). Seeds "
        f"{[r['seed'] for r in runs]}; mean ± standard deviation over seeds. Threads: {args.threads}.", "",
        "## Coverage of the intervals on the evaluation crystals", "",
        "| nominal | ensemble (scaled by spread) | mean width (eV) | single model (constant width) | mean width (eV) |",
        "|---|---|---|---|---|",
    ]

    def ms(values, fmt=".3f"):
        a = np.asarray(values, dtype=float)
        return f"{a.mean():{fmt}} ± {a.std(ddof=1) if len(a) > 1 else 0.0:{fmt}}"

    for level in LEVELS:
        k = str(level)
        lines.append(f"| {level:.0%} | {ms([r['coverage'][k] for r in runs])} | {ms([r['width'][k] for r in runs])} "
                     f"| {ms([r['single_coverage'][k] for r in runs])} | {ms([r['single_width'][k] for r in runs])} |")
    cov90 = np.mean([r["coverage"]["0.9"] for r in runs])
    rho = np.mean([r["spearman_std_error"] for r in runs])
    ens_mae, single_mae = np.mean([r["ensemble_mae"] for r in runs]), np.mean([r["single_mae"] for r in runs])
    ratio = np.mean([r["ensemble_seconds"] / r["single_seconds"] for r in runs])
    timing_file = out / "uncertainty_timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else None
    if timing is not None:
        ratio = timing["ensemble_seconds"] / timing["single_seconds"]
    lines += [
        "", "## Spread, accuracy and cost", "",
        "| quantity | value | goal | met |", "|---|---|---|---|",
        f"| coverage of nominal 90 % intervals (ensemble) | {ms([r['coverage']['0.9'] for r in runs])} | 0.88-0.92 "
        f"| {'yes' if 0.88 <= cov90 <= 0.92 else 'no'} |",
        f"| Spearman(std, absolute error) | {ms([r['spearman_std_error'] for r in runs])} | >= 0.3 "
        f"| {'yes' if rho >= 0.3 else 'no'} |",
        f"| test MAE, ensemble mean (eV) | {ms([r['ensemble_mae'] for r in runs])} | <= single model "
        f"| {'yes' if ens_mae <= single_mae else 'no'} |",
        f"| test MAE, single model (eV) | {ms([r['single_mae'] for r in runs])} | | |",
        f"| test MAE, members (mean over members, eV) | {ms([np.mean(r['member_maes']) for r in runs])} | | |",
        f"| MAE of the 10 % of crystals with the largest spread (eV) | {ms([r['mae_top10_std'] for r in runs])} | | |",
        f"| MAE of the other 90 % (eV) | {ms([r['mae_rest'] for r in runs])} | | |",
        *([f"| training time, ensemble / single model (seed {timing['seed']}, alone on the machine, "
           f"{timing['threads']} thread(s)) | {ratio:.2f} ({timing['ensemble_seconds']:.0f} s / "
           f"{timing['single_seconds']:.0f} s) | <= 2.5 | {'yes' if ratio <= 2.5 else 'no'} |"] if timing else []),
        f"| training time, ensemble / single model (each seed, beside other jobs) | "
        f"{ms([r['ensemble_seconds'] / r['single_seconds'] for r in runs], '.2f')} | <= 2.5 | "
        f"{'' if timing else ('yes' if ratio <= 2.5 else 'no')} |",
        f"| training time, single model (s, each seed) | {ms([r['single_seconds'] for r in runs], '.1f')} | | |",
        "", "![reliability: nominal against empirical coverage](uncertainty.png)", "",
    ]
    (out / "uncertainty.md").write_text("\n".join(lines))
    _plot(runs, out / "uncertainty.png")
    print("\n".join(lines))
    return bool(0.88 <= cov90 <= 0.92 and rho >= 0.3 and ens_mae <= single_mae and ratio <= 2.5)


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.45, 1], [0.45, 1], color="grey", ls=":", label="ideal")
    for key, label, marker in (("coverage", "ensemble (scaled)", "o"), ("single_coverage", "single model", "s")):
        m = [np.mean([r[key][str(level)] for r in runs]) for level in LEVELS]
        s = [np.std([r[key][str(level)] for r in runs]) for level in LEVELS]
        ax.errorbar(LEVELS, m, yerr=s, marker=marker, capsize=3, label=label)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage on held-out MP crystals")
    ax.set_title(f"Band-gap intervals, {len(runs)} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pool_arguments(p)
    p.add_argument("--sizes", type=int, nargs=3, default=[1000, 1000, 2000])
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--out", default=None, help="default: docs/results (--quick: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="tiny run on bundled data, for CI")
    p.add_argument("--timing", action="store_true", help="time seed 0's single model and ensemble again, alone")
    args = p.parse_args()
    import torch

    from crystalzoo.data import CrystalDataset, bundled_dataset

    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = __import__("tempfile").mkdtemp() if args.quick else str(ROOT / "docs" / "results")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.sizes, args.epochs, args.seeds, args.members, args.pool = [60, 40, 40], 2, [0], 2, 140
        ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=args.pool,
                                       progress=False)
    else:
        import pandas as pd

        ds = CrystalDataset.from_dataframe(pd.DataFrame(pool_of(Path(args.data), args.pool, seed=1234)),
                                           targets=["band_gap"], id_column="mp_id", progress=True)
    runs_file = out / "uncertainty_runs.jsonl"
    from crystalzoo import finetune

    finetune(ds, "band_gap", backbone="formation", freeze=2, train_size=20, val_size=10, test_size=0, epochs=1,
             progress=False)  # warm-up (imports, weights, kernels): not in the first seed's timing
    if args.timing:
        r = run_seed(ds, args.seeds[0], args)
        timing = {"seed": r["seed"], "members": args.members, "epochs": args.epochs, "sizes": args.sizes,
                  "threads": args.threads, "single_seconds": r["single_seconds"],
                  "ensemble_seconds": r["ensemble_seconds"]}
        (out / "uncertainty_timing.json").write_text(json.dumps(timing, indent=1) + "\n")
        print(f"single {r['single_seconds']:.1f} s, ensemble {r['ensemble_seconds']:.1f} s: ratio "
              f"{r['ensemble_seconds'] / r['single_seconds']:.2f}")
    done = {}
    if runs_file.exists():
        for line in runs_file.read_text().splitlines():
            r = json.loads(line)
            if r["members"] == args.members and r["epochs"] == args.epochs and r["sizes"] == args.sizes:
                done[r["seed"]] = r
    for seed in args.seeds:
        if seed in done:
            continue
        r = run_seed(ds, seed, args)
        with open(runs_file, "a") as f:
            f.write(json.dumps(r) + "\n")
        done[seed] = r
        print(f"seed {seed}: coverage(90%) {r['coverage']['0.9']:.3f}, Spearman {r['spearman_std_error']:.3f}, "
              f"MAE ensemble {r['ensemble_mae']:.4f} / single {r['single_mae']:.4f}, time ratio "
              f"{r['ensemble_seconds'] / r['single_seconds']:.2f}", flush=True)
    ok = report([done[s] for s in args.seeds], out, args)
    print(GOALS)
    return finish(ok, args.quick)


if __name__ == "__main__":
    sys.exit(main())
