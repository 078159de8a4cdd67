"""The registry: names, metadata, strict loading, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crystalzoo import get_backbone_info, list_backbones, load_backbone, load_model
from crystalzoo.errors import GraphSettingsMismatchError, UnknownBackboneError, WeightsError
from crystalzoo.graphs import GraphSettings
from crystalzoo.registry import bundled_path
from crystalzoo.files import sha256_file

ROOT = Path(__file__).resolve().parents[1]


def test_registered_names():
    names = list_backbones()
    for name in ["formation", "bulk", "shear", "band-gap", "fermi-energy", "total-energy",
                 "poisson-ratio", "metal-classifier"]:
        assert name in names
    assert list_backbones(task="classification") == ["metal-classifier"]


def test_info_has_what_a_user_needs():
    info = get_backbone_info("shear")
    assert info.units == ["log10(GPa)"] and info.task == "regression"
    assert info.training_data["train"] == 2041
    assert info.metrics[0]["split"] == "validation"
    assert info.graph_settings == GraphSettings()
    assert info.num_params == sum(p.numel() for p in load_model("shear").parameters())
    assert "Tian Xie" in info.license and "Xie" in info.citation
    assert info.sha256 == sha256_file(bundled_path(info.filename))


def test_manifest_is_one_file_shipped_in_the_package():
    top = ROOT / "weights_manifest.json"
    assert json.loads(top.read_text()) == json.loads((ROOT / "crystalzoo" / "weights_manifest.json").read_text())


def test_manifest_agrees_with_bundled_files():
    manifest = json.loads((ROOT / "weights_manifest.json").read_text())
    for name, entry in manifest["weights"].items():
        f = entry["file"]
        if f["bundled"]:
            path = bundled_path(f["filename"])
            assert path.stat().st_size == f["size"], name
            assert sha256_file(path) == f["sha256"], name
        assert entry["hub"]["published"] == (entry["hub"]["revision"] is not None)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownBackboneError, match="Did you mean 'formation'"):
        load_backbone("formaton")


def test_graph_settings_mismatch_on_load():
    with pytest.raises(GraphSettingsMismatchError, match="radius"):
        load_model("formation", graph_settings=GraphSettings(radius=6.0))
    load_model("formation", graph_settings=GraphSettings())  # the same settings load


def test_not_pretrained_is_random_but_same_shape():
    a, b = load_backbone("formation", pretrained=False), load_backbone("formation")
    assert a.config == b.config
    assert not torch.equal(a.embedding.weight, b.embedding.weight)


def test_strict_loading_refuses_other_architectures(tmp_path):
    from crystalzoo.serialization import save_pretrained

    folder = save_pretrained(load_model("formation"), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["backbone"]["atom_fea_len"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="wrong shape"):
        load_model(str(folder))


def test_local_folder_round_trip(tmp_path, cif_paths):
    from crystalzoo.serialization import save_pretrained

    model = load_model("bulk")
    folder = save_pretrained(model, tmp_path / "bulk-copy")
    again = load_model(str(folder))
    assert (again.predict(cif_paths) == model.predict(cif_paths)).all()


def test_predict_takes_one_crystal_or_many(cif_paths):
    from pymatgen.core import Structure

    model = load_model("formation")
    s = Structure.from_file(cif_paths[0])
    many = model.predict([s, cif_paths[0], cif_paths[0].read_text()])
    assert many.shape == (3,) and float(many.std()) < 1e-6
    assert model.predict(s).shape == (1,) and model.predict(str(cif_paths[0]))[0] == many[0]


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_name_loads_verifies_and_predicts(name, cif_paths):
    """As timm's test of every model: each registered name loads from its verified file (sha256
    as the manifest says) and predicts finite values (class probabilities summing to 1)."""
    import numpy as np

    from crystalzoo.registry import weights_file

    info = get_backbone_info(name)
    assert sha256_file(weights_file(name)) == info.sha256
    model = load_model(name)
    pred = model.predict(cif_paths)
    assert len(pred) == len(cif_paths) and np.isfinite(pred).all()
    if model.task == "classification":
        np.testing.assert_allclose(pred.sum(axis=1), 1, rtol=1e-5)
    assert load_backbone(name, freeze=1).frozen == 1
