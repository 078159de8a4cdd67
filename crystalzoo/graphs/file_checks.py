"""Checks of structure files beyond what their parsers check: one crystal per file, the atoms a
header declares against those read, POSCAR species against counts, YAML anchors, and what a JSON
file that is no structure holds (docs/robustness.md, "Ensembles, intervals and other inputs")."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import StructureError


def _one_per_file(path: Path, what: str) -> StructureError:
    return StructureError(f"{path}: holds {what}; crystalzoo reads one crystal per file (it would otherwise predict "
                          "for one of them, or for all of them merged): split it into one file per crystal")


def _poscar_layout(lines: list[str]) -> tuple[int, int, list[str], int]:
    """(the first coordinate line, the atoms the counts line declares, the species line's names
    ([] in VASP 4), the number of counts) of a POSCAR text."""
    i = 5
    species = []
    if not all(tok.lstrip("+-").isdigit() for tok in lines[i].split()):  # a line of species names
        species = lines[i].split()
        i += 1
    counts = lines[i].split()
    n = sum(int(tok) for tok in counts)
    i += 1
    if lines[i].strip()[:1] in ("s", "S"):  # selective dynamics
        i += 1
    return i + 1, n, species, len(counts)


def declared_atoms(text: str, fmt: str) -> int | None:
    """The number of atoms a POSCAR, CSSR or XSF file's header declares (None: not said, or
    not readable: the parser says what is wrong)."""
    lines = text.splitlines()
    try:
        if fmt == "poscar":
            return _poscar_layout(lines)[1]
        if fmt == "cssr":
            return int([line for line in lines if line.strip()][2].split()[0])
        if fmt == "xsf":
            k = next(k for k, line in enumerate(lines) if line.strip().upper() == "PRIMCOORD")
            return int(lines[k + 1].split()[0])
    except (IndexError, ValueError, StopIteration):
        return None
    return None


def _yaml_aliases(text: str) -> bool:
    """Whether the YAML ``text`` has an anchor or an alias (its tokens, read without building
    anything: linear in the text's length)."""
    from ruamel.yaml import YAML

    try:
        return any(type(t).__name__ in ("AnchorToken", "AliasToken") for t in YAML(typ="safe").scan(text))
    except Exception:  # not YAML at all: the parser says what is wrong
        return False


def _numbers(line: str) -> bool:
    """Whether every field of ``line`` is a number."""
    try:
        [float(tok) for tok in line.split()]
    except ValueError:
        return False
    return True


def check_one_crystal(text: str, fmt: str, path: Path) -> None:
    """:class:`StructureError` for a structure file that holds more than one crystal, which
    pymatgen reads as its first (POSCAR), its last (res) or all of them merged into one (CSSR),
    and for a YAML file with anchors or aliases, which pymatgen would expand without bound (a
    file of a few hundred bytes can become gigabytes). What this cannot decide is left to the
    parser, which says what is wrong."""
    lines = text.splitlines()
    if fmt == "res":
        titles = sum(1 for line in lines if line.strip().upper().startswith("TITL"))
        if titles > 1:
            raise _one_per_file(path, f"{titles} structures (TITL blocks)")
    elif fmt == "cssr":
        rows = [line for line in lines if line.strip()]
        try:
            atoms = int(rows[2].split()[0])
        except (IndexError, ValueError):
            return
        if len(rows) > 4 + atoms:
            raise _one_per_file(path, f"{len(rows) - 4} atom lines where its header declares {atoms} atoms (a second "
                                      "structure?)")
        if len(rows) < 4 + atoms:  # pymatgen reads the atoms listed: a crystal with atoms missing
            raise StructureError(f"{path}: its header declares {atoms} atoms but {max(len(rows) - 4, 0)} are listed: "
                                 "complete the file, or correct the count in its third line")
    elif fmt == "poscar":
        from pymatgen.core import IStructure

        try:
            start, atoms, species, n_counts = _poscar_layout(lines)
        except (IndexError, ValueError):
            return
        if species and len(species) != n_counts:
            raise StructureError(f"{path}: its species line names {len(species)} elements ({' '.join(species)}) but "
                                 f"its counts line gives {n_counts} counts: give one count per element")
        coordinates = lines[start : start + atoms]
        listed = next((k for k, line in enumerate(coordinates)
                       if len(line.split()) < 3 or not _numbers(" ".join(line.split()[:3]))), len(coordinates))
        if listed < atoms:
            raise StructureError(f"{path}: its counts line declares {atoms} atoms, but {listed} coordinate lines "
                                 "follow: complete the file, or correct the counts")
        rest = lines[start + atoms:]
        if rest and rest[0].strip() and _numbers(rest[0]) and len(rest[0].split()) >= 3:
            # VASP puts a blank line before velocities: a line of coordinates right after the atoms is one atom more
            extra = next((k for k, line in enumerate(rest) if not (line.strip() and _numbers(line))), len(rest))
            raise StructureError(f"{path}: its counts line declares {atoms} atoms, but {atoms + extra} coordinate lines "
                                 f"follow (only the first {atoms} would be read): correct the counts, or remove the "
                                 "extra lines")
        rest = [line for line in rest if line.strip()]
        if not rest:
            return
        try:  # a second structure reads as one; velocities and predictor-corrector data do not
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                IStructure.from_str("\n".join(rest), fmt="poscar")
        except Exception:
            if all(_numbers(line) for line in rest):  # a CONTCAR's velocities and predictor-corrector data
                return
            raise _one_per_file(path, "lines after its atoms that are neither velocities nor predictor-corrector "
                                      "data (a second structure?)") from None
        raise _one_per_file(path, "more than one POSCAR structure")
    elif fmt == "yaml" and _yaml_aliases(text):
        raise StructureError(f"{path}: uses YAML anchors or aliases (&name, *name), which crystalzoo does not expand "
                             "(a small file can expand to gigabytes); write the structure without them, e.g. "
                             "Structure.to(filename='crystal.yaml') or as CIF")


JSON_FIX = ("write the structure itself, Structure.to(filename='crystal.json') (for an entry or a record: "
            "Structure.from_dict(record['structure']).to(filename='crystal.json')), or give a CIF")


def json_holds(text: str) -> str | None:
    """What a JSON file that pymatgen cannot read as a structure holds, in words (None: no
    JSON object, or one that looks like a structure: the parser's own message says more)."""
    import json

    try:
        data = json.loads(text)
    except RecursionError:
        return "JSON nested too deep to be a structure"
    except ValueError:
        return None
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}"
    kind = data.get("@class")
    if kind in ("Molecule", "IMolecule") or ("sites" in data and "lattice" not in data):
        return "a molecule (sites without a lattice)"
    if "structure" in data:
        return f"a {kind or 'record'} with a 'structure' inside (an entry or a database record)"
    if "lattice" not in data:
        return f"a JSON object with the keys {sorted(map(str, data))[:8]}"
    return None
