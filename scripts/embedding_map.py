"""A 2-D map of Materials Project crystals in the embedding space of a pretrained backbone.

    python scripts/embedding_map.py [--backbone formation] [--out docs/results]

Embeds the 3,000 bundled Materials Project crystals (``bundled:mp-band-gap``) with
``crystalzoo.embed`` (the hidden crystal vector the head sees), projects the vectors on their
first two principal components (PCA by SVD of the centred vectors) and colours the crystals
by band gap and by formation energy. Writes ``embedding_map.png`` and prints the share of the
variance the two components hold and how well a straight line on the map predicts each
property (R² of a least-squares fit on the two coordinates).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="formation")
    p.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crystalzoo import embed, load_backbone
    from crystalzoo.data import read_dataset

    data = read_dataset("bundled:mp-band-gap", ["band_gap", "formation_energy_per_atom"], progress=False)
    vectors = embed(load_backbone(args.backbone), data).astype(np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    share = (s[:2] ** 2).sum() / (s ** 2).sum()
    design = np.column_stack([xy, np.ones(len(xy))])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    lines = [f"{len(data)} bundled Materials Project crystals, backbone {args.backbone!r} (hidden vectors, "
             f"{vectors.shape[1]} values): the first two principal components hold {100 * share:.1f} % of the variance"]
    for ax, (column, label) in zip(axes, [("band_gap", "band gap (eV)"),
                                          ("formation_energy_per_atom", "formation energy (eV/atom)")]):
        y = data.labels[:, data.targets.index(column)].astype(np.float64)
        known = ~np.isnan(y)
        coef, *_ = np.linalg.lstsq(design[known], y[known], rcond=None)
        r2 = 1 - np.sum((design[known] @ coef - y[known]) ** 2) / np.sum((y[known] - y[known].mean()) ** 2)
        lines.append(f"{column}: R² of a linear fit on the two map coordinates = {r2:.3f}")
        order = np.argsort(y[known])  # high values drawn last, on top
        points = ax.scatter(xy[known][order, 0], xy[known][order, 1], c=y[known][order], s=4, cmap="viridis")
        fig.colorbar(points, ax=ax, label=label)
        ax.set_xlabel("principal component 1")
        ax.set_ylabel("principal component 2")
        ax.set_title(f"coloured by {label}")
    fig.suptitle(f"Materials Project crystals in the embedding space of `{args.backbone}`")
    fig.tight_layout()
    out = Path(args.out) / "embedding_map.png"
    fig.savefig(out, dpi=110)
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
