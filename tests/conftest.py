"""Shared fixtures: real crystals shipped in tests/data (see tests/data/README.md)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True, scope="session")
def _loopback_only():
    """No test may open a connection to any host but this machine."""
    import socket

    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and self.family != socket.AF_UNIX:
            raise ConnectionRefusedError(f"tests may only connect to 127.0.0.1, not {host}")
        return real_connect(self, address)

    socket.socket.connect = connect
    yield
    socket.socket.connect = real_connect


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A Hub-compatible server on 127.0.0.1, with HF_ENDPOINT and a fresh HF cache."""
    from .hub_server import HubServer

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server
