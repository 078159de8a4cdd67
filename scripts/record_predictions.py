"""Record the predictions of every registered model on the 200 test crystals
(tests/data/mp200.jsonl.gz), one column per model output, so later versions can be checked
against them (tests/test_parity.py).

The committed file tests/data/predictions_v0.1.0.csv was written by this script at commit
07e072b (crystalzoo 0.1.0, DGL 2.1.0 on torch 2.2.1, numpy 1.26), the last DGL-based
version, before the torch-native graphs:

    git checkout 07e072b -- crystalzoo && python scripts/record_predictions.py tests/data/predictions_v0.1.0.csv

Rerun on any later version to compare: ``python scripts/record_predictions.py /tmp/now.csv``.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    args = p.parse_args()
    from pymatgen.core import Structure

    from crystalzoo import list_backbones, load_model

    with gzip.open(ROOT / "tests" / "data" / "mp200.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    structures = [Structure.from_str(r["cif"], "cif") for r in rows]
    table = pd.DataFrame({"id": [r["mp_id"] for r in rows]})
    for name in list_backbones():
        model = load_model(name)
        pred = np.asarray(model.predict(structures))
        if pred.ndim == 1:
            table[name] = pred
        else:
            labels = model.head.classes if model.task == "classification" else model.targets
            for j, label in enumerate(labels):
                table[f"{name}:{label}"] = pred[:, j]
    table.to_csv(args.out, index=False, float_format="%.9g")
    print(f"{len(table)} crystals x {table.shape[1] - 1} outputs -> {args.out}")


if __name__ == "__main__":
    main()
