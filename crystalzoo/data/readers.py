"""Readers of labelled tables: JSON lines and CSV, one crystal per row."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..graphs.reading import MAX_STRUCTURE_FILE_BYTES
from .targets import MISSING


def object_table(rows: list[list[Any]], width: int) -> np.ndarray:
    """An (n, width) object array holding the values as they are (``np.array`` would unpack a
    list label into another axis); :func:`~crystalzoo.data.targets.check_labels` then refuses what is not a number."""
    out = np.empty((len(rows), width), dtype=object)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            out[i, j] = v
    return out


#: longest line of a JSON-lines file (characters): a CIF of MAX_STRUCTURE_FILE_BYTES and its labels
MAX_JSONL_LINE = MAX_STRUCTURE_FILE_BYTES + 1_000_000


#: the names of an id column (CSV) or key (JSON lines) that are read as the crystals' ids, in
#: this order, when none is named (``id_column=`` / ``id_key=``, ``--id-column``): one rule for both
ID_NAMES = ("id", "mp_id")


def ids_of(values: Sequence[Any]) -> list[str]:
    """The ids of rows whose id column holds ``values``: each as text, a missing one (None, NaN,
    empty) ``row N`` (N its row), or ``row N (no id)`` where a real id is ``row N`` already (a
    generated id never takes a real one's place)."""
    missing = [_missing(v) for v in values]
    text = [id_text(v) for v in values]
    real = {t for t, m in zip(text, missing) if not m}
    return [t if not m else f"row {i}" + (" (no id)" if f"row {i}" in real else "")
            for i, (t, m) in enumerate(zip(text, missing))]


def id_text(value: Any) -> str:
    """An id as text; a whole number held as a float (pandas makes an integer column with a gap
    float) as the integer it was: 7.0 → "7", as the same id reads from CSV or JSON."""
    if isinstance(value, float) and value == value and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return id_text(value.item())
    return str(value)


def _missing(value: Any) -> bool:
    """Whether an id cell holds no id: None, NaN or an empty string."""
    return value is None or (isinstance(value, float) and value != value) or (isinstance(value, str)
                                                                                and not value.strip())


def beside(folder: Path, value: str) -> str | Path:
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


def read_jsonl(path: Path, structure_key: str, limit: int | None) -> list[dict[str, Any]]:
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


def read_csv_rows(path: Path, header: bool) -> tuple[list[str], list[tuple[int, list[str]]]]:
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


#: a label as CSV files write numbers: ASCII digits, a point, an exponent (and inf / nan words)
_NUMBER = re.compile(r"[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE | re.ASCII)


def csv_label(text: str, path: Path, lineno: int) -> float | None:
    """A label field of a CSV file: a number, or None for an empty / NaN / NA field."""
    if text.strip().lower() in MISSING:
        return None
    try:
        if not _NUMBER.fullmatch(text.strip()):  # float() also reads "1_000" and other scripts' digits
            raise ValueError(text)
        return float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: label {text[:40]!r} is not a number (leave the field empty "
                        "for a missing label)") from None
