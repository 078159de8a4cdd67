"""Datasets, caching, fine-tuning and the CLI on real crystals (small and fast)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crystalzoo.data import CrystalDataset
from crystalzoo.errors import DataError
from crystalzoo import TrainConfig, make_model, train_model

from ..conftest import DATA


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
    import crystalzoo.data.cache as data

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
    from crystalzoo.training.batches import Batches, forward_from

    ds = mp_dataset.select_targets(["band_gap"]).subset(range(40))
    model = make_model("formation", ds, freeze=3, seed=0)
    model.train()
    batches = Batches(model, ds, 40, "cpu")
    g, h, _ = next(batches(range(40)))
    fast = forward_from(model, g, h, batches.start)
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


def test_a_resumed_run_records_its_whole_training_time(tmp_path):
    """--resume of a finished run rewrote train_seconds with the seconds of the resume alone (a
    fresh attack): it counts the epochs before the resume too."""
    from crystalzoo import finetune

    options = dict(backbone="formation", train_size=40, val_size=10, test_size=10, epochs=2, progress=False,
                   out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    finetune(str(DATA / "mp200.jsonl.gz"), "band_gap", **options)
    trained = sum(r["seconds"] for r in json.loads((tmp_path / "run" / "history.json").read_text())["rows"])
    again = finetune(str(DATA / "mp200.jsonl.gz"), "band_gap", resume=True, **options)
    assert again.metrics["train_seconds"] >= round(trained, 2) > 0


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


def test_cli_finetune_trains_classes(tmp_path, capsys):
    """crystalzoo finetune had no --task: the CLI could not train a classifier (a fresh attack)."""
    from crystalzoo import load_model
    from crystalzoo.cli import main

    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f][:60]
    data = tmp_path / "metals.jsonl"
    data.write_text("".join(json.dumps({"mp_id": r["mp_id"], "cif": r["cif"], "metal": int(r["band_gap"] == 0)}) + "\n"
                            for r in rows))
    out = tmp_path / "run"
    assert main(["finetune", "--backbone", "formation", "--data", str(data), "--target", "metal", "--task",
                 "classification", "--epochs", "1", "--train-size", "40", "--val-size", "10", "--test-size", "10",
                 "--out", str(out), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1
    assert load_model(str(out)).head.task == "classification"


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


# ---------------------------------------------------------------------------- training runs


SMALL_RUN = dict(backbone="formation", freeze=2, train_size=60, val_size=20, test_size=0, epochs=1, progress=False)


def test_resume_refuses_a_checkpoint_of_another_target_and_seed(mp_dataset, tmp_path):
    """It used to exit 0, continuing with the old target's normaliser and mixing both in the history."""
    from crystalzoo import finetune
    from crystalzoo.errors import CrystalZooError

    out = tmp_path / "run"
    finetune(mp_dataset, "band_gap", seed=0, out_dir=out, **SMALL_RUN)
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(CrystalZooError, match="belongs to another run") as info:
        finetune(mp_dataset, "formation_energy_per_atom", seed=1, out_dir=out, resume=True,
                 **{**SMALL_RUN, "epochs": 2})
    message = str(info.value)
    assert "targets" in message and "seed: 0 in the checkpoint, 1 now" in message
    assert (out / "model.safetensors").read_bytes() == weights
    assert len(json.loads((out / "history.json").read_text())["rows"]) == 1
    # the same run resumes
    r = finetune(mp_dataset, "band_gap", seed=0, out_dir=out, resume=True, **{**SMALL_RUN, "epochs": 2})
    assert [row["epoch"] for row in r.history.rows] == [1, 2]


def test_resume_from_a_truncated_checkpoint_is_a_clear_error(mp_dataset, tmp_path):
    from crystalzoo import finetune
    from crystalzoo.errors import WeightsError

    out = tmp_path / "run"
    finetune(mp_dataset, "band_gap", out_dir=out, **SMALL_RUN)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(WeightsError, match="checkpoint.pt cannot be read.*--overwrite"):
        finetune(mp_dataset, "band_gap", out_dir=out, resume=True, **{**SMALL_RUN, "epochs": 2})


def test_resume_from_another_architecture_names_the_difference(mp_dataset, tmp_path):
    from crystalzoo.errors import CrystalZooError
    from crystalzoo import pretrain

    out = tmp_path / "run"
    kwargs = dict(train_size=60, val_size=20, test_size=0, epochs=1, progress=False, out_dir=out)
    pretrain(mp_dataset, ["formation_energy_per_atom"], conv="gated", **kwargs)
    with pytest.raises(CrystalZooError, match="backbone.conv: 'gated' in the checkpoint, 'attention' now"):
        pretrain(mp_dataset, ["formation_energy_per_atom"], conv="attention", resume=True, **kwargs)


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -1e-3])
def test_learning_rate_is_checked_up_front(lr, tmp_path):
    """`lr=inf` used to train to NaN and save the untrained model as the result."""
    from crystalzoo import finetune
    from crystalzoo.errors import ConfigError

    with pytest.raises(ConfigError, match="lr = "):
        TrainConfig(lr=lr)
    with pytest.raises(ConfigError, match="learning rate"):  # before the data is even read
        finetune(tmp_path / "no-such-file.jsonl", "band_gap", lr=lr, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_diverging_training_stops_and_saves_nothing_as_the_result(mp_dataset, tmp_path):
    from crystalzoo import finetune
    from crystalzoo.errors import CrystalZooError

    out = tmp_path / "run"
    with pytest.raises(CrystalZooError, match="not finite"):
        finetune(mp_dataset, "band_gap", out_dir=out, optimizer="sgd", lr=1e8, batch_size=16,
                 **{**SMALL_RUN, "epochs": 3})
    left = [p.name for p in out.iterdir()] if out.exists() else []  # a folder left empty is removed
    assert set(left) <= {"checkpoint.pt"}


def test_history_json_is_valid_json_when_a_score_is_missing(mp_dataset, tmp_path):
    """A target without labels in the validation split has no MAE: null, never NaN, in history.json."""
    from crystalzoo import finetune

    labels = mp_dataset.labels.copy()
    order = np.random.default_rng(0).permutation(len(mp_dataset))
    labels[order[60:80], 1] = np.nan  # the validation split of split(60, 20, seed=0)
    ds = CrystalDataset(mp_dataset.ids, mp_dataset.graphs, labels, mp_dataset.targets, mp_dataset.settings)
    out = tmp_path / "run"
    finetune(ds, ["formation_energy_per_atom", "band_gap"], out_dir=out, **{**SMALL_RUN, "backbone": None,
                                                                           "freeze": None})

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    for name in ("history.json", "metrics.json"):
        data = json.loads((out / name).read_text(), parse_constant=refuse)
    assert data["val"]["mae_band_gap"] is None
    assert json.loads((out / "history.json").read_text())["rows"][0]["val_mae_band_gap"] is None


def _classes(mp_dataset, values):
    labels = np.asarray(values, dtype=np.float32)[:, None]
    return CrystalDataset(mp_dataset.ids[: len(labels)], mp_dataset.graphs[: len(labels)], labels, ["class"],
                          mp_dataset.settings)


def test_class_present_only_in_the_validation_split_is_a_clear_error(mp_dataset):
    """It used to be a raw IndexError from the loss."""
    ds = _classes(mp_dataset, [0, 1] * 30 + [0, 1, 2, 0, 1, 0, 1, 0, 1, 0])
    train, val = ds.subset(range(60)), ds.subset(range(60, 70))
    model = make_model("metal-classifier", train, freeze=3, task="classification")
    with pytest.raises(DataError, match="class 2 .*validation split.* not in the training split"):
        train_model(model, train, val, TrainConfig(epochs=1, progress=False))


def test_classification_labels_must_be_integers(mp_dataset):
    """0.3 and 1.7 used to be truncated to the classes 0 and 1."""
    ds = _classes(mp_dataset, [0.3, 1.7] * 20)
    with pytest.raises(DataError, match="0.3.* not a class"):
        make_model("metal-classifier", ds, freeze=3, task="classification")


def test_misspelt_task_is_an_error_not_a_regression(mp_dataset, tmp_path):
    from crystalzoo import finetune
    from crystalzoo.errors import ConfigError

    ds = _classes(mp_dataset, [0, 1] * 20)
    with pytest.raises(ConfigError, match="did you mean 'classification'"):
        make_model("metal-classifier", ds, freeze=3, task="clasification")
    with pytest.raises(ConfigError, match="task"):  # before the data is read
        finetune(tmp_path / "no-such-file.jsonl", "band_gap", task="Classification")


def test_a_run_is_not_overwritten_without_overwrite(mp_dataset, tmp_path):
    """`--out DIR` onto an earlier run used to replace its model, metrics and checkpoint silently."""
    from crystalzoo import finetune
    from crystalzoo.errors import CrystalZooError

    out = tmp_path / "run"
    finetune(mp_dataset, "band_gap", out_dir=out, **SMALL_RUN)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CrystalZooError, match="already holds a run.*overwrite"):
        finetune(mp_dataset, "formation_energy_per_atom", out_dir=out, **SMALL_RUN)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = finetune(mp_dataset, "formation_energy_per_atom", out_dir=out, overwrite=True, **SMALL_RUN)
    assert json.loads((out / "config.json").read_text())["head"]["targets"] == ["formation_energy_per_atom"]
    assert r.metrics["targets"] == ["formation_energy_per_atom"]
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no lock or temporary file left


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.slow
def test_two_runs_into_one_folder(tmp_path):
    """Both used to exit 0 and one result was lost: the second now fails at once."""
    from crystalzoo import finetune
    from crystalzoo.errors import CrystalZooError

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "CRYSTALZOO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "crystalzoo.cli", "finetune", "--backbone", "formation",
                              "--freeze", "2", "--data", str(DATA / "mp200.jsonl.gz"), "--target", "band_gap",
                              "--epochs", "30", "--train-size", "60", "--val-size", "20", "--test-size", "0",
                              "--quiet", "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    lock = out / ".crystalzoo.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and "pid" not in _read(lock):
        time.sleep(0.05)
    try:
        with pytest.raises(CrystalZooError, match=f"in use by another crystalzoo run \\(pid {first.pid}"):
            finetune(DATA / "mp200.jsonl.gz", "band_gap", out_dir=out, cache_dir=tmp_path / "cache", **SMALL_RUN)
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(json.loads((out / "history.json").read_text())["rows"]) == 30
    assert not lock.exists()


def test_a_lock_left_by_a_dead_process_does_not_block(mp_dataset, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".crystalzoo.lock").write_text(f"pid {dead.stdout.strip()} on this machine\n")
    from crystalzoo import finetune

    finetune(mp_dataset, "band_gap", out_dir=out, **SMALL_RUN)
    assert (out / "model.safetensors").is_file() and not (out / ".crystalzoo.lock").exists()


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(mp_dataset, tmp_path):
    """A .crystalzoo.lock that links to another file used to be truncated through the link."""
    from crystalzoo import finetune
    from crystalzoo.errors import RunError

    precious = tmp_path / "precious.txt"
    precious.write_text("important data\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".crystalzoo.lock").symlink_to(precious)
    with pytest.raises(RunError, match="link"):
        finetune(mp_dataset, "band_gap", out_dir=out, **SMALL_RUN)
    assert precious.read_text() == "important data\n"


def test_overwrite_into_the_backbone_folder_is_refused_before_deleting_it(mp_dataset, tmp_path):
    """`finetune --backbone DIR --out DIR --overwrite` used to delete the model it was about to load."""
    from crystalzoo import finetune
    from crystalzoo.errors import ConfigError

    own = tmp_path / "own"
    finetune(mp_dataset, "band_gap", out_dir=own, **SMALL_RUN)
    before = {p.name: p.read_bytes() for p in own.iterdir()}
    with pytest.raises(ConfigError, match="would delete"):
        finetune(mp_dataset, "band_gap", out_dir=own, overwrite=True, **{**SMALL_RUN, "backbone": str(own)})
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before


BUNDLED_ONE_ATOM = ["mp-611219", "mp-81", "mp-8638", "mp-974558"]


def test_last_batch_of_one_one_atom_crystal_trains(tmp_path):
    """The bundled data set's one-atom crystals alone in the last batch used to crash BatchNorm
    (training size = 1 mod batch size); that crystal now joins the batch before it."""
    import gzip

    from crystalzoo.data import bundled_dataset
    from crystalzoo.training.batches import Batches

    with gzip.open(bundled_dataset("mp-band-gap"), "rt") as f:
        rows = [json.loads(line) for line in f]
    chosen = [r for r in rows if r["mp_id"] in BUNDLED_ONE_ATOM] + rows[:4]
    ds = CrystalDataset.from_structures([r["cif"] for r in chosen], [r["band_gap"] for r in chosen],
                                        ids=[r["mp_id"] for r in chosen], targets=["band_gap"], cache_dir=False,
                                        progress=False)
    assert [g.n_atoms for g in ds.graphs[:4]] == [1, 1, 1, 1]
    train, val = ds.subset([0, 1, 2]), ds.subset([3, 4, 5, 6, 7])  # 3 = 1 (mod 2): a last batch of one crystal
    model = make_model("formation", train, seed=0)
    history = train_model(model, train, val, TrainConfig(epochs=3, batch_size=2, progress=False))
    assert len(history.rows) == 3 and all(np.isfinite(r["train_loss"]) for r in history.rows)
    sizes = [len(y) for _, _, y in Batches(model, ds, 3, "cpu", train=True)(range(7))]
    assert sizes == [3, 4]  # 7 = 1 (mod 3): the last crystal joins the batch before it


def test_full_disk_at_the_end_of_a_run_leaves_no_empty_files(mp_dataset, tmp_path, monkeypatch):
    """metrics.json and history.json used to be left as 0-byte files; now every file is atomic,
    and --resume writes the results once there is space again."""
    import crystalzoo.serialization as serialization
    from crystalzoo import finetune
    from crystalzoo.errors import WriteError

    from ..helpers import tmpfs

    real = serialization.save_pretrained

    def save_then_fill_the_disk(model, folder, *args, **kwargs):
        result = real(model, folder, *args, **kwargs)
        with open(Path(folder) / "filler", "wb", buffering=0) as f:  # take every byte that is left
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        return result

    with tmpfs(tmp_path / "small", "4m") as out:
        monkeypatch.setattr(serialization, "save_pretrained", save_then_fill_the_disk)
        with pytest.raises(WriteError, match="Is the disk full"):
            finetune(mp_dataset, "band_gap", out_dir=out, **SMALL_RUN)
        assert not [p.name for p in out.iterdir() if p.is_file() and p.stat().st_size == 0]
        assert not (out / "metrics.json").exists() and not (out / "history.json").exists()
        monkeypatch.setattr(serialization, "save_pretrained", real)
        (out / "filler").unlink()
        r = finetune(mp_dataset, "band_gap", out_dir=out, resume=True, **SMALL_RUN)
        assert json.loads((out / "metrics.json").read_text())["val"]["mae"] == pytest.approx(r.metrics["val"]["mae"])


def test_cli_shows_crystalzoos_log_messages_once_per_run(tmp_path, capsys):
    """The CLI sends crystalzoo's log (here: crystals without a label are left out) to stderr
    while a command runs, and detaches it afterwards (no doubled lines on a second run)."""
    from crystalzoo.cli import main

    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f][:40]
    for row in rows[:3]:
        row["band_gap"] = None
    data = tmp_path / "some_unlabelled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["finetune", "--backbone", "formation", "--freeze", "3", "--data", str(data), "--target", "band_gap",
            "--epochs", "1", "--train-size", "20", "--val-size", "10", "--test-size", "7", "--quiet",
            "--out", str(tmp_path / "run")]
    for extra in ([], ["--overwrite"]):
        assert main(args + extra) == 0
        err = capsys.readouterr().err
        assert err.count("crystalzoo: 3 crystals have no band_gap label and are left out") == 1, err
        assert err.count("crystalzoo: fine-tuning (formation, freeze=3)") == 1, err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["sizes"]["train"] == 20


def test_a_bundled_data_sets_units_go_with_the_model(tmp_path):
    """A model fine-tuned on bundled:mp-band-gap had no unit anywhere."""
    from crystalzoo import finetune, load_model

    kwargs = dict(train_size=40, val_size=10, test_size=10, epochs=1, progress=False, freeze=3)  # the user cache
    r = finetune("bundled:mp-band-gap", "band_gap", out_dir=tmp_path / "bg", **kwargs)
    assert r.model.head.columns() == ["band_gap (eV)"]
    assert load_model(tmp_path / "bg").head.units == ["eV"]
    assert finetune("bundled:mp-band-gap", "efermi", units=["meV"], **kwargs).model.head.units == ["meV"]


def test_a_diverged_run_leaves_the_model_as_it_was_best(mp_dataset, tmp_path):
    """After the RunError of a diverged train_model, the model predicted NaN without a word, and
    save_pretrained wrote those weights over a good folder (they were finite, so load_model took
    them). The model is now left with its best weights, and a model whose predictions are not
    finite is refused at predict."""
    from crystalzoo import load_model, save_pretrained
    from crystalzoo.errors import RunError, WeightsError

    train, val = mp_dataset.split(60, 20, seed=0)[:2]
    model = make_model("formation", train, freeze=None)
    before = model.predict(val)
    with pytest.raises(RunError, match="not finite.*holds its weights from before the run"):
        train_model(model, train, val, TrainConfig(epochs=2, lr=1e8, optimizer="sgd", batch_size=16,
                                                   progress=False))
    assert np.array_equal(model.predict(val), before)
    good = save_pretrained(model, tmp_path / "good")
    broken = load_model(str(good))
    with torch.no_grad():
        broken.backbone.convs[0].bn1.running_var.fill_(float("nan"))
    with pytest.raises(WeightsError, match=f"not finite for {len(val)} of {len(val)} crystals"):
        broken.predict(val)


def test_a_diverged_gradual_run_gives_back_the_freezing_it_was_given(mp_dataset):
    """A gradual run that diverged left more layers frozen than it was given (frozen 4 of freeze=3)."""
    from crystalzoo.errors import RunError

    train, val = mp_dataset.split(60, 20, seed=0)[:2]
    model = make_model("formation", train, freeze=3)
    trainable = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RunError, match="not finite"):
        train_model(model, train, val, TrainConfig(epochs=2, lr=1e30, recipe="gradual", progress=False))
    assert model.backbone.frozen == 3 and [p.requires_grad for p in model.parameters()] == trainable


def test_evaluate_and_embed_refuse_what_is_not_finite(mp_dataset):
    """evaluate gave a finite MAE while 15 of 120 crystals were predicted NaN (they were left out as if
    unlabelled), and embed returned the NaN vectors."""
    from crystalzoo import embed, evaluate, load_model
    from crystalzoo.errors import WeightsError

    ds = mp_dataset.select_targets(["formation_energy_per_atom"])
    model = load_model("formation")
    with torch.no_grad():
        model.backbone.embedding.weight[:, 4] = 3e38  # an atom feature that a few elements have
    with pytest.raises(WeightsError, match=r"not finite for (\d+) of 200 crystals") as caught:
        model.predict(ds)
    assert 0 < int(str(caught.value).split("for ")[1].split(" of")[0]) < 200  # some crystals, not all
    with pytest.raises(WeightsError, match="predicts a value that is not finite"):
        evaluate(model, ds)
    with pytest.raises(WeightsError, match="gives a crystal vector that is not finite"):
        embed(model, ds, kind="pooled")
    with pytest.raises(WeightsError, match="gives an atom vector that is not finite"):
        embed(model, ds, kind="atoms")
