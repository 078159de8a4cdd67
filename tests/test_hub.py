"""Hub round trips with the real huggingface_hub client against a local Hub-compatible server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crystalzoo import load_backbone, load_model
from crystalzoo.errors import ChecksumError, HubError
from crystalzoo.hub import push_to_hub

from .conftest import CIFS


def test_push_then_load_by_pinned_revision_then_offline(hub, monkeypatch):
    model = load_model("bulk")
    commit = push_to_hub(model, "alice/bulk-copy", metrics={"test": {"mae": 0.05}, "sizes": {"train": 10}})
    assert len(commit) == 40
    files = hub.state.repos["alice/bulk-copy"]["commits"][commit]
    assert {"model.safetensors", "config.json", "README.md", "metrics.json"} <= set(files)
    card = files["README.md"].decode()
    assert "hf-hub:alice/bulk-copy" in card and "| test | mae (log10(GPa)) | 0.0500 |" in card
    config = json.loads(files["config.json"])
    assert config["graph"]["radius"] == 8.0 and config["head"]["units"] == ["log10(GPa)"]

    loaded = load_model(f"hf-hub:alice/bulk-copy@{commit}")
    np.testing.assert_array_equal(loaded.predict(CIFS), model.predict(CIFS))
    assert commit in loaded.meta["source"]

    hub.stop()  # the server is gone: the pinned revision still loads from the cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_model(f"hf-hub:alice/bulk-copy@{commit}")
    np.testing.assert_array_equal(offline.predict(CIFS), model.predict(CIFS))
    backbone = load_backbone(f"hf-hub:alice/bulk-copy@{commit}", freeze=2)
    assert backbone.frozen == 2


def test_latest_revision_is_reported_and_new_pushes_get_new_commits(hub, caplog):
    first = push_to_hub(load_model("bulk"), "alice/m")
    second = push_to_hub(load_model("shear"), "alice/m")
    assert first != second
    with caplog.at_level("INFO", logger="crystalzoo"):
        latest = load_model("hf-hub:alice/m")
    assert latest.targets == ["log10_shear_modulus"]
    assert f"loaded hf-hub:alice/m at commit {second}" in caplog.text and second in latest.meta["source"]
    assert load_model(f"hf-hub:alice/m@{first}").targets == ["log10_bulk_modulus"]


def test_missing_revision_and_repo(hub):
    push_to_hub(load_model("bulk"), "alice/m")
    with pytest.raises(HubError, match="revision '0000000000000000000000000000000000000000' does not exist"):
        load_model("hf-hub:alice/m@" + "0" * 40)
    with pytest.raises(HubError, match="no Hub repo alice/nothing"):
        load_model("hf-hub:alice/nothing")


def test_corrupted_download_is_refused(hub):
    push_to_hub(load_model("bulk"), "alice/m")
    hub.state.corrupt.add("model.safetensors")
    with pytest.raises(ChecksumError, match="does not match the sha256"):
        load_model("hf-hub:alice/m")


@pytest.mark.slow
def test_interrupted_download_leaves_nothing_that_looks_valid(hub, tmp_path):
    commit = push_to_hub(load_model("bulk"), "alice/m")
    hub.state.truncate.add("model.safetensors")
    with pytest.raises(HubError):
        load_model(f"hf-hub:alice/m@{commit}")
    snapshot = tmp_path / "hf-cache" / "models--alice--m" / "snapshots" / commit
    assert not (snapshot / "model.safetensors").exists()
    hub.state.truncate.clear()  # the network is back: the next load completes and verifies
    assert load_model(f"hf-hub:alice/m@{commit}").targets == ["log10_bulk_modulus"]


@pytest.mark.slow  # huggingface_hub's backoff: 23 s of retries against the stopped server
def test_unreachable_server_then_offline_fallback(hub, monkeypatch):
    commit = push_to_hub(load_model("bulk"), "alice/m")
    load_model("hf-hub:alice/m")  # caches main -> commit
    hub.stop()
    with pytest.raises(HubError, match="not in the local cache"):
        load_model("hf-hub:alice/other")
    # a cached repo still loads when the Hub is down, through the cached ref
    assert load_model(f"hf-hub:alice/m@{commit}", local_files_only=True).targets == ["log10_bulk_modulus"]
    assert load_model("hf-hub:alice/m").targets == ["log10_bulk_modulus"]


def _unbundle(monkeypatch, tmp_path, name, revision, repo_id):
    """Make the registry treat `name` as not bundled and published at `revision`."""
    import crystalzoo.registry as registry
    from crystalzoo.manifest import read_manifest

    manifest = read_manifest()
    entry = manifest["weights"][name]
    entry["file"]["bundled"] = False
    entry["hub"].update(repo_id=repo_id, revision=revision, published=True)
    monkeypatch.setattr(registry, "read_manifest", lambda: manifest)
    return entry


def test_registered_weights_from_the_hub_are_verified(hub, monkeypatch, tmp_path):
    from crystalzoo.registry import bundled_path, weights_file

    # publish the bundled file under its manifest name, as the maintainers do
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token="hf_test_token")
    api.create_repo("crystalzoo/cgcnn-bulk")
    info = api.upload_file(path_or_fileobj=str(bundled_path("cgcnn-bulk.safetensors")),
                           path_in_repo="cgcnn-bulk.safetensors", repo_id="crystalzoo/cgcnn-bulk")
    _unbundle(monkeypatch, tmp_path, "bulk", info.oid, "crystalzoo/cgcnn-bulk")
    path = weights_file("bulk")
    assert "hf-cache" in str(path)
    reference = load_model("bulk").predict(CIFS)

    # corrupt the cached copy: it is detected and replaced from the Hub, never used
    blob = path.resolve()
    blob.write_bytes(b"garbage" + blob.read_bytes()[7:])
    np.testing.assert_array_equal(load_model("bulk").predict(CIFS), reference)

    # offline with a corrupt cache: a clear error, not a wrong model
    path.resolve().write_bytes(b"garbage")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ChecksumError, match="corrupt"):
        load_model("bulk")


def test_unpublished_and_not_bundled_is_a_clear_error(monkeypatch, tmp_path):
    _unbundle(monkeypatch, tmp_path, "bulk", None, "crystalzoo/cgcnn-bulk")
    with pytest.raises(HubError, match="not published on the Hub yet"):
        load_model("bulk")


def test_finetuned_folder_pushes_with_its_metrics(hub, tmp_path):
    from crystalzoo.cli import main

    out = tmp_path / "ft"
    from crystalzoo import finetune

    finetune(str(Path(__file__).parent / "data" / "mp200.jsonl.gz"), "formation_energy_per_atom", backbone="bulk",
             freeze=3, train_size=60, val_size=20, test_size=20, epochs=2, progress=False, out_dir=out,
             cache_dir=tmp_path / "cache")
    assert main(["push", "--model", str(out), "--repo-id", "alice/ft"]) == 0
    files = hub.state.repos["alice/ft"]["commits"][hub.state.repos["alice/ft"]["branches"]["main"]]
    card = files["README.md"].decode()
    assert "Fine-tuned from the crystalzoo backbone `bulk`" in card and "| test | mae |" in card
    meta = json.loads(files["config.json"])["meta"]
    assert meta["backbone"] == "bulk" and meta["freeze"] == 3
    assert "frozen" not in json.loads(files["config.json"])  # the number of frozen layers is meta["freeze"]
    assert str(tmp_path) not in files["config.json"].decode() and "source" not in meta  # no path of this machine

    # trained further after loading: the folder's metrics.json no longer describes the weights
    from crystalzoo import TrainConfig, train_model
    from crystalzoo.data import CrystalDataset

    model = load_model(out)
    data = CrystalDataset.from_jsonl(Path(__file__).parent / "data" / "mp200.jsonl.gz",
                                     targets=["formation_energy_per_atom"], limit=40, progress=False, cache_dir=False)
    train_model(model, data.subset(range(30)), data.subset(range(30, 40)), TrainConfig(epochs=1, progress=False))
    push_to_hub(model, "alice/ft2")
    files = hub.state.repos["alice/ft2"]["commits"][hub.state.repos["alice/ft2"]["branches"]["main"]]
    assert "metrics.json" not in files and "| test | mae |" not in files["README.md"].decode()


def test_push_checks_its_arguments_before_any_request(hub, tmp_path):
    from crystalzoo.errors import ConfigError

    model = load_model("bulk")
    for filename in ["../evil.safetensors", "/tmp/evil.safetensors", "config.json", "", ".safetensors"]:
        with pytest.raises(ConfigError, match="a plain file name ending in .safetensors"):
            push_to_hub(model, "alice/x", filename=filename)
    with pytest.raises(ConfigError, match="push_to_hub takes a CrystalModel"):
        push_to_hub(load_backbone("bulk"), "alice/x")
    with pytest.raises(ConfigError, match="not both"):
        push_to_hub(model, "alice/x", metrics={"val": {"mae": 1.0}}, metrics_file=tmp_path / "m.json")
    assert "alice/x" not in hub.state.repos and not Path("/tmp/evil.safetensors").exists()


def test_pushed_metrics_are_strict_json(hub):
    """A metric that does not exist (NaN: a target with no validation label) was written as
    the bare word NaN, which no strict JSON reader accepts."""
    push_to_hub(load_model("bulk"), "alice/nan-metrics", metrics={"val": {"mae": float("nan")}, "test": {"mae": 0.1}})
    files = hub.state.repos["alice/nan-metrics"]["commits"][hub.state.repos["alice/nan-metrics"]["branches"]["main"]]

    def strict(constant):
        raise ValueError(f"not strict JSON: {constant}")

    metrics = json.loads(files["metrics.json"], parse_constant=strict)
    assert metrics == {"val": {"mae": None}, "test": {"mae": 0.1}}
    json.loads(files["config.json"], parse_constant=strict)


def test_publish_registered_pins_the_commit_in_the_manifest(hub, monkeypatch, tmp_path):
    import crystalzoo.manifest as manifest_module
    from crystalzoo.maintainer import publish_registered
    from crystalzoo.manifest import manifest_path, read_manifest

    copy = tmp_path / "weights_manifest.json"
    shutil.copy(manifest_path(), copy)
    monkeypatch.setattr(manifest_module, "manifest_path", lambda: copy)
    commit = publish_registered("shear", repo_id="crystalzoo-test/cgcnn-shear")
    entry = read_manifest()["weights"]["shear"]
    assert entry["hub"] == {"repo_id": "crystalzoo-test/cgcnn-shear", "revision": commit, "published": True}
    files = hub.state.repos["crystalzoo-test/cgcnn-shear"]["commits"][commit]
    import hashlib

    assert hashlib.sha256(files[entry["file"]["filename"]]).hexdigest() == entry["file"]["sha256"]


def test_pushed_configs_hold_no_local_paths(hub, tmp_path):
    from crystalzoo import finetune, save_pretrained

    backbone_folder = tmp_path / "runs" / "my-backbone"
    save_pretrained(load_model("formation"), backbone_folder)
    r = finetune(str(Path(__file__).parent / "data" / "mp200.jsonl.gz"), "band_gap", backbone=str(backbone_folder),
                 freeze=3, train_size=40, val_size=10, test_size=10, epochs=1, progress=False,
                 out_dir=tmp_path / "ft", cache_dir=tmp_path / "cache")
    push_to_hub(load_model(tmp_path / "ft"), "alice/local")
    files = hub.state.repos["alice/local"]["commits"][hub.state.repos["alice/local"]["branches"]["main"]]
    assert str(tmp_path) not in files["config.json"].decode() and str(tmp_path) not in files["README.md"].decode()
    assert json.loads(files["config.json"])["meta"]["backbone"] == "my-backbone (a local folder)"
    assert json.loads(files["metrics.json"])["backbone"] == "my-backbone (a local folder)"  # the metrics too
    assert str(tmp_path) not in files["metrics.json"].decode()
    assert r.model.meta["backbone"] == str(backbone_folder)  # the local model keeps its own record


# ---------------------------------------------------------------------------- model cards


def _card_metadata(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def band_gap_run(tmp_path_factory):
    from crystalzoo import finetune

    out = tmp_path_factory.mktemp("runs") / "bg"
    finetune(str(Path(__file__).parent / "data" / "mp200.jsonl.gz"), "band_gap", backbone="formation", freeze=2,
             units="eV", train_size=80, val_size=40, test_size=40, epochs=1, progress=False, out_dir=out)
    return out


def test_card_metadata_is_made_from_the_model_and_its_metrics(hub, band_gap_run):
    """The card's YAML parses and holds what the Hub reads: library, pipeline tag, license,
    base model, data, tags and a model-index with the metrics (units in their names)."""
    commit = push_to_hub(load_model(str(band_gap_run)), "alice/bg", tags=["band-gap", "oxides"])
    files = hub.state.repos["alice/bg"]["commits"][commit]
    card = files["README.md"].decode()
    meta = _card_metadata(card)
    assert meta["library_name"] == "crystalzoo" and meta["pipeline_tag"] == "graph-ml" and meta["license"] == "mit"
    assert meta["base_model"] == "crystalzoo/cgcnn-formation"
    assert meta["datasets"] == ["mp200.jsonl.gz"]  # the file's name, not its folder
    assert {"materials-science", "cgcnn", "band-gap", "oxides"} <= set(meta["tags"])
    results = meta["model-index"][0]["results"]
    metrics = {(r["dataset"]["split"], m["type"]): m for r in results for m in r["metrics"]}
    written = json.loads((band_gap_run / "metrics.json").read_text())
    assert metrics[("test", "mae")]["value"] == pytest.approx(written["test"]["mae"])
    assert metrics[("test", "mae")]["name"] == "test mae (eV)"
    assert metrics[("test", "coverage_90")]["value"] == pytest.approx(written["test"]["coverage_90"])
    assert metrics[("validation", "mae_band_gap")]["name"] == "validation mae_band_gap (eV)"
    assert "pip install crystalzoo" in card and 'load_model("hf-hub:alice/bg")' in card
    assert "predict_interval" in card and "Xie and J. C. Grossman" in card
    config = files["config.json"].decode()
    assert str(band_gap_run.parent) not in config and str(band_gap_run.parent) not in card
    assert json.loads(config)["head"]["units"] == ["eV"]


def test_an_authors_readme_is_kept_unless_overwrite_card(hub, band_gap_run):
    from huggingface_hub import HfApi

    model = load_model(str(band_gap_run))
    push_to_hub(model, "alice/kept")
    api = HfApi(endpoint=hub.url, token="hf_test_token")
    api.upload_file(path_or_fileobj=b"# My band-gap model\n\nWritten by hand.\n", path_in_repo="README.md",
                    repo_id="alice/kept")
    state = hub.state.repos["alice/kept"]
    second = push_to_hub(model, "alice/kept")
    assert state["commits"][second]["README.md"].startswith(b"# My band-gap model")
    third = push_to_hub(model, "alice/kept", overwrite_card=True)
    assert _card_metadata(state["commits"][third]["README.md"].decode())["library_name"] == "crystalzoo"
    fourth = push_to_hub(model, "alice/kept", commit_message="new metrics")  # its own card: replaced
    assert state["commits"][fourth]["README.md"] == state["commits"][third]["README.md"]


def test_push_to_a_branch_and_as_a_pull_request(hub, band_gap_run):
    model = load_model(str(band_gap_run))
    main = push_to_hub(model, "alice/branches")
    dev = push_to_hub(model, "alice/branches", revision="dev", commit_message="to dev")
    state = hub.state.repos["alice/branches"]
    assert state["branches"]["main"] == main and state["branches"]["dev"] == dev != main
    pr = push_to_hub(model, "alice/branches", create_pr=True, commit_message="proposal")
    assert state["branches"]["refs/pr/1"] == pr and state["branches"]["main"] == main
    np.testing.assert_array_equal(load_model(f"hf-hub:alice/branches@{pr}").predict(CIFS), model.predict(CIFS))
    with pytest.raises(Exception, match="create_pr opens a pull request against the main branch"):
        push_to_hub(model, "alice/branches", create_pr=True, revision="dev")
    with pytest.raises(Exception, match="tags"):
        push_to_hub(model, "alice/branches", tags="oxides")
    for bad in ("dev~1", "a:b", "dev.lock", "refs/pr/1", "two words"):
        with pytest.raises(Exception, match="the name of a branch"):
            push_to_hub(model, "alice/branches", revision=bad)


def test_hf_style_methods_call_the_functions(hub, band_gap_run, tmp_path):
    from crystalzoo import CrystalEnsemble, CrystalModel

    model = CrystalModel.from_pretrained(str(band_gap_run))
    assert model.save_pretrained(tmp_path / "copy") == tmp_path / "copy"
    np.testing.assert_array_equal(CrystalModel.from_pretrained(str(tmp_path / "copy")).predict(CIFS),
                                  model.predict(CIFS))
    commit = model.push_to_hub("alice/methods")
    assert "model.safetensors" in hub.state.repos["alice/methods"]["commits"][commit]
    with pytest.raises(Exception, match="describes a single model, not an ensemble: load it with load_model or "
                                        "CrystalModel.from_pretrained"):
        CrystalEnsemble.from_pretrained(str(band_gap_run))


def test_a_second_push_leaves_exactly_the_files_of_the_model_it_pushes(hub):
    """A second push to one repo left the first push's metrics.json, and its weights saved under
    another file name, beside the new ones: the card and the files disagreed."""
    repo = "alice/moving-target"
    first = push_to_hub(load_model("bulk"), repo, metrics={"test": {"mae": 0.05}})
    hub.state.commit(repo, "main", {"notes.txt": b"mine"}, "the author's own file")
    second = push_to_hub(load_model("shear"), repo, filename="shear-v2.safetensors")
    files = hub.state.repos[repo]["commits"][second]
    assert sorted(files) == ["README.md", "config.json", "notes.txt", "shear-v2.safetensors"]
    assert set(hub.state.repos[repo]["commits"][first]) >= {"model.safetensors", "metrics.json"}  # history kept
    assert json.loads(files["config.json"])["weights_file"] == "shear-v2.safetensors"
    commits = [r for r in hub.state.requests if r[0] == "POST" and "/commit/" in r[1]]
    assert len(commits) == 2  # one commit per push (the author's file went in by hand)
    shared = load_model(f"hf-hub:{repo}@{second}")
    np.testing.assert_array_equal(shared.predict(CIFS[:2]), load_model("shear").predict(CIFS[:2]))


def test_the_keywords_users_bring_from_transformers_and_timm(hub, tmp_path):
    """from_pretrained(revision=, cache_dir=), save_pretrained(push_to_hub=True, safe_serialization=True)
    work; a misspelt keyword is a ConfigError naming the valid ones (they were raw TypeErrors naming
    internal functions)."""
    from crystalzoo import CrystalModel
    from crystalzoo.errors import ConfigError

    model = load_model("bulk")
    model.save_pretrained(tmp_path / "bulk", safe_serialization=True, push_to_hub=True, repo_id="alice/kw",
                          commit_message="from save_pretrained", extra={"notes": "mine"})
    commit = hub.state.repos["alice/kw"]["branches"]["main"]
    assert json.loads((tmp_path / "bulk" / "config.json").read_text())["notes"] == "mine"
    assert json.loads(hub.state.repos["alice/kw"]["commits"][commit]["config.json"])["notes"] == "mine"  # as saved
    cache = tmp_path / "own-cache"
    loaded = CrystalModel.from_pretrained("hf-hub:alice/kw", revision=commit, cache_dir=str(cache))
    assert commit in loaded.meta["source"] and any(cache.rglob("config.json"))
    np.testing.assert_array_equal(loaded.predict(CIFS[:2]), model.predict(CIFS[:2]))
    assert load_model("hf-hub:alice/kw", revision=commit).meta["source"] == loaded.meta["source"]
    for call, message in (
            (lambda: CrystalModel.from_pretrained("hf-hub:alice/kw", revison=commit), "no option 'revison' \\(did you"),
            (lambda: CrystalModel.from_pretrained("bulk", revision=commit), "revision= pins a Hub repo"),
            (lambda: CrystalModel.from_pretrained(f"hf-hub:alice/kw@{commit}", revision="main"), "names its revision"),
            (lambda: model.save_pretrained(tmp_path / "x", safe_serialization=False), "safetensors only"),
            (lambda: model.save_pretrained(tmp_path / "x", push_to_hub=True), "needs repo_id"),
            (lambda: model.save_pretrained(tmp_path / "x", push_to_hub=True, repo_id="alice/kw", privat=True),
             "no option 'privat' \\(did you mean 'private'\\?\\)"),
            (lambda: model.save_pretrained(tmp_path / "x", max_shard_size="5GB"), "no option 'max_shard_size'"),
            (lambda: model.push_to_hub("alice/kw", comit_message="x"), "no option 'comit_message'")):
        with pytest.raises(ConfigError, match=message):
            call()
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_a_bad_cache_dir_is_a_config_error(hub, tmp_path):
    from crystalzoo.errors import ConfigError

    push_to_hub(load_model("bulk"), "alice/cache-dir")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for bad in ("", 5, str(a_file)):
        with pytest.raises(ConfigError, match="the folder of the Hugging Face cache"):
            load_model("hf-hub:alice/cache-dir", cache_dir=bad)
