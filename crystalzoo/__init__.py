"""crystalzoo: pretrained crystal graph networks (CGCNN, SchNet-style) to load, freeze and fine-tune.

Example::

    >>> from crystalzoo import load_model, load_backbone
    >>> model = load_model("formation")                 # backbone + its original head
    >>> backbone = load_backbone("formation", freeze=2)  # ready for a new head

Importing the package is cheap: torch, pymatgen and the Hub client load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "list_backbones": "registry",
    "get_backbone_info": "registry",
    "WeightsInfo": "registry",
    "load_backbone": "models.factory",
    "load_model": "models.factory",
    "GraphSettings": "graphs.settings",
    "build_graph": "graphs.building",
    "build_graphs": "graphs.building",
    "build_arrays": "graphs.building",
    "collate": "graphs.building",
    "CrystalGraph": "graphs.crystal_graph",
    "load_structure": "graphs.reading",
    "CrystalModel": "models.crystal_model",
    "CrystalEnsemble": "models.ensembles",
    "Backbone": "models.architectures",
    "register_architecture": "models.architectures",
    "CGCNNBackbone": "models.cgcnn",
    "freeze": "models.freezing",
    "RegressionHead": "layers.heads",
    "ClassificationHead": "layers.heads",
    "save_pretrained": "serialization",
    "CrystalDataset": "data.dataset",
    "example_structures": "data.bundled",
    "finetune": "training.runs",
    "pretrain": "training.runs",
    "make_model": "training.heads",
    "train_model": "training.loop",
    "evaluate": "training.batches",
    "TrainConfig": "training.config",
    "push_to_hub": "hub",
    "embed": "embeddings",
    "rank_backbones": "transfer",
    "CrystalFeaturizer": "featurizer",
    "fit_booster": "boosting",
    "Blend": "boosting",
    "fit_blend": "boosting",
    "CrystalZooError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crystalzoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
