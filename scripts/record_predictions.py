"""Record every registered model's predictions on fixed real crystals (the three bundled example
CIFs and the first 40 crystals of the bundled Materials Project band-gap data), so that a change
of the code can be checked to leave them as they were (tests/models/test_registered_predictions.py).

    python scripts/record_predictions.py            # writes tests/data/registered_predictions.json
    python scripts/record_predictions.py --only chgnet-distilled   # adds one, keeps the others as recorded

Run it only when a registered model's weights change on purpose, and say so in the commit.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from crystalzoo import example_structures, list_backbones, load_model
from crystalzoo.data import bundled_dataset

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "registered_predictions.json"
N_BUNDLED = 40


def crystals() -> tuple[list[str], list]:
    """(ids, structures): the example CIFs, then the first bundled crystals."""
    examples = example_structures()
    with gzip.open(bundled_dataset("mp-band-gap"), "rt") as f:
        rows = [json.loads(line) for _, line in zip(range(N_BUNDLED), f)]
    return [p.name for p in examples] + [r["mp_id"] for r in rows], [*examples, *(r["cif"] for r in rows)]


def predictions(names: list[str] | None = None) -> dict[str, list]:
    ids, structures = crystals()
    out = {"ids": ids}
    for name in names or list_backbones():
        pred = np.asarray(load_model(name).predict(structures), dtype=np.float64)
        out[name] = pred.reshape(len(ids), -1).tolist()
    return out


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=list_backbones(), help="record these, keep the others as recorded")
    args = p.parse_args()
    out = predictions(args.only)
    if args.only:
        kept = json.loads(OUT.read_text())
        if kept["ids"] != out["ids"]:
            raise SystemExit(f"{OUT} was recorded on other crystals: record every model (no --only)")
        out = {**kept, **out}
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")
