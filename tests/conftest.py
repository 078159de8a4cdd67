"""Shared fixtures: real crystals shipped in tests/data (see tests/data/README.md)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("DGLBACKEND", "pytorch")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

DATA = Path(__file__).parent / "data"
CIFS = sorted((DATA / "cifs").glob("*.cif"))


@pytest.fixture(scope="session")
def mp200() -> list[dict]:
    """The first 200 crystals of the Materials Project data set (CIF + labels)."""
    with gzip.open(DATA / "mp200.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def mp200_structures(mp200):
    from pymatgen.core import Structure

    return [Structure.from_str(r["cif"], "cif") for r in mp200]


@pytest.fixture(scope="session")
def cif_paths() -> list[Path]:
    return CIFS
