"""What a single model and an ensemble share: predictions, tables, intervals and calibration."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..checks import check_count, check_finite_predictions
from ..errors import ConfigError, DataError
from ..graphs.building import collate, crystal_batches
from ..graphs.crystal_graph import CrystalGraph
from ..graphs.neighbors import GraphArrays
from ..graphs.reading import crystal_list, structure_path
from ..graphs.settings import GraphSettings
from ..uncertainty import Calibration, calibration_from, check_coverage, weights_digest
from .builder import LOAD_OPTIONS, check_options, load_with, with_revision

if TYPE_CHECKING:
    import pandas as pd


#: the columns of a prediction table besides the predictions (``predict_frame``, ``crystalzoo predict``)
FRAME_COLUMNS = ("id", "source", "file")


def member_mean(out: np.ndarray) -> np.ndarray:
    """The mean over the members (axis 0) of their predictions; a single model's as they are."""
    return out.mean(0) if len(out) > 1 else out[0]


#: the options of ``save_pretrained`` (the transformers keywords among them)
SAVE_OPTIONS = ("extra", "overwrite", "safe_serialization", "push_to_hub", "repo_id")


def _push_options() -> list[str]:
    """The keyword options of :func:`crystalzoo.push_to_hub` (all but the model and the repo id)."""
    import inspect

    from ..hub import push_to_hub

    return [p for p in inspect.signature(push_to_hub).parameters if p not in ("model", "repo_id")]


def check_calibration(calibration: Any, head: nn.Module, ensemble: bool) -> Calibration | None:
    """``calibration`` if it fits a model with ``head`` (an ensemble's if ``ensemble``), else
    :class:`ConfigError`: the one check of a calibration wherever it enters a model (the
    constructors, ``model.calibration = …``, a loaded config.json).

    Example::

        >>> from crystalzoo import load_model
        >>> check_calibration(None, load_model("formation").head, ensemble=False) is None
        True
    """
    if calibration is None:
        return None
    if not isinstance(calibration, Calibration):
        raise ConfigError(f"a calibration is a crystalzoo.uncertainty.Calibration (model.calibrate(dataset) makes "
                          f"one), not a {type(calibration).__name__}")
    if head.task != "regression":
        raise ConfigError("a classifier has no calibration: prediction intervals are for regression models")
    if list(calibration.targets) != list(head.targets):
        raise ConfigError(f"the calibration is for the targets {list(calibration.targets)}, the model predicts "
                          f"{list(head.targets)}: calibrate this model on its own targets, model.calibrate(dataset)")
    if calibration.scaled and not ensemble:
        raise ConfigError("the calibration scales intervals by an ensemble's spread, but this is a single model: "
                          "calibrate it, model.calibrate(dataset)")
    if ensemble and not calibration.scaled:
        raise ConfigError("an ensemble's calibration scales by its spread ('floor' per target); this one is a single "
                          "model's: calibrate the ensemble, ensemble.calibrate(dataset)")
    return calibration


class Predictor(nn.Module):
    """What a single model (:class:`~crystalzoo.models.crystal_model.CrystalModel`) and an ensemble
    (:class:`crystalzoo.models.ensembles.CrystalEnsemble`) share: predictions in the target's units,
    the spread over an ensemble's members, and calibrated intervals
    (:mod:`crystalzoo.uncertainty`). A subclass gives ``member_models()``, ``graph_settings``
    and ``head``."""

    head: nn.Module

    @property
    def calibration(self) -> Calibration | None:
        """The calibration of this regression model's intervals (None: none). Assigned, it is
        checked (:func:`check_calibration`): a regression's, for this model's targets, scaled by
        the spread exactly when this is an ensemble."""
        return self.__dict__.get("_calibration")

    @calibration.setter
    def calibration(self, value: Calibration | None) -> None:
        self.__dict__["_calibration"] = check_calibration(value, self.head, ensemble=len(self.member_models()) > 1)
        self.__dict__["_calibrated_weights"] = None if value is None else weights_digest(self)

    def member_models(self) -> list["Predictor"]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Predictor":
        """An untrained model of this class, of the shape ``config`` describes (``from_pretrained``)."""
        raise NotImplementedError

    @property
    def graph_settings(self) -> GraphSettings:
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model around its state dict (its config.json)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Deprecated (crystalzoo 0.2.0): :meth:`to_config`, as ``backbone.to_config()`` (the
        attribute ``backbone.config`` is the backbone's shape)."""
        warnings.warn("model.config() is deprecated: use model.to_config()", DeprecationWarning, stacklevel=2)
        return self.to_config()

    @property
    def task(self) -> str:
        return self.head.task

    @property
    def targets(self) -> list[str]:
        return self.head.targets

    def output_in_units(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw output (normalised values or logits) → the target's units (or class probabilities)."""
        return self.head.to_units(raw)

    def _batches(self, structures: Any, batch_size: int | None, n_jobs: int, progress: bool) -> Iterable[CrystalGraph]:
        if batch_size is None:
            batch_size = 64 if next(self.parameters()).device.type == "cpu" else 512
        # batch by batch (crystal_batches checks batch_size and n_jobs): with n_jobs > 1 the workers build the next
        # batches while this one runs; a CrystalDataset's cached graphs are used as they are
        return crystal_batches(structures, self.graph_settings, batch_size, n_jobs, progress)

    @torch.no_grad()
    def predict(self, structures: Sequence[Any], batch_size: int | None = None, progress: bool = False,
                n_jobs: int = 1, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predictions in the target's units for pymatgen structures, CIF paths or CIF texts
        (a list of them, or one), or for a ``CrystalDataset`` (its cached graphs). An
        ensemble predicts the mean over its members (classification: the mean probabilities).

        ``batch_size``: crystals per forward pass; by default 64 on a CPU (small batches stay
        in the CPU's caches: about 1.5x faster than 256 on 2 cores, docs/results/performance.md)
        and 512 on a GPU. ``n_jobs > 1`` builds graphs in that many worker processes.
        ``return_std=True`` (ensembles): also the standard deviation over the members.

        Regression: shape (n,) for one target, (n, n_targets) for several. Classification:
        class probabilities, shape (n, n_classes).
        """
        return_std = self.check_return_std(return_std)
        out = self._predict_batches(self._batches(structures, batch_size, n_jobs, progress))
        mean = self.head.as_returned(member_mean(out))
        return (mean, self.head.as_returned(out.std(0))) if return_std else mean

    def check_return_std(self, return_std: Any, option: str = "return_std") -> bool:
        """``return_std`` as a bool, refused for a single model (``option``: how the caller names it)."""
        if not isinstance(return_std, (bool, np.bool_)):
            raise ConfigError(f"{option} = {return_std!r}: True or False")
        return_std = bool(return_std)
        if return_std and len(self.member_models()) == 1:
            raise ConfigError(f"{option} needs an ensemble (finetune(..., ensemble=5), crystalzoo finetune "
                              "--ensemble 5): a single model has no spread over members. For calibrated bounds of "
                              "a single model, use model.predict_interval(structures, coverage=0.9) (crystalzoo "
                              "predict --interval 0.9)")
        return return_std

    def check_interval_coverage(self, coverage: Any) -> float:
        """``coverage`` checked, and this model able to give intervals for it (before any work)."""
        if self.task != "regression":
            raise ConfigError("prediction intervals are for regression models; a classifier's predict gives class "
                              "probabilities")
        coverage = check_coverage(coverage)
        if self.calibration is None:
            raise ConfigError("this model has no calibration (models fine-tuned by crystalzoo are calibrated on "
                              "their validation split; registered and older models are not): calibrate it on "
                              "labelled crystals it was not trained on, model.calibrate(dataset)")
        self.check_own_calibration(weights=True)  # the head or the weights may have changed since it was calibrated
        self.calibration.quantile(coverage)  # too few calibration crystals for it: refused here
        return coverage

    def check_own_calibration(self, weights: bool = False) -> None:
        """The model's calibration checked again against its head as it is now (its targets may
        have been renamed since), and with ``weights`` against its weights (a calibration's
        scores hold for the weights they were computed with): :class:`ConfigError` before it is
        used or saved."""
        check_calibration(self.calibration, self.head, ensemble=len(self.member_models()) > 1)
        made_for = self.__dict__.get("_calibrated_weights")
        if weights and self.calibration is not None and made_for is not None and made_for != weights_digest(self):
            raise ConfigError("the model's calibration was made for other weights: they changed since it was calibrated "
                              "(training, e.g. of an ensemble's members one by one, load_state_dict, an edit, or a "
                              "lower precision such as .half()), so its intervals would not hold their coverage. "
                              "Calibrate it again on crystals it was not trained on, model.calibrate(dataset), or drop "
                              "it: model.calibration = None")

    def _bounds(self, out: np.ndarray, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper), shaped (n, columns), from the members' predictions ``out``."""
        dtype, out = out.dtype, out.astype(np.float64)  # bounds in the predictions' precision
        lower, upper = self.calibration.interval(out.mean(0), out.std(0) if self.calibration.scaled else None,
                                                 coverage)
        return lower.astype(dtype), upper.astype(dtype)

    @torch.no_grad()
    def predict_interval(self, structures: Sequence[Any], coverage: float = 0.9, batch_size: int | None = None,
                         progress: bool = False, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated bounds ``(lower, upper)`` that hold a fraction ``coverage`` of crystals
        drawn like the calibration crystals (split conformal, :mod:`crystalzoo.uncertainty`),
        each shaped as :meth:`predict`'s output; the prediction is their midpoint. An
        ensemble's intervals are wider where its members disagree; a single model's all have
        one width. A fine-tuned regression model is calibrated on its validation split.

        Example::

            >>> lower, upper = model.predict_interval(["my_crystal.cif"], coverage=0.9)  # doctest: +SKIP
        """
        coverage = self.check_interval_coverage(coverage)
        out = self._predict_batches(self._batches(structures, batch_size, n_jobs, progress))
        lower, upper = self._bounds(out, coverage)
        return self.head.as_returned(lower), self.head.as_returned(upper)

    @torch.no_grad()
    def predict_frame(self, structures: Sequence[Any], ids: Sequence[Any] | None = None, *, return_std: bool = False,
                      coverage: float | None = None, batch_size: int | None = None, progress: bool = False,
                      n_jobs: int = 1) -> "pd.DataFrame":
        """Predictions as a pandas DataFrame: a column ``id`` (``ids``; by default a data set's
        ids, a file's name, else the row number), then one column per prediction named with
        its unit (``band_gap (eV)``), with ``return_std`` (ensembles) a ``… std`` column each,
        and with ``coverage`` the interval's ``… 90% lower`` and ``… 90% upper`` columns. The
        predictions are computed once for all of them.

        Example::

            >>> from crystalzoo import example_structures, load_model
            >>> load_model("formation").predict_frame(example_structures()[:1]).columns.tolist()
            ['id', 'formation_energy_per_atom (eV/atom)']
        """
        import pandas as pd

        return_std = self.check_return_std(return_std)
        if coverage is not None:
            coverage = self.check_interval_coverage(coverage)
        if isinstance(ids, (str, bytes)):
            raise ConfigError(f"ids = {ids!r}: one id per crystal, a list (a string would be one id per character)")
        if hasattr(structures, "graphs") and hasattr(structures, "ids"):  # a CrystalDataset
            default_ids = list(structures.ids)
        else:
            structures = crystal_list(structures)
            # a file's name (never its folder, which says nothing about the crystal and may be private), else the row
            default_ids = [Path(s).name if isinstance(s, (str, os.PathLike)) and structure_path(s) is not None else i
                           for i, s in enumerate(structures)]
        out = self._predict_batches(self._batches(structures, batch_size, n_jobs, progress))
        n = out.shape[1]
        ids = default_ids if ids is None else list(ids)
        if len(ids) != n:
            raise ConfigError(f"predict_frame got {len(ids)} ids for {n} crystals: give one id per crystal")
        # a target named like the table's own columns (id, source, file) is prefixed: no column is overwritten
        names = [f"predicted {n}" if n in FRAME_COLUMNS else n for n in self.head.columns()]
        # two targets whose names with units read alike ('x (eV)' and 'x' in eV) get one column each
        names = [f"{n} [target {j + 1}]" if names.count(n) > 1 else n for j, n in enumerate(names)]
        frame = pd.DataFrame({"id": ids})
        mean = member_mean(out)
        for j, name in enumerate(names):
            frame[name] = mean[:, j]
        if return_std:
            std = out.std(0)
            for j, name in enumerate(names):
                frame[f"{name} std"] = std[:, j]
        if coverage is not None:
            lower, upper = self._bounds(out, coverage)
            # a plain percentage: 90%, 99.5%, 0.0000001% (not "1e-07%")
            tag = np.format_float_positional(float(f"{100 * coverage:.10g}"), trim="-") + "%"
            for side, bound in (("lower", lower), ("upper", upper)):
                for j, name in enumerate(names):
                    frame[f"{name} {tag} {side}"] = bound[:, j]
        return frame

    @torch.no_grad()
    def calibrate(self, dataset: Any, batch_size: int | None = None, split: str = "calibration") -> Calibration:
        """Calibrate this regression model's intervals on ``dataset``, a labelled
        ``CrystalDataset`` of crystals it was not trained on (with the model's targets), and
        keep the calibration (``model.calibration``, saved in its config; ``split`` names
        where the crystals came from). Returns it.

        Example::

            >>> model.calibrate(CrystalDataset.from_jsonl("held_out.jsonl", targets=model.targets))  # doctest: +SKIP
        """
        from ..data.dataset import CrystalDataset

        if self.task != "regression":
            raise ConfigError("calibration gives intervals of regression models; this model is a classifier")
        if not isinstance(dataset, CrystalDataset):
            raise ConfigError(f"calibrate takes a labelled CrystalDataset (e.g. CrystalDataset.from_jsonl(path, "
                              f"targets=model.targets)), not a {type(dataset).__name__}")
        if list(dataset.targets) != list(self.targets):
            raise DataError(f"the calibration set has the targets {list(dataset.targets)}, the model predicts "
                            f"{list(self.targets)}: select them first (dataset.select_targets(model.targets))")
        if len(dataset) == 0:
            raise DataError("the calibration set has no crystal")
        if np.isnan(dataset.labels).all():  # the model's calibration stays as it was
            raise DataError(f"the calibration set has no {', '.join(self.targets)} label: calibrate on labelled crystals "
                            "the model was not trained on")
        if not isinstance(split, str) or not split.strip():
            raise ConfigError(f"split = {split!r}: a name for where the calibration crystals come from, e.g. 'held-out'")
        out = self._predict_batches(self._batches(dataset, batch_size, 1, False)).astype(np.float64)
        scaled = len(out) > 1
        self.calibration = calibration_from(out.mean(0), out.std(0) if scaled else None, dataset.labels,
                                            self.targets, split=split)
        return self.calibration

    @classmethod
    def from_pretrained(cls, name: str, **options: Any) -> "Predictor":
        """The model ``name`` (a registered name, ``hf-hub:ORG/NAME[@REVISION]`` or a model
        folder), as :func:`crystalzoo.load_model` loads it (the same options:
        ``revision``, ``cache_dir``, ``graph_settings``, ``local_files_only``, ``device``; any
        other is a :class:`ConfigError` naming them); the transformers / timm spelling.
        ``CrystalModel.from_pretrained`` refuses an ensemble's folder,
        ``CrystalEnsemble.from_pretrained`` a single model's.

        Example::

            >>> from crystalzoo import CrystalModel
            >>> CrystalModel.from_pretrained("formation").targets
            ['formation_energy_per_atom']
        """
        check_options("from_pretrained", options, LOAD_OPTIONS)
        revision = options.pop("revision", None)
        return load_with(cls.from_config, with_revision(name, revision), **options)  # the other kind is refused there

    def save_pretrained(self, folder: str | os.PathLike, *, extra: dict[str, Any] | None = None,
                        overwrite: bool = False, safe_serialization: bool = True, push_to_hub: bool = False,
                        repo_id: str | None = None, **hub_options: Any) -> Path:
        """Write this model into ``folder`` (``model.safetensors`` + ``config.json``):
        :func:`crystalzoo.save_pretrained` (``extra``, ``overwrite``). The transformers keywords:
        ``safe_serialization`` (crystalzoo writes safetensors only: ``False`` is refused) and
        ``push_to_hub=True`` with ``repo_id="ORG/NAME"`` (and :func:`crystalzoo.push_to_hub`'s
        options), which uploads the model too. Any other keyword is a :class:`ConfigError`."""
        from ..serialization import save_pretrained

        if safe_serialization is not True:
            raise ConfigError(f"safe_serialization = {safe_serialization!r}: crystalzoo writes safetensors only (pickled "
                              "weights are a code-execution hole); leave it out")
        if not isinstance(push_to_hub, bool):
            raise ConfigError(f"push_to_hub = {push_to_hub!r}: True (upload too, with repo_id='ORG/NAME') or False")
        if not push_to_hub:
            check_options("save_pretrained", hub_options, SAVE_OPTIONS)
        elif not repo_id:
            raise ConfigError("push_to_hub=True needs repo_id='ORG/NAME', the Hub repo to upload to")
        else:  # every option checked before anything is written
            check_options("save_pretrained(push_to_hub=True)", hub_options,
                          [p for p in _push_options() if p != "extra"])
        path = save_pretrained(self, folder, extra=extra, overwrite=overwrite)
        if push_to_hub:
            self.push_to_hub(repo_id, extra=extra, **hub_options)  # the same config.json as the folder's
        return path

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload this model to the Hub repo ``repo_id`` and return the commit id:
        :func:`crystalzoo.push_to_hub` (the same ``options``)."""
        from ..hub import push_to_hub

        check_options("push_to_hub", options, _push_options())
        return push_to_hub(self, repo_id, **options)

    def predict_arrays(self, arrays: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Predictions for graphs in crystalzoo's compact form (:class:`~crystalzoo.graphs.GraphArrays`,
        as cached by ``CrystalDataset``)."""
        check_count(batch_size, "batch_size")
        arrays = [arrays] if isinstance(arrays, GraphArrays) else list(arrays)
        out = self._predict_batches(collate(arrays[i : i + batch_size], self.graph_settings)
                                    for i in range(0, len(arrays), batch_size))
        return self.head.as_returned(member_mean(out))

    @torch.no_grad()
    def _predict_batches(self, batches: Iterable[CrystalGraph]) -> np.ndarray:
        """Every member's predictions in the target's units, shape (members, n, columns)."""
        was_training = self.training
        self.eval()
        members = self.member_models()
        try:
            device = next(self.parameters()).device
            outs = []
            for g in batches:
                g = g.to(device)
                outs.append(torch.stack([m.output_in_units(m(g)) for m in members]).cpu())
            if outs and outs[0].dtype == torch.bfloat16:  # numpy has no bfloat16
                outs = [o.float() for o in outs]
        finally:
            self.train(was_training)
        if not outs:
            return np.zeros((len(members), 0, len(self.head.columns())), np.float32)
        out = torch.cat(outs, 1).numpy()
        check_finite_predictions(out)
        return out
