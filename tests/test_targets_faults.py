"""Issue 12 for target extraction: bad inputs and faults are named, refused or survived (tiny preset)."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import extract_targets_blip
import extract_targets_zeroscope
from models import targets, zoo
from utils import layout
from utils.cli import run_main
from utils.io import ArtifactError, read_json
from utils.locks import RunLockedError
from utils.synthetic import make_demo
from utils.video import write_mp4

DEMO_ARGS = ["--dataset", "demo", "--preset", "tiny", "--no-progress", "--workers", "1", "--size", "32"]
BLIP_ARGS = ["--dataset", "demo", "--preset", "tiny", "--no-progress", "--workers", "1", "--caption-beams", "1"]


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo_template")
    make_demo(root, n_subjects=1, n_train=4, n_test=2, size=32, n_frames=16, fps=8)
    return root


@pytest.fixture
def demo_root(demo_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(demo_template / "stimuli_demo", root / "stimuli_demo")
    shutil.copytree(demo_template / "metadata_demo", root / "metadata_demo")
    return root


def video(root: Path, stim: str) -> Path:
    return root / "stimuli_demo" / "mp4" / f"{stim}.mp4"


def z_dir(root: Path) -> Path:
    return layout.targets_dir(root, "demo", "z_zeroscope")


def zeroscope(root: Path, *extra: str) -> int:
    return extract_targets_zeroscope.main(["--data-root", str(root), *DEMO_ARGS, *extra])


def test_short_video_is_warned_once_allowed_and_recorded(demo_root: Path, capsys: pytest.CaptureFixture) -> None:
    frames = np.full((5, 32, 32, 3), 120, dtype=np.uint8)
    write_mp4(video(demo_root, "0002"), frames, 8)
    assert zeroscope(demo_root) == 0  # allowed: the latents repeat frames, as the original's
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and "0002.mp4 has 5 frames, fewer than the 15 sampled" in out
    manifest = read_json(layout.manifest_path(z_dir(demo_root)))
    assert manifest["short_videos"] == {"0002": 5} and manifest["counts"]["short"] == 1
    assert np.load(z_dir(demo_root) / "0002.npy").shape == (15, 4, 4, 4)
    assert zeroscope(demo_root) == 0  # all skipped: the record stays
    assert read_json(layout.manifest_path(z_dir(demo_root)))["short_videos"] == {"0002": 5}


def test_manifest_keeps_earlier_failures_until_written(demo_root: Path, demo_template: Path) -> None:
    video(demo_root, "0003").write_bytes(b"not a video")
    assert zeroscope(demo_root, "--stimuli", "0003") == 1
    assert zeroscope(demo_root, "--stimuli", "0001") == 0
    failed = read_json(layout.manifest_path(z_dir(demo_root)))["failed"]
    assert list(failed) == ["0003"] and "0003.mp4" in failed["0003"]
    shutil.copy(video(demo_template, "0003"), video(demo_root, "0003"))
    assert zeroscope(demo_root) == 0
    assert read_json(layout.manifest_path(z_dir(demo_root)))["failed"] == {}


def test_missing_videos_make_one_line_with_the_fetch_command(demo_root: Path, capsys: pytest.CaptureFixture) -> None:
    for stim in ("0002", "0003", "0004", "0005"):
        video(demo_root, stim).unlink()
    assert zeroscope(demo_root) == 1  # as today: not every asked target was written
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "MISSING" in line or "does not exist" in line]
    assert lines == [
        f"MISSING 4 videos in {video(demo_root, '0002').parent} (0002, 0003, 0004, 0005): "
        f"fetch them with `python download_data.py --dataset demo --data-root {demo_root} --what stimuli`, then rerun"
    ]
    manifest = read_json(layout.manifest_path(z_dir(demo_root)))
    assert sorted(manifest["failed"]) == ["0002", "0003", "0004", "0005"] and manifest["counts"]["missing"] == 4
    assert sorted(p.stem for p in z_dir(demo_root).glob("*.npy")) == ["0001", "0006"]


def test_missing_line_shows_the_first_few() -> None:
    missing = {f"{i:04d}": f"/d/stimuli_bmd/mp4/{i:04d}.mp4" for i in range(1, 1093)}
    line = targets.missing_line(missing, targets.fetch_command("bmd"))
    assert line.startswith("MISSING 1092 videos in /d/stimuli_bmd/mp4 (0001, 0002, 0003, 0004, 0005, ...)")
    assert line.endswith("`python download_data.py --dataset bmd --what stimuli`, then rerun")


def test_not_available_hints_name_the_running_scripts_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(zoo.ModelNotAvailableError) as info:
        zoo.load_clip("default", model_path=missing, flag="--clip-path")
    assert "drop --clip-path" in str(info.value) and "--model-path" not in str(info.value)
    with pytest.raises(zoo.ModelNotAvailableError, match="drop --model-path"):
        zoo.load_blip("default", model_path=missing)  # the default wording
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(zoo.ModelNotAvailableError) as info:
        zoo.load_blip("default", flag="--blip-path")  # as reconstruct_zeroscope.py names it
    assert "pass --blip-path DIR" in str(info.value) and "--model-path" not in str(info.value)


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        (extract_targets_zeroscope, ["--model-path", "/models/zeroscope"]),
        (extract_targets_blip, ["--model-path", "/models/blip"]),
        (extract_targets_blip, ["--clip-path", "/models/clip"]),
    ],
)
def test_tiny_preset_with_a_model_path_is_refused_before_work(demo_root: Path, module, extra: list[str]) -> None:
    with pytest.raises(ValueError, match=f"--preset tiny builds its models in code and would ignore {extra[0]} {extra[1]}"):
        module.main(["--data-root", str(demo_root), "--dataset", "demo", "--preset", "tiny", *extra])
    assert not (demo_root / "target_vectors_demo").exists()


@pytest.mark.parametrize("module", [extract_targets_zeroscope, extract_targets_blip])
def test_cuda_without_cuda_is_refused_before_work(demo_root: Path, module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
        module.main(["--data-root", str(demo_root), "--dataset", "demo", "--preset", "tiny", "--device", "cuda"])
    assert not (demo_root / "target_vectors_demo").exists()


def test_every_dtype_is_applied_and_recorded_others_refused(demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage casts its models to any --dtype (even on CPU) and records the dtype that ran; a
    dtype outside the choices is a parse error."""
    seen = []
    real = targets.vae_latents

    def spy(vae, *args, **kwargs):
        seen.append(next(vae.parameters()).dtype)
        return real(vae, *args, **kwargs)

    monkeypatch.setattr(targets, "vae_latents", spy)
    assert zeroscope(demo_root, "--dtype", "bfloat16", "--limit", "1") == 0
    assert seen == [torch.bfloat16]
    assert read_json(layout.manifest_path(z_dir(demo_root)))["ran"] == {"device": "cpu", "dtype": "bfloat16"}
    with pytest.raises(SystemExit):
        zeroscope(demo_root, "--dtype", "float64")


def test_a_live_lock_refuses_a_second_copy_and_a_dead_ones_lock_and_temps_are_cleaned(demo_root: Path) -> None:
    folder = z_dir(demo_root)
    folder.mkdir(parents=True)
    lock = layout.lock_path(folder)
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": "extract_targets_zeroscope"}))
    with pytest.raises(RunLockedError, match="in use by extract_targets_zeroscope"):
        zeroscope(demo_root)
    assert not list(folder.glob("*.npy"))
    dead = 2**22 + 12345  # above the default pid_max: no such process
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "stage": "extract_targets_zeroscope"}))
    stale = folder / ".0001.npy.k1ll3d.tmp.npy"
    stale.write_bytes(b"half")
    assert zeroscope(demo_root) == 0
    assert not stale.exists() and not lock.exists()
    assert len(list(folder.glob("*.npy"))) == 6


def test_blip_locks_every_folder_it_writes(demo_root: Path) -> None:
    folder = layout.targets_dir(demo_root, "demo", "clip_frames")
    folder.mkdir(parents=True)
    layout.lock_path(folder).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": "extract_targets_blip"}))
    with pytest.raises(RunLockedError):
        extract_targets_blip.main(["--data-root", str(demo_root), *BLIP_ARGS])
    assert not layout.captions_path(demo_root, "demo").exists()
    assert not layout.lock_path(layout.targets_dir(demo_root, "demo", "blip")).exists()  # the locks taken were released


def test_ctrl_c_ends_with_one_line_and_releases_the_lock(
    demo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(targets, "vae_latents", interrupted)
    assert run_main(lambda: zeroscope(demo_root)) == 130
    err = capsys.readouterr().err
    assert "Interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not layout.lock_path(z_dir(demo_root)).exists()
    assert not [p for p in z_dir(demo_root).iterdir() if ".tmp" in p.name]


def test_corrupt_annotations_are_named_before_work(demo_root: Path) -> None:
    notes = layout.annotations_path(demo_root, "demo")
    notes.write_text(notes.read_text()[:50])
    with pytest.raises(ArtifactError, match=rf"{notes} is truncated or not valid JSON .*`python download_data.py --dataset demo --data-root {demo_root}` again"):
        extract_targets_blip.main(["--data-root", str(demo_root), *BLIP_ARGS])
    with pytest.raises(ArtifactError, match=str(notes)):
        zeroscope(demo_root, "--targets", "c_zeroscope")
    assert not list((demo_root / "target_vectors_demo").rglob("*.npy"))


def test_corrupt_captions_are_named_before_work(demo_root: Path) -> None:
    captions = layout.captions_path(demo_root, "demo")
    captions.parent.mkdir(parents=True)
    captions.write_text('{"0001": "a red ')
    with pytest.raises(ArtifactError, match=rf"{captions} is truncated .*`python extract_targets_blip.py --dataset demo --data-root {demo_root}`"):
        extract_targets_blip.main(["--data-root", str(demo_root), *BLIP_ARGS])
    assert not list((demo_root / "target_vectors_demo").rglob("*.npy"))
