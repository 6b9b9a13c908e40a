"""Issue 12 for the prepare step: non-finite data, provenance, locks, stale temporary files,
subject folders, corrupt files named, and the CLI's failures, flags and Ctrl-C."""
from __future__ import annotations

import json
import os
import pickle
import runpy
import socket
import subprocess
import sys

import numpy as np
import pytest

import download_data
from tests.test_prepare import _demo_data, _write_pickle
from utils import layout, prepare
from utils.datasets import DEMO, find_subject_folder
from utils.indiv import subject_indiv_dir, write_indiv, write_prepared_from_indiv
from utils.io import ArtifactError
from utils.locks import RunLockedError
from utils.provenance import SettingsMismatchError

TINY = ["--n-train", "6", "--n-test", "2", "--size", "32", "--n-frames", "8"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """A tiny demo with 2 subjects, made once through the CLI (tests copy it before changing it)."""
    root = tmp_path_factory.mktemp("demo12")
    assert download_data.main(["--data-root", str(root), *TINY]) == 0
    return root


def _copy(demo_root, tmp_path):
    import shutil

    shutil.copytree(demo_root, tmp_path / "d")
    return tmp_path / "d"


def _subject_dir(root, subject=1, folder=None):
    return layout.betas_dir(root, "demo", folder or f"sub{subject:02d}")


# ----------------------------------------------------------------------------- non-finite data


def test_inf_trials_are_counted_and_dropped_or_zeroed(tmp_path):
    data = _demo_data()
    data["train_data_allvoxel"][0, 1, 5] = np.inf
    data["train_data_allvoxel"][2, 0, 9] = -np.inf
    data["test_data_allvoxel"][1, 4, 3] = 1e39  # beyond float32: Inf once stored
    data["test_data_allvoxel"][0, 2, 0] = np.nan
    _write_pickle(tmp_path, "demo", 1, data)
    dropped = prepare.prepare_subject(tmp_path, "demo", 1)
    assert dropped["inf_trials"] == 3 and dropped["nan_trials"] == 1 and dropped["dropped_trials"] == 4
    assert dropped["inf_trials_by_split"] == {"train": 2, "test": 1} and dropped["nan_trials_by_split"] == {"train": 0, "test": 1}
    assert "3 Inf trial(s), 1 NaN trial(s) -> policy 'drop'" in prepare.summary_text(dropped)
    betas = prepare.load_prepared(tmp_path, "demo", 1).betas
    assert betas.shape == (31, 13156) and np.isfinite(betas).all()

    zeroed = prepare.prepare_subject(tmp_path, "demo", 1, overwrite=True, nan_policy="zero")
    assert zeroed["inf_trials"] == 3 and zeroed["dropped_trials"] == 0
    betas = prepare.load_prepared(tmp_path, "demo", 1).betas
    assert betas.shape == (35, 13156) and np.isfinite(betas).all() and betas[1, 5] == 0 and betas[6, 9] == 0


def test_a_split_left_empty_is_warned_and_recorded(demo_root, tmp_path, capsys):
    root = _copy(demo_root, tmp_path)
    path = layout.pickle_path(root, "demo", "sub01", "Group41", DEMO.suffix)
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    data["test_data_allvoxel"][:, :, 0] = np.nan  # every test trial
    path.write_bytes(pickle.dumps(data, protocol=4))
    assert download_data.main(["--data-root", str(root), "--prepare", "--subjects", "1"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: demo sub01 has no test trial left: all 20 of its trials are non-finite (20 with NaN, 0 with Inf)" in out
    summary = json.loads(layout.prepared_summary_path(root, "demo", "sub01", "Group41").read_text())
    assert summary["trials"] == {"train": 18, "test": 0} and len(summary["warnings"]) == 1
    assert "no test trial left" in summary["warnings"][0]


# ----------------------------------------------------------------------------- provenance


def test_rerun_with_other_settings_refuses_and_overwrite_redoes(tmp_path):
    _write_pickle(tmp_path, "demo", 1, _demo_data())
    first = prepare.prepare_subject(tmp_path, "demo", 1)
    settings = first["settings"]
    assert settings["roi_set"] == "Group41" and settings["nan_policy"] == "drop" and settings["prepare_version"] == prepare.PREPARE_VERSION
    assert settings["source"].startswith("prepared_allvoxel_pkl/") and len(settings["source_sha256"]) == 64 and settings["source_size"] > 0
    assert prepare.prepare_subject(tmp_path, "demo", 1)["skipped"]

    with pytest.raises(SettingsMismatchError, match=r"nan_policy: recorded 'drop', asked 'zero'.*--nan-policy zero --overwrite"):
        prepare.prepare_subject(tmp_path, "demo", 1, nan_policy="zero")
    assert prepare.load_prepared(tmp_path, "demo", 1).betas.shape == (35, 13156)  # left as it was

    _write_pickle(tmp_path, "demo", 1, _demo_data(seed=1))  # same size, other values
    with pytest.raises(SettingsMismatchError, match="source_sha256: recorded"):
        prepare.prepare_subject(tmp_path, "demo", 1)
    assert not prepare.prepare_subject(tmp_path, "demo", 1, overwrite=True)["skipped"]
    assert prepare.prepare_subject(tmp_path, "demo", 1)["skipped"]


def test_identical_source_rewritten_still_skips_and_a_deleted_source_is_not_needed(tmp_path):
    data = _demo_data()
    path = _write_pickle(tmp_path, "demo", 1, data)
    prepare.prepare_subject(tmp_path, "demo", 1)
    os.utime(path, ns=(1, 1))  # a new mtime: hashed again, same content
    assert prepare.prepare_subject(tmp_path, "demo", 1)["skipped"]
    path.unlink()  # prepared, then the big pickle deleted to save space
    assert prepare.prepare_subject(tmp_path, "demo", 1)["skipped"]
    with pytest.raises(FileNotFoundError, match="Missing pickle"):
        prepare.prepare_subject(tmp_path, "demo", 1, overwrite=True)


def test_a_summary_without_settings_is_refused(tmp_path):
    _write_pickle(tmp_path, "demo", 1, _demo_data())
    prepare.prepare_subject(tmp_path, "demo", 1)
    summary_path = layout.prepared_summary_path(tmp_path, "demo", "sub01", "Group41")
    old = json.loads(summary_path.read_text())
    del old["settings"]
    summary_path.write_text(json.dumps(old))
    with pytest.raises(SettingsMismatchError, match=r"no record of the settings.*--prepare --overwrite"):
        prepare.prepare_subject(tmp_path, "demo", 1)


def test_from_indiv_records_its_folder_and_refuses_a_pickle_preparation(tmp_path):
    _write_pickle(tmp_path, "demo", 1, _demo_data())
    prepared = prepare.prepare_subject(tmp_path, "demo", 1)
    write_indiv(prepare.load_prepared(tmp_path, "demo", 1), subject_indiv_dir(tmp_path, "demo", 1), progress=False)
    annotations = {f"{i:04d}": {"set": "train" if i <= 5 else "test"} for i in range(1, 8)}
    layout.annotations_path(tmp_path, "demo").parent.mkdir(parents=True, exist_ok=True)
    layout.annotations_path(tmp_path, "demo").write_text(json.dumps(annotations))
    with pytest.raises(SettingsMismatchError, match=r"source: recorded 'prepared_allvoxel_pkl/.*asked 'indiv_npys/"):
        write_prepared_from_indiv(tmp_path, "demo", 1)
    rebuilt = write_prepared_from_indiv(tmp_path, "demo", 1, overwrite=True)
    assert rebuilt["settings"]["source_files"] == 35 and rebuilt["shape"] == prepared["shape"]
    assert write_prepared_from_indiv(tmp_path, "demo", 1)["skipped"]


# ----------------------------------------------------------------------------- locks and stale temporary files


def test_stale_temporary_files_of_a_killed_prepare_are_removed(tmp_path):
    _write_pickle(tmp_path, "demo", 1, _demo_data())
    stale = _subject_dir(tmp_path) / ".Group41.npy.k1ll3d.tmp.npy"
    stale.write_bytes(b"\x93NUMPY half written")
    prepare.prepare_subject(tmp_path, "demo", 1)
    assert not stale.exists()
    assert not [p for p in _subject_dir(tmp_path).iterdir() if p.name.startswith(".")]  # no lock left either


def _lock(tmp_path, pid):
    layout.lock_path(_subject_dir(tmp_path)).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "stage": "prepare"}))


def test_a_live_lock_stops_a_second_prepare_and_a_stale_one_is_taken_over(tmp_path):
    _write_pickle(tmp_path, "demo", 1, _demo_data())
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path, holder.pid)
        with pytest.raises(RunLockedError, match=rf"in use by prepare \(pid {holder.pid}"):
            prepare.prepare_subject(tmp_path, "demo", 1)
        assert not prepare.is_prepared(tmp_path, "demo", 1)
    finally:
        holder.kill()
        holder.wait()
    _lock(tmp_path, holder.pid)  # the holder is dead now: its lock is stale
    assert not prepare.prepare_subject(tmp_path, "demo", 1)["skipped"]
    assert not layout.lock_path(_subject_dir(tmp_path)).exists()


# ----------------------------------------------------------------------------- subject folders


def test_an_empty_subnn_does_not_hide_the_sub_nn_holding_the_pickle(tmp_path):
    (_subject_dir(tmp_path) / "prepared_allvoxel_pkl").mkdir(parents=True)  # empty sub01/
    _write_pickle(tmp_path, "demo", 1, _demo_data(), folder="sub-01")
    assert find_subject_folder(tmp_path, "demo", 1) == "sub-01"
    summary = prepare.prepare_subject(tmp_path, "demo", 1)
    assert summary["folder"] == "sub-01" and "demo sub01 (folder sub-01/): prepared" in prepare.summary_text(summary)
    assert layout.prepared_array_path(tmp_path, "demo", "sub-01", "Group41").exists()
    assert prepare.load_prepared(tmp_path, "demo", 1).betas.shape == (35, 13156)


def test_two_subject_folders_holding_data_is_an_error_naming_both(tmp_path, capsys):
    _write_pickle(tmp_path, "demo", 1, _demo_data())
    _write_pickle(tmp_path, "demo", 1, _demo_data(), folder="sub-01")
    with pytest.raises(ValueError, match=r"two folders holding data, .*sub01 and .*sub-01"):
        find_subject_folder(tmp_path, "demo", 1)
    assert download_data.main(["--data-root", str(tmp_path), "--prepare"]) == 1
    assert "two folders holding data" in capsys.readouterr().err


# ----------------------------------------------------------------------------- corrupt files are named


def test_corrupt_prepared_files_are_named_with_the_command_that_remakes_them(tmp_path):
    _write_pickle(tmp_path, "demo", 1, _demo_data())
    prepare.prepare_subject(tmp_path, "demo", 1)
    array, trials, summary = (f(tmp_path, "demo", "sub01", "Group41") for f in
                              (layout.prepared_array_path, layout.prepared_trials_path, layout.prepared_summary_path))
    remake = f"python download_data.py --dataset demo --data-root {tmp_path} --subjects 1 --prepare --overwrite"
    good = {p: p.read_bytes() for p in (array, trials, summary)}
    for path in (array, trials, summary):
        path.write_bytes(good[path][: len(good[path]) // 2])
        with pytest.raises(ArtifactError) as info:
            prepare.load_prepared(tmp_path, "demo", 1)
        assert str(path) in str(info.value) and remake in str(info.value)
        assert not prepare.is_prepared(tmp_path, "demo", 1)  # so a rerun of prepare redoes it
        path.write_bytes(good[path])


def test_a_truncated_pickle_names_itself_and_the_command(tmp_path):
    path = _write_pickle(tmp_path, "bmd", 1, _demo_data())
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=rf"truncated or not a pickle .*delete it and run `python download_data.py --dataset bmd --data-root {tmp_path} --subjects 1`") as info:
        prepare.prepare_subject(tmp_path, "bmd", 1)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- the CLI


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_an_unsafe_pickle_in_one_subject_does_not_stop_the_others(tmp_path, capsys):
    root = tmp_path / "d"
    assert download_data.main(["--data-root", str(root), *TINY, "--n-subjects", "3"]) == 0
    evil = layout.pickle_path(root, "demo", "sub01", "Group41", DEMO.suffix)
    evil.write_bytes(pickle.dumps({"train_data_allvoxel": _Evil()}))
    assert download_data.main(["--data-root", str(root), "--prepare"]) == 1
    captured = capsys.readouterr()
    assert "demo sub02: prepared" in captured.out and "demo sub03: prepared" in captured.out
    assert "2 subject(s) done, 1 failed" in captured.out
    assert f"failed demo sub01 ({evil}): UnsafePickleError" in captured.err and "posix.system" in captured.err
    assert prepare.is_prepared(root, "demo", 2) and prepare.is_prepared(root, "demo", 3)


def test_a_demo_subject_beyond_those_generated_names_the_command_that_makes_it(demo_root, capsys):
    assert download_data.main(["--data-root", str(demo_root), "--prepare", "--subjects", "99"]) == 2
    err = capsys.readouterr().err
    assert "has subjects 1..2 as generated" in err
    assert f"--dataset demo --data-root {demo_root} --n-subjects 99 --n-train 6 --n-test 2 --size 32 --n-frames 8" in err
    assert "--overwrite" in err
    assert not prepare.is_prepared(demo_root, "demo", 1)  # refused before any work


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prepare", "--from-indiv"], "--prepare and --from-indiv both write"),
        (["--prepare", "--what", "stimuli"], "--what only apply to downloading a real dataset, and the conversions download nothing"),
        (["--timeout", "5"], "the demo is synthesised offline"),
        (["--dataset", "bmd", "--n-subjects", "3"], "--n-subjects only apply to synthesising the demo, and --dataset bmd is not the demo"),
        (["--prepare", "--n-train", "10"], "the conversions read the demo as it was made"),
        (["--nan-policy", "zero"], "--nan-policy only applies with --prepare or --from-indiv"),
        (["--write-indiv", "--nan-policy", "zero"], "--nan-policy only applies with --prepare or --from-indiv"),
        (["--dataset", "bmd", "--retries", "-1"], "--retries must be >= 0"),
    ],
)
def test_conflicting_flags_fail_before_work(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        download_data.main(["--data-root", str(tmp_path), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_ctrl_c_ends_with_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    _write_pickle(tmp_path, "demo", 1, _demo_data())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "prepare_subject", interrupted)
    monkeypatch.setattr(sys, "argv", ["download_data.py", "--data-root", str(tmp_path), "--prepare", "--subjects", "1"])
    monkeypatch.setitem(sys.modules, "utils.prepare", prepare)
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(download_data.__file__, run_name="__main__")
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "Interrupted" in err and "Traceback" not in err
