"""A SchNet-style network (Schütt et al., NeurIPS 2017): continuous-filter convolutions on
:class:`~crystalzoo.graphs.CrystalGraph`.

Backbone: ``embedding`` (a linear map of the one-hot element, i.e. a learned embedding per
element), ``n_interactions`` interaction blocks, then atom-wise layers, mean pooling and
``n_h`` hidden layers. An interaction block updates the atom vectors as
h_i ← h_i + Dense(ssp(Dense(Σ_j w_ij · (h_j W_in) ⊙ F(u_ij)))), where F, the filter network,
maps the edge's Gaussian-expanded distance u_ij (the graph's bond features, which play the
part of SchNet's radial basis) through two dense layers, w_ij is the edge weight of the tie
rule, and ssp(x) = softplus(x) − log 2 is SchNet's shifted softplus. Each atom sees its
``max_neighbors`` nearest neighbours, so no cutoff function is needed.

Example::

    >>> from crystalzoo.models import SchNetBackbone
    >>> from crystalzoo import build_graph, example_structures
    >>> from crystalzoo.graphs import GraphSettings
    >>> b = SchNetBackbone.from_config({}, GraphSettings(atom_features="one-hot-100"))
    >>> b(build_graph(example_structures()[0], b.graph_settings)).shape
    torch.Size([1, 32])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..checks import MAX_FEATURES, MAX_LAYERS, check_count, python_numbers
from ..errors import ConfigError
from ..graphs.crystal_graph import (
    CrystalGraph,
    as_crystal_graph,
    mean_per_crystal,
    per_bond,
    sum_into_atoms,
)
from ..graphs.settings import GraphSettings
from .architectures import register_architecture, run_stages
from .freezing import hold_frozen

_LOG2 = math.log(2.0)


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) − log 2: zero at zero, SchNet's activation."""
    return nn.functional.softplus(x) - _LOG2


@dataclass(frozen=True)
class SchNetConfig:
    """Shape of a SchNet-style backbone; the bond and atom widths come from the graph settings."""

    atom_fea_len: int = 64  # atom vector width
    n_filters: int = 64  # width of the continuous filters
    n_interactions: int = 3
    h_fea_len: int = 32  # crystal vector width (the head's input)
    n_h: int = 1

    def __post_init__(self) -> None:
        python_numbers(self)
        for name in ("atom_fea_len", "n_filters", "h_fea_len"):
            check_count(getattr(self, name), name, 1, MAX_FEATURES)
        check_count(self.n_interactions, "n_interactions", 1, MAX_LAYERS)
        check_count(self.n_h, "n_h", 1, MAX_LAYERS)

    @classmethod
    def from_dict(cls, d: Any) -> "SchNetConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"schnet config must be a JSON object of SchNetConfig settings, got {type(d).__name__}")
        unknown = set(map(str, d)) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown schnet settings {sorted(unknown)}; valid: {list(cls.__dataclass_fields__)}")
        return cls(**d)


class Interaction(nn.Module):
    """One continuous-filter convolution with its atom-wise layers and residual update."""

    def __init__(self, atom_fea_len: int, n_filters: int, n_bond: int):
        super().__init__()
        self.filter1 = nn.Linear(n_bond, n_filters)
        self.filter2 = nn.Linear(n_filters, n_filters)
        self.atom_in = nn.Linear(atom_fea_len, n_filters, bias=False)
        self.atom_out1 = nn.Linear(n_filters, atom_fea_len)
        self.atom_out2 = nn.Linear(atom_fea_len, atom_fea_len)

    def forward(self, g: CrystalGraph, h: torch.Tensor, bond_fea: torch.Tensor) -> torch.Tensor:
        filters = per_bond(g, lambda b: self.filter2(shifted_softplus(self.filter1(b))), bond_fea)
        messages = self.atom_in(h).index_select(0, g.src) * filters
        summed = sum_into_atoms(g, messages)  # each edge with its tie weight
        return h + self.atom_out2(shifted_softplus(self.atom_out1(summed)))


@register_architecture("schnet")
class SchNetBackbone(nn.Module):
    """Graph → crystal feature vector (``config.h_fea_len`` values), SchNet-style."""

    atom_feature_set = "one-hot-100"
    description = "A SchNet-style crystal graph network (continuous-filter convolutions)"
    citation = ("SchNet: K. T. Schütt, P.-J. Kindermans, H. E. Sauceda, S. Chmiela, A. Tkatchenko and K.-R. Müller, "
                "Advances in Neural Information Processing Systems 30 (2017)")

    def __init__(self, config: SchNetConfig, graph_settings: GraphSettings):
        super().__init__()
        self.config = config
        self.graph_settings = graph_settings
        n_atom, n_bond = graph_settings.n_atom_features, graph_settings.n_bond_features
        self.embedding = nn.Linear(n_atom, config.atom_fea_len, bias=False)
        self.interactions = nn.ModuleList([Interaction(config.atom_fea_len, config.n_filters, n_bond)
                                           for _ in range(config.n_interactions)])
        self.atomwise = nn.Linear(config.atom_fea_len, config.h_fea_len)
        self.fcs = nn.ModuleList([nn.Linear(config.h_fea_len, config.h_fea_len) for _ in range(config.n_h - 1)])
        self.frozen: int | None = None

    @property
    def out_features(self) -> int:
        return self.config.h_fea_len

    def atom_features(self, g: CrystalGraph, upto: int | None = None, h: torch.Tensor | None = None,
                      start: int = 0) -> torch.Tensor:
        """Atom vectors after the embedding and interactions ``start … upto-1`` (all by default);
        ``h``: the atom vectors after the embedding and ``start`` interactions."""
        return run_stages(self, g, self.interactions, self.graph_settings.n_atom_features,
                          self.graph_settings.n_bond_features, upto, h, start)

    def readout(self, g: CrystalGraph, atom_fea: torch.Tensor) -> torch.Tensor:
        """Atom-wise layer, mean over each crystal's atoms, then the hidden layer(s)."""
        crys = mean_per_crystal(as_crystal_graph(g), shifted_softplus(self.atomwise(atom_fea)))
        for fc in self.fcs:
            crys = shifted_softplus(fc(crys))
        return crys

    def forward(self, g: CrystalGraph) -> torch.Tensor:
        g = as_crystal_graph(g)
        return self.readout(g, self.atom_features(g))

    def embed(self, structures: Any, **options: Any) -> Any:
        """Crystal or atom vectors of ``structures``: :func:`crystalzoo.embeddings.embed` (the same options)."""
        from ..embeddings import embed

        return embed(self, structures, **options)

    def train(self, mode: bool = True) -> "SchNetBackbone":
        super().train(mode)
        hold_frozen(self)
        return self

    def stages(self) -> list[nn.Module]:
        """The freezable stages: the embedding, then the interaction blocks."""
        return [self.embedding, *self.interactions]

    def later_modules(self) -> list[nn.Module]:
        return [self.atomwise, *self.fcs]

    def to_config(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """The settings of a new SchNet (:class:`SchNetConfig` fields), checked before the graphs are known."""
        SchNetConfig.from_dict(options)

    @classmethod
    def from_config(cls, config: dict[str, Any], graph_settings: GraphSettings) -> "SchNetBackbone":
        """A SchNet-style backbone of the sizes in ``config`` (:class:`SchNetConfig`), checked first."""
        if graph_settings.atom_features != cls.atom_feature_set:
            raise ConfigError(f"a schnet backbone reads the atom features {cls.atom_feature_set!r}, the graph settings "
                              f"give {graph_settings.atom_features!r}")
        return cls(SchNetConfig.from_dict(config), graph_settings)
