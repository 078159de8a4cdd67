"""A run's output folder belongs to that run: checked, locked while the run writes, replaced only with
``overwrite`` (docs/robustness.md, "Training runs")."""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, RunError, WriteError
from ..serialization import CONFIG_NAME, RUN_RECORDS, WEIGHTS_NAME

CHECKPOINT = RUN_RECORDS[0]


#: the files a training run writes into its output folder
RUN_FILES = (WEIGHTS_NAME, CONFIG_NAME, "metrics.json", "history.json", CHECKPOINT, "learning_curve.png")


#: the lock file of a folder a run is writing to (removed when the run ends)
LOCK_NAME = ".crystalzoo.lock"


def check_out_dir(out_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> list[str]:
    """Check that a run may write into ``out_dir``; returns the run files already there.

    A folder that holds a run (any of :data:`RUN_FILES`) is refused unless ``overwrite``
    (replace it) or ``resume`` (continue it; needs its checkpoint). A missing or empty folder,
    or one with only other files in it, is fine.

    Example::

        >>> check_out_dir("/tmp/a-new-run")
        []
    """
    if overwrite and resume:
        raise ConfigError("overwrite and resume exclude each other: --resume continues the run in --out, "
                          "--overwrite replaces it; give one of them")
    if not str(out_dir).strip():  # Path("") is the current folder
        raise ConfigError("--out is empty: give the folder the run writes into (e.g. --out runs/band-gap)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; the output of a run is a folder: choose another --out")
    present = ([name for name in RUN_FILES if (out / name).exists()]
               + sorted(p.name for p in out.glob("checkpoint-member*.pt"))) if out.is_dir() else []
    if present and not (overwrite or resume):
        raise RunError(f"{out} already holds a run ({', '.join(present)}); pass --overwrite (overwrite=True) to "
                       "replace it, --resume (resume=True) to continue it, or choose another --out")
    if present and resume and CHECKPOINT not in present:
        raise RunError(f"{out} holds a run ({', '.join(present)}) but no {CHECKPOINT} to resume from; pass "
                       "--overwrite (overwrite=True) to replace it, or choose another --out")
    return present


_claimed: dict[tuple[int, str], int] = {}  # (thread, realpath) → depth of the claims held (finetune → train_model)


_replaced: dict[tuple[int, str], list[str]] = {}  # (thread, realpath) → files of the run that overwrite replaces


def replace_old_run(out_dir: str | os.PathLike) -> None:
    """Delete the files of the earlier run that ``overwrite`` replaces, in a folder this thread
    has claimed: only once the new run's data, split and model are ready, so that a run that
    fails before it starts (a missing file, a misspelt target) leaves the earlier run intact."""
    out = Path(out_dir)
    for name in _replaced.pop((threading.get_ident(), os.path.realpath(out)), []):
        try:
            (out / name).unlink()
        except FileNotFoundError:
            pass


def _lock(path: Path) -> int | None:
    """Take the exclusive lock of a run folder: ``flock`` on ``path``, which the OS releases
    when the process ends however it ends, so a lock left by a dead process never blocks.
    Returns the open descriptor (None where the file system has no locks)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock (documented)
        return None
    while True:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise RunError(f"the lock file {path} is a link or not a regular file; crystalzoo will not write through "
                           "it: remove it, or choose another --out")
        try:  # O_NOFOLLOW: never truncate a file a link points to
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise WriteError(f"cannot create the lock file {path} ({exc}); is the folder read-only, or the lock file "
                             "a link? Choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "it has not written its pid yet"
            os.close(fd)
            raise RunError(f"{path.parent} is in use by another crystalzoo run ({owner}); two runs cannot write "
                           "into one folder: wait for it to end, or choose another --out") from None
        except OSError:  # a file system without flock (some network mounts): go on unlocked
            os.close(fd)
            return None
        try:  # the holder before us removes the file when it ends: lock the file that is there now
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    return fd


@contextmanager
def claim_run_folder(out_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Hold ``out_dir`` for one training run for the length of the ``with`` block: lock it
    against a second writer (:data:`LOCK_NAME`, removed at the end) and check it with
    :func:`check_out_dir`. With ``overwrite``, the earlier run's files are deleted when the new
    run starts training (:func:`replace_old_run`), not before. Nested claims of a folder this
    process already holds pass through.

    Example::

        >>> with claim_run_folder("/tmp/my-run") as out:
        ...     pass  # a second process claiming /tmp/my-run here gets a RunError at once
    """
    if not str(out_dir).strip():
        check_out_dir(out_dir)  # the ConfigError for an empty --out
    out = Path(out_dir)
    key = (threading.get_ident(), os.path.realpath(out))
    if key in _claimed:  # finetune's claim, seen again by train_model: checked there already
        _claimed[key] += 1
        try:
            yield out
        finally:
            _claimed[key] -= 1
        return
    check_out_dir(out, overwrite=overwrite, resume=resume)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create the output folder {out} ({exc}); choose another --out") from None
    fd = _lock(out / LOCK_NAME)
    _claimed[key] = 1
    try:
        present = check_out_dir(out, overwrite=overwrite, resume=resume)  # again, now that we hold the lock
        _replaced[key] = present if overwrite else []  # deleted by replace_old_run, once the new run can start
        yield out
    finally:
        del _claimed[key]
        _replaced.pop(key, None)
        if fd is not None:
            try:
                os.unlink(out / LOCK_NAME)
            except OSError:
                pass
            os.close(fd)
        if created:  # a run that stopped before it wrote anything leaves no empty folder behind
            try:
                out.rmdir()  # only an empty folder
            except OSError:
                pass


def check_not_backbone_folder(out_dir: str | os.PathLike | None, backbone: Any) -> None:
    """:class:`ConfigError` when ``out_dir``, which ``--overwrite`` would clear, is the folder
    of the model ``backbone`` (it would be deleted before or while it is used)."""
    if out_dir is None or not isinstance(backbone, (str, os.PathLike)):
        return
    try:
        same = Path(backbone).is_dir() and Path(backbone).resolve() == Path(out_dir).resolve()
    except OSError:
        return
    if same:
        raise ConfigError(f"--out {out_dir} is the folder of --backbone {backbone}: --overwrite would delete the "
                          "model it fine-tunes; write the new run into another --out")
