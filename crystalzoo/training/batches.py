"""Training and evaluation batches (with the frozen prefix's atom vectors computed once), and scoring."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..checks import check_count, check_finite_predictions
from ..data.dataset import CrystalDataset
from ..errors import ConfigError, DataError
from ..graphs.building import collate
from ..losses import check_loss
from ..models.crystal_model import CrystalModel
from ..models.freezing import hold_frozen
from ..models.predictor import Predictor


class Batches:
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
            if self.train and g.total_atoms == 1:  # only where there is no batch to join: a share of one crystal
                raise DataError(f"a training batch holds only crystal {self.ds.ids[idx[0]]!r}, which has one atom: "
                                "BatchNorm cannot train on one value per channel. Use more training crystals (or, "
                                "under torchrun, fewer processes than crystals)")
            h = torch.cat([self.prefix[i] for i in idx]) if self.prefix is not None else None
            y = torch.from_numpy(self.ds.labels[idx]).to(self.device)
            yield g, h, y


def forward_from(model: CrystalModel, g, h, start: int) -> torch.Tensor:
    atoms = model.backbone.atom_features(g, h=h, start=start)
    return model.output(g, model.backbone.readout(g, atoms))


@torch.no_grad()
def evaluate_batches(model: Predictor, batches: Batches, loss: str = "mse", finite: bool = False) -> dict[str, float]:
    """The loss (of kind ``loss``, :class:`~crystalzoo.training.config.TrainConfig`'s) and the head's scores (MAE per
    target, or accuracy) of ``model`` on a dataset (an ensemble: of its mean prediction). With ``finite``, a
    prediction that is not finite is a :class:`~crystalzoo.errors.WeightsError` (a training run tells a diverged
    model by its loss instead)."""
    model.eval()
    members = model.member_models()
    losses, errors, weights = [], [], []
    for g, h, y in batches(range(len(batches.ds))):
        outs = [forward_from(m, g, h, batches.start) for m in members]
        out = outs[0] if len(outs) == 1 else model.head.combine(outs, [m.head for m in members])
        labels = int((~torch.isnan(y)).sum())  # the loss is a mean over the batch's labels
        losses.append(model.head.loss(out, y, loss).item() * labels)
        weights.append(labels)
        units = model.output_in_units(out)
        if finite:  # never a score that leaves out the crystals predicted NaN
            check_finite_predictions(units.detach().cpu().float().numpy()[None], offset=sum(len(e) for e in errors))
        errors.append(model.head.errors(units, y))
    return {"loss": float(np.sum(losses) / max(1, np.sum(weights))), **model.head.scores(np.concatenate(errors))}


def check_classes(model: CrystalModel, ds: CrystalDataset, what: str) -> None:
    """The labels of ``ds`` must be ones the model's head can learn (a classifier: its classes)."""
    model.head.check_labels(ds.labels, ds.ids, what)


def check_dataset(data: Any, what: str) -> None:
    """:class:`ConfigError` unless ``data`` is a :class:`CrystalDataset` with a label for some crystal."""
    if not isinstance(data, CrystalDataset):
        raise ConfigError(f"{what} must be a CrystalDataset (CrystalDataset.from_jsonl / from_csv / from_structures, "
                          f"or ds.split(...)), not a {type(data).__name__}")
    if len(data) and not (~np.isnan(data.labels)).any():
        raise DataError(f"{what} has no labels (every label is missing): there is nothing to train or score on")


def check_model(model: Any, ensembles: bool = False) -> None:
    if isinstance(model, Predictor) and not isinstance(model, CrystalModel):
        if not ensembles:
            raise ConfigError("train_model trains one model; an ensemble's members are trained one by one (their "
                              "seeds differ): finetune(..., ensemble=N), or train_model on each of model.members")
        return
    if not isinstance(model, CrystalModel):
        raise ConfigError(f"expected a CrystalModel (a backbone with its head), got a {type(model).__name__}: e.g. "
                          "load_model(name), or CrystalModel(backbone, RegressionHead(backbone.out_features, targets))")


def check_targets(model: CrystalModel, ds: CrystalDataset, what: str) -> None:
    """:class:`DataError` unless ``ds`` has the model's targets, in its order (scores against
    another target's labels would be silently wrong)."""
    if list(ds.targets) != list(model.targets):
        raise DataError(f"{what} has the targets {list(ds.targets)}, the model predicts {list(model.targets)}: "
                        "select the model's targets first (dataset.select_targets(model.targets))")


def evaluate(model: Predictor, dataset: CrystalDataset, batch_size: int = 256, loss: str = "mse") -> dict[str, float]:
    """Loss (of kind ``loss``, as :class:`~crystalzoo.training.config.TrainConfig`'s: a mean over every label of the data
    set) and MAE (per target and mean; accuracy for classifiers) of ``model`` on ``dataset``,
    whose targets must be the model's (:class:`DataError` otherwise). An ensemble is scored
    on its mean prediction."""
    check_model(model, ensembles=True)
    check_dataset(dataset, "the data set to evaluate on")
    check_count(batch_size, "batch_size")
    check_targets(model, dataset, "the data set")
    check_loss(loss)
    if len(dataset) == 0:
        raise DataError("the data set to evaluate on has no crystal")
    model.graph_settings.check_same(dataset.settings, "this model")
    check_classes(model, dataset, "the data set")
    device = next(model.parameters()).device
    return evaluate_batches(model, Batches(model, dataset, batch_size, str(device)), loss, finite=True)
