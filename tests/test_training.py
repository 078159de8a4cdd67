"""Datasets, caching, fine-tuning and the CLI on real crystals (small and fast)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from crystalzoo.data import CrystalDataset
from crystalzoo.errors import DataError
from crystalzoo.training import TrainConfig, make_model, train_model

from .conftest import DATA


@pytest.fixture(scope="module")
def mp_dataset(tmp_path_factory):
    return CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom", "band_gap"],
                                     progress=False, cache_dir=tmp_path_factory.mktemp("cache"))


def test_finetune_lowers_validation_loss(mp_dataset):
    ds = mp_dataset.select_targets(["band_gap"])
    train, val, _ = ds.split(120, 40, 0, seed=0)
    model = make_model("formation", train, freeze=2, seed=0)
    history = train_model(model, train, val, TrainConfig(epochs=8, lr=3e-3, progress=False))
    losses = [r["val_loss"] for r in history.rows]
    assert min(losses[1:]) < 0.8 * losses[0]
    assert history.best_val_loss == min(losses)


def test_graphs_are_cached_and_reused(tmp_path, monkeypatch):
    import crystalzoo.data as data

    kwargs = dict(targets=["band_gap"], progress=False, cache_dir=tmp_path, limit=30)
    first = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", **kwargs)
    assert len(list((tmp_path / "graphs").glob("*.npz"))) == 1

    def no_building(*args, **kw):
        raise AssertionError("graphs were rebuilt although they are cached")

    monkeypatch.setattr(data, "build_arrays", no_building)
    second = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", **kwargs)
    for a, b in zip(first.graphs, second.graphs):
        assert np.array_equal(a.distance, b.distance) and np.array_equal(a.src, b.src)
    # other settings are another cache entry, never the wrong graphs
    from crystalzoo.graphs import GraphSettings

    with pytest.raises(AssertionError, match="rebuilt"):
        CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", settings=GraphSettings(radius=6.0, gaussian_min=0.0), **kwargs)


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    kwargs = dict(targets=["band_gap"], progress=False, cache_dir=tmp_path, limit=10)
    first = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", **kwargs)
    (cache,) = (tmp_path / "graphs").glob("*.npz")
    cache.write_bytes(b"not a numpy file")
    second = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", **kwargs)
    assert all(np.array_equal(a.dst, b.dst) for a, b in zip(first.graphs, second.graphs))


def test_frozen_prefix_gives_the_same_model_as_full_forward(mp_dataset):
    """Reusing the cached output of frozen layers is exact: the same losses as recomputing."""
    from crystalzoo import collate
    from crystalzoo.training import _Batches, _forward

    ds = mp_dataset.select_targets(["band_gap"]).subset(range(40))
    model = make_model("formation", ds, freeze=3, seed=0)
    model.train()
    batches = _Batches(model, ds, 40, "cpu")
    g, h, _ = next(batches(range(40)))
    fast = _forward(model, g, h, batches.start)
    full = model(collate(ds.graphs, ds.settings))
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_splits_are_seeded_and_disjoint(mp_dataset):
    a = mp_dataset.split(100, 50, 50, seed=3)
    b = mp_dataset.split(100, 50, 50, seed=3)
    assert [s.ids for s in a] == [s.ids for s in b]
    assert not set(a[0].ids) & set(a[1].ids) and not set(a[1].ids) & set(a[2].ids)
    assert mp_dataset.split(0.5, 0.25, 0.25)[0].ids != a[0].ids
    with pytest.raises(DataError, match="need 300 crystals, the data set has 200"):
        mp_dataset.split(100, 100, 100)


def test_missing_labels_are_masked_in_multitask(mp_dataset):
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom", "k_vrh"],
                                   progress=False, cache_dir=False)
    assert np.isnan(ds.labels[:, 1]).sum() > 100 and not np.isnan(ds.labels[:, 0]).any()
    train, val, _ = ds.split(120, 60, 0, seed=0)
    model = make_model(None, train, seed=0)
    history = train_model(model, train, val, TrainConfig(epochs=2, progress=False))
    assert all(np.isfinite(r["val_loss"]) for r in history.rows)
    assert np.isfinite(history.rows[-1]["val_mae_k_vrh"])


@pytest.mark.parametrize("labels, message", [
    ([1.0, float("inf")], "must be finite"),
    ([1.0, "metal"], "not a number"),
])
def test_bad_labels_are_refused(labels, message, cif_paths):
    with pytest.raises(DataError, match=message):
        CrystalDataset.from_structures(cif_paths[:2], labels, cache_dir=False, progress=False)


def test_dataframe_and_duplicates(mp200):
    df = pd.DataFrame(mp200[:10])
    ds = CrystalDataset.from_dataframe(df, targets=["band_gap"], id_column="mp_id", cache_dir=False, progress=False)
    assert ds.ids[0] == "mp-1" and ds.labels.shape == (10, 1)
    with pytest.raises(DataError, match="columns \\['gap'\\] not in the data"):
        CrystalDataset.from_dataframe(df, targets=["gap"], cache_dir=False)
    df.loc[1, "mp_id"] = "mp-1"
    with pytest.raises(DataError, match="duplicate ids"):
        CrystalDataset.from_dataframe(df, targets=["band_gap"], id_column="mp_id", cache_dir=False)


def test_cgcnn_folder(tmp_path):
    import shutil

    for f in (DATA / "cifs").glob("*.cif"):
        shutil.copy(f, tmp_path)
    ids = sorted(p.stem for p in tmp_path.glob("*.cif"))
    (tmp_path / "id_prop.csv").write_text("".join(f"{i},{k}.5\n" for k, i in enumerate(ids)))
    ds = CrystalDataset.from_cif_folder(tmp_path, targets=["y"], cache_dir=False, progress=False)
    assert ds.ids == ids and ds.labels[2, 0] == 2.5


def test_resume_reaches_the_same_result(mp_dataset, tmp_path):
    ds = mp_dataset.select_targets(["band_gap"])
    train, val, _ = ds.split(80, 40, 0, seed=1)

    def run(epochs, resume):
        model = make_model("bulk", train, freeze=1, seed=1)
        train_model(model, train, val, TrainConfig(epochs=epochs, seed=1, progress=False),
                    out_dir=tmp_path / ("r" if resume is not None else "full"), resume=bool(resume))
        return model

    full = run(4, None)
    run(2, False)  # "interrupted" after 2 epochs
    resumed = run(4, True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_cosine_schedule_sets_the_learning_rate_of_each_epoch(mp_dataset):
    ds = mp_dataset.select_targets(["band_gap"])
    train, val, _ = ds.split(80, 40, 0, seed=2)
    runs = {}
    for schedule in ("constant", "cosine"):
        model = make_model("formation", train, freeze=1, seed=2)
        runs[schedule] = train_model(model, train, val, TrainConfig(epochs=3, lr=2e-3, schedule=schedule,
                                                                    progress=False)).rows
    assert [r["lr"] for r in runs["cosine"]] == pytest.approx([2e-3, 1.5e-3, 0.5e-3])
    assert [r["lr"] for r in runs["constant"]] == [2e-3] * 3
    # same first epoch (same lr), then the smaller steps change the trajectory
    assert runs["cosine"][0]["train_loss"] == runs["constant"][0]["train_loss"]
    assert runs["cosine"][1]["train_loss"] != runs["constant"][1]["train_loss"]
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")


def test_cli_finetune_and_predict(tmp_path, capsys):
    from crystalzoo.cli import main

    out = tmp_path / "run"
    code = main(["finetune", "--backbone", "shear", "--freeze", "3", "--data", str(DATA / "mp200.jsonl.gz"),
                 "--target", "band_gap", "--epochs", "2", "--train-size", "60", "--val-size", "20",
                 "--test-size", "20", "--out", str(out), "--quiet", "--baseline"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "shear, freeze=3" in printed and "from scratch" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["mae"] > 0 and metrics["sizes"] == {"train": 60, "val": 20, "test": 20}
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert len(json.loads((out / "history.json").read_text())["rows"]) == 2

    assert main(["predict", "--model", str(out), str(DATA / "cifs" / "1000041.cif")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file,band_gap" and lines[1].startswith(str(DATA / "cifs" / "1000041.cif"))


def test_cli_errors_are_clear(capsys):
    from crystalzoo.cli import main

    assert main(["predict", "--model", "formaton", str(DATA / "cifs" / "1000041.cif")]) == 2
    assert "Did you mean 'formation'" in capsys.readouterr().err
    assert main(["info", "bulk"]) == 0
    assert '"units": [\n    "log10(GPa)"' in capsys.readouterr().out


def test_classification_head_trains(mp200_structures, mp200):
    ds = CrystalDataset.from_structures(mp200_structures, [float(r["band_gap"] == 0) for r in mp200],
                                        targets=["is_metal"], cache_dir=False, progress=False)
    train, val, _ = ds.split(140, 60, 0, seed=0)
    model = make_model("metal-classifier", train, freeze=3, task="classification", seed=0)
    history = train_model(model, train, val, TrainConfig(epochs=3, progress=False))
    assert model.head.classes == ["0", "1"]
    assert 0.5 <= history.rows[-1]["val_accuracy"] <= 1.0
    proba = model.predict(mp200_structures[:5])
    assert proba.shape == (5, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
