"""One run at a time per output folder: a lock file that a dead process's run gives up.

``run_lock(directory, stage)`` creates ``<dir>/.lock`` (pid, host, stage) atomically. A second
copy of the stage on the same outputs stops with a message naming the holder; a lock left by
a process that no longer runs on this host is taken over (it was killed). Under a multi-process
launcher only rank 0 locks: the other ranks work under its lock.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from utils import layout


class RunLockedError(RuntimeError):
    """Another live process holds the folder's run lock."""


# errno values of a folder that refuses new files: no permission, or a read-only file system.
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


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
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable, not JSON, or not even text
        return None
    return record if isinstance(record, dict) else None


def _try_create(path: Path, record: dict) -> bool:
    """Create the lock file exclusively with ``record``; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    return True


def _missing_folders(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in [directory, *directory.parents]:
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders (deepest first) that are still empty: those a failed run created and left bare."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def run_lock(directory: str | Path, stage: str) -> Iterator[Path | None]:
    """Hold ``<directory>/.lock`` for the block (rank 0 only); raise ``RunLockedError`` when a live process holds it.

    Folders the run creates are removed again when the block fails and leaves them empty. An existing folder
    that refuses new files (a read-only data root) is used without a lock, with a note: finished work is
    still found and skipped, and anything left to write fails naming the path.
    """
    if _rank() != 0:
        yield None
        return
    directory = Path(directory)
    created = _missing_folders(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(error.errno, f"Cannot create {directory} ({error.strerror}): the data root must be writable to run {stage} there") from None
    path = _take(directory, stage)
    if path is None:
        print(f"note: {directory} is not writable: no run lock taken; finished work is skipped, and writing anything fails", file=sys.stderr)
    try:
        yield path
    except BaseException:
        _release(path)
        _remove_if_empty(created)
        raise
    _release(path)


def _take(directory: Path, stage: str) -> Path | None:
    """Create ``<directory>/.lock`` (taking over a dead process's lock); None when the folder refuses new files."""
    path = layout.lock_path(directory)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage}
    for _ in range(2):
        try:
            if _try_create(path, record):
                return path
        except OSError as error:
            if error.errno in READ_ONLY:
                return None
            raise
        holder = _holder(path)
        same_host = holder is not None and holder.get("host") == record["host"]
        if holder is not None and (not same_host or _alive(int(holder.get("pid", -1)))):
            raise RunLockedError(
                f"{directory} is in use by {holder.get('stage')} (pid {holder.get('pid')} on {holder.get('host')}): wait for it "
                f"to finish, or delete {path} if that process is gone."
            )
        path.unlink(missing_ok=True)  # a stale lock of a killed process: take it over
    raise RunLockedError(f"Could not take the lock {path}: another process keeps creating it.")


def _release(path: Path | None) -> None:
    """Remove the lock ``path`` when this process still holds it."""
    holder = _holder(path) if path is not None else None
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
