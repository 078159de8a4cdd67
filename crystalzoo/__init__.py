"""crystalzoo: pretrained crystal graph networks (CGCNN) to load, freeze and fine-tune.

Example::

    >>> from crystalzoo import load_model, load_backbone
    >>> model = load_model("formation")                 # backbone + its original head
    >>> backbone = load_backbone("formation", freeze=2)  # ready for a new head

Importing the package is cheap: torch, pymatgen and the Hub client load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "list_backbones": "registry",
    "get_backbone_info": "registry",
    "load_backbone": "loading",
    "load_model": "loading",
    "WeightsInfo": "registry",
    "GraphSettings": "graphs",
    "build_graph": "graphs",
    "build_graphs": "graphs",
    "build_arrays": "graphs",
    "collate": "graphs",
    "CrystalGraph": "crystal_graph",
    "load_structure": "graphs",
    "CrystalModel": "models",
    "CrystalEnsemble": "ensembles",
    "CGCNNBackbone": "models",
    "Backbone": "models",
    "register_architecture": "models",
    "RegressionHead": "models",
    "ClassificationHead": "models",
    "freeze": "models",
    "save_pretrained": "serialization",
    "CrystalDataset": "data",
    "example_structures": "data",
    "finetune": "training",
    "pretrain": "training",
    "make_model": "training",
    "train_model": "training",
    "evaluate": "training",
    "TrainConfig": "train_config",
    "push_to_hub": "hub",
    "embed": "embeddings",
    "CrystalFeaturizer": "featurizer",
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
