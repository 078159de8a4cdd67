"""Ensembles, their spread, and split-conformal intervals, on real MP crystals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from crystalzoo import CrystalDataset, finetune, load_backbone, load_model
from crystalzoo.errors import ConfigError
from crystalzoo.uncertainty import MAX_SCORES, calibration_from

from .conftest import CIFS, DATA

RUN = dict(backbone="formation", freeze=2, train_size=80, val_size=60, test_size=60, epochs=2, progress=False)


@pytest.fixture(scope="module")
def band_gaps(tmp_path_factory):
    return CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], progress=False,
                                     cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def ensemble_run(band_gaps, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ensemble"
    return finetune(band_gaps, "band_gap", ensemble=3, out_dir=out, units="eV", **RUN), out


# ---------------------------------------------------------------------------- the conformal quantile


def test_quantile_is_the_conformal_order_statistic_and_grows_with_coverage():
    errors = np.arange(1.0, 100.0)[:, None]  # absolute errors 1 … 99 of a single model
    cal = calibration_from(np.zeros((99, 1)), None, errors, ["y"])
    assert cal.quantile(0.9).tolist() == [90.0]  # ⌈100 · 0.9⌉ = 90th smallest
    assert cal.quantile(0.5).tolist() == [50.0]
    qs = [cal.quantile(c)[0] for c in (0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)]
    assert qs == sorted(qs)
    with pytest.raises(ConfigError, match="coverage 0.995 needs at least 199 calibration crystals with a y label; "
                                          "this model was calibrated on 99"):
        cal.quantile(0.995)


def test_thinned_scores_give_intervals_at_least_as_wide():
    rng = np.random.default_rng(0)
    n = 3 * MAX_SCORES + 17
    errors = rng.exponential(size=(n, 1))
    cal = calibration_from(np.zeros((n, 1)), None, errors, ["y"])
    assert len(cal.scores[0]) == MAX_SCORES and cal.counts == [n]
    exact = np.sort(errors[:, 0])
    for c in (0.5, 0.8, 0.9, 0.95, 0.999):
        k = int(np.ceil((n + 1) * c))
        assert exact[k - 1] <= cal.quantile(c)[0] <= exact[min(n, k + 3) - 1] * (1 + 1e-5)  # 6 digits, rounded up


def test_many_targets_keep_a_config_that_loads():
    """64 targets on 3,474 calibration crystals (a distilled student's) wrote 4 MB of scores, more
    than a config.json may hold: the targets now share MAX_TOTAL_SCORES, and the intervals stay valid."""
    import json

    from crystalzoo.uncertainty import MAX_TOTAL_SCORES, Calibration, max_scores

    rng = np.random.default_rng(0)
    n, t = 3474, 64
    errors = rng.exponential(size=(n, t))
    cal = calibration_from(np.zeros((n, t)), None, errors, [f"f{i}" for i in range(t)])
    assert sum(len(col) for col in cal.scores) <= MAX_TOTAL_SCORES and len(cal.scores[0]) == max_scores(t) == 625
    assert len(json.dumps(cal.to_dict())) < 1_000_000
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())), cal.targets)
    assert again.scores == cal.scores
    k = int(np.ceil((n + 1) * 0.9))
    assert (np.sort(errors, axis=0)[k - 1] <= cal.quantile(0.9) * (1 + 1e-5)).all()  # never narrower
    assert max_scores(1) == max_scores(10) == MAX_SCORES  # the registered models keep what they kept


def test_scaled_scores_divide_by_the_spread_plus_its_median():
    mean = np.zeros((5, 1))
    std = np.array([[0.1], [0.2], [0.3], [0.4], [0.5]])
    labels = np.array([[0.4], [0.6], [0.9], [1.4], [2.0]])
    cal = calibration_from(mean, std, labels, ["y"])
    assert cal.floor == [0.3]
    np.testing.assert_allclose(cal.scores[0], sorted(labels[:, 0] / (std[:, 0] + 0.3)), rtol=1e-6)
    lower, upper = cal.interval(np.ones((2, 1)), np.array([[0.0], [1.0]]), 0.5)
    q = cal.quantile(0.5)[0]
    np.testing.assert_allclose(upper - 1, [[0.3 * q], [1.3 * q]])
    np.testing.assert_allclose(1 - lower, upper - 1)


@pytest.mark.parametrize("coverage", [0, 1, 1.5, -0.1, True, "0.9", None, float("nan")])
def test_coverage_outside_the_open_unit_interval_is_refused(coverage):
    cal = calibration_from(np.zeros((20, 1)), None, np.ones((20, 1)), ["y"])
    with pytest.raises(ConfigError, match="between 0 and 1"):
        cal.quantile(coverage)


# ---------------------------------------------------------------------------- ensembles


def test_ensemble_predicts_the_mean_and_spread_of_its_members(ensemble_run):
    result, _ = ensemble_run
    ens = result.model
    assert type(ens).__name__ == "CrystalEnsemble" and len(ens.members) == 3
    each = np.stack([m.predict(CIFS) for m in ens.members])
    mean, std = ens.predict(CIFS, return_std=True)
    assert mean.shape == std.shape == (len(CIFS),)
    np.testing.assert_allclose(mean, each.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, each.std(0), rtol=1e-5, atol=1e-7)
    assert (std > 0).all()  # the members differ: seeds of the head and of the batch order
    np.testing.assert_array_equal(ens.predict(CIFS), mean)
    assert [m["seed"] for m in result.metrics["members"]] == [0, 1, 2]
    assert result.metrics["ensemble"] == 3


def test_member_zero_is_the_single_model_of_the_same_seed(band_gaps, ensemble_run):
    result, _ = ensemble_run
    single = finetune(band_gaps, "band_gap", **RUN)
    np.testing.assert_array_equal(single.model.predict(CIFS), result.model.members[0].predict(CIFS))
    assert result.metrics["members"][0]["test"]["mae"] == single.metrics["test"]["mae"]


def test_members_share_one_frozen_prefix(band_gaps, monkeypatch):
    """The frozen layers run once per data set for the whole ensemble, not once per member."""
    from crystalzoo.models import CGCNNBackbone

    calls = []
    real = CGCNNBackbone.atom_features

    def counting(self, g, upto=None, h=None, start=0):
        if upto is not None:
            calls.append(upto)
        return real(self, g, upto=upto, h=h, start=start)

    monkeypatch.setattr(CGCNNBackbone, "atom_features", counting)
    finetune(band_gaps, "band_gap", ensemble=3, **{**RUN, "epochs": 1})
    # train, validation and test prefixes: computed in batches of 256 crystals, each once
    assert len(calls) == 3 and set(calls) == {2}


def test_ensemble_folder_is_one_model_that_loads_back(ensemble_run):
    result, out = ensemble_run
    files = sorted(p.name for p in out.iterdir())
    assert [f for f in files if f.endswith(".safetensors")] == ["model.safetensors"]
    assert {"checkpoint.pt", "checkpoint-member1.pt", "checkpoint-member2.pt"} <= set(files)
    config = json.loads((out / "config.json").read_text())
    assert config["ensemble"] == {"members": 3} and config["format_version"] == 2
    assert config["calibration"]["counts"] == [60] and config["calibration"]["scale"] == "ensemble std + floor"
    loaded = load_model(str(out))
    np.testing.assert_array_equal(loaded.predict(CIFS, return_std=True)[1], result.model.predict(CIFS, return_std=True)[1])
    lo, hi = loaded.predict_interval(CIFS, 0.8)
    lo0, hi0 = result.model.predict_interval(CIFS, 0.8)
    np.testing.assert_array_equal(lo, lo0)  # the calibration is kept as it was made (scores to 6 digits)
    np.testing.assert_array_equal(hi, hi0)
    history = json.loads((out / "history.json").read_text())
    assert len(history["members"]) == 3 and history["rows"] == history["members"][0]["rows"]


def test_intervals_hold_the_prediction_and_widen_with_coverage_and_spread(ensemble_run):
    ens = ensemble_run[0].model
    mean, std = ens.predict(CIFS, return_std=True)
    widths = []
    for c in (0.5, 0.7, 0.9):
        lower, upper = ens.predict_interval(CIFS, c)
        assert lower.shape == upper.shape == mean.shape and lower.dtype == mean.dtype
        np.testing.assert_allclose((lower + upper) / 2, mean, rtol=1e-5, atol=1e-5)
        widths.append(upper - lower)
    assert (widths[0] < widths[1]).all() and (widths[1] <= widths[2]).all()
    order = np.argsort(std)  # scaled by the spread: a wider interval where the members disagree more
    assert (np.diff(widths[2][order]) >= -1e-5).all() and widths[2][order[-1]] > widths[2][order[0]]


def test_calibration_covers_the_held_out_crystals_it_was_measured_on(ensemble_run, band_gaps):
    """The test metrics' coverage is what predict_interval gives on the test split."""
    result, _ = ensemble_run
    test = band_gaps.split(80, 60, 60, seed=0)[2]
    lower, upper = result.model.predict_interval(test, 0.9)
    y = test.labels[:, 0]
    assert result.metrics["test"]["coverage_90"] == pytest.approx(((lower <= y) & (y <= upper)).mean())
    assert result.metrics["test"]["interval_width_90"] == pytest.approx((upper - lower).mean(), rel=1e-5)


def test_single_model_has_constant_width_intervals_and_no_spread(band_gaps):
    single = finetune(band_gaps, "band_gap", **RUN).model
    lower, upper = single.predict_interval(CIFS, 0.9)
    assert np.ptp(upper - lower) < 1e-5 and (upper > lower).all()
    assert single.calibration.counts == [60] and not single.calibration.scaled
    with pytest.raises(ConfigError, match="return_std needs an ensemble"):
        single.predict(CIFS, return_std=True)


def test_registered_model_is_calibrated_on_request(band_gaps):
    model = load_model("formation")
    with pytest.raises(ConfigError, match="has no calibration.*model.calibrate"):
        model.predict_interval(CIFS, 0.9)
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom"], progress=False)
    cal = model.calibrate(ds)
    assert cal.counts == [len(ds)] and cal.split == "calibration"
    lower, upper = model.predict_interval(ds, 0.9)
    y = ds.labels[:, 0]
    assert ((lower <= y) & (y <= upper)).mean() >= 0.9  # calibrated on these very crystals
    with pytest.raises(Exception, match="targets"):
        model.calibrate(band_gaps)


def test_ensemble_errors_name_the_fix(ensemble_run, tmp_path):
    from crystalzoo import TrainConfig, embed, train_model

    result, out = ensemble_run
    ens = result.model
    with pytest.raises(ConfigError, match="members give different crystal vectors"):
        ens.embed(CIFS)
    with pytest.raises(ConfigError, match="members give different crystal vectors"):
        embed(ens, CIFS)
    with pytest.raises(ConfigError, match="ensemble of 3 models"):
        load_backbone(str(out))
    with pytest.raises(ConfigError, match="train_model trains one model"):
        train_model(ens, None, None, TrainConfig())
    with pytest.raises(ConfigError, match="ensemble = 0"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", ensemble=0, **RUN)
    with pytest.raises(ConfigError, match="ensemble = 33"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", ensemble=33, **RUN)


def test_tampered_calibration_is_refused(ensemble_run, tmp_path):
    import shutil

    _, out = ensemble_run
    for change, message in ((lambda c: c["calibration"].update(scores=[[3.0, 1.0]]), "sorted"),
                            (lambda c: c["calibration"].update(targets=["x"]), "targets"),
                            (lambda c: c.update(ensemble={"members": 1}), "2 or more members"),
                            (lambda c: c.update(ensemble={"members": 2}), "unexpected")):
        folder = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        shutil.copytree(out, folder)
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(Exception, match=message):
            load_model(str(folder))


def test_resume_retrains_only_the_missing_member(band_gaps, ensemble_run, tmp_path):
    import shutil

    result, out = ensemble_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "checkpoint-member2.pt").unlink()
    resumed = finetune(band_gaps, "band_gap", ensemble=3, out_dir=copy, resume=True, units="eV", **RUN)
    np.testing.assert_array_equal(resumed.model.predict(CIFS, return_std=True)[1],
                                  result.model.predict(CIFS, return_std=True)[1])
    single = finetune(band_gaps, "band_gap", out_dir=copy, overwrite=True, **RUN)  # replaces the whole ensemble run
    assert not list(copy.glob("checkpoint-member*.pt")) and single.metrics.get("members") is None


def test_ensemble_pushes_as_one_repo(hub, ensemble_run):
    from crystalzoo import push_to_hub

    result, _ = ensemble_run
    commit = push_to_hub(result.model, "alice/band-gap-ensemble", metrics=result.metrics)
    files = hub.state.repos["alice/band-gap-ensemble"]["commits"][commit]
    card = files["README.md"].decode()
    assert "An ensemble of 3 models" in card and "Calibrated prediction intervals (split-conformal, on 60" in card
    assert "| test | coverage_90 |" in card
    loaded = load_model(f"hf-hub:alice/band-gap-ensemble@{commit}")
    np.testing.assert_array_equal(loaded.predict(CIFS, return_std=True)[0], result.model.predict(CIFS))
    assert json.loads(files["config.json"])["ensemble"] == {"members": 3}


def test_cli_predicts_spread_and_intervals(ensemble_run):
    result, out = ensemble_run
    run = subprocess.run([sys.executable, "-m", "crystalzoo", "predict", "--model", str(out), "--std",
                          "--interval", "0.8", *map(str, CIFS[:2])], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0] == ("file,band_gap (eV),band_gap (eV) std,band_gap (eV) 80% lower,band_gap (eV) 80% upper")
    values = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])
    mean, std = result.model.predict(CIFS[:2], return_std=True)
    lower, upper = result.model.predict_interval(CIFS[:2], 0.8)
    np.testing.assert_allclose(values, np.stack([mean, std, lower, upper], 1), rtol=1e-4, atol=1e-6)
    run = subprocess.run([sys.executable, "-m", "crystalzoo", "predict", "--model", "formation", "--std",
                          str(CIFS[0])], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "--std needs an ensemble" in run.stderr and "Traceback" not in run.stderr


def test_classification_ensemble_averages_probabilities(band_gaps):
    labels = (band_gaps.labels > 0.1).astype(np.float32)  # metal or not
    ds = CrystalDataset(band_gaps.ids, band_gaps.graphs, labels, ["is_gapped"], band_gaps.settings)
    r = finetune(ds, "is_gapped", task="classification", ensemble=2, **RUN)
    probs = r.model.predict(CIFS)
    each = np.stack([m.predict(CIFS) for m in r.model.members])
    np.testing.assert_allclose(probs, each.mean(0), rtol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert r.model.calibration is None
    with pytest.raises(ConfigError, match="intervals are for regression"):
        r.model.predict_interval(CIFS, 0.9)


# ---------------------------------------------------------------------------- an attack on the above


def test_resume_with_another_ensemble_size_is_refused(band_gaps, ensemble_run, tmp_path):
    import shutil

    from crystalzoo.errors import RunError

    _, out = ensemble_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = (copy / "model.safetensors").read_bytes()
    for n in (1, 2):  # 1 is the default: `--resume` without `--ensemble 3`
        with pytest.raises(RunError, match="ensemble members"):
            finetune(band_gaps, "band_gap", ensemble=n, out_dir=copy, resume=True, units="eV", **RUN)
    assert (copy / "model.safetensors").read_bytes() == before
    assert json.loads((copy / "config.json").read_text())["ensemble"] == {"members": 3}


def test_calibrating_on_unlabelled_crystals_keeps_the_calibration(ensemble_run, band_gaps):
    from crystalzoo.errors import DataError

    model = load_model(str(ensemble_run[1]))
    before = model.calibration
    unlabelled = CrystalDataset(band_gaps.ids[:10], band_gaps.graphs[:10], np.full((10, 1), np.nan, np.float32),
                                ["band_gap"], band_gaps.settings)
    with pytest.raises(DataError, match="has no band_gap label"):
        model.calibrate(unlabelled)
    assert model.calibration is before
    with pytest.raises(ConfigError, match="split"):
        model.calibrate(band_gaps, split=None)


def test_multi_target_interval_widths_stay_in_their_units(tmp_path):
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap", "formation_energy_per_atom"],
                                   progress=False)
    r = finetune(ds, ["band_gap", "formation_energy_per_atom"], units=["eV", "eV/atom"], ensemble=2, **RUN)
    test = r.metrics["test"]
    assert "interval_width_90" not in test  # eV and eV/atom are not averaged
    assert {"coverage_90", "coverage_90_band_gap", "interval_width_90_band_gap",
            "interval_width_90_formation_energy_per_atom"} <= set(test)
    lower, upper = r.model.predict_interval(CIFS, 0.8)
    assert lower.shape == upper.shape == (len(CIFS), 2)


def test_tampered_counts_and_scales_are_refused():
    good = calibration_from(np.zeros((40, 1)), None, np.arange(40.0)[:, None], ["y"]).to_dict()
    from crystalzoo.uncertainty import Calibration

    for change, message in (({"counts": [100]}, "one per calibration crystal"),
                            ({"scale": "ensemble std + floor"}, "does not fit its 'floor'"),
                            ({"split": 5}, "'split' must be a name")):
        with pytest.raises(ConfigError, match=message):
            Calibration.from_dict({**good, **change}, ["y"])
    assert Calibration.from_dict(good, ["y"]).quantile(0.975).tolist() == [39.0]


def test_the_documented_calibrate_call_works_for_a_log10_target(tmp_path):
    """model.calibrate(CrystalDataset.from_jsonl(path, targets=model.targets)) failed for a model of
    'log10:k_vrh' (its target is named log10_k_vrh, a key the file does not have)."""
    from crystalzoo import CrystalDataset, finetune

    r = finetune(DATA / "mp200.jsonl.gz", "log10:k_vrh", backbone="formation", freeze=2, train_size=30,
                 val_size=15, test_size=15, epochs=1, progress=False)
    model = r.model
    assert model.targets == ["log10_k_vrh"]
    held_out = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=model.targets, progress=False)
    raw = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["k_vrh"], progress=False)
    have = raw.labels[:, 0] > 0
    np.testing.assert_allclose(held_out.labels[have, 0], np.log10(raw.labels[have, 0]), rtol=1e-6)
    calibration = model.calibrate(held_out, split="held-out")
    assert calibration.targets == ["log10_k_vrh"] and calibration.counts[0] == int(have.sum())


def test_a_calibration_that_no_longer_fits_its_head_is_neither_used_nor_saved(tmp_path):
    """Renaming the targets after calibrating let predict_interval use the old calibration, and
    save_pretrained (overwrite=True) replace a good folder with one that load_model refuses."""
    from crystalzoo import save_pretrained

    model = load_model("formation")
    model.calibrate(CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=model.targets, limit=40,
                                              progress=False))
    folder = save_pretrained(model, tmp_path / "good")
    before = (folder / "config.json").read_bytes()
    model.head.targets = ["band_gap"]
    with pytest.raises(ConfigError, match="the calibration is for the targets \\['formation_energy_per_atom'\\]"):
        model.predict_interval(CIFS[:1])
    with pytest.raises(ConfigError, match="the calibration is for the targets"):
        save_pretrained(model, folder, overwrite=True)
    assert (folder / "config.json").read_bytes() == before and load_model(str(folder)).calibration is not None


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["scores"][0].__setitem__(-1, 1e300), "numbers from 0 to float32's largest"),
    (lambda c: c["scores"][0].__setitem__(-1, 10 ** 400), "numbers from 0 to float32's largest"),
    (lambda c: c.__setitem__("coverage", 0.5), "unknown keys \\['coverage'\\]")])
def test_a_hand_edited_calibration_is_refused_when_loaded(tmp_path, edit, message):
    """A score of 1e300 loaded and gave intervals of ±inf; 10**400 raised a bare OverflowError; an
    unknown key was ignored."""
    from crystalzoo import save_pretrained

    model = load_model("formation")
    model.calibrate(CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=model.targets, limit=40,
                                              progress=False))
    folder = save_pretrained(model, tmp_path / "edited")
    config = json.loads((folder / "config.json").read_text())
    edit(config["calibration"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_model(str(folder))


def test_a_calibration_of_weights_since_changed_is_neither_used_nor_saved(ensemble_run, band_gaps, tmp_path):
    """Training an ensemble's members one by one (train_model refuses the ensemble itself) kept the
    ensemble's old scores: its 80 % intervals then covered other fractions of the test crystals,
    and save_pretrained wrote them. A calibration holds for the weights it was made with."""
    from crystalzoo import TrainConfig, save_pretrained, train_model

    ensemble = load_model(str(ensemble_run[1]))
    train, cal, test = band_gaps.split(80, 60, 60, seed=0)
    ensemble.predict_interval(test, coverage=0.8)  # calibrated when loaded: fine
    for member in ensemble.members:
        train_model(member, train, cal, TrainConfig(epochs=1, lr=1e-2, progress=False))
    with pytest.raises(ConfigError, match="calibration was made for other weights.*model.calibrate"):
        ensemble.predict_interval(test, coverage=0.8)
    with pytest.raises(ConfigError, match="calibration was made for other weights"):
        save_pretrained(ensemble, tmp_path / "stale")
    assert not (tmp_path / "stale").exists()
    ensemble.calibrate(cal)  # calibrated again: the new weights' scores
    lower, upper = ensemble.predict_interval(test, coverage=0.8)
    saved = load_model(str(save_pretrained(ensemble, tmp_path / "fresh")))
    assert np.allclose(saved.predict_interval(test, coverage=0.8)[0], lower)
    saved.double()  # the same weights in another precision: the calibration still holds
    saved.predict_interval(test, coverage=0.8)
