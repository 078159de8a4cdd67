"""The CGCNN of Xie & Grossman (and its attention variant): graph → crystal vector."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..checks import MAX_FEATURES, MAX_HEADS, MAX_LAYERS, check_count, python_numbers
from ..errors import ConfigError, GraphSettingsMismatchError
from ..graphs.crystal_graph import CrystalGraph, as_crystal_graph, mean_per_crystal
from ..graphs.settings import DEFAULT_SETTINGS, GraphSettings
from ..layers.convolutions import AttentionConv, GatedConv
from .architectures import register_architecture, run_stages
from .freezing import frozen_modules, hold_frozen


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of a CGCNN backbone (the original checkpoints: 64, 4, 32, 1)."""

    atom_fea_len: int = 64
    n_conv: int = 4
    h_fea_len: int = 32
    n_h: int = 1
    orig_atom_fea_len: int = 92
    nbr_fea_len: int = 41
    conv: str = "gated"  # "gated" (CGCNN) or "attention" (Deng, Park & Sy, Section 4.2)
    heads: int = 4  # attention heads (attention convolution only)

    def __post_init__(self) -> None:
        """Types and the limits of :mod:`crystalzoo.checks` (``MAX_FEATURES``, ``MAX_LAYERS``,
        ``MAX_HEADS``), checked before any layer is allocated (:class:`ConfigError`).
        numpy numbers become Python numbers (for JSON)."""
        python_numbers(self)
        for name in ("atom_fea_len", "h_fea_len"):
            check_count(getattr(self, name), name, 1, MAX_FEATURES)
        check_count(self.n_conv, "n_conv", 1, MAX_LAYERS)
        check_count(self.n_h, "n_h", 1, MAX_LAYERS)
        check_count(self.orig_atom_fea_len, "orig_atom_fea_len", 1, MAX_FEATURES)
        check_count(self.nbr_fea_len, "nbr_fea_len", 1, MAX_FEATURES)
        check_count(self.heads, "heads", 1, MAX_HEADS)
        if self.conv not in ("gated", "attention"):
            raise ConfigError(f"unknown convolution {self.conv!r}; valid: 'gated', 'attention'")
        if self.conv == "attention" and self.atom_fea_len % self.heads:
            raise ConfigError(f"atom_fea_len {self.atom_fea_len} must be divisible by heads {self.heads}")

    @property
    def n_atom_features(self) -> int:
        """The atom features the backbone reads (the config key keeps the original CGCNN's name)."""
        return self.orig_atom_fea_len

    @property
    def n_bond_features(self) -> int:
        """The bond features the backbone reads, ``GraphSettings.n_bond_features`` (config key ``nbr_fea_len``)."""
        return self.nbr_fea_len

    @classmethod
    def from_dict(cls, d: Any, what: str = "backbone") -> "BackboneConfig":
        """The config in the dict ``d`` (a config.json's ``backbone``, or the ``architecture`` of
        a run from scratch), checked: :class:`ConfigError` naming ``what`` for anything else."""
        if not isinstance(d, dict):
            raise ConfigError(f"{what} config must be a JSON object (a dict of BackboneConfig settings), got "
                              f"{type(d).__name__}")
        unknown = set(map(str, d)) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown {what} settings {sorted(unknown)}; valid: {list(cls.__dataclass_fields__)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.conv == "gated":  # keep configs of gated backbones as the original checkpoints have them
            d.pop("heads")
            d.pop("conv")
        return d


@register_architecture("cgcnn")
class CGCNNBackbone(nn.Module):
    """Graph → crystal feature vector (``config.h_fea_len`` values).

    Takes a :class:`~crystalzoo.graphs.crystal_graph.CrystalGraph` (or a ``dgl.DGLGraph`` made by
    crystalzoo, with the same result). ``frozen`` is None, or k: the embedding and the first k
    convolutions are frozen (:func:`~crystalzoo.models.freezing.freeze`).
    """

    atom_feature_set = "cgcnn-92"
    description = "A CGCNN crystal graph network"
    citation = "CGCNN: T. Xie and J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018)"

    def __init__(self, config: BackboneConfig = BackboneConfig(), graph_settings: GraphSettings = DEFAULT_SETTINGS):
        super().__init__()
        if graph_settings.n_bond_features != config.n_bond_features:
            raise GraphSettingsMismatchError(
                f"graph settings give {graph_settings.n_bond_features} bond features, the "
                f"backbone takes {config.n_bond_features} (nbr_fea_len): for a new CGCNN on these graphs pass "
                f"architecture={{'nbr_fea_len': {graph_settings.n_bond_features}}} (make_model, finetune, pretrain)"
            )
        self.config = config
        self.graph_settings = graph_settings
        self.embedding = nn.Linear(config.n_atom_features, config.atom_fea_len)
        self.convs = nn.ModuleList(
            [GatedConv(config.atom_fea_len, config.n_bond_features) if config.conv == "gated"
             else AttentionConv(config.atom_fea_len, config.n_bond_features, config.heads)
             for _ in range(config.n_conv)]
        )
        self.conv_to_fc = nn.Linear(config.atom_fea_len, config.h_fea_len)
        self.fcs = nn.ModuleList(
            [nn.Linear(config.h_fea_len, config.h_fea_len) for _ in range(config.n_h - 1)]
        )
        self.frozen: int | None = None  # None: nothing frozen; k: embedding + k convs

    @property
    def out_features(self) -> int:
        return self.config.h_fea_len

    def atom_features(self, g: CrystalGraph, upto: int | None = None, h: torch.Tensor | None = None,
                      start: int = 0) -> torch.Tensor:
        """Atom vectors after the embedding and convolutions ``start … upto-1`` (all by
        default). ``h``: atom vectors already through the embedding and ``start``
        convolutions (the cached output of a frozen prefix); ``None`` starts from the graph."""
        return run_stages(self, g, self.convs, self.config.n_atom_features, self.config.n_bond_features, upto, h,
                          start)

    def readout(self, g: CrystalGraph, atom_fea: torch.Tensor) -> torch.Tensor:
        """Mean-pool atom vectors per crystal, then the hidden layer(s)."""
        crys = mean_per_crystal(as_crystal_graph(g), atom_fea)
        crys = nn.functional.softplus(self.conv_to_fc(nn.functional.softplus(crys)))
        for fc in self.fcs:
            crys = nn.functional.softplus(fc(crys))
        return crys

    def forward(self, g: CrystalGraph) -> torch.Tensor:
        g = as_crystal_graph(g)
        return self.readout(g, self.atom_features(g))

    def embed(self, structures: Sequence[Any], **options: Any) -> np.ndarray | list[np.ndarray]:
        """Crystal or atom vectors of ``structures``: :func:`crystalzoo.embeddings.embed` (the
        same options).

        Example::

            >>> from crystalzoo import load_backbone
            >>> from crystalzoo import example_structures
            >>> load_backbone("formation", freeze=2).embed(example_structures()[:1]).shape
            (1, 32)
        """
        from ..embeddings import embed

        return embed(self, structures, **options)

    def train(self, mode: bool = True) -> "CGCNNBackbone":
        super().train(mode)
        hold_frozen(self)  # frozen layers stay a fixed function, BatchNorm included
        return self

    def frozen_modules(self) -> list[nn.Module]:
        return frozen_modules(self)

    def stages(self) -> list[nn.Module]:
        """The freezable stages: the embedding, then the convolutions."""
        return [self.embedding, *self.convs]

    def later_modules(self) -> list[nn.Module]:
        """The hidden layers after the pooling."""
        return [self.conv_to_fc, *self.fcs]

    def to_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """The settings of a new CGCNN (:class:`BackboneConfig` fields), checked before the graphs are known."""
        BackboneConfig.from_dict(options, "architecture")

    @classmethod
    def from_config(cls, config: dict[str, Any], graph_settings: GraphSettings) -> "CGCNNBackbone":
        """A CGCNN backbone of the sizes in ``config`` (a :class:`BackboneConfig` dict), checked first."""
        shape = BackboneConfig.from_dict(config)
        if shape.n_atom_features != graph_settings.n_atom_features:
            raise ConfigError(f"orig_atom_fea_len {shape.orig_atom_fea_len} differs from the "
                              f"{graph_settings.n_atom_features} atom features of {graph_settings.atom_features!r}")
        return cls(shape, graph_settings)
