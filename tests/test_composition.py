"""Composition descriptors (crystalzoo.composition): against pymatgen's own composition of real
crystals, unchanged by supercells and atom order, and beside the graph vectors in embed and the
featurizer."""

from __future__ import annotations

import numpy as np
import pytest

from crystalzoo import embed, load_backbone
from crystalzoo.composition import COMPOSITION_NAMES, NORMS, PROPERTIES, element_statistics, element_table
from crystalzoo.errors import ConfigError


def _from_pymatgen(structure) -> dict[str, float]:
    """Some descriptors computed another way: from pymatgen's fractional composition."""
    table = element_table()
    frac = {el.Z: x for el, x in structure.composition.fractional_composition.items()}
    out = {}
    for j, name in enumerate(PROPERTIES):
        values = {z: table[z, j] for z in frac}
        out[f"mean {name}"] = sum(frac[z] * v for z, v in values.items())
        out[f"min {name}"], out[f"max {name}"] = min(values.values()), max(values.values())
        out[f"mode {name}"] = values[min(frac, key=lambda z: (-round(frac[z], 9), z))]
    out["norm 0"] = len(frac)
    for p in NORMS[1:]:
        out[f"norm {p}"] = sum(x ** p for x in frac.values()) ** (1 / p)
    return out


def test_the_descriptors_of_real_crystals_agree_with_pymatgens_composition(mp200_structures):
    structures = mp200_structures[:40]
    x = embed(load_backbone("formation"), structures, kind="pooled", composition=True)[:, -len(COMPOSITION_NAMES):]
    assert x.shape == (40, len(COMPOSITION_NAMES)) and np.isfinite(x).all()
    for row, s in zip(x, structures):
        expected = _from_pymatgen(s)
        got = {name: row[COMPOSITION_NAMES.index(name)] for name in expected}
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-5), (s.formula, name)


def test_supercells_and_atom_order_leave_the_descriptors_as_they_are(mp200_structures):
    s = next(s for s in mp200_structures if len(s.composition) >= 3)
    shuffled = s.copy()
    shuffled = type(s).from_sites([shuffled[i] for i in np.random.default_rng(0).permutation(len(s))])
    xs = [element_statistics([site.specie.Z for site in c], np.zeros(len(c), int), 1)
          for c in (s, s * (2, 1, 1), shuffled)]
    assert np.array_equal(xs[0], xs[1]) and np.array_equal(xs[0], xs[2])


def test_known_values_of_simple_compounds():
    # Fe2O3 and NaCl in one batch: the statistics stay per crystal
    x = element_statistics(np.array([26, 26, 8, 8, 8, 11, 17]), np.array([0, 0, 0, 0, 0, 1, 1]), 2)
    at = lambda i, name: float(x[i, COMPOSITION_NAMES.index(name)])  # noqa: E731
    assert at(0, "mean Z") == pytest.approx(0.4 * 26 + 0.6 * 8) and at(1, "mean Z") == pytest.approx(14.0)
    assert at(0, "deviation Z") == pytest.approx(0.4 * abs(26 - 15.2) + 0.6 * abs(8 - 15.2))
    assert (at(0, "min Z"), at(0, "max Z"), at(0, "range Z"), at(0, "mode Z")) == (8.0, 26.0, 18.0, 8.0)
    assert at(1, "mode Z") == 11.0  # equal fractions: the lighter element
    assert at(0, "norm 2") == pytest.approx((0.4 ** 2 + 0.6 ** 2) ** 0.5) and at(1, "norm 0") == 2.0


def test_the_element_table_counts_valence_electrons_as_magpie_does():
    table = element_table()
    assert not np.isnan(table[1:]).any()
    col = {name: j for j, name in enumerate(PROPERTIES)}
    facts = {8: {"p valence": 4, "p unfilled": 2, "valence": 6}, 26: {"d valence": 6, "d unfilled": 4, "s valence": 2},
             31: {"d valence": 10, "p valence": 1, "d unfilled": 0}, 82: {"f valence": 14, "valence": 28},
             1: {"s unfilled": 1, "unfilled": 1}, 10: {"unfilled": 0, "valence": 8}}
    for z, values in facts.items():
        for name, value in values.items():
            assert table[z, col[name]] == value, (z, name)
    assert table[14, col["row"]] == 3 and table[14, col["group"]] == 14


def test_composition_is_for_crystal_vectors_and_takes_a_bool(mp200_structures):
    backbone = load_backbone("formation")
    with pytest.raises(ConfigError, match="composition"):
        embed(backbone, mp200_structures[:2], kind="atoms", composition=True)
    with pytest.raises(ConfigError, match="composition"):
        embed(backbone, mp200_structures[:2], composition="yes")
    assert embed(backbone, [], kind="pooled", composition=True).shape == (0, 64 + len(COMPOSITION_NAMES))


def test_the_featurizer_appends_the_named_descriptors(mp200_structures):
    pytest.importorskip("sklearn")
    from crystalzoo.featurizer import CrystalFeaturizer

    f = CrystalFeaturizer("formation", kind="pooled", composition=True)
    x = f.fit_transform(mp200_structures[:3])
    names = f.get_feature_names_out()
    assert x.shape == (3, len(names)) and list(names[-len(COMPOSITION_NAMES):]) == COMPOSITION_NAMES
    plain = CrystalFeaturizer("formation", kind="pooled").fit_transform(mp200_structures[:3])
    assert np.array_equal(x[:, : plain.shape[1]], plain)


def test_cli_embed_writes_the_descriptors_under_their_names(tmp_path, cif_paths):
    import pandas as pd

    from crystalzoo.cli import main

    out = tmp_path / "v.csv"
    files = [str(p) for p in cif_paths[:3]]
    assert main(["embed", "--kind", "pooled", "--composition", "--quiet", "--out", str(out), *files]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:2]) == ["id", "pooled_0"] and list(table.columns[-len(COMPOSITION_NAMES):]) == \
        COMPOSITION_NAMES
    expected = embed(load_backbone("formation"), cif_paths[:3], kind="pooled", composition=True)
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected, rtol=1e-6)


def test_palladium_counts_its_4d_shell_alone():
    """Pd ([Kr] 4d10) has no 5s electrons: its core 4s2 4p6 were counted as valence (18 against
    Magpie's 10), which skewed the valence columns of every Pd compound (a fresh attack)."""
    from crystalzoo.composition import PROPERTIES, element_table

    row = dict(zip(PROPERTIES, element_table()[46]))
    assert (row["s valence"], row["p valence"], row["d valence"], row["f valence"], row["valence"]) == (0, 0, 10, 0, 10)
    nickel, platinum = (dict(zip(PROPERTIES, element_table()[z])) for z in (28, 78))
    assert nickel["valence"] == 10 and nickel["s valence"] == 2  # [Ar] 3d8 4s2
    assert platinum["s valence"] == 1 and platinum["d valence"] == 9  # [Xe] 4f14 5d9 6s1
