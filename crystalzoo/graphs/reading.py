"""Reading crystals: pymatgen structures, ASE atoms, CIF (checked before pymatgen parses it) and the
other file formats, one crystal per input."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

from ..errors import StructureError
from .cif import parse_cif
from .file_checks import JSON_FIX, check_one_crystal, declared_atoms, json_holds

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Structure


StructureLike = Union["Structure", str, os.PathLike]


#: largest structure file read (bytes): a CIF of a 1,728-atom supercell is about 150 kB
MAX_STRUCTURE_FILE_BYTES = 20_000_000


def structure_path(source: StructureLike) -> Path | None:
    """The file a CIF path names, or None where ``source`` is CIF text (or a ``Structure``).

    The one rule for telling them apart: a path object is a path; a string is a path when
    something exists there (so a file called ``data_1.cif``, or one with a line break in its
    name, is a file), else CIF text when it has a line break or starts with ``data_`` (a CIF
    on one line), else a path (that does not exist). An empty string is (empty) CIF text,
    not the current folder.
    """
    if isinstance(source, os.PathLike):
        return Path(source)
    if not isinstance(source, str) or not source.strip():
        return None
    try:
        exists = len(source) <= 4096 and os.path.lexists(source)
    except (OSError, ValueError):  # a name too long for a path, a NUL character
        exists = False
    if not exists and ("\n" in source or "\r" in source or source.lstrip().startswith("data_")):
        return None
    return Path(source)


def read_structure_file(path: Path) -> bytes:
    """The bytes of a structure file: only a regular file of at most
    ``MAX_STRUCTURE_FILE_BYTES``; :class:`StructureError` for anything else (a folder, a
    FIFO, a device, a huge file), read without blocking and without reading past the limit."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise StructureError(f"{path}: no such file (expected a CIF file, CIF text or a Structure)") from None
    except (OSError, ValueError) as exc:
        name = str(path) if len(str(path)) <= 100 else f"{str(path)[:60]!r}… ({len(str(path)):,} characters)"
        raise StructureError(f"{name}: cannot be read ({getattr(exc, 'strerror', None) or exc}); pass a CIF file, "
                             "CIF text or a Structure") from None
    if stat.S_ISDIR(info.st_mode):
        raise StructureError(f"{path}: is a folder, not a CIF file")
    if not stat.S_ISREG(info.st_mode):
        raise StructureError(f"{path}: is not a regular file (a FIFO, socket or device); pass a CIF file")
    if info.st_size > MAX_STRUCTURE_FILE_BYTES:
        raise StructureError(
            f"{path}: {info.st_size:,} bytes is more than the {MAX_STRUCTURE_FILE_BYTES:,} bytes a structure "
            "file may have (crystalzoo.graphs.MAX_STRUCTURE_FILE_BYTES); is it really one crystal?"
        )
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped after the check
                raise StructureError(f"{path}: is not a regular file; pass a CIF file")
            data = f.read(MAX_STRUCTURE_FILE_BYTES + 1)
    except OSError as exc:
        raise StructureError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_STRUCTURE_FILE_BYTES:
        raise StructureError(f"{path}: more than {MAX_STRUCTURE_FILE_BYTES:,} bytes; is it really one crystal?")
    return data


#: structure files read by their name (lower case): pymatgen's readers (``IStructure.from_str``
#: formats), and ASE's extended XYZ (the ``[ase]`` extra). Any other name is read as CIF.
FILE_FORMATS = {".cif": "cif", ".mcif": "cif", ".vasp": "poscar", ".poscar": "poscar", ".cssr": "cssr",
                ".xsf": "xsf", ".res": "res", ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".extxyz": "extxyz",
                ".xyz": "extxyz"}


ASE_INSTALL = "pip install 'crystalzoo[ase]'"


def file_format(path: Path) -> str:
    """How a structure file is read, from its name: the suffixes of :data:`FILE_FORMATS` their
    formats (``CONTCAR_final.cif`` is a CIF), then ``POSCAR*`` / ``CONTCAR*`` VASP files,
    anything else CIF."""
    name = path.name.lower()
    suffix = Path(name).suffix
    if suffix in FILE_FORMATS:
        return FILE_FORMATS[suffix]
    return "poscar" if name.startswith(("poscar", "contcar")) else "cif"


def is_ase_atoms(obj: Any) -> bool:
    """Whether ``obj`` is an ``ase.Atoms`` (told without importing ASE)."""
    return any(c.__name__ == "Atoms" and c.__module__.startswith("ase") for c in type(obj).__mro__)


def _from_ase(atoms: Any, name: str) -> "Structure":
    """A pymatgen Structure from an ASE ``Atoms`` that is periodic in three directions."""
    import numpy as np

    if len(atoms) == 0:
        raise StructureError(f"{name}: an ASE Atoms with no atoms is not a crystal")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.all() or abs(float(np.linalg.det(np.asarray(atoms.cell)))) < 1e-12:
        raise StructureError(f"{name}: an ASE Atoms with pbc={pbc.tolist()} and this cell is not a crystal; CGCNN "
                             "graphs need a cell periodic in all three directions (atoms.pbc = True, atoms.cell set)")
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        return AseAtomsAdaptor.get_structure(atoms)
    except Exception as exc:  # pymatgen's conversion raises several types
        raise StructureError(f"{name}: cannot be made a crystal structure ({' '.join(str(exc).split())[:200]})") \
            from None


def _parse_other(text: str, fmt: str, path: Path) -> "Structure":
    """A structure file in a format other than CIF (:func:`file_format`)."""
    if fmt == "extxyz":
        try:
            import ase.io
        except ImportError:
            from ..errors import MissingExtraError

            raise MissingExtraError(f"{path}: reading extended XYZ needs ASE: {ASE_INSTALL}") from None
        import io

        try:
            frames = ase.io.read(io.StringIO(text), index=":", format="extxyz")
        except Exception as exc:  # ASE raises many types for broken files
            raise StructureError(f"{path}: cannot be read as extended XYZ ({' '.join(str(exc).split())[:200]})") \
                from None
        if len(frames) != 1:
            raise StructureError(f"{path}: holds {len(frames)} structures; crystalzoo reads one crystal per file: "
                                 "split it, or pass ase.io.read(path, ':') (a list of Atoms) in Python")
        return _from_ase(frames[0], str(path))
    from pymatgen.core import IStructure

    check_one_crystal(text, fmt, path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            structure = IStructure.from_str(text, fmt=fmt)
    except Exception as exc:  # pymatgen raises many types for broken files
        held = json_holds(text) if fmt == "json" else None
        if held:
            raise StructureError(f"{path}: holds {held}, not a pymatgen Structure: {JSON_FIX}") from None
        raise StructureError(f"{path}: cannot be read as a {fmt.upper() if fmt == 'poscar' else fmt} structure file "
                             f"({' '.join(str(exc).split())[:200]})") from None
    declared = declared_atoms(text, fmt)
    if declared is not None and len(structure) != declared:  # a line the reader skipped, or a short list
        raise StructureError(f"{path}: its header declares {declared} atoms, but {len(structure)} were read (a line "
                             f"the {fmt} reader could not read, such as a label like 'Ba2+' or a number like 1.0E-05, "
                             "or atoms missing): correct the file, or give a CIF")
    if any("cannot be determined" in str(w.message) for w in caught):  # pymatgen's stand-ins: H, He, Li, …
        raise StructureError(f"{path}: names no elements (a VASP 4 POSCAR without its species line, and no POTCAR is "
                             "read): add the line of element symbols above the counts (VASP 5), or give a CIF")
    if not isinstance(structure, IStructure):
        raise StructureError(f"{path}: holds a {type(structure).__name__}, not a crystal structure")
    return structure


def read_text(source: str | os.PathLike) -> tuple[str, str, Path | None]:
    """(text, format, path) of a structure file or CIF text (``path`` None): the file read as
    :func:`read_structure_file` allows, its format from its name (:func:`file_format`).
    :class:`StructureError` naming the file where it cannot be read."""
    path = structure_path(source)
    if path is None:
        one_line = isinstance(source, str) and "\n" not in source and "\r" not in source
        if one_line and source.strip().lower().endswith(".cif"):
            raise StructureError(f"{source}: no such file (expected a CIF file, CIF text or a Structure)")
        return str(source), "cif", None
    try:
        text = read_structure_file(path).decode("utf-8")
    except UnicodeDecodeError:
        raise StructureError(f"{path}: not UTF-8 text (a binary file, or text in another encoding such as "
                             "Latin-1): save the file as UTF-8") from None
    fmt = file_format(path)
    if fmt == "cif" and "data_" not in text and text.strip():  # read as CIF by its name, but no CIF inside
        raise StructureError(f"{path}: not a CIF (no 'data_' block); a structure file of another format is read "
                             "by its name: POSCAR/CONTCAR or *.vasp, *.xsf, *.cssr, *.res, *.json, *.yaml, "
                             "*.extxyz (docs/quickstart.md, 'Structure files')")
    return text, fmt, path


def from_text(text: str, fmt: str, path: Path | None) -> "Structure":
    """The structure in ``text`` (what :func:`read_text` gives)."""
    if fmt != "cif":
        return _parse_other(text, fmt, path)
    return parse_cif(text, "CIF text" if path is None else str(path))


def load_structure(source: StructureLike) -> "Structure":
    """A pymatgen ``Structure`` from a ``Structure``, an ASE ``Atoms`` (periodic), a structure
    file, or CIF text (a path and CIF text are told apart by :func:`structure_path`). Files
    are read by their name (:func:`file_format`): CIF, POSCAR/CONTCAR/``*.vasp``, cssr, xsf,
    res, pymatgen JSON/YAML, and extended XYZ (the ``[ase]`` extra); any other name as CIF.

    Raises :class:`StructureError` naming the file and the problem when it cannot be read.
    """
    from pymatgen.core import (
        IStructure as Structure,  # Structure and the immutable IStructure
    )

    if isinstance(source, Structure):
        return source
    if is_ase_atoms(source):
        return _from_ase(source, "ase.Atoms")
    if isinstance(source, (str, os.PathLike)):
        return from_text(*read_text(source))
    refuse_molecule(source)
    raise StructureError(
        f"cannot make a crystal structure from a {type(source).__name__}; "
        "pass a pymatgen Structure, an ase.Atoms, a structure file (CIF, POSCAR, …) or CIF text"
    )


def refuse_molecule(source: Any) -> None:
    from pymatgen.core import IMolecule

    if isinstance(source, IMolecule):
        raise StructureError("a Molecule is not a crystal: CGCNN graphs need a periodic pymatgen Structure (a lattice)")


def structure_list(structures: Any) -> list:
    """``structures`` as a list; :class:`StructureError` for one crystal or something that is
    not a collection of them (a string would otherwise be read one character at a time)."""
    from pymatgen.core import IStructure

    refuse_molecule(structures)
    if isinstance(structures, (str, bytes, os.PathLike, IStructure)) or is_ase_atoms(structures) \
            or not isinstance(structures, Iterable):
        raise StructureError(f"expected a list of crystals (pymatgen Structures, CIF paths or CIF texts), got a "
                             f"{type(structures).__name__}; for one crystal, pass [it]")
    return list(structures)


def crystal_list(structures: Any, what: str = "predict") -> list:
    """``structures`` as a list for ``predict`` / ``embed``: one crystal (a Structure, a CIF
    path or CIF text) becomes a list of one; a set or dict, whose order (and so the order of
    the results) is not defined, is a :class:`StructureError`."""
    from pymatgen.core import IStructure

    if isinstance(structures, (str, os.PathLike, IStructure)) or is_ase_atoms(structures):  # one crystal
        return [structures]
    if isinstance(structures, (set, frozenset, dict)):
        raise StructureError(f"{what} takes a list of crystals, not a {type(structures).__name__} (its order, "
                             f"and so the order of the results, is not defined)")
    return structure_list(structures)
