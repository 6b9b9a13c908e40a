"""reconstruct_zeroscope.main on tiny fake predictions: exact files, resume, oracles, bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import reconstruct_zeroscope
from utils import layout
from utils.video import read_video

RUN = "fake_run"
HAD_NAME = "Drum corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1"
STIMULI = ["0121", "0122", HAD_NAME]
LATENT = (15, 4, 8, 8)  # tiny preset: 64 px frames -> 8x8 latents
BLIP = (17, 32)  # tiny BLIP at 32 px
FAST = ["--preset", "tiny", "--device", "cpu", "--steps", "4", "--strength", "0.5", "--batch-size", "2"]



def write_predictions(root: Path, stimuli: list[str], flatten: bool = False, latent_shape: tuple = LATENT) -> None:
    rng = np.random.default_rng(0)
    for stim in stimuli:
        z = rng.standard_normal(latent_shape).astype(np.float32)
        b = rng.standard_normal(BLIP).astype(np.float32)
        for target, array in (("z_zeroscope", z), ("blip", b)):
            path = layout.predictions_dir(root, RUN, target) / f"{stim}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array.ravel() if flatten else array)


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def expected_files(stimuli: list[str]) -> set[str]:
    return {f"mp4/{s}.mp4" for s in stimuli} | {f"gif/{s}.gif" for s in stimuli} | {"captions.json", "manifest.json"}


def run(root: Path, *extra: str) -> int:
    return reconstruct_zeroscope.main(["--data-root", str(root), *FAST, "--run", RUN, *extra])


def test_writes_exact_files_and_resumes(tmp_path):
    write_predictions(tmp_path, STIMULI)
    copy = layout.subject_predictions_dir(tmp_path, RUN, "z_zeroscope", "demo", "sub01") / "0121.npy"
    copy.parent.mkdir(parents=True)
    np.save(copy, np.zeros(LATENT, dtype=np.float32))  # regress.py's per-subject copy: not a clip
    out = layout.reconstructions_dir(tmp_path, RUN)
    assert run(tmp_path, "--limit", "2") == 0
    assert files_under(out) == expected_files(STIMULI[:2])
    frames = read_video(out / "mp4" / "0121.mp4")
    assert frames.shape == (15, 64, 64, 3)

    mtime = (out / "mp4" / "0121.mp4").stat().st_mtime_ns
    assert run(tmp_path) == 0  # resumes: only the HAD clip is new
    assert files_under(out) == expected_files(STIMULI)
    assert (out / "mp4" / "0121.mp4").stat().st_mtime_ns == mtime
    captions = json.loads((out / "captions.json").read_text())
    assert sorted(captions) == sorted(STIMULI)
    assert all(isinstance(c, str) and c and not c.startswith("a picture of") for c in captions.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["stimuli"] == 3 and manifest["counts"]["skipped"] == 2
    assert manifest["counts"]["complete"] == 3
    assert manifest["flags"]["strength"] == 0.5

    gif_before = (out / "gif" / f"{HAD_NAME}.gif").read_bytes()
    assert run(tmp_path, "--overwrite", "--limit", "1") == 0
    assert (out / "mp4" / "0121.mp4").stat().st_mtime_ns != mtime
    assert json.loads((out / "manifest.json").read_text())["counts"]["reconstructed"] == 1
    assert (out / "gif" / f"{HAD_NAME}.gif").read_bytes() == gif_before
    assert not list(out.glob(".captions.rank*.json"))


def test_same_seed_same_video_and_flattened_input(tmp_path):
    write_predictions(tmp_path, ["0121"], flatten=True)
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        run(tmp_path, "--output-run", name, "--seed", seed, "--caption-from", "none")
    clip = {name: read_video(layout.reconstructions_dir(tmp_path, name) / "mp4" / "0121.mp4").astype(int) for name in "abc"}
    np.testing.assert_array_equal(clip["a"], clip["b"])
    assert np.abs(clip["a"] - clip["c"]).mean() > 1.0


def test_ground_truth_source(tmp_path):
    stimuli = ["0121", "0122"]
    notes = {s: {"set": "test"} for s in stimuli} | {"0001": {"set": "train"}}
    meta = layout.metadata_dir(tmp_path, "demo") / "annotations.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps(notes))
    rng = np.random.default_rng(1)
    for stim in stimuli:
        path = layout.target_path(tmp_path, "demo", "z_zeroscope", stim)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.standard_normal(LATENT).astype(np.float32))
    layout.captions_path(tmp_path, "demo").write_text(json.dumps({"0121": "a picture of a red ball", "0122": "blue boxes", "0001": "x"}))
    code = reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--source", "targets", "--strength", "0"])
    assert code == 0
    out = layout.reconstructions_dir(tmp_path, "gt_demo")
    assert files_under(out) == expected_files(stimuli)
    assert json.loads((out / "captions.json").read_text()) == {"0121": "a red ball", "0122": "blue boxes"}


def test_missing_and_malformed_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"regress\.py --target z_zeroscope"):
        run(tmp_path)
    with pytest.raises(ValueError, match="--run is needed"):
        reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST])
    write_predictions(tmp_path, ["0121"])
    with pytest.raises(FileNotFoundError, match=r"extract_targets_zeroscope\.py --dataset demo"):
        run(tmp_path, "--z-from", "gt")
    with pytest.raises(FileNotFoundError, match=r"extract_targets_blip\.py"):
        run(tmp_path, "--caption-from", "gt")
    (layout.predictions_dir(tmp_path, RUN, "blip") / "0121.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"lack 1 stimuli .*regress\.py --target blip"):
        run(tmp_path)


def test_wrong_latent_shape_names_expected_and_found(tmp_path):
    write_predictions(tmp_path, ["0121"], latent_shape=(15, 4, 33, 33))
    with pytest.raises(ValueError, match=r"\(15, 4, 33, 33\).*'tiny' preset expects \(15, 4, 8, 8\)"):
        run(tmp_path, "--caption-from", "none")


def test_latents_from_another_preset_are_refused(tmp_path):
    from utils.io import write_json

    write_predictions(tmp_path, ["0121"])
    target = layout.target_path(tmp_path, "demo", "z_zeroscope", "0121")
    target.parent.mkdir(parents=True)
    np.save(target, np.zeros(LATENT, dtype=np.float32))
    write_json(target.parent / "manifest.json", {"flags": {"preset": "default"}})
    with pytest.raises(ValueError, match=r"--preset 'tiny' does not match .* made with preset 'default'"):
        run(tmp_path, "--caption-from", "none")

