"""Issue 12 for reconstruct_zeroscope: recorded settings, captions that survive a kill, clips that
do not depend on batching or processes, inputs checked before work, refused requests, locks."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reconstruct_zeroscope
from tests.test_reconstruct import FAST, RUN, STIMULI, run, write_predictions
from utils import layout
from utils.cli import run_main
from utils.io import ArtifactError
from utils.locks import RunLockedError
from utils.provenance import SettingsMismatchError

REPO = Path(__file__).resolve().parents[1]
LONGER = ["--steps", "10", "--strength", "0.8"]  # 8 guided steps: enough for batching to show


def frames(root: Path, name: str) -> dict[str, np.ndarray]:
    out = layout.reconstructions_dir(root, name)
    return {s: np.load(layout.reconstruction_frames_path(out, s)) for s in STIMULI}


def test_rerun_with_other_steps_is_refused_and_manifest_stays_true(tmp_path):
    write_predictions(tmp_path, STIMULI)
    out = layout.reconstructions_dir(tmp_path, RUN)
    assert run(tmp_path) == 0
    assert run(tmp_path) == 0  # same settings: resume/skip
    with pytest.raises(SettingsMismatchError, match=r"steps: recorded 4, asked 20.*--overwrite.*--output-run"):
        run(tmp_path, "--steps", "20")
    manifest = json.loads(layout.manifest_path(out).read_text())
    assert manifest["flags"]["steps"] == 4 and manifest["settings"]["steps"] == 4
    assert json.loads(layout.settings_path(out).read_text())["settings"]["steps"] == 4
    assert run(tmp_path, "--steps", "20", "--limit", "1", "--overwrite") == 0  # clears the clips of other settings
    assert sorted(p.name for p in (out / "frames").rglob("*.npy")) == ["0121.npy"]
    assert json.loads(layout.manifest_path(out).read_text())["settings"]["steps"] == 20


def test_killed_run_keeps_every_finished_caption(tmp_path, monkeypatch):
    write_predictions(tmp_path, STIMULI)
    assert run(tmp_path, "--output-run", "whole") == 0
    real_write = reconstruct_zeroscope.write_clip
    calls = []

    def dies_on_second(out_dir, name, clip, fps):
        calls.append(name)
        if len(calls) == 2:
            raise SystemExit("killed")  # the process dies between two clips of one batch
        real_write(out_dir, name, clip, fps)

    monkeypatch.setattr(reconstruct_zeroscope, "write_clip", dies_on_second)
    with pytest.raises(SystemExit):
        run(tmp_path, "--output-run", "killed")
    monkeypatch.setattr(reconstruct_zeroscope, "write_clip", real_write)
    assert run(tmp_path, "--output-run", "killed") == 0
    whole = json.loads(layout.reconstruction_captions_path(layout.reconstructions_dir(tmp_path, "whole")).read_text())
    killed = json.loads(layout.reconstruction_captions_path(layout.reconstructions_dir(tmp_path, "killed")).read_text())
    assert killed == whole and sorted(killed) == sorted(STIMULI)
    for s, clip in frames(tmp_path, "whole").items():
        np.testing.assert_array_equal(frames(tmp_path, "killed")[s], clip)


def test_batch_size_and_resume_give_identical_lossless_frames(tmp_path):
    write_predictions(tmp_path, STIMULI)
    assert run(tmp_path, *LONGER, "--batch-size", "1", "--output-run", "b1") == 0
    assert run(tmp_path, *LONGER, "--batch-size", "3", "--output-run", "b3") == 0
    assert run(tmp_path, *LONGER, "--batch-size", "3", "--output-run", "resumed", "--limit", "1") == 0
    assert run(tmp_path, *LONGER, "--batch-size", "3", "--output-run", "resumed") == 0
    reference = frames(tmp_path, "b1")
    for name in ("b3", "resumed"):
        for s, clip in frames(tmp_path, name).items():
            np.testing.assert_array_equal(clip, reference[s], err_msg=f"{name}/{s}")  # tolerance 0 on CPU float32


def test_truncated_prediction_is_named_before_any_clip(tmp_path):
    write_predictions(tmp_path, STIMULI)
    path = layout.prediction_path(tmp_path, RUN, "z_zeroscope", STIMULI[-1])
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(path))} is truncated.*regress\.py --data-root .*--target z_zeroscope"):
        run(tmp_path)
    assert not (layout.reconstructions_dir(tmp_path, RUN) / "frames").exists()
    write_predictions(tmp_path, STIMULI)
    blip = layout.prediction_path(tmp_path, RUN, "blip", STIMULI[0])
    blip.write_bytes(blip.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(blip))} is truncated.*regress\.py --data-root .*--target blip"):
        run(tmp_path)


def test_requests_that_would_be_ignored_are_refused(tmp_path):
    write_predictions(tmp_path, STIMULI)
    for flag in ("--zeroscope-path", "--blip-path"):
        with pytest.raises(ValueError, match=rf"--preset tiny builds its models in code and would ignore {flag}"):
            run(tmp_path, flag, str(tmp_path))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
            reconstruct_zeroscope.main(["--data-root", str(tmp_path), "--preset", "tiny", "--run", RUN, "--device", "cuda"])
    assert not layout.reconstructions_dir(tmp_path, RUN).exists()


def test_lock_stale_temps_and_ctrl_c(tmp_path, monkeypatch, capsys):
    write_predictions(tmp_path, STIMULI)
    out = layout.reconstructions_dir(tmp_path, RUN)
    out.mkdir(parents=True)
    layout.lock_path(out).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": "reconstruct_zeroscope"}))
    with pytest.raises(RunLockedError):
        run(tmp_path)
    layout.lock_path(out).unlink()
    stale = layout.reconstruction_frames_path(out, "0121").parent / ".0121.npy.x.tmp.npy"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    assert run(tmp_path, "--limit", "1") == 0
    assert not stale.exists() and not layout.lock_path(out).exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reconstruct_zeroscope, "reconstruct", interrupted)
    assert run_main(lambda: run(tmp_path)) == 130
    assert "Interrupted" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not installed")
    write_predictions(tmp_path, STIMULI)
    argv = ["reconstruct_zeroscope.py", "--data-root", str(tmp_path), *FAST, "--predictions", RUN]
    assert reconstruct_zeroscope.main([*argv[1:], "--output-run", "one"]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(port), *argv, "--output-run", "two"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    two = layout.reconstructions_dir(tmp_path, "two")
    assert json.loads(layout.manifest_path(two).read_text())["counts"]["processes"] == 2
    for s, clip in frames(tmp_path, "one").items():
        np.testing.assert_array_equal(frames(tmp_path, "two")[s], clip)
    one_captions = json.loads(layout.reconstruction_captions_path(layout.reconstructions_dir(tmp_path, "one")).read_text())
    assert json.loads(layout.reconstruction_captions_path(two).read_text()) == one_captions
