"""Which evidence score ranks backbones for a classification target the way fine-tuning does:
the H-score (what ``rank_backbones`` used) or LogME on one-hot labels (You et al. 2021's form for
classes), on the small-data suite's own training splits.

For each classification cell and seed of ``docs/results/small_data_runs.jsonl``, the training
split is rebuilt as ``benchmarks/small_data.py`` draws it, every backbone the cell's advisor
scored is embedded (pooled vectors after each depth, the best depth kept), and both scores are
compared with the fine-tuned test accuracies of the same cell: the Spearman correlation over the
backbones, and how far the top pick is from the best fine-tuned backbone (the suite's two goals).

    python scripts/compare_advisor_scores.py --data ../shared/data/mp_crystals.jsonl.gz
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from small_data import TASKS, agreement, fine_tuned_best, labelled_rows, splits  # noqa: E402
from transfer_band_gap import read_runs  # noqa: E402


def scores_of(train, target: str, backbones: list[str]) -> dict[str, dict[str, float]]:
    """{score name: {backbone: its best score over freeze depths}} on ``train``."""
    from crystalzoo import embed, load_backbone
    from crystalzoo.transfer import h_score, logme

    y = train.labels[:, 0]
    onehot = (y[:, None] == np.unique(y)[None, :]).astype(np.float64)
    out: dict[str, dict[str, float]] = {"H-score": {}, "LogME (one-hot)": {}}
    for name in backbones:
        backbone = load_backbone(name)
        vectors = [embed(backbone, train, kind="pooled", layer=k) for k in range(len(backbone.stages()))]
        out["H-score"][name] = max(h_score(v, y) for v in vectors)
        out["LogME (one-hot)"][name] = max(logme(v, onehot) for v in vectors)
    return out


def main() -> int:
    import pandas as pd

    from crystalzoo import CrystalDataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_crystals.jsonl.gz"))
    p.add_argument("--runs", default=str(ROOT / "docs" / "results" / "small_data_runs.jsonl"))
    p.add_argument("--test", type=int, default=2000, help="the suite's fixed test set (its --test)")
    args = p.parse_args()
    done = read_runs(Path(args.runs))[0]
    runs = list(done.values())
    cells = sorted({(r["task"], r["size"]) for r in runs if r["method"] == "advisor"
                    and TASKS[r["task"]][1] == "classification"})
    for task, size in cells:
        rows = labelled_rows(Path(args.data), task)
        by_method: dict[str, dict[int, float]] = {}
        for r in runs:
            if (r["task"], r["size"]) == (task, size) and r["method"] != "advisor":
                by_method.setdefault(r["method"], {})[r["seed"]] = r["test"]
        found: dict[str, list] = {}
        for seed in sorted({r["seed"] for r in runs if (r["task"], r["size"], r["method"]) == (task, size, "advisor")}):
            advice = done[f"{task}|{size}|{seed}|advisor"]
            train_at = splits(len(rows), size, seed, min(args.test, len(rows) // 3))[0]
            train = CrystalDataset.from_dataframe(pd.DataFrame([rows[i] for i in train_at]), targets=[task],
                                                  id_column="mp_id", progress=False)
            best = fine_tuned_best(by_method, seed, "classification")
            mine = scores_of(train, task, list(advice["scores"]))
            # the same H-scores as the suite's advisor run: the split and the vectors are the suite's
            drift = max(abs(mine["H-score"][b] - v["score"]) for b, v in advice["scores"].items())
            print(f"  seed {seed}: H-scores within {drift:.1e} of the suite's advisor run", flush=True)
            for name, scores in mine.items():
                if (result := agreement(scores, best, "classification")) is not None:  # 3 backbones or more
                    found.setdefault(name, []).append(result)
        print(f"{task}, {size} training crystals, {len(next(iter(found.values())))} seeds")
        for name, results in found.items():
            rho = np.mean([f[0] for f in results])
            near = sum(f[2] <= 0.03 for f in results)
            gaps = ", ".join(f"{100 * f[2]:.1f} %" for f in results)
            print(f"  {name:16s} Spearman {rho:.2f}; top pick within 3 % in {near} of {len(results)} seeds ({gaps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
