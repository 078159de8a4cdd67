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

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..checks import check_count
from ..errors import ConfigError, DataError
from ..graphs.neighbors import GraphArrays
from ..graphs.reading import structure_list, structure_path
from ..graphs.settings import DEFAULT_SETTINGS, GraphSettings
from .bundled import BUNDLED, BUNDLED_PREFIX, BUNDLED_UNITS, bundled_dataset
from .cache import cached_graphs
from .readers import (
    ID_NAMES,
    beside,
    csv_label,
    id_text,
    ids_of,
    object_table,
    read_csv_rows,
    read_jsonl,
)
from .targets import (
    as_read,
    check_labels,
    check_split_size,
    split_target,
    target_list,
    transformed,
)

logger = logging.getLogger(__name__)


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
        if id_column is not None:  # it was ignored: the ids of a CGCNN folder are the first column of id_prop.csv
            raise ConfigError(f"id_column = {id_column!r} (--id-column) names an id column of a table, but {path} is a "
                              "CGCNN folder, whose ids are the first column of its id_prop.csv: leave it out")
        return CrystalDataset.from_cif_folder(path, targets=targets, **kwargs)
    if path.suffix.lower() == ".csv":
        return CrystalDataset.from_csv(path, targets=targets, id_column=id_column, **kwargs)
    ds = CrystalDataset.from_jsonl(path, targets=targets, **({"id_key": id_column} if id_column else {}), **kwargs)
    if isinstance(data, str) and data.startswith(BUNDLED_PREFIX):
        name = data[len(BUNDLED_PREFIX):]
        if name in BUNDLED and path == bundled_dataset(name):  # not a file of that name
            ds.info["units"] = dict(BUNDLED_UNITS.get(name, {}))  # label → unit
    return ds


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
        ``cache_dir`` (default :func:`~crystalzoo.data.cache.default_cache_dir`; ``False`` for no cache). Targets
        like ``"log10:k_vrh"`` (here, and in the file/DataFrame constructors) are the log10 of the
        labels given, named ``log10_k_vrh``; values <= 0 count as missing."""
        structures = structure_list(structures)
        n = len(structures)
        if n == 0:
            raise DataError("no crystals: a data set needs at least one structure")
        targets = target_list(targets)
        if transforms is None and any(":" in t for t in targets):  # "log10:COLUMN": its label name and transform
            targets, _, transforms = (list(parts) for parts in zip(*map(split_target, targets)))
        ids = [id_text(i) for i in (ids if ids is not None else range(n))]
        if len(ids) != n:
            raise DataError(f"{len(ids)} ids for {n} structures")
        if len(set(ids)) != n:
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DataError(f"duplicate ids {dup}: every crystal needs its own id")
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
        y = check_labels(values, targets, ids)
        if transforms:
            transforms = list(transforms)
            if len(transforms) != len(targets) or any(t not in (None, "log10") for t in transforms):
                raise ConfigError(f"transforms = {transforms!r}: give one per target ({len(targets)}), each None or "
                                  "'log10'")
            y = transformed(y, transforms)
        graphs = cached_graphs(structures, settings, cache_dir, progress, n_jobs, ids)
        files = sorted({str(p.resolve()) for s in structures if (p := structure_path(s)) is not None})
        return cls(ids, graphs, y.astype(np.float32), targets, settings, {"structure_files": files} if files else {})

    @classmethod
    def from_dataframe(cls, df, *, targets: Sequence[str], structure_column: str = "cif",
                       id_column: str | None = None, **kwargs) -> "CrystalDataset":
        """From a DataFrame with a column of structures (CIF text, CIF paths or pymatgen
        structures) and one column per target."""
        targets = as_read(target_list(targets), df.columns.__contains__)
        names, columns, transforms = zip(*map(split_target, targets)) if targets else ((), (), ())
        missing = [c for c in [structure_column, *columns, *([id_column] if id_column else [])] if c not in df.columns]
        if missing:
            raise DataError(f"columns {missing} not in the data (columns: {list(df.columns)})")
        ids = ids_of(df[id_column].tolist()) if id_column else [id_text(i) for i in df.index]
        labels = df[list(columns)].astype(object).where(df[list(columns)].notna(), None).to_numpy()
        return cls.from_structures(df[structure_column].tolist(), labels, targets=list(names), ids=ids,
                                   transforms=list(transforms), **kwargs)

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike, *, targets: Sequence[str], structure_key: str = "cif",
                   id_key: str | None = None, limit: int | None = None, **kwargs) -> "CrystalDataset":
        """From a JSON-lines file (``.gz`` allowed), one crystal per line. Ids come from
        ``id_key``, else from the first of :data:`~crystalzoo.data.readers.ID_NAMES` (``id``, then
        ``mp_id``) that the lines have, as for a CSV file; a line without one is ``row N``."""
        path = Path(path)
        if limit is not None:
            check_count(limit, "limit")
        rows = read_jsonl(path, structure_key, limit)
        targets = as_read(target_list(targets), lambda key: any(key in r for r in rows))
        names, columns, transforms = zip(*map(split_target, targets)) if targets else ((), (), ())
        missing = [k for k in columns if not any(k in r for r in rows)]
        if missing:
            raise DataError(f"{path}: keys {missing} are on no line (keys of the first line: {sorted(rows[0])})")
        if id_key is None:  # the usual id keys, else row numbers
            id_key = next((k for k in ID_NAMES if any(k in r for r in rows)), None)
        elif not any(id_key in r for r in rows):
            raise DataError(f"{path}: id key {id_key!r} is on no line (keys of the first line: {sorted(rows[0])[:10]})")
        ids = ids_of([r.get(id_key) if id_key else None for r in rows])
        labels = object_table([[r.get(c) for c in columns] for r in rows], len(columns))
        ds = cls.from_structures([beside(path.parent, r[structure_key]) for r in rows], labels, targets=list(names), ids=ids,
                                 transforms=list(transforms), **kwargs)
        ds.info["source"] = str(path)
        return ds

    @classmethod
    def from_cif_folder(cls, folder: str | os.PathLike, *, targets: Sequence[str] = ("y",), **kwargs) -> "CrystalDataset":
        """From a CGCNN-style folder: ``id_prop.csv`` (id, label…; no header) and ``<id>.cif``."""
        folder, targets = Path(folder), target_list(targets)
        table = folder / "id_prop.csv"
        if not table.is_file():
            raise DataError(f"{folder}: no id_prop.csv (a CGCNN folder has id_prop.csv and one <id>.cif per crystal)")
        header, rows = read_csv_rows(table, header=False)
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
        labels = object_table([[csv_label(v, table, n) for v in r[1:1 + len(targets)]] for n, r in rows],
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
        header, rows = read_csv_rows(path, header=True)
        bad = next(((n, r) for n, r in rows if len(r) != len(header)), None)
        if bad is not None:
            raise DataError(f"{path}:{bad[0]}: {len(bad[1])} fields, but the header has {len(header)}: "
                            "quote fields that hold commas or line breaks (CIF texts), one crystal per record")
        targets = as_read(target_list(targets), header.__contains__)
        names, columns, transforms = zip(*map(split_target, targets)) if targets else ((), (), ())
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
            id_column = next((c for c in ID_NAMES if c in col), None)
            if id_column is not None and header.count(id_column) > 1:
                raise DataError(f"{path}: the header names the id column {id_column!r} more than once, so which ids "
                                "to read is unclear: rename one, or name the id column to read (id_column, --id-column)")
        ids = ids_of([r[col[id_column]] for _, r in rows]) if id_column else \
            [str(i) for i in range(len(rows))]
        labels = object_table([[csv_label(r[col[c]], path, n) for c in columns] for n, r in rows], len(columns))
        structures = [beside(path.parent, r[col[structure_column]]) for _, r in rows]
        ds = cls.from_structures(structures, labels, targets=list(names), ids=ids,
                                 transforms=list(transforms), **kwargs)
        ds.info["source"] = str(path)
        return ds

    # ------------------------------------------------------------------ views
    def subset(self, index: Iterable[int]) -> "CrystalDataset":
        """The crystals at the positions ``index`` (in that order; a slice such as ``slice(0, 10)``
        too). A position given twice is refused: ids stay unique, as every constructor keeps them."""
        if isinstance(index, slice):
            index = range(len(self))[index]
        if isinstance(index, (str, bytes)) or not hasattr(index, "__iter__"):
            raise DataError(f"subset takes positions (a list, range, array or slice), not {index!r}")
        index = list(index)
        bad = [i for i in index if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -len(self) <= i < len(self)]
        if bad:
            raise DataError(f"positions {bad[:5]} are not positions of this data set of {len(self)} crystals")
        positions, counts = np.unique(np.asarray(index, dtype=np.int64) % max(len(self), 1), return_counts=True)
        twice = positions[counts > 1].tolist()
        if twice:
            raise DataError(f"positions {twice[:5]} are given more than once: a data set holds each crystal once (its "
                            "ids are unique); for a bootstrap sample build a data set whose copies have their own ids")
        return CrystalDataset([self.ids[i] for i in index], [self.graphs[i] for i in index],
                              self.labels[index], list(self.targets), self.settings, dict(self.info))

    def with_atom_features(self, name: str) -> "CrystalDataset":
        """The same crystals and labels, their graphs with the atom features ``name`` (the ones a
        backbone family reads, e.g. ``"one-hot-100"`` for ``schnet``): the stored graphs hold
        atomic numbers, so nothing is rebuilt.

        Example::

            >>> from crystalzoo.data import CrystalDataset, bundled_dataset
            >>> ds = CrystalDataset.from_jsonl(bundled_dataset("mp-band-gap"), targets=["band_gap"], limit=5,
            ...                                progress=False)
            >>> ds.with_atom_features("one-hot-100").settings.n_atom_features
            100
        """
        settings = dataclasses.replace(self.settings, atom_features=name)
        return CrystalDataset(self.ids, self.graphs, self.labels, list(self.targets), settings, dict(self.info))

    def select_targets(self, targets: Sequence[str], drop_missing: bool = True) -> "CrystalDataset":
        """The same crystals with only ``targets`` as labels; crystals with none of them
        are dropped when ``drop_missing`` (the count is kept in ``info['dropped_missing']``)."""
        targets = target_list(targets)
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
