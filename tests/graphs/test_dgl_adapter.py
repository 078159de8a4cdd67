"""The [dgl] extra: DGL graphs from the builder, every model on DGL input, and the torch-native
layers against DGL's message passing. Runs in CI's second environment (torch 2.2.1 + DGL 2.1.0);
skipped where DGL is not installed (the default environment tests the error instead:
tests/graphs/test_building.py::test_dgl_backend_without_the_extra_names_it)."""

from __future__ import annotations

import pytest
import torch

dgl = pytest.importorskip("dgl")

from crystalzoo import build_arrays, build_graph, collate, list_backbones, load_backbone, load_model  # noqa: E402
from crystalzoo.graphs.crystal_graph import as_crystal_graph  # noqa: E402



@pytest.fixture(scope="module")
def batch(mp200_structures):
    return collate(build_arrays(mp200_structures[:64], progress=False))


def test_dgl_graph_has_the_data_names_and_edge_order(batch, cif_paths):
    g = batch.to_dgl()
    assert g.batch_size == 64 and g.num_nodes() == batch.total_atoms and g.num_edges() == batch.total_edges
    src, dst = g.edges()
    assert torch.equal(src, batch.src) and torch.equal(dst, batch.dst)
    assert batch.edge_weight is not None  # some of these crystals have split shells
    assert set(g.ndata) == {"atom_fea", "z", "extended", "crystal"}
    assert set(g.edata) == {"bond_fea", "distance", "edge_weight", "bond_of_edge"}
    assert torch.equal(g.batch_num_nodes(), batch.n_atoms) and torch.equal(g.batch_num_edges(), batch.n_edges)
    single = build_graph(cif_paths[0], backend="dgl")
    assert isinstance(single, dgl.DGLGraph) and single.ndata["atom_fea"].shape[1] == 92
    # and back: the same CrystalGraph
    back = as_crystal_graph(g)
    for name in ("atom_fea", "bond_fea", "src", "dst", "crystal", "n_atoms", "n_edges", "distance", "z", "extended",
                 "edge_weight", "distinct_bonds", "bond_of_edge"):
        assert torch.equal(getattr(back, name), getattr(batch, name)), name
    assert back.shares_bonds(back.bond_fea)


@pytest.mark.parametrize("name", list_backbones())
def test_every_model_gives_identical_outputs_on_dgl_input(name, batch, mp200_structures):
    model = load_model(name)
    if model.graph_settings != batch.settings:  # another family's atom features (schnet-combined: one-hot-100)
        batch = collate(build_arrays(mp200_structures[:64], model.graph_settings, progress=False),
                        model.graph_settings)
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch.to_dgl()))


def test_dgl_graphs_batched_or_edited_in_dgl_project_their_own_bond_features(batch, mp200_structures):
    """dgl.batch of two graphs repeats bond labels with other features, and an edit in DGL changes
    rows: the model then projects each edge's features, and its outputs follow them."""
    model = load_model("formation")
    parts = [collate(build_arrays(mp200_structures[i:j], progress=False)) for i, j in ((0, 30), (30, 64))]
    batched = dgl.batch([p.to_dgl() for p in parts])
    assert as_crystal_graph(batched).distinct_bonds is None  # labels 0, 1, … of the two parts name other lengths
    with torch.no_grad():
        torch.testing.assert_close(model(batched), model(batch), rtol=0, atol=1e-5)
        edited = batch.to_dgl()
        edited.edata["bond_fea"] = edited.edata["bond_fea"].clone()
        edited.edata["bond_fea"][0] += 0.5
        assert as_crystal_graph(edited).distinct_bonds is None
        changed = model(edited) - model(batch)
    own = batch.crystal[batch.dst[0]]
    assert changed[own].abs().item() > 1e-4 and changed[torch.arange(64) != own].abs().max() == 0


def test_training_on_dgl_input_gives_the_same_gradients(batch):
    grads = []
    for g in (batch, batch.to_dgl()):
        backbone = load_backbone("formation", freeze=1)
        backbone(g).square().mean().backward()
        grads.append({n: p.grad for n, p in backbone.named_parameters() if p.requires_grad})
    for n in grads[0]:
        assert torch.equal(grads[0][n], grads[1][n]), n


@pytest.mark.parametrize("name", ["formation", "attention-formation"])
@pytest.mark.parametrize("train", [False, True])
def test_native_layers_equal_dgl_message_passing(name, train, batch):
    """The torch-native convolutions against DGL's kernels (u_add_v, copy_e + sum,
    edge_softmax, mean_nodes), forward and backward, on a batch with split shells."""
    from benchmarks.dgl_cgcnn import dgl_backbone

    assert batch.edge_weight is not None and (batch.edge_weight != 1).any()
    backbone = load_backbone(name).train(train)
    results = []
    for forward, g in ((backbone, batch), (dgl_backbone, batch.to_dgl())):
        backbone.zero_grad()
        out = forward(g) if forward is backbone else forward(backbone, g)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in backbone.named_parameters()}))
    (ours, ours_grad), (ref, ref_grad) = results
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for n, grad in ref_grad.items():
        torch.testing.assert_close(ours_grad[n], grad, rtol=1e-4, atol=1e-5, msg=n)


def test_own_dgl_layer_on_the_builders_graphs(batch):
    """docs/graphs.md: a DGL layer of your own on the builder's graph, then mean pooling."""
    import dgl.function as fn

    g = batch.to_dgl()
    lin = torch.nn.Linear(92, 16)
    with g.local_scope():
        g.ndata["h"] = lin(g.ndata["atom_fea"])
        g.edata["w"] = g.edata["bond_fea"].sum(1, keepdim=True)
        g.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "h"))
        pooled = dgl.mean_nodes(g, "h")
    assert pooled.shape == (64, 16) and torch.isfinite(pooled).all()


def test_graphs_of_single_crystals_batch_in_dgl_with_or_without_ties(batch, mp200_structures, tmp_path):
    """Graphs with tied neighbours carried edge weights and the others none, so dgl.batch refused
    them, and dropping the weights to batch them moved predictions by up to 1.3 eV/atom; a batch
    whose sizes DGL dropped (save_graphs) was predicted as one crystal (a fresh attack)."""
    model = load_model("formation")
    singles = [build_graph(s, model.graph_settings, backend="dgl") for s in mp200_structures[:64]]
    assert all("edge_weight" in g.edata for g in singles)
    with torch.no_grad():
        torch.testing.assert_close(model(dgl.batch(singles)), model(batch), rtol=0, atol=1e-5)
        untied = next(g for g in singles if bool((g.edata["edge_weight"] == 1).all()))
        assert as_crystal_graph(untied).edge_weight is None  # no tie: the graph collate gives
    from crystalzoo.errors import CrystalZooError

    dgl.save_graphs(str(tmp_path / "batch.bin"), [batch.to_dgl()])
    (loaded,), _ = dgl.load_graphs(str(tmp_path / "batch.bin"))
    with pytest.raises(CrystalZooError, match="batch sizes were lost"):
        model(loaded)
