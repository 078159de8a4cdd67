"""The maintainers' registry writes (crystalzoo.maintainer), on a copy of the manifest and of the
bundled weights folder: registering and renaming weights, and the names that would share a file."""

from __future__ import annotations

import shutil

import pytest

from crystalzoo import load_model, save_pretrained
from crystalzoo.errors import ConfigError
from crystalzoo.files import sha256_file


@pytest.fixture
def registry(tmp_path, monkeypatch):
    import crystalzoo.maintainer as maintainer
    import crystalzoo.manifest as manifest_module
    from crystalzoo.manifest import manifest_path
    from crystalzoo.registry import bundled_path

    copy = tmp_path / "weights_manifest.json"
    shutil.copy(manifest_path(), copy)
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("cgcnn-shear.safetensors", "schnet-combined.safetensors"):
        shutil.copy(bundled_path(name), weights / name)
    monkeypatch.setattr(manifest_module, "manifest_path", lambda: copy)
    monkeypatch.setattr(maintainer, "bundled_path", lambda filename: weights / filename)
    return maintainer, weights


INFO = dict(description="a test entry", training_data={"dataset": "none"}, metrics=[], source="tests")


def test_register_then_rename_moves_the_file_and_keeps_the_entry(registry, tmp_path):
    maintainer, weights = registry
    from crystalzoo.manifest import read_manifest

    folder = tmp_path / "model"
    save_pretrained(load_model("schnet-combined"), folder)
    entry = maintainer.register_weights("trial", folder, **INFO)
    assert entry["file"]["filename"] == "schnet-trial.safetensors"  # the family, then the name
    assert entry["file"]["sha256"] == sha256_file(weights / "schnet-trial.safetensors")
    assert entry["hub"] == {"repo_id": "crystalzoo/schnet-trial", "revision": None, "published": False}
    names = list(read_manifest()["weights"])
    maintainer.rename_registered("trial", "schnet-trial-2")  # a name that starts with the family keeps it once
    renamed = read_manifest()["weights"]
    assert list(renamed) == [n if n != "trial" else "schnet-trial-2" for n in names]  # in its place
    assert renamed["schnet-trial-2"]["file"]["filename"] == "schnet-trial-2.safetensors"
    assert renamed["schnet-trial-2"]["hub"]["repo_id"] == "crystalzoo/schnet-trial-2"
    assert (weights / "schnet-trial-2.safetensors").exists() and not (weights / "schnet-trial.safetensors").exists()


def test_two_names_of_one_file_are_refused(registry, tmp_path):
    """"combined" for a SchNet model is stored as schnet-combined.safetensors, which the registered
    schnet-combined already is: registering it would overwrite those weights."""
    maintainer, weights = registry
    from crystalzoo.manifest import read_manifest

    before = sha256_file(weights / "schnet-combined.safetensors")
    folder = tmp_path / "model"
    save_pretrained(load_model("schnet-combined"), folder)
    with pytest.raises(ConfigError, match="'schnet-combined' are stored as schnet-combined.safetensors"):
        maintainer.register_weights("combined", folder, **INFO)
    with pytest.raises(ConfigError, match="'schnet-combined' are stored as"):  # one file where case is ignored
        maintainer.register_weights("Combined", folder, **INFO)
    assert sha256_file(weights / "schnet-combined.safetensors") == before
    assert "cgcnn-combined.safetensors" == read_manifest()["weights"]["combined"]["file"]["filename"]
    with pytest.raises(ConfigError, match="'bulk' are stored as cgcnn-bulk.safetensors"):
        maintainer.rename_registered("shear", "cgcnn-bulk")
    assert (weights / "cgcnn-shear.safetensors").exists() and "shear" in read_manifest()["weights"]
    with pytest.raises(ConfigError, match="cannot rename 'shear' to 'bulk'"):
        maintainer.rename_registered("shear", "bulk")
