"""Worker for tests/training/test_distributed.py: train on 80 real crystals, save the weights.

    python tests/ddp_train.py OUT_PREFIX BATCH_SIZE FREEZE           # one process
    torchrun --nproc_per_node 2 tests/ddp_train.py OUT_PREFIX ...     # two processes
"""

import os
import sys
from pathlib import Path

import torch

from crystalzoo.data import CrystalDataset
from crystalzoo import TrainConfig, make_model, train_model


def main() -> None:
    out, batch, freeze = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    ds = CrystalDataset.from_jsonl(Path(__file__).parents[1] / "data" / "mp200.jsonl.gz", targets=["band_gap"],
                                   progress=False, cache_dir=False, limit=120)
    train, val, _ = ds.split(80, 40, 0, seed=0)
    model = make_model("formation", train, freeze=None if freeze == "none" else int(freeze), seed=0)
    history = train_model(model, train, val, TrainConfig(epochs=2, batch_size=batch, lr=1e-2, progress=False))
    rank = os.environ.get("RANK", "0")
    torch.save({"state": model.state_dict(), "train_loss": [r["train_loss"] for r in history.rows]}, f"{out}.{rank}.pt")


if __name__ == "__main__":
    main()
