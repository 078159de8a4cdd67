"""Graph convolutions of the CGCNN family: the gated convolution of Xie & Grossman and the attention
convolution of Deng, Park & Sy."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..graphs.crystal_graph import (
    CrystalGraph,
    add_centre,
    edge_sum,
    per_bond,
    softmax_over_edges,
    sum_into_atoms,
)
from .edge_norm import NormGate, batch_stats, norm_edges


def fused_inference(g: CrystalGraph, bond_fea: torch.Tensor, bn: nn.BatchNorm1d) -> bool:
    """Whether a convolution may sum each edge's terms in one pass (:func:`edge_sum`), with its
    bonds projected once per distinct bond length: no autograd, ``bn`` in evaluation (running
    statistics), the graph's bond features as collate made them, on a CPU or CUDA device, and
    not being traced or compiled (the export keeps the plain operations). Folding ``bn`` into the
    linear map as well was about 10 % faster but moved registered models' predictions by up to
    5e-6."""
    return (not torch.is_grad_enabled() and not bn.training and bond_fea.device.type in ("cpu", "cuda")
            and not _compiling() and not torch.jit.is_tracing() and g.shares_bonds(bond_fea))


def _compiling() -> bool:
    """Whether torch.compile or torch.export is tracing (torch < 2.3 has no such check: its
    export, which crystalzoo's ONNX export needs, is not supported)."""
    check = getattr(torch.compiler, "is_compiling", None)
    return bool(check()) if check is not None else False


class GatedConv(nn.Module):
    """One CGCNN convolution (edges j → i carry messages into i).

    The linear layer on z = v_i ⊕ v_j ⊕ u_ij is applied as v_i W_i + v_j W_j + u_ij W_u:
    atoms are projected once and combined per edge, which gives the same numbers as the
    concatenation with far less work. Bonds are projected once per distinct bond length in
    inference (:func:`fused_inference`: the three terms of each edge summed in one pass by
    :func:`~crystalzoo.graphs.crystal_graph.edge_sum`); in training
    edge by edge, in one ``addmm_`` into the edge sums: faster there than gathering the distinct
    ones and scattering their gradient back (1.2× for forward + backward on 2 cores,
    ``benchmarks/backends.py``). The weight is kept as one ``fc_full`` so the original
    checkpoints load as they are.
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
        if fused_inference(g, bond_fea, self.bn1):  # each edge's three terms in one pass, in the order below
            bonds = bond_fea.index_select(0, g.distinct_bonds) @ w[:, 2 * f :].t()
            gated = edge_sum(g, neighbour, bonds, centre)
        else:
            gated = add_centre(g, neighbour.index_select(0, g.src), centre)
            gated.addmm_(bond_fea, w[:, 2 * f :].t())  # per edge: see the class's docstring
        if torch.is_grad_enabled():
            bn = self.bn1
            messages = NormGate.apply(gated, *batch_stats(bn, gated, g.edge_weight), bn.weight, bn.bias,
                                       g.edge_weight, bn.training)
        else:  # the same numbers without the autograd function (traceable for export), the gate in place
            gated = norm_edges(self.bn1, gated, g.edge_weight)
            messages = torch.sigmoid(gated[:, :f]).mul_(nn.functional.softplus(gated[:, f:]))
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
        core = per_bond(g, lambda b: torch.addmm(self.fc_core.bias, b, w[:, 2 * f :].t()), bond_fea)
        core = core.add_(add_centre(g, neighbour.index_select(0, g.src), centre))
        core = nn.functional.softplus(norm_edges(self.bn1, core, g.edge_weight)).view(-1, h, f // h)
        v = atom_fea.view(-1, h, f // h)
        score = (v.index_select(0, g.src) * v.index_select(0, g.dst)).sum(-1, keepdim=True)  # (E, h, 1)
        norm = per_bond(g, lambda b: (b * b).sum(1), bond_fea).view(-1, 1, 1)
        attn = softmax_over_edges(g, score * norm / math.sqrt(f // h))
        summed = self.bn2(self.fc_heads(sum_into_atoms(g, (attn * core).reshape(-1, f), weighted=False)))
        return nn.functional.softplus(atom_fea + summed)
