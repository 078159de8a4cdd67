"""The training commands refuse bad values with one line on stderr, a non-zero exit and no
traceback, before any data is read or any file is written (docs/robustness.md, "Training runs")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crystalzoo.cli import main

from .conftest import CIFS, DATA

ROOT = Path(__file__).resolve().parents[1]
MP200 = str(DATA / "mp200.jsonl.gz")

COMMANDS = {
    "finetune": ["finetune", "--backbone", "formation", "--freeze", "2", "--data", MP200, "--target", "band_gap"],
    "pretrain": ["pretrain", "--data", MP200, "--targets", "formation_energy_per_atom"],
}
SMALL = ["--epochs", "1", "--train-size", "60", "--val-size", "20", "--test-size", "20", "--quiet"]

# (bad arguments, a word the message must contain)
BAD = [
    (["--epochs", "0"], "epochs"),
    (["--epochs", "-3"], "epochs"),
    (["--epochs", "ten"], "--epochs"),
    (["--batch-size", "0"], "batch_size"),
    (["--batch-size", "1"], "batch_size"),
    (["--lr", "nan"], "lr"),
    (["--lr", "0"], "lr"),
    (["--lr", "-0.001"], "lr"),
    (["--lr", "inf"], "lr"),
    (["--lr", "fast"], "--lr"),
    (["--seed", "-1"], "seed"),
    (["--seed", str(2**70)], "seed"),
    (["--early-stopping", "0"], "early_stopping"),
    (["--device", "gpu0"], "device"),
    (["--device", "cuda:99"], "device"),
    (["--train-size", "1.0"], "train_size"),
    (["--train-size", "0"], "train_size"),
    (["--train-size", "-5"], "train_size"),
    (["--train-size", "1.5"], "train_size"),
    (["--train-size", "abc"], "--train-size"),
    (["--val-size", "0"], "val_size"),
    (["--test-size", "nan"], "test_size"),
    (["--overwrite", "--resume"], "overwrite"),
    (["--optimizer", "adamw"], "--optimizer"),
]
if not torch.cuda.is_available():
    BAD.append((["--device", "cuda"], "cuda"))


@pytest.fixture(autouse=True)
def _graph_cache(tmp_path_factory, monkeypatch):
    """One graph cache for the module: mp200's graphs are built once."""
    monkeypatch.setenv("CRYSTALZOO_CACHE", str(tmp_path_factory.getbasetemp() / "graph-cache"))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("crystalzoo: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("bad, word", BAD, ids=[" ".join(b) for b, _ in BAD])
def test_bad_training_values_give_one_line_and_a_non_zero_exit(command, bad, word, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*COMMANDS[command], *SMALL, "--out", str(out), *bad]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exit: still must be one line and non-zero
        code = exc.code
    assert code not in (0, None)
    line = _one_error_line(capsys.readouterr().err)
    assert word in line
    assert not out.exists() or not any(out.iterdir()), "nothing may be written for a refused run"


@pytest.mark.slow
def test_the_installed_command_prints_no_traceback(tmp_path):
    """The real entry point, in a fresh process: exit status 2 and one line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for bad in (["--lr", "nan"], ["--seed", "-1"], ["--train-size", "1.0"]):
        r = subprocess.run([sys.executable, "-m", "crystalzoo.cli", *COMMANDS["finetune"], *SMALL,
                            "--out", str(tmp_path / "run"), *bad], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2, r.stderr
        _one_error_line(r.stderr)


def test_train_size_one_is_refused_not_one_crystal(tmp_path, capsys):
    """`--train-size 1.0` used to train on a single crystal (the API read it as 100 %)."""
    out = tmp_path / "run"
    code = main([*COMMANDS["finetune"], "--epochs", "1", "--train-size", "1.0", "--val-size", "20",
                 "--test-size", "0", "--quiet", "--out", str(out)])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "1.0" in line and "fraction" in line
    assert not (out / "model.safetensors").exists()


def test_sizes_have_one_meaning_in_the_cli_and_the_api(tmp_path, capsys):
    """An integer is a count, a number in (0, 1) a fraction, on the command line as in the API."""
    import json

    from crystalzoo.cli.parser import split_size

    assert split_size("60") == 60 and isinstance(split_size("60"), int)
    assert split_size("0.25") == 0.25
    out = tmp_path / "run"
    assert main([*COMMANDS["finetune"], "--epochs", "1", "--train-size", "0.5", "--val-size", "40",
                 "--test-size", "0.1", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["sizes"] == {"train": 100, "val": 40, "test": 20}


def test_cli_refuses_to_overwrite_a_run_unless_told(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*COMMANDS["finetune"], *SMALL, "--out", str(out)]
    assert main(argv) == 0
    metrics = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--seed", "1"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "already holds a run" in line and "--overwrite" in line and "--resume" in line
    assert (out / "metrics.json").read_bytes() == metrics
    assert main([*argv, "--seed", "1", "--overwrite"]) == 0
    assert (out / "metrics.json").read_bytes() != metrics


# finetune's backbone options: (arguments after the data and target, a word the message must contain)
BAD_BACKBONE = [
    (["--backbone", "formation", "--freeze", "99"], "freeze"),
    (["--backbone", "formation", "--freeze", "-1"], "freeze"),
    (["--backbone", "no-such-model"], "no-such-model"),
    (["--backbone", "formation", "--reinit"], "reinit"),
    (["--backbone", "none", "--freeze", "1"], "freeze"),
]


@pytest.mark.parametrize("bad, word", BAD_BACKBONE, ids=[" ".join(b) for b, _ in BAD_BACKBONE])
def test_backbone_options_are_checked_before_the_data_is_read(bad, word, tmp_path, capsys, monkeypatch):
    """--freeze 99, an unknown --backbone and --reinit without --freeze used to be found only
    after the data was read and --out was made."""
    import crystalzoo.training.runs as training

    def no_reading(*args, **kwargs):
        raise AssertionError("the data was read before the options were checked")

    monkeypatch.setattr(training, "read_dataset", no_reading)
    out = tmp_path / "run"
    code = main(["finetune", "--data", MP200, "--target", "band_gap", *SMALL, "--out", str(out), *bad])
    assert code == 2
    assert word in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_empty_out_is_refused_not_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*COMMANDS["finetune"], *SMALL, "--out", ""]) == 2
    assert "--out is empty" in _one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_a_run_refused_after_reading_the_data_leaves_no_folder(tmp_path, capsys):
    """A validation fraction that rounds to no crystal is only known once the data is read;
    the run folder it made is removed again (it holds nothing)."""
    out = tmp_path / "new" / "run"
    code = main([*COMMANDS["finetune"], "--epochs", "1", "--train-size", "60", "--val-size", "0.001",
                 "--test-size", "0", "--quiet", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("crystalzoo: error: val_size = 0.001 is no crystal of the 200 in the "
                                            "data set; give a larger fraction or a count")
    assert not out.exists()


def test_predict_writes_quoted_csv(tmp_path, capsys):
    import csv
    import io
    import shutil

    cifs = DATA / "cifs"
    odd = tmp_path / 'a, "b".cif'
    shutil.copy(cifs / "1000041.cif", odd)
    assert main(["predict", "--model", "formation", str(odd), str(cifs / "1000050.cif")]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["file", "formation_energy_per_atom (eV/atom)"]
    assert [r[0] for r in rows[1:]] == [str(odd), str(cifs / "1000050.cif")]
    assert all(len(r) == 2 and float(r[1]) < 0 for r in rows[1:])


@pytest.mark.parametrize("command", ["info", "download"])
def test_info_and_download_follow_the_folder_rule(command, tmp_path, capsys, monkeypatch):
    """`predict --model band-gap` loads ./band-gap when it is a model folder; `info band-gap`
    must not describe the registered model instead."""
    from crystalzoo import load_model
    from crystalzoo.serialization import save_pretrained

    save_pretrained(load_model("band-gap"), tmp_path / "band-gap")
    monkeypatch.chdir(tmp_path)
    assert main([command, "band-gap"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "local folder" in line and "config.json" in line
    assert main([command, "hf-hub:me/model"]) == 2
    assert "Hub" in _one_error_line(capsys.readouterr().err)


def test_overwrite_keeps_the_earlier_run_when_the_new_one_cannot_start(tmp_path, capsys):
    """--overwrite used to delete the earlier run before it read the data: a missing file or a
    misspelt target lost the run and wrote no new one."""
    out = tmp_path / "run"
    argv = [*COMMANDS["finetune"], *SMALL, "--out", str(out)]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    for bad in (["--data", str(tmp_path / "nosuch.jsonl")], ["--target", "band_gapp"]):
        assert main([*argv, "--overwrite", *bad]) == 2
        assert "Traceback" not in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_baseline_with_overwrite_never_clears_the_backbone_folder(tmp_path, capsys):
    from crystalzoo import load_model
    from crystalzoo.serialization import save_pretrained

    backbone = save_pretrained(load_model("formation"), tmp_path / "X" / "baseline")
    weights = (backbone / "model.safetensors").read_bytes()
    code = main(["finetune", "--backbone", str(backbone), "--freeze", "4", "--baseline", "--overwrite", "--data", MP200,
                 "--target", "band_gap", *SMALL, "--out", str(tmp_path / "X")])
    assert code == 2
    assert "is the folder of --backbone" in _one_error_line(capsys.readouterr().err)
    assert (backbone / "model.safetensors").read_bytes() == weights


def test_a_path_the_file_system_refuses_is_one_line(tmp_path, capsys):
    long = str(tmp_path / ("a" * 300))
    assert main([*COMMANDS["finetune"], *SMALL, "--out", long]) == 2
    assert "File name too long" in _one_error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_predict_into_a_closed_pipe_is_quiet(tmp_path):
    """`crystalzoo predict … | head -1` printed 'error: Broken pipe' and exited 2."""
    cifs = [str(p) for p in sorted((DATA / "cifs").glob("*.cif"))] * 200
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(f"{sys.executable} -m crystalzoo.cli predict --model formation {' '.join(cifs)} | head -1",
                       shell=True, env=env, capture_output=True, text=True, timeout=300)
    assert r.stdout.startswith("file,") and r.stdout.count("\n") == 1
    assert "error" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_predict_arguments_are_files_never_cif_text(capsys, tmp_path):
    text = (DATA / "cifs" / "1000041.cif").read_text()
    assert main(["predict", "--model", "formation", text]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "characters): cannot be read (File name too long)" in line and len(line) < 300
    assert main(["predict", "--model", "formation", str(tmp_path / "data_foo")]) == 2
    assert "data_foo: no such file" in _one_error_line(capsys.readouterr().err)


def test_overwrite_does_not_leave_an_old_baseline_beside_a_new_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*COMMANDS["finetune"], *SMALL, "--baseline", "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "baseline" / "metrics.json").read_bytes()
    assert main([*COMMANDS["finetune"], *SMALL, "--overwrite", "--out", str(out)]) == 2
    assert "holds the baseline of the run --overwrite replaces" in _one_error_line(capsys.readouterr().err)
    assert (out / "baseline" / "metrics.json").read_bytes() == before
    assert main([*COMMANDS["finetune"], *SMALL, "--overwrite", "--baseline", "--out", str(out)]) == 0


def test_version_module_entry_and_an_aligned_list(capsys):
    import subprocess
    import sys

    import crystalzoo

    out = subprocess.run([sys.executable, "-m", "crystalzoo", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"crystalzoo {crystalzoo.__version__}"
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len({line.index(" regression") if " regression" in line else line.index(" classification")
                for line in lines[1:]} | {lines[0].index(" task")}) == 1  # the task column starts at one place


def test_an_output_inside_the_model_folder_is_refused(tmp_path, capsys):
    """crystalzoo predict --output MODEL/config.json --overwrite replaced the model's config with a
    prediction table, and the folder no longer loaded; embed --out likewise."""
    from crystalzoo import load_model, save_pretrained
    from crystalzoo.cli import main

    folder = save_pretrained(load_model("formation"), tmp_path / "model")
    before = (folder / "config.json").read_bytes()
    cif = str(CIFS[0])
    for argv in (["predict", "--model", str(folder), "--output", str(folder / "config.json"), "--overwrite", cif],
                 ["predict", "--model", str(folder), "--output", str(folder / "sub" / "p.csv"), cif],
                 ["embed", "--model", str(folder), "--out", str(folder / "config.csv"), "--overwrite", cif]):
        assert main(argv) == 2
        assert "inside the folder of --model" in capsys.readouterr().err
    assert (folder / "config.json").read_bytes() == before and load_model(str(folder)).targets
    assert main(["predict", "--model", str(folder), "--output", str(tmp_path / "p.csv"), cif]) == 0
    # the files of another saved model than the one predicting (a fresh attack)
    assert main(["predict", "--model", "formation", "--output", str(folder / "config.json"), "--overwrite", cif]) == 2
    assert "is a file of the saved model in" in capsys.readouterr().err
    assert (folder / "config.json").read_bytes() == before
    assert main(["predict", "--model", "formation", "--output", str(folder / "new.csv"), cif]) == 0  # a new file


def test_an_output_that_is_a_structure_file_of_the_data_is_refused(tmp_path, capsys):
    """crystalzoo predict --data set.csv --output STRUCTURE.json --overwrite replaced a (pymatgen
    JSON) structure file that a row of the data set named, and the crystal was lost."""
    from pymatgen.core import Structure

    from crystalzoo.cli import main

    (tmp_path / "structs").mkdir()
    (tmp_path / "data").mkdir()
    for i, cif in enumerate(CIFS[:2]):
        Structure.from_file(cif).to(filename=str(tmp_path / "structs" / f"s{i}.json"))
    table = tmp_path / "data" / "set.csv"
    table.write_text("id,cif\n" + "".join(f"x{i},../structs/s{i}.json\n" for i in range(2)))
    target = tmp_path / "structs" / "s0.json"
    before = target.read_bytes()
    assert main(["predict", "--model", "formation", "--data", str(table), "--output", str(target), "--overwrite",
                 "--quiet"]) == 2
    assert "is a structure file of the data being read" in capsys.readouterr().err
    assert target.read_bytes() == before
    assert main(["predict", "--model", "formation", "--data", str(table), "--output",
                 str(tmp_path / "structs" / "p.json"), "--quiet"]) == 0  # beside them is fine
