"""Fault injection: every stage killed (SIGKILL) at 60% of its uninterrupted duration (or less, see KILL_AT), then rerun, equals an uninterrupted run.

One small demo pipeline is run without interruption as the reference. Then, for each stage, its
outputs are removed from a copy of that data root, the stage is started in a subprocess and killed
with SIGKILL at fractions of its uninterrupted duration, rerun to completion (the runner adds
``--resume`` where a training run was interrupted), and its outputs are compared with the
reference's: every array equal, every caption kept, no temporary file or lock left behind.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from utils import layout

REPO = Path(__file__).resolve().parents[1]
RUN = "fi"
DEMO = "download_data=--n-subjects 1 --n-train 24 --n-test 4 --size 32 --n-frames 8"  # one argv item: STAGE=ARGS
# Fractions of the stage's uninterrupted duration (interpreter start included) at which it is killed, tried in turn until
# a kill lands: the other test worker's load changes how long a stage takes, so a stage can finish before 60%.
KILL_AT = (0.6, 0.45, 0.3)
# What each stage writes, relative to the data root (the runner names the runs after RUN).
OUTPUTS = {
    "prepare": ["betas_cifti_demo/sub01/Group41.npy", "betas_cifti_demo/sub01/Group41_trials.csv", "betas_cifti_demo/sub01/Group41_prepared.json"],
    "extract_targets_zeroscope": ["target_vectors_demo/z_zeroscope"],
    "extract_targets_blip": ["target_vectors_demo/blip", "target_vectors_demo/clip", "target_vectors_demo/clip_frames",
                             "target_vectors_demo/clip_text", "target_vectors_demo/captions.json"],
    "train_mbm": [f"checkpoints/mbm/{RUN}"],
    "finetune_contrastive": [f"checkpoints/contrastive/{RUN}_clip", f"embeddings/{RUN}_clip"],
    "regress": [f"checkpoints/regress/{RUN}", f"predictions/{RUN}"],
    "reconstruct_zeroscope": [f"reconstructions/{RUN}"],
    "evaluate": [f"evaluation/{RUN}"],
}


def runner(root: Path, *stages: str) -> list[str]:
    """The pipeline command for ``stages`` on ``root`` (tiny preset, small demo, one thread)."""
    return [sys.executable, str(REPO / "run_pipeline.py"), "--data-root", str(root), "--run", RUN, "--stages", *stages,
            "--stage-args", DEMO, "--subjects", "1", "--device", "cpu", "--preset", "tiny", "--no-oracles"]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_to_end(root: Path, *stages: str) -> float:
    """Run ``stages`` to completion; its wall time in seconds (raises with the output on failure)."""
    start = time.perf_counter()
    proc = subprocess.run(runner(root, *stages), cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return time.perf_counter() - start


def kill_after(root: Path, stage: str, seconds: float) -> bool:
    """Start ``stage`` and SIGKILL it (and its children) after ``seconds``; False when it had finished by then."""
    proc = subprocess.Popen(runner(root, stage), cwd=REPO, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True
    return False


def kill_mid_run(root: Path, stage: str, duration: float) -> float | None:
    """SIGKILL ``stage`` at the first fraction of KILL_AT of ``duration`` at which it still runs; that fraction, or None
    when it finished first every time (its outputs are removed before each new try)."""
    for fraction in KILL_AT:
        if kill_after(root, stage, fraction * duration):
            return fraction
        remove_outputs(root, stage)
    return None


def remove_outputs(root: Path, stage: str) -> None:
    for rel in OUTPUTS[stage]:
        path = root / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def files_under(root: Path, stage: str) -> dict[str, Path]:
    """Every file a stage wrote, keyed by its path relative to the data root."""
    out = {}
    for rel in OUTPUTS[stage]:
        path = root / rel
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            out[str(file.relative_to(root))] = file
    return out


def compare(reference: Path, resumed: Path, stage: str) -> None:
    """Arrays equal, captions kept, the same files, and nothing temporary or locked left behind."""
    ref, got = files_under(reference, stage), files_under(resumed, stage)
    leftovers = [k for k in got if Path(k).name.startswith(".") and (".tmp" in k or k.endswith(".lock"))]
    assert not leftovers, f"{stage}: left behind {leftovers}"
    assert set(got) == set(ref), f"{stage}: files differ: missing {sorted(set(ref) - set(got))[:5]}, extra {sorted(set(got) - set(ref))[:5]}"
    for key, path in ref.items():
        if path.suffix == ".npy":
            np.testing.assert_array_equal(np.load(got[key]), np.load(path), err_msg=f"{stage}: {key}")
        elif path.name == "captions.json":
            assert json.loads(got[key].read_text()) == json.loads(path.read_text()), f"{stage}: {key}"
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            a, b = load_file(str(path)), load_file(str(got[key]))
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), f"{stage}: {key}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """An uninterrupted small demo run, and each stage's duration."""
    root = tmp_path_factory.mktemp("fault") / "reference"
    durations = {"download_data": run_to_end(root, "download_data")}
    for stage in OUTPUTS:
        durations[stage] = run_to_end(root, stage)
    return root, durations


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(OUTPUTS))
def test_stage_killed_and_rerun_equals_uninterrupted(stage: str, reference, tmp_path):
    root, durations = reference
    work = tmp_path / "data"
    shutil.copytree(root, work)
    remove_outputs(work, stage)
    assert kill_mid_run(work, stage, durations[stage]) is not None, f"{stage} finished before every kill ({KILL_AT} x {durations[stage]:.1f} s)"
    run_to_end(work, stage)
    compare(root, work, stage)
    assert not list(work.rglob(layout.lock_path(".").name)), f"{stage}: a lock is left behind"
    assert not list(work.rglob(".*.tmp*")), f"{stage}: temporary files are left behind"
