"""Ensembles and calibrations built by hand, on real crystals: members with their own target
normalisers, the same model twice, and calibrations that do not belong to the model (they are
checked wherever they enter one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalzoo import CrystalDataset, CrystalEnsemble, TrainConfig, evaluate, load_model, save_pretrained, train_model
from crystalzoo.data import bundled_dataset
from crystalzoo.errors import ConfigError


@pytest.fixture(scope="module")
def formation_data():
    return CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["formation_energy_per_atom"], limit=200,
                                     progress=False)


def test_members_with_their_own_normalisers_are_scored_on_their_mean_prediction(formation_data):
    a, b = load_model("formation"), load_model("formation-7042")
    assert not torch.equal(a.head.mean, b.head.mean)  # trained on other crystals: other normalisers
    ensemble = CrystalEnsemble([a, b])
    pred = ensemble.predict(formation_data)
    np.testing.assert_allclose(pred, (a.predict(formation_data) + b.predict(formation_data)) / 2, rtol=1e-5)
    by_hand = float(np.nanmean(np.abs(pred - formation_data.labels[:, 0])))
    assert evaluate(ensemble, formation_data)["mae"] == pytest.approx(by_hand, rel=1e-5)
    from crystalzoo import collate

    g = collate(formation_data.graphs[:8], formation_data.settings)
    with torch.no_grad():
        raw = ensemble(g)  # normalised as member 0's head normalises
    np.testing.assert_allclose(ensemble.head.to_units(raw)[:, 0].numpy(), pred[:8], rtol=1e-5, atol=1e-6)


def test_members_that_share_a_normaliser_combine_as_before(formation_data):
    a, b = load_model("formation"), load_model("formation")
    ensemble = CrystalEnsemble([a, b])
    assert evaluate(ensemble, formation_data) == evaluate(a, formation_data)


def test_the_same_model_twice_is_refused():
    a = load_model("formation")
    with pytest.raises(ConfigError, match="member 1 is member 0 again"):
        CrystalEnsemble([a, a])


def _calibrated(data):
    model = load_model("formation")
    model.calibrate(data, split="held-out")
    return model


def test_a_calibration_is_checked_wherever_it_enters(formation_data, tmp_path):
    single = _calibrated(formation_data)
    with pytest.raises(ConfigError, match="this one is a single model's: calibrate the ensemble"):
        CrystalEnsemble([load_model("formation"), load_model("formation-7042")], calibration=single.calibration)
    ensemble = CrystalEnsemble([load_model("formation"), load_model("formation-7042")])
    ensemble.calibrate(formation_data)
    with pytest.raises(ConfigError, match="scales intervals by an ensemble's spread, but this is a single model"):
        single.calibration = ensemble.calibration
    bulk = load_model("bulk")
    with pytest.raises(ConfigError, match="the calibration is for the targets \\['formation_energy_per_atom'\\]"):
        bulk.calibration = single.calibration
    with pytest.raises(ConfigError, match="a classifier has no calibration"):
        load_model("metal-classifier").calibration = single.calibration
    with pytest.raises(ConfigError, match="not a dict"):
        bulk.calibration = single.calibration.to_dict()
    assert bulk.calibration is None  # refused: nothing was set
    with pytest.raises(ConfigError, match="extra= would set the model's own config keys \\['calibration'\\]"):
        save_pretrained(bulk, tmp_path / "bulk", extra={"calibration": single.calibration.to_dict()})
    assert not (tmp_path / "bulk").exists()
    save_pretrained(single, tmp_path / "single")  # what is kept loads again
    assert load_model(str(tmp_path / "single")).calibration.counts == single.calibration.counts


def test_training_a_calibrated_model_calibrates_it_again(formation_data, caplog):
    train, val, test = formation_data.split(100, 50, 50, seed=0)
    model = _calibrated(test)
    before = model.calibration
    train_model(model, train, val, TrainConfig(epochs=2, lr=0.05, progress=False))
    assert model.calibration is not before and model.calibration.counts == [len(val)]
    assert model.calibration.split == "validation" and "calibrated again" in caplog.text
    lower, upper = model.predict_interval(test, coverage=0.8)
    inside = float(np.mean((lower <= test.labels[:, 0]) & (test.labels[:, 0] <= upper)))
    assert inside > 0.5  # intervals of the new weights (the old scores covered 13 % in the attack)
