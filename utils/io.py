"""Atomic writes and stage manifests.

Every artifact is written to a temporary name beside its destination and renamed into
place, so a crash never leaves a half-written file that a rerun would take as complete.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from utils import layout


def _current_umask() -> int:
    """The process umask (reading it means setting it; it is restored at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


class ArtifactError(ValueError):
    """An intermediate file is truncated, corrupt or of the wrong kind; the message names it and how to remake it."""


# Temporary files of ``atomic_path``: ``.<name>.<random>.tmp<suffix>`` beside their target.
TEMP_GLOB = ".*.tmp*"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success, delete on error.

    A full disk raises an OSError that names ``path`` (the bare one names only the temp file, or nothing).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as error:  # numpy, torch and safetensors report a full disk in their own ways
        if getattr(error, "errno", None) in NO_SPACE or (getattr(error, "errno", None) is None and _nearly_full(path.parent)):
            raise OSError(errno.ENOSPC, f"No space left on the device while writing {path} ({getattr(error, 'strerror', None) or error}); "
                          f"free space under {path.parent} and rerun: finished files are kept") from error
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _nearly_full(folder: Path, margin: int = 1 << 20) -> bool:
    """True when the file system of ``folder`` has less than ``margin`` bytes free: numpy's short writes
    ("N requested and M written") and torch's failed writes carry no errno, so a full disk is recognised
    by its free space."""
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def check_within(paths: list[Path], folder: Path) -> None:
    """Refuse any of ``paths`` that resolves outside ``folder`` (a link inside a stage folder pointing elsewhere), so a
    stage never writes or deletes outside its folder through it; ``folder`` itself may be a link (a data root on
    another disk)."""
    outer = folder.resolve()
    for path in paths:
        if path.exists() or path.is_symlink():
            inner = path.resolve()
            if inner != outer and outer not in inner.parents:
                raise ValueError(f"{path} leads outside {folder} (to {inner}): a stage writes only inside its folder; replace the "
                                 f"link with a folder, or link {folder} itself.")


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temporary files a killed run left in ``directory`` (not recursive); the removed paths.

    Call it only while holding the folder's run lock (``utils.locks.run_lock``), so no live run
    is writing them.
    """
    directory = Path(directory)
    stale = sorted(p for p in directory.glob(TEMP_GLOB) if p.is_file()) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Atomically save one array as ``.npy``."""
    with atomic_path(path, suffix=".tmp.npy") as tmp:
        np.save(tmp, array)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write JSON (indented, keys in insertion order)."""
    write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def read_json(path: str | Path, default: Any = None, remake: str = "delete it and rerun the stage that writes it") -> Any:
    """Read JSON, or return ``default`` when the file does not exist; a corrupt file raises naming itself and ``remake``."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is truncated or not valid JSON ({error}): {remake}.") from None


def json_kind(value: Any) -> str:
    """A JSON value as an error message names it: ``a list of 12 items``, ``an object of 2 keys``, ``null``, ``the number 4``."""
    if isinstance(value, (list, dict)):
        n = len(value)
        return f"a list of {n} item{'s' * (n != 1)}" if isinstance(value, list) else f"an object of {n} key{'s' * (n != 1)}"
    if value is None:
        return "null"
    kind = "boolean" if isinstance(value, bool) else "string" if isinstance(value, str) else "number"
    return f"the {kind} {json.dumps(value)[:40]}"


def check_captions(raw: Any, path: str | Path, remake: str) -> dict[str, str]:
    """``raw`` (a caption file's JSON) as ``{stimulus: caption}``; ArtifactError naming ``path``, what was expected
    and what it holds (the whole file, or the first caption that is not a string)."""
    expected = f"{path}: expected a mapping of stimulus -> caption string"
    if not isinstance(raw, dict):
        raise ArtifactError(f"{expected}, found {json_kind(raw)}: {remake}.")
    bad = next((k for k, v in raw.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise ArtifactError(f"{expected}, found {json_kind(raw[bad])} under key {bad!r}: {remake}.")
    return dict(raw)


def read_captions(path: str | Path, remake: str, default: dict[str, str] | None = None) -> dict[str, str] | None:
    """A captions file ``{stimulus: caption}`` (``default`` when it does not exist), checked by ``check_captions``."""
    raw = read_json(path, default=None, remake=remake)
    return default if raw is None else check_captions(raw, path, remake)


def check_finite(array: np.ndarray, path: str | Path, remake: str) -> np.ndarray:
    """``array`` when every value is finite; else ArtifactError naming the file, the count and ``remake``."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ArtifactError(f"{path} holds {bad} non-finite value(s) (NaN or Inf) of {finite.size}, expected finite numbers: {remake}.")
    return array


def load_npy(path: str | Path, remake: str, mmap: bool = False, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One ``.npy`` artifact; a missing, truncated or wrongly shaped file raises naming it and ``remake``.

    remake: the command (or step) that writes it again, e.g. "rerun `python regress.py ...`".
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Missing {path}: {remake}.")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ArtifactError(f"{path} is truncated or not a .npy file ({error}): {remake}.") from None
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise ArtifactError(f"{path} has shape {tuple(array.shape)}, expected {tuple(shape)}: {remake}.")
    return array


def load_pt(path: str | Path, remake: str) -> Any:
    """A ``torch.save`` artifact (tensors and plain containers only: ``weights_only``); named errors as ``load_npy``."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Missing {path}: {remake}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as error:  # truncated zip, bad magic, unsafe global
        why = str(error).splitlines()[0]
        if "weights only" in why.lower():  # torch's own text goes on to suggest weights_only=False, which would run its code
            why = "it holds objects other than tensors and plain containers, so it is not unpickled: that could run code"
        raise ArtifactError(f"{path} is truncated or not a checkpoint this code wrote ({why}): {remake}.") from None


def is_complete_npy(path: str | Path, shape: tuple[int, ...] | None = None) -> bool:
    """True when ``path`` is a readable ``.npy`` (of ``shape`` when given): resume checks."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError):
        return False
    return shape is None or tuple(array.shape) == tuple(shape)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)``: paths as strings, numpy scalars and arrays as Python values."""
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Cannot write {type(obj).__name__} to JSON")


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (what ``write_json`` then ``read_json`` would give back)."""
    return json.loads(json.dumps(obj, default=json_default))


def git_commit() -> str | None:
    """Commit of the code that runs, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions(names: tuple[str, ...] = ("torch", "numpy", "diffusers", "transformers", "scikit-learn", "himalaya")) -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(directory: str | Path, stage: str, args: Any, inputs: dict[str, Any] | None = None, counts: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write ``<directory>/manifest.json``: flags, versions, commit, inputs, counts."""
    flags = vars(args) if hasattr(args, "__dict__") else dict(args)
    manifest = {
        "stage": stage,
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "flags": flags,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "inputs": inputs or {},
        "counts": counts or {},
        **extra,
    }
    path = layout.manifest_path(directory)
    write_json(path, manifest)
    return path
