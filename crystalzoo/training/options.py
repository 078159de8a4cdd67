"""The settings of a run, checked before any data is read or any file is written."""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..data.targets import check_split_size, target_list
from ..errors import ConfigError
from ..models.architectures import architecture_spec, get_architecture
from ..models.ensembles import check_members
from ..models.freezing import check_freeze
from . import recipes
from .config import TrainConfig
from .run_folder import check_out_dir

TASKS = ("regression", "classification")


def check_train_loss(config: TrainConfig, task: str) -> None:
    """A classifier trains on cross-entropy: :class:`ConfigError` for any other loss."""
    if config.loss != "mse" and task != "regression":
        raise ConfigError(f"loss = {config.loss!r} is a regression's loss, and a classifier trains on cross-entropy: "
                          "leave out loss (--loss)")


def check_task(task: Any) -> None:
    if task not in TASKS:
        import difflib

        near = difflib.get_close_matches(str(task).lower(), TASKS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"task = {task!r} is not a task; valid: 'regression', 'classification'{hint}")

def check_reference(reference: Any, task: str) -> None:
    if reference != "composition":
        raise ConfigError(f"reference = {reference!r}: the one reference is 'composition' (per-element reference "
                          "values, fitted on the training split); leave it out (None) for none")
    if task != "regression":
        raise ConfigError("reference='composition' adds reference values to a regression's outputs; a classifier "
                          "has none: leave it out")



def check_run_options(*, target: Any = "y", units: Sequence[str] | None = None, train_size: Any = 0.8,
                      val_size: Any = 0.1, test_size: Any = 0.1, task: Any = "regression",
                      out_dir: str | os.PathLike | None = None, overwrite: bool = False, resume: bool = False,
                      backbone: Any = None, freeze: Any = None, reinit: bool = False,
                      architecture: Any = None, ensemble: Any = 1, reference: Any = None,
                      **train_options) -> TrainConfig:
    """Check the settings of a run before any data is read or any file is written, and
    return its :class:`~crystalzoo.training.config.TrainConfig`: the options of :class:`~crystalzoo.training.config.TrainConfig`, the target(s) and
    their units, the split sizes (:func:`crystalzoo.data.check_split_size`; the training and
    validation sets cannot be empty), the task, the output folder (:func:`check_out_dir`) and
    the backbone: a registered name or a model folder must exist, ``freeze`` must lie in
    0 … its number of convolutions, and ``reinit`` needs ``freeze`` (an ``hf-hub:`` backbone
    is checked when it is fetched). :func:`~crystalzoo.training.runs.finetune` calls it first; the CLI calls it before
    it prints anything.

    Example::

        >>> check_run_options(target="band_gap", train_size=1000, val_size=0.1, epochs=5).epochs
        5
    """
    targets = [target] if isinstance(target, str) else list(target) if isinstance(target, (list, tuple)) else []
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ConfigError(f"target = {target!r}: give the name of a label column, or a list of them")
    units = None if units is None else target_list(units)  # one unit as a string is one unit
    if units is not None and not all(isinstance(u, str) for u in units):
        raise ConfigError(f"units {units!r}: a unit is a string, such as 'eV' or 'eV/atom'")
    if units is not None and len(units) != len(targets):
        raise ConfigError(f"{len(targets)} targets but units {units!r}: give one unit (a string) per target")
    if architecture is not None:
        if backbone is not None:
            raise ConfigError("architecture shapes a model trained from scratch (backbone None, --backbone none); "
                              "a pretrained backbone has its own")
        name, options = architecture_spec(architecture)
        get_architecture(name).check_options(options)  # the family's own check, before any data is read
    config = TrainConfig.from_options(train_options)
    check_members(ensemble)
    if config.recipe == "linear-probe" and (freeze is not None or reinit):
        raise ConfigError("recipe 'linear-probe' fixes the whole pretrained backbone: leave out freeze and reinit (with "
                          "reinit, the head would learn on re-initialised, untrained layers)")
    if backbone is None and config.recipe != "freeze":
        raise ConfigError(f"recipe {config.recipe!r} fine-tunes a pretrained backbone; a model from scratch "
                          "(backbone None, --backbone none) trains every layer (recipe 'freeze')")
    check_task(task)
    if reference is not None:
        check_reference(reference, task)
    check_train_loss(config, task)
    for name, value, what in (("train_size", train_size, "training"), ("val_size", val_size, "validation"),
                              ("test_size", test_size, None)):
        if check_split_size(name, value) == 0 and what:
            raise ConfigError(f"{name} = 0: the {what} set cannot be empty; give a count >= 1 or a fraction")
    if (resume or overwrite) and out_dir is None:
        raise ConfigError("resume and overwrite need out_dir (--out), the folder of the run")
    check_backbone_options(backbone, freeze, reinit, config)
    if out_dir is not None:
        check_out_dir(out_dir, overwrite=overwrite, resume=resume)
    return config


def convolutions_of(config: dict[str, Any]) -> int | None:
    """The number of convolutions (freezable stages after the embedding) of the model ``config``
    describes, for any family: built on the meta device, so nothing is allocated (None for a
    config that does not build; loading it then says why)."""
    import torch

    from ..models.factory import from_config

    try:
        with torch.device("meta"):
            model = from_config(config)
    except Exception:  # the loader reports a bad config with its source
        return None
    member = model.member_models()[0]
    return len(member.backbone.stages()) - 1


def check_backbone_options(backbone: Any, freeze: Any, reinit: Any, config: TrainConfig) -> None:
    """The backbone, ``freeze`` and ``reinit`` of a run, checked without loading weights."""
    from ..registry import backbone_config, source_kind

    check_freeze(freeze, reinit, pretrained=backbone is not None)
    if backbone is None:
        return
    if not isinstance(backbone, (str, os.PathLike)):
        raise ConfigError(f"backbone names a backbone (a registered name, hf-hub:ORG/NAME or a folder), not a "
                          f"{type(backbone).__name__}; to train a model you built, use train_model(model, train, val)")
    if source_kind(backbone) == "hub":  # checked when its config is downloaded
        return
    n_conv = convolutions_of(backbone_config(backbone))
    if freeze is not None and isinstance(n_conv, int) and freeze > n_conv:
        raise ConfigError(f"freeze = {freeze}: backbone {str(backbone)!r} has {n_conv} convolutions, so freeze is "
                          f"0 (the embedding only) … {n_conv} (every convolution)")
    if config.recipe == "gradual" and isinstance(n_conv, int):
        recipes.check_phases(config.epochs, n_conv, freeze)
