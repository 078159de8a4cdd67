"""Training and fine-tuning: MSE loss on normalised targets (masked where labels are
missing), MAE in the target's units, best-validation weights, early stopping, seeded runs,
per-epoch checkpoints for ``resume``, a history and a learning-curve plot.

Frozen layers are a fixed function: their output is computed once per crystal and reused
every epoch, so fine-tuning with more frozen layers is faster.

Example::

    >>> from crystalzoo import finetune
    >>> from crystalzoo.data import bundled_dataset
    >>> result = finetune(bundled_dataset("mp-band-gap"), "band_gap", backbone="formation", freeze=2,
    ...                   train_size=200, val_size=100, test_size=100, epochs=3, progress=False)
    >>> result.metrics["sizes"]
    {'train': 200, 'val': 100, 'test': 100}
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .data import CrystalDataset, _split_target, bundled_dataset
from .errors import DataError
from .graphs import collate
from .models import BackboneConfig, CGCNNBackbone, ClassificationHead, CrystalModel, RegressionHead
from .serialization import atomic_write

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Optimisation settings. The defaults fine-tune a CGCNN on about a thousand crystals."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9, as the original CGCNN)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    early_stopping: int | None = None  # stop after this many epochs without a better validation loss
    progress: bool = True
    schedule: str = "constant"  # or "cosine": lr decays as lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch`` (1-based); a function of the epoch alone, so resuming needs no state."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


@dataclass
class History:
    """One row per epoch: train_loss, val_loss (normalised MSE), val_mae (target units), seconds."""

    rows: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf

    def plot(self, path: str | os.PathLike, title: str = "") -> Path:
        """Learning curve (train and validation loss per epoch) as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [r["train_loss"] for r in self.rows], label="train")
        ax.plot(epochs, [r["val_loss"] for r in self.rows], label="validation")
        ax.axvline(self.best_epoch, color="grey", ls=":", label=f"best (epoch {self.best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("MSE loss (normalised target)")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


# ---------------------------------------------------------------------------- batches


class _Batches:
    """Yields (graph, start, atom vectors or None, labels) batches of a dataset; with a frozen
    prefix, the prefix's atom vectors are computed once here and reused."""

    def __init__(self, model: CrystalModel, ds: CrystalDataset, batch_size: int, device: str):
        self.model, self.ds, self.batch_size, self.device = model, ds, batch_size, device
        self.start = 0
        self.prefix: list[torch.Tensor] | None = None
        backbone = model.backbone
        if backbone.frozen is not None and len(ds):
            self.start = backbone.frozen
            self.prefix = []
            with torch.no_grad():
                for lo in range(0, len(ds), 256):
                    g = collate(ds.graphs[lo : lo + 256], ds.settings).to(device)
                    h = backbone.atom_features(g, upto=self.start)
                    self.prefix.extend(torch.split(h, g.n_atoms.tolist()))

    def __call__(self, order: Sequence[int]):
        for lo in range(0, len(order), self.batch_size):
            idx = list(order[lo : lo + self.batch_size])
            g = collate([self.ds.graphs[i] for i in idx], self.ds.settings).to(self.device)
            h = torch.cat([self.prefix[i] for i in idx]) if self.prefix is not None else None
            y = torch.from_numpy(self.ds.labels[idx]).to(self.device)
            yield g, h, y


def _forward(model: CrystalModel, g, h, start: int) -> torch.Tensor:
    atoms = model.backbone.atom_features(g, h=h, start=start)
    return model.head(model.backbone.readout(g, atoms))


def _loss(model: CrystalModel, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if model.task == "classification":
        return torch.nn.functional.cross_entropy(out, y[:, 0].long())
    mask = ~torch.isnan(y)
    target = model.head.normalize(torch.nan_to_num(y))
    return ((out - target) ** 2 * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def _evaluate(model: CrystalModel, batches: _Batches) -> dict[str, float]:
    model.eval()
    losses, errors, weights = [], [], []
    for g, h, y in batches(range(len(batches.ds))):
        out = _forward(model, g, h, batches.start)
        losses.append(_loss(model, out, y).item() * len(y))
        weights.append(len(y))
        pred = model.output_in_units(out)
        if model.task == "classification":
            errors.append((pred.argmax(1) == y[:, 0].long()).float().cpu().numpy()[:, None])
        else:
            errors.append((pred - y).abs().cpu().numpy())
    err = np.concatenate(errors)
    result = {"loss": float(np.sum(losses) / max(1, np.sum(weights)))}
    if model.task == "classification":
        result["accuracy"] = float(err.mean())
    else:
        for j, t in enumerate(model.targets):
            col = err[:, j][~np.isnan(err[:, j])]
            result[f"mae_{t}"] = float(col.mean()) if len(col) else float("nan")
        result["mae"] = float(np.nanmean([result[f"mae_{t}"] for t in model.targets]))
    return result


def evaluate(model: CrystalModel, dataset: CrystalDataset, batch_size: int = 256) -> dict[str, float]:
    """Loss and MAE (per target and mean; accuracy for classifiers) of ``model`` on ``dataset``."""
    model.graph_settings.check_same(dataset.settings, "this model")
    device = next(model.parameters()).device
    return _evaluate(model, _Batches(model, dataset, batch_size, str(device)))


# ---------------------------------------------------------------------------- training


def _distributed(device: str = "cpu") -> tuple[int, int]:
    """(world size, rank). Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
    started here: gloo on CPU, nccl on GPU."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _shard(order: np.ndarray, world: int, rank: int) -> np.ndarray:
    """This rank's share of an epoch: pad the permutation to a multiple of ``world`` by
    repeating its start, then take every ``world``-th crystal, so that step k of all ranks
    together covers batch k of a single process with ``world`` times the batch size."""
    if world == 1:
        return order
    per = -(-len(order) // world)
    padded = np.concatenate([order, order[: per * world - len(order)]])
    return padded[rank::world]


def train_model(model: CrystalModel, train: CrystalDataset, val: CrystalDataset, config: TrainConfig = TrainConfig(),
                out_dir: str | os.PathLike | None = None, resume: bool = False) -> History:
    """Train ``model`` on ``train``, keeping the weights of the best validation epoch.

    With ``out_dir``, a checkpoint is written after every epoch, and ``resume=True`` carries
    on from it (same seed → same result as an uninterrupted run).

    Under ``torchrun --nproc_per_node N`` each process trains on its shard of every epoch
    (``batch_size`` per process), gradients are averaged across processes, BatchNorm
    statistics are taken from rank 0 after each epoch, and only rank 0 writes files.
    """
    import torch.distributed as dist
    from tqdm.auto import tqdm

    world, rank = _distributed(config.device)
    if world > 1 and config.device == "cuda":  # one GPU per process
        config = TrainConfig(**{**asdict(config), "device": f"cuda:{os.environ.get('LOCAL_RANK', rank)}"})
    for ds in (train, val):
        model.graph_settings.check_same(ds.settings, "this model")
        if len(ds) == 0:
            raise DataError("training and validation sets must not be empty")
    torch.manual_seed(config.seed)
    model.to(config.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay) if config.optimizer == "adam"
           else torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay))
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    first = 1
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=config.device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        best_state = ckpt["best_state"]
        history = History(ckpt["history"], ckpt["best_epoch"], ckpt["best_val_loss"])
        torch.set_rng_state(ckpt["rng"])
        first = ckpt["epoch"] + 1
    train_batches = _Batches(model, train, config.batch_size, config.device)
    val_batches = _Batches(model, val, 256, config.device)
    bar = tqdm(range(first, config.epochs + 1), desc="training", unit="epoch", disable=not config.progress or rank > 0,
               initial=first - 1, total=config.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = config.lr_at(epoch)
        model.train()
        order = _shard(np.random.default_rng([config.seed, epoch]).permutation(len(train)), world, rank)
        total, count = 0.0, 0
        for g, h, y in train_batches(order):
            opt.zero_grad()
            loss = _loss(model, _forward(model, g, h, train_batches.start), y)
            loss.backward()
            if world > 1:
                for p in params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= world
            opt.step()
            total, count = total + loss.item() * len(y), count + len(y)
        if world > 1:
            for b in model.buffers():
                dist.broadcast(b, 0)
            sums = torch.tensor([total, count], dtype=torch.float64)
            dist.all_reduce(sums)
            total, count = float(sums[0]), float(sums[1])
        scores = _evaluate(model, val_batches)
        row = {"epoch": epoch, "lr": config.lr_at(epoch), "train_loss": total / count, "val_loss": scores["loss"],
               **{f"val_{k}": v for k, v in scores.items() if k != "loss"},
               "seconds": time.perf_counter() - t0}
        history.rows.append(row)
        if scores["loss"] < history.best_val_loss:
            history.best_val_loss, history.best_epoch = scores["loss"], epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "val_loss", "val_mae")})
        if ckpt_path is not None and rank == 0:
            state = {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "best_state": best_state, "history": history.rows, "best_epoch": history.best_epoch,
                     "best_val_loss": history.best_val_loss, "rng": torch.get_rng_state()}
            atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
        if config.early_stopping and epoch - history.best_epoch >= config.early_stopping:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return history


# ---------------------------------------------------------------------------- fine-tuning


@dataclass
class FinetuneResult:
    model: CrystalModel
    metrics: dict[str, Any]
    history: History


def _as_dataset(data: Any, targets: Sequence[str], **kwargs) -> CrystalDataset:
    if isinstance(data, CrystalDataset):
        return data
    path = Path(data)
    if not path.exists() and str(data).startswith("bundled:"):
        path = bundled_dataset(str(data)[len("bundled:"):])
    if path.is_dir():
        return CrystalDataset.from_cif_folder(path, targets=targets, **kwargs)
    if path.suffix == ".csv":
        import pandas as pd

        return CrystalDataset.from_dataframe(pd.read_csv(path), targets=targets, **kwargs)
    return CrystalDataset.from_jsonl(path, targets=targets, **kwargs)


def make_model(backbone: str | None, dataset: CrystalDataset, *, freeze: int | None = None, reinit: bool = False,
               task: str = "regression", seed: int = 0, architecture: dict[str, Any] | None = None,
               units: Sequence[str] | None = None) -> CrystalModel:
    """A pretrained backbone (``None``: a new one from scratch, shaped by ``architecture``, a
    :class:`BackboneConfig` dict, default the original CGCNN's) with a new head sized for
    ``dataset``, whose normaliser is taken from ``dataset`` (the training split); ``units``
    (one per target, e.g. ``["eV"]``) label the predictions."""
    from .registry import load_backbone

    torch.manual_seed(seed)
    if backbone is None:
        bb = CGCNNBackbone(BackboneConfig(**(architecture or {})), dataset.settings)
        if freeze is not None:
            raise DataError("freeze needs a pretrained backbone; a model from scratch trains every layer")
    else:
        bb = load_backbone(backbone, freeze=freeze, reinit=reinit, graph_settings=dataset.settings)
    empty = [t for t, n in zip(dataset.targets, (~np.isnan(dataset.labels)).sum(axis=0)) if n == 0]
    if empty:
        raise DataError(f"no crystal of the training split has a label for {empty}")
    if task == "classification":
        classes = sorted({int(v) for v in dataset.labels[:, 0] if not np.isnan(v)})
        if classes != list(range(len(classes))) or len(classes) < 2:
            raise DataError(f"classification labels must be the integers 0 … C-1 (C ≥ 2); found {classes[:10]}")
        head = ClassificationHead(bb.out_features, [str(c) for c in classes], dataset.targets[0])
    else:
        head = RegressionHead(bb.out_features, dataset.targets, units=units,
                              mean=np.nanmean(dataset.labels, axis=0).tolist(),
                              std=np.maximum(np.nanstd(dataset.labels, axis=0), 1e-6).tolist())
    return CrystalModel(bb, head, {"backbone": backbone or "none", "freeze": freeze, "reinit": reinit})


def finetune(data: Any, target: str | Sequence[str], *, backbone: str | None = "formation", freeze: int | None = None,
             reinit: bool = False, train_size: float | int = 0.8, val_size: float | int = 0.1,
             test_size: float | int = 0.1, seed: int = 0, out_dir: str | os.PathLike | None = None,
             resume: bool = False, task: str = "regression", cache_dir=None, architecture: dict[str, Any] | None = None,
             units: Sequence[str] | None = None, **train_options) -> FinetuneResult:
    """Fine-tune a registered backbone (``None``: from scratch) on ``data`` for ``target``.

    ``data``: a :class:`CrystalDataset`, a JSON-lines file, a CSV (``cif`` column), a CGCNN
    folder, or ``"bundled:mp-band-gap"``. Splits are seeded by ``seed`` (sizes are counts or
    fractions); ``train_options`` go to :class:`TrainConfig` (epochs, lr, batch_size, …).
    With ``out_dir``, writes the model (``model.safetensors`` + ``config.json``),
    ``metrics.json``, ``history.json`` and ``learning_curve.png``.
    """
    targets = [target] if isinstance(target, str) else list(target)
    config = TrainConfig(seed=seed, **train_options)
    progress = config.progress
    ds = _as_dataset(data, targets, progress=progress, cache_dir=cache_dir)
    targets = [_split_target(t)[0] if ":" in t and t not in ds.targets else t for t in targets]
    ds = ds.select_targets(targets)
    if ds.info.get("dropped_missing"):
        print(f"crystalzoo: {ds.info['dropped_missing']} crystals have no {', '.join(targets)} label and are left out",
              file=sys.stderr)
    if len(ds) == 0:
        raise DataError(f"no crystal in the data has a {', '.join(targets)} label")
    train, val, test = ds.split(train_size, val_size, test_size, seed=seed)
    model = make_model(backbone, train, freeze=freeze, reinit=reinit, task=task, seed=seed, architecture=architecture,
                       units=units)
    t0 = time.perf_counter()
    history = train_model(model, train, val, config, out_dir=out_dir, resume=resume)
    seconds = time.perf_counter() - t0
    metrics: dict[str, Any] = {
        "backbone": backbone or "none", "freeze": freeze, "reinit": reinit, "targets": targets, "seed": seed,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "dropped_missing_labels": ds.info.get("dropped_missing", 0),
        "epochs": len(history.rows), "best_epoch": history.best_epoch, "train_seconds": round(seconds, 2),
        "val": _evaluate(model, _Batches(model, val, 256, config.device)),
    }
    if len(test):
        metrics["test"] = _evaluate(model, _Batches(model, test, 256, config.device))
    metrics["num_params"] = sum(p.numel() for p in model.parameters())
    if out_dir is not None and _distributed()[1] == 0:
        from .serialization import save_pretrained

        out = Path(out_dir)
        save_pretrained(model, out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "history.json").write_text(json.dumps(asdict(history), indent=2))
        history.plot(out / "learning_curve.png", f"{backbone or 'from scratch'} → {', '.join(targets)}, freeze={freeze}")
    return FinetuneResult(model, metrics, history)


def pretrain(data: Any, targets: Sequence[str], *, conv: str = "gated", train_size: float | int = 0.8,
             val_size: float | int = 0.1, test_size: float | int = 0.1, seed: int = 0,
             out_dir: str | os.PathLike | None = None, resume: bool = False, cache_dir=None,
             architecture: dict[str, Any] | None = None, units: Sequence[str] | None = None,
             **train_options) -> FinetuneResult:
    """Train a new backbone from scratch on one or several targets (multi-task: one
    normaliser per target, missing labels masked in the loss). Targets may be transformed,
    e.g. ``"log10:k_vrh"``. The result in ``out_dir`` loads with ``load_backbone(out_dir)``
    and is registered with :func:`crystalzoo.manifest.register_weights`.

    Example::

        >>> r = pretrain("tests/data/mp200.jsonl.gz", ["formation_energy_per_atom", "log10:k_vrh"],
        ...              train_size=100, val_size=50, test_size=50, epochs=2, progress=False)
        >>> sorted(k for k in r.metrics["test"] if k.startswith("mae_"))
        ['mae_formation_energy_per_atom', 'mae_log10_k_vrh']
    """
    arch = {**(architecture or {}), "conv": conv}
    return finetune(data, list(targets), backbone=None, train_size=train_size, val_size=val_size,
                    test_size=test_size, seed=seed, out_dir=out_dir, resume=resume, cache_dir=cache_dir,
                    architecture=arch, units=units, **train_options)
