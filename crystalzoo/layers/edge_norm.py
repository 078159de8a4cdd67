"""BatchNorm over a graph's edges, each edge counted with its weight, fused with the gate of a gated
convolution (training); the same numbers as ``nn.BatchNorm1d`` when every weight is 1."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn


CHUNK = 4096  # rows per temporary in the edge BatchNorm: buffers small enough to stay in cache


def _rows(n: int) -> Iterator[slice]:
    return (slice(i, i + CHUNK) for i in range(0, n, CHUNK))


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


def batch_stats(bn: nn.BatchNorm1d, x: torch.Tensor, weight: torch.Tensor | None):
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


class NormGate(torch.autograd.Function):
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


class EdgeNorm(torch.autograd.Function):
    """bn(x) over edges (E, C) in training, with the batch statistics of x that
    :func:`batch_stats` gives (edge weights counted), for the attention convolution: the same
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


def norm_edges(bn: nn.BatchNorm1d, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``bn(x)`` over edges, the batch statistics counting an edge of weight w as w edges."""
    if weight is None or not bn.training:  # evaluation: running statistics, the weights play no part
        return bn(x)
    return EdgeNorm.apply(x, *batch_stats(bn, x, weight), bn.weight, bn.bias)
