"""Runs: :func:`finetune` and :func:`pretrain`, from a data source to a trained model (or an
ensemble) with its metrics, history, learning curve and calibration, written into the run's
own folder (:mod:`crystalzoo.training.run_folder`).

Example::

    >>> from crystalzoo import finetune
    >>> from crystalzoo.data import bundled_dataset
    >>> result = finetune(bundled_dataset("mp-band-gap"), "band_gap", backbone="formation", freeze=2,
    ...                   train_size=200, val_size=100, test_size=100, epochs=3, progress=False)
    >>> result.metrics["sizes"]
    {'train': 200, 'val': 100, 'test': 100}
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..checks import plain
from ..data.dataset import CrystalDataset, read_dataset
from ..data.targets import split_target, target_list
from ..errors import ConfigError, DataError
from ..files import write_json
from ..losses import LABELS
from ..models.architectures import architecture_spec, get_architecture
from ..models.crystal_model import CrystalModel
from ..models.ensembles import CrystalEnsemble
from ..models.predictor import Predictor
from .batches import Batches, check_classes, evaluate_batches
from .checkpoints import member_checkpoint
from .distributed import process_group
from .heads import make_model
from .history import History
from .loop import run_training
from .options import check_run_options
from .run_folder import check_not_backbone_folder, claim_run_folder

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the model (a :class:`~crystalzoo.models.ensembles.CrystalEnsemble` with
    ``ensemble=N``), its metrics, and the training history (of member 0 for an ensemble;
    every member's is in ``history.json``)."""

    model: CrystalModel | CrystalEnsemble
    metrics: dict[str, Any]
    history: History


def data_name(data: Any) -> str | None:
    """What the model card says the data was: ``bundled:NAME``, or a file's name (never its
    folder: metrics are published); None for a data set made in Python."""
    if isinstance(data, str) and data.startswith("bundled:"):
        return data
    if isinstance(data, (str, os.PathLike)):
        return Path(data).name or None
    return None


def interval_scores(model: Predictor, ds: CrystalDataset, coverage: float) -> dict[str, float]:
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
    :class:`~crystalzoo.training.config.TrainConfig` (epochs, lr, batch_size, …). Every setting is checked before the
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
    :class:`~crystalzoo.models.ensembles.CrystalEnsemble`; its metrics are those of the mean
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
    units = None if units is None else target_list(units)
    targets = target_list(target)
    rank = process_group(config.device)[1]
    with claim_run_folder(out_dir, overwrite=overwrite, resume=resume) if out_dir is not None and rank == 0 \
            else nullcontext():
        progress = config.progress
        ds = read_dataset(data, targets, progress=progress, cache_dir=cache_dir)
        targets = [split_target(t)[0] if ":" in t and t not in ds.targets else t for t in targets]
        ds = ds.select_targets(targets)
        # graphs with the atom features the backbone reads: a new one's family's, or a pretrained one's own
        ds = ds.with_atom_features(get_architecture(architecture_spec(architecture)[0]).atom_feature_set
                                   if backbone is None else backbone_atom_features(backbone))
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
                check_classes(member, test, "the test split")
            if ensemble > 1:
                logger.info("ensemble member %d of %d (seed %d)", i + 1, ensemble, seed + i)
            histories.append(run_training(member, train, val, replace(config, seed=config.seed + i), out_dir, resume,
                                  overwrite, checkpoint=member_checkpoint(i), prefixes=prefixes, members=ensemble))
            members.append(member)
        model = members[0] if ensemble == 1 else CrystalEnsemble(members)
        history = histories[0]
        if task == "regression":
            model.calibrate(val, split="validation")
        # a resumed run counts its epochs before the resume too (their times are in the checkpoint's history)
        seconds = max(time.perf_counter() - t0, sum(r.get("seconds", 0.0) for h in histories for r in h.rows))
        metrics: dict[str, Any] = {
            "backbone": backbone or "none", "freeze": freeze, "reinit": reinit, "recipe": config.recipe,
            **({"l2sp_alpha": config.alpha()} if config.recipe == "l2sp" else {}),
            **({"reference": reference} if reference is not None else {}),
            **({"loss": config.loss} if config.loss != "mse" else {}),
            "targets": targets, "seed": seed, **({"data": name} if (name := data_name(data)) else {}),
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
            "dropped_missing_labels": ds.info.get("dropped_missing", 0),
            "epochs": len(history.rows), "best_epoch": history.best_epoch, "train_seconds": round(seconds, 2),
            "val": evaluate_batches(model, Batches(model, val, 256, config.device), config.loss),
        }
        if len(test):
            metrics["test"] = evaluate_batches(model, Batches(model, test, 256, config.device), config.loss)
            if task == "regression":
                metrics["test"].update(interval_scores(model, test, 0.9))
        if ensemble > 1:
            metrics["ensemble"] = ensemble
            metrics["members"] = [
                {"seed": seed + i, "best_epoch": h.best_epoch,
                 **{split: evaluate_batches(m, Batches(m, part, 256, config.device, prefixes=prefixes), config.loss)
                    for split, part in (("val", val), ("test", test)) if len(part)}}
                for i, (m, h) in enumerate(zip(members, histories))]
        metrics["num_params"] = sum(p.numel() for p in model.parameters())
        if out_dir is not None and rank == 0:
            from ..serialization import save_pretrained

            out = Path(out_dir)
            save_pretrained(model, out, overwrite=True)  # the folder this run claimed
            write_json(out / "metrics.json", metrics)
            write_json(out / "history.json", {**asdict(history), **({"members": [asdict(h) for h in histories]}
                                                                      if ensemble > 1 else {})})
            history.plot(out / "learning_curve.png",
                         f"{backbone or 'from scratch'} → {', '.join(targets)}, freeze={freeze}",
                         loss="cross-entropy" if task != "regression" else LABELS[config.loss])
    return FinetuneResult(model, metrics, history)


def backbone_atom_features(backbone: str) -> str:
    """The atom features of the pretrained ``backbone``'s graphs (its config, resolved as
    ``load_backbone`` resolves it, without its weights)."""
    from ..registry import backbone_config

    return backbone_config(backbone)["graph"].get("atom_features", "cgcnn-92")


def pretrain(data: Any, targets: Sequence[str], *, architecture: str | dict[str, Any] | None = None,
             conv: str | None = None, train_size: float | int = 0.8,
             val_size: float | int = 0.1, test_size: float | int = 0.1, seed: int = 0,
             out_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False, cache_dir=None,
             units: Sequence[str] | None = None,
             reference: str | None = None, **train_options) -> FinetuneResult:
    """Train a new backbone from scratch on one or several targets (multi-task: one
    normaliser per target, missing labels masked in the loss). Targets may be transformed,
    e.g. ``"log10:k_vrh"``. The result in ``out_dir`` loads with ``load_backbone(out_dir)``
    and is registered with :func:`crystalzoo.maintainer.register_weights`.

    ``architecture``: the family and its options (:func:`~crystalzoo.make_model`; default
    CGCNN); ``conv`` (``"gated"`` or ``"attention"``) is CGCNN's convolution.

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
    name, options = architecture_spec(architecture)
    if conv is not None:
        if name != "cgcnn":
            raise ConfigError(f"conv = {conv!r} is a CGCNN setting; the {name} family has none: leave out conv (--conv)")
        if "conv" in options and options["conv"] != conv:
            raise ConfigError(f"conv is given twice: conv={conv!r} and architecture['conv']={options['conv']!r}; "
                              "give it once (--conv on the command line)")
        options["conv"] = conv
    arch = {"name": name, **options}
    return finetune(data, target_list(targets), backbone=None, train_size=train_size, val_size=val_size,
                    test_size=test_size, seed=seed, out_dir=out_dir, resume=resume, overwrite=overwrite,
                    cache_dir=cache_dir, architecture=arch, units=units, reference=reference, **train_options)
