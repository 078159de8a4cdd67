"""The DGL message-passing CGCNN of crystalzoo 0.1.0 — the reference the torch-native
layers are measured and checked against (``benchmarks/backends.py``, ``tests/graphs/test_dgl_adapter.py``).

The same arithmetic as ``crystalzoo.models`` (projected atoms, fused gate, edge weights in
the sum and the softmax), but per-edge sums and gathers go through DGL's kernels:
``u_add_v``, ``copy_e`` + ``sum``, ``edge_softmax`` and ``mean_nodes``. The BatchNorm over
edges (weighted) and the gate are crystalzoo's own functions, so only the message passing
differs. It uses the parameters of a crystalzoo backbone and runs on a DGL graph
(``CrystalGraph.to_dgl()``). Needs the ``[dgl]`` extra.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dgl_gated_conv(conv, g, atom_fea: torch.Tensor, bond_fea: torch.Tensor) -> torch.Tensor:
    import dgl.function as fn

    from crystalzoo.layers.edge_norm import batch_stats, NormGate

    f = conv.atom_fea_len
    w = conv.fc_full.weight
    with g.local_scope():
        g.ndata["hi"] = torch.addmm(conv.fc_full.bias, atom_fea, w[:, :f].t())
        g.ndata["hj"] = atom_fea @ w[:, f : 2 * f].t()
        g.apply_edges(fn.u_add_v("hj", "hi", "z"))
        gated = g.edata["z"].addmm_(bond_fea, w[:, 2 * f :].t())
        weight = g.edata["edge_weight"] if "edge_weight" in g.edata else None
        bn = conv.bn1  # the same BatchNorm + gate kernel as crystalzoo's: only the message passing differs
        g.edata["m"] = NormGate.apply(gated, *batch_stats(bn, gated, weight), bn.weight, bn.bias, weight, bn.training)
        g.update_all(fn.copy_e("m", "m"), fn.sum("m", "s"))
        summed = conv.bn2(g.ndata["s"])
    return F.softplus(atom_fea + summed)


def dgl_attention_conv(conv, g, atom_fea: torch.Tensor, bond_fea: torch.Tensor) -> torch.Tensor:
    import dgl.function as fn
    from dgl.nn.functional import edge_softmax

    from crystalzoo.layers.edge_norm import norm_edges

    f, h = conv.atom_fea_len, conv.heads
    w = conv.fc_core.weight
    with g.local_scope():
        g.ndata["hi"] = atom_fea @ w[:, :f].t()
        g.ndata["hj"] = atom_fea @ w[:, f : 2 * f].t()
        g.ndata["v"] = atom_fea.view(-1, h, f // h)
        g.apply_edges(fn.u_add_v("hj", "hi", "z"))
        g.apply_edges(fn.u_dot_v("v", "v", "score"))
        core = torch.addmm(conv.fc_core.bias, bond_fea, w[:, 2 * f :].t()).add_(g.edata["z"])
        weight = g.edata["edge_weight"] if "edge_weight" in g.edata else None
        core = F.softplus(norm_edges(conv.bn1, core, weight)).view(-1, h, f // h)
        norm = (bond_fea * bond_fea).sum(1).view(-1, 1, 1)
        score = g.edata["score"] * norm / math.sqrt(f // h)
        if "edge_weight" in g.edata:  # w exp(s) / Σ w exp(s) = softmax(s + log w)
            score = score + torch.log(g.edata["edge_weight"]).view(-1, 1, 1)
        attn = edge_softmax(g, score)
        g.edata["m"] = (attn * core).reshape(-1, f)
        g.update_all(fn.copy_e("m", "m"), fn.sum("m", "s"))
        summed = conv.bn2(conv.fc_heads(g.ndata["s"]))
    return F.softplus(atom_fea + summed)


def dgl_backbone(backbone, g) -> torch.Tensor:
    """The crystal vectors of a batched DGL graph, computed with DGL's message passing."""
    import dgl

    conv_fn = dgl_gated_conv if backbone.config.conv == "gated" else dgl_attention_conv
    h = backbone.embedding(g.ndata["atom_fea"])
    bond = g.edata["bond_fea"]
    for conv in backbone.convs:
        h = conv_fn(conv, g, h, bond)
    with g.local_scope():
        g.ndata["h"] = h
        crys = dgl.mean_nodes(g, "h")
    crys = F.softplus(backbone.conv_to_fc(F.softplus(crys)))
    for fc in backbone.fcs:
        crys = F.softplus(fc(crys))
    return crys
