"""New models for a data set: a backbone (pretrained or new) with a new head, its normaliser and an
optional composition reference fitted on the training split."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..checks import MAX_OUTPUTS, check_count
from ..data.dataset import CrystalDataset
from ..data.targets import target_list
from ..errors import ConfigError, DataError
from ..graphs.building import crystal_batches
from ..graphs.crystal_graph import mean_per_crystal
from ..layers.heads import make_head
from ..models.architectures import architecture_spec, get_architecture
from ..models.builder import build_model
from ..models.crystal_model import CrystalModel, model_from_config
from ..models.freezing import check_freeze
from .batches import check_dataset
from .options import check_reference, check_task


def new_head_config(dataset: CrystalDataset, task: str, units: Sequence[str] | None) -> dict[str, Any]:
    """The config of a new head for ``dataset`` (:func:`~crystalzoo.models.make_head` builds it):
    its targets and units, or the classes 0 … C-1 of its labels, checked."""
    if task == "regression":
        return {"task": "regression", "targets": list(dataset.targets),
                "units": None if units is None else target_list(units)}
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
    """A pretrained backbone (``None``: a new one from scratch, of the family and shape
    ``architecture`` gives: a registered family's name such as ``"schnet"``, a dict
    ``{"name": NAME, **options}``, or a dict of CGCNN options; default the original CGCNN) with
    a new head sized for ``dataset``, whose normaliser is taken from ``dataset`` (the training
    split); ``units`` (one per target, e.g. ``["eV"]``) label the predictions. A new backbone
    needs graphs with its family's atom features (:meth:`CrystalDataset.with_atom_features`;
    :func:`~crystalzoo.finetune` takes care of it).

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
    from ..models.factory import load_backbone

    check_dataset(dataset, "dataset")
    check_task(task)
    check_count(seed, "seed", 0, 2**63 - 1)
    if backbone is not None and architecture:
        raise ConfigError("architecture shapes a model trained from scratch (backbone None); a pretrained backbone "
                          "has its own")
    check_freeze(freeze, reinit, pretrained=backbone is not None)
    empty = [t for t, n in zip(dataset.targets, (~np.isnan(dataset.labels)).sum(axis=0)) if n == 0]
    if empty:
        raise DataError(f"no crystal of the training split has a label for {empty}")
    head_config = new_head_config(dataset, task, units)
    if reference is not None:
        check_reference(reference, task)
        head_config["composition_reference"] = dataset.settings.n_atom_features
    torch.manual_seed(seed)
    if backbone is None:  # a new model: the one config → model funnel, as for saved models
        name, options = architecture_spec(architecture)
        wanted = get_architecture(name).atom_feature_set
        if dataset.settings.atom_features != wanted:
            raise ConfigError(f"a {name} backbone reads the atom features {wanted!r}, the data set's graphs carry "
                              f"{dataset.settings.atom_features!r}: pass dataset.with_atom_features({wanted!r}) "
                              "(finetune and pretrain do this for you)")
        config = {"architecture": name, "backbone": options, "graph": dataset.settings.to_dict(), "head": head_config}
        model = build_model(config, None, f"architecture {name!r}", constructor=model_from_config)
        bb, head = model.backbone.train(), model.head.train()  # built in eval mode: a new model is in training mode
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
            fit_reference(head, dataset)
    return CrystalModel(bb, head, {"backbone": backbone or "none", "freeze": freeze, "reinit": reinit})



def compositions(dataset: CrystalDataset) -> np.ndarray:
    """(n, atom features) float64: each crystal's mean element features."""
    with torch.no_grad():
        return np.concatenate([mean_per_crystal(g, g.atom_fea.double()).numpy()
                               for g in crystal_batches(dataset, dataset.settings, 1024)])


#: ridge of the composition reference's least squares, per labelled crystal: element features
#: are collinear, and without it the weights of a small data set grow beyond float32's reach
REFERENCE_RIDGE = 1e-3


def fit_reference(head, dataset: CrystalDataset) -> None:
    """Ridge least squares of each target on the crystals' mean element features, with an
    intercept (:data:`REFERENCE_RIDGE`); the normaliser becomes the mean and spread of what
    that leaves, so that the network learns the rest on unit scale. The spread is that of
    the leave-one-out residuals: on few crystals the fit comes close to every training label,
    and the in-sample residuals would be far smaller than the error on new crystals."""
    comp = compositions(dataset)
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
