"""Crystal structures → graphs with the CGCNN atom and bond features.

structures → :func:`build_arrays` (compact :class:`GraphArrays`, one per crystal, cached by
datasets) → :func:`collate` (a batched :class:`~crystalzoo.crystal_graph.CrystalGraph` of torch
tensors) → a model. :func:`build_graph` and :func:`iter_batches` do both steps; with
``backend="dgl"`` (the ``[dgl]`` extra) ``build_graph`` returns a ``dgl.DGLGraph`` instead.

A crystal becomes a directed graph: one node per atom in the unit cell, and an edge
j → i from each of the ``max_neighbors`` nearest neighbours j of atom i within
``radius`` Å, periodic images included (so two atoms can share several parallel edges).
Atom feature ``atom_fea``: the 92-value CGCNN encoding of the element. Bond feature
``bond_fea``: the distance expanded in Gaussians centred every ``gaussian_step`` Å from
``gaussian_min`` to ``radius``.

Neighbour policy (documented in ``docs/graphs.md``):

* neighbours are ordered by distance. Where the ``max_neighbors``-th place is shared by
  several candidates at the same distance (within ``TIE_TOLERANCE``), all of them are kept,
  each with an equal fractional edge weight, so an atom's weights sum to ``max_neighbors``
  and the convolution sum is the average over every way to break the tie: the graph does not
  depend on the order of the atoms. Without such a tie every weight is 1;
* an atom with fewer than ``max_neighbors`` neighbours inside the radius keeps the ones it
  has — no fake padding edges (the original CGCNN padded with atom 0 at radius + 1 Å);
* an atom with *no* neighbour inside the radius takes its ``max_neighbors`` nearest
  neighbours at whatever distance they are (at the latest its own periodic image, one
  lattice vector away), so every crystal gets a graph and a prediction. Their bond
  features decay to about zero beyond the radius; ``graph.extended`` marks them.

Example::

    >>> from crystalzoo.graphs import build_graph
    >>> from crystalzoo import example_structures
    >>> g = build_graph(example_structures()[0])
    >>> g.atom_fea.shape[1], g.bond_fea.shape[1]
    (92, 41)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, Union

import numpy as np

from .crystal_graph import CrystalGraph, uniform_degree
from .errors import ConfigError, CrystalZooError, GraphSettingsMismatchError, StructureError

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Structure

StructureLike = Union["Structure", str, os.PathLike]

#: atoms closer than this (Å) are taken as overlapping, which no real crystal has.
MIN_DISTANCE = 0.1
#: less volume per atom (Å³) than this is no real crystal (the densest solids have ≈ 5).
MIN_VOLUME_PER_ATOM = 1.0
#: neighbours whose distances differ by less than this (Å) are tied (docs/graphs.md: measured on
#: the Materials Project data, scripts/find_ties.py)
TIE_TOLERANCE = 1e-4
#: a site of one element whose occupancy is this close to 1 is fully occupied (CIFs round
#: occupancies: 0.99999, 1.00001)
OCCUPANCY_TOLERANCE = 1e-3
#: largest structure file read (bytes): a CIF of a 1,728-atom supercell is about 150 kB
MAX_STRUCTURE_FILE_BYTES = 20_000_000
#: limits of the graph settings (docs/robustness.md, "Models and configs"): the registered
#: weights use 8 Å, 12 neighbours and 41 bond features
MAX_RADIUS = 30.0
MAX_NEIGHBORS = 256
MAX_BOND_FEATURES = 1024
#: most bond-feature values per atom (``max_neighbors`` × bond features): what a batch's
#: edge features and the convolutions' edge tensors grow with (the registered weights: 12 × 41
#: = 492; 16,384 is 64 kB of float32 per atom, 7 GB for a batch of 64 crystals of 1,728 atoms)
MAX_NEIGHBOR_FEATURES = 16_384
#: most (centre, neighbour) pairs, periodic images or grid entries one neighbour search may
#: hold (:func:`search_cost`; at most about 1 GB in pymatgen's search). A 1,728-atom supercell
#: needs about 0.2 million pairs; the most any crystal of the Materials Project sample needs is
#: far below this.
SEARCH_BUDGET = 20_000_000


def _real(value: Any, name: str) -> float:
    """``value`` as a finite float, or :class:`ConfigError` naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_count(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum], or :class:`ConfigError` saying the range.

    Example::

        >>> check_count(64, "batch_size")
        64
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum \
        and (maximum is None or value <= maximum)
    if not ok:
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


#: most graph-building processes (``n_jobs``): more than a machine's cores only adds start-up
#: time and memory, and thousands of forked processes bring a machine to a halt
MAX_JOBS = 256


def check_jobs(n_jobs: Any) -> int:
    """The number of graph-building processes: an integer from 1 to ``MAX_JOBS``, or -1 for one
    per core."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) \
            or not (1 <= n_jobs <= MAX_JOBS or n_jobs == -1):
        raise ConfigError(f"n_jobs must be a number of processes from 1 to {MAX_JOBS} (this machine has "
                          f"{os.cpu_count()} cores) or -1 (one per core), got {n_jobs!r}")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


def plain(value: Any) -> Any:
    """``value`` as a Python number where it is a numpy one (JSON cannot hold those); anything
    else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def python_numbers(settings: Any) -> None:
    """Turn the numpy numbers among the fields of a (frozen) settings dataclass into Python
    numbers, in place: what its ``__post_init__`` calls first."""
    for f in dataclasses.fields(settings):
        object.__setattr__(settings, f.name, plain(getattr(settings, f.name)))


@dataclass(frozen=True)
class GraphSettings:
    """How a structure becomes a graph. They belong to a set of weights: a model only ever
    sees graphs built with the settings it was trained on.

    Example::

        >>> GraphSettings().n_bond_features
        41
    """

    radius: float = 8.0
    max_neighbors: int = 12
    gaussian_min: float = 0.0
    gaussian_step: float = 0.2
    gaussian_width: float = 0.2
    atom_features: str = "cgcnn-92"

    def __post_init__(self) -> None:
        """Check every setting (types and the limits above) before anything is allocated;
        :class:`ConfigError` otherwise. numpy numbers become Python numbers (for JSON)."""
        python_numbers(self)
        radius = _real(self.radius, "radius")
        if not 0 < radius <= MAX_RADIUS:
            raise ConfigError(f"radius must be in (0, {MAX_RADIUS}] Å, got {self.radius!r}")
        check_count(self.max_neighbors, "max_neighbors", 1, MAX_NEIGHBORS)
        step, width = _real(self.gaussian_step, "gaussian_step"), _real(self.gaussian_width, "gaussian_width")
        if not (0 < step <= radius and 0 < width <= radius):
            raise ConfigError(f"gaussian_step and gaussian_width must be in (0, radius = {radius}] Å, got {step!r} "
                              f"and {width!r}")
        if not 0 <= _real(self.gaussian_min, "gaussian_min") < radius:
            raise ConfigError(f"gaussian_min must lie in [0, radius = {radius}), got {self.gaussian_min!r}")
        if (radius - self.gaussian_min) / step + 1 > MAX_BOND_FEATURES:
            raise ConfigError(
                f"gaussian_step {step!r} gives more than {MAX_BOND_FEATURES} bond features from {self.gaussian_min} "
                f"to {radius} Å; use a step of at least {(radius - self.gaussian_min) / (MAX_BOND_FEATURES - 1):.3g} Å"
            )
        width = self.max_neighbors * self.n_bond_features
        if width > MAX_NEIGHBOR_FEATURES:
            raise ConfigError(
                f"max_neighbors × bond features = {self.max_neighbors} × {self.n_bond_features} = {width:,} values per "
                f"atom, more than {MAX_NEIGHBOR_FEATURES:,} (crystalzoo.graphs.MAX_NEIGHBOR_FEATURES): the edge "
                "tensors of a batch would take gigabytes. Use fewer neighbours or a larger gaussian_step"
            )
        if self.atom_features != "cgcnn-92":
            raise ConfigError(f"unknown atom_features {self.atom_features!r}; valid: 'cgcnn-92'")

    @property
    def gaussian_centers(self) -> np.ndarray:
        n = int(round((self.radius - self.gaussian_min) / self.gaussian_step)) + 1
        return (self.gaussian_min + self.gaussian_step * np.arange(n)).astype(np.float32)

    @property
    def n_bond_features(self) -> int:
        return len(self.gaussian_centers)

    @property
    def n_atom_features(self) -> int:
        return _atom_table().shape[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GraphSettings":
        if not isinstance(d, dict):
            raise ConfigError(f"graph settings must be a JSON object of settings, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown graph settings {sorted(map(str, unknown))}; valid: "
                              f"{[f.name for f in dataclasses.fields(cls)]}")
        return cls(**d)

    def check_same(self, other: "GraphSettings", what: str = "these weights") -> None:
        """Raise :class:`GraphSettingsMismatchError` unless ``other`` equals ``self``."""
        if other != self:
            diff = {
                f.name: (getattr(self, f.name), getattr(other, f.name))
                for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)
            }
            lines = ", ".join(f"{k}: expected {a!r}, got {b!r}" for k, (a, b) in diff.items())
            raise GraphSettingsMismatchError(
                f"graph settings differ from those {what} were trained with ({lines}). "
                "Build graphs with the model's own settings (model.graph_settings), "
                "or train new weights for the new settings."
            )


DEFAULT_SETTINGS = GraphSettings()


@lru_cache(maxsize=1)
def _atom_table() -> np.ndarray:
    """(101, 92) float32 table: row Z holds the CGCNN features of element Z (row 0 unused)."""
    text = resources.files("crystalzoo").joinpath("bundled", "atom_init.json").read_text()
    raw = json.loads(text)
    width = len(next(iter(raw.values())))
    table = np.full((max(int(k) for k in raw) + 1, width), np.nan, dtype=np.float32)
    for key, values in raw.items():
        table[int(key)] = values
    return table


# --------------------------------------------------------------------------- structures


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
            from .errors import MissingExtraError

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

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = IStructure.from_str(text, fmt=fmt)
    except Exception as exc:  # pymatgen raises many types for broken files
        raise StructureError(f"{path}: cannot be read as a {fmt.upper() if fmt == 'poscar' else fmt} structure file "
                             f"({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(structure, IStructure):
        raise StructureError(f"{path}: holds a {type(structure).__name__}, not a crystal structure")
    return structure


def load_structure(source: StructureLike) -> "Structure":
    """A pymatgen ``Structure`` from a ``Structure``, an ASE ``Atoms`` (periodic), a structure
    file, or CIF text (a path and CIF text are told apart by :func:`structure_path`). Files
    are read by their name (:func:`file_format`): CIF, POSCAR/CONTCAR/``*.vasp``, cssr, xsf,
    res, pymatgen JSON/YAML, and extended XYZ (the ``[ase]`` extra); any other name as CIF.

    Raises :class:`StructureError` naming the file and the problem when it cannot be read.
    """
    from pymatgen.core import IStructure as Structure  # Structure and the immutable IStructure

    if isinstance(source, Structure):
        return source
    if is_ase_atoms(source):
        return _from_ase(source, "ase.Atoms")
    if isinstance(source, (str, os.PathLike)):
        path = structure_path(source)
        if path is None:
            one_line = isinstance(source, str) and "\n" not in source and "\r" not in source
            if one_line and source.strip().lower().endswith(".cif"):
                raise StructureError(f"{source}: no such file (expected a CIF file, CIF text or a Structure)")
            return _parse_cif(source, "CIF text")
        try:
            text = read_structure_file(path).decode("utf-8")
        except UnicodeDecodeError:
            raise StructureError(f"{path}: not UTF-8 text (a binary file, or text in another encoding such as "
                                 "Latin-1): save the file as UTF-8") from None
        fmt = file_format(path)
        if fmt != "cif":
            return _parse_other(text, fmt, path)
        if "data_" not in text and text.strip():  # read as CIF by its name, but no CIF inside
            raise StructureError(f"{path}: not a CIF (no 'data_' block); a structure file of another format is read "
                                 "by its name: POSCAR/CONTCAR or *.vasp, *.xsf, *.cssr, *.res, *.json, *.yaml, "
                                 "*.extxyz (docs/quickstart.md, 'Structure files')")
        return _parse_cif(text, str(path))
    _refuse_molecule(source)
    raise StructureError(
        f"cannot make a crystal structure from a {type(source).__name__}; "
        "pass a pymatgen Structure, an ase.Atoms, a structure file (CIF, POSCAR, …) or CIF text"
    )


def _parse_cif(text: str, name: str) -> "Structure":
    from pymatgen.io.cif import CifParser

    text = text.replace("\r\n", "\n").replace("\r", "\n")  # Windows and old Mac line ends read alike
    if not text.strip():
        raise StructureError(f"{name}: empty file")
    if "data_" not in text:
        raise StructureError(f"{name}: not a CIF (no 'data_' block)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser.from_str(text)
            _check_cif_block(parser, text, name)
            structures = parser.parse_structures(primitive=False, on_error="raise")
    except StructureError:
        raise
    except Exception as exc:  # pymatgen raises many types for broken CIFs
        reason = " ".join(str(exc).split())[:300]  # one line
        raise StructureError(f"{name}: cannot be read as a crystal structure ({reason})") from None
    if not structures:
        raise StructureError(f"{name}: has no crystal structure in it")
    if len(structures) > 1:
        raise StructureError(
            f"{name}: holds {len(structures)} data blocks; split it into one CIF per crystal"
        )
    return structures[0]


#: most positions a CIF's symmetry operations may generate (sites listed × operations) before
#: pymatgen merges the duplicates, a step whose time grows with the square of this number
#: (``python scripts/cif_expansion_cost.py`` on 2 cores: 9,600 positions 8 s, 19,200 29 s,
#: 38,400 126 s). A 1,728-atom supercell listed in P1 has 1,728; a zeolite's 30 sites in a
#: group of order 192 have 5,760
#: (docs/robustness.md)
MAX_CIF_POSITIONS = 20_000
_SYMOP_KEYS = ("_symmetry_equiv_pos_as_xyz", "_symmetry_equiv_pos_as_xyz_", "_space_group_symop_operation_xyz",
               "_space_group_symop_operation_xyz_")
_MAGNETIC_KEYS = ("_space_group_symop_magn_operation.xyz", "_space_group_symop.magn_operation_xyz",
                  "_space_group_symop_magn_centering.xyz", "_space_group_symop.magn_centering_xyz")


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _n_operations(data: dict) -> int:
    """How many symmetry operations pymatgen will apply to the sites of a CIF block, at most:
    the operations listed, when every one of them reads (pymatgen drops a list it cannot read
    and takes the operations of the space group's name instead); 192, the most any space group
    has, otherwise; listed magnetic operations times their centerings."""
    from pymatgen.core.operations import SymmOp

    magnetic = [len(_listed(data[k])) for k in _MAGNETIC_KEYS if k in data]
    if magnetic:
        return math.prod(magnetic)
    for key in _SYMOP_KEYS:
        if key in data:
            ops = _listed(data[key])
            try:
                for op in ops:
                    if not str(op).strip():
                        raise ValueError("empty")
                    SymmOp.from_xyz_str(str(op))
            except Exception:  # unreadable or empty: pymatgen falls back to the space group
                return 192
            return max(len(ops), 1)
    return 192


def _element_of(symbol: str) -> bool:
    """Whether a CIF type symbol or site label names an element as pymatgen reads it: an
    element symbol (capitalised), then digits, charges or other characters (``K1+``, ``O2-``,
    ``Na1``); ``?``, ``.``, numbers and lower-case names are not."""
    from pymatgen.core import Element

    symbol = str(symbol).strip()
    if not symbol[:1].isupper():
        return False
    return Element.is_valid_symbol(symbol[:2]) if symbol[1:2].islower() and Element.is_valid_symbol(symbol[:2]) \
        else Element.is_valid_symbol(symbol[:1])


def _check_cif_block(parser: Any, text: str, name: str) -> None:
    """:class:`StructureError` before pymatgen expands a CIF whose sites × symmetry operations
    exceed ``MAX_CIF_POSITIONS``, or silently drops a site (occupancy 0 or below, an unknown
    type symbol ``?`` / ``.``)."""
    from pymatgen.io.cif import CifFile

    blocks = getattr(getattr(parser, "_cif", None), "data", None)
    if blocks is None:
        blocks = CifFile.from_str(text).data
    for block in blocks.values():
        data = block.data
        labels = _listed(data.get("_atom_site_label", data.get("_atom_site_fract_x", [])))
        for label, value in zip(labels, _listed(data.get("_atom_site_occupancy", []))):
            try:
                occupancy = float(str(value).split("(")[0])
            except ValueError:
                occupancy = math.nan
            if not occupancy > 0:  # 0, negative, NaN, '?', '.': pymatgen drops the atom
                raise StructureError(f"{name}: site {label} has occupancy {value}: not an atom (a vacancy or an "
                                     "unknown occupancy; pymatgen would drop the atom); give it its occupancy (1 for "
                                     "an ordered site) or remove the site")
        symbols = data.get("_atom_site_type_symbol")
        for label, symbol in zip(labels, _listed(symbols) if symbols is not None else labels):
            if not _element_of(symbol):
                what = "type symbol" if symbols is not None else "label (the CIF has no type symbols)"
                raise StructureError(f"{name}: site {label} has the {what} {symbol!r}, which names no element "
                                     "(pymatgen would drop the atom); give its element")
        n_sites = len(_listed(data.get("_atom_site_fract_x", data.get("_atom_site_Cartn_x", labels)))) if labels \
            else 0
        n_ops = _n_operations(data)
        if n_sites * n_ops > MAX_CIF_POSITIONS:
            raise StructureError(
                f"{name}: {n_sites:,} sites under {n_ops} symmetry operations make {n_sites * n_ops:,} positions to "
                f"expand, more than the {MAX_CIF_POSITIONS:,} crystalzoo reads (crystalzoo.graphs.MAX_CIF_POSITIONS): "
                "is it one crystal? Write it in P1 (the sites of one cell listed) if it really is"
            )


# --------------------------------------------------------------------------- neighbours


@dataclass
class GraphArrays:
    """The compact form of one crystal graph (numpy arrays, no features): what the builder
    produces, a ``CrystalDataset`` caches and worker processes send back. :func:`collate`
    turns a list of them into a batched :class:`~crystalzoo.crystal_graph.CrystalGraph`."""

    z: np.ndarray  # (N,) int16 atomic numbers
    src: np.ndarray  # (E,) int32 neighbour j
    dst: np.ndarray  # (E,) int32 centre atom i
    distance: np.ndarray  # (E,) float32 Å
    extended: np.ndarray  # (N,) bool: neighbours found beyond the radius
    weight: np.ndarray | None = None  # (E,) float32 edge weights where a neighbour shell is split; None: all 1

    @property
    def n_atoms(self) -> int:
        return len(self.z)


def _atomic_numbers(structure: "Structure", name: str) -> np.ndarray:
    species = []
    for site in structure:  # as pymatgen's ``site.specie``, without its second pass through the composition
        occupancy = list(site.species.items())  # (species, occupancy) pairs
        if len(occupancy) != 1 or abs(occupancy[0][1] - 1) > OCCUPANCY_TOLERANCE:
            raise StructureError(
                f"{name}: has partially occupied (disordered) sites; CGCNN needs one element per "
                "site. Order it first, e.g. with pymatgen's OrderDisorderedStructureTransformation."
            )
        species.append(occupancy[0][0])
    if not species:
        raise StructureError(f"{name}: has no atoms")
    z = np.array([getattr(sp, "Z", 0) for sp in species], dtype=np.int64)
    known = known_elements(z)
    if not known.all():
        bad = [str(sp) for sp, ok in zip(species, known) if not ok]
        raise StructureError(
            f"{name}: no CGCNN atom features for {sorted(set(bad))} (the table covers "
            f"elements Z = 1…{len(_atom_table()) - 1}); dummy species and heavier elements "
            "cannot be featurised"
        )
    return z


def known_elements(z: np.ndarray) -> np.ndarray:
    """Whether each atomic number in ``z`` has CGCNN atom features (a bool array)."""
    table = _atom_table()
    known = (z > 0) & (z < len(table))
    known[known] = ~np.isnan(table[z[known], 0])
    return known


def _nearest(centers: np.ndarray, dists: np.ndarray, n_centers: int, k: int):
    """For each centre, its k nearest neighbours, ties at the k-th place kept symmetrically.

    Returns (the pairs kept, their weights, the number of pairs each centre had). Let d_k be
    the k-th smallest distance of a centre. Pairs closer than d_k - TIE_TOLERANCE are kept with
    weight 1; the t pairs within TIE_TOLERANCE of d_k share the m places left (m = k - the
    number closer) with weight m / t each, so every centre's weights sum to k (fewer where it
    has fewer pairs, all of weight 1). Without a split shell the weights are None (all 1).
    """
    order = np.lexsort((dists, centers))
    c, d = centers[order], dists[order]
    counts = np.bincount(c, minlength=n_centers)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    kth = np.full(n_centers, np.inf)
    full = counts >= k
    kth[full] = d[starts[full] + k - 1]
    boundary = kth[c]
    kept = d <= boundary + TIE_TOLERANCE
    certain = d < boundary - TIE_TOLERANCE
    tied = kept & ~certain
    if not tied.any():
        return order[kept], None, counts
    n_certain = np.bincount(c[certain], minlength=n_centers)
    n_tied = np.bincount(c[tied], minlength=n_centers)
    ct = c[tied]
    share = (k - n_certain[ct]) / n_tied[ct]
    if (share == 1).all():  # every tied group fills its places exactly: no shell is split
        return order[kept], None, counts
    weight = np.ones(len(d))
    weight[tied] = share
    return order[kept], weight[kept], counts


@dataclass
class _Cell:
    """What the neighbour search needs from a validated crystal: a few small arrays, cheap to
    send to worker processes (pickling a pymatgen ``Structure`` costs more than its graph)."""

    name: str
    z: np.ndarray  # (N,) int64 atomic numbers
    lattice: np.ndarray  # (3, 3) Å
    pbc: np.ndarray  # (3,) int64, all 1: only crystals periodic in all three directions get this far
    cart: np.ndarray  # (N, 3) Å
    volume: float  # Å³
    extent: tuple  # (cartesian min, max, fractional min, max, lattice-plane spacings), each 3 floats


_PERIODIC = np.ones(3, dtype=np.int64)


def _cell(structure: "Structure", name: str) -> _Cell:
    """Check a structure (elements, finite numbers, density) and take its arrays."""
    z = _atomic_numbers(structure, name)
    lattice = np.ascontiguousarray(structure.lattice.matrix, dtype=float)
    cart = np.ascontiguousarray(structure.cart_coords, dtype=float)  # not finite if the fractional ones are not
    if not (np.isfinite(lattice).all() and np.isfinite(cart).all()):
        raise StructureError(f"{name}: lattice or coordinates are not finite numbers")
    # plain arithmetic on 9 numbers (numpy's det and inv cost more than a small crystal's search):
    # the cross products of the lattice vectors are the reciprocal vectors times the volume
    a, b, c = lattice.tolist()
    normals = (_cross(b, c), _cross(c, a), _cross(a, b))
    signed = a[0] * normals[0][0] + a[1] * normals[0][1] + a[2] * normals[0][2]
    volume = abs(signed)
    if not volume / len(z) >= MIN_VOLUME_PER_ATOM:
        raise StructureError(
            f"{name}: {volume / len(z):.3g} Å³ per atom is not a physical crystal (solids have about 5 Å³ per "
            "atom or more): check the lattice parameters and their units (Å)"
        )
    spacing = [volume / math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) for v in normals]  # between lattice planes
    to_frac = np.array(normals).T / signed
    frac = cart @ to_frac
    both = np.concatenate([cart, frac], axis=1)
    lo, hi = both.min(axis=0).tolist(), both.max(axis=0).tolist()
    pbc = structure.lattice.pbc
    if not all(pbc):
        raise StructureError(f"{name}: is periodic only along {[bool(p) for p in pbc]} (pbc): CGCNN graphs are for "
                             "crystals, periodic in all three directions; a molecule or a slab is not one")
    if min(lo[3:]) < -1 or max(hi[3:]) > 2:
        # atoms listed cells away (unwrapped coordinates, as from a trajectory): the same crystal
        # with them moved into the cell, where the search looks at far fewer periodic images
        frac = frac - np.floor(frac)
        cart = np.ascontiguousarray(frac @ lattice)
        both = np.concatenate([cart, frac], axis=1)
        lo, hi = both.min(axis=0).tolist(), both.max(axis=0).tolist()
    extent = (lo[:3], hi[:3], lo[3:], hi[3:], spacing)
    return _Cell(name, z, lattice, _PERIODIC, cart, volume, extent)


def _cross(u: list, v: list) -> tuple:
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


def search_cost(cell: _Cell, centers: np.ndarray, radius: float) -> dict[str, float]:
    """What a search of ``radius`` Å around the atoms ``centers`` of ``cell`` would hold at
    most, as pymatgen's ``find_points_in_spheres`` works: ``pairs`` (centres × atoms per
    sphere at the crystal's mean density), ``images`` (atoms × the periodic images of the
    cell its loop visits) and ``cubes`` (27 × the cells of its linked-cell grid of side
    ``radius`` over the atoms' bounding box widened by ``radius``: the cost of a nearly empty
    huge cell). The box of all atoms bounds that of any centres: plain arithmetic on the
    cell's :attr:`_Cell.extent`, so the check costs next to nothing per search."""
    n = len(cell.z)
    lo, hi, flo, fhi, spacing = cell.extent
    side = max(radius, 0.1)
    cubes, images = 27.0, float(n)
    for i in range(3):
        cubes *= math.ceil((hi[i] - lo[i] + 2 * radius) / side)
        if cell.pbc[i]:
            reach = math.ceil((radius + 0.15) / spacing[i])
            images *= math.ceil(fhi[i] + reach) - math.floor(flo[i] - reach)
    return {"pairs": len(centers) * n * (4 / 3) * math.pi * radius**3 / cell.volume, "images": images, "cubes": cubes}


def _check_search_budget(cell: _Cell, centers: np.ndarray, radius: float) -> None:
    """:class:`StructureError` before a search whose pairs, images or grid exceed ``SEARCH_BUDGET``."""
    cost = search_cost(cell, centers, radius)
    what, amount = max(cost.items(), key=lambda kv: kv[1])
    if amount > SEARCH_BUDGET:
        raise StructureError(
            f"{cell.name}: the neighbour search within {radius:.4g} Å of {len(centers)} of its {len(cell.z)} atoms "
            f"would hold about {amount:.3g} {what}, more than the budget of {SEARCH_BUDGET:,} "
            "(crystalzoo.graphs.SEARCH_BUDGET). The cell is too large, too empty or too thin for a crystal "
            "graph: check the lattice and the atoms (a nearly empty cell is a molecule or a surface, not a crystal)"
        )


def _search(cell: _Cell, centers: np.ndarray, radius: float):
    """All (centre, neighbour, distance) pairs within ``radius`` of the atoms ``centers`` (one per
    periodic image), self-pairs excluded (pymatgen's compiled periodic search, as
    ``Structure.get_neighbor_list``)."""
    from pymatgen.optimization.neighbors import find_points_in_spheres

    _check_search_budget(cell, centers, radius)
    c, p, _, d = find_points_in_spheres(cell.cart, np.ascontiguousarray(cell.cart[centers]), r=float(radius),
                                        pbc=cell.pbc, lattice=cell.lattice, tol=1e-8)
    keep = ~((centers[c] == p) & (d <= 1e-8))
    return c[keep], p[keep], d[keep]


def _candidates(cell: _Cell, radius: float, k: int):
    """The neighbour pairs the k nearest neighbours within ``radius`` are chosen from: those of
    a smaller sphere that holds about 3k atoms at the crystal's mean density, and of the whole
    ``radius`` only for atoms that do not have k neighbours safely inside the small sphere. The
    k nearest (and any tied with the k-th) of the other atoms lie inside it, so the graph is the
    same as from a search of the whole radius, for a fraction of the pairs."""
    n = len(cell.z)
    everyone = np.arange(n)
    small = (3 * 3 * k * cell.volume / (4 * np.pi * n)) ** (1 / 3)
    if small > 0.8 * radius:
        return _search(cell, everyone, radius)
    c, p, d = _search(cell, everyone, small)
    done = np.bincount(c[d < small - 3 * TIE_TOLERANCE], minlength=n) >= k
    if done.all():
        return c, p, d
    rest = np.flatnonzero(~done)
    c2, p2, d2 = _search(cell, rest, radius)
    first = done[c]
    return np.concatenate([c[first], rest[c2]]), np.concatenate([p[first], p2]), np.concatenate([d[first], d2])


def _merge_images(src, dst, dist, weight):
    """One edge for the tied candidates of a centre that are periodic images of the same atom:
    they carry the same message, so one edge with their summed weight (at their mean distance)
    gives the same sum with fewer edges (rock salt's 12 second neighbours in a 2-atom cell are
    one edge of weight 6). The edges come sorted by centre and neighbour, and within those by
    distance, so the tied images of a pair are neighbours in the arrays."""
    tied = weight < 1
    same = tied[1:] & tied[:-1] & (src[1:] == src[:-1]) & (dst[1:] == dst[:-1])
    if not same.any():
        return src, dst, dist, weight
    first = np.concatenate(([True], ~same))
    group = np.cumsum(first) - 1
    size = np.bincount(group)
    return src[first], dst[first], np.bincount(group, weights=dist) / size, np.bincount(group, weights=weight)


def _cell_arrays(cell: _Cell, settings: GraphSettings) -> GraphArrays:
    n = len(cell.z)
    k = settings.max_neighbors
    centers, points, dists = _candidates(cell, settings.radius, k)
    keep, weight, counts = _nearest(centers, dists, n, k)
    src, dst, dist = points[keep], centers[keep], dists[keep]
    extended = counts == 0
    if extended.any():
        # no neighbour within the radius: take the nearest ones further out. Every atom
        # has its own periodic image one lattice vector away, so this always finds some.
        lonely = np.flatnonzero(extended)
        reach = float(np.linalg.norm(cell.lattice, axis=1).min()) * 1.0001 + 10 * TIE_TOLERANCE
        c2, p2, d2 = _search(cell, lonely, reach)
        keep2, weight2, _ = _nearest(c2, d2, len(lonely), k)
        src = np.concatenate([src, p2[keep2]])
        dst = np.concatenate([dst, lonely[c2[keep2]]])
        dist = np.concatenate([dist, d2[keep2]])
        if weight is not None or weight2 is not None:
            weight = np.concatenate([np.ones(len(keep)) if weight is None else weight,
                                     np.ones(len(keep2)) if weight2 is None else weight2])
    if len(dist) and dist.min() < MIN_DISTANCE:
        from pymatgen.core import Element

        e = int(np.argmin(dist))
        i, j = int(dst[e]), int(src[e])
        raise StructureError(
            f"{cell.name}: atoms {i} ({Element.from_Z(int(cell.z[i]))}) and {j} ({Element.from_Z(int(cell.z[j]))}) "
            f"are {dist[e]:.3f} Å apart, which is closer than {MIN_DISTANCE} Å: overlapping atoms; fix the structure"
        )
    # grouped by centre atom; within a centre by neighbour, then (stable) by distance as found
    order = np.lexsort((src, dst))
    src, dst, dist = src[order], dst[order], dist[order]
    if weight is not None:
        src, dst, dist, weight = _merge_images(src, dst, dist, weight[order])
        if np.abs(weight - 1).max() < 1e-6:  # e.g. two images of one atom sharing one place: one edge of weight 1
            weight = None
    return GraphArrays(
        z=cell.z.astype(np.int16),
        src=src.astype(np.int32),
        dst=dst.astype(np.int32),
        distance=dist.astype(np.float32),
        extended=extended,
        weight=None if weight is None else weight.astype(np.float32),
    )


def _to_cell(source: StructureLike) -> _Cell:
    """Read and check one crystal (a ``Structure``, a CIF path or CIF text)."""
    path = structure_path(source) if isinstance(source, (str, os.PathLike)) else None
    structure = load_structure(source)
    return _cell(structure, str(path) if path is not None else getattr(structure, "formula", "structure"))


def _structure_arrays(source: StructureLike, settings: GraphSettings) -> GraphArrays:
    return _cell_arrays(_to_cell(source), settings)


# --------------------------------------------------------------------------- graphs


def check_settings(settings: Any, name: str = "settings") -> GraphSettings:
    """``settings`` if it is a :class:`GraphSettings`, else :class:`ConfigError` naming ``name``."""
    if not isinstance(settings, GraphSettings):
        raise ConfigError(f"{name} must be a crystalzoo GraphSettings, got a {type(settings).__name__}; from a "
                          "dict: GraphSettings.from_dict(d)")
    return settings


def _refuse_molecule(source: Any) -> None:
    from pymatgen.core import IMolecule

    if isinstance(source, IMolecule):
        raise StructureError("a Molecule is not a crystal: CGCNN graphs need a periodic pymatgen Structure (a lattice)")


def _structure_list(structures: Any) -> list:
    """``structures`` as a list; :class:`StructureError` for one crystal or something that is
    not a collection of them (a string would otherwise be read one character at a time)."""
    from pymatgen.core import IStructure

    _refuse_molecule(structures)
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
    return _structure_list(structures)


def crystal_batches(structures: Any, settings: GraphSettings, batch_size: int, n_jobs: int = 1,
                    progress: bool = False, what: str = "predict") -> Iterator[CrystalGraph]:
    """Batched graphs for ``predict`` / ``embed``: of a data set's cached graphs (a
    ``CrystalDataset``, checked against ``settings``), or built here from crystals
    (:func:`crystal_list`, :func:`iter_batches`)."""
    if hasattr(structures, "graphs") and hasattr(structures, "settings"):  # a CrystalDataset: graphs built already
        check_count(batch_size, "batch_size")
        settings.check_same(structures.settings, "this model")
        graphs = structures.graphs
        return (collate(graphs[i : i + batch_size], settings) for i in range(0, len(graphs), batch_size))
    return iter_batches(crystal_list(structures, what), settings, batch_size, n_jobs, progress)


def _gaussian(distance: np.ndarray, settings: GraphSettings) -> np.ndarray:
    centers = settings.gaussian_centers
    return np.exp(-((distance[:, None] - centers[None, :]) ** 2) / settings.gaussian_width**2).astype(np.float32)


def collate(arrays: Sequence[GraphArrays], settings: GraphSettings = DEFAULT_SETTINGS) -> CrystalGraph:
    """One batched :class:`~crystalzoo.crystal_graph.CrystalGraph` (atom and bond features
    included) from the compact graphs of several crystals.

    Example::

        >>> from crystalzoo import example_structures
        >>> arrays = build_arrays(example_structures()[:2], progress=False)
        >>> g = collate(arrays)
        >>> g.n_crystals, g.n_atoms.tolist()
        (2, [8, 2])
    """
    import torch

    check_settings(settings)
    arrays = list(arrays)
    if not arrays:
        raise CrystalZooError("collate needs at least one crystal")
    if not all(isinstance(a, GraphArrays) for a in arrays):
        bad = next(a for a in arrays if not isinstance(a, GraphArrays))
        raise CrystalZooError(f"collate takes the GraphArrays of build_arrays, not a {type(bad).__name__}; for "
                              "structures or CIF files use build_graph or iter_batches")
    n_atoms = np.array([a.n_atoms for a in arrays], dtype=np.int64)
    n_edges = np.array([len(a.src) for a in arrays], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(n_atoms)[:-1]))
    src = np.concatenate([a.src.astype(np.int64) + o for a, o in zip(arrays, offsets)])
    dst = np.concatenate([a.dst.astype(np.int64) + o for a, o in zip(arrays, offsets)])
    z = np.concatenate([a.z for a in arrays]).astype(np.int64)
    dist = np.concatenate([a.distance for a in arrays]).astype(np.float32, copy=False)
    dst_t = torch.from_numpy(dst)
    weighted = any(a.weight is not None for a in arrays)
    weight = (torch.from_numpy(np.concatenate([a.weight if a.weight is not None else np.ones(len(a.src), np.float32)
                                               for a in arrays])) if weighted else None)
    return CrystalGraph(
        atom_fea=torch.from_numpy(_atom_table()[z]),
        bond_fea=torch.from_numpy(_gaussian(dist, settings)),
        src=torch.from_numpy(src),
        dst=dst_t,
        crystal=torch.from_numpy(np.repeat(np.arange(len(arrays), dtype=np.int64), n_atoms)),
        n_atoms=torch.from_numpy(n_atoms),
        n_edges=torch.from_numpy(n_edges),
        distance=torch.from_numpy(dist),
        z=torch.from_numpy(z),
        extended=torch.from_numpy(np.concatenate([a.extended for a in arrays]).astype(bool, copy=False)),
        edge_weight=weight,
        degree=uniform_degree(dst_t, len(z)),
        settings=settings,
    )


def build_graph(structure: StructureLike, settings: GraphSettings = DEFAULT_SETTINGS, backend: str = "torch"):
    """The CGCNN graph of one crystal (a pymatgen ``Structure``, a CIF path or CIF text): a
    :class:`~crystalzoo.crystal_graph.CrystalGraph`, or with ``backend="dgl"`` a
    ``dgl.DGLGraph`` (the ``[dgl]`` extra).

    Example::

        >>> from pymatgen.core import Lattice, Structure
        >>> cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        >>> g = build_graph(cscl)  # per atom: 8 neighbours, then 6 own images sharing 4 places (one edge)
        >>> g.num_edges, sorted(g.edge_weight[g.dst == 0].tolist())
        (18, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0])
    """
    return build_graphs([structure], settings, progress=False, backend=backend)[0]


def build_arrays(
    structures: Iterable[StructureLike],
    settings: GraphSettings = DEFAULT_SETTINGS,
    progress: bool = True,
    n_jobs: int = 1,
    names: Sequence[str] | None = None,
) -> list[GraphArrays]:
    """The compact graphs (:class:`GraphArrays`) of many crystals, in order, with a progress
    bar; ``n_jobs > 1`` builds them in parallel processes (``-1``: one per core). This is
    what a ``CrystalDataset`` caches; :func:`collate` batches them for a model. A crystal that
    cannot be built is a :class:`StructureError` that says which one: its position, or its
    name in ``names`` (e.g. the data set's ids).

    Example::

        >>> from crystalzoo import example_structures
        >>> [a.n_atoms for a in build_arrays(example_structures()[:1], progress=False)]
        [8]
    """
    return [a for part in _iter_arrays(structures, settings, progress, n_jobs, names=names) for a in part]


def iter_batches(
    structures: Iterable[StructureLike],
    settings: GraphSettings = DEFAULT_SETTINGS,
    batch_size: int = 256,
    n_jobs: int = 1,
    progress: bool = False,
) -> Iterator[CrystalGraph]:
    """Batched graphs of ``structures``, ``batch_size`` crystals at a time, in order. With
    ``n_jobs > 1`` worker processes build the next batches while the caller uses this one.

    Example::

        >>> from crystalzoo import example_structures
        >>> [g.n_crystals for g in iter_batches(example_structures()[:1] * 3, batch_size=2)]
        [2, 1]
    """
    check_count(batch_size, "batch_size")
    for part in _iter_arrays(structures, settings, progress, n_jobs, chunk=batch_size):
        yield collate(part, settings)


def _iter_arrays(
    structures: Iterable[StructureLike],
    settings: GraphSettings,
    progress: bool = True,
    n_jobs: int = 1,
    chunk: int | None = None,
    names: Sequence[str] | None = None,
) -> Iterator[list[GraphArrays]]:
    """The compact graphs of ``structures`` in order, ``chunk`` crystals at a time. With
    ``n_jobs > 1`` worker processes build the next chunks while the caller uses this one. A
    :class:`StructureError` says which crystal failed (``names[i]``, or its position) where
    there are several."""
    from tqdm.auto import tqdm

    n_jobs = check_jobs(n_jobs)
    check_settings(settings)
    structures = _structure_list(structures)
    if names is not None and (isinstance(names, str) or not isinstance(names, Sequence) or len(names) != len(structures)
                              or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"names must be a list of {len(structures)} strings, one per crystal, got "
                          f"{str(names)[:60]}")
    parallel = n_jobs > 1 and len(structures) >= 64
    if chunk is None:
        chunk = max(16, len(structures) // (8 * n_jobs)) if parallel else max(1, len(structures))
    chunks = [structures[i : i + chunk] for i in range(0, len(structures), chunk)]
    n = len(structures)
    try:
        with tqdm(total=n, desc="building graphs", unit="crystal", disable=not progress, leave=False) as bar:
            if not parallel:
                for k, part in enumerate(chunks):
                    out = []
                    for i, s in enumerate(part, k * chunk):
                        out.append(_at(i, _structure_arrays, s, settings))
                        bar.update()
                    yield out
                return
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(n_jobs, len(chunks))) as pool:
                jobs = ([_at(i, _for_worker, s) for i, s in enumerate(part, k * chunk)] for k, part in enumerate(chunks))
                starts = [k * chunk for k in range(len(chunks))]
                for part in pool.map(_build_chunk, jobs, [settings] * len(chunks), starts):
                    bar.update(len(part))
                    yield part
    except StructureError as exc:
        i = getattr(exc, "position", None)
        if i is None or n == 1:
            raise
        which = f"crystal {names[i]!r}" if names is not None and i < len(names) else f"crystal {i + 1} of {n}"
        raise StructureError(f"{which}: {exc}") from None


def _at(i: int, build, *args):
    """``build(*args)``, a :class:`StructureError` marked with the crystal's position ``i``."""
    try:
        return build(*args)
    except StructureError as exc:
        exc.position = i
        raise


def _build_chunk(sources: list, settings: GraphSettings, start: int = 0) -> list[GraphArrays]:
    return [_at(i, _cell_arrays, s, settings) if isinstance(s, _Cell) else _at(i, _structure_arrays, s, settings)
            for i, s in enumerate(sources, start)]


def _for_worker(source: StructureLike) -> "_Cell | StructureLike":
    """What to send to a worker process: a ``Structure`` as its small cell arrays, a CIF
    path or text as it is (the worker reads it)."""
    from pymatgen.core import IStructure as Structure  # Structure and the immutable IStructure

    return _to_cell(source) if isinstance(source, Structure) else source


def build_graphs(
    structures: Iterable[StructureLike],
    settings: GraphSettings = DEFAULT_SETTINGS,
    progress: bool = True,
    n_jobs: int = 1,
    backend: str = "torch",
) -> list:
    """One graph per crystal (``CrystalGraph``, or ``dgl.DGLGraph`` with ``backend="dgl"``),
    with a progress bar; ``n_jobs > 1`` builds them in parallel processes (``-1``: one per
    core). To batch many crystals for a model, :func:`iter_batches` (or :func:`build_arrays`
    then :func:`collate`) is faster than building single graphs.

    Example::

        >>> from crystalzoo import example_structures
        >>> graphs = build_graphs(example_structures()[:2], progress=False)
        >>> len(graphs)
        2
    """
    if backend not in ("torch", "dgl"):
        raise CrystalZooError(f"backend must be 'torch' or 'dgl', got {backend!r}")
    graphs = [collate([a], settings) for a in build_arrays(structures, settings, progress, n_jobs)]
    return [g.to_dgl() for g in graphs] if backend == "dgl" else graphs
