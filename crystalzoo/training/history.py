"""The history of a training run: one row per epoch, and its learning-curve plot."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write
from ..losses import LABELS


@dataclass
class History:
    """One row per epoch: train_loss, val_loss (of the run's loss on the normalised targets:
    MSE or L1; cross-entropy for a classifier), val_mae (target units), seconds."""

    rows: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf

    def plot(self, path: str | os.PathLike, title: str = "", loss: str = LABELS["mse"]) -> Path:
        """Learning curve (train and validation loss per epoch) as a PNG; ``loss`` labels the y axis."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [r["train_loss"] for r in self.rows], label="train")
        ax.plot(epochs, [r["val_loss"] for r in self.rows], label="validation")
        ax.axvline(self.best_epoch, color="grey", ls=":", label=f"best (epoch {self.best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(loss)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        try:
            atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
        finally:
            plt.close(fig)
        return Path(path)
