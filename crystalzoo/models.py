"""The CGCNN of Xie & Grossman, split into a backbone (graph → crystal vector) and heads.

Backbone: ``embedding`` (linear 92 → 64), ``n_conv`` gated graph convolutions
(v_i ← softplus(v_i + BN(Σ_j σ(z W_f + b_f) ⊙ softplus(z W_s + b_s))), z = v_i ⊕ v_j ⊕ u_ij,
with BatchNorm on the gated messages), mean pooling, and ``n_h`` hidden layers.
Heads: :class:`RegressionHead` (stores the target normaliser and units, predicts in the
target's units) and :class:`ClassificationHead`. :class:`CrystalModel` joins them and
predicts from pymatgen structures.

The layer names match the original CGCNN checkpoints, so their weights load unchanged.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from .crystal_graph import (CrystalGraph, add_centre, as_crystal_graph, mean_per_crystal, softmax_over_edges,
                            sum_into_atoms)
from .errors import ConfigError, CrystalZooError, DataError, GraphSettingsMismatchError
from .graphs import (DEFAULT_SETTINGS, GraphArrays, GraphSettings, check_count, check_settings, collate,
                     crystal_batches, crystal_list, python_numbers, structure_path)
from .registry import resolve
from .serialization import build_model
from .losses import check_loss
from .uncertainty import Calibration, calibration_from, check_coverage

if TYPE_CHECKING:
    import pandas as pd

#: limits of a model's config (docs/robustness.md, "Models and configs"); the registered
#: models have 64 atom features, 4 convolutions, 32 hidden features, 1 hidden layer
MAX_FEATURES = 1024  # atom_fea_len, h_fea_len
MAX_LAYERS = 32  # n_conv, n_h
MAX_HEADS = 64
MAX_OUTPUTS = 1024  # targets of a regression head, classes of a classifier
#: the layout of a model's config.json that this crystalzoo writes. A config without the key
#: is format 1 (every crystalzoo so far); a newer format is refused with a clear error
#: (docs/hub.md, "config.json").
CONFIG_FORMAT = 3
#: the columns of a prediction table besides the predictions (``predict_frame``, ``crystalzoo predict``)
FRAME_COLUMNS = ("id", "source", "file")
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


def _compiling() -> bool:
    """Whether torch.compile is tracing this call."""
    check = getattr(torch.compiler, "is_compiling", None)
    if check is None:  # torch < 2.3
        from torch._dynamo import is_compiling as check
    return bool(check())


def check_device(device: Any) -> None:
    """``device`` must name a device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``…);
    :class:`ConfigError` otherwise (training and :func:`~crystalzoo.load_model` check it)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"device = {device!r} is not a device name ({exc}); use e.g. --device cpu or --device cuda") from None
    if dev.type == "cpu":
        return
    if dev.type == "meta":
        raise ConfigError("device = 'meta' holds no data; use --device cpu or --device cuda")
    try:
        torch.empty(0, device=dev)
    except Exception as exc:  # no such accelerator, no driver, or torch built without it: all say "not here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(f"device = {device!r} is not usable on this machine ({reason}; it has {gpus} CUDA "
                          "device(s)); use --device cpu, or a device that exists") from None



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
        """Types and the limits above, checked before any layer is allocated (:class:`ConfigError`).
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


_CHUNK = 4096  # rows per temporary in the edge BatchNorm: buffers small enough to stay in cache


def _rows(n: int) -> Iterator[slice]:
    return (slice(i, i + _CHUNK) for i in range(0, n, _CHUNK))


def _edge_stats(x: torch.Tensor, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance of the rows of x (E, C), row e counted with weight p[e]
    (Σp = 1; None: 1/E each). One pass over x, a chunk of rows at a time, shifted by the
    first row so that E[(x - s)²] - (mean - s)² keeps its digits."""
    shift = x[0].clone()
    s1, s2 = x.new_zeros(x.shape[1]), x.new_zeros(x.shape[1])
    for r in _rows(x.shape[0]):
        d = x[r] - shift
        if p is None:
            s1 += d.sum(0)
            s2 += d.mul_(d).sum(0)
        else:
            s1.addmv_(d.t(), p[r])
            s2.addmv_(d.mul_(d).t(), p[r])
    if p is None:
        s1 /= x.shape[0]
        s2 /= x.shape[0]
    return shift + s1, (s2 - s1 * s1).clamp_(min=0)


def _add_sums(sums: tuple[torch.Tensor, torch.Tensor], dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor) -> None:
    sums[0].add_(dy.sum(0))
    sums[1].add_((x - mean).mul_(dy).sum(0))


def _norm_backward(dy: torch.Tensor, x: torch.Tensor, p: torch.Tensor | None, mean: torch.Tensor,
                   inv: torch.Tensor, gamma: torch.Tensor, batch_stats: bool,
                   sums: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Gradients of y = (x - mean) · inv · γ + β: turns dy (E, C, a buffer the caller owns)
    into dx in place and returns (dx, dγ, dβ). With ``batch_stats``, mean and inv are the
    (p-weighted) statistics of x itself, and dx = inv · γ · (dy - p · (dβ + x̂ · dγ)) — for
    p = 1/E the usual BatchNorm gradient; otherwise they are constants and dx = inv · γ · dy.
    ``sums``: Σ dy and Σ dy · (x - mean), where the caller has summed them already."""
    if sums is None:
        sums = dy.new_zeros(dy.shape[1]), dy.new_zeros(dy.shape[1])
        for r in _rows(dy.shape[0]):
            _add_sums(sums, dy[r], x[r], mean)
    d_beta, d_gamma = sums[0], sums[1] * inv  # Σ dy, Σ dy · x̂
    a = inv * gamma
    if not batch_stats:
        return dy.mul_(a), d_gamma, d_beta
    scale = a * inv * d_gamma  # a · x̂ · dγ = x · scale - mean · scale
    offset = a * d_beta - mean * scale
    for r in _rows(dy.shape[0]):
        t = torch.addcmul(offset, x[r], scale)
        t.mul_(p[r].unsqueeze(1) if p is not None else 1.0 / dy.shape[0])
        dy[r].mul_(a).sub_(t)
    return dy, d_gamma, d_beta


def _batch_stats(bn: nn.BatchNorm1d, x: torch.Tensor, weight: torch.Tensor | None):
    """(p, mean, inv) for normalising x with ``bn``: in training the statistics of x, an edge of
    weight w counting as w edges (so a tied candidate shared by t weighs 1/t, as in the message
    sum), and the running statistics follow them; in evaluation the running statistics."""
    if not bn.training:
        return None, bn.running_mean, torch.rsqrt(bn.running_var + bn.eps)
    p = weight / weight.sum() if weight is not None else None
    with torch.no_grad():
        mean, var = _edge_stats(x, p)
        if bn.track_running_stats:
            bn.num_batches_tracked += 1
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            n = float(weight.sum()) if weight is not None else float(x.shape[0])
            bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(var, alpha=m * n / max(n - 1, 1.0))
    return p, mean, torch.rsqrt(var + bn.eps)


class _NormGate(torch.autograd.Function):
    """messages = sigmoid(filter) ⊙ softplus(core) · w, where filter ⊕ core = bn1(gated), for
    the edges (E × 2F → E × F) of a gated convolution, in training.

    BatchNorm and gate in one function, a chunk of rows at a time: bn1's (E, 2F) output is
    never stored, the backward allocates one (E, 2F) tensor, and every sum over edges (the
    batch statistics too) counts an edge with its weight w. The forward keeps sigmoid(filter),
    softplus(core) and sigmoid(core), so the backward needs no transcendental function.
    """

    @staticmethod
    def forward(ctx, gated, p, mean, inv, gamma, beta, weight, batch_stats: bool):
        e, f = gated.shape[0], gated.shape[1] // 2
        scale = inv * gamma
        offset = beta - mean * scale
        sig, soft, sig_core = (gated.new_empty(e, f) for _ in range(3))
        out = gated.new_empty(e, f)
        for r in _rows(e):
            y = torch.addcmul(offset, gated[r], scale)
            torch.sigmoid(y[:, :f], out=sig[r])
            soft[r] = nn.functional.softplus(y[:, f:])
            torch.sigmoid(y[:, f:], out=sig_core[r])
            torch.mul(sig[r], soft[r], out=out[r])
        if weight is not None:
            out.mul_(weight.unsqueeze(1))
        ctx.batch_stats = batch_stats
        ctx.save_for_backward(gated, p, mean, inv, gamma, sig, soft, sig_core, weight)
        return out

    @staticmethod
    def backward(ctx, grad):
        gated, p, mean, inv, gamma, sig, soft, sig_core, weight = ctx.saved_tensors
        e, f = sig.shape
        dy = grad.new_empty(e, 2 * f)
        sums = grad.new_zeros(2 * f), grad.new_zeros(2 * f)
        for r in _rows(e):
            g_sig = grad[r] * sig[r]
            if weight is not None:
                g_sig.mul_(weight[r].unsqueeze(1))
            # d/d core = grad · sig · sigmoid(core);  d/d filter = grad · softplus(core) · sig · (1 - sig)
            torch.mul(g_sig, sig_core[r], out=dy[r, f:])
            g_sig.mul_(soft[r])
            torch.addcmul(g_sig, g_sig, sig[r], value=-1, out=dy[r, :f])
            _add_sums(sums, dy[r], gated[r], mean)  # while the rows are in cache
        dx, d_gamma, d_beta = _norm_backward(dy, gated, p, mean, inv, gamma, ctx.batch_stats, sums)
        return dx, None, None, None, d_gamma, d_beta, None, None


class _EdgeNorm(torch.autograd.Function):
    """bn(x) over edges (E, C) in training, with the batch statistics of x that
    :func:`_batch_stats` gives (edge weights counted), for the attention convolution: the same
    numbers and gradient as BatchNorm when every weight is 1."""

    @staticmethod
    def forward(ctx, x, p, mean, inv, gamma, beta):
        ctx.save_for_backward(x, p, mean, inv, gamma)
        scale = inv * gamma
        return torch.addcmul(beta - mean * scale, x, scale)

    @staticmethod
    def backward(ctx, grad):
        x, p, mean, inv, gamma = ctx.saved_tensors
        dx, d_gamma, d_beta = _norm_backward(grad.clone(), x, p, mean, inv, gamma, batch_stats=True)
        return dx, None, None, None, d_gamma, d_beta


def _norm_edges(bn: nn.BatchNorm1d, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``bn(x)`` over edges, the batch statistics counting an edge of weight w as w edges."""
    if weight is None or not bn.training:  # evaluation: running statistics, the weights play no part
        return bn(x)
    return _EdgeNorm.apply(x, *_batch_stats(bn, x, weight), bn.weight, bn.bias)


class GatedConv(nn.Module):
    """One CGCNN convolution (edges j → i carry messages into i).

    The linear layer on z = v_i ⊕ v_j ⊕ u_ij is applied as v_i W_i + v_j W_j + u_ij W_u:
    atoms are projected once and combined per edge, which gives the same numbers as the
    concatenation with far less memory traffic. The weight is kept as one ``fc_full`` so
    the original checkpoints load as they are.
    """

    def __init__(self, atom_fea_len: int, nbr_fea_len: int):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, g: CrystalGraph, atom_fea: torch.Tensor, bond_fea: torch.Tensor) -> torch.Tensor:
        f = self.atom_fea_len
        w = self.fc_full.weight
        centre = torch.addmm(self.fc_full.bias, atom_fea, w[:, :f].t())  # bias once per atom
        neighbour = atom_fea @ w[:, f : 2 * f].t()
        gated = add_centre(g, neighbour.index_select(0, g.src), centre)
        gated.addmm_(bond_fea, w[:, 2 * f :].t())  # in place: no E × 2F copy
        if torch.is_grad_enabled():
            bn = self.bn1
            messages = _NormGate.apply(gated, *_batch_stats(bn, gated, g.edge_weight), bn.weight, bn.bias,
                                       g.edge_weight, bn.training)
        else:  # the same numbers without the autograd function (traceable for export)
            gated = _norm_edges(self.bn1, gated, g.edge_weight)
            messages = torch.sigmoid(gated[:, :f]) * nn.functional.softplus(gated[:, f:])
            if g.edge_weight is not None:
                messages.mul_(g.edge_weight.unsqueeze(1))
        summed = self.bn2(sum_into_atoms(g, messages, weighted=False))  # weighted above, in place
        return nn.functional.softplus(atom_fea + summed)


class AttentionConv(nn.Module):
    """The attention convolution of Deng, Park & Sy (Section 4.2):
    v_i ← softplus(v_i + BN(FC(⊕_h Σ_jk c^h_jk ⊙ softplus(z W^h_s + b^h_s)))), with
    c^h_jk = softmax over the neighbours of i of ⟨v^h_i, v^h_j⟩ · ⟨u_ijk, u_ijk⟩ / √d_h.

    ``heads`` parallel attention networks each see a slice v^h of the atom vector and produce
    a slice of the message; a fully connected layer combines them. The 1/√d_h scaling (not in
    the paper's formula) keeps the softmax from saturating. Weights: about 70 % of a gated
    convolution's (no filter half of ``fc_full``).
    """

    def __init__(self, atom_fea_len: int, nbr_fea_len: int, heads: int = 4):
        super().__init__()
        self.atom_fea_len, self.heads = atom_fea_len, heads
        self.fc_core = nn.Linear(2 * atom_fea_len + nbr_fea_len, atom_fea_len)
        self.fc_heads = nn.Linear(atom_fea_len, atom_fea_len)
        self.bn1 = nn.BatchNorm1d(atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, g: CrystalGraph, atom_fea: torch.Tensor, bond_fea: torch.Tensor) -> torch.Tensor:
        f, h = self.atom_fea_len, self.heads
        w = self.fc_core.weight
        centre = atom_fea @ w[:, :f].t()
        neighbour = atom_fea @ w[:, f : 2 * f].t()
        core = torch.addmm(self.fc_core.bias, bond_fea, w[:, 2 * f :].t())
        core = core.add_(add_centre(g, neighbour.index_select(0, g.src), centre))
        core = nn.functional.softplus(_norm_edges(self.bn1, core, g.edge_weight)).view(-1, h, f // h)
        v = atom_fea.view(-1, h, f // h)
        score = (v.index_select(0, g.src) * v.index_select(0, g.dst)).sum(-1, keepdim=True)  # (E, h, 1)
        norm = (bond_fea * bond_fea).sum(1).view(-1, 1, 1)
        attn = softmax_over_edges(g, score * norm / math.sqrt(f // h))
        summed = self.bn2(self.fc_heads(sum_into_atoms(g, (attn * core).reshape(-1, f), weighted=False)))
        return nn.functional.softplus(atom_fea + summed)


class Backbone(Protocol):
    """What crystalzoo needs of a backbone architecture (graph → crystal vector): register a
    class that has these with :func:`register_architecture` and ``load_model``,
    ``load_backbone(freeze=k)``, ``finetune``, the frozen-prefix cache, ``save_pretrained`` and
    the Hub all work with it. ``architecture`` (its registered name) is set by the decorator.

    ``stages()`` lists the freezable stages in order: an embedding, then the convolutions;
    ``freeze(backbone, k)`` freezes the first ``k + 1``. ``atom_features(g, upto, h, start)``
    runs the convolutions ``start … upto-1`` (``h``: the atom vectors after the embedding and
    ``start`` convolutions). ``later_modules()`` are those after the stages (re-initialised
    with ``reinit``). ``to_config()`` gives the JSON dict that ``from_config(config,
    graph_settings)`` builds the same architecture from; ``from_config`` checks it
    (:class:`~crystalzoo.errors.ConfigError`) before it allocates anything.
    """

    architecture: str
    graph_settings: GraphSettings
    frozen: int | None

    @property
    def out_features(self) -> int: ...

    def stages(self) -> list[nn.Module]: ...

    def later_modules(self) -> list[nn.Module]: ...

    def atom_features(self, g: CrystalGraph, upto: int | None = None, h: torch.Tensor | None = None,
                      start: int = 0) -> torch.Tensor: ...

    def readout(self, g: CrystalGraph, atom_fea: torch.Tensor) -> torch.Tensor: ...

    def to_config(self) -> dict[str, Any]: ...

    @classmethod
    def from_config(cls, config: dict[str, Any], graph_settings: GraphSettings) -> "Backbone": ...


#: registered backbone architectures: the name in a config.json's ``architecture`` → class
ARCHITECTURES: dict[str, type] = {}


def register_architecture(name: str):
    """Class decorator: register a :class:`Backbone` architecture under ``name`` (the
    ``architecture`` of its config.json).

    Example::

        >>> sorted(ARCHITECTURES)[0]
        'cgcnn'
    """
    def add(cls: type) -> type:
        if ARCHITECTURES.get(name, cls) is not cls:
            raise ConfigError(f"architecture {name!r} is registered already (by {ARCHITECTURES[name].__qualname__})")
        cls.architecture = name
        ARCHITECTURES[name] = cls
        return cls

    return add


@register_architecture("cgcnn")
class CGCNNBackbone(nn.Module):
    """Graph → crystal feature vector (``config.h_fea_len`` values).

    Takes a :class:`~crystalzoo.crystal_graph.CrystalGraph` (or a ``dgl.DGLGraph`` made by
    crystalzoo, with the same result). ``frozen_layers`` counts how many of [embedding,
    conv 1, …, conv n] are frozen; see :func:`freeze`.
    """

    def __init__(self, config: BackboneConfig = BackboneConfig(), graph_settings: GraphSettings = DEFAULT_SETTINGS):
        super().__init__()
        if graph_settings.n_bond_features != config.nbr_fea_len:
            raise GraphSettingsMismatchError(
                f"graph settings give {graph_settings.n_bond_features} bond features, the "
                f"backbone takes {config.nbr_fea_len}"
            )
        self.config = config
        self.graph_settings = graph_settings
        self.embedding = nn.Linear(config.orig_atom_fea_len, config.atom_fea_len)
        self.convs = nn.ModuleList(
            [GatedConv(config.atom_fea_len, config.nbr_fea_len) if config.conv == "gated"
             else AttentionConv(config.atom_fea_len, config.nbr_fea_len, config.heads)
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
        g = as_crystal_graph(g)
        self._check_graph(g)
        if g.atom_fea.dtype != self.embedding.weight.dtype:  # a model in float64 (model.double()) or half precision
            g = g.to_float(self.embedding.weight.dtype)
        if h is None:
            if start != 0:
                raise ValueError("start > 0 needs the atom vectors h after the first `start` convolutions")
            h = self.embedding(g.atom_fea)
        for conv in self.convs[start:upto]:
            h = conv(g, h, g.bond_fea)
        return h

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
        from .embeddings import embed

        return embed(self, structures, **options)

    def _check_graph(self, g: CrystalGraph) -> None:
        # graphs made by collate know their settings (checked eagerly: torch.compile cannot trace the comparison)
        if g.settings is not None and g.settings is not self.graph_settings and not _compiling():
            self.graph_settings.check_same(g.settings, "this model")
        a, b = g.atom_fea.shape[1], g.bond_fea.shape[1]
        if (a, b) != (self.config.orig_atom_fea_len, self.config.nbr_fea_len):
            raise GraphSettingsMismatchError(
                f"graph has {a} atom and {b} bond features, the backbone expects "
                f"{self.config.orig_atom_fea_len} and {self.config.nbr_fea_len}: build graphs "
                "with the model's graph_settings"
            )

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
    def from_config(cls, config: dict[str, Any], graph_settings: GraphSettings) -> "CGCNNBackbone":
        """A CGCNN backbone of the sizes in ``config`` (a :class:`BackboneConfig` dict), checked first."""
        shape = BackboneConfig.from_dict(config)
        if shape.orig_atom_fea_len != graph_settings.n_atom_features:
            raise ConfigError(f"orig_atom_fea_len {shape.orig_atom_fea_len} differs from the "
                              f"{graph_settings.n_atom_features} atom features of {graph_settings.atom_features!r}")
        return cls(shape, graph_settings)


def frozen_modules(backbone: Backbone) -> list[nn.Module]:
    """The stages :func:`freeze` froze (none when ``backbone.frozen`` is None)."""
    return [] if backbone.frozen is None else backbone.stages()[: backbone.frozen + 1]


def hold_frozen(backbone: Backbone) -> None:
    """Put the frozen stages of ``backbone`` back in eval mode (BatchNorm statistics fixed):
    after anything that may have called ``train()`` on them, for any architecture."""
    for module in frozen_modules(backbone):
        module.eval()


class RegressionHead(nn.Module):
    """Linear layer to one value per target, de-normalised into the target's units."""

    def __init__(self, in_features: int, targets: Sequence[str], units: Sequence[str] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 composition_reference: int = 0):
        super().__init__()
        self.targets = _names(targets, "targets")
        self.units = _names(units, "units") if units is not None else [""] * len(self.targets)
        if len(self.units) != len(self.targets):
            raise ConfigError(f"{len(self.targets)} targets but {len(self.units)} units: give one unit per target")
        n = len(self.targets)
        self.fc_out = nn.Linear(in_features, n)
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0] * n, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0] * n, dtype=torch.float32))
        #: a linear term of the crystal's mean element features (its composition), added to the
        #: output: per-element reference values (fitted by least squares on the training split)
        self.reference = nn.Linear(composition_reference, n, bias=False) if composition_reference else None
        if self.reference is not None:
            nn.init.zeros_(self.reference.weight)

    task = "regression"

    def forward(self, x: torch.Tensor, composition: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised outputs (what the loss sees); :meth:`denormalize` turns them into units.
        ``composition``: the crystals' mean element features, for a head with a composition
        reference (:meth:`CrystalModel.forward` gives them)."""
        out = self.fc_out(x)
        if self.reference is not None:
            if composition is None:
                raise CrystalZooError("this head has a composition reference and needs the crystals' mean element "
                                      "features: call the model on the graph (model(g)), which gives them")
            out = out + self.reference(composition)
        return out

    def denormalize(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.std + self.mean

    def normalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean) / self.std

    def to_units(self, out: torch.Tensor) -> torch.Tensor:
        """Outputs → predictions in the targets' units."""
        return self.denormalize(out)

    def loss(self, out: torch.Tensor, y: torch.Tensor, kind: str = "mse") -> torch.Tensor:
        """Mean squared (``kind="mse"``) or absolute (``"l1"``) error on the normalised targets,
        over every label of the batch; missing labels (NaN) are left out."""
        check_loss(kind)
        mask = ~torch.isnan(y)
        diff = out - self.normalize(torch.nan_to_num(y))
        return ((diff ** 2 if kind == "mse" else diff.abs()) * mask).sum() / mask.sum().clamp(min=1)

    def errors(self, pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Per crystal and target: |prediction − label| (NaN where the label is missing)."""
        return (pred - y).abs().cpu().numpy()

    def scores(self, errors: np.ndarray) -> dict[str, float]:
        """``mae_TARGET`` for each target (NaN where no label) and ``mae``, their mean over the scored ones."""
        result = {}
        for j, t in enumerate(self.targets):
            col = errors[:, j][~np.isnan(errors[:, j])]
            result[f"mae_{t}"] = float(col.mean()) if len(col) else float("nan")
        scored = [result[f"mae_{t}"] for t in self.targets if not math.isnan(result[f"mae_{t}"])]
        result["mae"] = float(np.mean(scored)) if scored else float("nan")
        return result

    def check_labels(self, labels: np.ndarray, ids: Sequence[str], what: str) -> None:
        """Any finite number (or NaN, a missing label) is a regression label: nothing to check."""

    def columns(self) -> list[str]:
        """The names of the prediction columns, with units."""
        return [f"{t} ({u})" if u else t for t, u in zip(self.targets, self.units)]

    def as_returned(self, pred: np.ndarray) -> np.ndarray:
        """What ``predict`` returns: shape (n,) for one target, (n, n_targets) for several."""
        return pred[:, 0] if pred.shape[1] == 1 else pred

    def combine(self, outs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The raw output of an ensemble's mean prediction: the mean (the normaliser is affine)."""
        return torch.stack(list(outs)).mean(0)

    def config(self) -> dict[str, Any]:
        return {"task": "regression", "targets": self.targets, "units": self.units,
                **({"composition_reference": self.reference.in_features} if self.reference is not None else {})}


class ClassificationHead(nn.Module):
    """Dropout then a linear layer to class logits (the original CGCNN classifier)."""

    task = "classification"

    def __init__(self, in_features: int, classes: Sequence[str], target: str = "class", dropout: float = 0.5):
        super().__init__()
        self.classes = _names(classes, "classes", minimum=2)
        self.targets = _names([target], "targets")
        self.dropout_p = dropout
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(in_features, len(self.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.dropout(x))

    def to_units(self, out: torch.Tensor) -> torch.Tensor:
        """Logits → class probabilities."""
        return torch.softmax(out, dim=1)

    def loss(self, out: torch.Tensor, y: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """Cross-entropy of the class labels (column 0 of ``y``). ``kind`` is a regression's
        setting, which a classifier does not have (training refuses ``loss="l1"`` for one)."""
        return nn.functional.cross_entropy(out, y[:, 0].long())

    def errors(self, pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Per crystal: 1 where the most probable class is the label, else 0."""
        return (pred.argmax(1) == y[:, 0].long()).float().cpu().numpy()[:, None]

    def scores(self, errors: np.ndarray) -> dict[str, float]:
        return {"accuracy": float(errors.mean())}

    def check_labels(self, labels: np.ndarray, ids: Sequence[str], what: str) -> None:
        """Every label must be one of the classes 0 … C-1 (:class:`DataError` naming the crystal)."""
        y = labels[:, 0]
        n = len(self.classes)
        for i in np.flatnonzero(np.isnan(y) | (y != np.round(y)) | (y < 0) | (y >= n))[:1]:
            crystal, v = ids[i], float(y[i])
            if np.isnan(v):
                raise DataError(f"crystal {crystal!r} of {what} has no class label; a classifier needs one for every "
                                "crystal")
            if v != round(v) or v < 0:
                raise DataError(f"label {v:g} of crystal {crystal!r} in {what} is not a class: classification labels "
                                "are the integers 0 … C-1")
            raise DataError(f"class {int(v)} (crystal {crystal!r}) is in {what} but not in the training split, whose "
                            f"classes are 0 … {n - 1}: the model cannot predict it. Use more data or another seed, "
                            "so that every class is in the training split")

    def columns(self) -> list[str]:
        """The names of the prediction columns: the class probabilities."""
        return list(self.classes)

    def as_returned(self, pred: np.ndarray) -> np.ndarray:
        """What ``predict`` returns: the class probabilities, shape (n, n_classes)."""
        return pred

    def combine(self, outs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The logits of an ensemble's mean class probabilities."""
        return torch.stack([torch.softmax(o, dim=1) for o in outs]).mean(0).log()

    def config(self) -> dict[str, Any]:
        return {"task": "classification", "targets": self.targets, "classes": self.classes,
                "dropout": self.dropout_p}


def _names(value: Any, what: str, minimum: int = 1) -> list[str]:
    """A list of ``minimum`` to ``MAX_OUTPUTS`` strings (targets, units, classes; a tuple is
    taken as a list), else :class:`ConfigError`."""
    value = list(value) if isinstance(value, tuple) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) \
            or not minimum <= len(value) <= MAX_OUTPUTS:
        raise ConfigError(f"head {what} must be a list of {minimum} to {MAX_OUTPUTS} strings, got {str(value)[:80]}")
    for v in value:  # names go into tables, file headers and the model card's YAML: one printable line each
        if any(not ch.isprintable() for ch in v):
            raise ConfigError(f"head {what} {v!r} holds a line break or another control character; give a name on "
                              "one line (e.g. 'band_gap')")
    return value


def make_head(config: dict[str, Any], in_features: int) -> nn.Module:
    """A head from its config dict (``{"task": "regression", "targets": [...], "units": [...]}``),
    checked (types, at most ``MAX_OUTPUTS`` outputs) before it is built."""
    if not isinstance(config, dict):
        raise ConfigError(f"head config must be a JSON object, got {type(config).__name__}")
    task = config.get("task")
    if task == "regression":
        reference = config.get("composition_reference") or 0  # absent or null: none
        check_count(reference, "head composition_reference (atom features)", 0, MAX_FEATURES)
        return RegressionHead(in_features, config.get("targets"), config.get("units"),
                              composition_reference=reference)
    if task == "classification":
        target = _names(config.get("targets", ["class"]), "targets")
        dropout = config.get("dropout", 0.5)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ConfigError(f"head dropout must be a number in [0, 1), got {dropout!r}")
        return ClassificationHead(in_features, config.get("classes"), target[0], dropout)
    raise ConfigError(f"unknown head task {task!r}; valid: 'regression', 'classification'")


def _member_mean(out: np.ndarray) -> np.ndarray:
    """The mean over the members (axis 0) of their predictions; a single model's as they are."""
    return out.mean(0) if len(out) > 1 else out[0]


class Predictor(nn.Module):
    """What a single model (:class:`CrystalModel`) and an ensemble
    (:class:`crystalzoo.ensembles.CrystalEnsemble`) share: predictions in the target's units,
    the spread over an ensemble's members, and calibrated intervals
    (:mod:`crystalzoo.uncertainty`). A subclass gives ``member_models()``, ``graph_settings``
    and ``head``."""

    calibration: Calibration | None = None
    head: nn.Module

    def member_models(self) -> list["CrystalModel"]:
        raise NotImplementedError

    @classmethod
    def _from_config(cls):
        """The function that builds this class from a config (``from_pretrained``)."""
        raise NotImplementedError

    @property
    def graph_settings(self) -> GraphSettings:
        raise NotImplementedError

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
        return_std = self._check_std(return_std)
        out = self._predict_batches(self._batches(structures, batch_size, n_jobs, progress))
        mean = self.head.as_returned(_member_mean(out))
        return (mean, self.head.as_returned(out.std(0))) if return_std else mean

    def _check_std(self, return_std: Any, option: str = "return_std") -> bool:
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

    def _check_interval(self, coverage: Any) -> float:
        """``coverage`` checked, and this model able to give intervals for it (before any work)."""
        if self.task != "regression":
            raise ConfigError("prediction intervals are for regression models; a classifier's predict gives class "
                              "probabilities")
        coverage = check_coverage(coverage)
        if self.calibration is None:
            raise ConfigError("this model has no calibration (models fine-tuned by crystalzoo are calibrated on "
                              "their validation split; registered and older models are not): calibrate it on "
                              "labelled crystals it was not trained on, model.calibrate(dataset)")
        self.calibration.quantile(coverage)  # too few calibration crystals for it: refused here
        return coverage

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
        coverage = self._check_interval(coverage)
        out = self._predict_batches(self._batches(structures, batch_size, n_jobs, progress))
        lower, upper = self._bounds(out, coverage)
        return self.head.as_returned(lower), self.head.as_returned(upper)

    @torch.no_grad()
    def predict_frame(self, structures: Sequence[Any], ids: Sequence[Any] | None = None, *, return_std: bool = False,
                      coverage: float | None = None, batch_size: int | None = None, progress: bool = False,
                      n_jobs: int = 1) -> "pd.DataFrame":
        """Predictions as a pandas DataFrame: a column ``id`` (``ids``; by default a data set's
        ids, a file's path, else the row number), then one column per prediction named with
        its unit (``band_gap (eV)``), with ``return_std`` (ensembles) a ``… std`` column each,
        and with ``coverage`` the interval's ``… 90% lower`` and ``… 90% upper`` columns. The
        predictions are computed once for all of them.

        Example::

            >>> from crystalzoo import example_structures, load_model
            >>> load_model("formation").predict_frame(example_structures()[:1]).columns.tolist()
            ['id', 'formation_energy_per_atom (eV/atom)']
        """
        import pandas as pd

        return_std = self._check_std(return_std)
        if coverage is not None:
            coverage = self._check_interval(coverage)
        if isinstance(ids, (str, bytes)):
            raise ConfigError(f"ids = {ids!r}: one id per crystal, a list (a string would be one id per character)")
        if hasattr(structures, "graphs") and hasattr(structures, "ids"):  # a CrystalDataset
            default_ids = list(structures.ids)
        else:
            structures = crystal_list(structures)
            default_ids = [str(s) if isinstance(s, (str, os.PathLike)) and structure_path(s) is not None else i
                           for i, s in enumerate(structures)]
        out = self._predict_batches(self._batches(structures, batch_size, n_jobs, progress))
        n = out.shape[1]
        ids = default_ids if ids is None else list(ids)
        if len(ids) != n:
            raise ConfigError(f"predict_frame got {len(ids)} ids for {n} crystals: give one id per crystal")
        # a target named like the table's own columns (id, source, file) is prefixed: no column is overwritten
        names = [f"predicted {n}" if n in FRAME_COLUMNS else n for n in self.head.columns()]
        frame = pd.DataFrame({"id": ids})
        mean = _member_mean(out)
        for j, name in enumerate(names):
            frame[name] = mean[:, j]
        if return_std:
            std = out.std(0)
            for j, name in enumerate(names):
                frame[f"{name} std"] = std[:, j]
        if coverage is not None:
            lower, upper = self._bounds(out, coverage)
            tag = f"{100 * coverage:g}%"
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
        from .data import CrystalDataset

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
        folder), as :func:`crystalzoo.load_model` loads it (the same ``options``); the
        transformers / timm spelling. ``CrystalModel.from_pretrained`` refuses an ensemble's
        folder, ``CrystalEnsemble.from_pretrained`` a single model's.

        Example::

            >>> from crystalzoo import CrystalModel
            >>> CrystalModel.from_pretrained("formation").targets
            ['formation_energy_per_atom']
        """
        return load_with(cls._from_config(), name, **options)  # the other kind of config is refused there

    def save_pretrained(self, folder: str | os.PathLike, **options: Any) -> Path:
        """Write this model into ``folder`` (``model.safetensors`` + ``config.json``):
        :func:`crystalzoo.save_pretrained` (the same ``options``)."""
        from .serialization import save_pretrained

        return save_pretrained(self, folder, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload this model to the Hub repo ``repo_id`` and return the commit id:
        :func:`crystalzoo.push_to_hub` (the same ``options``)."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **options)

    def predict_arrays(self, arrays: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Predictions for graphs in crystalzoo's compact form (:class:`~crystalzoo.graphs.GraphArrays`,
        as cached by ``CrystalDataset``)."""
        check_count(batch_size, "batch_size")
        arrays = [arrays] if isinstance(arrays, GraphArrays) else list(arrays)
        out = self._predict_batches(collate(arrays[i : i + batch_size], self.graph_settings)
                                    for i in range(0, len(arrays), batch_size))
        return self.head.as_returned(_member_mean(out))

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
        return torch.cat(outs, 1).numpy() if outs else np.zeros((len(members), 0, len(self.head.columns())),
                                                                 np.float32)


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
    def _from_config(cls):
        return model_from_config

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
              batch_size: int | None = None, n_jobs: int = 1, progress: bool = False) -> np.ndarray | list[np.ndarray]:
        """Crystal vectors (``kind="hidden"``, the head's input; ``"pooled"``) or atom vectors
        (``"atoms"``) of ``structures`` from this model's backbone: :func:`crystalzoo.embeddings.embed`.

        Example::

            >>> from crystalzoo import load_model
            >>> from crystalzoo import example_structures
            >>> load_model("formation").embed(example_structures()[:1], kind="pooled").shape
            (1, 64)
        """
        from .embeddings import embed

        return embed(self, structures, kind=kind, layer=layer, batch_size=batch_size, n_jobs=n_jobs,
                     progress=progress)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model around its state dict."""
        return {
            "format_version": config_format(self.head),
            "architecture": self.backbone.architecture,
            "backbone": self.backbone.to_config(),
            "graph": self.graph_settings.to_dict(),
            "head": self.head.config(),
            **({"meta": self.meta} if self.meta else {}),
            **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {}),
        }


def load_with(constructor, name: str, *, graph_settings: GraphSettings | None = None,
              local_files_only: bool | None = None, device: str = "cpu") -> Predictor:
    """The model ``name`` names (:func:`crystalzoo.registry.resolve`: registered, ``hf-hub:…``
    or a folder), built by ``constructor`` from its config (``model_from_config``, or
    ``crystalzoo.ensembles.from_config`` for either kind), its weights loaded strictly, in
    eval mode on ``device``: what ``load_model`` and ``from_pretrained`` do."""
    check_device(device)
    if graph_settings is not None:
        check_settings(graph_settings, "graph_settings")
    name = str(name) if isinstance(name, str) else name  # a numpy string: its plain value in meta["source"]
    config, state, source = resolve(name, local_files_only)
    model = build_model(config, state, source, constructor=constructor)
    model.meta["source"] = source
    if graph_settings is not None:
        model.graph_settings.check_same(graph_settings, what=source)
    return model.to(device)


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
    name = config.get("architecture", "cgcnn")
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; registered: {sorted(ARCHITECTURES)} (an architecture "
                          "defined outside crystalzoo is registered with register_architecture when its module "
                          "is imported)")
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
    backbone = ARCHITECTURES[name].from_config(config["backbone"], settings)
    head = make_head(config["head"], backbone.out_features)
    return CrystalModel(backbone, head, meta, calibration_in(config, head, ensemble=False))


def calibration_in(config: dict[str, Any], head: nn.Module, ensemble: bool) -> Calibration | None:
    """The calibration a model's ``config`` holds (None: none), checked against its ``head``:
    only a regression's, scaled by the spread exactly when the model is an ensemble."""
    if config.get("calibration") is None:
        return None
    if head.task != "regression":
        raise ConfigError("a classifier's config has a 'calibration': intervals are for regression models")
    calibration = Calibration.from_dict(config["calibration"], head.targets)
    if calibration.scaled and not ensemble:
        raise ConfigError("the calibration scales intervals by an ensemble's spread, but the config describes a "
                          "single model")
    if ensemble and not calibration.scaled:
        raise ConfigError("an ensemble's calibration scales by its spread ('floor' per target); this one has none")
    return calibration


def freeze(backbone: Backbone, k: int, reinit: bool = False) -> Backbone:
    """Freeze the embedding and the first ``k`` convolutions of ``backbone`` (in place): the
    first ``k + 1`` of its ``stages()``, for any registered architecture.

    Frozen layers get no gradients *and* their BatchNorm running statistics stay fixed, also
    after ``model.train()``. With ``reinit=True`` the layers after them (deeper convolutions
    and the hidden layer) are re-initialised, as in the paper's transfer protocol ("we
    freeze shallow layers, reinitialize deeper layers"); by default they keep their
    pretrained values.

    Example::

        >>> b = freeze(CGCNNBackbone(), 2)
        >>> [p.requires_grad for p in b.convs[1].parameters()][0], [p.requires_grad for p in b.convs[2].parameters()][0]
        (False, True)
    """
    if isinstance(backbone, CrystalModel):
        raise ConfigError("freeze takes a backbone: freeze(model.backbone, k) (or load_backbone(name, freeze=k))")
    n = len(backbone.stages()) - 1
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise CrystalZooError(
            f"freeze={k!r} is out of range: this backbone has {n} convolutions, so freeze must "
            f"be an integer from 0 (embedding only) to {n} (embedding and all convolutions)"
        )
    k = int(k)
    for p in backbone.parameters():
        p.requires_grad_(True)
    backbone.frozen = k
    for module in frozen_modules(backbone):
        for p in module.parameters():
            p.requires_grad_(False)
    if reinit:
        for module in [*backbone.stages()[k + 1:], *backbone.later_modules()]:
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):  # Linear weights; BatchNorm weights and statistics
                    sub.reset_parameters()
    backbone.train(backbone.training)
    hold_frozen(backbone)  # also where the architecture's train() does not know of freezing
    return backbone
