"""The graph builder on real crystals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crystalzoo import GraphSettings, build_arrays, build_graph, build_graphs, collate, load_structure
from crystalzoo.errors import GraphSettingsMismatchError, StructureError

from ..conftest import CIFS


def test_features_and_neighbours_of_a_real_crystal(mp200_structures):
    s = mp200_structures[1]
    g = build_graph(s)
    assert g.total_atoms == len(s) and g.n_crystals == 1
    assert g.atom_fea.shape == (len(s), 92)
    assert g.bond_fea.shape == (g.total_edges, 41)
    # rock salt (2-atom cell): 6 neighbours, then 12 images of one atom sharing the 6 places
    # left: one edge of weight 6
    assert torch.all(g.in_degrees() == 7)
    weights = torch.zeros(g.total_atoms).index_add_(0, g.dst, g.edge_weight)
    torch.testing.assert_close(weights, torch.full((g.total_atoms,), 12.0))
    assert torch.all(g.dst[1:] >= g.dst[:-1])  # edges grouped by centre atom
    for i in range(len(s)):
        d = np.sort([n.nn_distance for n in s.get_neighbors(s[i], 8.0)])
        np.testing.assert_allclose(sorted(g.distance[g.dst == i].tolist()), [*d[:6], d[11]], rtol=1e-5)
        assert sorted(g.edge_weight[g.dst == i].tolist()) == [1.0] * 6 + [6.0]


def test_gaussian_expansion_peaks_at_the_distance():
    g = build_graph(CIFS[0])
    d = g.distance
    fea = g.bond_fea
    centers = torch.arange(41) * 0.2
    expected = torch.exp(-((d[:, None] - centers) ** 2) / 0.04)
    torch.testing.assert_close(fea, expected, rtol=1e-5, atol=1e-6)
    assert torch.all(centers[fea.argmax(1)].sub(d).abs() <= 0.1 + 1e-5)


def test_atom_features_are_the_cgcnn_table():
    import json
    from importlib import resources

    table = json.loads(resources.files("crystalzoo").joinpath("bundled", "atom_init.json").read_text())
    s = load_structure(CIFS[0])
    g = build_graph(s)
    for i, site in enumerate(s):
        assert g.atom_fea[i].tolist() == [float(v) for v in table[str(site.specie.Z)]]


def test_inputs_cif_path_text_and_structure_agree():
    text = CIFS[0].read_text()
    a, b, c = build_graph(CIFS[0]), build_graph(text), build_graph(load_structure(str(CIFS[0])))
    for g in (b, c):
        assert torch.equal(a.distance, g.distance)
        assert torch.equal(a.src, g.src) and torch.equal(a.dst, g.dst)


def test_batch_building_matches_single(mp200_structures, monkeypatch):
    monkeypatch.setattr("crystalzoo.graphs.building.MIN_PARALLEL", 16)  # in worker processes, though only 80 crystals
    graphs = build_graphs(mp200_structures[:80], progress=False, n_jobs=2)
    single = [build_graph(s) for s in mp200_structures[:80]]
    for g, h in zip(graphs, single):
        assert torch.equal(g.distance, h.distance) and torch.equal(g.src, h.src)
    batched = collate(build_arrays(mp200_structures[:80], progress=False, n_jobs=2))
    assert batched.n_crystals == 80 and batched.n_atoms.tolist() == [g.total_atoms for g in single]
    # the batch is the crystals one after the other: atom and edge indices shifted by the atoms before
    offsets = np.concatenate(([0], np.cumsum([g.total_atoms for g in single])[:-1]))
    assert torch.equal(batched.src, torch.cat([g.src + int(o) for g, o in zip(single, offsets)]))
    assert torch.equal(batched.dst, torch.cat([g.dst + int(o) for g, o in zip(single, offsets)]))
    assert torch.equal(batched.bond_fea, torch.cat([g.bond_fea for g in single]))
    assert torch.equal(batched.crystal, torch.repeat_interleave(torch.arange(80), batched.n_atoms))
    assert batched.n_edges.tolist() == [g.total_edges for g in single]


def test_tied_neighbours_are_all_kept_with_equal_weights(mp200_structures, mp200):
    """mp-10036 (Ce3AlC) has neighbours of different elements tied at the 12th place: all of
    them are kept, every atom's weights sum to 12 (the exact rule on every crystal:
    test_neighbours_are_the_nearest_of_a_search_of_the_whole_radius)."""
    s = mp200_structures[[r["mp_id"] for r in mp200].index("mp-10036")]
    (a,) = build_arrays([s], progress=False)
    assert a.weight is not None
    np.testing.assert_allclose(np.bincount(a.dst, weights=a.weight), 12, rtol=1e-6)
    mixed = 0
    for i in range(len(s)):
        nbrs = s.get_neighbors(s[i], 8.0)
        d = np.sort([n.nn_distance for n in nbrs])
        tied = [n for n in nbrs if abs(n.nn_distance - d[11]) <= 1e-4]
        places = 12 - int((d < d[11] - 1e-4).sum())
        if len(tied) > places and len({n.specie for n in tied}) > 1:
            mixed += 1  # a shell split between elements: all its atoms are neighbours in the graph
            assert {n.index for n in tied} <= set(a.src[a.dst == i].tolist())
    assert mixed


def test_sparse_crystal_keeps_its_real_neighbours_without_padding():
    """Elemental Cs (bcc, a = 6.1 Å) in a 2x supercell then pulled apart along c to a slab:
    atoms keep the neighbours they really have, fewer than 12, and no fake edges."""
    cs = Structure(Lattice.cubic(6.14), ["Cs", "Cs"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    slab = Structure(Lattice.orthorhombic(6.14, 6.14, 40.0), ["Cs"], [[0, 0, 0]])
    g = build_graph(slab, GraphSettings(radius=6.2))
    assert g.in_degrees().tolist() == [4]  # the 4 in-plane images at 6.14 Å
    assert not g.extended.any()
    g = build_graph(cs)  # 8 images of the other atom, then 6 own images for 4 places: one edge of weight 4
    assert g.in_degrees().tolist() == [9, 9]
    assert sorted(g.edge_weight[g.dst == 0].tolist()) == [1.0] * 8 + [4.0]


def test_isolated_atom_gets_nearest_neighbours_beyond_radius():
    """An atom with nothing inside the radius is linked to its 12 nearest atoms further out
    (here its own periodic images), flagged as extended, never dropped or padded."""
    s = Structure(Lattice.tetragonal(9.0, 12.0), ["Ar"], [[0, 0, 0]])
    g = build_graph(s)
    # 4 images at 9 Å, 2 at 12, 4 at 9√2; the last 2 places shared by the 8 at 15 Å (one edge of weight 2)
    assert g.distance.tolist() == pytest.approx([9.0] * 4 + [12.0] * 2 + [9 * 2**0.5] * 4 + [15.0], abs=1e-4)
    assert g.edge_weight.tolist() == [1.0] * 10 + [2.0] and float(g.edge_weight.sum()) == 12
    assert g.extended.tolist() == [True]


@pytest.mark.parametrize("name", ["He in a 10 Å cube", "an expanded real crystal"])
def test_isolated_atoms_get_the_same_neighbours_in_any_cell(name):
    """The 12 nearest atoms of an isolated atom are those of the crystal, not of its cell: a
    supercell and the same cell in another basis give the same prediction (the search stopped
    at the shortest lattice vector: He in a 10 Å cube predicted -2.42 in its cell and -0.0004
    eV/atom as a 2×2×2 supercell)."""
    from crystalzoo import load_model

    if name.startswith("He"):
        s = Structure(Lattice.cubic(10.0), ["He"], [[0, 0, 0]])
    else:  # a real crystal (the first sample CIF) stretched until no atom has a neighbour within 8 Å
        s = Structure.from_file(CIFS[0])
        d = s.distance_matrix[~np.eye(len(s), dtype=bool)].min()  # the nearest pair (minimum image)
        s.scale_lattice(s.volume * (8.5 / min(d, *s.lattice.abc)) ** 3)
    cells = [s]
    for matrix in ([2, 2, 2], [2, 1, 1], [[1, 1, 0], [0, 1, 0], [0, 0, 3]], [[1, 0, 0], [1, 1, 0], [1, 1, 1]]):
        t = s.copy()
        t.make_supercell(matrix)
        cells.append(t)
    assert build_graph(s).extended.any()
    pred = load_model("formation").predict(cells)
    np.testing.assert_allclose(pred, pred[0], atol=1e-5)


def test_settings_mismatch_is_an_error():
    with pytest.raises(GraphSettingsMismatchError, match="radius: expected 8.0, got 6.0"):
        GraphSettings().check_same(GraphSettings(radius=6.0))


@pytest.mark.parametrize("bad", ["does/not/exist.cif", "", "just some text\nno cif here"])
def test_bad_inputs_raise_structure_error(bad, tmp_path):
    with pytest.raises(StructureError):
        build_graph(bad)


def test_empty_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.cif"
    empty.write_text("")
    with pytest.raises(StructureError, match="empty.cif: empty file"):
        build_graph(empty)
    truncated = tmp_path / "truncated.cif"
    truncated.write_text(CIFS[0].read_text()[:400])
    with pytest.raises(StructureError, match="truncated.cif"):
        build_graph(truncated)


def test_disordered_and_unknown_elements_are_rejected():
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(StructureError, match="disordered"):
        build_graph(disordered)
    from pymatgen.core.periodic_table import DummySpecies

    dummy = Structure(Lattice.cubic(4.0), [DummySpecies("X")], [[0, 0, 0]])
    with pytest.raises(StructureError, match="no CGCNN atom features"):
        build_graph(dummy)


def test_overlapping_atoms_are_rejected():
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.001, 0, 0]])
    with pytest.raises(StructureError, match="overlapping"):
        build_graph(s)


def test_isolated_atoms_in_a_large_box_get_their_images():
    """Beyond ~17 Å the tie-breaking keys must not overflow: two atoms in a 30 Å box."""
    s = Structure(Lattice.cubic(30.0), ["Ar", "Kr"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    g = build_graph(s)
    assert g.extended.tolist() == [True, True]
    src, dst = g.src, g.dst
    for i in range(2):
        d, w = g.distance[dst == i], g.edge_weight[dst == i]
        # the other atom's 8 images at 25.98 Å, then the 6 own images at 30 Å share 4 places:
        # being images of one atom, they are one edge of weight 4
        assert sorted(d.tolist()) == pytest.approx([30 * 3**0.5 / 2] * 8 + [30.0], abs=1e-3)
        assert (src[dst == i] != i).sum() == 8
        assert w[src[dst == i] != i].tolist() == [1.0] * 8
        assert w[src[dst == i] == i].tolist() == pytest.approx([4.0])


def test_one_isolated_atom_next_to_bonded_ones():
    """Only atom 1 is isolated: its extended search must exclude its own position (an earlier
    version compared the wrong indices and reported the atom as overlapping itself)."""
    s = Structure(Lattice.cubic(30.0), ["O", "Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.05, 0, 0]])
    g = build_graph(s)
    assert g.extended.tolist() == [False, True, False]
    src, dst = g.src, g.dst
    d = g.distance[dst == 1]
    # 8 images of atom 0 at 25.98 Å, then the 4 nearest images of atom 2 at 25.14 Å
    assert sorted(d.tolist()) == pytest.approx([25.1446] * 4 + [30 * 3**0.5 / 2] * 8, abs=1e-3)
    assert set(src[dst == 1].tolist()) == {0, 2}
    assert g.distance[dst != 1].tolist() == pytest.approx([1.5, 1.5])


def test_neighbours_are_the_nearest_of_a_search_of_the_whole_radius(mp200_structures):
    """The builder searches a small sphere first and the whole radius only where it must. For
    every atom of 200 real crystals and a few sparse cells, its edges are the 12 nearest of
    pymatgen's search of the whole 8 Å and every candidate tied with the 12th, with the weights
    of the tie rule (images of one atom merged into one edge: compared per neighbour atom)."""
    sparse = [Structure(Lattice.orthorhombic(6.14, 6.14, 40.0), ["Cs"], [[0, 0, 0]]),
              Structure(Lattice.cubic(14.0), ["O", "H", "H"], [[0, 0, 0], [0.07, 0, 0], [0, 0.07, 0]]),
              Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]) * (1, 1, 4)]
    structures = list(mp200_structures) + sparse
    for s, got in zip(structures, build_arrays(structures, progress=False)):
        centres, points, _, dist = s.get_neighbor_list(8.0)
        want: dict = {}
        for i in range(len(s)):
            mine = np.flatnonzero(centres == i)
            d = dist[mine]
            kth = np.sort(d)[11] if len(mine) >= 12 else np.inf
            certain, tied = d < kth - 1e-4, np.abs(d - kth) <= 1e-4
            share = (12 - certain.sum()) / max(1, tied.sum())
            for e, w in zip(mine[certain | tied], np.where(certain, 1.0, share)[certain | tied]):
                key = (i, int(points[e]))
                total, moment = want.get(key, (0.0, 0.0))
                want[key] = (total + w, moment + w * dist[e])
        weight = got.weight if got.weight is not None else np.ones(len(got.src))
        have: dict = {}
        for i, j, d, w in zip(got.dst, got.src, got.distance, weight):
            total, moment = have.get((int(i), int(j)), (0.0, 0.0))
            have[(int(i), int(j))] = (total + w, moment + w * d)
        assert sorted(have) == sorted(want), s.formula
        for key, (total, moment) in want.items():
            assert have[key][0] == pytest.approx(total, rel=1e-6), (s.formula, key)
            assert have[key][1] / have[key][0] == pytest.approx(moment / total, rel=1e-5), (s.formula, key)


def test_workers_keep_the_order_and_stay_few_batches_ahead(mp200_structures, monkeypatch):
    """iter_batches with n_jobs=2 gives the batches of CIF texts in order, read by one worker
    while the caller's torch runs on the other core, with at most two per worker in flight (the pool was handed every chunk at once: memory grew with the input), and
    stopping early submits no more; structures in memory are built in the calling process."""
    from concurrent.futures import ProcessPoolExecutor

    import crystalzoo.graphs.building as building
    from crystalzoo.graphs import iter_batches

    monkeypatch.setattr(building, "MIN_PARALLEL", 16)
    submitted = []
    real = ProcessPoolExecutor.submit

    def counted(self, fn, *args, **kwargs):
        submitted.append(args[2])  # the chunk's first crystal
        return real(self, fn, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", counted)
    structures = [s.to(fmt="cif") for s in mp200_structures[:160]]  # CIF texts, which the workers read
    serial = [g.distance for g in iter_batches(structures, batch_size=16)]
    assert submitted == []  # one process
    in_memory = [g.distance for g in iter_batches(mp200_structures[:160], batch_size=16, n_jobs=2)]
    assert submitted == [] and all(torch.equal(a, b) for a, b in zip(in_memory, serial))  # nothing to read: here
    threads = torch.get_num_threads()
    batches = iter_batches(structures, batch_size=16, n_jobs=2)  # one worker, the model on the other core
    assert torch.equal(next(batches).distance, serial[0])
    assert len(submitted) == 3  # of 10 chunks: 2 ahead for the one worker, and the one given
    assert torch.get_num_threads() == 1  # while the worker builds
    batches.close()
    assert len(submitted) == 3 and torch.get_num_threads() == threads
    submitted.clear()
    assert all(torch.equal(g.distance, d) for g, d in zip(iter_batches(structures, batch_size=16, n_jobs=2), serial))
    assert submitted == list(range(0, 160, 16))


def test_bond_features_replaced_or_edited_are_the_ones_used():
    """per_bond computed one row per distinct bond length of the graph collate made: bond features
    replaced (dataclasses.replace) or edited in place were read at 2 rows of 72, and a gradient
    reached 2 edges of 72."""
    import dataclasses

    from crystalzoo import example_structures, load_model
    from crystalzoo.errors import CrystalZooError

    model = load_model("formation").eval()
    g = build_graph(example_structures()[0])
    assert g.shares_bonds(g.bond_fea) and len(g.distinct_bonds) < g.total_edges

    def edge_by_edge(graph):
        return dataclasses.replace(graph, distinct_bonds=None, bond_of_edge=None)

    torch.manual_seed(0)
    replaced = dataclasses.replace(g, bond_fea=g.bond_fea + 0.3 * torch.rand_like(g.bond_fea))
    edited = build_graph(example_structures()[0])
    edited.bond_fea[5] = 0.0
    with torch.no_grad():
        for graph in (replaced, edited):
            assert not graph.shares_bonds(graph.bond_fea)
            assert model(graph).item() == model(edge_by_edge(graph)).item()
        assert model(replaced).item() != model(g).item()
    asked = g.bond_fea.clone().requires_grad_()
    model(dataclasses.replace(g, bond_fea=asked)).sum().backward()
    assert int((asked.grad.abs().sum(1) > 0).sum()) == g.total_edges
    written = build_graph(example_structures()[0])
    written.bond_fea.numpy()[5] = 0.0  # a write torch's version counter does not see
    with torch.no_grad():
        assert not written.shares_bonds(written.bond_fea)
        assert model(written).item() == model(edge_by_edge(written)).item()
    moved = g.to("cpu").to_float(torch.float64)  # converted, the rows of one length stay equal
    assert moved.shares_bonds(moved.bond_fea)
    fewer = dataclasses.replace(g, src=g.src[:60], dst=g.dst[:60])
    with pytest.raises(CrystalZooError, match="edges disagree: 60 in src, 60 in dst, 72 rows of bond_fea"):
        model(fewer)
