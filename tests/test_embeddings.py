"""Representations: crystal and atom vectors from any backbone, on real crystals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

from crystalzoo import build_arrays, collate, load_backbone, load_model
from crystalzoo.embeddings import embed
from crystalzoo.errors import ConfigError, StructureError

from .conftest import CIFS


@pytest.fixture(scope="module")
def formation():
    return load_model("formation")


def test_hidden_vectors_are_what_the_head_sees(formation, mp200_structures):
    vectors = formation.embed(mp200_structures[:50])
    assert vectors.shape == (50, formation.backbone.out_features) and vectors.dtype == np.float32
    with torch.no_grad():  # the head on the embedding gives the model's prediction
        pred = formation.output_in_units(formation.head(torch.from_numpy(vectors))).numpy()[:, 0]
    np.testing.assert_allclose(pred, formation.predict(mp200_structures[:50]), rtol=1e-5, atol=1e-5)


def test_pooled_and_atom_vectors_agree_with_the_layers(formation, mp200_structures):
    structures = mp200_structures[:20]
    g = collate(build_arrays(structures, progress=False))
    backbone = formation.backbone
    for layer in (0, 2, 4):
        atoms = embed(backbone, structures, kind="atoms", layer=layer)
        assert [len(a) for a in atoms] == g.n_atoms.tolist()
        with torch.no_grad():
            expected = backbone.atom_features(g, upto=layer).numpy()
        np.testing.assert_allclose(np.concatenate(atoms), expected, rtol=1e-5, atol=1e-6)
        pooled = embed(backbone, structures, kind="pooled", layer=layer)
        np.testing.assert_allclose(pooled, np.stack([a.mean(axis=0) for a in atoms]), rtol=1e-4, atol=1e-6)


def test_embeddings_do_not_depend_on_batches_jobs_or_atom_order(formation, mp200_structures, monkeypatch):
    monkeypatch.setattr("crystalzoo.graphs.building.MIN_PARALLEL", 16)  # n_jobs=2 in worker processes
    structures = mp200_structures[:80]
    reference = formation.embed(structures)
    texts = [s.to(fmt="cif") for s in structures]  # read by the worker processes
    np.testing.assert_allclose(formation.embed(texts, batch_size=7, n_jobs=2), reference, rtol=1e-5, atol=1e-6)
    shuffled = []
    for s in structures[:10]:
        order = np.random.default_rng(0).permutation(len(s))
        shuffled.append(Structure.from_sites([s[i] for i in order]))
    np.testing.assert_allclose(formation.embed(shuffled), reference[:10], rtol=1e-4, atol=1e-5)


def test_a_frozen_training_backbone_is_left_as_it_was():
    backbone = load_backbone("formation", freeze=2)
    assert backbone.training
    one = backbone.embed(CIFS[:3])
    assert backbone.training and backbone.frozen == 2
    assert all(not m.training for m in backbone.stages()[:3])  # frozen stages still fixed
    np.testing.assert_allclose(one, load_model("formation").embed(CIFS[:3]), rtol=1e-6, atol=1e-6)


def test_bad_embed_arguments_name_the_fix(formation):
    with pytest.raises(ConfigError, match="kind = 'mean'"):
        formation.embed(CIFS[:1], kind="mean")
    with pytest.raises(ConfigError, match="layer = 5: this backbone has 4 convolutions"):
        formation.embed(CIFS[:1], kind="atoms", layer=5)
    with pytest.raises(ConfigError, match="layer is for kind='pooled' or 'atoms'"):
        formation.embed(CIFS[:1], layer=2)
    with pytest.raises(ConfigError, match="embed takes a model or backbone"):
        embed("formation", CIFS[:1])
    with pytest.raises(StructureError, match="embed takes a list of crystals, not a set"):
        formation.embed(set(CIFS[:2]))
    assert formation.embed(CIFS[0]).shape == (1, 32)  # one crystal
    assert formation.embed([]).shape == (0, 32)


def test_the_featurizer_works_in_a_pipeline_with_cross_validation(mp200_structures):
    """Frozen `formation` descriptors + a ridge regression, cross-validated and tuned by
    GridSearchCV on 80 real Materials Project crystals (their formation energies)."""
    pytest.importorskip("sklearn")
    import gzip
    import json

    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
    from sklearn.pipeline import Pipeline

    from crystalzoo.featurizer import CrystalFeaturizer

    from .conftest import DATA

    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f][:80]
    X, y = [r["cif"] for r in rows], np.array([r["formation_energy_per_atom"] for r in rows])
    pipe = Pipeline([("crystal", CrystalFeaturizer("formation")), ("ridge", Ridge())])
    folds = KFold(4, shuffle=True, random_state=0)
    mae = -cross_val_score(pipe, X, y, cv=folds, scoring="neg_mean_absolute_error")
    spread = np.mean(np.abs(y - y.mean()))
    assert mae.mean() < 0.5 * spread  # the pretrained descriptors carry the formation energy
    search = GridSearchCV(pipe, {"ridge__alpha": [0.1, 10.0], "crystal__kind": ["hidden", "pooled"]}, cv=folds,
                          scoring="neg_mean_absolute_error").fit(X, y)
    assert set(search.best_params_) == {"ridge__alpha", "crystal__kind"}
    features = search.best_estimator_.named_steps["crystal"]
    assert len(features.get_feature_names_out()) == features.transform(X[:2]).shape[1]


def test_the_featurizer_names_bad_input():
    pytest.importorskip("sklearn")
    import pandas as pd
    from sklearn.exceptions import NotFittedError

    from crystalzoo.featurizer import CrystalFeaturizer

    with pytest.raises(NotFittedError):
        CrystalFeaturizer().transform(CIFS[:1])
    f = CrystalFeaturizer().fit(CIFS[:2])
    with pytest.raises(ConfigError, match="one column of crystals, got a table of 2 columns"):
        f.transform(pd.DataFrame({"a": CIFS[:2], "b": CIFS[:2]}))
    assert f.transform(pd.DataFrame({"cif": [str(c) for c in CIFS[:2]]})).shape == (2, 32)
    with pytest.raises(ConfigError, match="not 'atoms'"):
        CrystalFeaturizer(kind="atoms").fit(CIFS[:1])


def test_cli_embed_writes_tables_with_ids(tmp_path, capsys, formation):
    import pandas as pd

    from crystalzoo.cli import main

    from .conftest import DATA

    out = tmp_path / "vectors.csv"
    assert main(["embed", "--data", str(DATA / "mp200.jsonl.gz"), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out)
    assert table.shape == (200, 33) and table["id"].iloc[0] == "mp-1" and list(table.columns[1:3]) == ["hidden_0",
                                                                                                    "hidden_1"]
    assert main(["embed", "--out", str(tmp_path / "v.npz"), "--kind", "pooled", *map(str, CIFS[:3])]) == 0
    with np.load(tmp_path / "v.npz") as f:
        assert f["ids"].tolist() == [str(c) for c in CIFS[:3]]
        np.testing.assert_allclose(f["vectors"], formation.embed(CIFS[:3], kind="pooled"), rtol=1e-6)
    capsys.readouterr()
    for args, message in [([str(CIFS[0])], "exists; pass --overwrite"),
                          (["--data", str(DATA / "mp200.jsonl.gz"), str(CIFS[0])], "not both"),
                          ([], "not both and not neither")]:
        assert main(["embed", "--out", str(out), *args]) == 2
        assert message in capsys.readouterr().err
    assert main(["embed", "--out", str(tmp_path / "v.txt"), str(CIFS[0])]) == 2
    assert "give a file name such as vectors.csv, vectors.npz or vectors.parquet" in capsys.readouterr().err
    assert pd.read_csv(out).shape == (200, 33)  # never replaced unasked


def test_featurizer_reads_generators_pandas_output_and_one_structure():
    pytest.importorskip("sklearn")
    import sklearn
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    from crystalzoo.featurizer import CrystalFeaturizer

    assert CrystalFeaturizer().fit_transform(c for c in CIFS[:4]).shape == (4, 32)  # fit used it up: now read once
    assert CrystalFeaturizer().fit_transform(Structure.from_file(CIFS[0])).shape == (1, 32)
    with sklearn.config_context(transform_output="pandas"):
        pipe = make_pipeline(CrystalFeaturizer(), Ridge()).fit(CIFS[:4], [1.0, 2.0, 3.0, 4.0])
        assert pipe.predict(CIFS[:1]).shape == (1,)
    f = CrystalFeaturizer().fit(CIFS[:2])
    f.set_params(kind="pooled")
    assert len(f.get_feature_names_out()) == f.transform(CIFS[:1]).shape[1] == 64
    with pytest.raises(ConfigError, match="got None"):
        CrystalFeaturizer().fit_transform(None)


def test_cli_embed_ids_cgcnn_folders_and_early_checks(tmp_path, capsys):
    import pandas as pd

    from crystalzoo.cli import main

    (tmp_path / "d.csv").write_text("mp_id,cif,band_gap\n" + "".join(f"m-{i},{c},1.0\n" for i, c in enumerate(CIFS[:3])))
    assert main(["embed", "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "a.csv"), "--quiet"]) == 0
    assert pd.read_csv(tmp_path / "a.csv")["id"].tolist() == ["m-0", "m-1", "m-2"]
    folder = tmp_path / "cg"  # a CGCNN folder: id_prop.csv holds labels, which embedding does not need
    folder.mkdir()
    for c in CIFS[:2]:
        shutil.copy(c, folder / c.name)
    (folder / "id_prop.csv").write_text("".join(f"{c.stem},1.0,2.0\n" for c in CIFS[:2]))
    assert main(["embed", "--data", str(folder), "--out", str(tmp_path / "b.npz"), "--quiet"]) == 0
    with np.load(tmp_path / "b.npz") as f:
        assert f["ids"].tolist() == [c.stem for c in CIFS[:2]]
    capsys.readouterr()
    (tmp_path / "file").write_text("")
    for args, message in [(["--out", str(tmp_path / "file" / "x.csv")], "is a file, not a folder"),
                          (["--out", str(tmp_path / ".csv")], "give a file name such as vectors.csv"),
                          (["--out", str(tmp_path / "c.csv"), "--layer", "2"], "--layer needs --kind pooled")]:
        assert main(["embed", *args, str(CIFS[0])]) == 2
        assert message in capsys.readouterr().err
    from crystalzoo.embeddings import write_table

    for ids, vectors in [("ab", np.zeros((2, 3))), (["a", "b"], np.zeros(2)), (["a"], [np.zeros((2, 3))])]:
        with pytest.raises(ConfigError, match="write_table takes"):
            write_table(tmp_path / "w.csv", ids, vectors)


def test_embed_never_writes_over_its_data_and_the_featurizer_follows_its_backbone(tmp_path, capsys):
    from crystalzoo.cli import main

    data = tmp_path / "d.csv"
    data.write_text("cif,y\n" + "".join(f"{c},1\n" for c in CIFS[:2]))
    folder = tmp_path / "cg"
    folder.mkdir()
    shutil.copy(CIFS[0], folder / "a.cif")
    (folder / "id_prop.csv").write_text("a,1.0\n")
    before = data.read_bytes(), (folder / "id_prop.csv").read_bytes()
    for args in (["--data", str(data), "--out", str(data)], ["--data", str(folder), "--out", str(folder / "id_prop.csv")]):
        assert main(["embed", *args, "--overwrite"]) == 2
        assert "the data being embedded" in capsys.readouterr().err
    assert (data.read_bytes(), (folder / "id_prop.csv").read_bytes()) == before
    pytest.importorskip("sklearn")
    from crystalzoo.featurizer import CrystalFeaturizer

    f = CrystalFeaturizer("formation").fit(CIFS[:2])
    f.set_params(backbone="bulk")
    with pytest.raises(ConfigError, match="fit again"):
        f.transform(CIFS[:2])


def test_the_featurizer_passes_scikit_learns_own_checks_that_apply():
    """The checks of sklearn.utils.estimator_checks that do not fit on numeric arrays (a
    featurizer of crystals cannot): construction, parameters, cloning, repr."""
    pytest.importorskip("sklearn")
    from sklearn.utils import estimator_checks as checks

    from crystalzoo import CrystalFeaturizer

    names = ["check_no_attributes_set_in_init", "check_parameters_default_constructible", "check_get_params_invariance",
             "check_set_params", "check_estimator_cloneable", "check_estimator_repr",
             "check_do_not_raise_errors_in_init_or_set_params"]
    ran = 0
    for name in names:
        check = getattr(checks, name, None)
        if check is not None:  # (older scikit-learn versions lack some)
            check("CrystalFeaturizer", CrystalFeaturizer())
            ran += 1
    assert ran >= 4


def test_the_featurizer_checks_set_params_keeps_the_index_and_takes_one_atoms(mp200_structures):
    """set_params(kind="atoms") after fit gave a list from transform and a raw AttributeError from
    get_feature_names_out; fit_transform with pandas output lost the input's index (vectors
    beside the wrong ids on a join); one ase.Atoms was iterated as its atoms."""
    pytest.importorskip("sklearn")
    import pandas as pd

    from crystalzoo import CrystalFeaturizer
    from crystalzoo.errors import ConfigError

    frame = pd.DataFrame({"structure": mp200_structures[:4]}, index=["mp-a", "mp-b", "mp-c", "mp-d"])
    featurizer = CrystalFeaturizer(kind="pooled").set_output(transform="pandas")
    out = featurizer.fit_transform(frame)
    assert out.index.tolist() == ["mp-a", "mp-b", "mp-c", "mp-d"] and out.shape == (4, 64)
    assert featurizer.transform(frame.iloc[::-1]).index.tolist() == ["mp-d", "mp-c", "mp-b", "mp-a"]
    np.testing.assert_allclose(out.loc["mp-c"].to_numpy(), featurizer.transform(frame.iloc[2:3]).iloc[0].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    featurizer.set_params(kind="atoms")
    for call in (lambda: featurizer.transform(frame), featurizer.get_feature_names_out):
        with pytest.raises(ConfigError, match="kind 'hidden' or 'pooled', not 'atoms'"):
            call()
    ase = pytest.importorskip("ase")
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(mp200_structures[0])
    assert isinstance(atoms, ase.Atoms)
    plain = CrystalFeaturizer(kind="pooled").fit([])
    np.testing.assert_allclose(plain.transform(atoms), plain.transform([mp200_structures[0]]), rtol=1e-5, atol=1e-6)
