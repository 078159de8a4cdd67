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
    booster = fit_booster(train, val, backbones=names, composition=False, grid=GRID[:1])
    widths = [embed(load_backbone(n), train.with_atom_features(load_backbone(n).graph_settings.atom_features),
                    kind="pooled").shape[1] for n in names]
    assert booster.features(val).shape == (len(val), sum(widths)) and booster.backbones == names


def test_it_classifies_metals_by_accuracy(crystals):
    train, val, test = (d.select_targets(["band_gap"]) for d in crystals)

    def metal(d):
        return CrystalDataset(d.ids, d.graphs, (d.labels == 0).astype(np.float32), ["is_metal"], d.settings, {})

    booster = fit_booster(metal(train), metal(val), task="classification", grid=GRID[:2])
    y_val = metal(val).labels[:, 0]
    assert booster.val_score == pytest.approx(np.mean(booster.predict(metal(val)) == y_val))
    assert set(np.unique(booster.predict(metal(test)))) <= {0.0, 1.0}


def test_it_refuses_what_it_cannot_fit(crystals):
    train, val, _ = crystals
    with pytest.raises(ConfigError, match=r"select_targets"):
        fit_booster(train, val)
    one, one_val = train.select_targets(["band_gap"]), val.select_targets(["band_gap"])
    with pytest.raises(ConfigError, match="kind = 'atoms'"):
        fit_booster(one, one_val, kind="atoms")
    with pytest.raises(ConfigError, match="grid setting"):
        fit_booster(one, one_val, grid=[{"n_trees": 3}])
    with pytest.raises(ConfigError, match="grid setting"):
        fit_booster(one, one_val, grid=[{"learning_rate": -1.0}])
    with pytest.raises(ConfigError, match="give both the same"):
        fit_booster(one, val.select_targets(["formation_energy_per_atom"]), grid=GRID[:1])
    unlabelled = CrystalDataset(one.ids, one.graphs, np.full_like(one.labels, np.nan), one.targets, one.settings, {})
    with pytest.raises(DataError, match="train has no labels"):
        fit_booster(unlabelled, one_val)
