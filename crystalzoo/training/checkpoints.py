"""Checkpoints: what identifies a run, and resuming one only from a checkpoint of the same run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checks import short
from ..data.dataset import CrystalDataset
from ..errors import RunError, WeightsError
from ..files import atomic_write
from ..models.crystal_model import CrystalModel
from ..serialization import load_into
from . import averaging, recipes
from .config import TrainConfig
from .history import History
from .run_folder import CHECKPOINT


def _data_digest(ds: CrystalDataset) -> str:
    """A short hash of a split: its crystals (ids and graphs), in order, and their labels."""
    h = hashlib.sha256(json.dumps([ds.ids, ds.targets]).encode())
    h.update(np.ascontiguousarray(ds.labels, dtype=np.float32).tobytes())
    for g in ds.graphs:
        for a in (g.z, g.src, g.dst, g.distance):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def run_description(model: CrystalModel, train: CrystalDataset, val: CrystalDataset, config: TrainConfig,
                    members: int = 1) -> dict:
    """What a checkpoint must share with a run that resumes it: the model (architecture, graph
    settings, head and targets, backbone, freeze), the data and its split, and the optimisation
    (seed, optimizer, lr, schedule, weight decay, batch size, loss). Epochs, early stopping and the
    device may change."""
    return json.loads(json.dumps({
        **{k: v for k, v in model.to_config().items() if k != "format_version"},  # a newer file format is the same run
        # every field of a dataclass config, defaults included (as checkpoints have it), else the family's own config
        "backbone": asdict(shape) if is_dataclass(shape := getattr(model.backbone, "config", None))
        else model.backbone.to_config(), "seed": config.seed, "optimizer": config.optimizer, "lr": config.lr,
        "schedule": config.schedule, "weight_decay": config.weight_decay, "batch_size": config.batch_size,
        **({"recipe": config.recipe} if config.recipe != "freeze" else {}),  # runs before recipes existed: freeze
        **({"loss": config.loss} if config.loss != "mse" else {}),  # runs before the option existed: mse
        **({"l2sp_alpha": config.alpha()} if config.recipe == "l2sp" and config.alpha() != recipes.L2SP_ALPHA
           else {}),  # runs before the option existed: the default
        # a cosine schedule's rates depend on the number of epochs: extending such a run changes it
        **({"epochs (cosine schedule)": config.epochs} if config.schedule == "cosine" else {}),
        **({"warmup": config.warmup} if config.warmup else {}),  # runs before the options existed: none
        **({"ema": config.ema} if config.ema is not None else {}),
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


def _corrupt(path: Path, exc: BaseException) -> WeightsError:
    reason = (str(exc).strip().splitlines() or [""])[0][:200]
    return WeightsError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {reason}): it is truncated, "
                        "corrupt or not a crystalzoo checkpoint. Pass --overwrite (overwrite=True) to start the run "
                        "again, or choose another --out")


def resume_from(path: Path, description: dict, model: CrystalModel, opt: torch.optim.Optimizer, device: str,
                epochs: int, average: dict | None = None) -> tuple[History, dict, int]:
    """Load the checkpoint at ``path`` into ``model``, ``opt`` (and the weight average
    ``average``) after checking that it belongs to the run ``description`` describes; returns
    (history, best state, next epoch)."""
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
        differences = [f"{k}: {short(a)} in the checkpoint, {short(b)} now"
                       for k, a, b in stored_now if not _same_setting(k, a, b)]
        if differences:
            raise RunError(f"checkpoint {path} belongs to another run: {'; '.join(differences)}. Resume with the "
                           "settings and data of that run, pass --overwrite (overwrite=True) to start a new run "
                           "there, or choose another --out")
        load_into(model, ckpt["best_state"], f"checkpoint {path}")  # both checked strictly, tensor by tensor
        load_into(model, ckpt["model"], f"checkpoint {path}")
        opt.load_state_dict(ckpt["optimizer"])
        if average is not None:
            averaging.restore(average, ckpt.get("ema"), f"checkpoint {path}")
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


def member_checkpoint(i: int) -> str:
    """The checkpoint of an ensemble's member ``i`` (member 0: the run's own)."""
    return CHECKPOINT if i == 0 else f"checkpoint-member{i}.pt"


def save_checkpoint(path: Path, epoch: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    best_state: dict, history: Any, description: dict, average: dict | None = None) -> None:
    """Write the checkpoint of a run after ``epoch`` (atomically): the weights, the optimiser,
    the best weights so far, the weight average (with ``ema``), the history, the random state
    and the run's description, which :func:`resume_from` checks before it continues."""
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "best_state": best_state, "history": history.rows, "best_epoch": history.best_epoch,
             "best_val_loss": history.best_val_loss, "rng": torch.get_rng_state(),
             "run": json.dumps(description, sort_keys=True),
             **({"ema": averaging.state(average)} if average is not None else {})}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
