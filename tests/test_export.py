"""A model on CrystalGraph input exports to ONNX and runs under torch.compile with the
outputs of eager mode (the [export] extra; torch >= 2.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalzoo import build_arrays, collate, load_model

from .helpers import onnx_session

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 5):
    pytest.skip("ONNX export and torch.compile need torch >= 2.5", allow_module_level=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["formation", "attention-formation", "metal-classifier", "combined"])
def test_onnx_export_matches_eager(name, mp200_structures, tmp_path):
    from crystalzoo.export import export_onnx, onnx_inputs

    model = load_model(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    session = onnx_session(path)
    # other numbers of crystals, atoms and edges than the export's example
    for part in (mp200_structures[:64], mp200_structures[100:101]):
        g = collate(build_arrays(part, model.graph_settings, progress=False), model.graph_settings)
        (got,) = session.run(None, onnx_inputs(g))
        want = model.predict(part)
        np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-5, rtol=1e-5)


def test_export_refuses_what_is_not_a_model(tmp_path):
    from crystalzoo.errors import CrystalZooError
    from crystalzoo.export import export_onnx

    with pytest.raises(CrystalZooError, match="takes a CrystalModel"):
        export_onnx(load_model("formation").backbone, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_compiled_model_matches_eager(mp200_structures):
    model = load_model("formation")
    g = collate(build_arrays(mp200_structures[:48], progress=False))
    compiled = torch.compile(model, dynamic=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(g), model(g), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_cli_export_writes_and_never_overwrites(tmp_path, capsys):
    import onnxruntime

    from crystalzoo.cli import main

    out = tmp_path / "bulk.onnx"
    assert main(["export", "--model", "bulk", "--out", str(out)]) == 0
    assert "log10(GPa)" in capsys.readouterr().out
    assert onnxruntime.InferenceSession(str(out)).get_inputs()[0].name == "atom_fea"
    before = out.read_bytes()
    assert main(["export", "--model", "formation", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_cli_export_names_a_bad_out_before_any_work(tmp_path, capsys):
    from crystalzoo.cli import main

    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "file").write_text("")
    for out, message in [("", "the ONNX file name is empty"), (tmp_path / "folder.onnx", "is a folder"),
                         (tmp_path / "file" / "m.onnx", "is a file, not a folder")]:
        assert main(["export", "--model", "formation", "--out", str(out), "--overwrite"]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.onnx"]


def test_export_onnx_never_replaces_a_file_unasked(tmp_path):
    from crystalzoo import load_model, save_pretrained
    from crystalzoo.errors import CrystalZooError
    from crystalzoo.export import export_onnx

    folder = save_pretrained(load_model("formation"), tmp_path / "m")
    weights = (folder / "model.safetensors").read_bytes()
    with pytest.raises(CrystalZooError, match="ends in .onnx"):
        export_onnx(load_model(folder), folder / "model.safetensors", overwrite=True)
    (tmp_path / "old.onnx").write_text("mine")
    with pytest.raises(CrystalZooError, match="old.onnx exists; pass --overwrite"):
        export_onnx(load_model(folder), tmp_path / "old.onnx")
    assert (folder / "model.safetensors").read_bytes() == weights and (tmp_path / "old.onnx").read_text() == "mine"


def test_export_onnx_checks_its_example_and_opset_first(tmp_path):
    from crystalzoo import load_model
    from crystalzoo.errors import CrystalZooError
    from crystalzoo.export import export_onnx

    for kwargs, match in [(dict(example="x"), "example must be a CrystalGraph"), (dict(opset=7), "opset = 7")]:
        with pytest.raises(CrystalZooError, match=match):
            export_onnx(load_model("formation"), tmp_path / "m.onnx", **kwargs)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_onnx_export_keeps_a_composition_reference(mp200_structures, tmp_path):
    from crystalzoo import pretrain
    from crystalzoo.export import export_onnx, onnx_inputs
    from .conftest import DATA

    model = pretrain(DATA / "mp200.jsonl.gz", ["energy_per_atom"], train_size=60, val_size=20, test_size=0, epochs=1,
                     progress=False, reference="composition").model
    path = export_onnx(model, tmp_path / "ref.onnx")
    session = onnx_session(path)
    g = collate(build_arrays(mp200_structures[:32], model.graph_settings, progress=False), model.graph_settings)
    (got,) = session.run(None, onnx_inputs(g))
    want = model.predict(mp200_structures[:32])
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-4, rtol=1e-5)
