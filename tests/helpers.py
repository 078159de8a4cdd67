"""Helpers shared by several test modules (not tests themselves)."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from crystalzoo import CrystalModel, RegressionHead, collate


def train_steps(backbone, arrays, steps=4):
    """A few SGD steps of ``backbone`` with a new band-gap head on the graphs ``arrays``; the model."""
    model = CrystalModel(backbone, RegressionHead(backbone.out_features, ["band_gap"], ["eV"]))
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    g = collate(arrays)
    y = torch.linspace(0, 3, len(arrays))[:, None]
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(g), y)
        loss.backward()
        opt.step()
    return model


@contextmanager
def tmpfs(path: Path, size: str = "64k", read_only: bool = False):
    """A real small (or read-only) filesystem at ``path``; skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def onnx_session(path: Path):
    """An onnxruntime session of the exported model at ``path``, on one thread (docs/export.md:
    onnxruntime's threaded ScatterND add loses updates)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
