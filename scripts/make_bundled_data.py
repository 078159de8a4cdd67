"""Copy the bundled band-gap subset out of the shared Materials Project file.

    python scripts/make_bundled_data.py ../shared/data/mp_crystals.jsonl.gz

Writes ``crystalzoo/bundled/mp_band_gap_3000.jsonl.gz``: 3,000 crystals with a band gap,
drawn with seed 0 from the 34,738 that have one (Materials Project data, CC-BY 4.0).
"""

import gzip
import json
import sys
from pathlib import Path

import numpy as np

KEEP = ["mp_id", "cif", "band_gap", "formation_energy_per_atom", "efermi", "energy_per_atom"]


def main(src: str) -> None:
    with gzip.open(src, "rt") as f:
        rows = [json.loads(line) for line in f]
    rows = [r for r in rows if r["band_gap"] is not None]
    pick = np.sort(np.random.default_rng(0).choice(len(rows), 3000, replace=False))
    out = Path(__file__).resolve().parents[1] / "crystalzoo" / "bundled" / "mp_band_gap_3000.jsonl.gz"
    with gzip.GzipFile(out, "wb", mtime=0) as g:
        for i in pick:
            g.write((json.dumps({k: rows[i][k] for k in KEEP}) + "\n").encode())
    print(f"{out}: {len(pick)} crystals")


if __name__ == "__main__":
    main(sys.argv[1])
