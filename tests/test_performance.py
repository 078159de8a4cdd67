"""Performance work must not change results; the benchmark scripts must keep running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crystalzoo import build_arrays, collate, load_backbone

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.parametrize("train", [False, True])
def test_fused_layer_equals_the_plain_concatenation(train, mp200_structures):
    from plain_cgcnn import plain_backbone

    backbone = load_backbone("formation")
    backbone.train(train)
    g = collate(build_arrays(mp200_structures[:64], progress=False))
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


def test_gate_gradient():
    from crystalzoo.models import _Gate

    x = torch.randn(9, 8, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_Gate.apply, (x,))


def test_import_is_lazy():
    code = ("import sys, crystalzoo; heavy = [m for m in ('torch', 'dgl', 'pymatgen', 'huggingface_hub') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("script", ["graph_building.py", "training_throughput.py", "inference.py",
                                    "finetune_frozen.py", "scaling.py", "backends.py"])
def test_benchmark_quick_runs(script, tmp_path):
    env = {**__import__("os").environ, "CRYSTALZOO_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "×" in out.stdout or "exponent" in out.stdout
