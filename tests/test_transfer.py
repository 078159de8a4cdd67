"""The transfer advisor: LogME against a direct computation of the evidence, the H-score, the
leakage rule, and rank_backbones / crystalzoo rank on real Materials Project crystals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crystalzoo import CrystalDataset, list_backbones, rank_backbones
from crystalzoo.errors import ConfigError, DataError
from crystalzoo.transfer import _evidence, check_no_leakage, h_score, leakage, logme

from .conftest import DATA


def _direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, I/β + F Fᵀ/α) per sample: the marginal likelihood written out."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    _, log_det = np.linalg.slogdet(cov)
    return -0.5 * (n * math.log(2 * math.pi) + log_det + y @ np.linalg.solve(cov, y)) / n


@pytest.mark.parametrize("n, d", [(60, 5), (20, 40)])  # more crystals than features, and fewer
def test_logme_is_the_marginal_likelihood_at_its_maximum(n, d):
    rng = np.random.default_rng(n)
    f = rng.normal(size=(n, d))
    y = f @ rng.normal(size=d) / math.sqrt(d) + 0.5 * rng.normal(size=n)  # a signal, so the optimum is inside
    y = (y - y.mean()) / y.std()
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    evidence, alpha, beta = _evidence(u, s**2, y, n, d, 20000, 1e-12)  # converged (slowly where d > n)
    assert evidence == pytest.approx(_direct_evidence(f, y, alpha, beta), rel=1e-8, abs=1e-10)
    for a, b in ((alpha * 1.2, beta), (alpha / 1.2, beta), (alpha, beta * 1.2), (alpha, beta / 1.2)):
        assert _direct_evidence(f, y, a, b) < evidence  # the fixed point is the maximum
    assert logme(f, y) == pytest.approx(evidence, rel=1e-3)  # its default 100 iterations: near enough to rank


def test_the_scores_rank_a_planted_informative_feature_above_noise():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    noise = rng.normal(size=(300, 16))
    planted = noise.copy()
    planted[:, 3] = y + 0.5 * rng.normal(size=300)
    assert logme(planted, y) > logme(noise, y) + 0.1
    classes = (y > 0).astype(int)
    assert h_score(planted, classes) > 2 * h_score(noise, classes)
    assert logme(planted, np.c_[y, -y]) == pytest.approx(logme(planted, y))  # the mean over targets


def test_a_backbone_is_never_scored_on_its_own_pretraining_target():
    assert "band_gap" in leakage("band-gap", "band_gap")
    assert "same quantity" in leakage("metal-classifier", "band_gap")  # a metal is a band gap of 0
    assert "same quantity" in leakage("bulk", "log10_k_vrh")  # one modulus under two names
    assert "same quantity" in leakage("combined", "log10:k_vrh")
    assert "computed" in leakage("combined", "poisson_ratio")  # ν from K and G, both pretrained
    assert leakage("formation", "band_gap") is None and leakage("bulk", "poisson_ratio") is None
    with pytest.raises(ConfigError, match="pretrained on \\['band_gap'\\].*not be a test of transfer"):
        check_no_leakage("band-gap", "band_gap")


@pytest.fixture(scope="module")
def band_gaps(tmp_path_factory):
    return CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["band_gap", "formation_energy_per_atom"],
                                     progress=False, cache_dir=tmp_path_factory.mktemp("cache"))


def test_rank_backbones_scores_every_backbone_and_depth_but_the_leaking_ones(band_gaps):
    ranking = rank_backbones(band_gaps, "band_gap")
    assert set(ranking.excluded) == {"band-gap", "metal-classifier"}
    ranked = {r["backbone"] for r in ranking.rows}
    assert ranked == set(list_backbones()) - {"band-gap", "metal-classifier"}
    assert {r["freeze"] for r in ranking.rows} == {0, 1, 2, 3, 4}
    scores = [r["score"] for r in ranking.rows]
    assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all() and math.isfinite(ranking.baseline)
    best = ranking.best
    assert ranking.recommendation == f"finetune(data, 'band_gap', backbone={best['backbone']!r}, freeze={best['freeze']})"
    assert (ranking.warning is None) == (best["score"] > ranking.baseline)
    text = str(ranking)
    assert "recommended: finetune(" in text and "(random weights)" in text
    # formation energy: the formation backbones were pretrained on it and are left out
    assert "formation" in rank_backbones(band_gaps, "formation_energy_per_atom", backbones=["formation", "bulk"]
                                         ).excluded


def test_rank_reads_a_data_set_of_any_family(band_gaps):
    """A data set built with SchNet's one-hot atom features ranks as the same crystals with CGCNN's."""
    names = ["bulk", "schnet-combined"]
    one_hot = rank_backbones(band_gaps.with_atom_features("one-hot-100"), "band_gap", backbones=names, limit=60)
    cgcnn = rank_backbones(band_gaps, "band_gap", backbones=names, limit=60)
    assert one_hot.rows == cgcnn.rows and one_hot.baseline == cgcnn.baseline
    assert {r["backbone"] for r in cgcnn.rows} == set(names)


def test_rank_refuses_what_it_cannot_score(band_gaps):
    with pytest.raises(ConfigError, match="every backbone given was pretrained on band_gap"):
        rank_backbones(band_gaps, "band_gap", backbones=["band-gap"])
    with pytest.raises(ConfigError, match="task = 'ordinal'"):
        rank_backbones(band_gaps, "band_gap", task="ordinal")


def test_cli_rank_never_writes_over_the_data_it_ranks(tmp_path, capsys):
    """--output data.csv --overwrite replaced the data set with the ranking."""
    import shutil

    from crystalzoo.cli import main

    data = tmp_path / "data.jsonl.gz"
    shutil.copy(DATA / "mp200.jsonl.gz", data)
    before = data.read_bytes()
    assert main(["rank", "--data", str(data), "--target", "band_gap", "--output", str(tmp_path / "data.jsonl.gz"),
                 "--overwrite"]) == 2
    assert "ranking.csv" in capsys.readouterr().err and data.read_bytes() == before  # not a table name: refused
    table = tmp_path / "data.csv"
    table.write_text("mp_id,cif,band_gap\n")
    assert main(["rank", "--data", str(table), "--target", "band_gap", "--output", str(table), "--overwrite"]) == 2
    assert "the data being ranked" in capsys.readouterr().err and table.read_text() == "mp_id,cif,band_gap\n"


def test_cli_rank_prints_the_table_and_writes_csv(tmp_path, capsys):
    import pandas as pd

    from crystalzoo.cli import main

    out = tmp_path / "ranking.csv"
    assert main(["rank", "--data", str(DATA / "mp200.jsonl.gz"), "--target", "band_gap", "--backbones", "bulk,shear",
                 "--limit", "60", "--output", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "60 crystals, target band_gap" in printed and "recommended: finetune(data, 'band_gap'" in printed
    table = pd.read_csv(out)
    assert set(table["backbone"]) == {"bulk", "shear", "(random weights)"} and len(table) == 11
    # refused before any scoring: an existing file (unless --overwrite), a folder that does not exist
    assert main(["rank", "--data", str(DATA / "mp200.jsonl.gz"), "--target", "band_gap", "--output", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["rank", "--data", str(DATA / "mp200.jsonl.gz"), "--target", "band_gap", "--output",
                 str(tmp_path / "missing" / "r.csv")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err


def test_classification_needs_class_labels(band_gaps):
    """Band gaps ranked as classes were cut to integers without a word."""
    with pytest.raises(DataError, match="task='classification' needs class labels.*task='regression'"):
        rank_backbones(band_gaps, "band_gap", backbones=["bulk"], task="classification")


def test_classes_are_ranked_by_the_h_score(band_gaps):
    metal = (band_gaps.select_targets(["band_gap"]).labels == 0).astype(float)
    ds = CrystalDataset(band_gaps.ids, band_gaps.graphs, metal, ["is_metal"], band_gaps.settings)
    ranking = rank_backbones(ds, "is_metal", task="classification")
    assert ranking.score_name == "H-score" and set(ranking.excluded) == {"band-gap", "metal-classifier"}
    assert all(r["score"] >= 0 for r in ranking.rows)  # a share of variance
    # the call it recommends trains classes (it read as a regression on 0 and 1; a fresh attack)
    assert ranking.recommendation.endswith(", task='classification')")
    one = CrystalDataset(band_gaps.ids, band_gaps.graphs, np.ones_like(metal), ["is_metal"], band_gaps.settings)
    with pytest.raises(DataError, match="every crystal has the is_metal class 1: the H-score needs 2 classes"):
        rank_backbones(one, "is_metal", task="classification")


def test_leakage_knows_the_names_of_other_tables():
    """Matbench's column names (log10(K_VRH), e_form, gap pbe) were not matched."""
    assert leakage("bulk", "log10(K_VRH)") and leakage("formation", "e_form") and leakage("band-gap", "gap pbe")
    assert leakage("combined", "LOG10:k_vrh") and leakage("total-energy", "total_energy")
    assert leakage("formation", "log10(G_VRH)") is None
    # names with their unit, as prediction tables write them, and JARVIS's (a third attack)
    assert leakage("band-gap", "band_gap (eV)") and leakage("band-gap", "band_gap_eV")
    assert leakage("bulk", "K_VRH (GPa)") and leakage("formation", "formation_energy_peratom")
    assert leakage("formation", "log10_k_vrh") is None and leakage("band-gap", "e_form") is None


def test_leakage_knows_formation_from_total_energy_and_a_students_teacher():
    """A formation energy is the total energy less the elements' references: total-energy was
    scored on formation energies; a distilled student on what its teacher was trained on."""
    assert "from which formation_energy_per_atom is computed" in leakage("total-energy", "formation_energy_per_atom")
    assert leakage("total-energy", "e_form") and leakage("formation", "energy_per_atom")
    assert "teacher (it was distilled from) was trained on" in leakage("chgnet-distilled", "total_energy")
    assert leakage("chgnet-distilled", "formation_energy_per_atom") and leakage("chgnet-distilled", "band_gap") is None


def test_rank_takes_what_the_readers_take_and_refuses_the_rest(band_gaps, tmp_path):
    from crystalzoo.errors import DataError

    moduli = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=["log10:k_vrh"], progress=False,
                                       cache_dir=False)
    ranking = rank_backbones(moduli, "log10:k_vrh", backbones="formation")  # one name; the reader's syntax
    assert {r["backbone"] for r in ranking.rows} == {"formation"} and ranking.crystals == 68
    assert rank_backbones(band_gaps, "band_gap", backbones=["bulk", "bulk"], limit=40).crystals == 40
    assert len(rank_backbones(band_gaps, "band_gap", backbones=["bulk", "bulk"]).rows) == 5  # scored once
    for bad, message in ((dict(target=None), "target = None"), (dict(target="band_gap", backbones=[]), "empty"),
                         (dict(target="band_gap", backbones=[str(tmp_path)]), "rank scores registered backbones")):
        with pytest.raises(ConfigError, match=message):
            rank_backbones(band_gaps, **bad)
    with pytest.raises(DataError, match="overflows"):
        logme(np.eye(5, 3), np.array([1e300, -1e300, 0.0, 1.0, 2.0]))
    with pytest.raises(DataError, match="finite features"):
        h_score(np.array([[np.nan], [1.0], [2.0]]), np.array([0, 1, 1]))


def test_the_scores_do_not_depend_on_the_features_scale():
    rng = np.random.default_rng(1)
    f, y = rng.normal(size=(100, 8)), rng.normal(size=100)
    for scale in (1e-6, 1e6, 1e12):
        assert logme(f * scale, y) == pytest.approx(logme(f, y), rel=1e-6)
        classes = (y > 0).astype(int)
        assert h_score(f * scale, classes) == pytest.approx(h_score(f, classes), rel=1e-6)
