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

from ..conftest import CIFS, DATA
from ..helpers import train_steps


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
    train_steps(backbone, arrays)
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


@pytest.fixture(scope="module")
def energies():
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom", "energy_per_atom"],
                                   progress=False, cache_dir=False)
    return ds.split(150, 25, 25, seed=0)


def test_composition_reference_is_a_least_squares_fit_of_the_elements(energies):
    from crystalzoo import make_model
    from crystalzoo.graphs.crystal_graph import mean_per_crystal
    from crystalzoo.graphs import collate
    from crystalzoo.training import REFERENCE_RIDGE

    train = energies[0]
    model = make_model(None, train, reference="composition")
    g = collate(train.graphs, train.settings)
    comp = mean_per_crystal(g, g.atom_fea)
    with torch.no_grad():  # the reference alone, in units: what the composition gives
        alone = (model.head.reference(comp) * model.head.std + model.head.mean).numpy()
    y = train.labels
    for j in range(2):
        ok = ~np.isnan(y[:, j])
        mad = np.abs(y[ok, j] - y[ok, j].mean()).mean()
        x = np.hstack([comp.double().numpy(), np.ones((len(comp), 1))])[ok]
        ridge = np.diag([REFERENCE_RIDGE * ok.sum()] * comp.shape[1] + [0.0])
        best = x @ np.linalg.solve(x.T @ x + ridge, x.T @ y[ok, j])
        np.testing.assert_allclose(alone[ok, j], best, atol=1e-4)  # the ridge fit itself
        # the elements explain much of a formation energy, and most of a total energy
        assert np.abs(alone[ok, j] - y[ok, j]).mean() < (0.6, 0.3)[j] * mad
    assert model.head.to_config()["composition_reference"] == g.atom_fea.shape[1]
    plain = make_model(None, train)
    assert plain.head.reference is None and "composition_reference" not in plain.head.to_config()


def test_composition_reference_saves_loads_and_keeps_the_invariances(energies, tmp_path):
    from pymatgen.core import Structure

    from crystalzoo import pretrain

    train, val, test = energies
    r = pretrain(train.subset(range(150)), ["formation_energy_per_atom", "energy_per_atom"], train_size=100,
                 val_size=50, test_size=0, epochs=2, progress=False, reference="composition", out_dir=tmp_path / "m")
    model = load_model(str(tmp_path / "m"))
    assert model.head.reference is not None
    structures = [Structure.from_file(c) for c in CIFS]
    np.testing.assert_array_equal(model.predict(structures), r.model.predict(structures))
    s = structures[0]
    bigger = s.copy()
    bigger.make_supercell([2, 1, 1])
    shuffled = Structure.from_sites(s.sites[::-1])
    base = model.predict([s])
    np.testing.assert_allclose(model.predict([bigger, shuffled]), np.vstack([base, base]), atol=1e-4)


def test_composition_reference_with_frozen_layers_scores_as_it_predicts(tmp_path):
    from crystalzoo import finetune

    r = finetune(DATA / "mp200.jsonl.gz", "energy_per_atom", backbone="formation", freeze=2, train_size=100,
                 val_size=48, test_size=50, epochs=2, progress=False, reference="composition", cache_dir=tmp_path)
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["energy_per_atom"], progress=False,
                                   cache_dir=tmp_path).select_targets(["energy_per_atom"])  # 198 with the label
    test = ds.split(100, 48, 50, seed=0)[2]
    pred = r.model.predict_arrays(test.graphs)  # the whole network at once; training scored with the cached prefix
    assert r.metrics["test"]["mae"] == pytest.approx(float(np.abs(pred.ravel() - test.labels[:, 0]).mean()), rel=1e-4)


def test_composition_reference_is_checked(tmp_path, capsys):
    from crystalzoo import finetune
    from crystalzoo.errors import ConfigError
    from crystalzoo.models import make_head

    with pytest.raises(ConfigError, match="reference = 'elements': the one reference is 'composition'"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", reference="elements")
    with pytest.raises(ConfigError, match="a classifier has none"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", reference="composition", task="classification")
    with pytest.raises(ConfigError, match="composition_reference"):
        make_head({"task": "regression", "targets": ["y"], "composition_reference": "92"}, 32)
    assert main(["pretrain", "--data", str(DATA / "mp200.jsonl.gz"), "--targets", "energy_per_atom", "--epochs", "1",
                 "--train-size", "60", "--val-size", "20", "--test-size", "0", "--reference", "composition",
                 "--quiet", "--out", str(tmp_path / "p")]) == 0
    assert load_model(str(tmp_path / "p")).head.to_config()["composition_reference"] == 92


def test_composition_reference_normaliser_is_the_spread_on_new_crystals():
    """On few labels the fit comes close to every training label: the normaliser is the spread
    of the leave-one-out residuals, on the scale of the error on crystals it has not seen."""
    from crystalzoo import make_model
    from crystalzoo.training.heads import compositions

    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom", "log10:k_vrh"],
                                   progress=False, cache_dir=False)
    train, held, _ = ds.split(140, 58, 0, seed=0)  # about 50 and 20 bulk moduli
    model = make_model(None, train, reference="composition")
    with torch.no_grad():
        pred = (model.head.reference(torch.from_numpy(compositions(held)).float()) * model.head.std
                + model.head.mean).numpy()
    for j in range(2):
        ok = ~np.isnan(held.labels[:, j])
        rms = float(np.sqrt(np.mean((held.labels[ok, j] - pred[ok, j]) ** 2)))
        assert 0.5 * rms < float(model.head.std[j]) < 2 * rms


def test_composition_reference_config_format_and_consistency(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from crystalzoo import finetune
    from crystalzoo.errors import ConfigError
    from crystalzoo.models import CONFIG_FORMAT, REFERENCE_FORMAT

    kwargs = dict(train_size=60, val_size=20, test_size=0, epochs=1, progress=False, reference="composition")
    finetune(DATA / "mp200.jsonl.gz", "energy_per_atom", backbone=None, out_dir=tmp_path / "one", **kwargs)
    finetune(DATA / "mp200.jsonl.gz", "energy_per_atom", backbone=None, out_dir=tmp_path / "two", ensemble=2, **kwargs)
    for name in ("one", "two"):  # versions before format 3 refuse it as newer instead of finding unknown weights
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["format_version"] == REFERENCE_FORMAT == CONFIG_FORMAT
        assert np.isfinite(load_model(str(tmp_path / name)).predict(CIFS[:1])).all()
    config = json.loads((tmp_path / "one" / "config.json").read_text())
    config["head"]["composition_reference"] = 50  # config and weights agree, but not with the 92 element features
    (tmp_path / "one" / "config.json").write_text(json.dumps(config))
    weights = load_file(tmp_path / "one" / "model.safetensors")
    weights["head.reference.weight"] = weights["head.reference.weight"][:, :50].contiguous()
    save_file(weights, tmp_path / "one" / "model.safetensors")
    with pytest.raises(ConfigError, match="composition reference takes 50 element features but the backbone's atoms "
                                          "have 92"):
        load_model(str(tmp_path / "one"))


def test_l2sp_alpha_belongs_to_the_l2sp_recipe(tmp_path, capsys):
    from crystalzoo import TrainConfig
    from crystalzoo.errors import ConfigError

    assert TrainConfig(recipe="l2sp").alpha() == 0.01 and TrainConfig(recipe="l2sp", l2sp_alpha=0).alpha() == 0.0
    with pytest.raises(ConfigError, match="is a setting of the l2sp recipe"):
        TrainConfig(l2sp_alpha=0.01)  # the default value given explicitly is still a setting the run ignores
    # a run from scratch as typed keeps its recipe: refused, never silently trained with another
    assert main(["finetune", "--data", str(DATA / "mp200.jsonl.gz"), "--target", "band_gap", "--backbone", "none",
                 "--recipe", "l2sp", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert "recipe 'l2sp' fine-tunes a pretrained backbone" in capsys.readouterr().err


def test_a_head_with_a_reference_called_alone_says_what_it_needs(energies):
    from crystalzoo import make_model
    from crystalzoo.errors import CrystalZooError

    model = make_model(None, energies[0], reference="composition")
    with pytest.raises(CrystalZooError, match="needs the crystals' mean element features: call the model"):
        model.head(torch.zeros(2, model.backbone.out_features))


@pytest.fixture(scope="module")
def moduli():
    """Formation energies and log10 bulk moduli: most crystals lack a modulus."""
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom", "log10:k_vrh"],
                                   progress=False, cache_dir=False)
    return ds.split(150, 25, 25, seed=0)


def test_l1_loss_trains_and_picks_its_epoch_on_the_mean_absolute_error(moduli, tmp_path, monkeypatch):
    from crystalzoo import TrainConfig, make_model, train_model
    from crystalzoo.models import RegressionHead

    train, val, _ = moduli
    assert np.isnan(val.labels).any() and not np.isnan(val.labels[:, 1]).all()  # crystals without a bulk modulus
    kinds, loss = [], RegressionHead.loss
    monkeypatch.setattr(RegressionHead, "loss", lambda self, out, y, kind="mse": kinds.append(kind) or
                        loss(self, out, y, kind))
    model = make_model(None, train, seed=0)
    history = train_model(model, train, val, TrainConfig(epochs=1, batch_size=32, loss="l1", progress=False))
    assert len(kinds) > 5 and set(kinds) == {"l1"}  # every training batch and the validation
    errors = (model.predict_arrays(val.graphs) - val.labels) / model.head.std.numpy()
    ok = ~np.isnan(errors)
    assert history.rows[0]["val_loss"] == pytest.approx(np.abs(errors[ok]).mean(), rel=1e-5)
    assert history.rows[0]["val_loss"] != pytest.approx((errors[ok] ** 2).mean(), rel=1e-2)  # not the mse


def test_evaluate_loss_is_a_mean_over_labels_whatever_the_batches(moduli):
    from crystalzoo import evaluate, make_model
    from crystalzoo.errors import ConfigError

    train, val, test = moduli
    data = val.subset(range(len(val)))
    model = make_model(None, train, seed=0)
    for kind in ("mse", "l1"):
        whole = evaluate(model, data, batch_size=256, loss=kind)["loss"]
        assert evaluate(model, data, batch_size=4, loss=kind)["loss"] == pytest.approx(whole, rel=1e-5)
    errors = (model.predict_arrays(data.graphs) - data.labels) / model.head.std.numpy()
    assert evaluate(model, data, loss="l1")["loss"] == pytest.approx(np.nanmean(np.abs(errors)), rel=1e-5)
    with pytest.raises(ConfigError, match="loss = 'huber': valid: 'mse', 'l1'"):
        evaluate(model, data, loss="huber")
    with pytest.raises(ConfigError, match="loss = 'MSE': valid: 'mse', 'l1'"):
        model.head.loss(torch.zeros(2, 2), torch.zeros(2, 2), "MSE")


def test_l1_loss_is_a_regression_setting_checked_on_every_path(moduli, tmp_path):
    from crystalzoo import TrainConfig, finetune, make_model, train_model
    from crystalzoo.errors import ConfigError, RunError

    train, val, _ = moduli
    train_model(make_model(None, train, seed=0), train, val,
                TrainConfig(epochs=1, batch_size=32, loss="l1", progress=False), out_dir=tmp_path / "run")
    again = TrainConfig(epochs=2, batch_size=32, progress=False)  # the default loss
    with pytest.raises(RunError, match="loss: 'l1' in the checkpoint, 'mse' now"):
        train_model(make_model(None, train, seed=0), train, val, again, out_dir=tmp_path / "run", resume=True)
    with pytest.raises(ConfigError, match="loss = 'l2': valid: 'mse', 'l1'"):
        TrainConfig(loss="l2")
    message = "loss = 'l1' is a regression's loss, and a classifier trains on cross-entropy: leave out loss"
    with pytest.raises(ConfigError, match=message):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", task="classification", loss="l1")
    labels = np.asarray([0, 1] * 20, dtype=np.float32)[:, None]
    classes = CrystalDataset(train.ids[:40], train.graphs[:40], labels, ["class"], train.settings)
    classifier = make_model("metal-classifier", classes.subset(range(30)), freeze=3, task="classification")
    with pytest.raises(ConfigError, match=message):
        train_model(classifier, classes.subset(range(30)), classes.subset(range(30, 40)), TrainConfig(loss="l1"))
    out = tmp_path / "cli"
    assert main(["pretrain", "--data", str(DATA / "mp200.jsonl.gz"), "--targets", "formation_energy_per_atom",
                 "--loss", "l1", "--epochs", "1", "--train-size", "120", "--val-size", "40", "--test-size", "40",
                 "--out", str(out), "--quiet"]) == 0
    assert __import__("json").loads((out / "metrics.json").read_text())["loss"] == "l1"
