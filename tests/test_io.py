"""Atomic writes: nothing half-written on a crash, usual permissions, manifests."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from utils import io


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "a" / "x.npy"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("crash")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_atomic_files_get_the_umask_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        io.save_npy(tmp_path / "x.npy", np.arange(3))
    finally:
        os.umask(mask)
    assert (tmp_path / "x.npy").stat().st_mode & 0o777 == 0o644
    assert np.array_equal(np.load(tmp_path / "x.npy"), np.arange(3))


def test_is_complete_npy_checks_shape_and_truncation(tmp_path):
    path = tmp_path / "x.npy"
    assert not io.is_complete_npy(path)
    io.save_npy(path, np.zeros((4, 5), dtype=np.float32))
    assert io.is_complete_npy(path) and io.is_complete_npy(path, (4, 5))
    assert not io.is_complete_npy(path, (5, 4))
    path.write_bytes(path.read_bytes()[:60])
    assert not io.is_complete_npy(path)


def test_manifest_records_flags_versions_and_counts(tmp_path):
    path = io.write_manifest(tmp_path, "stage", {"seed": 3, "root": tmp_path}, counts={"n": np.int64(2)})
    manifest = json.loads(path.read_text())
    assert manifest["stage"] == "stage" and manifest["flags"]["seed"] == 3
    assert manifest["counts"] == {"n": 2} and "numpy" in manifest["versions"]
