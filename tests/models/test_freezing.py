"""freeze=k: frozen parameters and BatchNorm statistics never change; the rest trains."""

from __future__ import annotations

import pytest
import torch

from crystalzoo import build_arrays, load_backbone
from crystalzoo.errors import CrystalZooError

from ..helpers import train_steps


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_frozen_layers_are_bit_identical_after_training(k, mp200_structures):
    arrays = build_arrays(mp200_structures[:32], progress=False)
    backbone = load_backbone("formation", freeze=k)
    before = {n: t.clone() for n, t in backbone.state_dict().items()}
    train_steps(backbone, arrays)
    after = backbone.state_dict()
    frozen = ("embedding.",) + tuple(f"convs.{i}." for i in range(k))
    for name, value in after.items():
        if name.startswith(frozen):
            assert torch.equal(value, before[name]), f"frozen {name} changed"
        elif name.endswith(("weight", "running_mean")):
            assert not torch.equal(value, before[name]), f"trainable {name} did not move"


def test_reinit_resets_deeper_layers_only():
    pretrained = load_backbone("formation")
    fresh = load_backbone("formation", freeze=2, reinit=True)
    a, b = pretrained.state_dict(), fresh.state_dict()
    for name in a:
        same = torch.equal(a[name], b[name])
        if name.startswith(("embedding.", "convs.0.", "convs.1.")):
            assert same, name
        elif name.endswith("weight") and "bn" not in name:
            assert not same, name


def test_unfrozen_backbone_trains_everything():
    b = load_backbone("bulk")
    assert all(p.requires_grad for p in b.parameters())


@pytest.mark.parametrize("k", [-1, 5, 2.5, "2", True])
def test_freeze_out_of_range(k):
    with pytest.raises(CrystalZooError, match="from 0 .* to 4"):
        load_backbone("formation", freeze=k)
