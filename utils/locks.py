"""One run at a time per output folder: a lock file that a dead process's run gives up.

``run_lock(directory, stage)`` creates ``<dir>/.lock`` (pid, host, stage) atomically. A second
copy of the stage on the same outputs stops with a message naming the holder; a lock left by
a process that no longer runs on this host is taken over (it was killed). Under a multi-process
launcher only rank 0 locks: the other ranks work under its lock.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from utils import layout


class RunLockedError(RuntimeError):
    """Another live process holds the folder's run lock."""


def _alive(pid: int) -> bool:
    """True when a process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 otherwise)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


def _holder(path: Path) -> dict | None:
    """The lock file's record, or None when it is unreadable (a lock half-written by a killed process)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _try_create(path: Path, record: dict) -> bool:
    """Create the lock file exclusively with ``record``; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    return True


@contextlib.contextmanager
def run_lock(directory: str | Path, stage: str) -> Iterator[Path | None]:
    """Hold ``<directory>/.lock`` for the block (rank 0 only); raise ``RunLockedError`` when a live process holds it."""
    if _rank() != 0:
        yield None
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = layout.lock_path(directory)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage}
    for _ in range(2):
        if _try_create(path, record):
            break
        holder = _holder(path)
        same_host = holder is not None and holder.get("host") == record["host"]
        if holder is not None and (not same_host or _alive(int(holder.get("pid", -1)))):
            raise RunLockedError(
                f"{directory} is in use by {holder.get('stage')} (pid {holder.get('pid')} on {holder.get('host')}): wait for it "
                f"to finish, or delete {path} if that process is gone."
            )
        path.unlink(missing_ok=True)  # a stale lock of a killed process: take it over
    else:
        raise RunLockedError(f"Could not take the lock {path}: another process keeps creating it.")
    try:
        yield path
    finally:
        if _holder(path) == record:
            path.unlink(missing_ok=True)
