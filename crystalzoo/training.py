"""Training and fine-tuning: MSE (or L1, ``TrainConfig.loss``) loss on normalised targets
(masked where labels are missing), MAE in the target's units, best-validation weights, early
stopping, seeded runs, per-epoch checkpoints for ``resume``, a history and a learning-curve
plot.

Frozen layers are a fixed function: their output is computed once per crystal and reused
every epoch, so fine-tuning with more frozen layers is faster.

A run's output folder belongs to that run: it is locked while the run writes to it, an
earlier run in it is replaced only with ``overwrite=True`` and continued only with
``resume=True`` (from a checkpoint of the same configuration), and every file is written
atomically (docs/robustness.md, "Training runs").

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
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .data import CrystalDataset, _split_target, _target_list, check_split_size, read_dataset
from .errors import ConfigError, DataError, RunError, WeightsError, WriteError
from .crystal_graph import mean_per_crystal
from .graphs import check_count, collate, crystal_batches, plain
from .ensembles import CrystalEnsemble, check_members
from .models import (MAX_OUTPUTS, BackboneConfig, CGCNNBackbone, CrystalModel, Predictor, hold_frozen, make_head,
                     model_from_config)
from .files import atomic_write, write_json
from .serialization import CONFIG_NAME, RUN_RECORDS, WEIGHTS_NAME, load_into
from . import recipes
from .losses import LABELS, check_loss
from .train_config import TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT = RUN_RECORDS[0]
#: the files a training run writes into its output folder
RUN_FILES = (WEIGHTS_NAME, CONFIG_NAME, "metrics.json", "history.json", CHECKPOINT, "learning_curve.png")
#: the lock file of a folder a run is writing to (removed when the run ends)
LOCK_NAME = ".crystalzoo.lock"
TASKS = ("regression", "classification")


def _check_loss(config: TrainConfig, task: str) -> None:
    """A classifier trains on cross-entropy: :class:`ConfigError` for any other loss."""
    if config.loss != "mse" and task != "regression":
        raise ConfigError(f"loss = {config.loss!r} is a regression's loss, and a classifier trains on cross-entropy: "
                          "leave out loss (--loss)")


def _check_task(task: Any) -> None:
    if task not in TASKS:
        import difflib

        near = difflib.get_close_matches(str(task).lower(), TASKS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"task = {task!r} is not a task; valid: 'regression', 'classification'{hint}")


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


# ---------------------------------------------------------------------------- batches


class _Batches:
    """Yields (graph, atom vectors of the frozen prefix or None, labels) batches of a dataset; with a frozen
    prefix, the prefix's atom vectors are computed once here and reused.

    ``train=True``: BatchNorm cannot train on a batch of one crystal (a one-atom crystal alone
    is one value per channel), so a last batch of one crystal joins the batch before it."""

    def __init__(self, model: Predictor, ds: CrystalDataset, batch_size: int, device: str, train: bool = False,
                 prefixes: dict | None = None):
        self.model, self.ds, self.batch_size, self.device, self.train = model, ds, batch_size, device, train
        self.start = 0
        self.prefix: list[torch.Tensor] | None = None
        backbone = getattr(model, "backbone", None)  # an ensemble's members run whole here
        if backbone is not None and backbone.frozen is not None and len(ds):
            self.start = backbone.frozen
            # the members of an ensemble share their frozen layers (one pretrained backbone): one prefix for all
            key = (id(ds), self.start)
            if prefixes is not None and key in prefixes:
                self.prefix = prefixes[key]
                return
            self.prefix = []
            hold_frozen(backbone)  # a fixed function: running statistics
            with torch.no_grad():
                for lo in range(0, len(ds), 256):
                    g = collate(ds.graphs[lo : lo + 256], ds.settings).to(device)
                    h = backbone.atom_features(g, upto=self.start)
                    self.prefix.extend(torch.split(h, g.n_atoms.tolist()))
            if prefixes is not None:
                prefixes[key] = self.prefix

    def __call__(self, order: Sequence[int]):
        starts = list(range(0, len(order), self.batch_size))
        if self.train and len(starts) > 1 and len(order) - starts[-1] == 1:
            starts.pop()
        for lo, hi in zip(starts, starts[1:] + [len(order)]):
            idx = list(order[lo:hi])
            g = collate([self.ds.graphs[i] for i in idx], self.ds.settings).to(self.device)
            if self.train and g.num_atoms == 1:  # only where there is no batch to join: a share of one crystal
                raise DataError(f"a training batch holds only crystal {self.ds.ids[idx[0]]!r}, which has one atom: "
                                "BatchNorm cannot train on one value per channel. Use more training crystals (or, "
                                "under torchrun, fewer processes than crystals)")
            h = torch.cat([self.prefix[i] for i in idx]) if self.prefix is not None else None
            y = torch.from_numpy(self.ds.labels[idx]).to(self.device)
            yield g, h, y


def _forward(model: CrystalModel, g, h, start: int) -> torch.Tensor:
    atoms = model.backbone.atom_features(g, h=h, start=start)
    return model.output(g, model.backbone.readout(g, atoms))


@torch.no_grad()
def _evaluate(model: Predictor, batches: _Batches, loss: str = "mse") -> dict[str, float]:
    """The loss (of kind ``loss``, :class:`TrainConfig`'s) and the head's scores (MAE per
    target, or accuracy) of ``model`` on a dataset (an ensemble: of its mean prediction)."""
    model.eval()
    members = model.member_models()
    losses, errors, weights = [], [], []
    for g, h, y in batches(range(len(batches.ds))):
        outs = [_forward(m, g, h, batches.start) for m in members]
        out = outs[0] if len(outs) == 1 else model.head.combine(outs)
        labels = int((~torch.isnan(y)).sum())  # the loss is a mean over the batch's labels
        losses.append(model.head.loss(out, y, loss).item() * labels)
        weights.append(labels)
        errors.append(model.head.errors(model.output_in_units(out), y))
    return {"loss": float(np.sum(losses) / max(1, np.sum(weights))), **model.head.scores(np.concatenate(errors))}


def _check_classes(model: CrystalModel, ds: CrystalDataset, what: str) -> None:
    """The labels of ``ds`` must be ones the model's head can learn (a classifier: its classes)."""
    model.head.check_labels(ds.labels, ds.ids, what)


def _check_dataset(data: Any, what: str) -> None:
    """:class:`ConfigError` unless ``data`` is a :class:`CrystalDataset` with a label for some crystal."""
    if not isinstance(data, CrystalDataset):
        raise ConfigError(f"{what} must be a CrystalDataset (CrystalDataset.from_jsonl / from_csv / from_structures, "
                          f"or ds.split(...)), not a {type(data).__name__}")
    if len(data) and not (~np.isnan(data.labels)).any():
        raise DataError(f"{what} has no labels (every label is missing): there is nothing to train or score on")


def _check_model(model: Any, ensembles: bool = False) -> None:
    if isinstance(model, Predictor) and not isinstance(model, CrystalModel):
        if not ensembles:
            raise ConfigError("train_model trains one model; an ensemble's members are trained one by one (their "
                              "seeds differ): finetune(..., ensemble=N), or train_model on each of model.members")
        return
    if not isinstance(model, CrystalModel):
        raise ConfigError(f"expected a CrystalModel (a backbone with its head), got a {type(model).__name__}: e.g. "
                          "load_model(name), or CrystalModel(backbone, RegressionHead(backbone.out_features, targets))")


def _check_targets(model: CrystalModel, ds: CrystalDataset, what: str) -> None:
    """:class:`DataError` unless ``ds`` has the model's targets, in its order (scores against
    another target's labels would be silently wrong)."""
    if list(ds.targets) != list(model.targets):
        raise DataError(f"{what} has the targets {list(ds.targets)}, the model predicts {list(model.targets)}: "
                        "select the model's targets first (dataset.select_targets(model.targets))")


def evaluate(model: Predictor, dataset: CrystalDataset, batch_size: int = 256, loss: str = "mse") -> dict[str, float]:
    """Loss (of kind ``loss``, as :class:`TrainConfig`'s: a mean over every label of the data
    set) and MAE (per target and mean; accuracy for classifiers) of ``model`` on ``dataset``,
    whose targets must be the model's (:class:`DataError` otherwise). An ensemble is scored
    on its mean prediction."""
    _check_model(model, ensembles=True)
    _check_dataset(dataset, "the data set to evaluate on")
    check_count(batch_size, "batch_size")
    _check_targets(model, dataset, "the data set")
    check_loss(loss)
    if len(dataset) == 0:
        raise DataError("the data set to evaluate on has no crystal")
    model.graph_settings.check_same(dataset.settings, "this model")
    _check_classes(model, dataset, "the data set")
    device = next(model.parameters()).device
    return _evaluate(model, _Batches(model, dataset, batch_size, str(device)), loss)


# ---------------------------------------------------------------------------- processes


def _distributed(device: str = "cpu") -> tuple[int, int]:
    """(world size, rank). Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
    started here: gloo on CPU, nccl on GPU."""
    import torch.distributed as dist

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE = {os.environ['WORLD_SIZE']!r} is not a number of processes; it is set by "
                          "torchrun (unset it to train in one process)") from None
    if world <= 1:
        return 1, 0
    unset = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if unset and not dist.is_initialized():
        raise ConfigError(f"WORLD_SIZE = {world} is set but {', '.join(unset)} not: start the processes with torchrun "
                          "(docs/pretraining.md), or unset WORLD_SIZE to train in one process")
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


# ---------------------------------------------------------------------------- run folders


def check_out_dir(out_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> list[str]:
    """Check that a run may write into ``out_dir``; returns the run files already there.

    A folder that holds a run (any of :data:`RUN_FILES`) is refused unless ``overwrite``
    (replace it) or ``resume`` (continue it; needs its checkpoint). A missing or empty folder,
    or one with only other files in it, is fine.

    Example::

        >>> check_out_dir("/tmp/a-new-run")
        []
    """
    if overwrite and resume:
        raise ConfigError("overwrite and resume exclude each other: --resume continues the run in --out, "
                          "--overwrite replaces it; give one of them")
    if not str(out_dir).strip():  # Path("") is the current folder
        raise ConfigError("--out is empty: give the folder the run writes into (e.g. --out runs/band-gap)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; the output of a run is a folder: choose another --out")
    present = ([name for name in RUN_FILES if (out / name).exists()]
               + sorted(p.name for p in out.glob("checkpoint-member*.pt"))) if out.is_dir() else []
    if present and not (overwrite or resume):
        raise RunError(f"{out} already holds a run ({', '.join(present)}); pass --overwrite (overwrite=True) to "
                       "replace it, --resume (resume=True) to continue it, or choose another --out")
    if present and resume and CHECKPOINT not in present:
        raise RunError(f"{out} holds a run ({', '.join(present)}) but no {CHECKPOINT} to resume from; pass "
                       "--overwrite (overwrite=True) to replace it, or choose another --out")
    return present


_claimed: dict[tuple[int, str], int] = {}  # (thread, realpath) → depth of the claims held (finetune → train_model)
_replaced: dict[tuple[int, str], list[str]] = {}  # (thread, realpath) → files of the run that overwrite replaces


def _replace_old_run(out_dir: str | os.PathLike) -> None:
    """Delete the files of the earlier run that ``overwrite`` replaces, in a folder this thread
    has claimed: only once the new run's data, split and model are ready, so that a run that
    fails before it starts (a missing file, a misspelt target) leaves the earlier run intact."""
    out = Path(out_dir)
    for name in _replaced.pop((threading.get_ident(), os.path.realpath(out)), []):
        try:
            (out / name).unlink()
        except FileNotFoundError:
            pass


def _lock(path: Path) -> int | None:
    """Take the exclusive lock of a run folder: ``flock`` on ``path``, which the OS releases
    when the process ends however it ends, so a lock left by a dead process never blocks.
    Returns the open descriptor (None where the file system has no locks)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock (documented)
        return None
    while True:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise RunError(f"the lock file {path} is a link or not a regular file; crystalzoo will not write through "
                           "it: remove it, or choose another --out")
        try:  # O_NOFOLLOW: never truncate a file a link points to
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise WriteError(f"cannot create the lock file {path} ({exc}); is the folder read-only, or the lock file "
                             "a link? Choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "it has not written its pid yet"
            os.close(fd)
            raise RunError(f"{path.parent} is in use by another crystalzoo run ({owner}); two runs cannot write "
                           "into one folder: wait for it to end, or choose another --out") from None
        except OSError:  # a file system without flock (some network mounts): go on unlocked
            os.close(fd)
            return None
        try:  # the holder before us removes the file when it ends: lock the file that is there now
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    return fd


@contextmanager
def claim_run_folder(out_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Hold ``out_dir`` for one training run for the length of the ``with`` block: lock it
    against a second writer (:data:`LOCK_NAME`, removed at the end) and check it with
    :func:`check_out_dir`. With ``overwrite``, the earlier run's files are deleted when the new
    run starts training (:func:`_replace_old_run`), not before. Nested claims of a folder this
    process already holds pass through.

    Example::

        >>> with claim_run_folder("/tmp/my-run") as out:
        ...     pass  # a second process claiming /tmp/my-run here gets a RunError at once
    """
    if not str(out_dir).strip():
        check_out_dir(out_dir)  # the ConfigError for an empty --out
    out = Path(out_dir)
    key = (threading.get_ident(), os.path.realpath(out))
    if key in _claimed:  # finetune's claim, seen again by train_model: checked there already
        _claimed[key] += 1
        try:
            yield out
        finally:
            _claimed[key] -= 1
        return
    check_out_dir(out, overwrite=overwrite, resume=resume)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create the output folder {out} ({exc}); choose another --out") from None
    fd = _lock(out / LOCK_NAME)
    _claimed[key] = 1
    try:
        present = check_out_dir(out, overwrite=overwrite, resume=resume)  # again, now that we hold the lock
        _replaced[key] = present if overwrite else []  # deleted by _replace_old_run, once the new run can start
        yield out
    finally:
        del _claimed[key]
        _replaced.pop(key, None)
        if fd is not None:
            try:
                os.unlink(out / LOCK_NAME)
            except OSError:
                pass
            os.close(fd)
        if created:  # a run that stopped before it wrote anything leaves no empty folder behind
            try:
                out.rmdir()  # only an empty folder
            except OSError:
                pass


# ---------------------------------------------------------------------------- checkpoints


def _data_digest(ds: CrystalDataset) -> str:
    """A short hash of a split: its crystals (ids and graphs), in order, and their labels."""
    h = hashlib.sha256(json.dumps([ds.ids, ds.targets]).encode())
    h.update(np.ascontiguousarray(ds.labels, dtype=np.float32).tobytes())
    for g in ds.graphs:
        for a in (g.z, g.src, g.dst, g.distance):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _run_description(model: CrystalModel, train: CrystalDataset, val: CrystalDataset, config: TrainConfig,
                     members: int = 1) -> dict:
    """What a checkpoint must share with a run that resumes it: the model (architecture, graph
    settings, head and targets, backbone, freeze), the data and its split, and the optimisation
    (seed, optimizer, lr, schedule, weight decay, batch size, loss). Epochs, early stopping and the
    device may change."""
    return json.loads(json.dumps({
        **{k: v for k, v in model.config().items() if k != "format_version"},  # a newer file format is the same run
        "backbone": asdict(model.backbone.config) if isinstance(model.backbone, CGCNNBackbone)  # as checkpoints have it
        else model.backbone.to_config(), "seed": config.seed, "optimizer": config.optimizer, "lr": config.lr,
        "schedule": config.schedule, "weight_decay": config.weight_decay, "batch_size": config.batch_size,
        **({"recipe": config.recipe} if config.recipe != "freeze" else {}),  # runs before recipes existed: freeze
        **({"loss": config.loss} if config.loss != "mse" else {}),  # runs before the option existed: mse
        **({"l2sp_alpha": config.alpha()} if config.recipe == "l2sp" and config.alpha() != recipes.L2SP_ALPHA
           else {}),  # runs before the option existed: the default
        # a cosine schedule's rates depend on the number of epochs: extending such a run changes it
        **({"epochs (cosine schedule)": config.epochs} if config.schedule == "cosine" else {}),
        **({"epochs (gradual unfreezing)": config.epochs} if config.recipe == "gradual" else {}),  # its phases
        "training data": _data_digest(train), "validation data": _data_digest(val),
        **({"ensemble members": members} if members > 1 else {}),  # resuming with another N replaces no model
    }))


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same_setting(key: str, a: Any, b: Any) -> bool:
    """Whether two values of a run setting are the same; a backbone folder named two ways
    (``/runs/b`` and ``b/`` from /runs) is the same folder."""
    if a == b:
        return True
    if key == "meta.backbone" and isinstance(a, str) and isinstance(b, str):
        try:
            return Path(a).is_dir() and Path(b).is_dir() and Path(a).resolve() == Path(b).resolve()
        except (OSError, ValueError):
            return False
    return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _corrupt(path: Path, exc: BaseException) -> WeightsError:
    reason = (str(exc).strip().splitlines() or [""])[0][:200]
    return WeightsError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {reason}): it is truncated, "
                        "corrupt or not a crystalzoo checkpoint. Pass --overwrite (overwrite=True) to start the run "
                        "again, or choose another --out")


def _resume(path: Path, description: dict, model: CrystalModel, opt: torch.optim.Optimizer, device: str,
            epochs: int) -> tuple[History, dict, int]:
    """Load the checkpoint at ``path`` into ``model`` and ``opt`` after checking that it
    belongs to the run ``description`` describes; returns (history, best state, next epoch)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated zip, another file format, objects weights_only refuses
        raise _corrupt(path, exc) from None
    try:
        if "run" not in ckpt:
            raise RunError(f"checkpoint {path} does not say which run it belongs to (an older crystalzoo wrote it), "
                           "so it cannot be checked against this one; pass --overwrite (overwrite=True) to start again")
        stored, now = _flat(json.loads(ckpt["run"])), _flat(description)
        stored.pop("frozen", None)  # written by crystalzoo before 2026-11-26, never read
        defaults = {"l2sp_alpha": recipes.L2SP_ALPHA, "loss": "mse"}  # settings a description leaves out at their default
        stored_now = [(k, stored.get(k, defaults.get(k)), now.get(k, defaults.get(k)))
                      for k in sorted(set(stored) | set(now))]
        differences = [f"{k}: {_short(a)} in the checkpoint, {_short(b)} now"
                       for k, a, b in stored_now if not _same_setting(k, a, b)]
        if differences:
            raise RunError(f"checkpoint {path} belongs to another run: {'; '.join(differences)}. Resume with the "
                           "settings and data of that run, pass --overwrite (overwrite=True) to start a new run "
                           "there, or choose another --out")
        load_into(model, ckpt["best_state"], f"checkpoint {path}")  # both checked strictly, tensor by tensor
        load_into(model, ckpt["model"], f"checkpoint {path}")
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"].cpu())
        history = History(list(ckpt["history"]), int(ckpt["best_epoch"]), float(ckpt["best_val_loss"]))
        done = int(ckpt["epoch"])
    except (RunError, WeightsError):
        raise
    except Exception as exc:  # a key missing or of the wrong type: not a checkpoint of ours
        raise _corrupt(path, exc) from None
    if done > epochs:
        raise RunError(f"checkpoint {path} has trained {done} epochs, more than epochs = {epochs}; resume with "
                       f"--epochs {done} or more")
    return history, ckpt["best_state"], done + 1


# ---------------------------------------------------------------------------- training


def _diverged(what: str, value: float, epoch: int, config: TrainConfig) -> RunError:
    return RunError(f"the {what} is not finite ({value}) in epoch {epoch}: training diverged and is stopped, and "
                    "nothing is saved as its result (only the checkpoint of the last finished epoch, if there is one, "
                    f"stays). Lower the learning rate (lr = {config.lr:g}), or check the scale of the labels")


def train_model(model: CrystalModel, train: CrystalDataset, val: CrystalDataset, config: TrainConfig = TrainConfig(),
                out_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False) -> History:
    """Train ``model`` on ``train``, keeping the weights of the best validation epoch.

    With ``out_dir``, a checkpoint is written after every epoch, and ``resume=True`` carries
    on from it (same seed → same result as an uninterrupted run) once it has checked that the
    checkpoint belongs to this run. A folder that holds a run is refused unless ``resume`` or
    ``overwrite``; it is locked while the run writes to it (:func:`claim_run_folder`).

    A non-finite loss stops the run with a :class:`RunError`. A last training batch of one
    crystal joins the batch before it (BatchNorm cannot train on one crystal).

    Under ``torchrun --nproc_per_node N`` each process trains on its shard of every epoch
    (``batch_size`` per process), gradients are averaged across processes, BatchNorm
    statistics are taken from rank 0 after each epoch, and only rank 0 writes files.
    """
    _check_model(model)
    _check_dataset(train, "the training set")
    _check_dataset(val, "the validation set")
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got a {type(config).__name__}: e.g. "
                          "TrainConfig(epochs=30, lr=1e-3)")
    if (resume or overwrite) and out_dir is None:
        raise ConfigError("resume and overwrite need out_dir, the folder of the run")
    _check_loss(config, model.head.task)
    return _run(model, train, val, config, out_dir, resume, overwrite)


def _run(model: CrystalModel, train: CrystalDataset, val: CrystalDataset, config: TrainConfig,
         out_dir: str | os.PathLike | None, resume: bool, overwrite: bool, checkpoint: str = CHECKPOINT,
         prefixes: dict | None = None, members: int = 1) -> History:
    """:func:`train_model` after its checks; ``checkpoint``: the checkpoint's name in
    ``out_dir`` (an ensemble's members have one each); ``prefixes``: the frozen-prefix cache the
    members of an ensemble share (:class:`_Batches`); ``members``: the ensemble's size, part of
    what a checkpoint must match to be resumed."""
    world, rank = _distributed(config.device)
    if world > 1 and config.device == "cuda":  # one GPU per process
        config = TrainConfig(**{**asdict(config), "device": f"cuda:{os.environ.get('LOCAL_RANK', rank)}"})
    claim = claim_run_folder(out_dir, overwrite=overwrite, resume=resume) if out_dir is not None and rank == 0 \
        else nullcontext()
    with claim:
        return _train(model, train, val, config, out_dir, resume, world, rank, checkpoint, prefixes, members)


def _member_checkpoint(i: int) -> str:
    """The checkpoint of an ensemble's member ``i`` (member 0: the run's own)."""
    return CHECKPOINT if i == 0 else f"checkpoint-member{i}.pt"


def _train(model: CrystalModel, train: CrystalDataset, val: CrystalDataset, config: TrainConfig,
           out_dir: str | os.PathLike | None, resume: bool, world: int, rank: int, checkpoint: str = CHECKPOINT,
           prefixes: dict | None = None, members: int = 1) -> History:
    import torch.distributed as dist
    from tqdm.auto import tqdm

    for ds, what in ((train, "the training set"), (val, "the validation set")):
        _check_targets(model, ds, what)
        model.graph_settings.check_same(ds.settings, "this model")
        if len(ds) == 0:
            raise DataError("training and validation sets must not be empty")
    if len(train) < 2:
        raise DataError("the training set has 1 crystal; BatchNorm needs at least 2 to train on")
    _check_classes(model, train, "the training split")
    _check_classes(model, val, "the validation split")
    description = (_run_description(model, train, val, config, members) if out_dir is not None
                   else {})  # may fail: before deleting
    if out_dir is not None and rank == 0:
        _replace_old_run(out_dir)
    torch.manual_seed(config.seed)
    model.to(config.device)
    backbone, floor = model.backbone, model.backbone.frozen  # gradual unfreezing stops at the given freeze
    if config.recipe != "freeze" and model.meta.get("backbone") == "none":
        raise ConfigError(f"recipe {config.recipe!r} fine-tunes a pretrained backbone; this model was made from "
                          "scratch (make_model(None, …)): train it with recipe 'freeze'")
    n_conv = len(backbone.stages()) - 1
    if config.recipe == "gradual":
        recipes.check_phases(config.epochs, n_conv, floor)
    if config.recipe == "linear-probe":
        recipes.probe(backbone)
    groups = recipes.param_groups(model, config.recipe)  # every parameter that trains at some point
    params = [p for group in groups for p in group["params"]]
    opt = (torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay) if config.optimizer == "adam"
           else torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay))
    reference = ({n: p.detach().clone() for n, p in backbone.named_parameters() if p.requires_grad}
                 if config.recipe == "l2sp" else None)
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    first = 1
    ckpt_path = Path(out_dir) / checkpoint if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        history, best_state, first = _resume(ckpt_path, description, model, opt, config.device,
                                            config.epochs)
        if config.early_stopping and history.rows and first - 1 - history.best_epoch >= config.early_stopping:
            first = config.epochs + 1  # the run had stopped early: resuming writes its results, it trains no more
    train_batches = val_batches = None
    bar = tqdm(range(first, config.epochs + 1), desc="training", unit="epoch", disable=not config.progress or rank > 0,
               initial=first - 1, total=config.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = config.lr_at(epoch) * group.get("scale", 1.0)  # checkpoints before recipes: no scale
        level = recipes.frozen_at(epoch, config.epochs, n_conv, floor) if config.recipe == "gradual" else backbone.frozen
        if level != backbone.frozen or train_batches is None:
            if config.recipe == "gradual":
                recipes.set_frozen(backbone, level)
            # the frozen prefix's atom vectors, computed once per frozen level
            train_batches = _Batches(model, train, config.batch_size, config.device, train=True, prefixes=prefixes)
            val_batches = _Batches(model, val, 256, config.device, prefixes=prefixes)
        model.train()
        order = _shard(np.random.default_rng([config.seed, epoch]).permutation(len(train)), world, rank)
        total, count = 0.0, 0
        for g, h, y in train_batches(order):
            opt.zero_grad()
            loss = model.head.loss(_forward(model, g, h, train_batches.start), y, config.loss)
            value = loss.item()
            bad = not math.isfinite(value)
            if world > 1:  # every rank stops together
                flag = torch.tensor([float(bad)], device=config.device)
                dist.all_reduce(flag)
                bad = bool(flag.item())
            if bad:
                raise _diverged("training loss", value, epoch, config)
            pull = recipes.penalty(model, reference, config.alpha())
            (loss if pull is None else loss + pull).backward()
            if world > 1:
                for p in params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= world
            opt.step()
            total, count = total + value * len(y), count + len(y)
        if world > 1:
            for b in model.buffers():
                dist.broadcast(b, 0)
            sums = torch.tensor([total, count], dtype=torch.float64)
            dist.all_reduce(sums)
            total, count = float(sums[0]), float(sums[1])
        scores = _evaluate(model, val_batches, config.loss)
        if not math.isfinite(scores["loss"]):
            raise _diverged("validation loss", scores["loss"], epoch, config)
        row = {"epoch": epoch, "lr": config.lr_at(epoch), "train_loss": total / count, "val_loss": scores["loss"],
               **{f"val_{k}": v for k, v in scores.items() if k != "loss"},
               **({"frozen": backbone.frozen} if config.recipe == "gradual" else {}),
               "seconds": time.perf_counter() - t0}
        history.rows.append(row)
        if scores["loss"] < history.best_val_loss:
            history.best_val_loss, history.best_epoch = scores["loss"], epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "val_loss", "val_mae")})
        if ckpt_path is not None and rank == 0:
            state = {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "best_state": best_state, "history": history.rows, "best_epoch": history.best_epoch,
                     "best_val_loss": history.best_val_loss, "rng": torch.get_rng_state(),
                     "run": json.dumps(description, sort_keys=True)}
            atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
        last_phase = config.recipe != "gradual" or backbone.frozen == floor  # gradual: patience in its last phase
        if config.early_stopping and last_phase and epoch - history.best_epoch >= config.early_stopping:
            break
    bar.close()
    if config.recipe == "linear-probe":  # the probe's freezing was for this run: the model is as it was given
        recipes.set_frozen(backbone, floor)
    model.load_state_dict(best_state)
    model.eval()
    return history


# ---------------------------------------------------------------------------- fine-tuning


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the model (a :class:`CrystalEnsemble` with
    ``ensemble=N``), its metrics, and the training history (of member 0 for an ensemble;
    every member's is in ``history.json``)."""

    model: CrystalModel | CrystalEnsemble
    metrics: dict[str, Any]
    history: History


def _data_name(data: Any) -> str | None:
    """What the model card says the data was: ``bundled:NAME``, or a file's name (never its
    folder: metrics are published); None for a data set made in Python."""
    if isinstance(data, str) and data.startswith("bundled:"):
        return data
    if isinstance(data, (str, os.PathLike)):
        return Path(data).name or None
    return None


def _interval_scores(model: Predictor, ds: CrystalDataset, coverage: float) -> dict[str, float]:
    """Coverage and mean width of ``model``'s calibrated intervals on the labelled crystals of
    ``ds`` (empty when the calibration has too few crystals for ``coverage``)."""
    try:
        model.calibration.quantile(coverage)
    except ConfigError as exc:
        logger.warning("no %g %% intervals on the test split: %s", 100 * coverage, exc)
        return {}
    lower, upper = (a.reshape(len(ds), -1) for a in model.predict_interval(ds, coverage))
    y = ds.labels
    have = ~np.isnan(y)
    inside = (lower <= y) & (y <= upper)
    tag = f"{round(100 * coverage)}"
    if y.shape[1] == 1:
        return {f"coverage_{tag}": float(inside[have].mean()),
                f"interval_width_{tag}": float((upper - lower)[have].mean())}
    scores = {f"coverage_{tag}": float(inside[have].mean())}  # a fraction: one over every target is meaningful
    for j, target in enumerate(ds.targets):  # widths in each target's units, never mixed
        h = have[:, j]
        scores[f"coverage_{tag}_{target}"] = float(inside[h, j].mean()) if h.any() else float("nan")
        scores[f"interval_width_{tag}_{target}"] = float((upper - lower)[h, j].mean()) if h.any() else float("nan")
    return scores


def _head_config(dataset: CrystalDataset, task: str, units: Sequence[str] | None) -> dict[str, Any]:
    """The config of a new head for ``dataset`` (:func:`~crystalzoo.models.make_head` builds it):
    its targets and units, or the classes 0 … C-1 of its labels, checked."""
    if task == "regression":
        return {"task": "regression", "targets": list(dataset.targets),
                "units": None if units is None else _target_list(units)}
    if units is not None:
        raise ConfigError("units label a regression's values; a classifier predicts class probabilities (no units)")
    if len(dataset.targets) != 1:
        raise ConfigError(f"a classifier predicts one target; got {dataset.targets}")
    y = dataset.labels[:, 0]
    for i in np.flatnonzero(~np.isnan(y) & (y != np.round(y)))[:1]:
        raise DataError(f"label {float(y[i]):g} of crystal {dataset.ids[i]!r} is not a class: classification "
                        "labels are the integers 0 … C-1 (for a number to predict, use task='regression')")
    labelled = y[~np.isnan(y)]
    if len(labelled) and labelled.max() >= MAX_OUTPUTS:
        i = int(np.flatnonzero(y == labelled.max())[0])
        raise DataError(f"label {float(y[i]):g} of crystal {dataset.ids[i]!r} is not a class: a classifier has classes "
                        f"0 … C-1 with C ≤ {MAX_OUTPUTS} (for a number to predict, use task='regression')")
    classes = sorted({int(v) for v in labelled})
    if classes != list(range(len(classes))) or len(classes) < 2:
        missing = sorted(set(range(max(classes) + 1)) - set(classes))[:10] if classes else []
        raise DataError(f"the training split has the classes {classes[:10]}"
                        + (f", not {missing}" if missing else "")
                        + ": a classifier needs every class 0 … C-1 (C ≥ 2) in its training split. Use more data "
                        "or another seed, or number the classes 0 … C-1")
    return {"task": "classification", "classes": [str(c) for c in classes], "targets": list(dataset.targets)}


def make_model(backbone: str | None, dataset: CrystalDataset, *, freeze: int | None = None, reinit: bool = False,
               task: str = "regression", seed: int = 0, architecture: dict[str, Any] | None = None,
               units: Sequence[str] | None = None, reference: str | None = None) -> CrystalModel:
    """A pretrained backbone (``None``: a new one from scratch, shaped by ``architecture``, a
    :class:`BackboneConfig` dict, default the original CGCNN's) with a new head sized for
    ``dataset``, whose normaliser is taken from ``dataset`` (the training split); ``units``
    (one per target, e.g. ``["eV"]``) label the predictions.

    ``reference="composition"`` (regression) adds to each output a linear function of the
    crystal's mean element features, fitted by least squares on ``dataset``: per-element
    reference values (as elemental reference energies for a total energy), so that the
    network learns what the composition alone does not give.

    Example::

        >>> from crystalzoo import CrystalDataset, make_model
        >>> from crystalzoo.data import bundled_dataset
        >>> data = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=200,
        ...                                  progress=False)
        >>> model = make_model("formation", data, freeze=2)
        >>> model.targets, model.backbone.frozen
        (['band_gap'], 2)
    """
    from .loading import load_backbone

    _check_dataset(dataset, "dataset")
    _check_task(task)
    check_count(seed, "seed", 0, 2**63 - 1)
    if backbone is not None and architecture:
        raise ConfigError("architecture shapes a model trained from scratch (backbone None); a pretrained backbone "
                          "has its own")
    if backbone is None and freeze is not None:
        raise DataError("freeze needs a pretrained backbone; a model from scratch trains every layer")
    empty = [t for t, n in zip(dataset.targets, (~np.isnan(dataset.labels)).sum(axis=0)) if n == 0]
    if empty:
        raise DataError(f"no crystal of the training split has a label for {empty}")
    head_config = _head_config(dataset, task, units)
    if reference is not None:
        _check_reference(reference, task)
        head_config["composition_reference"] = dataset.settings.n_atom_features
    torch.manual_seed(seed)
    if backbone is None:  # a new model: the one config → model funnel, as for saved models
        model = model_from_config({"architecture": "cgcnn",
                                   "backbone": BackboneConfig.from_dict(architecture or {}, "architecture").to_dict(),
                                   "graph": dataset.settings.to_dict(), "head": head_config})
        bb, head = model.backbone, model.head
    else:
        bb = load_backbone(backbone, freeze=freeze, reinit=reinit, graph_settings=dataset.settings)
        head = make_head(head_config, bb.out_features)
    if task == "regression":
        mean, std = np.nanmean(dataset.labels, axis=0), np.nanstd(dataset.labels, axis=0)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            # float32 sums of squares of labels beyond ±1.8e19 overflow (an inf normaliser); in float64 the mean
            # and standard deviation of labels within float32's range are within it too. Only then: the float32
            # statistics of every other data set stay as they were, bit for bit
            labels = dataset.labels.astype(np.float64)
            mean, std = np.nanmean(labels, axis=0), np.nanstd(labels, axis=0)
        head.mean.copy_(torch.tensor(mean.tolist(), dtype=torch.float32))
        head.std.copy_(torch.tensor(np.maximum(std, 1e-6).tolist(), dtype=torch.float32))
        if reference is not None:
            _fit_reference(head, dataset)
    return CrystalModel(bb, head, {"backbone": backbone or "none", "freeze": freeze, "reinit": reinit})


def _check_reference(reference: Any, task: str) -> None:
    if reference != "composition":
        raise ConfigError(f"reference = {reference!r}: the one reference is 'composition' (per-element reference "
                          "values, fitted on the training split); leave it out (None) for none")
    if task != "regression":
        raise ConfigError("reference='composition' adds reference values to a regression's outputs; a classifier "
                          "has none: leave it out")


def _compositions(dataset: CrystalDataset) -> np.ndarray:
    """(n, atom features) float64: each crystal's mean element features."""
    with torch.no_grad():
        return np.concatenate([mean_per_crystal(g, g.atom_fea.double()).numpy()
                               for g in crystal_batches(dataset, dataset.settings, 1024)])


#: ridge of the composition reference's least squares, per labelled crystal: element features
#: are collinear, and without it the weights of a small data set grow beyond float32's reach
REFERENCE_RIDGE = 1e-3


def _fit_reference(head, dataset: CrystalDataset) -> None:
    """Ridge least squares of each target on the crystals' mean element features, with an
    intercept (:data:`REFERENCE_RIDGE`); the normaliser becomes the mean and spread of what
    that leaves, so that the network learns the rest on unit scale. The spread is that of
    the leave-one-out residuals: on few crystals the fit comes close to every training label,
    and the in-sample residuals would be far smaller than the error on new crystals."""
    comp = _compositions(dataset)
    design = np.hstack([comp, np.ones((len(comp), 1))])
    weight = np.zeros((len(dataset.targets), comp.shape[1]))
    for j in range(len(dataset.targets)):
        y = dataset.labels[:, j].astype(np.float64)
        ok = ~np.isnan(y)
        x = design[ok]
        ridge = np.diag([REFERENCE_RIDGE * ok.sum()] * comp.shape[1] + [0.0])  # the intercept is not shrunk
        inverse = np.linalg.pinv(x.T @ x + ridge)
        coef = inverse @ (x.T @ y[ok])
        rest = y[ok] - x @ coef
        leverage = np.einsum("ij,jk,ik->i", x, inverse, x)  # diagonal of the hat matrix
        loo = rest / np.clip(1.0 - leverage, 1e-3, None)
        std = max(float(loo.std()) if len(loo) > 1 else float(np.abs(loo).max()), 1e-6)
        weight[j] = coef[:-1] / std
        head.mean[j] = float(coef[-1] + rest.mean())
        head.std[j] = std
    head.reference.weight.data.copy_(torch.from_numpy(weight).float())


def check_run_options(*, target: Any = "y", units: Sequence[str] | None = None, train_size: Any = 0.8,
                      val_size: Any = 0.1, test_size: Any = 0.1, task: Any = "regression",
                      out_dir: str | os.PathLike | None = None, overwrite: bool = False, resume: bool = False,
                      backbone: Any = None, freeze: Any = None, reinit: bool = False,
                      architecture: Any = None, ensemble: Any = 1, reference: Any = None,
                      **train_options) -> TrainConfig:
    """Check the settings of a run before any data is read or any file is written, and
    return its :class:`TrainConfig`: the options of :class:`TrainConfig`, the target(s) and
    their units, the split sizes (:func:`crystalzoo.data.check_split_size`; the training and
    validation sets cannot be empty), the task, the output folder (:func:`check_out_dir`) and
    the backbone: a registered name or a model folder must exist, ``freeze`` must lie in
    0 … its number of convolutions, and ``reinit`` needs ``freeze`` (an ``hf-hub:`` backbone
    is checked when it is fetched). :func:`finetune` calls it first; the CLI calls it before
    it prints anything.

    Example::

        >>> check_run_options(target="band_gap", train_size=1000, val_size=0.1, epochs=5).epochs
        5
    """
    targets = [target] if isinstance(target, str) else list(target) if isinstance(target, (list, tuple)) else []
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ConfigError(f"target = {target!r}: give the name of a label column, or a list of them")
    units = None if units is None else _target_list(units)  # one unit as a string is one unit
    if units is not None and not all(isinstance(u, str) for u in units):
        raise ConfigError(f"units {units!r}: a unit is a string, such as 'eV' or 'eV/atom'")
    if units is not None and len(units) != len(targets):
        raise ConfigError(f"{len(targets)} targets but units {units!r}: give one unit (a string) per target")
    if architecture is not None:
        if backbone is not None:
            raise ConfigError("architecture shapes a model trained from scratch (backbone None, --backbone none); "
                              "a pretrained backbone has its own")
        BackboneConfig.from_dict(architecture, "architecture")
    config = TrainConfig.from_options(train_options)
    check_members(ensemble)
    if config.recipe == "linear-probe" and (freeze is not None or reinit):
        raise ConfigError("recipe 'linear-probe' fixes the whole pretrained backbone: leave out freeze and reinit (with "
                          "reinit, the head would learn on re-initialised, untrained layers)")
    if backbone is None and config.recipe != "freeze":
        raise ConfigError(f"recipe {config.recipe!r} fine-tunes a pretrained backbone; a model from scratch "
                          "(backbone None, --backbone none) trains every layer (recipe 'freeze')")
    _check_task(task)
    if reference is not None:
        _check_reference(reference, task)
    _check_loss(config, task)
    for name, value, what in (("train_size", train_size, "training"), ("val_size", val_size, "validation"),
                              ("test_size", test_size, None)):
        if check_split_size(name, value) == 0 and what:
            raise ConfigError(f"{name} = 0: the {what} set cannot be empty; give a count >= 1 or a fraction")
    if (resume or overwrite) and out_dir is None:
        raise ConfigError("resume and overwrite need out_dir (--out), the folder of the run")
    _check_backbone_options(backbone, freeze, reinit, config)
    if out_dir is not None:
        check_out_dir(out_dir, overwrite=overwrite, resume=resume)
    return config


def check_not_backbone_folder(out_dir: str | os.PathLike | None, backbone: Any) -> None:
    """:class:`ConfigError` when ``out_dir``, which ``--overwrite`` would clear, is the folder
    of the model ``backbone`` (it would be deleted before or while it is used)."""
    if out_dir is None or not isinstance(backbone, (str, os.PathLike)):
        return
    try:
        same = Path(backbone).is_dir() and Path(backbone).resolve() == Path(out_dir).resolve()
    except OSError:
        return
    if same:
        raise ConfigError(f"--out {out_dir} is the folder of --backbone {backbone}: --overwrite would delete the "
                          "model it fine-tunes; write the new run into another --out")


def _check_backbone_options(backbone: Any, freeze: Any, reinit: Any, config: TrainConfig) -> None:
    """The backbone, ``freeze`` and ``reinit`` of a run, checked without loading weights."""
    from .registry import backbone_config, source_kind

    if freeze is not None and (isinstance(freeze, bool) or not isinstance(freeze, (int, np.integer)) or freeze < 0):
        raise ConfigError(f"freeze = {freeze!r}: give the number of convolutions to freeze, an integer >= 0")
    if reinit and freeze is None:
        raise ConfigError("reinit needs freeze (--freeze K): it re-initialises the layers after the K frozen ones")
    if backbone is None:
        if freeze is not None:
            raise ConfigError("freeze needs a pretrained backbone; a model from scratch (backbone 'none') trains "
                              "every layer")
        return
    if not isinstance(backbone, (str, os.PathLike)):
        raise ConfigError(f"backbone names a backbone (a registered name, hf-hub:ORG/NAME or a folder), not a "
                          f"{type(backbone).__name__}; to train a model you built, use train_model(model, train, val)")
    if source_kind(backbone) == "hub":  # checked when its config is downloaded
        return
    n_conv = backbone_config(backbone)["backbone"].get("n_conv")
    if freeze is not None and isinstance(n_conv, int) and freeze > n_conv:
        raise ConfigError(f"freeze = {freeze}: backbone {str(backbone)!r} has {n_conv} convolutions, so freeze is "
                          f"0 (the embedding only) … {n_conv} (every convolution)")
    if config.recipe == "gradual" and isinstance(n_conv, int):
        recipes.check_phases(config.epochs, n_conv, freeze)


def finetune(data: Any, target: str | Sequence[str], *, backbone: str | None = "formation", freeze: int | None = None,
             reinit: bool = False, train_size: float | int = 0.8, val_size: float | int = 0.1,
             test_size: float | int = 0.1, seed: int = 0, out_dir: str | os.PathLike | None = None,
             resume: bool = False, overwrite: bool = False, task: str = "regression", cache_dir=None,
             architecture: dict[str, Any] | None = None, units: Sequence[str] | None = None, ensemble: int = 1,
             reference: str | None = None, **train_options) -> FinetuneResult:
    """Fine-tune a registered backbone (``None``: from scratch) on ``data`` for ``target``.

    ``data``: a :class:`CrystalDataset`, a JSON-lines file, a CSV (``cif`` column), a CGCNN
    folder, or ``"bundled:mp-band-gap"``. Splits are seeded by ``seed``; sizes are counts
    (integers) or fractions (numbers between 0 and 1, 1.0 excluded). ``train_options`` go to
    :class:`TrainConfig` (epochs, lr, batch_size, …). Every setting is checked before the
    data is read (:func:`check_run_options`).

    With ``out_dir``, writes the model (``model.safetensors`` + ``config.json``),
    ``metrics.json``, ``history.json`` (strict JSON: a missing score is ``null``),
    ``learning_curve.png`` and a checkpoint per epoch, each atomically. A folder that holds a
    run is refused unless ``overwrite=True`` (replace it) or ``resume=True`` (continue it from
    its checkpoint, which must belong to the same configuration); a folder another run is
    writing to is refused at once.

    ``ensemble=N`` (N ≥ 2) trains N models on the same split, member i with seed ``seed + i``
    (the initialisation of its new layers and its batch order; member 0 is the model
    ``ensemble=1`` gives), sharing the frozen layers' output, and returns a
    :class:`~crystalzoo.ensembles.CrystalEnsemble`; its metrics are those of the mean
    prediction, with each member's under ``"members"``. Each member has its checkpoint
    (``checkpoint.pt``, ``checkpoint-member1.pt``, …), so ``resume`` continues where the run
    stopped.

    ``reference="composition"`` puts per-element reference values, fitted on the training
    split, under the outputs (:func:`make_model`; docs/pretraining.md).

    A regression model is calibrated on the validation split (``model.predict_interval``,
    :mod:`crystalzoo.uncertainty`); the test metrics then include the coverage and mean width
    of its 90 % intervals (``coverage_90``, ``interval_width_90``).
    """
    # plain Python values: they go into JSON files (config, checkpoint, metrics)
    backbone = str(backbone) if isinstance(backbone, os.PathLike) else backbone
    freeze, seed, ensemble = plain(freeze), plain(seed), plain(ensemble)
    if isinstance(architecture, dict):
        architecture = {k: plain(v) for k, v in architecture.items()}
    if overwrite:
        check_not_backbone_folder(out_dir, backbone)
    config = check_run_options(target=target, units=units, train_size=train_size, val_size=val_size,
                               test_size=test_size, task=task, out_dir=out_dir, overwrite=overwrite, resume=resume,
                               backbone=backbone, freeze=freeze, reinit=reinit, architecture=architecture, seed=seed,
                               ensemble=ensemble, reference=reference, **train_options)
    units = None if units is None else _target_list(units)
    targets = _target_list(target)
    rank = _distributed(config.device)[1]
    with claim_run_folder(out_dir, overwrite=overwrite, resume=resume) if out_dir is not None and rank == 0 \
            else nullcontext():
        progress = config.progress
        ds = read_dataset(data, targets, progress=progress, cache_dir=cache_dir)
        targets = [_split_target(t)[0] if ":" in t and t not in ds.targets else t for t in targets]
        ds = ds.select_targets(targets)
        if ds.info.get("dropped_missing"):
            logger.warning("%d crystals have no %s label and are left out", ds.info["dropped_missing"],
                           ", ".join(targets))
        if len(ds) == 0:
            raise DataError(f"no crystal in the data has a {', '.join(targets)} label")
        known = [ds.info.get("units", {}).get(t) for t in targets]  # a bundled data set knows its units
        if units is None and task == "regression" and all(known):
            units = known
        train, val, test = ds.split(train_size, val_size, test_size, seed=seed)
        t0 = time.perf_counter()
        members, histories, prefixes = [], [], {}  # the members share the frozen layers' output
        for i in range(ensemble):
            member = make_model(backbone, train, freeze=freeze, reinit=reinit, task=task, seed=seed + i,
                                architecture=architecture, units=units, reference=reference)
            if i == 0:
                _check_classes(member, test, "the test split")
            if ensemble > 1:
                logger.info("ensemble member %d of %d (seed %d)", i + 1, ensemble, seed + i)
            histories.append(_run(member, train, val, replace(config, seed=config.seed + i), out_dir, resume,
                                  overwrite, checkpoint=_member_checkpoint(i), prefixes=prefixes, members=ensemble))
            members.append(member)
        model = members[0] if ensemble == 1 else CrystalEnsemble(members)
        history = histories[0]
        if task == "regression":
            model.calibrate(val, split="validation")
        seconds = time.perf_counter() - t0
        metrics: dict[str, Any] = {
            "backbone": backbone or "none", "freeze": freeze, "reinit": reinit, "recipe": config.recipe,
            **({"l2sp_alpha": config.alpha()} if config.recipe == "l2sp" else {}),
            **({"reference": reference} if reference is not None else {}),
            **({"loss": config.loss} if config.loss != "mse" else {}),
            "targets": targets, "seed": seed, **({"data": name} if (name := _data_name(data)) else {}),
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
            "dropped_missing_labels": ds.info.get("dropped_missing", 0),
            "epochs": len(history.rows), "best_epoch": history.best_epoch, "train_seconds": round(seconds, 2),
            "val": _evaluate(model, _Batches(model, val, 256, config.device), config.loss),
        }
        if len(test):
            metrics["test"] = _evaluate(model, _Batches(model, test, 256, config.device), config.loss)
            if task == "regression":
                metrics["test"].update(_interval_scores(model, test, 0.9))
        if ensemble > 1:
            metrics["ensemble"] = ensemble
            metrics["members"] = [
                {"seed": seed + i, "best_epoch": h.best_epoch,
                 **{split: _evaluate(m, _Batches(m, part, 256, config.device, prefixes=prefixes), config.loss)
                    for split, part in (("val", val), ("test", test)) if len(part)}}
                for i, (m, h) in enumerate(zip(members, histories))]
        metrics["num_params"] = sum(p.numel() for p in model.parameters())
        if out_dir is not None and rank == 0:
            from .serialization import save_pretrained

            out = Path(out_dir)
            save_pretrained(model, out, overwrite=True)  # the folder this run claimed
            write_json(out / "metrics.json", metrics)
            write_json(out / "history.json", {**asdict(history), **({"members": [asdict(h) for h in histories]}
                                                                      if ensemble > 1 else {})})
            history.plot(out / "learning_curve.png",
                         f"{backbone or 'from scratch'} → {', '.join(targets)}, freeze={freeze}",
                         loss="cross-entropy" if task != "regression" else LABELS[config.loss])
    return FinetuneResult(model, metrics, history)


def pretrain(data: Any, targets: Sequence[str], *, conv: str = "gated", train_size: float | int = 0.8,
             val_size: float | int = 0.1, test_size: float | int = 0.1, seed: int = 0,
             out_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False, cache_dir=None,
             architecture: dict[str, Any] | None = None, units: Sequence[str] | None = None,
             reference: str | None = None, **train_options) -> FinetuneResult:
    """Train a new backbone from scratch on one or several targets (multi-task: one
    normaliser per target, missing labels masked in the loss). Targets may be transformed,
    e.g. ``"log10:k_vrh"``. The result in ``out_dir`` loads with ``load_backbone(out_dir)``
    and is registered with :func:`crystalzoo.maintainer.register_weights`.

    Example::

        >>> from crystalzoo import CrystalDataset
        >>> from crystalzoo.data import bundled_dataset
        >>> data = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), limit=200, progress=False,
        ...                                  targets=["formation_energy_per_atom", "energy_per_atom"])
        >>> r = pretrain(data, ["formation_energy_per_atom", "energy_per_atom"], train_size=100, val_size=50,
        ...              test_size=50, epochs=2, progress=False)
        >>> sorted(k for k in r.metrics["test"] if k.startswith("mae_"))
        ['mae_energy_per_atom', 'mae_formation_energy_per_atom']
    """
    if architecture is not None:
        BackboneConfig.from_dict(architecture, "architecture")  # a dict of known settings, before it is merged
    if architecture is not None and "conv" in architecture and architecture["conv"] != conv:
        raise ConfigError(f"conv is given twice: conv={conv!r} and architecture['conv']={architecture['conv']!r}; "
                          "give it once (--conv on the command line)")
    arch = {**(architecture or {}), "conv": conv}
    return finetune(data, _target_list(targets), backbone=None, train_size=train_size, val_size=val_size,
                    test_size=test_size, seed=seed, out_dir=out_dir, resume=resume, overwrite=overwrite,
                    cache_dir=cache_dir, architecture=arch, units=units, reference=reference, **train_options)
