"""Ties at the 12th neighbour are kept symmetrically: predictions do not depend on the order
of the atoms, on supercells or on the origin, on real crystals and on high-symmetry prototypes."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from crystalzoo import CrystalGraph, build_arrays, build_graph, collate, list_backbones, load_model

from ..conftest import DATA


def _variants(s: Structure, seed: int) -> list[Structure]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        perm = rng.permutation(len(s))
        out.append(Structure(s.lattice, [s[i].species for i in perm], s.frac_coords[perm]))
    out.append(s * (2, 1, 1))
    out.append(Structure(s.lattice, s.species, s.frac_coords + rng.random(3)))
    return [s, *out]


@pytest.fixture(scope="module")
def tie_crystals() -> list[Structure]:
    """Materials Project crystals with a split 12th-neighbour shell (scripts/find_ties.py)."""
    with gzip.open(DATA / "tie_crystals.jsonl.gz", "rt") as f:
        return [Structure.from_str(json.loads(line)["cif"], "cif") for line in f]


def test_rock_salt_shares_the_second_shell():
    """NaCl (8-atom cell): 6 neighbours at a/2, then 12 at a/√2 for the 6 places left: weight
    1/2 each, merged per neighbour atom (each of the 3 other atoms of the same element has 4
    images among the 12: one edge of weight 2 each)."""
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (a,) = build_arrays([nacl], progress=False)
    assert a.weight is not None and len(nacl) == 8
    for i in range(8):
        w, d, j = a.weight[a.dst == i], a.distance[a.dst == i], a.src[a.dst == i]
        assert w.sum() == pytest.approx(12)
        assert np.all(w[d < 3.0] == 1) and (d < 3.0).sum() == 6
        assert sorted(w[d > 3.0].tolist()) == [2.0, 2.0, 2.0]
        assert len(set(j[d > 3.0])) == 3 and i not in set(j[d > 3.0])


def test_graphs_without_a_tie_keep_weight_one(mp200_structures):
    arrays = build_arrays(mp200_structures[:50], progress=False)
    plain = [a for a in arrays if a.weight is None]
    assert len(plain) >= 5
    assert all(np.all(np.bincount(a.dst) == 12) for a in plain)


def test_the_tie_crystals_are_ties(tie_crystals):
    arrays = build_arrays(tie_crystals, progress=False)
    for a in arrays:
        assert a.weight is not None and not np.allclose(a.weight, 1)
        sums = np.bincount(a.dst, weights=a.weight)
        np.testing.assert_allclose(sums, 12, rtol=1e-6)


@pytest.mark.parametrize("name", list_backbones())
def test_tie_crystals_predict_the_same_in_any_order_supercell_and_origin(name, tie_crystals):
    model = load_model(name)
    for k, s in enumerate(tie_crystals):
        pred = np.asarray(model.predict(_variants(s, k)))
        spread = pred.max(axis=0) - pred.min(axis=0)
        # float32 rounding: 1e-5, or 1e-5 of the value for outputs above 1 (a distilled student's reach 95)
        assert np.all(spread <= 1e-5 * np.maximum(1, np.abs(pred).max(axis=0))), (name, s.formula, spread)


PROTOTYPES = {
    "rock salt": (Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                            [[0, 0, 0], [0.5, 0.5, 0.5]]), ["Na", "K", "Li"]),
    "perovskite": (Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                             [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]) * (2, 1, 1),
                   ["Sr", "Ba", "Ca"]),
    "Heusler": (Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.95), ["Cu", "Mn", "Al"],
                                          [[0.25, 0.25, 0.25], [0, 0, 0], [0.5, 0.5, 0.5]]), ["Mn", "Fe", "Co"]),
    "spinel": (Structure.from_spacegroup("Fd-3m", Lattice.cubic(8.08), ["Mg", "Al", "O"],
                                         [[0.125, 0.125, 0.125], [0.5, 0.5, 0.5], [0.2624, 0.2624, 0.2624]])
               .get_primitive_structure(), ["Mg", "Zn", "Fe"]),
}


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(sorted(PROTOTYPES)), data=st.data())
def test_substituted_prototypes_are_invariant(name, data):
    """High-symmetry prototypes with some sites of one sublattice substituted: their shells
    split between elements, and the prediction still ignores atom order, supercell and origin."""
    base, choices = PROTOTYPES[name]
    s = base.copy()
    sites = [i for i, site in enumerate(s) if site.specie.symbol == choices[0]]
    chosen = data.draw(st.lists(st.sampled_from(sites), unique=True, max_size=len(sites) - 1), label="substituted")
    element = data.draw(st.sampled_from(choices[1:]), label="by")
    for i in chosen:
        s.replace(i, element)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    model = load_model("formation")
    pred = np.asarray(model.predict(_variants(s, seed)))
    assert pred.max() - pred.min() <= 1e-5, (name, s.formula, pred)


def test_prototypes_do_tie():
    """The property test above is about ties: each prototype has split shells."""
    for name, (s, _) in PROTOTYPES.items():
        (a,) = build_arrays([s], progress=False)
        assert a.weight is not None, name


@pytest.mark.parametrize("name", ["formation", "attention-formation"])
def test_weighted_batchnorm_in_training(name, cif_paths):
    """In training, BatchNorm over edges counts an edge of weight w as w edges: each edge
    twice with weight 1/2 gives the same outputs and running statistics as each edge once."""
    g = build_graph(cif_paths[0])
    assert g.edge_weight is not None  # it has split shells of its own
    twice = torch.arange(g.total_edges).repeat_interleave(2)
    doubled = CrystalGraph(atom_fea=g.atom_fea, bond_fea=g.bond_fea[twice], src=g.src[twice], dst=g.dst[twice],
                           crystal=g.crystal, n_atoms=g.n_atoms, edge_weight=g.edge_weight[twice] / 2)
    once = load_model(name).backbone.train()
    half = load_model(name).backbone.train()
    torch.testing.assert_close(half(doubled), once(g), rtol=1e-4, atol=1e-5)
    for (n, a), (_, b) in zip(once.named_buffers(), half.named_buffers()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=n)


def test_weights_survive_the_cache_and_batching(tie_crystals, tmp_path):
    from crystalzoo.data import CrystalDataset

    first = CrystalDataset.from_structures(tie_crystals[:8], targets=["y"], cache_dir=tmp_path, progress=False)
    again = CrystalDataset.from_structures(tie_crystals[:8], targets=["y"], cache_dir=tmp_path, progress=False)
    for a, b in zip(first.graphs, again.graphs):
        assert np.array_equal(a.weight, b.weight)
    g = collate(first.graphs)
    assert g.edge_weight is not None and g.edge_weight.shape == (g.total_edges,)
    assert torch.equal(g.edge_weight, torch.from_numpy(np.concatenate([a.weight for a in first.graphs])))


def test_frozen_prefix_keeps_the_weights(tie_crystals):
    """Fine-tuning computes a frozen prefix once (atom vectors after k convolutions) and runs
    the rest per batch: on tie crystals the split forward equals the whole one, and both use
    the weights (dropping them changes the result)."""
    import dataclasses

    from crystalzoo import load_backbone

    g = collate(build_arrays(tie_crystals[:16], progress=False))
    backbone = load_backbone("formation", freeze=2).eval()
    with torch.no_grad():
        whole = backbone.atom_features(g)
        split = backbone.atom_features(g, h=backbone.atom_features(g, upto=2), start=2)
        unweighted = backbone.atom_features(dataclasses.replace(g, edge_weight=None))
    torch.testing.assert_close(split, whole, rtol=0, atol=0)
    assert (unweighted - whole).abs().max() > 1e-3
