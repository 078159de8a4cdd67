"""fit_booster (crystalzoo.boosting): a booster on frozen vectors and composition, tuned on the
validation split, on 200 real Materials Project crystals."""

from __future__ import annotations

import numpy as np
import pytest

from crystalzoo import CrystalDataset, embed, load_backbone
from crystalzoo.errors import ConfigError, DataError

from .conftest import DATA

pytest.importorskip("sklearn")

from crystalzoo.boosting import fit_booster  # noqa: E402

GRID = [{"max_iter": 100, "learning_rate": 0.1}, {"max_iter": 5, "learning_rate": 0.01},
        {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 7}]


@pytest.fixture(scope="module")
def crystals(tmp_path_factory):
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap", "formation_energy_per_atom"],
                                   progress=False, cache_dir=tmp_path_factory.mktemp("cache"))
    return ds.subset(range(120)), ds.subset(range(120, 160)), ds.subset(range(160, 200))


def test_it_keeps_the_setting_best_on_validation_and_learns_formation_energies(crystals):
    train, val, test = (d.select_targets(["formation_energy_per_atom"]) for d in crystals)
    booster = fit_booster(train, val, grid=GRID)
    from sklearn.ensemble import HistGradientBoostingRegressor

    x_train = embed(load_backbone("combined"), train, kind="pooled", composition=True)
    x_val = embed(load_backbone("combined"), val, kind="pooled", composition=True)
    assert np.array_equal(booster.features(train), x_train)  # the pooled vectors, then the composition
    y_train, y_val, y_test = (d.labels[:, 0] for d in (train, val, test))
    val_maes = [np.mean(np.abs(HistGradientBoostingRegressor(random_state=0, early_stopping=False, **s)
                               .fit(x_train, y_train).predict(x_val) - y_val)) for s in GRID]
    assert booster.setting == GRID[int(np.argmin(val_maes))] and booster.val_score == pytest.approx(min(val_maes))
    test_mae = np.mean(np.abs(booster.predict(test) - y_test))
    assert test_mae < 0.7 * np.mean(np.abs(y_test - np.median(y_train)))  # below guessing the median (120 crystals)
    # from structures as from the data set's graphs
    from pymatgen.core import Structure
    import gzip
    import json

    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        cifs = [json.loads(line)["cif"] for line in f][160:165]
    assert np.allclose(booster.predict([Structure.from_str(c, "cif") for c in cifs]), booster.predict(test)[:5],
                       atol=1e-6)


def test_backbones_of_two_families_sit_side_by_side(crystals):
    train, val, _ = (d.select_targets(["formation_energy_per_atom"]) for d in crystals)
    names = ["bulk", "schnet-combined"]  # cgcnn-92 and one-hot-100 atom features
    booster = fit_booster(train, val, backbones=names, grid=GRID[:1])
    # each backbone reads its own atom features from the data set's graphs; the composition comes once, after
    # the first backbone's vectors
    bulk, schnet = (embed(load_backbone(n), val, kind="pooled") for n in names)
    composition = embed(load_backbone("bulk"), val, kind="pooled", composition=True)[:, bulk.shape[1]:]
    x = booster.features(val)
    assert x.shape == (len(val), bulk.shape[1] + composition.shape[1] + schnet.shape[1])
    assert np.array_equal(x, np.concatenate([bulk, composition, schnet], axis=1)) and booster.backbones == names
    # structures given as a generator: read once for both backbones (the first embed consumed it before)
    from pymatgen.core import Structure
    import gzip
    import json

    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        cifs = [json.loads(line)["cif"] for line in f][120:124]
    from_generator = booster.features(Structure.from_str(c, "cif") for c in cifs)
    np.testing.assert_allclose(from_generator, x[:4], atol=1e-5)
    assert booster.predict([]).shape == (0,)


def test_a_model_reads_a_data_set_built_for_another_family(crystals):
    """The graphs hold atomic numbers: only the atom features differ, and they are the model's."""
    train = crystals[0].subset(range(6))
    schnet = load_backbone("schnet-combined")
    assert train.settings.atom_features == "cgcnn-92"
    np.testing.assert_array_equal(embed(schnet, train, kind="pooled"),
                                  embed(schnet, train.with_atom_features("one-hot-100"), kind="pooled"))
    from crystalzoo.errors import GraphSettingsMismatchError
    from crystalzoo.graphs import GraphSettings

    # training and evaluation still want the data set's own settings to be the model's; the message names the fix
    from crystalzoo import evaluate, load_model

    one_hot = train.select_targets(["formation_energy_per_atom"]).with_atom_features("one-hot-100")
    with pytest.raises(GraphSettingsMismatchError, match=r"dataset\.with_atom_features\('cgcnn-92'\)"):
        evaluate(load_model("formation"), one_hot)
    with pytest.raises(GraphSettingsMismatchError, match=r"model's own settings \(model\.graph_settings\)"):
        GraphSettings(atom_features="one-hot-100").check_same(GraphSettings(), "this model")


def test_it_classifies_by_accuracy(crystals):
    """Classes: formation energy below the training median (this sample's band gaps are mostly 0,
    so a metal class would be learnt by naming the commoner class)."""
    train, val, test = (d.select_targets(["formation_energy_per_atom"]) for d in crystals)
    cut = np.median(train.labels)

    def low(d):
        return CrystalDataset(d.ids, d.graphs, (d.labels < cut).astype(np.float32), ["low_formation"], d.settings, {})

    booster = fit_booster(low(train), low(val), task="classification", grid=GRID[:2])
    y_val, y_test = low(val).labels[:, 0], low(test).labels[:, 0]
    assert booster.val_score == pytest.approx(np.mean(booster.predict(low(val)) == y_val))
    predicted = booster.predict(low(test))
    assert set(np.unique(predicted)) <= {0, 1}
    majority = max(np.mean(y_test == 0), np.mean(y_test == 1))
    assert np.mean(predicted == y_test) > majority + 0.1  # well above always naming the commoner class
    # band gaps are not classes, and one class is nothing to learn
    with pytest.raises(DataError, match="needs class labels"):
        fit_booster(train, val, task="classification", grid=GRID[:1])
    one_class = CrystalDataset(train.ids, train.graphs, np.zeros_like(train.labels), ["low_formation"], train.settings,
                               {})
    with pytest.raises(DataError, match="a classifier needs 2 classes"):
        fit_booster(one_class, low(val), task="classification", grid=GRID[:1])
    huge = low(train).labels.copy()
    huge[0] = np.inf
    with pytest.raises(DataError, match="values such as inf"):
        fit_booster(CrystalDataset(train.ids, train.graphs, huge, ["low_formation"], train.settings, {}), low(val),
                    task="classification", grid=GRID[:1])
    unseen = low(val).labels + 2  # classes 2 and 3, which train has not
    with pytest.raises(DataError, match=r"val has the low_formation classes \[2, 3\], which train has not"):
        fit_booster(low(train), CrystalDataset(val.ids, val.graphs, unseen, ["low_formation"], val.settings, {}),
                    task="classification", grid=GRID[:1])


def test_crystals_without_a_label_are_left_out(crystals):
    train, val, _ = (d.select_targets(["formation_energy_per_atom"]) for d in crystals)
    labels = train.labels.copy()
    labels[::3] = np.nan
    partly = CrystalDataset(train.ids, train.graphs, labels, train.targets, train.settings, {})
    booster = fit_booster(partly, val, grid=GRID[:1])
    kept = fit_booster(train.subset(np.flatnonzero(~np.isnan(labels[:, 0]))), val, grid=GRID[:1])
    np.testing.assert_array_equal(booster.predict(val), kept.predict(val))
    assert booster.val_score == kept.val_score


def test_it_refuses_what_it_cannot_fit(crystals):
    train, val, _ = crystals
    with pytest.raises(ConfigError, match=r"select_targets"):
        fit_booster(train, val)
    one, one_val = train.select_targets(["band_gap"]), val.select_targets(["band_gap"])
    with pytest.raises(ConfigError, match="kind = 'atoms'"):
        fit_booster(one, one_val, kind="atoms")
    with pytest.raises(ConfigError, match="grid setting"):
        fit_booster(one, one_val, grid=[{"n_trees": 3}])
    unlabelled = CrystalDataset(one.ids, one.graphs, np.full_like(one.labels, np.nan), one.targets, one.settings, {})
    with pytest.raises(ConfigError, match="grid setting"):  # checked before any crystal is read
        fit_booster(unlabelled, one_val, grid=[{"learning_rate": -1.0}])
    with pytest.raises(ConfigError, match=r"grid = \{'max_iter': 50\}"):
        fit_booster(one, one_val, grid={"max_iter": 50})
    with pytest.raises(ConfigError, match=r"grid setting \{'max_iter': 5, 'monotonic_cst': \[1\]\} does not suit "
                                          r"these 196 features"):  # known to be wrong only once the features are
        fit_booster(one, one_val, grid=[{"max_iter": 5, "monotonic_cst": [1]}])
    with pytest.raises(ConfigError, match="give both the same"):
        fit_booster(one, val.select_targets(["formation_energy_per_atom"]), grid=GRID[:1])
    with pytest.raises(DataError, match="train has no labels"):
        fit_booster(unlabelled, one_val)


def test_a_blend_is_the_weighted_mean_of_its_members(crystals, tmp_path):
    from crystalzoo import Blend, TrainConfig, load_model, make_model, train_model

    train, val, test = (d.select_targets(["formation_energy_per_atom"]) for d in crystals)
    network = make_model("combined", train, seed=0)
    train_model(network, train, val, TrainConfig(epochs=2, progress=False, seed=0))
    booster = fit_booster(train, val, grid=GRID[:1])
    a, b = network.predict(test), booster.predict(test)
    np.testing.assert_allclose(Blend([network, booster]).predict(test), 0.5 * a + 0.5 * b, rtol=1e-6)
    blend = Blend([network, booster], weights=[0.25, 0.75])
    np.testing.assert_allclose(blend.predict(test), 0.25 * a + 0.75 * b, rtol=1e-6)
    assert blend.target == "formation_energy_per_atom"
    # structures given as a generator are read once for both members
    from pymatgen.core import Structure
    import gzip
    import json

    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        cifs = [json.loads(line)["cif"] for line in f][160:163]
    np.testing.assert_allclose(blend.predict(Structure.from_str(c, "cif") for c in cifs), blend.predict(test)[:3],
                               atol=1e-5)
    # what cannot be averaged
    with pytest.raises(ConfigError, match="two or more"):
        Blend([network])
    with pytest.raises(ConfigError, match="member 1 of the blend predicts"):
        Blend([network, load_model("combined")])  # four targets
    gaps = fit_booster(*(d.select_targets(["band_gap"]) for d in crystals[:2]), grid=GRID[:1])
    with pytest.raises(ConfigError, match="different targets"):
        Blend([network, gaps])
    with pytest.raises(ConfigError, match="member 1 of the blend is a str"):
        Blend([network, "combined"])
    for weights in ([0.5, 0.6], [1.0], [True, False], {0: 0.5, 1: 0.5}, {0.5}, 0.5):
        with pytest.raises(ConfigError, match="weights = "):
            Blend([network, booster], weights=weights)
    np.testing.assert_allclose(Blend([network, booster], weights=np.array([0.25, 0.75], np.float32)).predict(test),
                               blend.predict(test), rtol=1e-6)
    blend.weights = [3, -2]
    with pytest.raises(ConfigError, match="weights = "):
        blend.predict(test)
    # a member reading graphs of other settings than a data set's
    from crystalzoo.graphs import GraphSettings

    near = CrystalDataset.from_structures(cifs, [0.0, 1.0, 2.0], targets=["formation_energy_per_atom"],
                                          settings=GraphSettings(radius=6.0), cache_dir=False, progress=False)
    wide = make_model(None, near, architecture={"nbr_fea_len": 31}, seed=0)  # radius 6 Å: 31 Gaussians
    with pytest.raises(ConfigError, match="member 0 of the blend reads graphs of other settings"):
        Blend([wide, booster]).predict(test)
    assert Blend([wide, booster]).predict(cifs).shape == (3,)  # structures: each member builds its own graphs
    from crystalzoo import save_pretrained

    folder = save_pretrained(wide, tmp_path / "wide")
    with pytest.raises(ConfigError, match="a backbone of the booster reads graphs of other settings"):
        fit_booster(train, val, backbones=["combined", str(folder)], grid=GRID[:1])


def test_fit_blend_is_the_network_and_the_booster_half_each(crystals):
    from crystalzoo import TrainConfig, fit_blend, make_model, train_model

    train, val, test = (d.select_targets(["formation_energy_per_atom"]) for d in crystals)
    config = TrainConfig(epochs=2, progress=False, seed=3)
    blend = fit_blend(train, val, config=config, seed=3, grid=GRID[:1])
    network, booster = blend.members
    alone = make_model("combined", train, seed=3)
    train_model(alone, train, val, config)
    np.testing.assert_array_equal(network.predict(test), alone.predict(test))  # the same fine-tuning
    np.testing.assert_array_equal(booster.predict(test), fit_booster(train, val, grid=GRID[:1], seed=3).predict(test))
    y = val.labels[:, 0]
    assert blend.val_scores["blend"] == pytest.approx(np.mean(np.abs(blend.predict(val) - y)))
    assert blend.val_scores["network"] == pytest.approx(np.mean(np.abs(network.predict(val) - y)), rel=1e-5)
    with pytest.raises(ConfigError, match="select_targets"):
        fit_blend(crystals[0], crystals[1])
    with pytest.raises(ConfigError, match="config = "):
        fit_blend(train, val, config={"epochs": 2})
    three = fit_blend(train, val, config=config, seed=3, grid=GRID[:1], ensemble=2)
    from crystalzoo.models.ensembles import CrystalEnsemble

    assert isinstance(three.members[0], CrystalEnsemble) and len(three.members[0].members) == 2
    np.testing.assert_allclose(three.members[0].members[0].predict(test), alone.predict(test), rtol=1e-6)


def test_fit_blend_of_several_backbones_shares_the_network_half(crystals):
    """backbone=[A, B]: one network each, a quarter each, and the booster on both backbones' vectors."""
    from crystalzoo import TrainConfig, fit_blend, make_model, train_model

    train, val, test = (d.select_targets(["band_gap"]) for d in crystals)
    config = TrainConfig(epochs=2, progress=False, seed=1)
    blend = fit_blend(train, val, backbone=["combined", "formation"], config=config, seed=1, grid=GRID[:1])
    assert len(blend.members) == 3 and blend.weights == [0.25, 0.25, 0.5]
    alone = make_model("formation", train, seed=1)
    train_model(alone, train, val, config)
    np.testing.assert_array_equal(blend.members[1].predict(test), alone.predict(test))
    both = fit_booster(train, val, backbones=["combined", "formation"], grid=GRID[:1], seed=1)
    np.testing.assert_array_equal(blend.members[2].predict(test), both.predict(test))
    y = val.labels[:, 0]
    networks = (blend.members[0].predict(val).ravel() + blend.members[1].predict(val).ravel()) / 2
    assert blend.val_scores["network"] == pytest.approx(np.mean(np.abs(networks - y)), rel=1e-5)
    assert blend.val_scores["blend"] == pytest.approx(np.mean(np.abs(blend.predict(val) - y)))
    # a validation crystal without a label is left out of the scores (a review: the lengths differed)
    gap = CrystalDataset(val.ids, val.graphs, np.where(np.arange(len(val))[:, None] == 0, np.nan, val.labels),
                         val.targets, val.settings)
    scored = fit_blend(train, gap, backbone=["combined", "formation"], config=config, seed=1, grid=GRID[:1])
    assert scored.val_scores["blend"] == pytest.approx(np.mean(np.abs(scored.predict(gap)[1:] - y[1:])))
    for bad in ([], ["combined", "combined"], ["combined", 3], {"combined": 1}, {"combined"}, b"combined"):
        with pytest.raises(ConfigError, match="backbone = "):
            fit_blend(train, val, backbone=bad, config=config)
