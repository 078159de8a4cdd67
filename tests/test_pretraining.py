"""Pretraining: multi-task from scratch, transformed targets, the attention convolution,
and the registered pretrained backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalzoo import get_backbone_info, load_backbone, load_model
from crystalzoo.cli import main
from crystalzoo.data import CrystalDataset
from crystalzoo.errors import CrystalZooError, DataError
from crystalzoo.models import BackboneConfig, CGCNNBackbone

from .conftest import CIFS, DATA
from .test_freeze import _train_steps


def test_log10_targets_and_missing_moduli():
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom", "log10:k_vrh"],
                                   progress=False, cache_dir=False)
    assert ds.targets == ["formation_energy_per_atom", "log10_k_vrh"]
    raw = [r for r in __import__("gzip").open(DATA / "mp200.jsonl.gz", "rt")]
    k = [__import__("json").loads(r)["k_vrh"] for r in raw]
    i = next(j for j, v in enumerate(k) if v)
    assert ds.labels[i, 1] == pytest.approx(np.log10(k[i]), rel=1e-6)
    assert np.isnan(ds.labels[[j for j, v in enumerate(k) if v is None], 1]).all()
    with pytest.raises(DataError, match="unknown target transform"):
        CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["sqrt:k_vrh"], cache_dir=False)


def test_cli_pretrain_multitask_then_load_as_backbone(tmp_path, capsys):
    out = tmp_path / "pre"
    assert main(["pretrain", "--data", str(DATA / "mp200.jsonl.gz"), "--targets", "formation_energy_per_atom",
                 "log10:k_vrh", "log10:g_vrh", "--epochs", "2", "--train-size", "120", "--val-size", "40",
                 "--test-size", "40", "--out", str(out), "--quiet", "--conv", "attention"]) == 0
    printed = capsys.readouterr().out
    assert "log10_g_vrh" in printed
    model = load_model(str(out))
    assert model.targets == ["formation_energy_per_atom", "log10_k_vrh", "log10_g_vrh"]
    assert model.predict(CIFS[:3]).shape == (3, 3)
    backbone = load_backbone(str(out), freeze=2)
    assert backbone.config.conv == "attention" and backbone.frozen == 2


def test_attention_backbone_freezes_like_the_gated_one(mp200_structures):
    from crystalzoo import build_arrays

    arrays = build_arrays(mp200_structures[:24], progress=False)
    backbone = load_backbone("attention-formation", freeze=2)
    before = {n: t.clone() for n, t in backbone.state_dict().items()}
    _train_steps(backbone, arrays)
    for name, value in backbone.state_dict().items():
        if name.startswith(("embedding.", "convs.0.", "convs.1.")):
            assert torch.equal(value, before[name]), name
        elif name.endswith("weight"):
            assert not torch.equal(value, before[name]), name


def test_attention_has_fewer_weights_and_validates_its_shape():
    gated = sum(p.numel() for p in CGCNNBackbone(BackboneConfig()).convs.parameters())
    attention = sum(p.numel() for p in CGCNNBackbone(BackboneConfig(conv="attention")).convs.parameters())
    assert attention < 0.75 * gated
    with pytest.raises(CrystalZooError, match="divisible by heads"):
        BackboneConfig(conv="attention", heads=5)
    with pytest.raises(CrystalZooError, match="unknown convolution"):
        BackboneConfig(conv="transformer")


@pytest.mark.parametrize("name, crystals", [("combined", 34738), ("combined-7042", 7042), ("formation-7042", 7042),
                                            ("attention-formation", 7042)])
def test_pretrained_backbones_are_registered_with_metrics(name, crystals):
    info = get_backbone_info(name)
    assert info.bundled and info.training_data["train"] + info.training_data["val"] + info.training_data["test"] == crystals
    splits = {m["split"] for m in info.metrics}
    assert splits == {"validation", "test"}
    model = load_model(name)
    pred = model.predict(CIFS)
    assert np.isfinite(pred).all()


@pytest.mark.parametrize("name", ["combined", "combined-7042"])
def test_combined_predicts_all_four_targets_sensibly(name):
    model = load_model(name)
    assert model.targets == ["formation_energy_per_atom", "energy_per_atom", "log10_k_vrh", "log10_g_vrh"]
    assert model.head.units == ["eV/atom", "eV/atom", "log10(GPa)", "log10(GPa)"]
    pred = model.predict(CIFS)
    formation = load_model("formation").predict(CIFS)
    assert np.abs(pred[:, 0] - formation).mean() < 0.5  # eV/atom: the same physics
    assert ((pred[:, 2] > 0) & (pred[:, 2] < 3)).all()  # log10 GPa of real solids


def test_units_are_stored_with_the_weights(tmp_path):
    from crystalzoo import pretrain

    targets = ["formation_energy_per_atom", "log10:k_vrh"]
    kwargs = dict(train_size=60, val_size=20, test_size=0, epochs=1, progress=False)
    pretrain(DATA / "mp200.jsonl.gz", targets, units=["eV/atom", "log10(GPa)"], out_dir=tmp_path, **kwargs)
    assert load_model(str(tmp_path)).head.units == ["eV/atom", "log10(GPa)"]
    with pytest.raises(ValueError, match=r"2 targets but units \[.eV/atom.\]: give one unit"):
        pretrain(DATA / "mp200.jsonl.gz", targets, units=["eV/atom"], **kwargs)
