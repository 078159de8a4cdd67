"""The plain-CIF reader gives, for every CIF it reads, the same elements, lattice and Cartesian
coordinates, in the same order and to the last bit, as pymatgen's CifParser; it leaves every
other CIF to pymatgen, whose checks then apply."""

from __future__ import annotations

import gzip
import json
import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crystalzoo import build_arrays, load_model
from crystalzoo.data import bundled_dataset
from crystalzoo.errors import StructureError
from crystalzoo.graphs.cif import parse_cif
from crystalzoo.graphs.cells import _cell, to_cell
from crystalzoo.graphs.plain_cif import read_plain_cif

from ..conftest import DATA


def _pymatgen_cell(text: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _cell(parse_cif(text, "CIF text"), "CIF text")


def _same(text: str) -> bool:
    """Whether the plain reader read ``text`` exactly as pymatgen does (False: it left it to pymatgen)."""
    plain = read_plain_cif(text)
    if plain is None:
        return False
    z, lattice, cart = plain
    cell = _pymatgen_cell(text)
    assert z.tolist() == cell.z.tolist()
    assert lattice.tobytes() == np.ascontiguousarray(cell.lattice).tobytes()
    assert cart.tobytes() == np.ascontiguousarray(cell.cart).tobytes()
    return True


def _cifs(path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line)["cif"] for line in f]


def test_every_bundled_and_test_crystal_reads_as_pymatgen_reads_it():
    cifs = _cifs(DATA / "mp200.jsonl.gz") + _cifs(bundled_dataset("mp-band-gap"))[:400]
    read = sum(_same(c) for c in cifs)
    assert read >= 0.99 * len(cifs)  # the Materials Project's CIFs are plain (the rest: noble gases)


def test_cifs_that_are_not_plain_are_left_to_pymatgen():
    folder = DATA / "cifs"
    texts = [p.read_text() for p in sorted(folder.glob("*.cif"))]
    assert texts and all(read_plain_cif(t) is None for t in texts)  # COD files: symmetry, comments, many tags


@pytest.fixture(scope="module")
def plain(mp200):
    return next(r["cif"] for r in mp200 if "O" in r["cif"] and "Fe" in r["cif"])


@pytest.mark.parametrize("edit", [
    ("'P 1'", "'P -1'"),  # another group
    ("1  'x, y, z'", "1  'x, y, z'\n  2  '-x, -y, -z'"),  # another operation
    ("_cell_volume", "_cell_measurement_temperature 293\n_cell_volume"),  # a tag it does not know
    ("loop_", "loop_ # sites", 1),  # a comment
    ("  1\n", "  0.5\n", 1),  # a partial occupancy: pymatgen's disorder message
])
def test_anything_else_goes_to_pymatgen(plain, edit):
    old, new, *count = edit
    text = plain.replace(old, new, *count)
    assert text != plain and read_plain_cif(text) is None


def _cif(species, coords, lattice=None) -> str:
    return Structure(lattice or Lattice.cubic(5.0), species, coords).to(fmt="cif")


def test_pymatgen_steps_are_taken_alike():
    # listed O before Fe (sorted by electronegativity), coordinates near 1/3 and 2/3 (set to them),
    # outside [0, 1) and -0.0 (wrapped as pymatgen wraps them), a hexagonal cell
    text = _cif(["O", "Fe", "O", "Fe"], [[0.333331, 0.6666672, 0.25], [0, 0, 0], [-0.25, 1.0, 0.75], [-0.0, 0.5, 0.5]],
                Lattice.hexagonal(3.1, 5.2))
    text = text.replace("-0.00000000", "-0.0")
    assert _same(text)
    z, _, _ = read_plain_cif(text)
    assert z.tolist() == [26, 26, 8, 8]


def test_sites_pymatgen_would_merge_are_left_to_it():
    text = _cif(["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).replace("0.50000000  0.50000000  0.50000000",
                                                                    "0.00000000  0.00005000  0.99999000")
    assert read_plain_cif(text) is None


def test_sites_wrapping_brings_together_are_left_to_pymatgen():
    # 1e-4 apart as written (pymatgen keeps both), 0.00005 and 0.99995 after wrapping (it drops one)
    text = _cif(["Fe", "Fe", "O"], [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.5, 0.5, 0.5]], Lattice.hexagonal(3.1, 5.2))
    text = text.replace("0.10000000  0.20000000  0.30000000", "0.00005000  0.20000000  0.30000000", 1)
    text = text.replace("0.10000000  0.20000000  0.30000000", "-0.00005000  0.20000000  0.30000000", 1)
    assert read_plain_cif(text) is None and len(_pymatgen_cell(text).z) == 2


def test_a_block_pymatgen_skips_is_left_to_it(plain):
    text = plain.replace("data_", "data_powder_pattern_", 1)
    assert read_plain_cif(text) is None
    with pytest.raises(StructureError):
        to_cell(text)


def test_an_element_without_electronegativity_is_left_to_pymatgen():
    assert read_plain_cif(_cif(["Ar", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])) is None
    assert read_plain_cif(_cif(["Kr", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])) is not None


def test_a_plain_cif_keeps_crystalzoo_s_checks(tmp_path):
    close = _cif(["Fe", "O"], [[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(StructureError, match="closer than"):
        build_arrays([close], progress=False)
    path = tmp_path / "dense.cif"
    path.write_text(_cif(["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]], Lattice.cubic(0.9)))
    with pytest.raises(StructureError, match=r"dense\.cif: .* per atom is not a physical crystal"):
        to_cell(path)


def test_predictions_from_plain_cif_files_are_those_of_structures(mp200_structures, tmp_path):
    structures = mp200_structures[:30]
    paths = []
    for i, s in enumerate(structures):
        paths.append(tmp_path / f"{i}.cif")
        s.to(filename=str(paths[-1]))
    assert all(read_plain_cif(p.read_text()) is not None for p in paths)
    model = load_model("formation")
    from_files = model.predict(paths)
    from_pymatgen = model.predict([Structure.from_file(str(p)) for p in paths])
    assert np.array_equal(from_files, from_pymatgen)


def test_a_structure_is_named_by_its_formula_in_messages(mp200_structures):
    s = mp200_structures[5].copy()
    s.append(s[0].specie, s[0].frac_coords + 0.001)  # an atom on top of another
    with pytest.raises(StructureError, match=rf"^{s.formula}: atoms .* closer than"):
        build_arrays([s], progress=False)
