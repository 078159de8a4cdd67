"""Choose the full-data ``combined`` backbone's settings on a subset of its training and
validation crystals (never its test split): the first ``--train`` of its training split and
the first ``--val`` of its validation split, split again at random (seed 0) into ``--train``
crystals to train on and ``--val`` to score; each setting trains and is scored on the same ones.

    python scripts/pretrain_search.py --train 8000 --val 2000 --epochs 20 --threads 1

Prints one JSON line per setting (validation MAE per target, and ``loss``, the validation
loss of the setting's own kind: mean squared, or mean absolute for the ``l1`` settings) and
appends it to ``docs/results/pretrain_search.jsonl``; settings already there are skipped.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from pretrain_backbones import FOUR, select  # noqa: E402 (scripts/ is on the path from here)

#: name: (targets, architecture, training options)
SETTINGS = {
    "base": (FOUR, {}, {}),
    "head128": (FOUR, {"h_fea_len": 128}, {}),
    "formation-only": (["formation_energy_per_atom"], {}, {}),
    "head128-wd": (FOUR, {"h_fea_len": 128}, {"weight_decay": 1e-5}),
    "reference": (FOUR, {}, {"reference": "composition"}),
    "formation-only-reference": (["formation_energy_per_atom"], {}, {"reference": "composition"}),
    "l1": (FOUR, {}, {"loss": "l1"}),
    "l1-reference": (FOUR, {}, {"loss": "l1", "reference": "composition"}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mp_crystals.jsonl.gz"))
    p.add_argument("--train", type=int, default=8000)
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "pretrain_search.jsonl"))
    args = p.parse_args()

    import pandas as pd
    import torch

    from crystalzoo import pretrain
    from crystalzoo.data import CrystalDataset

    torch.set_num_threads(args.threads)
    log = Path(args.out)
    done = {json.loads(line)["name"] for line in log.read_text().splitlines()} if log.exists() else set()
    df = pd.DataFrame(select(Path(args.data), "all"))
    ds = CrystalDataset.from_dataframe(df, targets=sorted(set(FOUR)), id_column="mp_id", n_jobs=args.threads)
    train, val, _ = ds.split(0.8, 0.1, 0.1, seed=0)  # the split of scripts/pretrain_backbones.py
    assert args.train <= len(train) and args.val <= len(val)
    row_of = {crystal: i for i, crystal in enumerate(ds.ids)}
    sub = ds.subset([row_of[c] for c in [*train.ids[:args.train], *val.ids[:args.val]]])
    for name in args.only:
        if name in done:
            continue
        targets, arch, options = SETTINGS[name]
        r = pretrain(sub, targets, train_size=args.train, val_size=args.val, test_size=0, seed=0, architecture=arch,
                     epochs=args.epochs, schedule="cosine", progress=False, **options)
        row = {"name": name, "epochs": args.epochs, "train": args.train, "val": args.val,
               "best_epoch": r.metrics["best_epoch"], "seconds": r.metrics["train_seconds"],
               **{k: round(v, 4) for k, v in r.metrics["val"].items()}}
        print(json.dumps(row), flush=True)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
