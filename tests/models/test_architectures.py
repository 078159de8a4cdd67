"""A backbone family defined here (outside the package) and registered with
register_architecture, goes through the public API like CGCNN: it builds from its config,
saves, loads, freezes (frozen-prefix cache included), fine-tunes and reloads. No module of the
package knows of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from crystalzoo import (CrystalDataset, CrystalModel, GraphSettings, RegressionHead, finetune, load_backbone,
                        load_model, register_architecture, save_pretrained)
from crystalzoo.graphs.crystal_graph import as_crystal_graph, mean_per_crystal, sum_into_atoms
from crystalzoo.errors import ConfigError

from ..conftest import CIFS, DATA


class _MeanStep(nn.Module):
    def __init__(self, width: int, n_bond: int):
        super().__init__()
        self.fc = nn.Linear(2 * width + n_bond, width)
        self.bn = nn.BatchNorm1d(width)


@register_architecture("test-mean-gnn")
class MeanGNN(nn.Module):
    """Two rounds of mean aggregation over neighbours, then mean pooling."""

    def __init__(self, graph_settings: GraphSettings, width: int = 16, n_conv: int = 2):
        super().__init__()
        self.graph_settings, self.width, self.n_conv, self.frozen = graph_settings, width, n_conv, None
        self.embedding = nn.Linear(graph_settings.n_atom_features, width)
        self.convs = nn.ModuleList(_MeanStep(width, graph_settings.n_bond_features) for _ in range(n_conv))
        self.out = nn.Linear(width, width)

    @property
    def out_features(self) -> int:
        return self.width

    def stages(self) -> list[nn.Module]:
        return [self.embedding, *self.convs]

    def later_modules(self) -> list[nn.Module]:
        return [self.out]

    def atom_features(self, g, upto=None, h=None, start=0):
        g = as_crystal_graph(g)
        if h is None:
            h = nn.functional.softplus(self.embedding(g.atom_fea))
        ones = torch.ones(g.total_edges, 1)
        degree = sum_into_atoms(g, ones).clamp(min=1)  # edge weights counted
        for step in self.convs[start:upto]:
            messages = step.fc(torch.cat([h[g.dst], h[g.src], g.bond_fea], dim=1))
            h = h + nn.functional.softplus(step.bn(sum_into_atoms(g, messages) / degree))
        return h

    def readout(self, g, atom_fea):
        return nn.functional.softplus(self.out(mean_per_crystal(as_crystal_graph(g), atom_fea)))

    def forward(self, g):
        return self.readout(g, self.atom_features(g))

    def to_config(self) -> dict:
        return {"width": self.width, "n_conv": self.n_conv}

    @classmethod
    def from_config(cls, config: dict, graph_settings: GraphSettings) -> "MeanGNN":
        if set(config) != {"width", "n_conv"} or not all(isinstance(v, int) and 1 <= v <= 64 for v in config.values()):
            raise ConfigError(f"test-mean-gnn takes width and n_conv (integers 1…64), got {config}")
        return cls(graph_settings, **config)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    model = CrystalModel(MeanGNN(GraphSettings()), RegressionHead(16, ["band_gap"], units=["eV"]))
    return save_pretrained(model.eval(), tmp_path_factory.mktemp("arch") / "mean-gnn")


def test_a_registered_architecture_saves_and_loads(folder):
    import json

    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test-mean-gnn" and config["backbone"] == {"width": 16, "n_conv": 2}
    model = load_model(str(folder))
    assert isinstance(model.backbone, MeanGNN)
    pred = model.predict(CIFS)
    assert pred.shape == (len(CIFS),) and np.isfinite(pred).all()
    np.testing.assert_array_equal(load_model(str(folder)).predict(CIFS), pred)


def test_it_freezes_by_stages(folder):
    backbone = load_backbone(str(folder), freeze=1)
    assert backbone.frozen == 1
    assert not any(p.requires_grad for m in backbone.stages()[:2] for p in m.parameters())
    assert all(p.requires_grad for p in backbone.convs[1].parameters())
    assert not backbone.convs[0].bn.training and backbone.convs[1].bn.training
    with pytest.raises(Exception, match="freeze=3 is out of range: this backbone has 2 convolutions"):
        load_backbone(str(folder), freeze=3)


def test_it_fine_tunes_with_a_frozen_prefix_and_reloads(folder, tmp_path):
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], cache_dir=tmp_path,
                                   progress=False)
    before = {k: v.clone() for k, v in load_backbone(str(folder)).state_dict().items()}
    out = tmp_path / "run"
    r = finetune(ds, "band_gap", backbone=str(folder), freeze=1, train_size=100, val_size=50, test_size=50,
                 epochs=3, progress=False, out_dir=out)
    assert np.isfinite(r.metrics["test"]["mae"]) and r.metrics["freeze"] == 1
    after = r.model.backbone.state_dict()
    for name in before:  # the embedding and the first step (BatchNorm statistics too) are bit-identical
        frozen = name.startswith(("embedding.", "convs.0."))
        assert torch.equal(before[name], after[name]) == frozen or name.endswith("num_batches_tracked"), name
    reloaded = load_model(str(out))
    assert isinstance(reloaded.backbone, MeanGNN)
    np.testing.assert_allclose(reloaded.predict(CIFS), r.model.predict(CIFS), rtol=1e-6)


def test_an_unknown_architecture_names_the_registered_ones(folder, tmp_path):
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "architecture": "nope"}))
    with pytest.raises(ConfigError, match=r"unknown architecture 'nope'; registered: \[.*'cgcnn'.*'test-mean-gnn'"):
        load_model(str(bad))
    (bad / "config.json").write_text(json.dumps({**config, "backbone": {"width": 10**6, "n_conv": 2}}))
    with pytest.raises(ConfigError, match="test-mean-gnn takes width and n_conv"):
        load_model(str(bad))
