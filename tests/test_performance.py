"""Performance work must not change results; the benchmark scripts must keep running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crystalzoo import build_arrays, collate, load_backbone

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("train", [False, True])
def test_fused_layer_equals_the_plain_concatenation(train, mp200_structures):
    from benchmarks.plain_cgcnn import plain_backbone

    backbone = load_backbone("formation")
    backbone.train(train)
    arrays = build_arrays(mp200_structures[:64], progress=False)
    if train:  # the plain layer's BatchNorm does not weight edges: compare on crystals without split shells
        arrays = [a for a in arrays if a.weight is None]
    g = collate(arrays)
    grads = []
    for forward in (backbone, lambda g: plain_backbone(backbone, g)):
        backbone.zero_grad()
        out = forward(g)
        out.square().mean().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in backbone.named_parameters()}))
    (ours, ours_grad), (plain, plain_grad) = grads
    torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-5)
    for name, grad in plain_grad.items():  # the backward passes agree too
        torch.testing.assert_close(ours_grad[name], grad, rtol=1e-3, atol=1e-6, msg=name)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_norm_gate_is_batchnorm_then_gate(train, weighted, monkeypatch):
    """The fused BatchNorm + gate of the gated convolution (written out, a chunk of rows at a
    time) against the plain formula: BatchNorm whose batch statistics count an edge of weight
    w as w edges, then sigmoid(filter) · softplus(core) · w; values and gradients
    (gradcheck), in training (batch statistics) and evaluation (running statistics)."""
    from crystalzoo.layers import edge_norm as models

    monkeypatch.setattr(models, "CHUNK", 7)  # several chunks, the last one short
    torch.manual_seed(0)
    e, f = 30, 3
    bn = torch.nn.BatchNorm1d(2 * f).double().train(train)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2)
    weight = torch.rand(e, dtype=torch.double) + 0.2 if weighted else None
    x = (torch.randn(e, 2 * f, dtype=torch.double) * 2 + 1).requires_grad_()

    def fused(x, gamma, beta):
        return models.NormGate.apply(x, *models.batch_stats(bn, x, weight), gamma, beta, weight, train)

    def plain(x, gamma, beta):
        if train:
            p = (weight / weight.sum() if weighted else torch.full((e,), 1 / e, dtype=x.dtype)).unsqueeze(1)
            mean = (p * x).sum(0)
            var = (p * (x - mean) ** 2).sum(0)
        else:
            mean, var = bn.running_mean, bn.running_var
        y = (x - mean) / torch.sqrt(var + bn.eps) * gamma + beta
        out = torch.sigmoid(y[:, :f]) * torch.nn.functional.softplus(y[:, f:])
        return out * weight.unsqueeze(1) if weighted else out

    args = (x, bn.weight, bn.bias)
    torch.testing.assert_close(fused(*args), plain(*args), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fused, args)
    if not weighted and train:  # all weights 1: torch's own BatchNorm
        reference = torch.nn.BatchNorm1d(2 * f).double()
        reference.load_state_dict(bn.state_dict())
        y = reference(x)
        torch.testing.assert_close(fused(*args), torch.sigmoid(y[:, :f]) * torch.nn.functional.softplus(y[:, f:]))


def test_import_is_lazy():
    code = ("import sys, crystalzoo; heavy = [m for m in ('torch', 'dgl', 'pymatgen', 'huggingface_hub') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("script", ["graph_building.py", "training_throughput.py", "inference.py",
                                    "finetune_frozen.py", "scaling.py", "backends.py", "versus.py",
                                    "embedding.py", "uncertainty.py", "gpu.py", "small_data.py", "dcdft_bulk.py"])
@pytest.mark.slow
def test_benchmark_smoke_runs_to_the_end_in_quick_mode(script, tmp_path):
    """A smoke test: each benchmark runs end to end on tiny inputs (its goal is checked by the
    full run, benchmarks/run_all.py, not here: timings in CI mean nothing)."""
    env = {**__import__("os").environ, "CRYSTALZOO_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.rstrip().endswith("(--quick: goal not checked)"), out.stdout[-500:]
