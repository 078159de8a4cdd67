"""Tables written to files: crystal vectors (``crystalzoo embed``) and predictions
(``crystalzoo predict --output``), as CSV, JSON, NPZ or Parquet. Each file is checked before
any work (:func:`check_table_path`) and written whole or not at all (:func:`write_frame`).

Example::

    >>> import pandas as pd
    >>> write_frame(pd.DataFrame({"id": ["a"], "band_gap (eV)": [1.5]}), "/tmp/t.json", overwrite=True).name
    't.json'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, MissingExtraError
from .files import atomic_write, write_json

#: the formats, by file name ending
TABLE_FORMATS = (".csv", ".json", ".npz", ".parquet")


def check_table_path(path: str | os.PathLike, overwrite: bool = False, formats: Sequence[str] = TABLE_FORMATS,
                     example: str = "table") -> Path:
    """The path of a table to write, checked before any work: one of ``formats``, not a
    folder, not an existing file unless ``overwrite``, pyarrow there for Parquet."""
    names = (", ".join(f"{example}{f}" for f in formats[:-1]) + " or " if len(formats) > 1 else "") + \
        f"{example}{formats[-1]}"
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigError(f"the table's file name is empty ({path!r}); give one such as {names}")
    path = Path(path)
    if path.suffix.lower() not in formats:
        raise ConfigError(f"{path}: give a file name such as {names}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name such as {path / (example + formats[0])}")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError(f"{path}: {parent} is a file, not a folder; choose another place for the table")
    if os.path.lexists(path) and not overwrite:
        raise ConfigError(f"{path} exists; pass --overwrite (overwrite=True) to replace it, or choose another name")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MissingExtraError(f"writing Parquet needs pyarrow: pip install pyarrow (or write {example}.csv)") \
                from None
    return path


def write_frame(frame: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a pandas DataFrame as CSV (quoted where needed, 9 significant digits: float32 values read back
    exactly), JSON (a
    list of records; a missing value is null) or Parquet, by the name of ``path``."""
    path = check_table_path(path, overwrite, formats=(".csv", ".json", ".parquet"))
    kind = path.suffix.lower()
    if kind == ".parquet":
        def write(tmp):
            frame.to_parquet(tmp, index=False)
    elif kind == ".json":
        def plain(v: Any) -> Any:
            if hasattr(v, "item"):  # numpy numbers
                v = v.item()
            return float(f"{v:.9g}") if isinstance(v, float) else v

        write_json(path, [{k: plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")])
        return path
    else:
        def write(tmp):
            frame.to_csv(tmp, index=False, float_format="%.9g")  # float32 round-trips in 9 digits
    atomic_write(path, write)
    return path
