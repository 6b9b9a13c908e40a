"""train_mbm.py / models.training under faults: refused requests, non-finite losses, kills at any save,
corrupt run files, locks, stale temporary files, Ctrl-C and reruns with other flags (issue 12)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_mbm import log_rows, make_structured, run

import train_mbm
from models import training
from models.mbm import load_mbm
from utils import layout
from utils.cli import run_main
from utils.io import ArtifactError
from utils.locks import RunLockedError, run_lock
from utils.provenance import SettingsMismatchError

ONE = {"subjects": ("1",)}


def run_dir_of(root, name: str):
    return layout.checkpoint_dir(root, "mbm", name)


def same_weights(a, b) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def log_values(run_dir) -> list[tuple[str, str, str]]:
    """log.csv without the timing columns."""
    return [(r["epoch"], r["step"], r["train_loss"], r["val_loss"]) for r in log_rows(run_dir)]


def cli(root, *flags: str) -> subprocess.CompletedProcess:
    """``python train_mbm.py`` on one subject of the tiny preset, in a subprocess."""
    command = [sys.executable, "train_mbm.py", "--data-root", str(root), "--preset", "tiny", "--subjects", "1", "--batch-size", "32", *flags]
    return subprocess.run(command, capture_output=True, text=True, cwd=Path(train_mbm.__file__).parent, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """One subject prepared and an uninterrupted 3-epoch run ``whole`` (the reference of every fault)."""
    root = tmp_path_factory.mktemp("faults")
    make_structured(root, subjects=(1,))
    assert run(root, "--epochs", "3", "--run", "whole", **ONE) == 0
    return root


# ----------------------------------------------------------------------------- requests honoured or refused


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available here"):
        run(tmp_path, "--epochs", "1", "--run", "gpu", "--device", "cuda", **ONE)
    assert not run_dir_of(tmp_path, "gpu").exists()


def test_float16_on_cpu_is_refused_and_bfloat16_is_applied_and_recorded(tmp_path):
    with pytest.raises(ValueError, match="--dtype float16 on --device cpu: fp16 mixed precision needs a CUDA GPU"):
        run(tmp_path, "--epochs", "1", "--run", "half", "--device", "cpu", "--dtype", "float16", **ONE)
    assert not run_dir_of(tmp_path, "half").exists()
    with pytest.raises(ValueError, match="float16"):
        training.autocast_for("float16", "cpu")  # the export of finetune_contrastive refuses it the same way
    make_structured(tmp_path, subjects=(1,))
    # In a subprocess: accelerate keeps one mixed precision per process (its AcceleratorState).
    done = cli(tmp_path, "--epochs", "1", "--run", "bf16", "--device", "cpu", "--dtype", "bfloat16")
    assert done.returncode == 0 and "precision bf16" in done.stdout, done.stdout + done.stderr
    run_dir = run_dir_of(tmp_path, "bf16")
    config = json.loads(layout.config_path(run_dir).read_text())
    manifest = json.loads(layout.manifest_path(run_dir).read_text())
    expected = {"device": "cpu", "mixed_precision": "bf16", "num_processes": 1}
    assert config["ran"] == expected and manifest["ran"] == expected


def test_resume_with_overwrite_is_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match="--resume and --overwrite conflict"):
        run(tmp_path, "--epochs", "1", "--run", "both", "--resume", "--overwrite", **ONE)
    assert not run_dir_of(tmp_path, "both").exists()


# ----------------------------------------------------------------------------- provenance of a finished run


def test_rerun_over_a_finished_run_skips_with_the_same_flags_and_refuses_others(whole, capsys):
    run_dir = run_dir_of(whole, "whole")
    manifest = layout.manifest_path(run_dir).read_bytes()
    settings = json.loads(layout.settings_path(run_dir).read_text())
    assert settings["stage"] == "mbm" and settings["settings"]["lr"] == 3e-3 and settings["settings"]["run"] == "whole"
    capsys.readouterr()
    assert run(whole, "--epochs", "3", "--run", "whole", "--device", "cpu", **ONE) == 0  # --device does not change the outputs
    assert "is complete (same settings)" in capsys.readouterr().out
    with pytest.raises(SettingsMismatchError, match=r"epochs: recorded 3, asked 4; lr: recorded 0.003, asked 0.001.*--overwrite.*another --run"):
        run(whole, "--epochs", "4", "--run", "whole", "--lr", "1e-3", **ONE)
    assert layout.manifest_path(run_dir).read_bytes() == manifest  # never claims flags its outputs were not made with


# ----------------------------------------------------------------------------- non-finite losses


def test_inf_in_the_data_stops_training_naming_epoch_step_and_last_good_checkpoint(tmp_path, monkeypatch):
    """The training loop's own guard: the prepared-data check that refuses Inf at load time is bypassed here
    (tests/test_names_and_errors.py tests that check)."""
    monkeypatch.setattr("utils.prepare.first_nonfinite_row", lambda betas: None)
    make_structured(tmp_path, subjects=(1,))
    assert run(tmp_path, "--epochs", "3", "--run", "inf", "--stop-after-steps", "2", **ONE) == 0
    array = layout.prepared_array_path(tmp_path, "demo", "sub01", "Group41")
    betas = np.load(array)
    betas[5, 17] = np.inf
    np.save(array, betas)
    run_dir = run_dir_of(tmp_path, "inf")
    with pytest.raises(training.NonFiniteLossError, match=r"Non-finite training loss \(nan\) at epoch 1, step 3 .*"
                       r"last good checkpoint: .*last.safetensors with train_state.pt \(step 2, resumable\)"):
        run(tmp_path, "--epochs", "3", "--run", "inf", "--resume", **ONE)
    assert training.read_train_state(run_dir)["step"] == 2 and not layout.manifest_path(run_dir).exists()
    with pytest.raises(training.NonFiniteLossError, match=r"at epoch 1, step 1 .*none was saved yet"):
        run(tmp_path, "--epochs", "1", "--run", "inf_new", **ONE)


def test_the_command_line_exits_non_zero_on_a_non_finite_loss(tmp_path):
    make_structured(tmp_path, subjects=(1,))
    done = cli(tmp_path, "--epochs", "1", "--lr", "1e30")  # the weights blow up: the loss is NaN at the second step
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("error: Non-finite training loss") and "--lr" in last, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Done" not in done.stdout


# ----------------------------------------------------------------------------- a kill at any save resumes exactly


def fail_after(monkeypatch, name: str, calls: int, before: bool = False) -> None:
    """Make ``training.<name>`` raise on its ``calls``-th call: before doing its work, or right after it."""
    original, count = getattr(training, name), {"n": 0}

    def faulty(*args, **kwargs):
        count["n"] += 1
        if before and count["n"] == calls:
            raise KeyboardInterrupt(f"killed before {name}")
        out = original(*args, **kwargs)
        if not before and count["n"] == calls:
            raise KeyboardInterrupt(f"killed after {name}")
        return out

    monkeypatch.setattr(training, name, faulty)


@pytest.mark.parametrize("fault", [
    ("save_training_state", 2, True),  # epoch 2: last.safetensors (and best) written, train_state.pt not
    ("save_rng_state", 2, False),  # epoch 2: rng_state_0.pt written, train_state.pt not
    ("append_log", 2, False),  # epoch 2: its log row written, last/train_state not
    ("save_checkpoint", 3, False),  # epoch 2: last.safetensors written (the 3rd file: last, best, last)
])
def test_a_kill_at_any_save_resumes_exactly(whole, monkeypatch, fault):
    name, calls, before = fault
    run_name = f"kill_{name}"
    fail_after(monkeypatch, name, calls, before)
    with pytest.raises(KeyboardInterrupt):
        run(whole, "--epochs", "3", "--run", run_name, **ONE)
    monkeypatch.undo()
    run_dir = run_dir_of(whole, run_name)
    assert training.run_status(run_dir) == "interrupted" and not layout.lock_path(run_dir).exists()
    assert run(whole, "--epochs", "3", "--run", run_name, "--resume", **ONE) == 0
    ref = run_dir_of(whole, "whole")
    for weights in ("last", "best"):
        assert same_weights(layout.weights_path(ref, weights), layout.weights_path(run_dir, weights)), weights
    assert log_values(ref) == log_values(run_dir)


# ----------------------------------------------------------------------------- corrupt or missing run files


def test_corrupt_run_files_are_named_with_how_to_remake_them(tmp_path):
    make_structured(tmp_path, subjects=(1,))
    assert run(tmp_path, "--epochs", "2", "--run", "bad", "--stop-after-steps", "2", **ONE) == 0
    run_dir = run_dir_of(tmp_path, "bad")
    config = layout.config_path(run_dir)
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match=r"config.json is truncated or not valid JSON.*--overwrite"):
        run(tmp_path, "--epochs", "2", "--run", "bad", "--resume", **ONE)
    config.write_text(text)
    state = layout.train_state_path(run_dir)
    state.write_bytes(state.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=r"train_state.pt is truncated or not a training state.*--overwrite.*another --run"):
        run(tmp_path, "--epochs", "2", "--run", "bad", "--resume", **ONE)
    with pytest.raises(ArtifactError, match="train_state.pt"):  # a plain rerun checks the state too
        run(tmp_path, "--epochs", "2", "--run", "bad", **ONE)
    assert run(tmp_path, "--epochs", "2", "--run", "bad", "--overwrite", **ONE) == 0  # the way on


def test_a_deleted_best_checkpoint_is_named_not_replaced_by_last(whole, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(run_dir_of(whole, "whole"), run_dir)
    layout.weights_path(run_dir, "best").unlink()
    with pytest.raises(FileNotFoundError, match=r"Missing .*best.safetensors.*only last.safetensors.*train_mbm.py --run copy --overwrite"):
        load_mbm(run_dir)
    model, _ = load_mbm(layout.weights_path(run_dir, "last"))  # the last weights, when asked for by name
    assert model.config.num_voxels == 1024


def test_old_train_state_without_weights_still_refuses_a_mismatched_pair(tmp_path):
    make_structured(tmp_path, subjects=(1,))
    assert run(tmp_path, "--epochs", "3", "--run", "old", "--stop-after-steps", "2", **ONE) == 0
    run_dir = run_dir_of(tmp_path, "old")
    state = torch.load(layout.train_state_path(run_dir), weights_only=True)
    del state["model"], state["rng"]
    state["step"] = 1
    torch.save(state, layout.train_state_path(run_dir))
    with pytest.raises(RuntimeError, match="holds step 2 but train_state.pt step 1"):
        run(tmp_path, "--epochs", "3", "--run", "old", "--resume", **ONE)


# ----------------------------------------------------------------------------- locks, temporary files, Ctrl-C


def test_a_live_lock_stops_a_second_copy_and_a_dead_ones_is_taken_over(tmp_path):
    make_structured(tmp_path, subjects=(1,))
    run_dir = run_dir_of(tmp_path, "locked")
    with run_lock(run_dir, "mbm"), pytest.raises(RunLockedError, match="is in use by mbm"):
        run(tmp_path, "--epochs", "1", "--run", "locked", **ONE)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    layout.lock_path(run_dir).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "stage": "mbm"}))
    stale = run_dir / ".last.safetensors.abc123.tmp.safetensors"
    stale.write_bytes(b"half a file")
    assert run(tmp_path, "--epochs", "1", "--run", "locked", **ONE) == 0
    assert not stale.exists() and not layout.lock_path(run_dir).exists()


def test_ctrl_c_ends_with_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    make_structured(tmp_path, subjects=(1,))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "fit", interrupted)
    assert run_main(lambda: run(tmp_path, "--epochs", "1", "--run", "ctrl_c", **ONE)) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("Interrupted") and len(err.splitlines()) == 1
    assert not layout.lock_path(run_dir_of(tmp_path, "ctrl_c")).exists()
    assert "raise SystemExit(run_main(main))" in Path(train_mbm.__file__).read_text()
