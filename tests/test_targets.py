"""Target extraction (models/targets.py, extract_targets_*.py) with the tiny preset."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import extract_targets_blip
import extract_targets_zeroscope
from models import targets, zoo
from utils import layout
from utils.io import read_json
from utils.synthetic import make_demo
from utils.video import VideoDecodeError, read_video, sample_indices, video_info, write_mp4

DEMO_ARGS = ["--dataset", "demo", "--preset", "tiny", "--no-progress", "--workers", "1"]



@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo_template")
    make_demo(root, n_subjects=1, n_train=4, n_test=2, size=32, n_frames=12, fps=8)
    return root


@pytest.fixture
def demo_root(demo_template: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny demo (tests may corrupt it)."""
    root = tmp_path / "data"
    shutil.copytree(demo_template / "stimuli_demo", root / "stimuli_demo")
    shutil.copytree(demo_template / "metadata_demo", root / "metadata_demo")
    return root


def z_path(root: Path, stim: str) -> Path:
    return layout.target_path(root, "demo", "z_zeroscope", stim)


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}


# ---------------------------------------------------------------- units


def test_plan_jobs_missing_folder_names_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"stimuli_bmd is missing: run `python download_data.py --dataset bmd"):
        targets.plan_jobs(tmp_path, "bmd")
    (tmp_path / "stimuli_bmd" / "mp4").mkdir(parents=True)
    jobs = targets.plan_jobs(tmp_path, "bmd", "test", limit=3)
    assert [j.stimulus for j in jobs] == ["1001", "1002", "1003"]
    assert jobs[0].video == tmp_path / "stimuli_bmd" / "mp4" / "1001.mp4"
    with pytest.raises(ValueError, match="Unknown subset='val'"):
        targets.plan_jobs(tmp_path, "bmd", "val")


def test_resize_center_crop_keeps_the_middle() -> None:
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 20:60] = 200  # the central square of a wide frame
    out = targets.resize_center_crop(frames, 16)
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
    assert out[:, :, 1:-1].min() == 200 and out.mean() > 190  # only antialiasing at the crop edges


def test_vae_latents_seeded_per_stimulus_not_per_batch() -> None:
    vae = zoo.load_zeroscope("tiny", parts=("vae",))["vae"]
    videos = np.random.default_rng(0).integers(0, 255, (3, 15, 16, 16, 3), dtype=np.uint8)
    together = targets.vae_latents(vae, videos, ["a", "b", "c"], "sample", seed=0)
    alone = targets.vae_latents(vae, videos[1:2], ["b"], "sample", seed=0, frames_per_forward=7)
    assert together.shape == (3, 15, 4, 2, 2) == (3, *targets.latent_shape(vae, 16))
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-5, atol=1e-6)
    mean = targets.vae_latents(vae, videos, ["a", "b", "c"], "mean")
    other_seed = targets.vae_latents(vae, videos, ["a", "b", "c"], "sample", seed=1)
    assert not np.allclose(together, mean) and not np.allclose(together, other_seed)
    with torch.inference_mode():
        direct = vae.encode(torch.from_numpy(videos[0]).permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mean
    np.testing.assert_allclose(mean[0], direct.numpy() * vae.config.scaling_factor, rtol=1e-4, atol=1e-5)


def test_run_batches_records_failures_and_keeps_order(tmp_path: Path) -> None:
    jobs = [targets.Job(f"s{i}", tmp_path / f"s{i}.mp4") for i in range(7)]

    def load(path: Path) -> str:
        if path.stem in ("s2", "s5"):
            raise VideoDecodeError(f"Cannot read video {path}: broken")
        return path.stem

    for workers in (0, 3):
        batches: list[list[str]] = []
        stats = targets.run_batches(jobs, load, lambda b, data, out=batches: out.append(data), batch_size=2, workers=workers)
        assert batches == [["s0", "s1"], ["s3", "s4"], ["s6"]]
        assert set(stats.failed) == {"s2", "s5"} and "s2.mp4: broken" in stats.failed["s2"]
        assert stats.written == ["s0", "s1", "s3", "s4", "s6"]


def test_frame_sampling_follows_decoded_frames_at_any_frame_rate(tmp_path: Path) -> None:
    """Frames carry their index as brightness; 15 are picked by linspace whatever the rate."""
    for n_frames, fps in ((24, 23.976), (30, 30), (40, 25)):
        frames = np.repeat((np.arange(n_frames) * 6).astype(np.uint8)[:, None, None, None], 16, axis=1)
        frames = np.repeat(np.repeat(frames, 16, axis=2), 3, axis=3)  # (T, 16, 16, 3)
        path = tmp_path / f"v{n_frames}.mp4"
        write_mp4(path, frames, fps)
        loaded = targets.frame_loader(15)(path)  # (15, 16, 16, 3)
        assert loaded.shape == (15, 16, 16, 3)
        expected = sample_indices(n_frames, 15) * 6
        np.testing.assert_allclose(loaded.reshape(15, -1).mean(axis=1), expected, atol=3)


# ---------------------------------------------------------------- zeroscope script


def test_zeroscope_script_shapes_resume_and_redo(demo_root: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--data-root", str(demo_root), *DEMO_ARGS, "--batch-size", "4", "--size", "32"]
    assert extract_targets_zeroscope.main(args) == 0
    out_dir = layout.targets_dir(demo_root, "demo", "z_zeroscope")
    files = sorted(out_dir.glob("*.npy"))
    assert [p.stem for p in files] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    latent = np.load(files[0])
    assert latent.shape == (15, 4, 4, 4) and latent.dtype == np.float32 and np.isfinite(latent).all()
    manifest = read_json(out_dir / "manifest.json")
    assert manifest["counts"]["written"] == 6 and manifest["failed"] == {} and manifest["shape"] == [15, 4, 4, 4]

    before = mtimes(out_dir)
    manifest_bytes = (out_dir / "manifest.json").read_bytes()
    assert extract_targets_zeroscope.main(args) == 0  # second run: nothing new, and nothing written (a read-only root works)
    assert mtimes(out_dir) == before
    assert (out_dir / "manifest.json").read_bytes() == manifest_bytes

    z_path(demo_root, "0002").write_bytes(z_path(demo_root, "0002").read_bytes()[:100])  # truncated
    z_path(demo_root, "0005").unlink()
    assert extract_targets_zeroscope.main(args) == 0
    after = mtimes(out_dir)
    assert {k for k in after if after[k] != before.get(k)} == {"0002.npy", "0005.npy"}
    np.testing.assert_array_equal(np.load(z_path(demo_root, "0002")).shape, (15, 4, 4, 4))
    assert "6 stimuli of demo (4 already complete)" in capsys.readouterr().out


def test_zeroscope_resume_after_interruption(demo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--data-root", str(demo_root), *DEMO_ARGS, "--batch-size", "2", "--size", "32", "--subset", "train"]
    real = targets.vae_latents
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(targets, "vae_latents", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_targets_zeroscope.main(args)
    out_dir = layout.targets_dir(demo_root, "demo", "z_zeroscope")
    assert sorted(p.name for p in out_dir.iterdir()) == ["0001.npy", "0002.npy", "settings.json"]  # no temp files, no more
    monkeypatch.setattr(targets, "vae_latents", real)
    first = np.load(z_path(demo_root, "0001"))
    assert extract_targets_zeroscope.main(args) == 0
    manifest = read_json(out_dir / "manifest.json")
    assert manifest["counts"]["written"] == 2 and manifest["counts"]["skipped"] == 2
    full = demo_root.parent / "fresh"
    shutil.copytree(demo_root / "stimuli_demo", full / "stimuli_demo")
    shutil.copytree(demo_root / "metadata_demo", full / "metadata_demo")
    assert extract_targets_zeroscope.main([*args[:1], str(full), *args[2:], "--stimuli", "0001"]) == 0
    np.testing.assert_allclose(np.load(z_path(full, "0001")), first, rtol=1e-5, atol=1e-6)  # same with another batching


def test_zeroscope_corrupt_video_is_named_recorded_and_others_written(demo_root: Path, capsys: pytest.CaptureFixture) -> None:
    bad = demo_root / "stimuli_demo" / "mp4" / "0003.mp4"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])  # truncated mp4
    (demo_root / "stimuli_demo" / "mp4" / "0004.mp4").write_bytes(b"not a video at all")
    code = extract_targets_zeroscope.main(["--data-root", str(demo_root), *DEMO_ARGS, "--size", "32"])
    assert code == 1
    out = capsys.readouterr().out
    assert "FAILED 0003" in out and str(bad) in out and "FAILED 0004" in out
    manifest = read_json(layout.targets_dir(demo_root, "demo", "z_zeroscope") / "manifest.json")
    assert set(manifest["failed"]) == {"0003", "0004"} and "0003.mp4" in manifest["failed"]["0003"]
    written = sorted(p.stem for p in layout.targets_dir(demo_root, "demo", "z_zeroscope").glob("*.npy"))
    assert written == ["0001", "0002", "0005", "0006"]


def test_zeroscope_missing_stimuli_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download_data.py --dataset demo"):
        extract_targets_zeroscope.main(["--data-root", str(tmp_path), *DEMO_ARGS])


# ---------------------------------------------------------------- blip script


def test_blip_script_outputs_captions_and_resume(demo_root: Path) -> None:
    captions_file = layout.captions_path(demo_root, "demo")
    captions_file.parent.mkdir(parents=True)
    captions_file.write_text(json.dumps({"9999": "kept from another run"}))
    base = ["--data-root", str(demo_root), *DEMO_ARGS, "--caption-beams", "1", "--batch-size", "3"]
    assert extract_targets_blip.main([*base, "--limit", "2"]) == 0
    assert set(read_json(captions_file)) == {"9999", "0001", "0002"}
    assert extract_targets_blip.main(base) == 0
    captions = read_json(captions_file)
    assert set(captions) == {"9999", "0001", "0002", "0003", "0004", "0005", "0006"}
    assert captions["9999"] == "kept from another run"
    assert all(isinstance(c, str) and not c.startswith("a picture of") for c in captions.values())

    blip, _ = zoo.load_blip("tiny")
    tokens = zoo.blip_num_tokens(blip, 32)
    expected = {"blip": (tokens, 32), "clip": (16,), "clip_frames": (15, 16), "clip_text": (16,)}
    for target, shape in expected.items():
        folder = layout.targets_dir(demo_root, "demo", target)
        arrays = {p.stem: np.load(p) for p in folder.glob("*.npy")}
        assert sorted(arrays) == ["0001", "0002", "0003", "0004", "0005", "0006"], target
        assert all(a.shape == shape and a.dtype == np.float32 for a in arrays.values()), target
        assert read_json(folder / "manifest.json")["shape"] == list(shape)
    frames = np.load(layout.target_path(demo_root, "demo", "clip_frames", "0003"))
    np.testing.assert_allclose(np.load(layout.target_path(demo_root, "demo", "clip", "0003")), frames.mean(axis=0), rtol=1e-5)

    before = mtimes(layout.targets_dir(demo_root, "demo", "blip"))
    layout.target_path(demo_root, "demo", "clip_text", "0004").unlink()  # one missing piece redoes that stimulus only
    assert extract_targets_blip.main(base) == 0
    assert layout.target_path(demo_root, "demo", "clip_text", "0004").exists()
    after = mtimes(layout.targets_dir(demo_root, "demo", "blip"))
    assert {k for k in after if after[k] != before[k]} == {"0004.npy"}
    counts = read_json(layout.targets_dir(demo_root, "demo", "blip") / "manifest.json")["counts"]
    assert counts["written"] == 1 and counts["skipped"] == 5


def test_blip_corrupt_video(demo_root: Path, capsys: pytest.CaptureFixture) -> None:
    (demo_root / "stimuli_demo" / "mp4" / "0002.mp4").write_bytes(b"")
    args = ["--data-root", str(demo_root), *DEMO_ARGS, "--no-captions", "--subset", "train"]
    assert extract_targets_blip.main(args) == 1
    assert "FAILED 0002" in capsys.readouterr().out
    manifest = read_json(layout.targets_dir(demo_root, "demo", "clip") / "manifest.json")
    assert list(manifest["failed"]) == ["0002"] and "empty" in manifest["failed"]["0002"]
    assert sorted(p.stem for p in layout.targets_dir(demo_root, "demo", "blip").glob("*.npy")) == ["0001", "0003", "0004"]
    assert not layout.captions_path(demo_root, "demo").exists()


# ---------------------------------------------------------------- real BMD samples


@pytest.fixture
def bmd_root(bmd_sample_videos: list[Path], shared_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bmd"
    (root / "stimuli_bmd" / "mp4").mkdir(parents=True)
    for video in bmd_sample_videos:
        os.symlink(video, root / "stimuli_bmd" / "mp4" / video.name)
    (root / "metadata_bmd").mkdir()
    shutil.copy(shared_data / "bmd_samples" / "annotations.json", root / "metadata_bmd" / "annotations.json")
    return root


def test_bmd_samples_sampling_and_shapes(bmd_root: Path, bmd_sample_videos: list[Path]) -> None:
    rates = {round(video_info(v)["fps"], 2) for v in bmd_sample_videos}
    assert len(rates) > 1  # the samples mix frame rates
    for video in bmd_sample_videos[:3]:
        frames = read_video(video)
        loaded = targets.frame_loader(15)(video)
        np.testing.assert_array_equal(loaded, frames[sample_indices(len(frames), 15)])
    names = [v.stem for v in bmd_sample_videos[:2]]
    base = ["--data-root", str(bmd_root), "--dataset", "bmd", "--preset", "tiny", "--no-progress"]
    assert extract_targets_zeroscope.main([*base, "--stimuli", names[0], "--size", "268", "--latent", "mean"]) == 0
    latent = np.load(layout.target_path(bmd_root, "bmd", "z_zeroscope", names[0]))
    assert latent.shape == (15, 4, 33, 33)
    assert extract_targets_blip.main([*base, "--stimuli", *names, "--caption-beams", "1"]) == 0
    for target, shape in {"blip": (17, 32), "clip": (16,), "clip_frames": (15, 16), "clip_text": (16,)}.items():
        assert np.load(layout.target_path(bmd_root, "bmd", target, names[1])).shape == shape
    assert set(read_json(layout.captions_path(bmd_root, "bmd"))) == set(names)


def test_split_done_and_summary(tmp_path, capsys):
    jobs = [targets.Job(name, tmp_path / f"{name}.mp4") for name in ("a", "b", "c")]
    todo, skipped = targets.split_done(jobs, lambda stimulus: stimulus == "b")
    assert [j.stimulus for j in todo] == ["a", "c"] and skipped == ["b"]
    todo, skipped = targets.split_done(jobs, lambda stimulus: True, overwrite=True)
    assert len(todo) == 3 and skipped == []
    stats = targets.RunStats(written=["a"], skipped=["b"], failed={"c": "c.mp4 is not a video"})
    assert targets.print_summary(stats, tmp_path) == 1
    assert "FAILED c: c.mp4 is not a video" in capsys.readouterr().out
    assert targets.print_summary(targets.RunStats(written=["a"]), tmp_path) == 0



# ---------------------------------------------------------------- recipes


def parsed(module, argv: list[str]) -> dict:
    from utils.cli import parse_args

    return vars(parse_args(module.build_parser(), argv, bundle=targets.RECIPE_BUNDLE))


def test_recipe_original_changes_exactly_the_recipe_fields() -> None:
    from models.recipes import get_recipe

    original = get_recipe("original")
    for module, fields in ((extract_targets_zeroscope, targets.RECIPE_FIELDS["z_zeroscope"]), (extract_targets_blip, targets.RECIPE_FIELDS["blip"])):
        default, switched = parsed(module, []), parsed(module, ["--recipe", "original"])
        changed = {k for k in default if default[k] != switched[k]}
        assert changed == {"recipe", *fields}, module.__name__
        assert all(switched[f] == getattr(original, f) for f in fields)
    explicit = parsed(extract_targets_zeroscope, ["--recipe", "original", "--latent", "mean", "--resize-antialias"])
    assert (explicit["latent"], explicit["resize_antialias"], explicit["z_dtype"], explicit["frame_sampling"]) == ("mean", True, "float16", "floor")
    explicit = parsed(extract_targets_blip, ["--caption-beams", "5", "--recipe", "original", "--blip-normalize"])
    assert (explicit["caption_beams"], explicit["blip_normalize"], explicit["caption_slash_to_space"]) == (5, True, True)


def test_caption_slash_to_space() -> None:
    from models.captioning import CaptionSettings, finish_caption

    assert finish_caption("a man/woman walks", CaptionSettings(slash_to_space=True)) == "a man woman walks"
    assert finish_caption("a man/woman walks", CaptionSettings()) == "a man/woman walks"


def test_bmd_original_recipe_floored_unnormalised_float16(bmd_root: Path, bmd_sample_videos: list[Path]) -> None:
    """--recipe original on a real BMD mp4: floored indices, plain bilinear, [0, 1] BLIP pixels, float16 z."""
    from utils.video import resize_frames

    video = bmd_sample_videos[0]
    base = ["--data-root", str(bmd_root), "--dataset", "bmd", "--preset", "tiny", "--no-progress", "--stimuli", video.stem, "--recipe", "original"]
    assert extract_targets_zeroscope.main([*base, "--size", "64"]) == 0
    assert extract_targets_blip.main([*base, "--no-clip"]) == 0
    frames = read_video(video)
    picked = frames[np.linspace(0, len(frames) - 1, 15, dtype=int)]  # the original's floored indices

    vae = zoo.load_zeroscope("tiny", parts=("vae",))["vae"]
    z = np.load(layout.target_path(bmd_root, "bmd", "z_zeroscope", video.stem))
    assert z.dtype == np.float16 and z.shape == (15, 4, 8, 8)
    latent = targets.vae_latents(vae, resize_frames(picked, 64, antialias=False)[None], [video.stem], "sample", seed=0)[0]
    np.testing.assert_array_equal(z, latent.astype(np.float16))

    blip, _ = zoo.load_blip("tiny")
    pixels = torch.from_numpy(resize_frames(picked, 32, antialias=False)).permute(0, 3, 1, 2).float() / 255  # [0, 1], no mean/std
    with torch.inference_mode():
        expected = blip.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state.mean(dim=0)
    stored = np.load(layout.target_path(bmd_root, "bmd", "blip", video.stem))
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-5, atol=1e-5)
    record = read_json(layout.settings_path(layout.targets_dir(bmd_root, "bmd", "blip")))["settings"]
    assert record["recipe"] == "original" and record["blip_normalize"] is False and record["caption_beams"] == 1
    z_record = read_json(layout.settings_path(layout.targets_dir(bmd_root, "bmd", "z_zeroscope")))["settings"]
    assert z_record | {"seed": 0} == z_record and z_record["z_dtype"] == "float16" and z_record["frame_sampling"] == "floor"


# ---------------------------------------------------------------- target records


def test_every_target_folder_gets_a_record_and_other_recipes_are_refused(demo_root: Path) -> None:
    from utils.provenance import SettingsMismatchError

    base = ["--data-root", str(demo_root), *DEMO_ARGS, "--size", "32"]
    assert extract_targets_zeroscope.main(base) == 0
    assert extract_targets_blip.main([*DEMO_ARGS, "--data-root", str(demo_root), "--caption-beams", "1"]) == 0
    for target in ("z_zeroscope", "blip", "clip", "clip_frames", "clip_text"):
        record = read_json(layout.settings_path(layout.targets_dir(demo_root, "demo", target)))
        assert record["settings"]["recipe"] == "default" and record["settings"]["preset"] == "tiny", target
    before = mtimes(layout.targets_dir(demo_root, "demo", "z_zeroscope"))
    with pytest.raises(SettingsMismatchError, match=r"z_zeroscope.*found recipe 'default', asked recipe 'original'.*--overwrite.*--data-root.*--adopt"):
        extract_targets_zeroscope.main([*base, "--recipe", "original"])
    with pytest.raises(SettingsMismatchError, match=r"blip.*caption_beams: recorded 1, asked 3"):
        extract_targets_blip.main([*DEMO_ARGS, "--data-root", str(demo_root)])
    assert mtimes(layout.targets_dir(demo_root, "demo", "z_zeroscope")) == before
    with pytest.raises(SettingsMismatchError, match="would leave 5 of its 6 files"):
        extract_targets_zeroscope.main([*base, "--recipe", "original", "--overwrite", "--limit", "1"])
    assert extract_targets_zeroscope.main([*base, "--recipe", "original", "--overwrite"]) == 0
    assert np.load(z_path(demo_root, "0001")).dtype == np.float16
    assert read_json(layout.settings_path(layout.targets_dir(demo_root, "demo", "z_zeroscope")))["settings"]["recipe"] == "original"
    assert extract_targets_zeroscope.main([*base, "--recipe", "original"]) == 0  # same settings: resume

    layout.settings_path(layout.targets_dir(demo_root, "demo", "z_zeroscope")).unlink()
    with pytest.raises(SettingsMismatchError, match=r"z_zeroscope holds outputs without a record.*asked recipe 'original'.*--adopt"):
        extract_targets_zeroscope.main([*base, "--recipe", "original"])


def test_adopting_foreign_float16_latents_then_regress_style_loading(demo_root: Path) -> None:
    from utils.provenance import SettingsMismatchError
    from utils.regression_data import training_targets
    from utils.targets import load_targets, target_settings

    stimuli = ["0001", "0002", "0003", "0004", "0005", "0006"]
    rng = np.random.default_rng(0)
    copied = {s: rng.standard_normal((15, 4, 4, 4)).astype(np.float16) for s in stimuli[:4]}  # the original's files copied in
    for s, array in copied.items():
        z_path(demo_root, s).parent.mkdir(parents=True, exist_ok=True)
        np.save(z_path(demo_root, s), array)
    with pytest.raises(SettingsMismatchError, match=r"z_zeroscope \(z_zeroscope targets of demo\) has no record.*--adopt"):
        load_targets(demo_root, "demo", "z_zeroscope", stimuli[:4])
    base = ["--data-root", str(demo_root), *DEMO_ARGS, "--size", "32", "--adopt"]
    with pytest.raises(ValueError, match=r"Cannot adopt .*float32 \(15, 4, 4, 4\) files, but 0001.npy: float16"):
        extract_targets_zeroscope.main(base)  # the default recipe makes float32
    before = mtimes(layout.targets_dir(demo_root, "demo", "z_zeroscope"))
    assert extract_targets_zeroscope.main([*base, "--recipe", "original"]) == 0
    after = mtimes(layout.targets_dir(demo_root, "demo", "z_zeroscope"))
    assert {k: after[k] for k in before} == before and sorted(after) == [f"{s}.npy" for s in stimuli]  # kept, and the rest made
    record = target_settings(demo_root, "demo", "z_zeroscope")
    assert record["adopted"] is True and record["recipe"] == "original"
    assert extract_targets_zeroscope.main([*base, "--recipe", "original"]) == 0  # an adopted record resumes
    Y, shape = training_targets(demo_root, "z_zeroscope", [("demo", s) for s in stimuli])
    assert shape == (15, 4, 4, 4) and Y.dtype == np.float32
    np.testing.assert_array_equal(Y[0], copied["0001"].astype(np.float32).ravel())

    bad = layout.targets_dir(demo_root.parent / "other", "demo", "z_zeroscope")
    bad.mkdir(parents=True)
    np.save(bad / "0001.npy", np.zeros((15, 4, 5, 5), np.float16))
    for folder in ("stimuli_demo", "metadata_demo"):
        shutil.copytree(demo_root / folder, demo_root.parent / "other" / folder)
    with pytest.raises(ValueError, match=r"0001.npy: float16 \(15, 4, 5, 5\)"):
        extract_targets_zeroscope.main([*base, "--recipe", "original", "--data-root", str(demo_root.parent / "other")])


def test_mixed_recipes_are_refused(tmp_path: Path) -> None:
    from utils.provenance import SettingsMismatchError, write_settings
    from utils.targets import check_same_recipe, load_targets

    for dataset, recipe in (("demo", "default"), ("bmd", "original")):
        save_path = layout.target_path(tmp_path, dataset, "blip", "0001")
        save_path.parent.mkdir(parents=True)
        np.save(save_path, np.ones((3, 2), np.float32))
        write_settings(save_path.parent, "extract_targets_blip", {"recipe": recipe})
    assert load_targets(tmp_path, "demo", "blip", ["0001"])[1] == (3, 2)
    with pytest.raises(SettingsMismatchError, match=r"mixes recipes.*target_vectors_demo/blip has recipe 'default'.*target_vectors_bmd/blip has recipe 'original'"):
        check_same_recipe(tmp_path, "blip", ["demo", "bmd"])
    with pytest.raises(SettingsMismatchError, match=r"target_vectors_bmd/blip has recipe 'original', asked recipe 'default'"):
        load_targets(tmp_path, "bmd", "blip", ["0001"], recipe="default")
    assert set(check_same_recipe(tmp_path, "blip", ["demo", "demo"])) == {"demo"}


# ---------------------------------------------------------------- c_zeroscope


def test_c_zeroscope_targets_on_the_demo(demo_root: Path) -> None:
    from models.video_diffusion import encode_prompts
    from utils.targets import TARGET_SCRIPTS, load_targets, target_command

    args = ["--data-root", str(demo_root), *DEMO_ARGS, "--size", "32", "--batch-size", "4"]
    assert extract_targets_zeroscope.main(args) == 0
    assert not layout.targets_dir(demo_root, "demo", "c_zeroscope").exists()  # default: z_zeroscope only
    assert extract_targets_zeroscope.main([*args, "--targets", "z_zeroscope", "c_zeroscope"]) == 0
    folder = layout.targets_dir(demo_root, "demo", "c_zeroscope")
    parts = zoo.load_zeroscope("tiny", parts=("text_encoder", "tokenizer"))
    width = parts["text_encoder"].config.hidden_size
    notes = read_json(layout.annotations_path(demo_root, "demo"))
    for stim in ("0001", "0006"):
        stored = np.load(layout.target_path(demo_root, "demo", "c_zeroscope", stim))
        assert stored.shape == (77, width) and stored.dtype == np.float32
        captions = notes[stim]["text_descriptions"]
        expected = encode_prompts(parts["text_encoder"], parts["tokenizer"], captions, "cpu").mean(dim=0)
        np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-5, atol=1e-5)
    record = read_json(layout.settings_path(folder))["settings"]
    assert record == {"recipe": "default", "captions": "annotations", "model": "tiny", "preset": "tiny"}
    assert read_json(layout.manifest_path(folder))["counts"]["written"] == 6
    Y, shape = load_targets(demo_root, "demo", "c_zeroscope", ["0001", "0002"])
    assert shape == (77, width) and Y.shape == (2, 77 * width)
    assert TARGET_SCRIPTS["c_zeroscope"] == "extract_targets_zeroscope.py"
    assert target_command("c_zeroscope", "bmd") == "python extract_targets_zeroscope.py --dataset bmd --targets c_zeroscope"
    before = mtimes(folder)
    assert extract_targets_zeroscope.main([*args, "--targets", "c_zeroscope"]) == 0
    assert mtimes(folder) == before
