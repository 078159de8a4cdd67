"""A backbone and a head, with the graph settings of the weights; its config.json format."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, CrystalZooError
from ..graphs.crystal_graph import CrystalGraph, as_crystal_graph, mean_per_crystal
from ..graphs.settings import GraphSettings
from ..layers.heads import make_head
from ..uncertainty import Calibration
from .architectures import DEFAULT_ARCHITECTURE, Backbone, get_architecture
from .freezing import hold_frozen
from .predictor import Predictor, check_calibration

#: the layout of a model's config.json that this crystalzoo writes. A config without the key
#: is format 1 (every crystalzoo so far); a newer format is refused with a clear error
#: (docs/hub.md, "config.json").
CONFIG_FORMAT = 3


#: the format of a single model's config (format 2 adds ensembles, which older versions cannot
#: read; a single model stays format 1, so that they still load it)
SINGLE_FORMAT = 1


#: the format of a model whose head has a composition reference (older versions, which would
#: find weights they do not know, refuse it as written by a newer crystalzoo)
REFERENCE_FORMAT = 3


def config_format(head: nn.Module, ensemble: bool = False) -> int:
    """The ``format_version`` a model's config.json is written with: the oldest that holds it."""
    if getattr(head, "reference", None) is not None:
        return REFERENCE_FORMAT
    return 2 if ensemble else SINGLE_FORMAT


class CrystalModel(Predictor):
    """Backbone + head, with the graph settings the weights were trained with.

    Example::

        >>> from crystalzoo import load_model
        >>> model = load_model("formation")
        >>> from crystalzoo import example_structures
        >>> model.predict(example_structures()[:1]).round(2)
        array([-2.11], dtype=float32)
    """

    def __init__(self, backbone: Backbone, head: nn.Module, meta: dict[str, Any] | None = None,
                 calibration: Calibration | None = None):
        super().__init__()
        fc = getattr(head, "fc_out", None)
        if not isinstance(fc, nn.Linear) or fc.in_features != backbone.out_features:
            got = fc.in_features if isinstance(fc, nn.Linear) else type(head).__name__
            raise CrystalZooError(
                f"the head takes {got} input features but the backbone gives {backbone.out_features}: "
                f"make it with in_features=backbone.out_features ({backbone.out_features})"
            )
        reference = getattr(head, "reference", None)
        atoms = backbone.graph_settings.n_atom_features
        if reference is not None and reference.in_features != atoms:
            raise ConfigError(f"the head's composition reference takes {reference.in_features} element features but "
                              f"the backbone's atoms have {atoms}: the config and weights do not belong together "
                              f"(a reference of a CGCNN model has composition_reference = {atoms})")
        self.backbone = backbone
        self.head = head
        self.meta = dict(meta or {})
        self.calibration = calibration

    def member_models(self) -> list["CrystalModel"]:
        return [self]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CrystalModel":
        """An untrained model of the shape ``config`` describes: :func:`model_from_config`."""
        return model_from_config(config)

    @property
    def graph_settings(self) -> GraphSettings:
        return self.backbone.graph_settings

    def train(self, mode: bool = True) -> "CrystalModel":
        """As ``nn.Module.train``, except that frozen stages stay in eval mode (their BatchNorm
        statistics fixed), for any backbone architecture."""
        super().train(mode)
        hold_frozen(self.backbone)
        return self

    def forward(self, g: CrystalGraph) -> torch.Tensor:
        """Raw head output: normalised values (regression) or logits (classification)."""
        g = as_crystal_graph(g)
        return self.output(g, self.backbone(g))

    def output(self, g: CrystalGraph, crystal_vectors: torch.Tensor) -> torch.Tensor:
        """The head's output for the crystal vectors of ``g`` (with the composition of ``g``
        where the head has a composition reference)."""
        if getattr(self.head, "reference", None) is None:
            return self.head(crystal_vectors)
        return self.head(crystal_vectors, mean_per_crystal(g, g.atom_fea.to(crystal_vectors.dtype)))

    def embed(self, structures: Sequence[Any], *, kind: str = "hidden", layer: int | None = None,
              batch_size: int | None = None, n_jobs: int = 1, progress: bool = False,
              composition: bool = False) -> np.ndarray | list[np.ndarray]:
        """Crystal vectors (``kind="hidden"``, the head's input; ``"pooled"``) or atom vectors
        (``"atoms"``) of ``structures`` from this model's backbone, with ``composition=True``
        followed by the composition descriptors: :func:`crystalzoo.embeddings.embed`.

        Example::

            >>> from crystalzoo import load_model
            >>> from crystalzoo import example_structures
            >>> load_model("formation").embed(example_structures()[:1], kind="pooled").shape
            (1, 64)
        """
        from ..embeddings import embed

        return embed(self, structures, kind=kind, layer=layer, batch_size=batch_size, n_jobs=n_jobs,
                     progress=progress, composition=composition)

    def to_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model around its state dict."""
        self.check_own_calibration()  # never a config that does not load
        return {
            "format_version": config_format(self.head),
            "architecture": self.backbone.architecture,
            "backbone": self.backbone.to_config(),
            "graph": self.graph_settings.to_dict(),
            "head": self.head.to_config(),
            **({"meta": self.meta} if self.meta else {}),
            **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {}),
        }


def model_from_config(config: dict[str, Any]) -> CrystalModel:
    """An untrained :class:`CrystalModel` of the shape ``config`` describes. Every value is
    checked (:class:`ConfigError`) before a layer is built; build it under
    ``torch.device("meta")`` to check a config without allocating its weights."""
    if not isinstance(config, dict):
        raise ConfigError(f"a model config must be a JSON object, got {type(config).__name__}")
    version = config.get("format_version", 1)  # configs written before the key existed are format 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"config format_version must be an integer >= 1, got {version!r}")
    if version > CONFIG_FORMAT:
        raise ConfigError(f"the config has format {version}, written by a newer crystalzoo than this one (which reads "
                          f"format {CONFIG_FORMAT}): upgrade crystalzoo (pip install -U crystalzoo)")
    family = get_architecture(config.get("architecture", DEFAULT_ARCHITECTURE))
    missing = [k for k in ("backbone", "graph", "head") if k not in config]
    if missing:
        raise ConfigError(f"model config has no {missing} (keys: {sorted(map(str, config))[:10]})")
    meta = config.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise ConfigError(f"model config 'meta' must be a JSON object, got {type(meta).__name__}")
    if "ensemble" in config:
        raise ConfigError("this config describes an ensemble of models, not a single one: load it with load_model "
                          "or CrystalEnsemble.from_pretrained")
    settings = GraphSettings.from_dict(config["graph"])
    backbone = family.from_config(config["backbone"], settings)
    head = make_head(config["head"], backbone.out_features)
    return CrystalModel(backbone, head, meta, calibration_in(config, head, ensemble=False))


def calibration_in(config: dict[str, Any], head: nn.Module, ensemble: bool) -> Calibration | None:
    """The calibration a model's ``config`` holds (None: none), checked against its ``head``:
    only a regression's, scaled by the spread exactly when the model is an ensemble."""
    if config.get("calibration") is None:
        return None
    if head.task != "regression":
        raise ConfigError("a classifier's config has a 'calibration': intervals are for regression models")
    return check_calibration(Calibration.from_dict(config["calibration"], head.targets), head, ensemble)
