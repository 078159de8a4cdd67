"""The training loop: best-validation weights, early stopping, checkpoints per epoch, ``resume``."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..data.dataset import CrystalDataset
from ..errors import ConfigError, DataError, RunError
from ..models.crystal_model import CrystalModel
from . import averaging, recipes
from .batches import (
    Batches,
    check_classes,
    check_dataset,
    check_model,
    check_targets,
    evaluate_batches,
    forward_from,
)
from .checkpoints import resume_from, run_description, save_checkpoint
from .config import TrainConfig
from .distributed import process_group, shard
from .history import History
from .options import check_train_loss
from .run_folder import CHECKPOINT, claim_run_folder, replace_old_run


logger = logging.getLogger(__name__)


def diverged(what: str, value: float, epoch: int, config: TrainConfig) -> RunError:
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

    A calibrated model (``model.calibration``) is calibrated again on ``val`` afterwards, and a
    warning says so: the old scores belong to the old weights.

    A non-finite loss stops the run with a :class:`RunError`. A last training batch of one
    crystal joins the batch before it (BatchNorm cannot train on one crystal).

    Under ``torchrun --nproc_per_node N`` each process trains on its shard of every epoch
    (``batch_size`` per process), gradients are averaged across processes, BatchNorm
    statistics are taken from rank 0 after each epoch, and only rank 0 writes files.
    """
    check_model(model)
    check_dataset(train, "the training set")
    check_dataset(val, "the validation set")
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got a {type(config).__name__}: e.g. "
                          "TrainConfig(epochs=30, lr=1e-3)")
    if (resume or overwrite) and out_dir is None:
        raise ConfigError("resume and overwrite need out_dir, the folder of the run")
    check_train_loss(config, model.head.task)
    history = run_training(model, train, val, config, out_dir, resume, overwrite)
    if model.calibration is not None:  # its scores belong to the weights before this training
        model.calibrate(val, split="validation")
        logger.warning("the model's calibration was made for its weights before this training: it is calibrated "
                       "again, on the validation set (%d crystals)", len(val))
    return history


def run_training(model: CrystalModel, train: CrystalDataset, val: CrystalDataset, config: TrainConfig,
                 out_dir: str | os.PathLike | None, resume: bool, overwrite: bool, checkpoint: str = CHECKPOINT,
                 prefixes: dict | None = None, members: int = 1) -> History:
    """:func:`train_model` after its checks; ``checkpoint``: the checkpoint's name in
    ``out_dir`` (an ensemble's members have one each); ``prefixes``: the frozen-prefix cache the
    members of an ensemble share (:class:`Batches`); ``members``: the ensemble's size, part of
    what a checkpoint must match to be resumed."""
    world, rank = process_group(config.device)
    if world > 1 and config.device == "cuda":  # one GPU per process
        config = TrainConfig(**{**asdict(config), "device": f"cuda:{os.environ.get('LOCAL_RANK', rank)}"})
    claim = claim_run_folder(out_dir, overwrite=overwrite, resume=resume) if out_dir is not None and rank == 0 \
        else nullcontext()
    with claim:
        return train_loop(model, train, val, config, out_dir, resume, world, rank, checkpoint, prefixes, members)


def check_splits(model: CrystalModel, train: CrystalDataset, val: CrystalDataset) -> None:
    """The training and validation splits of ``model``: its targets and graph settings, not
    empty (2 crystals or more to train on: BatchNorm), labels its head can learn."""
    for ds, what in ((train, "the training set"), (val, "the validation set")):
        check_targets(model, ds, what)
        model.graph_settings.check_same(ds.settings, "this model")
        if len(ds) == 0:
            raise DataError("training and validation sets must not be empty")
    if len(train) < 2:
        raise DataError("the training set has 1 crystal; BatchNorm needs at least 2 to train on")
    check_classes(model, train, "the training split")
    check_classes(model, val, "the validation split")


def train_epoch(model: CrystalModel, batches: Iterator, start: int, opt: torch.optim.Optimizer,
                params: list[torch.nn.Parameter], reference: dict | None, config: TrainConfig, epoch: int,
                world: int = 1, average: dict | None = None) -> tuple[float, int]:
    """One epoch's optimiser steps over ``batches`` (graph, frozen-prefix atom vectors after
    ``start`` convolutions or None, labels); returns (sum of the loss × batch size, crystals).
    A non-finite loss stops the run on every rank (:class:`RunError`); under torchrun the
    gradients are averaged across the ``world`` processes; ``average``: the weight average
    (:mod:`~crystalzoo.training.averaging`) that each step updates."""
    import torch.distributed as dist

    total, count = 0.0, 0
    for g, h, y in batches:
        opt.zero_grad()
        loss = model.head.loss(forward_from(model, g, h, start), y, config.loss)
        value = loss.item()
        bad = not math.isfinite(value)
        if world > 1:  # every rank stops together
            flag = torch.tensor([float(bad)], device=config.device)
            dist.all_reduce(flag)
            bad = bool(flag.item())
        if bad:
            raise diverged("training loss", value, epoch, config)
        pull = recipes.penalty(model, reference, config.alpha())
        (loss if pull is None else loss + pull).backward()
        if world > 1:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
        opt.step()
        if average is not None:
            averaging.update(average, config.ema)
        total, count = total + value * len(y), count + len(y)
    return total, count


def train_loop(model: CrystalModel, train: CrystalDataset, val: CrystalDataset, config: TrainConfig,
               out_dir: str | os.PathLike | None, resume: bool, world: int, rank: int, checkpoint: str = CHECKPOINT,
               prefixes: dict | None = None, members: int = 1) -> History:
    import torch.distributed as dist

    from ..progress import progress_bar

    check_splits(model, train, val)
    description = (run_description(model, train, val, config, members) if out_dir is not None
                   else {})  # may fail: before deleting
    if out_dir is not None and rank == 0:
        replace_old_run(out_dir)
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
    average = averaging.start(model, params) if config.ema is not None else None
    history = History()
    best_state = copy.deepcopy(model.state_dict())
    first = 1
    ckpt_path = Path(out_dir) / checkpoint if out_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        history, best_state, first = resume_from(ckpt_path, description, model, opt, config.device,
                                                 config.epochs, average)
        if config.early_stopping and history.rows and first - 1 - history.best_epoch >= config.early_stopping:
            first = config.epochs + 1  # the run had stopped early: resuming writes its results, it trains no more
    train_batches = val_batches = None
    bar = progress_bar(range(first, config.epochs + 1), desc="training", unit="epoch",
                       disable=not config.progress or rank > 0, initial=first - 1, total=config.epochs)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = config.lr_at(epoch) * group.get("scale", 1.0)  # checkpoints before recipes: no scale
            level = recipes.frozen_at(epoch, config.epochs, n_conv, floor) if config.recipe == "gradual" else backbone.frozen
            if level != backbone.frozen or train_batches is None:
                if config.recipe == "gradual":
                    recipes.set_frozen(backbone, level)
                # the frozen prefix's atom vectors, computed once per frozen level
                train_batches = Batches(model, train, config.batch_size, config.device, train=True, prefixes=prefixes)
                val_batches = Batches(model, val, 256, config.device, prefixes=prefixes)
            model.train()
            order = shard(np.random.default_rng([config.seed, epoch]).permutation(len(train)), world, rank)
            total, count = train_epoch(model, train_batches(order), train_batches.start, opt, params, reference, config,
                                       epoch, world, average)
            if world > 1:
                for b in model.buffers():
                    dist.broadcast(b, 0)
                sums = torch.tensor([total, count], dtype=torch.float64)
                dist.all_reduce(sums)
                total, count = float(sums[0]), float(sums[1])
            with averaging.averaged(average):  # validated, and kept if best, with the averaged weights
                scores = evaluate_batches(model, val_batches, config.loss)
                better = scores["loss"] < history.best_val_loss
                if better:
                    best_state = copy.deepcopy(model.state_dict())
            if not math.isfinite(scores["loss"]):
                raise diverged("validation loss", scores["loss"], epoch, config)
            row = {"epoch": epoch, "lr": config.lr_at(epoch), "train_loss": total / count, "val_loss": scores["loss"],
                   **{f"val_{k}": v for k, v in scores.items() if k != "loss"},
                   **({"frozen": backbone.frozen} if config.recipe == "gradual" else {}),
                   "seconds": time.perf_counter() - t0}
            history.rows.append(row)
            if better:
                history.best_val_loss, history.best_epoch = scores["loss"], epoch
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("train_loss", "val_loss", "val_mae")})
            if ckpt_path is not None and rank == 0:
                save_checkpoint(ckpt_path, epoch, model, opt, best_state, history, description, average)
            last_phase = config.recipe != "gradual" or backbone.frozen == floor  # gradual: patience in its last phase
            if config.early_stopping and last_phase and epoch - history.best_epoch >= config.early_stopping:
                break
    except RunError as exc:  # diverged: the model is left as it was best, never with the weights that diverged
        kept = (f"the model holds the weights of its best epoch, {history.best_epoch}" if history.best_epoch
                else "the model holds its weights from before the run")
        failed = RunError(f"{exc} ({kept})")
    else:
        failed = None
    bar.close()
    # the probe's freezing was for this run, and a diverged gradual run stopped before its last phase: the
    # model keeps the freezing it was given
    if config.recipe == "linear-probe" or (failed is not None and config.recipe == "gradual"):
        recipes.set_frozen(backbone, floor)
    model.load_state_dict(best_state)
    model.eval()
    if failed is not None:
        raise failed from None
    return history
