"""CrystalGraph, collate and the segment operations of the torch-native message passing."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from crystalzoo import CrystalGraph, build_arrays, build_graph, collate, load_model
from crystalzoo.graphs.crystal_graph import mean_per_crystal, softmax_over_edges, sum_into_atoms
from crystalzoo.errors import CrystalZooError, MissingExtraError


@pytest.fixture(scope="module")
def batch(mp200_structures):
    return collate(build_arrays(mp200_structures[:40], progress=False))


def test_to_moves_every_tensor_and_keeps_values(batch):
    moved = batch.to(torch.device("cpu"))
    assert moved is not batch
    for name in ("atom_fea", "bond_fea", "src", "dst", "crystal", "n_atoms", "n_edges", "distance", "z", "extended",
                 "edge_weight"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))
    assert moved.device.type == "cpu"


def test_segment_sum_softmax_and_mean_against_loops(batch):
    import dataclasses

    batch = dataclasses.replace(batch, edge_weight=None)  # the weights: test_edge_weights_count_messages
    torch.manual_seed(0)
    m = torch.randn(batch.total_edges, 3)
    s = sum_into_atoms(batch, m)
    for i in (0, 7, batch.total_atoms - 1):
        torch.testing.assert_close(s[i], m[batch.dst == i].sum(0))
    # softmax over each atom's edges, stable for scores that would overflow exp()
    scores = torch.randn(batch.total_edges, 2, 1) * 50 + 500
    p = softmax_over_edges(batch, scores)
    assert torch.isfinite(p).all()
    for i in (0, 11):
        torch.testing.assert_close(p[batch.dst == i], torch.softmax(scores[batch.dst == i], dim=0))
    torch.testing.assert_close(sum_into_atoms(batch, p), torch.ones(batch.total_atoms, 2, 1))
    h = torch.randn(batch.total_atoms, 4)
    mean = mean_per_crystal(batch, h)
    for c in (0, 39):
        torch.testing.assert_close(mean[c], h[batch.crystal == c].mean(0))


@pytest.mark.parametrize("name", ["formation", "attention-formation"])
def test_edge_weights_count_messages(name, cif_paths):
    """An edge of weight w counts as w edges (eval mode, where BatchNorm uses its running
    statistics): weight 0 is the edge removed, and each edge twice with weights 1/2 is each
    edge once."""
    import dataclasses

    g = build_graph(cif_paths[0])
    w = g.edge_weight if g.edge_weight is not None else torch.ones(g.total_edges)
    model = load_model(name)
    keep = torch.ones(g.total_edges, dtype=torch.bool)
    keep[::5] = False
    removed = CrystalGraph(atom_fea=g.atom_fea, bond_fea=g.bond_fea[keep], src=g.src[keep], dst=g.dst[keep],
                           crystal=g.crystal, n_atoms=g.n_atoms, edge_weight=w[keep])
    twice = torch.arange(g.total_edges).repeat_interleave(2)  # keeps edges grouped by centre atom
    doubled = CrystalGraph(atom_fea=g.atom_fea, bond_fea=g.bond_fea[twice], src=g.src[twice], dst=g.dst[twice],
                           crystal=g.crystal, n_atoms=g.n_atoms, edge_weight=w[twice] / 2)
    with torch.no_grad():
        zero_weight = model(dataclasses.replace(g, edge_weight=keep.float() * w, degree=None))
        torch.testing.assert_close(zero_weight, model(removed), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(zero_weight, model(g), atol=1e-4)  # the weights really act
        torch.testing.assert_close(model(doubled), model(g), rtol=1e-5, atol=1e-6)


def test_a_model_refuses_what_is_not_a_graph():
    with pytest.raises(CrystalZooError, match="takes a CrystalGraph"):
        load_model("formation")(torch.zeros(3, 92))
    with pytest.raises(CrystalZooError, match="at least one crystal"):
        collate([])


@pytest.mark.skipif(importlib.util.find_spec("dgl") is not None, reason="DGL is installed here (the [dgl] environment)")
def test_dgl_backend_without_the_extra_names_it(cif_paths):
    with pytest.raises(MissingExtraError, match=r'pip install "crystalzoo\[dgl\]"'):
        build_graph(cif_paths[0], backend="dgl")
    with pytest.raises(MissingExtraError, match=r"crystalzoo\[dgl\]"):
        build_graph(cif_paths[0]).to_dgl()


def test_core_never_imports_dgl():
    import subprocess
    import sys

    code = ("import sys, crystalzoo, crystalzoo.models, crystalzoo.training, crystalzoo.registry; "
            "crystalzoo.load_model('formation').predict(['tests/data/cifs/1000041.cif']); print('dgl' in sys.modules)")
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
