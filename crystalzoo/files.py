"""Files written and read safely: atomic writes, strict JSON, sha256 checks and a bound on the
files read whole. No model code here, so every module may use it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import ChecksumError, ConfigError, WriteError


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, source: str, fix: str) -> None:
    """:class:`ChecksumError` unless the file at ``path`` has the sha256 ``expected`` (from
    ``source``, e.g. the manifest): the one check and message for every weights file."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"{path} does not match the sha256 in {source} (it has {actual}, expected {expected}): it "
                            f"is corrupt or not the published file. {fix}")


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)``, then move the finished file onto ``path`` in one step, so a
    crash or a full disk never leaves a half-written file under the real name."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if not isinstance(exc, Exception):  # KeyboardInterrupt and the like pass through
            raise
        try:
            free = f"{shutil.disk_usage(path.parent).free:,} bytes free there"
        except OSError:
            free = "the folder is not usable"
        raise WriteError(
            f"could not write {path} ({type(exc).__name__}: {exc}); {free}. Is the disk full or the "
            "folder read-only? Any previous version of the file is unchanged."
        ) from exc


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as strict JSON, atomically (see :func:`atomic_write`). NaN and ±inf,
    which JSON has no words for, are written as ``null`` (e.g. the MAE of a target with no
    label in the validation split).

    Example::

        >>> write_json("/tmp/metrics.json", {"mae": float("nan"), "epochs": 3})
        >>> json.loads(open("/tmp/metrics.json").read())
        {'mae': None, 'epochs': 3}
    """
    text = json.dumps(finite(data), indent=2, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


#: largest config.json read (bytes); crystalzoo's own are about 2 kB
MAX_CONFIG_BYTES = 1_000_000


def check_small_file(path: Path, what: str, limit: int = MAX_CONFIG_BYTES) -> None:
    """:class:`ConfigError` naming ``what`` when ``path`` exists but is not a regular file (a
    FIFO would block a read, ``/dev/zero`` never end it) or holds more than ``limit`` bytes."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"{what} is not a regular file (a folder, FIFO or device)")
    if path.is_file() and path.stat().st_size > limit:
        raise ConfigError(f"{what}: {path.stat().st_size:,} bytes, more than the {limit:,} it may have")
