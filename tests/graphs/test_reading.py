"""Structure files other than CIF, ASE Atoms, data sets and tables in and out of
``predict`` and the CLI, on real Materials Project crystals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crystalzoo import load_model
from crystalzoo.errors import StructureError

from ..conftest import DATA


@pytest.fixture(scope="module")
def formation():
    return load_model("formation")


@pytest.fixture(scope="module")
def crystals(mp200_structures):
    """Five real crystals, one with many sites, written as CIF for the reference prediction."""
    picks = [mp200_structures[i] for i in (0, 3, 7, 11)] + [max(mp200_structures[:60], key=len)]
    return [s.copy() for s in picks]


@pytest.mark.parametrize("name", ["POSCAR", "CONTCAR_relaxed", "crystal.vasp", "crystal.xsf", "crystal.json",
                                  "crystal.cssr"])
def test_pymatgen_formats_predict_as_the_cif(formation, crystals, tmp_path, name):
    for i, s in enumerate(crystals):
        folder = tmp_path / str(i)
        folder.mkdir()
        s.to(filename=str(folder / "crystal.cif"))
        if name.endswith(".cssr"):
            s.remove_oxidation_states()  # pymatgen's CSSR reader cannot read charged species
        fmt = "poscar" if name.startswith(("POSCAR", "CONTCAR")) or name.endswith(".vasp") else None
        (folder / name).write_text(s.to(fmt=fmt or name.rsplit(".", 1)[1]))
        np.testing.assert_allclose(formation.predict([folder / name]), formation.predict([folder / "crystal.cif"]),
                                   rtol=1e-5, atol=1e-3 if name.endswith(".cssr") else 1e-6)  # CSSR: 4 decimals


def test_extxyz_and_ase_atoms(formation, crystals, tmp_path):
    pytest.importorskip("ase")
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = [AseAtomsAdaptor.get_atoms(s) for s in crystals]
    reference = formation.predict(crystals)
    np.testing.assert_allclose(formation.predict(atoms), reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(formation.predict(atoms[0]), reference[:1], rtol=1e-5, atol=1e-6)  # one Atoms
    for i, a in enumerate(atoms):
        ase.io.write(tmp_path / f"c{i}.extxyz", a, format="extxyz")
    np.testing.assert_allclose(formation.predict([tmp_path / f"c{i}.extxyz" for i in range(len(atoms))]), reference,
                               rtol=1e-5, atol=1e-6)
    assert formation.embed(atoms[:2]).shape == (2, 32)
    ase.io.write(tmp_path / "two.extxyz", atoms[:2], format="extxyz")
    with pytest.raises(StructureError, match="holds 2 structures; crystalzoo reads one crystal per file"):
        formation.predict([tmp_path / "two.extxyz"])
    flat = atoms[0].copy()
    flat.pbc = [True, True, False]
    with pytest.raises(StructureError, match="periodic in all three directions"):
        formation.predict([flat])


def test_broken_files_name_the_file_and_format(formation, tmp_path):
    bad = tmp_path / "POSCAR"
    bad.write_text("not a poscar\n1.0\n")
    with pytest.raises(StructureError, match="POSCAR: cannot be read as a POSCAR structure file"):
        formation.predict([bad])
    (tmp_path / "x.json").write_text('{"not": "a structure"}')
    with pytest.raises(StructureError, match=r"x.json: holds a JSON object with the keys \[.not.\], not a pymatgen Structure"):
        formation.predict([tmp_path / "x.json"])


def test_predict_frame_has_ids_and_units(formation, crystals, tmp_path):
    from crystalzoo import CrystalDataset

    frame = formation.predict_frame(crystals[:2])
    assert frame.columns.tolist() == ["id", "formation_energy_per_atom (eV/atom)"] and frame["id"].tolist() == [0, 1]
    np.testing.assert_array_equal(frame.iloc[:, 1].to_numpy(), formation.predict(crystals[:2]))
    ds = CrystalDataset.from_jsonl(DATA / "mp200.jsonl.gz", targets=[], limit=5, progress=False)
    assert formation.predict_frame(ds)["id"].tolist() == ds.ids
    path = tmp_path / "a.cif"
    crystals[0].to(filename=str(path))
    assert formation.predict_frame([path], ids=["mine"])["id"].tolist() == ["mine"]
    assert formation.predict_frame([path])["id"].tolist() == ["a.cif"]  # the file's name, never its local folder
    assert formation.predict_frame([str(path)])["id"].tolist() == ["a.cif"]
    with pytest.raises(Exception, match="2 ids for 1 crystals"):
        formation.predict_frame([path], ids=["a", "b"])


def test_cli_predicts_a_data_set_into_csv_and_json(formation, tmp_path, capsys):
    from crystalzoo import CrystalDataset
    from crystalzoo.cli import main

    data = DATA / "mp200.jsonl.gz"
    assert main(["predict", "--model", "formation", "--data", str(data), "--output", str(tmp_path / "p.json"),
                 "--quiet"]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    ds = CrystalDataset.from_jsonl(data, targets=[], progress=False)
    assert [r["id"] for r in rows] == ds.ids and set(rows[0]) == {"id", "source",
                                                                  "formation_energy_per_atom (eV/atom)"}
    np.testing.assert_allclose([r["formation_energy_per_atom (eV/atom)"] for r in rows], formation.predict(ds),
                               rtol=1e-6, atol=1e-7)
    assert main(["predict", "--model", "formation", "--data", str(data), "--output", str(tmp_path / "p.csv"),
                 "--quiet"]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["id"].tolist() == ds.ids and table["source"].iloc[0] == str(data)
    capsys.readouterr()
    for args, message in ((["--output", str(tmp_path / "p.csv")], "exists; pass --overwrite"),
                          (["--output", str(tmp_path / "p.txt")], "predictions.csv, predictions.json or"),
                          (["--id-column", "nope"], "nope")):
        assert main(["predict", "--model", "formation", "--data", str(data), "--quiet", *args]) == 2
        assert message in capsys.readouterr().err
    table.assign(cif=[r for r in pd.read_json(data, lines=True)["cif"]]).to_csv(tmp_path / "mine.csv", index=False)
    assert main(["predict", "--model", "formation", "--data", str(tmp_path / "mine.csv"), "--output",
                 str(tmp_path / "mine.csv"), "--overwrite"]) == 2
    assert "is the data being predicted" in capsys.readouterr().err


def test_cli_predicts_a_poscar(formation, crystals, tmp_path, capsys):
    from crystalzoo.cli import main

    poscar = tmp_path / "POSCAR"
    poscar.write_text(crystals[1].to(fmt="poscar"))
    assert main(["predict", "--model", "formation", str(poscar)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file,formation_energy_per_atom (eV/atom)"
    assert float(lines[1].split(",")[1]) == pytest.approx(float(formation.predict([crystals[1]])[0]), abs=1e-5)


def test_cli_predicts_an_extxyz_into_json(formation, crystals, tmp_path, capsys):
    pytest.importorskip("ase")
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    from crystalzoo.cli import main

    path = tmp_path / "relaxed.extxyz"
    ase.io.write(path, AseAtomsAdaptor.get_atoms(crystals[2]), format="extxyz")
    assert main(["predict", "--model", "formation", str(path), "--output", str(tmp_path / "p.json")]) == 0
    (row,) = json.loads((tmp_path / "p.json").read_text())
    assert row["file"] == str(path)
    assert row["formation_energy_per_atom (eV/atom)"] == pytest.approx(float(formation.predict([crystals[2]])[0]),
                                                                        abs=1e-5)


def test_a_known_suffix_wins_over_a_poscar_like_name(formation, crystals, tmp_path):
    for name, fmt in (("CONTCAR_relaxed.cif", "cif"), ("poscar_final.json", "json"), ("POSCAR.1", "poscar")):
        (tmp_path / name).write_text(crystals[0].to(fmt=fmt))  # pymatgen would guess POSCAR from such names
    expected = formation.predict(crystals[:1])
    for name in ("CONTCAR_relaxed.cif", "poscar_final.json", "POSCAR.1"):
        np.testing.assert_allclose(formation.predict([tmp_path / name]), expected, rtol=1e-5, atol=1e-6)


def test_prediction_columns_never_overwrite_the_tables_own(formation, crystals, tmp_path):
    import copy

    from crystalzoo.errors import ConfigError

    model = copy.deepcopy(formation)
    model.head.targets = ["id"]
    model.head.units = [""]
    frame = model.predict_frame(crystals[:2], ids=["a", "b"])
    assert frame.columns.tolist() == ["id", "predicted id"] and frame["id"].tolist() == ["a", "b"]
    with pytest.raises(ConfigError, match="one id per crystal, a list"):
        formation.predict_frame(crystals[:3], ids="abc")


def test_names_with_line_breaks_are_refused():
    from crystalzoo import RegressionHead
    from crystalzoo.errors import ConfigError

    with pytest.raises(ConfigError, match="line break"):
        RegressionHead(32, ["x\n---\ny"])


def test_a_poscar_named_like_a_cif_says_how_files_are_read(crystals, tmp_path, formation):
    (tmp_path / "relaxed.cif").write_text(crystals[0].to(fmt="poscar"))
    with pytest.raises(StructureError, match=r"relaxed.cif: not a CIF \(no 'data_' block\); a structure file of "
                                             "another format is read by its name: POSCAR"):
        formation.predict([tmp_path / "relaxed.cif"])


def _two_crystals():
    from pymatgen.core import Structure

    from crystalzoo import example_structures

    first, second = (Structure.from_file(p) for p in example_structures()[:2])
    for s in (first, second):
        s.remove_oxidation_states()
    return first, second


@pytest.mark.parametrize("suffix, fmt", [(".vasp", "poscar"), (".cssr", "cssr"), (".res", "res")])
def test_a_file_of_two_crystals_is_refused_in_every_format(tmp_path, formation, suffix, fmt):
    """POSCAR read the first of two structures, res the last, and CSSR merged both into one
    crystal: each gave one silent prediction. One crystal per file, in every format."""
    first, second = _two_crystals()
    one = tmp_path / f"one{suffix}"
    one.write_text(first.to(fmt=fmt))
    assert formation.predict([one]) == pytest.approx(formation.predict([first]), abs=1e-5)
    two = tmp_path / f"two{suffix}"
    two.write_text(first.to(fmt=fmt) + "\n" + second.to(fmt=fmt))
    with pytest.raises(StructureError, match="crystalzoo reads one crystal per file"):
        formation.predict([two])


def test_a_poscar_with_velocities_is_one_crystal(tmp_path, formation):
    from pymatgen.io.vasp import Poscar

    first, _ = _two_crystals()
    path = tmp_path / "CONTCAR.vasp"
    path.write_text(Poscar(first, velocities=[[0.01, 0.0, -0.02]] * len(first)).get_str())
    assert formation.predict([path]) == pytest.approx(formation.predict([first]), abs=1e-5)


def test_yaml_anchors_and_aliases_are_refused_before_they_expand(tmp_path, formation):
    """A 749-byte pymatgen YAML file with nested aliases took 15 s and +445 MB, and each more line
    multiplied both by 10: crystalzoo does not expand them."""
    import time

    first, _ = _two_crystals()
    plain_yaml = tmp_path / "plain.yaml"
    plain_yaml.write_text(first.to(fmt="yaml"))
    assert formation.predict([plain_yaml]) == pytest.approx(formation.predict([first]), abs=1e-5)
    bomb = "\n".join([f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)])
    path = tmp_path / "bomb.yaml"
    path.write_text("a0: &a0 [x]\n" + bomb + "\n" + first.to(fmt="yaml"))
    t0 = time.perf_counter()
    with pytest.raises(StructureError, match="uses YAML anchors or aliases"):
        formation.predict([path])
    assert time.perf_counter() - t0 < 2


def test_a_second_poscar_structure_of_three_column_lines_is_refused(tmp_path, formation):
    """A second structure written with three fields on every line (three species, three scale
    factors, coordinates without labels) passed as velocities, and the file predicted the first."""
    first, _ = _two_crystals()
    second = "\n".join(["K Br Rb", "1.0 1.0 1.0", "5.6 0.0 0.0", "0.0 5.6 0.0", "0.0 0.0 5.6", "K Br Rb", "1 1 1",
                        "Direct configuration= 1", "0.0 0.0 0.0", "0.5 0.5 0.5", "0.0 0.5 0.5"])
    for gap in ("", "\n"):
        path = tmp_path / f"two{len(gap)}.vasp"
        path.write_text(first.to(fmt="poscar") + gap + second + "\n")
        with pytest.raises(StructureError, match="crystalzoo reads one crystal per file"):
            formation.predict([path])


def test_yaml_anchors_with_any_name_are_refused(tmp_path, formation):
    """Anchors and aliases are found by the YAML scanner, whatever characters name them (the check
    missed '&é…')."""
    first, _ = _two_crystals()
    for name in ("é1", "x", "_"):
        path = tmp_path / "anchored.yaml"
        path.write_text(first.to(fmt="yaml").rstrip("\n") + f"\nextra: &{name} [1, 2]\nmore: *{name}\n")
        with pytest.raises(StructureError, match="uses YAML anchors or aliases"):
            formation.predict([path])
    quoted = tmp_path / "quoted.yaml"  # an & or * inside a string is no anchor
    quoted.write_text(first.to(fmt="yaml").rstrip("\n") + '\nnote: "Na & Cl *bulk*"\n')
    assert formation.predict([quoted]) == pytest.approx(formation.predict([first]), abs=1e-5)


def test_a_vasp4_poscar_without_species_is_refused(tmp_path, formation):
    """pymatgen reads a VASP 4 POSCAR (no species line) as H, He, …, with a warning that was
    silenced: KCl predicted -0.193 eV/atom (as itself -2.140)."""
    from pymatgen.io.vasp import Poscar

    from pymatgen.core import Structure

    from crystalzoo import example_structures

    kcl = Structure.from_file(example_structures()[1])  # K+ and Cl-: its coordinate lines name no element either
    lines = Poscar(kcl).get_str().splitlines()
    path = tmp_path / "vasp4.vasp"
    path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    with pytest.raises(StructureError, match="names no elements \\(a VASP 4 POSCAR without its species line"):
        formation.predict([path])
    kcl.remove_oxidation_states()  # element symbols after the coordinates: pymatgen reads them
    lines = Poscar(kcl).get_str().splitlines()
    path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    assert formation.predict([path]) == pytest.approx(formation.predict([kcl]), abs=1e-5)


def test_a_poscar_with_more_coordinate_lines_than_atoms_is_refused(tmp_path, formation):
    """Counts '1 1' and three coordinate lines (no blank line, so no velocities): the third atom was
    dropped, and the file predicted NaCl."""
    first, _ = _two_crystals()
    text = first.to(fmt="poscar").rstrip("\n") + "\n0.25 0.25 0.25\n"
    path = tmp_path / "extra.vasp"
    path.write_text(text)
    with pytest.raises(StructureError, match=f"declares {len(first)} atoms, but {len(first) + 1} coordinate lines"):
        formation.predict([path])


def test_a_cssr_listing_fewer_atoms_than_its_header_is_refused(tmp_path, formation):
    first, _ = _two_crystals()
    lines = first.to(fmt="cssr").rstrip("\n").split("\n")
    path = tmp_path / "short.cssr"
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(StructureError, match=f"declares {len(first)} atoms but {len(first) - 1} are listed"):
        formation.predict([path])


def test_json_files_of_entries_records_and_molecules_say_what_they_hold(tmp_path, formation):
    """All three failed with "cannot be read as a json structure file ('lattice')"."""
    from pymatgen.core import Molecule
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    first, _ = _two_crystals()
    files = {"entry": (ComputedStructureEntry(first, -10.0).as_dict(), "a ComputedStructureEntry with a 'structure'"),
             "record": ({"material_id": "mp-1", "structure": first.as_dict()}, "a record with a 'structure' inside"),
             "molecule": (Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]).as_dict(), "a molecule"),
             "other": ({"formula": "NaCl"}, r"a JSON object with the keys \['formula'\]")}
    for name, (data, held) in files.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(StructureError, match=f"{name}.json: holds {held}.*Structure.to\\(filename="):
            formation.predict([path])


def test_files_whose_header_and_atoms_disagree_are_refused(tmp_path, formation):
    """A CSSR atom line pymatgen does not match (a label Ba2+, a coordinate 1.0E-05) was skipped,
    and the crystal predicted without it; an XSF PRIMCOORD count above the atoms listed, a POSCAR
    species line longer than its counts (K dropped) or counts above its coordinate lines were read
    as they came or failed with "list index out of range"."""
    cssr = "5.0132 5.0132 5.0132\n60.00 60.00 60.00 SPGR =  1 P 1    OPT = 1\n2 0\n0 Ba1 Te1\n{ba}\n2 Te 0.5 0.5 0.5\n"
    xsf = ("CRYSTAL\nPRIMVEC\n 4.3416 0.0 2.5066\n 1.4472 4.0933 2.5066\n 0.0 0.0 5.0132\nPRIMCOORD\n {n} 1\n"
           "Ba 0.0 0.0 0.0\nTe 2.8944 2.0466 5.0132\n")
    poscar = "NaCl\n1.0\n5.64 0 0\n0 5.64 0\n0 0 5.64\n{species}\n{counts}\nDirect\n0 0 0\n0.5 0.5 0.5\n"
    good = {"ok.cssr": cssr.format(ba="1 Ba 0.0 0.0 0.0"), "ok.xsf": xsf.format(n=2),
            "POSCAR": poscar.format(species="Na Cl", counts="1 1")}
    for name, text in good.items():
        (tmp_path / name).write_text(text)
        assert np.isfinite(formation.predict([tmp_path / name])).all()
    bad = {"label.cssr": (cssr.format(ba="1 Ba2+ 0.0 0.0 0.0"), "declares 2 atoms, but 1 were read"),
           "number.cssr": (cssr.format(ba="1 Ba 1.0E-05 0.0 0.0"), "declares 2 atoms, but 1 were read"),
           "more.xsf": (xsf.format(n=3), "declares 3 atoms, but 2 were read"),
           "species.vasp": (poscar.format(species="Na Cl K", counts="1 1"), "names 3 elements .* gives 2 counts"),
           "counts.vasp": (poscar.format(species="Na Cl", counts="1 2"), "declares 3 atoms, but 2 coordinate lines")}
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(StructureError, match=message):
            formation.predict([tmp_path / name])


def _si_cif(symmetry: str, site: str = "Si1 Si 0 0 0") -> str:
    return ("data_Si\n_cell_length_a 5.43\n_cell_length_b 5.43\n_cell_length_c 5.43\n_cell_angle_alpha 90\n"
            f"_cell_angle_beta 90\n_cell_angle_gamma 90\n{symmetry}\nloop_\n_atom_site_label\n_atom_site_type_symbol\n"
            f"_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n{site}\n")


def test_symmetry_that_cannot_be_read_is_refused_not_taken_as_p1():
    """Diamond Si, one site listed: with its operations under CIF 2's dotted name, or a space-group
    name pymatgen cannot parse, pymatgen fell back to P1 and the crystal was read as 1 Si atom
    (0.836 eV/atom predicted against 0.091); with F d -3 m named but no operations, the origin
    choice 2 coordinates 1/8, 1/8, 1/8 became 16 atoms (a fresh attack)."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter
    from pymatgen.symmetry.groups import SpaceGroup

    from crystalzoo.graphs.cif import parse_cif

    ops = "\n".join(op.as_xyz_str() for op in SpaceGroup("Fd-3m").symmetry_ops)
    cases = {
        f"_symmetry_space_group_name_H-M 'F d -3 m'\nloop_\n_space_group_symop.operation_xyz\n{ops}":
            "under a name pymatgen does not read",
        "_symmetry_space_group_name_H-M 'F d -3 m S'": "could not be read",
        "_space_group_name_Hall '-F 4vw 2vw 3'": "could not be read",
        "_space_group_IT_number 227": "two origin choices",
        "_symmetry_space_group_name_H-M 'F d -3 m'": "two origin choices",
    }
    for symmetry, message in cases.items():
        with pytest.raises(StructureError, match=message):
            parse_cif(_si_cif(symmetry), "si.cif")
    # what reads as before: every atom listed without any symmetry key, a group of one origin, the
    # operations listed (pymatgen's own symmetrised CIF)
    two = _si_cif("", "Si1 Si 0 0 0\nSi2 Si 0.25 0.25 0.25")
    assert len(parse_cif(two, "p1.cif")) == 2
    for unnamed in ("_symmetry_space_group_name_H-M ?", "_space_group_crystal_system cubic",
                    "loop_\n_space_group_symop_id\n1"):  # no group named, no operations: P1 as before
        assert len(parse_cif(_si_cif(unnamed, "Si1 Si 0 0 0\nSi2 Si 0.25 0.25 0.25"), "p1.cif")) == 2
    assert len(parse_cif(_si_cif("_symmetry_space_group_name_H-M 'F m -3 m'"), "fcc.cif")) == 4
    silicon = Structure.from_spacegroup("Fd-3m", [[5.43, 0, 0], [0, 5.43, 0], [0, 0, 5.43]], ["Si"], [[0, 0, 0]])
    assert len(parse_cif(str(CifWriter(silicon, symprec=0.01)), "symmetrised.cif")) == 8
