"""The SchNet-style family (crystalzoo.models.schnet) goes through every path a CGCNN does:
trained from scratch with the CLI and with pretrain, saved, loaded, frozen (with the
frozen-prefix cache), fine-tuned, exported to ONNX and described by its own model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crystalzoo import CrystalDataset, finetune, load_backbone, load_model, pretrain
from crystalzoo.cli import main
from crystalzoo.data import bundled_dataset
from crystalzoo.errors import ConfigError
from crystalzoo.models import ARCHITECTURES, SchNetBackbone

from ..conftest import CIFS
from ..helpers import onnx_session

SIZES = ["--train-size", "60", "--val-size", "20", "--test-size", "20"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A SchNet trained from scratch by the command line (2 epochs on 60 real band gaps)."""
    out = tmp_path_factory.mktemp("schnet") / "run"
    code = main(["finetune", "--backbone", "none", "--architecture", "schnet", "--data", "bundled:mp-band-gap",
                 "--target", "band_gap", *SIZES, "--epochs", "2", "--quiet", "--out", str(out)])
    assert code == 0
    return out


def test_it_is_registered_and_the_cli_lists_it(capsys):
    assert ARCHITECTURES["schnet"] is SchNetBackbone
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert "--architecture {cgcnn,schnet" in out  # (and any family a test or a user registered after them)


@pytest.mark.slow
def test_the_cli_trains_it_from_scratch_and_its_folder_loads_and_predicts(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "schnet" and config["graph"]["atom_features"] == "one-hot-100"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["backbone"] == "none" and np.isfinite(metrics["test"]["mae"])
    model = load_model(str(folder))
    assert isinstance(model.backbone, SchNetBackbone) and model.graph_settings.n_atom_features == 100
    pred = model.predict(CIFS[:3])
    assert pred.shape == (3,) and np.isfinite(pred).all()
    assert not np.allclose(pred, pred[0])  # crystals of other elements get other band gaps


@pytest.mark.slow
def test_its_prediction_does_not_depend_on_atom_order_or_the_supercell(folder):
    from pymatgen.core import Structure

    model = load_model(str(folder))
    s = Structure.from_file(CIFS[0])
    shuffled = Structure.from_sites([s[i] for i in np.random.default_rng(0).permutation(len(s))])
    supercell = s.copy()
    supercell.make_supercell([2, 1, 1])
    pred = model.predict([s, shuffled, supercell])
    np.testing.assert_allclose(pred, pred[0], atol=1e-5)


@pytest.mark.slow
def test_it_freezes_by_stages_and_fine_tunes_from_its_folder(folder, tmp_path):
    backbone = load_backbone(str(folder), freeze=1)
    frozen = [p.requires_grad for p in backbone.interactions[0].parameters()]
    trained = [p.requires_grad for p in backbone.interactions[1].parameters()]
    assert not any(frozen) and all(trained) and not backbone.embedding.weight.requires_grad
    data = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=80, progress=False)
    # the data set's graphs carry the CGCNN atom features: finetune gives them the backbone's own
    result = finetune(data, "band_gap", backbone=str(folder), freeze=1, train_size=40, val_size=20, test_size=20,
                      epochs=2, progress=False, out_dir=tmp_path / "ft")
    assert result.metrics["freeze"] == 1 and np.isfinite(result.metrics["test"]["mae"])
    before = dict(load_backbone(str(folder)).interactions[0].named_parameters())
    for name, p in result.model.backbone.interactions[0].named_parameters():
        torch.testing.assert_close(p, before[name])  # the frozen interaction did not move
    assert load_model(str(tmp_path / "ft")).backbone.frozen is None  # saved as a model, not a training state


@pytest.mark.slow
def test_the_frozen_prefix_gives_the_full_forward(folder):
    from crystalzoo import build_arrays, collate

    model = load_model(str(folder))
    g = collate(build_arrays(CIFS[:4], model.graph_settings, progress=False), model.graph_settings)
    b = model.backbone
    h = b.atom_features(g, upto=2)
    torch.testing.assert_close(b.readout(g, b.atom_features(g, h=h, start=2)), b(g))


@pytest.mark.slow
def test_it_exports_to_onnx(folder, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from crystalzoo import build_arrays, collate
    from crystalzoo.export import export_onnx, onnx_inputs

    model = load_model(str(folder))
    path = export_onnx(model, tmp_path / "schnet.onnx")
    session = onnx_session(path)
    g = collate(build_arrays(CIFS[:3], model.graph_settings, progress=False), model.graph_settings)
    (got,) = session.run(None, onnx_inputs(g))
    np.testing.assert_allclose(got.reshape(-1), model.predict(CIFS[:3]), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_its_model_card_describes_the_family(folder):
    from crystalzoo.model_card import card_tags, card_text

    model = load_model(str(folder))
    config = model.to_config()
    text = card_text(model, "me/band-gap-schnet", config, None, "library_name: crystalzoo\n")
    assert "A SchNet-style crystal graph network" in text and "Schütt" in text and "CGCNN" not in text
    assert "schnet" in card_tags(config) and "cgcnn" not in card_tags(config)


def test_pretrain_takes_the_family_and_refuses_options_it_does_not_have():
    data = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), limit=60, progress=False,
                                     targets=["formation_energy_per_atom", "band_gap"])
    r = pretrain(data, ["formation_energy_per_atom", "band_gap"], architecture={"name": "schnet", "n_interactions": 2},
                 train_size=30, val_size=15, test_size=15, epochs=1, progress=False)
    assert len(r.model.backbone.interactions) == 2 and sorted(r.model.targets) == ["band_gap",
                                                                                  "formation_energy_per_atom"]
    with pytest.raises(ConfigError, match="unknown schnet settings \\['n_conv'\\]; valid: \\['atom_fea_len'"):
        pretrain("no-such-file.jsonl", ["band_gap"], architecture={"name": "schnet", "n_conv": 3}, epochs=1,
                 progress=False)  # refused before the data is read
    with pytest.raises(ConfigError, match="conv = 'attention' is a CGCNN setting; the schnet family has none"):
        pretrain(data, ["band_gap"], architecture="schnet", conv="attention", epochs=1, progress=False)
    with pytest.raises(ConfigError, match="unknown architecture 'schnett'; registered: \\['cgcnn', 'schnet'"):
        pretrain(data, ["band_gap"], architecture="schnett", epochs=1, progress=False)


def test_make_model_says_which_atom_features_the_family_reads():
    from crystalzoo import make_model

    data = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=20, progress=False)
    with pytest.raises(ConfigError, match="a schnet backbone reads the atom features 'one-hot-100', the data set's "
                                          "graphs carry 'cgcnn-92': pass dataset.with_atom_features"):
        make_model(None, data, architecture="schnet")
    model = make_model(None, data.with_atom_features("one-hot-100"), architecture="schnet", seed=3)
    assert isinstance(model.backbone, SchNetBackbone) and model.meta["backbone"] == "none"
    again = make_model(None, data.with_atom_features("one-hot-100"), architecture="schnet", seed=3)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)  # seeded: the same initial weights


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["discriminative", "gradual", "l2sp", "linear-probe"])
def test_every_recipe_fine_tunes_it_from_the_command_line(folder, tmp_path, recipe):
    out = tmp_path / recipe
    code = main(["finetune", "--backbone", str(folder), "--recipe", recipe, "--data", "bundled:mp-band-gap",
                 "--target", "band_gap", *SIZES, "--epochs", "5", "--quiet", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == recipe and np.isfinite(metrics["test"]["mae"])
    assert isinstance(load_model(str(out)).backbone, SchNetBackbone)


@pytest.mark.slow
def test_an_ensemble_of_it_gives_a_spread_and_intervals(folder, tmp_path):
    data = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=100, progress=False)
    r = finetune(data, "band_gap", backbone=str(folder), freeze=0, train_size=60, val_size=20, test_size=20,
                 epochs=2, ensemble=2, progress=False, out_dir=tmp_path / "ens")
    ensemble = load_model(str(tmp_path / "ens"))
    mean, std = ensemble.predict(CIFS[:3], return_std=True)
    lower, upper = ensemble.predict_interval(CIFS[:3], coverage=0.9)
    assert (std > 0).all() and (lower <= mean).all() and (mean <= upper).all()
    np.testing.assert_allclose(mean, r.model.predict(CIFS[:3]), rtol=1e-6)

