"""Data sets of crystals and labels, with graphs built once and cached on disk.

Sources: a CGCNN folder (CIFs + ``id_prop.csv``), JSON lines (the format of the Materials
Project file: ``{"mp_id", "cif", <labels>…}``, gzip allowed), a pandas DataFrame, or a
list of pymatgen structures. Missing labels (``None``/``NaN``) are allowed; infinite or
non-numeric labels are refused before any work starts.

Example::

    >>> from crystalzoo.data import CrystalDataset, bundled_dataset
    >>> ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"])
    >>> train, val, test = ds.split(1000, 500, 500, seed=0)
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import ConfigError, CrystalZooError, DataError
from .graphs import (DEFAULT_SETTINGS, MAX_STRUCTURE_FILE_BYTES, MIN_DISTANCE, TIE_TOLERANCE, GraphArrays,
                     GraphSettings, _structure_list, build_arrays, check_count, known_elements, read_structure_file,
                     structure_path)

logger = logging.getLogger(__name__)

#: largest magnitude a label may have: labels are trained in float32
MAX_LABEL = float(np.finfo(np.float32).max)
#: spellings of a missing label in a CSV file (as pandas reads them)
_MISSING = {"", "nan", "na", "n/a", "null", "none", "-nan"}

BUNDLED = {
    "mp-band-gap": "mp_band_gap_3000.jsonl.gz",
}
#: the units of the bundled data sets' columns (a model fine-tuned on them carries them)
BUNDLED_UNITS = {
    "mp-band-gap": {"band_gap": "eV", "formation_energy_per_atom": "eV/atom", "efermi": "eV",
                    "energy_per_atom": "eV/atom"},
}


def example_structures() -> list[Path]:
    """Paths of three small crystal structures (CIF) shipped with the package, for trying
    crystalzoo out anywhere: the sample CIFs of the CGCNN repository (MIT; see
    ``crystalzoo/bundled/README.md``).

    Example::

        >>> from crystalzoo import example_structures, load_model
        >>> [p.name for p in example_structures()]
        ['1000041.cif', '1000050.cif', '1101051.cif']
        >>> load_model("formation").predict(example_structures()[:1]).round(2)
        array([-2.11], dtype=float32)
    """
    folder = Path(str(resources.files("crystalzoo").joinpath("bundled", "structures")))
    return sorted(folder.glob("*.cif"))


def bundled_dataset(name: str) -> Path:
    """Path of a real data set shipped with the package (see ``crystalzoo/bundled/README.md``).

    ``"mp-band-gap"``: 3,000 Materials Project crystals with band gap, formation energy,
    Fermi energy and total energy per atom (CC-BY 4.0, Jain et al. 2013).
    """
    if name not in BUNDLED:
        raise DataError(f"no bundled data set {name!r}; bundled: {', '.join(BUNDLED)}")
    return Path(str(resources.files("crystalzoo").joinpath("bundled", BUNDLED[name])))


BUNDLED_PREFIX = "bundled:"


def dataset_path(source: str | os.PathLike) -> Path:
    """The file or folder a data-set source names: ``bundled:NAME`` (a data set shipped with
    the package, unless a file of that name exists), else the path itself.

    Example::

        >>> dataset_path("bundled:mp-band-gap").name
        'mp_band_gap_3000.jsonl.gz'
    """
    path = Path(source)
    if isinstance(source, str) and source.startswith(BUNDLED_PREFIX) and not path.exists():
        return bundled_dataset(source[len(BUNDLED_PREFIX):])
    return path


def read_dataset(data: Any, targets: Sequence[str], id_column: str | None = None, **kwargs) -> "CrystalDataset":
    """A data set from any source ``finetune``, ``pretrain`` and ``crystalzoo embed`` take: a
    :class:`CrystalDataset` (returned as it is), a CGCNN folder, a CSV file, a JSON-lines file
    or ``bundled:NAME`` (:func:`dataset_path`). ``id_column``: the CSV column or JSON-lines key
    of the ids (defaults: ``id`` / ``mp_id``). ``kwargs`` go to the reader.

    Example::

        >>> len(read_dataset("bundled:mp-band-gap", ["band_gap"], limit=200, progress=False))
        200
    """
    if isinstance(data, CrystalDataset):
        return data
    if not isinstance(data, (str, os.PathLike)):
        raise ConfigError(f"data must be a CrystalDataset, a file or folder, or 'bundled:NAME', not a "
                          f"{type(data).__name__}; from structures or a DataFrame: CrystalDataset.from_structures / "
                          "CrystalDataset.from_dataframe")
    path = dataset_path(data)
    if path.is_dir():
        return CrystalDataset.from_cif_folder(path, targets=targets, **kwargs)
    if path.suffix.lower() == ".csv":
        return CrystalDataset.from_csv(path, targets=targets, id_column=id_column, **kwargs)
    ds = CrystalDataset.from_jsonl(path, targets=targets, **({"id_key": id_column} if id_column else {}), **kwargs)
    if isinstance(data, str) and data.startswith(BUNDLED_PREFIX):
        name = data[len(BUNDLED_PREFIX):]
        if name in BUNDLED and path == bundled_dataset(name):  # not a file of that name
            ds.info["units"] = dict(BUNDLED_UNITS.get(name, {}))  # label → unit
    return ds


def default_cache_dir() -> Path:
    """``$CRYSTALZOO_CACHE`` (when set and not empty), else ``~/.cache/crystalzoo``."""
    value = os.environ.get("CRYSTALZOO_CACHE", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "crystalzoo"


def _structure_key(source: Any) -> str:
    """A content hash of a structure source, without parsing CIF text."""
    from pymatgen.core import IStructure as Structure  # Structure and the immutable IStructure

    h = hashlib.sha256()
    if isinstance(source, Structure):
        h.update(np.ascontiguousarray(source.lattice.matrix, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(source.frac_coords, dtype=np.float64).tobytes())
        h.update(" ".join(str(site.species) for site in source).encode())  # disordered sites too (then refused)
        h.update(str(tuple(source.lattice.pbc)).encode())
    elif isinstance(source, (str, os.PathLike)) and (path := structure_path(source)) is not None:
        try:
            h.update(read_structure_file(path))
        except CrystalZooError:  # the graph builder reports it with the file's name
            h.update(str(source).encode())
    else:
        h.update(str(source).encode())
    return h.hexdigest()


def _target_list(targets: Any) -> list:
    """Targets as a list: one name given as a string is one target (never its characters)."""
    return [targets] if isinstance(targets, str) else list(targets)


def _split_target(spec: str) -> tuple[str, str, str | None]:
    """``"log10:k_vrh"`` → (label name ``log10_k_vrh``, column ``k_vrh``, transform ``log10``)."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"a target is the name of a label column (a string), got {spec!r}")
    transform, sep, column = spec.partition(":")
    if not sep:
        return spec, spec, None
    if transform != "log10":
        raise DataError(f"unknown target transform {transform!r} in {spec!r}; valid: 'log10:COLUMN'")
    return f"log10_{column}", column, transform


def _transformed(values: np.ndarray, transforms: list[str | None]) -> np.ndarray:
    """Apply per-column transforms to checked float labels; log10 of a value <= 0 is missing."""
    out = values.copy()
    for j, t in enumerate(transforms):
        if t == "log10":
            col = out[:, j]
            col[~(col > 0)] = np.nan
            out[:, j] = np.log10(col)
    return out


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for a one-line message (a label column holding CIF texts)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_labels(values: np.ndarray, targets: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    out = np.full(values.shape, np.nan, dtype=np.float64)
    for (i, j), v in np.ndenumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise DataError(f"label {targets[j]!r} of {ids[i]!r} is {_short(v)}, not a number")
        try:
            x = float(v)
        except OverflowError:  # an integer beyond any float
            x = float("inf")
        if not np.isfinite(x):
            raise DataError(f"label {targets[j]!r} of {ids[i]!r} is {str(v)[:40]}: labels must be finite (or missing)")
        if abs(x) > MAX_LABEL:
            raise DataError(
                f"label {targets[j]!r} of {ids[i]!r} is {x:.3g}, beyond float32's range (±{MAX_LABEL:.3g}) that "
                "training uses: rescale the target (other units, or a 'log10:COLUMN' target)"
            )
        out[i, j] = x
    return out


@dataclass
class CrystalDataset:
    """Crystals as compact graphs (built once, cached) with their labels.

    ``labels`` has shape (n, n_targets), NaN where a label is missing.
    """

    ids: list[str]
    graphs: list[GraphArrays]
    labels: np.ndarray
    targets: list[str]
    settings: GraphSettings = DEFAULT_SETTINGS
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_structures(cls, structures: Sequence[Any], labels: Any = None, *, targets: Sequence[str] = ("y",),
                        ids: Sequence[str] | None = None, settings: GraphSettings = DEFAULT_SETTINGS,
                        cache_dir: str | os.PathLike | None = None, progress: bool = True,
                        n_jobs: int = 1, transforms: Sequence[str | None] | None = None) -> "CrystalDataset":
        """From structures (pymatgen, CIF paths or CIF texts) and a labels array (n,) or
        (n, n_targets); ``labels=None`` for prediction-only data. Graphs are cached in
        ``cache_dir`` (default :func:`default_cache_dir`; ``False`` for no cache). The
        file/DataFrame constructors also take targets like ``"log10:k_vrh"`` (label
        ``log10_k_vrh``; values <= 0 count as missing)."""
        structures = _structure_list(structures)
        n = len(structures)
        if n == 0:
            raise DataError("no crystals: a data set needs at least one structure")
        ids = [str(i) for i in (ids if ids is not None else range(n))]
        if len(ids) != n:
            raise DataError(f"{len(ids)} ids for {n} structures")
        if len(set(ids)) != n:
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DataError(f"duplicate ids {dup}: every crystal needs its own id")
        targets = _target_list(targets)
        if len(set(targets)) != len(targets):
            dup = sorted({t for t in targets if targets.count(t) > 1})
            raise DataError(f"targets {dup} are given more than once: name each target once")
        if labels is None:
            values = np.full((n, len(targets)), np.nan, dtype=object)
        else:
            values = np.asarray(labels, dtype=object)
            if values.ndim == 1:
                values = values[:, None]
            if values.shape != (n, len(targets)):
                raise DataError(f"labels have shape {values.shape}, expected ({n}, {len(targets)}) for targets {targets}")
        y = _check_labels(values, targets, ids)
        if transforms:
            transforms = list(transforms)
            if len(transforms) != len(targets) or any(t not in (None, "log10") for t in transforms):
                raise ConfigError(f"transforms = {transforms!r}: give one per target ({len(targets)}), each None or "
                                  "'log10'")
            y = _transformed(y, transforms)
        graphs = _cached_graphs(structures, settings, cache_dir, progress, n_jobs, ids)
        return cls(ids, graphs, y.astype(np.float32), targets, settings)

    @classmethod
    def from_dataframe(cls, df, *, targets: Sequence[str], structure_column: str = "cif",
                       id_column: str | None = None, **kwargs) -> "CrystalDataset":
        """From a DataFrame with a column of structures (CIF text, CIF paths or pymatgen
        structures) and one column per target."""
        targets = _target_list(targets)
        names, columns, transforms = zip(*map(_split_target, targets)) if targets else ((), (), ())
        missing = [c for c in [structure_column, *columns, *([id_column] if id_column else [])] if c not in df.columns]
        if missing:
            raise DataError(f"columns {missing} not in the data (columns: {list(df.columns)})")
        ids = [_id(v, i) for i, v in enumerate(df[id_column].tolist())] if id_column else [str(i) for i in df.index]
        labels = df[list(columns)].astype(object).where(df[list(columns)].notna(), None).to_numpy()
        return cls.from_structures(df[structure_column].tolist(), labels, targets=list(names), ids=ids,
                                   transforms=list(transforms), **kwargs)

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike, *, targets: Sequence[str], structure_key: str = "cif",
                   id_key: str | None = None, limit: int | None = None, **kwargs) -> "CrystalDataset":
        """From a JSON-lines file (``.gz`` allowed), one crystal per line. Ids come from
        ``id_key``, else from the key ``mp_id`` or ``id``; a line without one is ``row N``."""
        path = Path(path)
        if limit is not None:
            check_count(limit, "limit")
        rows = _read_jsonl(path, structure_key, limit)
        targets = _target_list(targets)
        names, columns, transforms = zip(*map(_split_target, targets)) if targets else ((), (), ())
        missing = [k for k in columns if not any(k in r for r in rows)]
        if missing:
            raise DataError(f"{path}: keys {missing} are on no line (keys of the first line: {sorted(rows[0])})")
        if id_key is None:  # the usual id keys, else row numbers
            id_key = next((k for k in ("mp_id", "id") if any(k in r for r in rows)), None)
        elif not any(id_key in r for r in rows):
            raise DataError(f"{path}: id key {id_key!r} is on no line (keys of the first line: {sorted(rows[0])[:10]})")
        ids = [_id(r.get(id_key) if id_key else None, i) for i, r in enumerate(rows)]
        labels = _object_table([[r.get(c) for c in columns] for r in rows], len(columns))
        ds = cls.from_structures([_beside(path.parent, r[structure_key]) for r in rows], labels, targets=list(names), ids=ids,
                                 transforms=list(transforms), **kwargs)
        ds.info["source"] = str(path)
        return ds

    @classmethod
    def from_cif_folder(cls, folder: str | os.PathLike, *, targets: Sequence[str] = ("y",), **kwargs) -> "CrystalDataset":
        """From a CGCNN-style folder: ``id_prop.csv`` (id, label…; no header) and ``<id>.cif``."""
        folder, targets = Path(folder), _target_list(targets)
        table = folder / "id_prop.csv"
        if not table.is_file():
            raise DataError(f"{folder}: no id_prop.csv (a CGCNN folder has id_prop.csv and one <id>.cif per crystal)")
        header, rows = _read_csv_rows(table, header=False)
        width = {len(r) for _, r in rows}
        if targets and width != {1 + len(targets)}:
            lineno, row = next((n, r) for n, r in rows if len(r) != 1 + len(targets))
            raise DataError(
                f"{table}:{lineno}: {len(row) - 1} label columns, but targets are {list(targets)}: every line must be "
                f"'id,{','.join(targets)}' (no header; an empty field is a missing label)"
            )
        ids = [r[0] for _, r in rows]
        for (lineno, _), i in zip(rows, ids):
            if not i.strip() or i.strip() in (".", "..") or any(c in i for c in "/\\"):
                raise DataError(f"{table}:{lineno}: id {i!r} is not the name of a CIF file in {folder} (ids name "
                                "<id>.cif beside id_prop.csv: no folders, no '..')")
        labels = _object_table([[_csv_label(v, table, n) for v in r[1:1 + len(targets)]] for n, r in rows],
                               len(targets))  # targets=[]: the crystals alone (embedding)
        paths = [folder / f"{i}.cif" for i in ids]
        absent = [p.name for p in paths if not p.is_file()]
        if absent:
            raise DataError(f"{folder}: CIF files missing for {absent[:5]}")
        return cls.from_structures(paths, labels, targets=targets, ids=ids, **kwargs)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, targets: Sequence[str], structure_column: str = "cif",
                 id_column: str | None = None, **kwargs) -> "CrystalDataset":
        """From a CSV file with a header: a column of CIF texts or CIF paths and one column per
        target (``"log10:COLUMN"`` allowed). Ids come from ``id_column``, else from a column
        named ``id`` or ``mp_id``, else they are the row numbers.
        Each line is checked: a malformed file raises :class:`DataError` naming the line."""
        path = Path(path)
        header, rows = _read_csv_rows(path, header=True)
        bad = next(((n, r) for n, r in rows if len(r) != len(header)), None)
        if bad is not None:
            raise DataError(f"{path}:{bad[0]}: {len(bad[1])} fields, but the header has {len(header)}: "
                            "quote fields that hold commas or line breaks (CIF texts), one crystal per record")
        targets = _target_list(targets)
        names, columns, transforms = zip(*map(_split_target, targets)) if targets else ((), (), ())
        wanted = [structure_column, *columns, *([id_column] if id_column else [])]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise DataError(f"{path}: columns {missing} not in the header (columns: {header})")
        twice = sorted({c for c in wanted if header.count(c) > 1})
        if twice:
            raise DataError(f"{path}: the header names the columns {twice} more than once, so which to read is "
                            "unclear: rename them")
        col = {c: header.index(c) for c in header}
        if id_column is None:  # an id column of the usual names, else the row numbers
            id_column = next((c for c in ("id", "mp_id") if c in col and header.count(c) == 1), None)
        ids = [_id(r[col[id_column]], i) for i, (_, r) in enumerate(rows)] if id_column else \
            [str(i) for i in range(len(rows))]
        labels = _object_table([[_csv_label(r[col[c]], path, n) for c in columns] for n, r in rows], len(columns))
        structures = [_beside(path.parent, r[col[structure_column]]) for _, r in rows]
        ds = cls.from_structures(structures, labels, targets=list(names), ids=ids,
                                 transforms=list(transforms), **kwargs)
        ds.info["source"] = str(path)
        return ds

    # ------------------------------------------------------------------ views
    def subset(self, index: Iterable[int]) -> "CrystalDataset":
        """The crystals at the positions ``index`` (in that order)."""
        index = list(index)
        bad = [i for i in index if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -len(self) <= i < len(self)]
        if bad:
            raise DataError(f"positions {bad[:5]} are not positions of this data set of {len(self)} crystals")
        return CrystalDataset([self.ids[i] for i in index], [self.graphs[i] for i in index],
                              self.labels[index], list(self.targets), self.settings, dict(self.info))

    def select_targets(self, targets: Sequence[str], drop_missing: bool = True) -> "CrystalDataset":
        """The same crystals with only ``targets`` as labels; crystals with none of them
        are dropped when ``drop_missing`` (the count is kept in ``info['dropped_missing']``)."""
        targets = _target_list(targets)
        if not targets:
            raise DataError(f"select_targets needs at least one target (the data set has {self.targets})")
        unknown = [t for t in targets if t not in self.targets]
        if unknown:
            raise DataError(f"targets {unknown} not in the data set (it has {self.targets})")
        cols = [self.targets.index(t) for t in targets]
        ds = CrystalDataset(self.ids, self.graphs, self.labels[:, cols], list(targets), self.settings, dict(self.info))
        if drop_missing:
            keep = np.flatnonzero(~np.isnan(ds.labels).all(axis=1))
            dropped = len(ds) - len(keep)
            ds = ds.subset(keep)
            ds.info["dropped_missing"] = dropped
        return ds

    def split(self, train: float | int, val: float | int, test: float | int = 0, seed: int = 0):
        """Seeded random (train, val, test) subsets, by counts (integers) or by fractions of the
        data (numbers between 0 and 1): see :func:`check_split_size`."""
        n = len(self)
        given = [check_split_size(name, s) for name, s in zip(("train_size", "val_size", "test_size"), (train, val, test))]
        sizes = [int(round(s * n)) if isinstance(s, float) else s for s in given]
        wanted = sum(s * n if isinstance(s, float) else s for s in given)
        if sum(sizes) > n >= wanted - 1e-9:  # fractions that fit, each rounded up (0.8/0.1/0.1 of 16: 13 + 2 + 2)
            up = sorted((i for i, s in enumerate(given) if isinstance(s, float) and sizes[i] > 1),
                        key=lambda i: sizes[i] - given[i] * n, reverse=True)
            for i in up[: sum(sizes) - n]:  # one crystal less for those rounded up the most
                sizes[i] -= 1
        for name, s, size in zip(("train_size", "val_size", "test_size"), given, sizes):
            if isinstance(s, float) and size == 0:
                raise DataError(f"{name} = {s!r} is no crystal of the {n} in the data set; give a larger fraction "
                                "or a count")
        if sizes[0] == 0:
            raise DataError(f"train_size = {train!r} leaves no crystal for training (the data set has {n}); "
                            "give a larger count or fraction")
        if sum(sizes) > n:
            raise DataError(f"split sizes {sizes} need {sum(sizes)} crystals, the data set has {n}")
        order = np.random.default_rng(check_count(seed, "seed", 0)).permutation(n)
        a, b = sizes[0], sizes[0] + sizes[1]
        return self.subset(order[:a]), self.subset(order[a:b]), self.subset(order[b : b + sizes[2]])


def _object_table(rows: list[list[Any]], width: int) -> np.ndarray:
    """An (n, width) object array holding the values as they are (``np.array`` would unpack a
    list label into another axis); :func:`_check_labels` then refuses what is not a number."""
    out = np.empty((len(rows), width), dtype=object)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            out[i, j] = v
    return out


#: longest line of a JSON-lines file (characters): a CIF of MAX_STRUCTURE_FILE_BYTES and its labels
MAX_JSONL_LINE = MAX_STRUCTURE_FILE_BYTES + 1_000_000


def _id(value: Any, row: int) -> str:
    """A crystal's id as text; a missing one (None, NaN, empty) is ``row N``."""
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        return f"row {row}"
    return str(value)


def _beside(folder: Path, value: str) -> str | Path:
    """A structure named in a data file: CIF text stays text; a CIF path is relative to the
    data file's folder (as ``<id>.cif`` in a CGCNN folder), not to the current one."""
    if not value.strip() or "\n" in value or "\r" in value:
        return value
    path = Path(value) if os.path.isabs(value) else folder / value
    try:
        exists = os.path.lexists(path)
    except (OSError, ValueError):  # a name too long for a path, a NUL character
        exists = False
    if not exists and value.lstrip().startswith("data_") and any(c.isspace() for c in value.strip()):
        try:
            elsewhere = os.path.lexists(value)
        except (OSError, ValueError):
            elsewhere = False
        if not elsewhere:
            return value  # CIF text on one line (a file name beside the data file has no blanks)
    return path


def _read_jsonl(path: Path, structure_key: str, limit: int | None) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (``.gz`` allowed), each checked to be an object with a
    string under ``structure_key``; :class:`DataError` naming the file and the line otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: " + ("not a regular file (a folder, FIFO or device); pass a JSON-lines file"
                                       if path.exists() else "no such file"))
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    rows: list[dict[str, Any]] = []
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(iter(lambda: f.readline(MAX_JSONL_LINE + 1), ""), 1):
                if len(line) > MAX_JSONL_LINE:  # e.g. a gzip bomb: never read a whole line into memory
                    raise DataError(f"{path}:{lineno}: a line longer than {MAX_JSONL_LINE:,} characters "
                                    "(crystalzoo.data.MAX_JSONL_LINE); each line is one crystal: its CIF text "
                                    "and labels")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as exc:  # JSONDecodeError, too-long integers, deep nesting
                    raise DataError(f"{path}:{lineno}: not valid JSON ({getattr(exc, 'msg', exc)}); "
                                    "each line must be one JSON object") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno}: a JSON {type(row).__name__}, not an object; each line must "
                                    f"be one object like {{\"{structure_key}\": CIF text, <labels>…}}")
                if not isinstance(row.get(structure_key), str):
                    raise DataError(f"{path}:{lineno}: no {structure_key!r} string (keys: {sorted(row)[:10]}); "
                                    f"every line needs the crystal's CIF text under {structure_key!r}")
                rows.append(row)
                if limit is not None and len(rows) >= limit:
                    break
    except MemoryError:
        raise DataError(f"{path}: too large to read into memory after line {lineno}; pass fewer crystals "
                        "(limit=…) or split the file") from None
    except (EOFError, OSError, zlib.error, UnicodeDecodeError) as exc:  # truncated or corrupt gzip, bad bytes
        raise DataError(f"{path}: unreadable after line {lineno} ({type(exc).__name__}: {exc}); the file is truncated "
                        "or not UTF-8 JSON lines: download or write it again") from None
    if not rows:
        raise DataError(f"{path}: no crystals in it")
    return rows


def _read_csv_rows(path: Path, header: bool) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)…]) of a UTF-8 CSV file, blank lines skipped;
    :class:`DataError` naming the file for an empty, undecodable or malformed one."""
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: not a regular file (a folder, FIFO or device); pass a CSV file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({exc.reason}); save the file as UTF-8 CSV") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    # a CIF text in a cell may be longer than the csv module's default limit (128 kB)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_STRUCTURE_FILE_BYTES))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    names: list[str] = []
    if header and rows:
        names = rows.pop(0)[1]
    if not rows:
        raise DataError(f"{path}: no crystals in it" + (" (only a header)" if names else " (empty file)"))
    return names, rows


def _csv_label(text: str, path: Path, lineno: int) -> float | None:
    """A label field of a CSV file: a number, or None for an empty / NaN / NA field."""
    if text.strip().lower() in _MISSING:
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: label {text[:40]!r} is not a number (leave the field empty "
                        "for a missing label)") from None


def check_split_size(name: str, value: Any) -> int | float:
    """A split size as the CLI and the API both read it: an integer ≥ 0 is a count of
    crystals, a number strictly between 0 and 1 a fraction of the data. Anything else is a
    :class:`ConfigError` naming ``name``: ``1.0`` (one crystal or all of them? say ``1`` or
    give a fraction below 1), other non-integral numbers, negatives, NaN, booleans, text.

    Example::

        >>> check_split_size("train_size", 100), check_split_size("train_size", 0.8)
        (100, 0.8)
    """
    how = "a split size is a count of crystals (an integer, e.g. 1000) or a fraction of the data between 0 and 1 (e.g. 0.8)"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} = {value!r}: {how}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ConfigError(f"{name} = {value}: a count of crystals cannot be negative; {how}")
        return int(value)
    if not 0 < value < 1:
        if value == 1:
            what = "1.0 could mean one crystal or all of them"
        elif value > 1 and float(value).is_integer():
            what = f"a count is written as an integer ({int(value)}), a fraction is below 1"
        else:
            what = "it is neither an integer nor a fraction"
        raise ConfigError(f"{name} = {value!r}: {what}; {how}")
    return float(value)


def _cached_graphs(structures: list, settings: GraphSettings, cache_dir, progress: bool, n_jobs: int,
                   names: Sequence[str] | None = None) -> list[GraphArrays]:
    """Graph arrays for ``structures``, read from the cache file of exactly this list of
    structures and settings when there is one, built (and cached) otherwise."""
    if cache_dir is False:
        return build_arrays(structures, settings, progress, n_jobs, names=names)
    if not (cache_dir is None or isinstance(cache_dir, (str, os.PathLike))) \
            or (isinstance(cache_dir, str) and not cache_dir.strip()):
        raise ConfigError(f"cache_dir = {cache_dir!r}: give a folder for the graph cache, None for the default "
                          "(CRYSTALZOO_CACHE or ~/.cache/crystalzoo) or False for no cache")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    keys = [_structure_key(s) for s in structures]
    h = hashlib.sha256(json.dumps({**settings.to_dict(), "format": _PACK_FORMAT}, sort_keys=True).encode())
    for k in keys:
        h.update(k.encode())
    path = cache / "graphs" / f"{h.hexdigest()[:32]}.npz"
    if path.is_file():
        try:
            return _read_pack(path, len(structures), settings)
        except Exception as exc:  # an unreadable or inconsistent cache file is rebuilt, never trusted
            logger.warning("the graph cache file %s is unreadable or inconsistent (%s); rebuilding it", path,
                           str(exc)[:100])
    graphs = build_arrays(structures, settings, progress, n_jobs, names=names)
    try:
        _write_pack(path, graphs)
    except OSError as exc:  # read-only or full disk: go on without a cache
        logger.warning("could not write the graph cache %s (%s); graphs will be rebuilt next time", path, exc)
    return graphs


#: the version of the cache files' layout (2: edge weights of split neighbour shells)
_PACK_FORMAT = 2


def _write_pack(path: Path, graphs: list[GraphArrays]) -> None:
    from .files import atomic_write

    n_atoms = np.array([g.n_atoms for g in graphs], np.int64)
    n_edges = np.array([len(g.src) for g in graphs], np.int64)
    arrays = dict(
        n_atoms=n_atoms, n_edges=n_edges,
        z=np.concatenate([g.z for g in graphs]), extended=np.concatenate([g.extended for g in graphs]),
        src=np.concatenate([g.src for g in graphs]), dst=np.concatenate([g.dst for g in graphs]),
        distance=np.concatenate([g.distance for g in graphs]),
        weight=np.concatenate([g.weight if g.weight is not None else np.ones(len(g.src), np.float32) for g in graphs]),
    )

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _read_pack(path: Path, expected: int, settings: GraphSettings) -> list[GraphArrays]:
    """The graphs of a cache file, checked for consistency first (ValueError otherwise, and
    the caller rebuilds): the counts add up, every edge joins two atoms of its own crystal,
    the elements are in the atom table, the distances are at least ``MIN_DISTANCE`` and, for
    atoms not marked extended, within the radius, and the weights are positive and add up to
    at most ``max_neighbors`` per atom. A file made to pass these checks is used: the cache
    is the user's own folder."""
    with np.load(path) as f:
        a = {k: f[k] for k in f.files}
    n_atoms, n_edges = a["n_atoms"], a["n_edges"]
    if len(n_atoms) != expected or len(n_edges) != expected:
        raise ValueError("cache holds another number of crystals")
    if n_atoms.dtype.kind != "i" or n_edges.dtype.kind != "i" or (n_atoms < 1).any() or (n_edges < 0).any():
        raise ValueError("cache holds impossible counts")
    if not (len(a["z"]) == len(a["extended"]) == n_atoms.sum()) \
            or not (len(a["src"]) == len(a["dst"]) == len(a["distance"]) == len(a["weight"]) == n_edges.sum()):
        raise ValueError("cache counts do not match its arrays")
    atoms = np.repeat(n_atoms, n_edges)  # the atom count of each edge's crystal
    for ends in (a["src"], a["dst"]):
        if ends.dtype.kind != "i" or (ends < 0).any() or (ends >= atoms).any():
            raise ValueError("cache holds an edge to an atom outside its crystal")
    z = a["z"]
    if z.dtype.kind != "i" or not known_elements(z).all():
        raise ValueError("cache holds unknown elements")
    distance, weight = a["distance"], a["weight"]
    if not (np.isfinite(distance).all() and np.isfinite(weight).all()):
        raise ValueError("cache holds non-finite distances or weights")
    if (distance < MIN_DISTANCE).any() or (weight <= 0).any():
        raise ValueError("cache holds distances below the closest approach or weights that are not positive")
    if a["extended"].dtype.kind != "b":
        raise ValueError("cache holds extended flags that are not booleans")
    centre = np.repeat(np.cumsum(n_atoms) - n_atoms, n_edges) + a["dst"]  # each edge's centre atom, over all crystals
    if (np.bincount(centre, weights=weight, minlength=len(z)) > settings.max_neighbors * (1 + 1e-5)).any():
        raise ValueError("cache holds atoms whose edge weights add up to more than max_neighbors")
    if (distance[~a["extended"][centre]] > settings.radius + TIE_TOLERANCE).any():
        raise ValueError("cache holds neighbours beyond the radius for atoms that have them within it")
    na, ne = np.cumsum(n_atoms)[:-1], np.cumsum(n_edges)[:-1]
    return [
        GraphArrays(z, src, dst, d, ext, None if np.allclose(w, 1, rtol=0, atol=1e-6) else w)
        for z, ext, src, dst, d, w in zip(np.split(z, na), np.split(a["extended"], na), np.split(a["src"], ne),
                                          np.split(a["dst"], ne), np.split(a["distance"], ne), np.split(a["weight"], ne))
    ]
