"""The registered SchNet backbone ``schnet-combined`` (pretrained by scripts/pretrain_backbones.py
on the project's Materials Project data) goes through the paths a registered CGCNN does: loaded
by name, frozen, embedded, fine-tuned (API and CLI, every recipe), in an ensemble with
intervals, exported to ONNX and pushed to the Hub with a card naming its base model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crystalzoo import CrystalDataset, embed, finetune, get_backbone_info, load_backbone, load_model, push_to_hub
from crystalzoo.cli import main
from crystalzoo.models import SchNetBackbone

from ..conftest import CIFS, DATA

NAME = "schnet-combined"
SIZES = ["--train-size", "60", "--val-size", "20", "--test-size", "20"]


@pytest.fixture(scope="module")
def formation(tmp_path_factory):
    return CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom", "band_gap"],
                                     progress=False, cache_dir=tmp_path_factory.mktemp("cache"))


def test_it_is_registered_with_its_pretraining_targets_and_predicts_real_formation_energies(formation):
    info = get_backbone_info(NAME)
    assert info.config["architecture"] == "schnet" and "band_gap" not in info.targets
    assert info.targets == ["formation_energy_per_atom", "energy_per_atom", "log10_k_vrh", "log10_g_vrh"]
    model = load_model(NAME)
    assert isinstance(model.backbone, SchNetBackbone) and model.graph_settings.atom_features == "one-hot-100"
    pred = model.predict(formation.with_atom_features("one-hot-100"))[:, 0]
    truth = formation.labels[:, 0]
    mae = np.mean(np.abs(pred - truth))
    assert mae < 0.2 * np.mean(np.abs(truth - truth.mean()))  # far below guessing the mean (it saw most of them)


def test_load_backbone_freezes_its_embedding_and_first_interactions():
    backbone = load_backbone(NAME, freeze=2)
    assert backbone.frozen == 2 and not backbone.embedding.weight.requires_grad
    assert not any(p.requires_grad for i in (0, 1) for p in backbone.interactions[i].parameters())
    assert all(p.requires_grad for p in backbone.interactions[2].parameters())


def test_its_vectors_from_files_and_from_a_data_set_agree(formation):
    backbone = load_backbone(NAME)
    pooled = embed(backbone, formation.with_atom_features("one-hot-100").subset(range(3)), kind="pooled",
                   composition=True)
    import gzip

    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        cifs = [json.loads(line)["cif"] for _, line in zip(range(3), f)]
    again = embed(backbone, cifs, kind="pooled", composition=True)
    assert pooled.shape == (3, 64 + 132)
    np.testing.assert_allclose(pooled, again, atol=1e-5)
    hidden = embed(load_model(NAME), cifs)
    assert hidden.shape == (3, 32) and np.isfinite(hidden).all()


@pytest.mark.slow
def test_it_fine_tunes_from_the_command_line_and_the_frozen_part_stays(tmp_path):
    out = tmp_path / "ft"
    code = main(["finetune", "--backbone", NAME, "--freeze", "2", "--data", "bundled:mp-band-gap", "--target",
                 "band_gap", *SIZES, "--epochs", "3", "--quiet", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"] == NAME and np.isfinite(metrics["test"]["mae"])
    tuned, pretrained = load_model(str(out)).backbone, load_backbone(NAME)
    for (name, p), q in zip(tuned.interactions[1].named_parameters(), pretrained.interactions[1].parameters()):
        torch.testing.assert_close(p, q)  # frozen: as pretrained
    assert not torch.equal(tuned.interactions[3].filter1.weight, pretrained.interactions[3].filter1.weight)


@pytest.mark.slow
def test_an_ensemble_of_it_gives_intervals_and_pushes_with_a_card_naming_it(hub, tmp_path):
    data = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], limit=100, progress=False,
                                     cache_dir=False)
    r = finetune(data, "band_gap", backbone=NAME, freeze=1, train_size=60, val_size=20, test_size=20, epochs=2,
                 ensemble=2, progress=False, out_dir=tmp_path / "ens")
    mean, std = r.model.predict(CIFS[:3], return_std=True)
    lower, upper = r.model.predict_interval(CIFS[:3], coverage=0.9)
    assert (std > 0).all() and (lower <= mean).all() and (mean <= upper).all()
    push_to_hub(r.model, "alice/schnet-band-gap")
    repo = hub.state.repos["alice/schnet-band-gap"]
    files = repo["commits"][repo["branches"]["main"]]
    card = files["README.md"].decode()
    assert f"Fine-tuned from the crystalzoo backbone `{NAME}`" in card and "SchNet" in card
    np.testing.assert_allclose(load_model("hf-hub:alice/schnet-band-gap").predict(CIFS[:3]), mean, rtol=1e-6)


@pytest.mark.slow
def test_it_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from crystalzoo import build_arrays, collate
    from crystalzoo.export import export_onnx, onnx_inputs

    from ..helpers import onnx_session

    model = load_model(NAME)
    session = onnx_session(export_onnx(model, tmp_path / "schnet.onnx"))
    g = collate(build_arrays(CIFS[:3], model.graph_settings, progress=False), model.graph_settings)
    (got,) = session.run(None, onnx_inputs(g))
    np.testing.assert_allclose(got.reshape(3, -1), model.predict(CIFS[:3]), atol=1e-5, rtol=1e-5)
