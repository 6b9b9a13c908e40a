"""The shared safety layer: checked artifact loaders, run locks, stale temporary files, disk-full
errors, Ctrl-C, and requests that cannot be honoured."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from utils import cli, io, layout, locks


def test_loaders_name_the_file_and_how_to_remake_it(tmp_path):
    path = tmp_path / "sub01.npy"
    with pytest.raises(FileNotFoundError, match=r"Missing .*sub01\.npy: rerun X"):
        io.load_npy(path, "rerun X")
    np.save(path, np.zeros((100, 8), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(io.ArtifactError, match=r"sub01\.npy is truncated .*: rerun X"):
        io.load_npy(path, "rerun X", mmap=True)
    np.save(path, np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(io.ArtifactError, match=r"shape \(3, 2\), expected \(3, 4\)"):
        io.load_npy(path, "rerun X", shape=(3, 4))
    config = tmp_path / "config.json"
    config.write_text('{"model": {"depth": ')
    with pytest.raises(io.ArtifactError, match=r"config\.json is truncated or not valid JSON"):
        io.read_json(config)
    state = tmp_path / "train_state.pt"
    torch.save({"step": 3}, state)
    state.write_bytes(state.read_bytes()[:40])
    with pytest.raises(io.ArtifactError, match=r"train_state\.pt is truncated"):
        io.load_pt(state, "rerun with --overwrite")


def test_disk_full_names_the_target_and_keeps_nothing_half_written(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    with pytest.raises(OSError, match=r"No space left .*writing .*out\.json"):
        io.write_json(tmp_path / "out.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_stale_temps_are_removed(tmp_path):
    (tmp_path / ".sub01.npy.abc123.tmp.npy").write_bytes(b"x")
    (tmp_path / "sub01.npy").write_bytes(b"keep")
    assert [p.name for p in io.remove_stale_temps(tmp_path)] == [".sub01.npy.abc123.tmp.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["sub01.npy"]


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    with locks.run_lock(tmp_path, "stage_a") as held:
        assert held == layout.lock_path(tmp_path)
        with pytest.raises(locks.RunLockedError, match=rf"in use by stage_a \(pid {os.getpid()}"):
            with locks.run_lock(tmp_path, "stage_b"):
                pass
    assert not layout.lock_path(tmp_path).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    layout.lock_path(tmp_path).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "stage": "x"}))
    with locks.run_lock(tmp_path, "stage_b"):
        assert json.loads(layout.lock_path(tmp_path).read_text())["stage"] == "stage_b"


def test_ctrl_c_is_one_line_and_cuda_without_cuda_is_refused(capsys):
    def interrupted() -> int:
        raise KeyboardInterrupt

    assert cli.run_main(interrupted) == 130
    assert capsys.readouterr().err.strip().startswith("Interrupted:")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
            cli.resolve_device("cuda")
    with pytest.raises(ValueError, match="--dtype float16: regression runs in float32"):
        cli.check_dtype("float16", ("float32",), "regression")
