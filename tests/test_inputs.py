"""Inputs: data files, structure files, model names, configs, predict arguments and
resource bounds each get a specific crystalzoo error that names the input (docs/robustness.md)."""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from crystalzoo import build_graph, load_model
from crystalzoo.data import CrystalDataset
from crystalzoo.errors import ConfigError, CrystalZooError, DataError, StructureError, WeightsError
from crystalzoo.graphs import GraphSettings
from crystalzoo.serialization import save_pretrained

from .conftest import CIFS, DATA


@pytest.fixture(scope="module")
def formation():
    return load_model("formation")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, formation):
    """A real model folder (the registered formation model, saved)."""
    return save_pretrained(formation, tmp_path_factory.mktemp("models") / "formation-copy")


def _folder_with_config(model_folder: Path, tmp_path: Path, config) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return folder


# ---------------------------------------------------------------------------- resolution rule


def test_own_folder_named_like_a_registered_model_wins(tmp_path, monkeypatch, caplog, capsys, formation):
    """`load_model("formation")` run where ./formation is the user's own model loads the folder,
    and says so, instead of silently loading the registered model."""
    own = load_model("bulk")
    save_pretrained(own, tmp_path / "formation")
    monkeypatch.chdir(tmp_path)
    model = load_model("formation")
    assert model.targets == own.targets != formation.targets
    assert (model.predict(CIFS[:2]) == own.predict(CIFS[:2])).all()
    assert "loading the folder ./formation, not the registered model 'formation'" in caplog.text

    from crystalzoo.cli import main

    assert main(["predict", "--model", "formation", str(CIFS[0])]) == 0
    printed = capsys.readouterr()
    assert own.targets[0] in printed.out.splitlines()[0]
    assert "crystalzoo: loading the folder ./formation, not the registered model" in printed.err  # the CLI shows it


def test_a_same_named_folder_that_is_no_model_does_not_shadow_the_registry(tmp_path, monkeypatch, formation):
    """./formation holding your data (no config.json) leaves `load_model("formation")` alone."""
    (tmp_path / "formation").mkdir()
    (tmp_path / "formation" / "id_prop.csv").write_text("a,1\n")
    monkeypatch.chdir(tmp_path)
    assert (load_model("formation").predict(CIFS[:2]) == formation.predict(CIFS[:2])).all()


# ---------------------------------------------------------------------------- data files


def _cgcnn_folder(tmp_path: Path, table: bytes) -> Path:
    folder = tmp_path / "cgcnn"
    folder.mkdir()
    for i, cif in enumerate(CIFS[:3]):
        shutil.copy(cif, folder / f"c{i}.cif")
    (folder / "id_prop.csv").write_bytes(table)
    return folder


@pytest.mark.parametrize("table, match", [
    (b"", r"id_prop.csv: no crystals in it \(empty file\)"),
    (b"c0,1.0\nc1,2.0,3.0\nc2,0.5\n", r"id_prop.csv:2: 2 label columns"),
    (b"c0,1.0\nc1\nc2,0.5\n", r"id_prop.csv:2: 0 label columns"),  # pandas made this a silent missing label
    (b"c0,1.0\nc1,2.0\nc2,\xe9t\xe9\n", r"id_prop.csv:3: not UTF-8 text"),
    (b"c0,1.0\nc1,two\nc2,0.5\n", r"id_prop.csv:2: label 'two' is not a number"),
    (b'c0,1.0\n"c1,2.0\nc2,0.5\n', r"id_prop.csv:\d+: "),
])
def test_malformed_id_prop_csv(tmp_path, table, match):
    folder = _cgcnn_folder(tmp_path, table)
    with pytest.raises(DataError, match=match):
        CrystalDataset.from_cif_folder(folder, cache_dir=False, progress=False)


def test_valid_id_prop_csv_still_loads(tmp_path):
    folder = _cgcnn_folder(tmp_path, b"c0,1.0\nc1,\nc2,NaN\n")
    ds = CrystalDataset.from_cif_folder(folder, cache_dir=False, progress=False)
    assert ds.ids == ["c0", "c1", "c2"] and ds.labels[0, 0] == 1.0 and np.isnan(ds.labels[1:, 0]).all()


@pytest.mark.parametrize("text, match", [
    ("", r"data.csv: no crystals in it \(empty file\)"),
    ("cif,y\n", r"data.csv: no crystals in it \(only a header\)"),
    ("cif,y\n{0},1.0\n{1},2.0,7\n", r"data.csv:3: 3 fields, but the header has 2"),
    ("cif,y\n{0},1e39\n", r"label 'y' of '0' is 1e\+39, beyond float32's range"),
])
def test_malformed_csv_file(tmp_path, text, match):
    path = tmp_path / "data.csv"
    path.write_text(text.format(*CIFS))
    with pytest.raises(DataError, match=match):
        CrystalDataset.from_csv(path, targets=["y"], cache_dir=False, progress=False)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"cif,y\n{CIFS[0]},1.0\n".encode() + b"caf\xe9,2.0\n")
    with pytest.raises(DataError, match=r"latin.csv:3: not UTF-8"):
        CrystalDataset.from_csv(latin, targets=["y"], cache_dir=False, progress=False)


def test_valid_csv_file_loads(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(f"cif,y\n{CIFS[0]},1.5\n{CIFS[1]},\n")
    ds = CrystalDataset.from_csv(path, targets=["y"], cache_dir=False, progress=False)
    assert len(ds) == 2 and ds.labels[0, 0] == 1.5 and np.isnan(ds.labels[1, 0])


def _first_line() -> str:
    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        return f.readline()


@pytest.mark.parametrize("bad, match", [
    ("[1, 2]", r"bad.jsonl:2: a JSON list, not an object"),
    ('"just a string"', r"bad.jsonl:2: a JSON str, not an object"),
    ('{"mp_id": "mp-1", "band_gap": 1.0}', r"bad.jsonl:2: no 'cif' string"),
    ('{"mp_id": "mp-1", "cif": 42, "band_gap": 1.0}', r"bad.jsonl:2: no 'cif' string"),
    ('{"mp_id": "mp-1", "cif": "x", "band_gap": ' + "9" * 5000 + "}", r"bad.jsonl:2: not valid JSON"),
])
def test_malformed_jsonl_lines(tmp_path, bad, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(_first_line() + bad + "\n")
    with pytest.raises(DataError, match=match):
        CrystalDataset.from_jsonl(path, targets=["band_gap"], cache_dir=False, progress=False)


def test_huge_integer_label_in_jsonl(tmp_path):
    row = json.loads(_first_line())
    row["band_gap"] = 10**400  # an integer JSON reads, beyond any float
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="labels must be finite"):
        CrystalDataset.from_jsonl(path, targets=["band_gap"], cache_dir=False, progress=False)


def test_truncated_jsonl_gz(tmp_path):
    data = (DATA / "mp200.jsonl.gz").read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.jsonl.gz: unreadable after line \d+ .*truncated"):
        CrystalDataset.from_jsonl(path, targets=["band_gap"], cache_dir=False, progress=False)


def test_labels_beyond_float32_are_refused():
    with pytest.raises(DataError, match=r"label 'y' of '1' is 1e\+39, beyond float32's range"):
        CrystalDataset.from_structures(CIFS[:2], [1.0, 1e39], cache_dir=False, progress=False)
    CrystalDataset.from_structures(CIFS[:2], [1.0, 3e38], cache_dir=False, progress=False)  # in range: fine


# ---------------------------------------------------------------------------- structures


def test_cif_path_named_data_underscore_is_a_path(tmp_path, monkeypatch, formation):
    shutil.copy(CIFS[0], tmp_path / "data_1.cif")
    monkeypatch.chdir(tmp_path)
    assert formation.predict("data_1.cif") == pytest.approx(formation.predict(CIFS[0]))


def test_cif_text_without_newline(formation):
    text = CIFS[0].read_text()
    old_mac = text.replace("\n", "\r")  # line ends without \n
    assert formation.predict(old_mac) == pytest.approx(formation.predict(CIFS[0]))
    with pytest.raises(StructureError, match="CIF text: not a CIF"):
        formation.predict("# a comment, then nothing\r" * 500)  # was an OSError: file name too long
    with pytest.raises(StructureError, match="CIF text: cannot be read as a crystal structure"):
        formation.predict("data_x _cell_length_a 3")


def test_special_and_huge_structure_files_are_refused(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe.cif"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(StructureError, match="pipe.cif: is not a regular file"):
        build_graph(fifo)
    with pytest.raises(StructureError, match="/dev/zero: is not a regular file"):
        build_graph("/dev/zero")  # reading it would never end
    monkeypatch.setattr("crystalzoo.graphs.reading.MAX_STRUCTURE_FILE_BYTES", 1000)
    with pytest.raises(StructureError, match=r"bytes is more than the 1,000 bytes a structure file may have"):
        build_graph(CIFS[0])


def test_neighbour_search_budget_refuses_nearly_empty_huge_cells():
    """Two atoms in a 3,000 Å cell: pymatgen's search grid alone would take about 1.5 GB."""
    rng = np.random.default_rng(0)
    empty = Structure(Lattice.cubic(3000.0), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    start = time.perf_counter()
    with pytest.raises(StructureError, match=r"Fe2: the neighbour search .* more than the budget of 20,000,000"):
        build_graph(empty)
    assert time.perf_counter() - start < 1  # refused before the search
    many = Structure(Lattice.cubic(2000.0), ["Fe"] * 3000, rng.random((3000, 3)))
    with pytest.raises(StructureError, match="neighbour search"):
        build_graph(many)
    thin = Structure(Lattice.from_parameters(1e5, 1e5, 1e-4, 90, 90, 90), ["Fe"] * 20, rng.random((20, 3)))
    with pytest.raises(StructureError, match="neighbour search"):
        build_graph(thin)
    build_graph(Structure(Lattice.cubic(1000.0), ["Fe"], [[0, 0, 0]]))  # one isolated atom is still fine


def test_search_budget_leaves_real_crystals_alone(mp200_structures):
    from crystalzoo.graphs.cells import to_cell
    from crystalzoo.graphs.neighbors import SEARCH_BUDGET, search_cost

    big = Structure.from_file(CIFS[0]) * (6, 6, 6)  # 1,728 atoms
    for s in [*mp200_structures, big]:
        cell = to_cell(s)
        assert max(search_cost(cell, np.arange(len(cell.z)), 8.0).values()) < SEARCH_BUDGET / 50


# ---------------------------------------------------------------------------- predict arguments


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(batch_size=-3), dict(batch_size=2.5),
                                    dict(batch_size=True), dict(n_jobs=0), dict(n_jobs=-2), dict(n_jobs="2")])
def test_predict_arguments(formation, kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        formation.predict(CIFS[:2], **kwargs)


def test_predict_arrays_batch_size(formation):
    from crystalzoo.graphs import build_arrays

    arrays = build_arrays(CIFS[:2], progress=False)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got 0"):
        formation.predict_arrays(arrays, batch_size=0)
    assert formation.predict_arrays(arrays, batch_size=1) == pytest.approx(formation.predict(CIFS[:2]))


# ---------------------------------------------------------------------------- configs


@pytest.mark.parametrize("config, match", [
    ("[1, 2]", "config.json: holds a JSON list, not an object"),
    ("null", "config.json: holds a JSON NoneType, not an object"),
    ('"cgcnn"', "config.json: holds a JSON str, not an object"),
])
def test_config_json_that_is_not_an_object(model_folder, tmp_path, config, match):
    with pytest.raises(ConfigError, match=match):
        load_model(str(_folder_with_config(model_folder, tmp_path, config)))


@pytest.mark.parametrize("path, value, match", [
    (("backbone", "atom_fea_len"), "64", "atom_fea_len must be an integer"),
    (("backbone", "n_conv"), 10**9, "n_conv must be an integer from 1 to 32"),
    (("backbone", "h_fea_len"), 10**7, "h_fea_len must be an integer from 1 to 1024"),
    (("backbone",), [64], "backbone config must be a JSON object"),
    (("graph", "radius"), "8", "radius must be a finite number"),
    (("graph", "max_neighbors"), 10**6, "max_neighbors must be an integer from 1 to 256"),
    (("graph", "gaussian_step"), 1e-9, "gaussian_step 1e-09 gives more than 1024 bond features"),
    (("graph", "gaussian_step"), 10**30, r"gaussian_step and gaussian_width must be in \(0, radius"),  # found by fuzzing
    (("graph", "gaussian_width"), 10**30, r"gaussian_step and gaussian_width must be in \(0, radius"),
    (("graph",), None, "graph settings must be a JSON object"),
    (("head", "targets"), "formation_energy", "head targets must be a list"),
    (("head", "targets"), [f"t{i}" for i in range(5000)], "head targets must be a list of 1 to 1024"),
    (("head",), None, "head config must be a JSON object"),
])
def test_config_values_are_checked(model_folder, tmp_path, path, value, match):
    config = json.loads((model_folder / "config.json").read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    folder = _folder_with_config(model_folder, tmp_path, config)
    with pytest.raises(ConfigError, match=match) as info:
        load_model(str(folder))
    assert str(folder) in str(info.value)


def test_config_sizes_are_checked_before_allocation(model_folder, tmp_path):
    """Sizes within each field's limit but together about 140 million parameters (550 MB):
    refused from the meta-device build, before any weight is allocated."""
    config = json.loads((model_folder / "config.json").read_text())
    config["backbone"].update(atom_fea_len=1024, n_conv=32)
    folder = _folder_with_config(model_folder, tmp_path, config)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"parameters, more than the 50,000,000 crystalzoo builds"):
        load_model(str(folder))
    assert time.perf_counter() - start < 5
    config["backbone"].update(atom_fea_len=128, n_conv=4)  # small, but not the weights' shape
    folder = _folder_with_config(model_folder, tmp_path / "b", config)
    with pytest.raises(WeightsError, match="wrong shape"):
        load_model(str(folder))


def test_graph_settings_raise_config_error():
    for bad in [dict(radius=-1), dict(radius=float("nan")), dict(max_neighbors=1.5), dict(max_neighbors=0),
                dict(gaussian_step=0), dict(gaussian_min=9.0), dict(atom_features="x")]:
        with pytest.raises(ConfigError):
            GraphSettings(**bad)
    with pytest.raises(ConfigError, match="unknown graph settings"):
        GraphSettings.from_dict({"radius": 8.0, "cutoff": 6})


_BAD_VALUES = st.sampled_from([None, True, -1, 0, 1, 2, 2.5, 1e-12, 1e12, 10**30, float("nan"), float("inf"),
                               "x", "", "attention", "classification", [], [1], ["a", "b"], {}, {"a": 1}])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_config_json_gives_a_model_or_a_crystalzoo_error(model_folder, tmp_path_factory, data):
    """Any value at any place of a real config.json: a usable model or a crystalzoo error,
    never another exception, never a long allocation."""
    config = json.loads((model_folder / "config.json").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        node = config
        while True:
            key = data.draw(st.sampled_from(sorted(node)))
            if isinstance(node[key], dict) and node[key] and data.draw(st.booleans()):
                node = node[key]
                continue
            if data.draw(st.integers(0, 9)) == 0:
                del node[key]
            else:
                node[key] = copy.deepcopy(data.draw(_BAD_VALUES))  # a later mutation must not change the strategy
            break
    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copy(model_folder / "model.safetensors", folder)
    (folder / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    try:
        model = load_model(str(folder))
    except CrystalZooError:
        pass
    else:
        assert np.isfinite(model.predict(CIFS[:1])).all()
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------------------- push metrics


@pytest.mark.parametrize("text, match", [
    ("{not json", "metrics file .*bad.json is not readable JSON"),
    ("[1, 2]", "metrics file .*bad.json holds a JSON list, not an object"),
    ('{"test": {"mae": "small"}}', "metrics file .*bad.json: test metrics must be numbers"),
    ('{"val": [0.1]}', "metrics file .*bad.json: 'val' must be an object"),
    ('{"sizes": 10}', "metrics file .*bad.json: 'sizes' must be an object"),
])
def test_push_with_malformed_metrics_file(formation, tmp_path, text, match):
    from crystalzoo.hub import push_to_hub

    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=match):  # before any connection
        push_to_hub(formation, "alice/m", metrics_file=bad)


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_config_and_metrics_that_are_special_files(model_folder, formation, tmp_path, special):
    """A FIFO as config.json or --metrics used to block for ever, /dev/zero to fill the memory
    (found by a fresh attack): both are refused as not regular files."""
    from crystalzoo.hub import push_to_hub

    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    metrics = tmp_path / "metrics.json"
    for path in (folder / "config.json", metrics):
        path.unlink(missing_ok=True)
        os.mkfifo(path) if special == "fifo" else path.symlink_to(special)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_model(str(folder))
    with pytest.raises(ConfigError, match="not a regular file"):
        push_to_hub(formation, "alice/m", metrics_file=metrics)


# ---------------------------------------------------------------------------- the CLI


def _cli_cases(tmp_path: Path, model_folder: Path) -> list[list[str]]:
    cif = str(CIFS[0])
    list_config = _folder_with_config(model_folder, tmp_path / "list", "[]")
    huge = json.loads((model_folder / "config.json").read_text())
    huge["backbone"]["n_conv"] = 10**9
    huge_config = _folder_with_config(model_folder, tmp_path / "huge", huge)
    metrics = tmp_path / "metrics.json"
    metrics.write_text("[1, 2, 3]")
    fifo = tmp_path / "fifo.cif"
    os.mkfifo(fifo)
    return [
        ["predict", "--model", "no-such-model", cif],
        ["predict", "--model", "formation", "--jobs", "0", cif],
        ["predict", "--model", "formation", str(fifo)],
        ["predict", "--model", "formation", "# one line, no data block\r" * 300],
        ["predict", "--model", str(list_config), cif],
        ["predict", "--model", str(huge_config), cif],
        ["push", "--model", "formation", "--repo-id", "alice/m", "--metrics", str(metrics)],
        ["push", "--model", str(list_config), "--repo-id", "alice/m"],
        ["export", "--model", str(huge_config), "--out", str(tmp_path / "m.onnx")],
        ["export", "--model", "formation", "--out", str(tmp_path / "m.txt")],
        ["info", "no-such-model"],
        ["download", "no-such-model"],
    ]


def test_cli_commands_with_bad_values(tmp_path, model_folder, capsys):
    from crystalzoo.cli import main

    for argv in _cli_cases(tmp_path, model_folder):
        assert main(argv) != 0, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("crystalzoo: error: ") and "\n" not in err, (argv, err)
        assert "Traceback" not in err, argv


# ---------------------------------------------------------------------------- found by attacking the above


def test_empty_cif_text_and_special_data_files(tmp_path):
    with pytest.raises(StructureError, match="CIF text: empty file"):  # was "is a folder" (Path("") is ".")
        build_graph("")
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="data.csv: not a regular file"):  # reading it would block
        CrystalDataset.from_csv(fifo, targets=["y"], cache_dir=False, progress=False)


def test_oversized_weights_file_is_not_loaded(model_folder, tmp_path, monkeypatch):
    folder = _folder_with_config(model_folder, tmp_path, (model_folder / "config.json").read_text())
    monkeypatch.setattr("crystalzoo.serialization.MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(WeightsError, match=r"model.safetensors has [\d,]+ bytes, more than a crystalzoo model"):
        load_model(str(folder))


# ---------------------------------------------------------------------------- round three (a fresh attack)


def test_a_gzip_bomb_line_is_refused_without_reading_it_whole(tmp_path):
    """One 'line' of 30 million characters that gzip squeezes into a few kB: refused once the
    line limit is passed, never read whole into memory (it used to be a raw MemoryError for
    larger ones)."""
    from crystalzoo.data import MAX_JSONL_LINE

    path = tmp_path / "bomb.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(_first_line())
        f.write('{"cif": "' + "x" * (MAX_JSONL_LINE + 10) + '"}\n')
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"bomb.jsonl.gz:2: a line longer than"):
        CrystalDataset.from_jsonl(path, targets=["band_gap"], cache_dir=False, progress=False)


def test_labels_whose_squares_overflow_float32_train(tmp_path):
    """±2e19 is in float32's range, but the float32 sum of their squares is not: the
    normaliser's standard deviation became inf and the run 'succeeded' with NaN predictions.
    It is computed in float64 now."""
    from crystalzoo import finetune

    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], cache_dir=tmp_path, progress=False)
    ds.labels[:, 0] = np.where(np.arange(len(ds)) % 2, 2e19, -2e19).astype(np.float32)
    r = finetune(ds, "band_gap", train_size=60, val_size=20, test_size=20, epochs=1, progress=False)
    std = float(r.model.head.std[0])
    assert np.isfinite(std) and 1.9e19 < std < 2.1e19
    assert np.isfinite(r.metrics["test"]["mae"]) and np.isfinite(r.model.predict(CIFS)).all()


def test_duplicate_targets_are_refused():
    with pytest.raises(DataError, match=r"targets \['y'\] are given more than once"):
        CrystalDataset.from_structures(CIFS[:2], [[1.0, 1.0], [2.0, 2.0]], targets=["y", "y"], cache_dir=False,
                                       progress=False)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_jsonl_limit_is_a_positive_count(limit):
    with pytest.raises(ConfigError, match="limit must be an integer >= 1"):
        CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], limit=limit, cache_dir=False,
                                  progress=False)
    assert len(CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], limit=3, cache_dir=False,
                                         progress=False)) == 3


def test_a_key_missing_on_the_first_line_only_is_a_missing_label(tmp_path, mp200):
    rows = [dict(r) for r in mp200[:3]]
    del rows[0]["band_gap"]
    path = tmp_path / "some.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = CrystalDataset.from_jsonl(path, targets=["band_gap"], cache_dir=False, progress=False)
    assert np.isnan(ds.labels[0, 0]) and ds.labels[1, 0] == np.float32(mp200[1]["band_gap"])
    with pytest.raises(DataError, match=r"keys \['nope'\] are on no line"):
        CrystalDataset.from_jsonl(path, targets=["nope"], cache_dir=False, progress=False)


def test_a_list_label_is_not_a_number(tmp_path, mp200):
    rows = [dict(r) for r in mp200[:2]]
    rows[1]["band_gap"] = [1.0, 2.0]
    path = tmp_path / "list.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"label 'band_gap' of .* is \[1.0, 2.0\], not a number"):
        CrystalDataset.from_jsonl(path, targets=["band_gap"], cache_dir=False, progress=False)


def test_csv_with_its_id_column_named_twice_is_refused(tmp_path):
    """The automatic id column named twice: the ids silently became row numbers."""
    path = tmp_path / "ids.csv"
    path.write_text("id,cif,y,id\n" + "".join(f"a{i},{c},1.0,b{i}\n" for i, c in enumerate(CIFS[:2])))
    with pytest.raises(DataError, match=r"ids.csv: the header names the id column 'id' more than once"):
        CrystalDataset.from_csv(path, targets=["y"], cache_dir=False, progress=False)


def test_csv_with_a_column_named_twice_is_refused(tmp_path):
    cif = (CIFS[0]).read_text().replace('"', "'")
    path = tmp_path / "twice.csv"
    path.write_text(f'cif,y,y\n"{cif}",1.0,2.0\n')
    with pytest.raises(DataError, match=r"twice.csv: the header names the columns \['y'\] more than once"):
        CrystalDataset.from_csv(path, targets=["y"], cache_dir=False, progress=False)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_split_seed_is_checked(seed):
    ds = CrystalDataset.from_structures(CIFS, np.arange(len(CIFS), dtype=float), cache_dir=False, progress=False)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        ds.split(2, 1, seed=seed)


def test_graph_functions_refuse_the_wrong_kind_of_input(formation):
    from crystalzoo import build_arrays, collate

    with pytest.raises(CrystalZooError, match="collate takes the GraphArrays of build_arrays, not a PosixPath"):
        collate([CIFS[0]])
    with pytest.raises(ConfigError, match="settings must be a crystalzoo GraphSettings, got a dict"):
        build_graph(CIFS[0], settings={"radius": 8.0})
    with pytest.raises(StructureError, match="expected a list of crystals .* got a str; for one crystal, pass"):
        build_arrays(str(CIFS[0]), progress=False)
    with pytest.raises(StructureError, match="got a NoneType"):
        formation.predict(None)


def test_an_immutable_structure_predicts_as_a_structure(formation, mp200_structures):
    from pymatgen.core import IStructure

    s = mp200_structures[3]
    assert formation.predict(IStructure.from_sites(s)) == formation.predict(s)


def test_unwrapped_coordinates_give_the_graph_of_the_wrapped_crystal(formation, mp200_structures):
    """Atoms listed many cells away (as in a trajectory) used to exceed the search budget."""
    rng = np.random.default_rng(0)
    for s in mp200_structures[:5]:
        shift = rng.integers(-1000, 1000, size=(len(s), 3))  # whole cells: the same crystal
        shift[0] = [1000, -700, 3]
        far = Structure(s.lattice, s.species, s.frac_coords + shift, coords_are_cartesian=False, to_unit_cell=False)
        assert np.abs(far.frac_coords).max() > 100
        a, b = build_graph(s), build_graph(far)
        assert a.total_edges == b.total_edges
        np.testing.assert_allclose(np.sort(a.distance.numpy()), np.sort(b.distance.numpy()), atol=1e-5)
        np.testing.assert_allclose(formation.predict(far), formation.predict(s), atol=1e-5)


def _symmetric_cif(n_sites: int) -> str:
    """A CIF listing n_sites (general positions) under the 192 operations of Fm-3m, given by the
    space group's name only, as ICSD CIFs often do: the one scripts/cif_expansion_cost.py times
    (loaded from its file; scripts/ is not put on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cif_expansion_cost",
                                                  Path(__file__).resolve().parents[1] / "scripts" / "cif_expansion_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.symmetric_cif(n_sites)


def test_a_cif_expanding_to_too_many_positions_is_refused_at_once():
    """3,000 sites under the 192 operations of Fm-3m kept pymatgen busy for minutes."""
    t0 = time.perf_counter()
    with pytest.raises(StructureError, match=r"3,000 sites under 192 symmetry operations make 576,000 positions"):
        build_graph(_symmetric_cif(3000))
    assert time.perf_counter() - t0 < 10


def test_a_cif_with_symmetry_operations_still_reads(formation, mp200_structures):
    """The position limit leaves symmetric CIFs of real crystals alone: the symmetrised CIF
    pymatgen writes predicts what the P1 structure does."""
    from pymatgen.io.cif import CifFile, CifWriter

    symmetric = 0
    for s in mp200_structures[:20]:
        text = str(CifWriter(s, symprec=0.01))
        block = next(iter(CifFile.from_str(text).data.values())).data
        if len(block["_atom_site_label"]) < len(s):  # only the symmetry-distinct sites are listed
            symmetric += 1
            np.testing.assert_allclose(formation.predict(text), formation.predict(s), atol=1e-4)
    assert symmetric >= 5


# ---------------------------------------------------------------------------- round four (an attack on round three)


def test_n_jobs_is_bounded():
    from crystalzoo import build_arrays
    from crystalzoo.graphs import MAX_JOBS

    for bad in (MAX_JOBS + 1, 10**20):
        with pytest.raises(ConfigError, match=f"n_jobs must be a number of processes from 1 to {MAX_JOBS}"):
            build_arrays(CIFS, progress=False, n_jobs=bad)


def test_unreadable_symmetry_operations_count_as_the_space_group():
    """pymatgen drops a list of operations it cannot read and expands the space group's 192:
    the position limit must count those, not the one listed line."""
    text = _symmetric_cif(3000).replace("loop_\n_atom_site_label",
                                        "loop_\n_symmetry_equiv_pos_as_xyz\n'..x,y,z'\nloop_\n_atom_site_label")
    t0 = time.perf_counter()
    with pytest.raises(StructureError, match=r"3,000 sites under 192 symmetry operations"):
        build_graph(text)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("K1 K1+ 1 a 0. 0. 0. 1. 0 d", "K1 K1+ 1 a 0. 0. 0. 0 0 d"), "site K1 has occupancy 0"),
    (lambda t: t.replace("K1 K1+ 1 a 0. 0. 0. 1. 0 d", "K1 ? 1 a 0. 0. 0. 1. 0 d"),
     "site K1 has the type symbol '\\?', which names no element"),
])
def test_sites_pymatgen_would_drop_are_refused(edit, match):
    """KCl with K's occupancy 0 or its symbol '?' lost the K atom and predicted Cl alone."""
    text = (DATA / "cifs" / "1000050.cif").read_text()
    bad = edit(text)
    assert bad != text
    with pytest.raises(StructureError, match=match):
        build_graph(bad)


def test_non_periodic_structures_are_refused(formation):
    for pbc in ((False, False, False), (True, True, False)):
        s = Structure(Lattice(np.eye(3) * 5.64, pbc=pbc), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        with pytest.raises(StructureError, match="is periodic only along"):
            formation.predict(s)


def test_a_graph_of_other_settings_is_refused(formation):
    from crystalzoo.errors import GraphSettingsMismatchError

    g = build_graph(CIFS[0], GraphSettings(max_neighbors=6))
    with pytest.raises(GraphSettingsMismatchError, match="max_neighbors: expected 12, got 6"):
        formation(g)
    assert np.isfinite(formation(build_graph(CIFS[0])).detach().numpy()).all()


def test_evaluate_and_train_model_refuse_other_targets(formation, tmp_path):
    from crystalzoo import TrainConfig, evaluate, train_model

    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], cache_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match=r"the data set has the targets \['band_gap'\], the model predicts "
                                        r"\['formation_energy_per_atom'\]"):
        evaluate(formation, ds)
    with pytest.raises(DataError, match="the training set has the targets"):
        train_model(formation, ds, ds, TrainConfig(epochs=1, progress=False))
    with pytest.raises(ConfigError, match="config must be a TrainConfig"):
        train_model(formation, ds, ds, {"epochs": 1})


def test_save_pretrained_writes_nothing_for_a_config_it_cannot_write(formation, tmp_path):
    from crystalzoo import load_model as load

    folder = save_pretrained(load("band-gap"), tmp_path / "m")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ConfigError, match="cannot be written as JSON"):
        save_pretrained(formation, folder, extra={"notes": Path("x")})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(ConfigError, match="takes a CrystalModel"):
        save_pretrained(formation.backbone, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_numpy_numbers_in_graph_settings_become_python_numbers(tmp_path):
    s = GraphSettings(max_neighbors=np.int64(12), radius=np.float32(8.0))
    assert type(s.max_neighbors) is int and s == GraphSettings()
    ds = CrystalDataset.from_structures(CIFS[:1], [1.0], settings=s, cache_dir=tmp_path, progress=False)
    assert len(ds) == 1


def test_load_model_checks_device_and_settings():
    for device in ("gpu0", "meta") + (() if __import__("torch").cuda.is_available() else ("cuda",)):
        with pytest.raises(ConfigError, match="device"):
            load_model("formation", device=device)
    with pytest.raises(ConfigError, match="graph_settings must be a crystalzoo GraphSettings, got a dict"):
        load_model("formation", graph_settings={"radius": 8.0})


def test_an_empty_model_name_is_refused(tmp_path, monkeypatch, formation):
    from crystalzoo.errors import UnknownBackboneError

    save_pretrained(formation, tmp_path)
    monkeypatch.chdir(tmp_path)  # a model folder: "" used to load it
    with pytest.raises(UnknownBackboneError, match="the model name is empty"):
        load_model("")


def test_one_target_name_is_one_target_not_its_letters(tmp_path):
    from crystalzoo import pretrain

    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets="band_gap", limit=5, cache_dir=False,
                                   progress=False)
    assert ds.targets == ["band_gap"] and ds.select_targets("band_gap").targets == ["band_gap"]
    r = pretrain(DATA / "mp200.jsonl.gz", "band_gap", units="eV", train_size=60, val_size=20, test_size=0,
                 epochs=1, progress=False, cache_dir=tmp_path)
    assert r.model.targets == ["band_gap"] and r.model.head.units == ["eV"]
    with pytest.raises(ConfigError, match="transforms = \\['log2'\\]"):
        CrystalDataset.from_structures(CIFS[:1], [1.0], transforms=["log2"], cache_dir=False, progress=False)
    with pytest.raises(ConfigError, match="unknown architecture settings \\['n_convs'\\]"):
        pretrain(DATA / "mp200.jsonl.gz", ["band_gap"], architecture={"n_convs": 3}, epochs=1, progress=False)


def test_the_graph_cache_tells_periodic_from_non_periodic(tmp_path):
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    CrystalDataset.from_structures([nacl], [1.0], cache_dir=tmp_path, progress=False)
    slab = Structure(Lattice(np.eye(3) * 5.64, pbc=(True, True, False)), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(StructureError, match="is periodic only along"):  # not the cached graph of the crystal
        CrystalDataset.from_structures([slab], [1.0], cache_dir=tmp_path, progress=False)


def test_an_empty_cache_variable_is_the_default_cache(monkeypatch):
    from crystalzoo.data import default_cache_dir

    monkeypatch.setenv("CRYSTALZOO_CACHE", "")
    assert default_cache_dir() == Path.home() / ".cache" / "crystalzoo"


def test_more_wrong_kinds_of_input(formation, tmp_path):
    from crystalzoo import build_arrays, collate, list_backbones

    with pytest.raises(DataError, match="no crystals"):
        CrystalDataset.from_structures([], [], cache_dir=tmp_path, progress=False)
    ds = CrystalDataset.from_structures(CIFS[:2], [1.0, 2.0], cache_dir=False, progress=False)
    with pytest.raises(DataError, match=r"positions \[10\] are not positions of this data set of 2"):
        ds.subset([10])
    with pytest.raises(ConfigError, match="task = 'regresion'"):
        list_backbones("regresion")
    with pytest.raises(StructureError, match="not a set"):
        formation.predict({str(CIFS[0])})
    arrays = build_arrays(CIFS[:2], progress=False)
    assert collate(a for a in arrays).n_crystals == 2
    np.testing.assert_array_equal(formation.predict_arrays(a for a in arrays), formation.predict(CIFS[:2]))


def test_a_bad_crystal_in_a_data_set_is_named_by_its_id(tmp_path, mp200, monkeypatch):
    monkeypatch.setattr("crystalzoo.graphs.building.MIN_PARALLEL", 16)  # n_jobs=2 in worker processes
    rows = [dict(r) for r in mp200[:80]]
    rows[7]["cif"] = rows[7]["cif"].replace("_cell_length_a", "_cell_length_a 0 #")
    path = tmp_path / "one-bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for n_jobs in (1, 2):
        with pytest.raises(StructureError, match=f"^crystal '{rows[7]['mp_id']}': CIF text: cannot be read"):
            CrystalDataset.from_jsonl(path, targets=["band_gap"], cache_dir=False, progress=False, n_jobs=n_jobs)
    from crystalzoo import build_arrays

    with pytest.raises(StructureError, match="^crystal 8 of 80: "):
        build_arrays([r["cif"] for r in rows], progress=False)


def test_messages_that_used_to_mislead(tmp_path, formation):
    from pymatgen.core import Molecule

    with pytest.raises(StructureError, match="data_missing.cif: no such file"):
        formation.predict("data_missing.cif")
    with pytest.raises(StructureError, match="a Molecule is not a crystal"):
        formation.predict(Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]))
    latin = tmp_path / "latin.cif"
    latin.write_bytes(CIFS[0].read_text().replace("data_", "# M\xfcller\ndata_", 1).encode("latin-1"))
    with pytest.raises(StructureError, match="not UTF-8 text .* save the file as UTF-8"):
        formation.predict(latin)
    with pytest.raises(DataError, match="not a regular file"):
        CrystalDataset.from_jsonl(tmp_path, targets=["y"], cache_dir=False, progress=False)


def test_config_format_version(model_folder, tmp_path):
    """config.json carries a format version; older files (no key) read as format 1,
    newer ones are refused with a clear error."""
    from crystalzoo.models import CONFIG_FORMAT, SINGLE_FORMAT

    config = json.loads((model_folder / "config.json").read_text())
    # a single model stays format 1, which crystalzoo 0.1 reads; format 2 adds ensembles, format 3 a
    # composition reference
    assert config["format_version"] == SINGLE_FORMAT == 1 and CONFIG_FORMAT == 3
    old = dict(config)
    del old["format_version"]
    assert np.isfinite(load_model(str(_folder_with_config(model_folder, tmp_path / "old", old))).predict(CIFS[:1])).all()
    with pytest.raises(ConfigError, match="format 4, written by a newer crystalzoo"):
        load_model(str(_folder_with_config(model_folder, tmp_path / "new", {**config, "format_version": 4})))


# ---------------------------------------------------------------------------- round five


def _two_site_cif(symbol: str = "Cl", occupancy: str = "1", with_symbols: bool = True, label: str = "X2") -> str:
    cols = ["_atom_site_label", *(["_atom_site_type_symbol"] if with_symbols else []), "_atom_site_fract_x",
            "_atom_site_fract_y", "_atom_site_fract_z", "_atom_site_occupancy"]
    rows = [["Na1", *(["Na"] if with_symbols else []), "0", "0", "0", "1"],
            [label, *([symbol] if with_symbols else []), ".5", ".5", ".5", occupancy]]
    return "\n".join(["data_two", "_cell_length_a 5", "_cell_length_b 5", "_cell_length_c 5", "_cell_angle_alpha 90",
                      "_cell_angle_beta 90", "_cell_angle_gamma 90", "_symmetry_space_group_name_H-M 'P 1'", "loop_",
                      *cols, *(" ".join(r) for r in rows)]) + "\n"


@pytest.mark.parametrize("kwargs", [dict(occupancy=o) for o in (".", "nan", "NaN", "-nan", "?")]
                         + [dict(symbol=x) for x in ("0", "1", "12", "-", "*", "e", "?x", "nan")]
                         + [dict(with_symbols=False, label=x) for x in ("?", ".", "0", "1Cl")])
def test_every_site_pymatgen_would_drop_is_refused(kwargs):
    assert build_graph(_two_site_cif()).total_atoms == 2  # the valid crystal has both atoms
    with pytest.raises(StructureError, match="site X2 has the|site \\? has the|site \\. has the|site 0 has the"
                                             "|site 1Cl has the|site X2 has occupancy"):
        build_graph(_two_site_cif(**kwargs))


def test_an_empty_symmetry_operation_counts_as_the_space_group():
    text = _symmetric_cif(3000).replace("loop_\n_atom_site_label", "_symmetry_equiv_pos_as_xyz ''\nloop_\n_atom_site_label")
    with pytest.raises(StructureError, match=r"3,000 sites under 192 symmetry operations"):
        build_graph(text)


def test_numpy_and_path_arguments_to_finetune_are_plain_values(tmp_path):
    from crystalzoo import finetune

    out = tmp_path / "run"
    kwargs = dict(train_size=60, val_size=20, test_size=20, epochs=1, progress=False, out_dir=out,
                  cache_dir=tmp_path / "cache")
    save_pretrained(load_model("formation"), tmp_path / "bb")
    r = finetune(DATA / "mp200.jsonl.gz", "band_gap", backbone=tmp_path / "bb", freeze=np.int64(2), seed=np.int64(0),
                 **kwargs)
    assert json.loads((out / "metrics.json").read_text())["freeze"] == 2 and r.metrics["seed"] == 0
    r = finetune(DATA / "mp200.jsonl.gz", "band_gap", backbone=None, architecture={"n_conv": np.int64(2)},
                 overwrite=True, **kwargs)
    assert r.model.backbone.config.n_conv == 2


def test_disordered_structures_are_a_structure_error_with_the_cache_on(tmp_path):
    good = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    bad = Structure(Lattice.cubic(4.2), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(StructureError, match="partially occupied"):
        CrystalDataset.from_structures([good, bad], [1.0, 2.0], cache_dir=tmp_path, progress=False)


def test_empty_out_and_cache_folders_are_refused(tmp_path, monkeypatch):
    from crystalzoo import TrainConfig, train_model

    monkeypatch.chdir(tmp_path)
    ds = CrystalDataset.from_structures(CIFS, np.arange(len(CIFS), dtype=float), cache_dir=False, progress=False)
    model = load_model("formation")
    ds.targets = list(model.targets)
    with pytest.raises(ConfigError, match="--out is empty"):
        train_model(model, ds, ds, TrainConfig(epochs=1, progress=False), out_dir="")
    for bad in ("", True, 0):
        with pytest.raises(ConfigError, match="cache_dir = "):
            CrystalDataset.from_structures(CIFS[:1], [1.0], cache_dir=bad, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_resuming_an_early_stopped_run_trains_no_more(tmp_path):
    from crystalzoo import finetune

    kwargs = dict(train_size=60, val_size=20, test_size=20, lr=0.2, early_stopping=1, epochs=8, progress=False,
                  out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    first = finetune(DATA / "mp200.jsonl.gz", "band_gap", **kwargs)
    assert first.metrics["epochs"] < 8, "the run should stop early at this learning rate"
    again = finetune(DATA / "mp200.jsonl.gz", "band_gap", resume=True, **kwargs)
    assert again.metrics["epochs"] == first.metrics["epochs"]
    np.testing.assert_array_equal(again.model.predict(CIFS), first.model.predict(CIFS))


def test_a_cosine_run_cannot_be_extended_by_resume(tmp_path):
    from crystalzoo import finetune
    from crystalzoo.errors import RunError

    kwargs = dict(train_size=60, val_size=20, test_size=20, schedule="cosine", progress=False,
                  out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    finetune(DATA / "mp200.jsonl.gz", "band_gap", epochs=2, **kwargs)
    with pytest.raises(RunError, match="epochs \\(cosine schedule\\): 2 in the checkpoint, 3 now"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", epochs=3, resume=True, **kwargs)


def test_round_five_leftovers(tmp_path, monkeypatch, formation):
    from crystalzoo import finetune
    from crystalzoo import TrainConfig, evaluate, train_model

    with pytest.raises(ConfigError, match="data must be a CrystalDataset, a file or folder"):
        finetune([CIFS[0]], "y", epochs=1, progress=False)
    ds = CrystalDataset.from_structures(CIFS, np.arange(len(CIFS), dtype=float), cache_dir=False, progress=False)
    with pytest.raises(ConfigError, match="expected a CrystalModel"):
        evaluate(formation.backbone, ds)
    with pytest.raises(ConfigError, match="expected a CrystalModel"):
        train_model(None, ds, ds, TrainConfig(epochs=1))
    with pytest.raises(DataError, match="select_targets needs at least one target"):
        ds.select_targets([])
    long = "data_x\n" + "x" * 5000
    with pytest.raises(DataError, match="is 'data_x.{0,60}, not a number") as info:
        CrystalDataset.from_structures(CIFS[:1], [long], cache_dir=False, progress=False)
    assert len(str(info.value)) < 200
    folder = tmp_path / "cgcnn"
    folder.mkdir()
    (folder / "id_prop.csv").write_text("../outside,2\n")
    with pytest.raises(DataError, match="id '../outside' is not the name of a CIF file"):
        CrystalDataset.from_cif_folder(folder, cache_dir=False, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(ConfigError, match="WORLD_SIZE = 'abc'"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", train_size=60, val_size=20, test_size=20, epochs=1,
                 progress=False, cache_dir=tmp_path)


# ---------------------------------------------------------------------------- round six (a second fresh attack)


def test_edge_tensors_are_bounded_by_the_settings():
    with pytest.raises(ConfigError, match=r"256 × 1001 = 256,256 values per atom"):
        GraphSettings(max_neighbors=256, gaussian_step=0.008)  # each limit alone is kept
    assert GraphSettings(max_neighbors=256).n_bond_features == 41


def _cached_pack(tmp_path):
    ds = CrystalDataset.from_structures(CIFS[:3], [1.0, 2.0, 3.0], cache_dir=tmp_path, progress=False)
    [path] = (tmp_path / "graphs").glob("*.npz")
    with np.load(path) as f:
        return ds, path, {k: f[k] for k in f.files}


@pytest.mark.parametrize("corrupt", [
    lambda a: a["n_edges"].__setitem__(0, a["n_edges"][0] - 1),  # counts shifted between crystals
    lambda a: a["n_edges"].__setitem__(0, a["n_edges"][0] + 5),  # counts that do not add up
    lambda a: a["src"].__setitem__(0, 10_000),  # an edge to an atom of no crystal
    lambda a: a["dst"].__setitem__(-1, a["n_atoms"][-1]),  # an edge to the next crystal's atom
    lambda a: a["z"].__setitem__(0, 0),  # no element
    lambda a: a["distance"].__setitem__(0, np.nan),
])
def test_an_inconsistent_graph_cache_file_is_rebuilt(tmp_path, corrupt, caplog):
    ds, path, arrays = _cached_pack(tmp_path)
    corrupt(arrays)
    np.savez(path, **arrays)
    again = CrystalDataset.from_structures(CIFS[:3], [1.0, 2.0, 3.0], cache_dir=tmp_path, progress=False)
    for a, b in zip(ds.graphs, again.graphs):
        assert np.array_equal(a.src, b.src) and np.array_equal(a.dst, b.dst) and np.array_equal(a.z, b.z)
        assert np.array_equal(a.distance, b.distance)
    assert "is unreadable or inconsistent" in caplog.text and "rebuilding it" in caplog.text


def test_a_file_name_with_a_line_break_is_a_file(tmp_path, formation):
    odd = tmp_path / "my\ncrystal.cif"
    shutil.copy(CIFS[0], odd)
    assert formation.predict([str(odd)]).tolist() == formation.predict([CIFS[0]]).tolist()
    with pytest.raises(StructureError, match="CIF text"):  # no such file: the string is (bad) CIF text
        formation.predict([str(tmp_path / "missing\nfile.cif")])


def test_an_invalid_hub_repo_id_is_named_before_any_request(monkeypatch):
    import huggingface_hub

    from crystalzoo.hub import push_to_hub

    def no_request(*args, **kwargs):
        raise AssertionError("a request was made")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_request)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", no_request)
    for bad in ["a/b c", "a/..b", "-a/b"]:
        with pytest.raises(CrystalZooError, match=f"'{bad}' is not a valid Hub repo id"):
            load_model("hf-hub:" + bad)
        with pytest.raises(CrystalZooError, match=f"'{bad}' is not a valid Hub repo id"):
            push_to_hub(load_model("formation"), bad)


# ---------------------------------------------------------------------------- round seven (a third fresh attack)


def test_cif_paths_in_a_csv_are_relative_to_the_csv(tmp_path, monkeypatch, formation):
    (tmp_path / "sub").mkdir()
    shutil.copy(CIFS[0], tmp_path / "sub" / "a.cif")
    shutil.copy(CIFS[3], tmp_path / "a.cif")  # another crystal of the same name in the current folder
    (tmp_path / "sub" / "data.csv").write_text("cif,y\na.cif,1\n")
    monkeypatch.chdir(tmp_path)
    ds = CrystalDataset.from_csv("sub/data.csv", targets=["y"], cache_dir=False, progress=False)
    assert formation.predict_arrays(ds.graphs).tolist() == formation.predict([CIFS[0]]).tolist()
    (tmp_path / "sub" / "data.csv").write_text("cif,y\nmissing.cif,1\n")
    with pytest.raises(StructureError, match="sub/missing.cif: no such file"):
        CrystalDataset.from_csv("sub/data.csv", targets=["y"], cache_dir=False, progress=False)


def test_save_pretrained_extra_cannot_replace_the_models_config(formation, tmp_path):
    folder = save_pretrained(formation, tmp_path / "m")
    before = (folder / "config.json").read_bytes()
    for extra in [{"graph": {**formation.to_config()["graph"], "max_neighbors": 6}}, {"meta": "x"},
                  {"format_version": 99}, {"architecture": "other"}]:
        with pytest.raises(ConfigError, match="would set the model's own config keys"):
            save_pretrained(formation, folder, extra=extra)
    with pytest.raises(ConfigError, match="extra= takes a dict"):
        save_pretrained(formation, folder, extra=["a"])
    assert (folder / "config.json").read_bytes() == before
    assert load_model(folder).predict(CIFS[:1]).tolist() == formation.predict(CIFS[:1]).tolist()
    save_pretrained(formation, folder, extra={"notes": "mine"})  # other keys are kept
    assert json.loads((folder / "config.json").read_text())["notes"] == "mine"


def test_heads_that_cannot_be_saved_and_loaded_are_refused():
    from crystalzoo import ClassificationHead, RegressionHead

    for make in [lambda: ClassificationHead(32, ["a"]), lambda: ClassificationHead(32, []),
                 lambda: RegressionHead(32, []), lambda: RegressionHead(32, "band_gap")]:
        with pytest.raises(ConfigError, match="must be a list of"):
            make()


@pytest.mark.parametrize("convert", ["double", "half", "bfloat16", "default float64"])
def test_models_in_other_precisions_predict(convert, formation):
    import torch

    reference = formation.predict(CIFS[:2])
    if convert == "default float64":
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            model = load_model("formation")
        finally:
            torch.set_default_dtype(old)
    else:
        model = load_model("formation")
        model = model.to(torch.bfloat16) if convert == "bfloat16" else getattr(model, convert)()
    tolerance = 1e-5 if "64" in convert or convert == "double" else 0.05
    np.testing.assert_allclose(model.predict(CIFS[:2]).astype(np.float64), reference, atol=tolerance)
    assert model.embed(CIFS[:2]).shape == (2, 32)


def test_training_options_and_environment_give_crystalzoo_errors(tmp_path, monkeypatch):
    from crystalzoo import finetune, load_backbone
    from crystalzoo.training import check_run_options

    with pytest.raises(ConfigError, match="'learning_rate' is not a training option"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", learning_rate=1e-4)
    with pytest.raises(ConfigError, match="'epoch' is not a training option; did you mean 'epochs'"):
        check_run_options(epoch=3)
    with pytest.raises(ConfigError, match="backbone names a backbone .* not a CGCNNBackbone; .* use train_model"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", backbone=load_backbone("formation"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="WORLD_SIZE = 2 is set but RANK, MASTER_ADDR, MASTER_PORT not"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", train_size=40, val_size=10, test_size=10, epochs=1,
                 progress=False, cache_dir=tmp_path)


def test_small_data_sets_split_by_the_default_fractions():
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], cache_dir=False, progress=False)
    for n in range(6, 60):  # 0.8/0.1/0.1 of 16 rounded one by one is 13 + 2 + 2 = 17 crystals
        sizes = [len(part) for part in ds.subset(range(n)).split(0.8, 0.1, 0.1)]
        assert sum(sizes) <= n and min(sizes) >= 1, (n, sizes)
    assert [len(p) for p in ds.split(0.8, 0.1, 0.1)] == [160, 20, 20]  # sizes that fit are as they were


def test_one_graph_array_the_cache_variable_and_non_names(formation, tmp_path, monkeypatch):
    from crystalzoo import build_arrays
    from crystalzoo.data import default_cache_dir
    from crystalzoo.errors import UnknownBackboneError

    [one] = build_arrays(CIFS[:1], progress=False)
    assert formation.predict_arrays(one).tolist() == formation.predict(CIFS[:1]).tolist()
    monkeypatch.setenv("CRYSTALZOO_CACHE", "   ")
    assert default_cache_dir() == Path.home() / ".cache" / "crystalzoo"
    monkeypatch.setenv("CRYSTALZOO_CACHE", "~/zz")
    assert default_cache_dir() == Path.home() / "zz"
    with pytest.raises(UnknownBackboneError, match="not a NoneType"):
        load_model(None)
    assert load_model(np.str_("formation")).meta["source"] == "registered backbone 'formation'"
    with pytest.raises(ConfigError, match="names must be a list of 2 strings"):
        build_arrays(CIFS[:2], names="ab", progress=False)
    weights = tmp_path / "m"
    save_pretrained(formation, weights)
    (weights / "model.safetensors").unlink()
    (weights / "model.safetensors").mkdir()
    with pytest.raises(WeightsError, match="is not a regular file"):
        load_model(weights)


@pytest.mark.parametrize("rounded", ["0.99999", "1.00001", "1.0009"])
def test_a_nearly_full_occupancy_is_full(formation, rounded):
    """Within 0.001 of 1 on either side (1.00001 was refused with pymatgen's 'exceeded tolerance')."""
    text = Path(CIFS[0]).read_text()
    assert "_atom_site_occupancy" in text
    written = text.replace(" 1. 0 d", f" {rounded} 0 d")
    assert written.count(rounded) == 2
    assert formation.predict([written]).tolist() == formation.predict([text]).tolist()


def test_an_occupancy_above_one_names_the_site(formation):
    text = Path(CIFS[0]).read_text().replace(" 1. 0 d", " 1.5 0 d", 1)
    with pytest.raises(StructureError, match="site .* has occupancy 1.5, more than 1: a site holds at most one atom"):
        formation.predict([text])


# ---------------------------------------------------------------------------- round eight (a fourth fresh attack)


def test_a_huge_class_label_is_refused_at_once():
    from crystalzoo import make_model

    ds = CrystalDataset.from_structures(CIFS[:6], [0, 1, 0, 1, 1e12, 0], targets=["cls"], cache_dir=False,
                                        progress=False)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"label 1e\+12 of crystal '4' is not a class"):
        make_model("formation", ds, task="classification")
    assert time.perf_counter() - start < 5  # it built a set of 10**12 classes


def test_a_one_line_data_name_missing_beside_the_data_file_is_not_read_from_here(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "cwd").mkdir()
    shutil.copy(CIFS[0], tmp_path / "cwd" / "data_1.cif")
    (tmp_path / "data" / "t.csv").write_text("cif,y\ndata_1.cif,1.0\n")
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(StructureError, match="data/data_1.cif: no such file"):
        CrystalDataset.from_csv("../data/t.csv", targets=["y"], cache_dir=False, progress=False)


@pytest.mark.parametrize("corrupt", [
    lambda a: a["distance"].__setitem__(slice(None), -a["distance"]),
    lambda a: a["distance"].__setitem__(slice(None), a["distance"] * 10),
    lambda a: a["weight"].__setitem__(slice(None), 0.0),
    lambda a: a["weight"].__setitem__(slice(None), 20.0),
])
def test_impossible_distances_and_weights_in_the_cache_are_rebuilt(tmp_path, corrupt, caplog):
    test_an_inconsistent_graph_cache_file_is_rebuilt(tmp_path, corrupt, caplog)


def test_the_public_training_functions_check_their_data_and_options(formation, tmp_path):
    from crystalzoo import TrainConfig, evaluate, freeze, make_model, train_model

    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap", "formation_energy_per_atom"],
                                   limit=20, cache_dir=False, progress=False)
    one = ds.select_targets(["band_gap"])
    for call in [lambda: make_model("formation", CIFS), lambda: evaluate(formation, None),
                 lambda: train_model(formation, CIFS, CIFS)]:
        with pytest.raises(ConfigError, match="must be a CrystalDataset"):
            call()
    assert make_model(None, ds, units=["eV", "eV/atom"]).head.units == ["eV", "eV/atom"]
    with pytest.raises(ConfigError, match="2 targets but 1 units"):
        make_model(None, ds, units="eV")  # one unit string is one unit, never its letters
    with pytest.raises(ConfigError, match="architecture shapes a model trained from scratch"):
        make_model("formation", one, architecture={"n_conv": 1})
    for seed in ("a", 2**64, -1):
        with pytest.raises(ConfigError, match="seed"):
            make_model("formation", one, seed=seed)
    with pytest.raises(ConfigError, match=r"freeze takes a backbone: freeze\(model.backbone, k\)"):
        freeze(formation, 2)
    with pytest.raises(ConfigError, match="reinit needs freeze"):
        make_model("formation", one, reinit=True)
    for kwargs in (dict(lr=10**400), dict(weight_decay=10**400), dict(progress="no")):
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            TrainConfig(**kwargs)
    unlabelled = CrystalDataset.from_structures(CIFS[:4], None, targets=["band_gap"], cache_dir=False, progress=False)
    with pytest.raises(DataError, match="has no labels"):
        train_model(make_model("formation", one), unlabelled, unlabelled, TrainConfig(epochs=1, progress=False))
    with pytest.raises(DataError, match="has no labels"):
        evaluate(make_model("formation", one), unlabelled)


def test_saving_pushing_exporting_and_embedding_edge_cases(formation, tmp_path, monkeypatch):
    from crystalzoo.errors import HubError
    from crystalzoo.hub import check_metrics, push_to_hub

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="the folder name is empty"):
        save_pretrained(formation, "")
    assert not (tmp_path / "config.json").exists()
    assert check_metrics({"val": {"mae": np.float32(0.5)}, "sizes": {"train": np.int64(5)}}, "m") == \
        {"val": {"mae": 0.5}, "sizes": {"train": 5}}
    with pytest.raises(ConfigError, match="must hold JSON values"):
        check_metrics({"val": {"mae": 0.1}, "notes": {1, 2}}, "m")
    with pytest.raises(ConfigError, match="private = 'no'"):
        push_to_hub(formation, "me/x", private="no")
    with pytest.raises(HubError, match="no 'hf-hub:' prefix"):
        push_to_hub(formation, "hf-hub:me/x")
    assert formation.embed([], kind="pooled").shape == (0, 64)
    assert formation.embed([], kind="pooled", layer=0).shape == (0, 64)
    assert formation.embed([], kind="atoms") == []


def test_the_cli_logs_once_beside_a_programs_own_logging(tmp_path, capsys, monkeypatch):
    import logging

    from crystalzoo.cli import main

    root = logging.getLogger()
    handler = logging.StreamHandler()  # the program's own set-up, as logging.basicConfig makes
    root.addHandler(handler)
    save_pretrained(load_model("bulk"), tmp_path / "formation")
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["predict", "--model", "formation", str(CIFS[0])]) == 0
    finally:
        root.removeHandler(handler)
    assert capsys.readouterr().err.count("loading the folder ./formation") == 1


# ---------------------------------------------------------------------------- round ten (a sixth fresh attack)


def test_ids_of_data_files(tmp_path):
    lines = gzip.open(DATA / "mp200.jsonl.gz", "rt").read().splitlines()[:3]
    (tmp_path / "id.jsonl").write_text("\n".join(line.replace('"mp_id"', '"id"') for line in lines) + "\n")
    assert CrystalDataset.from_jsonl(tmp_path / "id.jsonl", targets=["band_gap"], cache_dir=False,
                                     progress=False).ids == ["mp-1", "mp-1000", "mp-10000"]
    with pytest.raises(DataError, match="id key 'nope' is on no line"):
        CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], id_key="nope", cache_dir=False,
                                  progress=False)
    rows = [json.loads(line) for line in lines]
    rows[0]["mp_id"] = rows[1]["mp_id"] = None
    (tmp_path / "null.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert CrystalDataset.from_jsonl(tmp_path / "null.jsonl", targets=["band_gap"], cache_dir=False,
                                     progress=False).ids == ["row 0", "row 1", "mp-10000"]
    import pandas as pd

    df = pd.DataFrame({"id": ["a", float("nan")], "cif": [str(c) for c in CIFS[:2]], "y": [1.0, 2.0]})
    assert CrystalDataset.from_dataframe(df, targets=["y"], id_column="id", cache_dir=False,
                                         progress=False).ids == ["a", "row 1"]


def test_save_pretrained_keeps_a_training_runs_folder(tmp_path, formation):
    from crystalzoo import TrainConfig, make_model, train_model

    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], limit=30, cache_dir=False,
                                   progress=False)
    train_model(make_model("formation", ds.subset(range(20)), freeze=3), ds.subset(range(20)),
                ds.subset(range(20, 30)), TrainConfig(epochs=1, progress=False), out_dir=tmp_path / "run")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="holds a training run"):
        save_pretrained(formation, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    save_pretrained(formation, tmp_path / "run", overwrite=True)  # asked for


def test_predict_takes_a_data_set_and_units_must_be_strings(formation):
    from crystalzoo import finetune

    ds = CrystalDataset.from_structures(CIFS[:3], None, targets=["y"], cache_dir=False, progress=False)
    assert formation.predict(ds).tolist() == formation.predict(CIFS[:3]).tolist()
    with pytest.raises(ConfigError, match="a unit is a string"):
        finetune(DATA / "mp200.jsonl.gz", "band_gap", units=[3])
    with pytest.raises(ConfigError, match="has 3 phases"):  # before any data is read
        finetune(DATA / "mp200.jsonl.gz", "band_gap", freeze=2, recipe="gradual", epochs=2)


def test_smaller_input_problems_of_the_newer_surface(tmp_path, capsys):
    """Weights with NaN are refused when loaded (they predicted NaN silently); 'log10:' without a
    column names the fix (it said "keys ['']"); tables keep 9 significant digits, so float32
    predictions read back exactly (7 lost some); interval columns of tiny coverages are plain
    percentages (they read "1e-07%")."""
    import pandas as pd
    from safetensors.torch import load_file, save_file

    from crystalzoo import CrystalDataset, load_model, pretrain, save_pretrained
    from crystalzoo.cli import main
    from crystalzoo.errors import WeightsError

    folder = save_pretrained(load_model("formation"), tmp_path / "nan")
    state = load_file(str(folder / "model.safetensors"))
    state["backbone.convs.1.fc_full.weight"][0, 0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="NaN or infinite values in backbone.convs.1.fc_full.weight"):
        load_model(str(folder))
    with pytest.raises(ConfigError, match="names no column: write log10:COLUMN"):
        pretrain(DATA / "mp200.jsonl.gz", ["log10:"], epochs=1, progress=False)
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", "formation", "--output", str(out), *map(str, CIFS[:5])]) == 0
    table = pd.read_csv(out)
    want = load_model("formation").predict(CIFS[:5])
    np.testing.assert_array_equal(table.iloc[:, 1].to_numpy(np.float32), want)
    as_json = tmp_path / "p.json"
    assert main(["predict", "--model", "formation", "--output", str(as_json), *map(str, CIFS[:5])]) == 0
    records = json.loads(as_json.read_text())
    np.testing.assert_array_equal(np.array([r["formation_energy_per_atom (eV/atom)"] for r in records], np.float32),
                                  want)  # JSON too: it kept 7 digits
    capsys.readouterr()
    assert main(["predict", "--model", "formation", *map(str, CIFS[:5])]) == 0
    stdout = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    np.testing.assert_array_equal(stdout.iloc[:, 1].to_numpy(np.float32), want)
    model = load_model("formation")
    model.calibrate(CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["formation_energy_per_atom"],
                                              limit=40, progress=False))
    columns = model.predict_frame(CIFS[:2], coverage=1e-9).columns.tolist()
    assert "formation_energy_per_atom (eV/atom) 0.0000001% lower" in columns
    assert "formation_energy_per_atom (eV/atom) 90% upper" in model.predict_frame(CIFS[:2], coverage=0.9).columns


def test_saving_into_a_file_jobs_of_a_data_set_and_embed_layer_are_checked_first(tmp_path, monkeypatch, capsys):
    """save_pretrained into a file said the disk may be full; n_jobs was not checked for a data set;
    crystalzoo embed --layer out of range was refused only after the graphs were built."""
    import crystalzoo.data.dataset as dataset_module
    from crystalzoo.cli import main

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt is a file: save_pretrained writes a model folder"):
        save_pretrained(load_model("formation"), a_file)
    assert a_file.read_text() == "mine"
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], limit=5, progress=False)
    for jobs in (0, "2", 1000):
        with pytest.raises(ConfigError, match="n_jobs must be a number of processes"):
            load_model("formation").predict(ds, n_jobs=jobs)

    def no_reading(*args, **kwargs):
        raise AssertionError("the data was read before --layer was checked")

    monkeypatch.setattr(dataset_module, "read_dataset", no_reading)
    assert main(["embed", "--model", "formation", "--kind", "pooled", "--layer", "9", "--data",
                 str(DATA / "mp200.jsonl.gz"), "--out", str(tmp_path / "e.csv")]) == 2
    assert "layer = 9: this backbone has 4 convolutions" in capsys.readouterr().err


def test_csv_and_json_lines_take_their_ids_by_one_rule(tmp_path):
    """A table with both an id and an mp_id column took the ids from id as CSV and from mp_id as
    JSON lines: the same crystals got other ids by format."""
    import csv

    rows = [json.loads(line) for line in gzip.open(DATA / "mp200.jsonl.gz", "rt").readlines()[:3]]
    for i, r in enumerate(rows):
        r["id"] = f"mine-{i}"
    jsonl = tmp_path / "both.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = tmp_path / "both.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "mp_id", "cif", "band_gap"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("id", "mp_id", "cif", "band_gap")} for r in rows)
    a = CrystalDataset.from_jsonl(jsonl, targets=["band_gap"], progress=False, cache_dir=False)
    b = CrystalDataset.from_csv(table, targets=["band_gap"], progress=False, cache_dir=False)
    assert a.ids == b.ids == ["mine-0", "mine-1", "mine-2"]
    by_mp = CrystalDataset.from_jsonl(jsonl, targets=["band_gap"], id_key="mp_id", progress=False, cache_dir=False)
    assert by_mp.ids == [r["mp_id"] for r in rows]


def test_an_id_column_for_a_cgcnn_folder_is_refused(tmp_path, capsys):
    """--id-column was ignored for a CGCNN folder (its ids come from id_prop.csv)."""
    from crystalzoo.cli import main

    folder = tmp_path / "cgcnn"
    folder.mkdir()
    for cif in CIFS[:3]:
        shutil.copy(cif, folder / cif.name)
    (folder / "id_prop.csv").write_text("".join(f"{c.stem},1.0\n" for c in CIFS[:3]))
    assert main(["predict", "--model", "formation", "--data", str(folder), "--id-column", "mp_id"]) == 2
    assert "is a CGCNN folder, whose ids are the first column of its id_prop.csv" in capsys.readouterr().err
    assert main(["predict", "--model", "formation", "--data", str(folder)]) == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [c.stem for c in CIFS[:3]]


def test_table_columns_ids_and_exports_that_lost_or_changed_data(tmp_path):
    """Two targets whose names with units read alike wrote one table column over the other; a
    generated 'row N' id could take a real id's place; NPZ tables dropped an id's trailing NUL;
    a half-precision model exported an ONNX graph that onnxruntime cannot run."""

    from crystalzoo import CrystalModel, RegressionHead, load_backbone
    from crystalzoo.embeddings import write_table
    from crystalzoo.errors import CrystalZooError

    backbone = load_backbone("formation")
    model = CrystalModel(backbone, RegressionHead(backbone.out_features, ["gap (eV)", "gap"], ["", "eV"]))
    frame = model.predict_frame(CIFS[:2])
    assert frame.columns.tolist() == ["id", "gap (eV) [target 1]", "gap (eV) [target 2]"]
    pred = model.predict(CIFS[:2])
    np.testing.assert_array_equal(frame.iloc[:, 1:].to_numpy(), pred)
    path = tmp_path / "ids.jsonl"
    rows = [json.loads(line) for line in gzip.open(DATA / "mp200.jsonl.gz", "rt").readlines()[:3]]
    rows[0]["mp_id"], rows[1]["mp_id"] = "row 2", None  # a real id that reads like a generated one
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = CrystalDataset.from_jsonl(path, targets=[], progress=False, cache_dir=False).ids
    assert ids == ["row 2", "row 1", rows[2]["mp_id"]] and len(set(ids)) == 3
    rows[2]["mp_id"] = "row 1"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert CrystalDataset.from_jsonl(path, targets=[], progress=False, cache_dir=False).ids == [
        "row 2", "row 1 (no id)", "row 1"]
    with pytest.raises(ConfigError, match="ends with a NUL character, which an NPZ file cannot keep"):
        write_table(tmp_path / "v.npz", ["a\0", "b"], np.zeros((2, 3), np.float32))
    assert not (tmp_path / "v.npz").exists()
    pytest.importorskip("onnxscript")
    from crystalzoo.export import export_onnx

    with pytest.raises(CrystalZooError, match="export a float32 model \\(model.float\\(\\)\\)"):
        export_onnx(load_model("formation").half(), tmp_path / "half.onnx")
    assert not (tmp_path / "half.onnx").exists()


def test_an_occupancy_of_0_999_is_full(formation):
    """1 - 0.999 is 0.0010000000000000009 in floating point: the site was refused as disordered."""
    text = Path(CIFS[0]).read_text()
    assert formation.predict([text.replace(" 1. 0 d", " 0.999 0 d")]).tolist() == formation.predict([text]).tolist()


def test_a_json_file_nested_too_deep_names_the_file(tmp_path, formation):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(StructureError, match="deep.json: holds JSON nested too deep"):
        formation.predict([path])


def test_log10_targets_of_a_cgcnn_folder_and_of_structures_are_log10(tmp_path):
    """from_cif_folder and from_structures kept the raw labels of "log10:k_vrh" under that literal
    name (a fresh attack): a model was trained on raw GPa and labelled as log10."""
    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f][:8]
    folder = tmp_path / "cg"
    folder.mkdir()
    for r in rows:
        (folder / f"{r['mp_id']}.cif").write_text(r["cif"])
    k = [r["k_vrh"] if r["k_vrh"] is not None else "" for r in rows]
    k[0] = 0.0  # not positive: missing under log10
    (folder / "id_prop.csv").write_text("".join(f"{r['mp_id']},{v}\n" for r, v in zip(rows, k)))
    from_folder = CrystalDataset.from_cif_folder(folder, targets=["log10:k_vrh"], progress=False, cache_dir=False)
    from_structures = CrystalDataset.from_structures([r["cif"] for r in rows], [np.nan if v == "" else v for v in k],
                                                     targets=["log10:k_vrh"], progress=False, cache_dir=False)
    expected = [np.nan] + [np.log10(v) if v not in ("", None) and v > 0 else np.nan for v in k[1:]]
    for ds in (from_folder, from_structures):
        assert ds.targets == ["log10_k_vrh"]
        np.testing.assert_allclose(ds.labels[:, 0], expected, rtol=1e-6)


def test_subset_takes_slices_and_refuses_a_position_twice(tmp_path):
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], limit=6, progress=False,
                                   cache_dir=tmp_path)
    assert ds.subset(slice(1, 4)).ids == ds.ids[1:4]
    with pytest.raises(DataError, match=r"positions \[0\] are given more than once"):
        ds.subset([0, 1, -6])
    with pytest.raises(DataError, match="subset takes positions"):
        ds.subset(3)


def test_a_new_cgcnn_on_graphs_of_another_radius_names_the_option():
    from crystalzoo import make_model
    from crystalzoo.errors import GraphSettingsMismatchError

    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap"], limit=4, progress=False,
                                   settings=GraphSettings(radius=6.0), cache_dir=False)
    with pytest.raises(GraphSettingsMismatchError, match=r"architecture=\{'nbr_fea_len': 31\}"):
        make_model(None, ds)
    assert make_model(None, ds, architecture={"nbr_fea_len": 31}).backbone.graph_settings.radius == 6.0


def test_ids_and_labels_read_as_the_file_means_them(tmp_path):
    """An integer id column with a gap (pandas makes it float) gave ids "1.0", which did not join
    back to the user's ids; CSV labels "1_000" and other scripts' digits were read by float()
    (a fresh attack)."""
    import pandas as pd

    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        cifs = [json.loads(line)["cif"] for line in f][:4]
    df = pd.DataFrame({"cif": cifs, "id": [1, 2, None, 4], "y": [1.0, 2.0, 3.0, 4.0]})
    ds = CrystalDataset.from_dataframe(df, targets=["y"], id_column="id", progress=False, cache_dir=False)
    assert ds.ids == ["1", "2", "row 2", "4"]
    for label in ("1_000", "\u0661\u0662"):
        table = tmp_path / "labels.csv"
        table.write_text("id,cif,y\n" + "".join(f'{i},"{c}",{label if i == 0 else 1.5}\n' for i, c in enumerate(cifs)))
        with pytest.raises(DataError, match="is not a number"):
            CrystalDataset.from_csv(table, targets=["y"], progress=False, cache_dir=False)
    table.write_text("id,cif,y\n" + "".join(f'{i},"{c}",{v}\n' for i, (c, v) in enumerate(zip(cifs, ["1e-3", "-2",
                                                                                                  ".5", "3."]))))
    assert CrystalDataset.from_csv(table, targets=["y"], progress=False, cache_dir=False).labels[:, 0].tolist() == \
        pytest.approx([1e-3, -2, 0.5, 3.0])
