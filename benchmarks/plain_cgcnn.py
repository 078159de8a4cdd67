"""A plain CGCNN forward pass — the baseline the benchmarks measure crystalzoo against.

Per edge: concatenate v_i ⊕ v_j ⊕ u_ij, one linear layer, then scatter the messages with
``index_add_`` (edge weights applied to the messages; BatchNorm over edges unweighted, as
crystalzoo's for graphs without split shells). It uses the parameters of a crystalzoo
backbone, so both must give the same numbers (``tests/test_performance.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def plain_conv(conv, atom_fea: torch.Tensor, bond_fea: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    z = torch.cat([atom_fea[dst], atom_fea[src], bond_fea], dim=1)
    gated = conv.bn1(conv.fc_full(z))
    nbr_filter, nbr_core = gated.chunk(2, dim=1)
    messages = torch.sigmoid(nbr_filter) * F.softplus(nbr_core)
    if weight is not None:
        messages = messages * weight[:, None]
    summed = torch.zeros_like(atom_fea).index_add_(0, dst, messages)
    return F.softplus(atom_fea + conv.bn2(summed))


def plain_backbone(backbone, g) -> torch.Tensor:
    """The crystal vectors of a batched ``CrystalGraph``, computed the plain way."""
    h = backbone.embedding(g.atom_fea)
    for conv in backbone.convs:
        h = plain_conv(conv, h, g.bond_fea, g.src, g.dst, g.edge_weight)
    counts = g.n_atoms
    pooled = torch.zeros(len(counts), h.shape[1]).index_add_(0, g.crystal, h) / counts[:, None]
    crys = F.softplus(backbone.conv_to_fc(F.softplus(pooled)))
    for fc in backbone.fcs:
        crys = F.softplus(fc(crys))
    return crys
