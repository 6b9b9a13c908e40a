"""Evaluation protocols, lossless frames and rescoring folders of videos (issue 13: deliverables 4, 5, 6)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

import evaluate
from utils import cli, evaluation_data, layout, metrics, scoring
from utils.datasets import DEMO, load_annotations, stimulus_path
from utils.scoring import PROTOCOLS
from utils.synthetic import make_demo
from utils.video import read_video, sample_frames, write_gif, write_mp4

PIXELS = ["--no-semantic", "--report-size", "32"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protocols") / "data"
    make_demo(root, n_subjects=1, n_train=2, n_test=4, size=32, n_frames=8)
    return root


def demo_test_stimuli(root: Path) -> list[str]:
    notes = load_annotations(root, "demo")
    return sorted(k for k, v in notes.items() if v["set"] == "test")


def perturbed(frames: np.ndarray, seed: int = 0, noise: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames.astype(int) + rng.integers(-noise, noise + 1, frames.shape), 0, 255).astype(np.uint8)


def test_mindvideo_ssim_is_skimage_defaults_on_rgb():
    yy, xx = np.mgrid[0:40, 0:48]
    base = np.stack([(np.sin(xx / 3 + t) * 100 + 120 + 0 * yy) for t in range(3)])[..., None] * np.array([1.0, 0.6, 0.3])
    a = np.clip(base, 0, 255).astype(np.uint8)  # (3, 40, 48, 3) structured frames
    b = perturbed(a, 1, 40)
    ours = metrics.ssim_frames_mindvideo(a, b)
    expected = [structural_similarity(x, y, data_range=255, channel_axis=-1) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(metrics.ssim_frames_mindvideo(a, a), 1.0)
    assert not np.allclose(ours, metrics.ssim_frames(a, b))  # the two conventions differ
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim_frames_mindvideo(a[:, :6, :6], b[:, :6, :6])


def test_protocol_presets_switch_exactly_their_settings():
    parser = evaluate.build_parser()
    bundle = ("protocol", lambda name: scoring.get_protocol(name).flags())
    base = vars(cli.parse_args(parser, [], bundle=bundle))
    assert base["protocol"] == "brainnetflix"
    assert {k: base[k] for k in PROTOCOLS["brainnetflix"].flags()} == PROTOCOLS["brainnetflix"].flags()
    for name, protocol in PROTOCOLS.items():
        args = vars(cli.parse_args(evaluate.build_parser(), ["--protocol", name], bundle=bundle))
        changed = {k for k in args if args[k] != base[k]} - {"protocol"}
        assert changed == {k for k, v in protocol.flags().items() if v != base[k]}, name
        assert {k: args[k] for k in protocol.flags()} == protocol.flags()
    mv = PROTOCOLS["mindvideo"].flags()
    assert (mv["n_frames"], mv["eval_size"], mv["ssim"][0], mv["gt_top_k"], mv["video_frames"], mv["n_trials"]) == (6, 256, "mindvideo", 3, 6, 100)
    # A flag given explicitly wins over the preset.
    args = cli.parse_args(evaluate.build_parser(), ["--protocol", "mindvideo", "--n-frames", "8", "--gt-top-k", "1"], bundle=bundle)
    assert (args.n_frames, args.gt_top_k, args.eval_size) == (8, 1, 256)
    with pytest.raises(ValueError, match="Unknown protocol='x'"):
        scoring.get_protocol("x")


def test_protocol_card_and_both_ssims(demo_root: Path):
    stims = demo_test_stimuli(demo_root)
    run = "card"
    for stim in stims:
        write_mp4(layout.reconstructions_dir(demo_root, run) / "mp4" / f"{stim}.mp4", perturbed(sample_frames(stimulus_path(demo_root, DEMO, stim), 8)), 5)
    assert evaluate.main(["--data-root", str(demo_root), "--reconstructions", run, "--protocol", "mindvideo", "--eval-size", "32", *PIXELS]) == 0
    out_dir = layout.evaluation_dir(demo_root, run)
    result = json.loads(layout.metrics_path(out_dir).read_text())
    card = result["protocol"]
    assert card["protocol"] == "mindvideo" and card["ssim_headline"] == "ssim_mindvideo" and card["overrides"] == {"eval_size": 32}
    assert card["n_frames_scored"] == 6 and card["eval_size_px"] == 32 and card["frames_read"] == {"mp4": 4}
    assert card["clip_model_of_protocol"] == "openai/clip-vit-base-patch32" and card["gt_top_k"] == 3
    assert {"ssim", "ssim_mindvideo", "psnr"} == set(result["metrics"])
    html = layout.report_path(out_dir).read_text()
    assert 'id="protocol-card"' in html and "protocol mindvideo" in html and "ssim_mindvideo" in html
    assert "Protocol card" in layout.metrics_markdown_path(out_dir).read_text()


def test_lossless_frames_are_read_when_present(demo_root: Path):
    stims = demo_test_stimuli(demo_root)[:2]
    run = "lossless"
    run_dir = layout.reconstructions_dir(demo_root, run)
    for stim in stims:
        frames = perturbed(sample_frames(stimulus_path(demo_root, DEMO, stim), 6))
        write_mp4(layout.reconstruction_video_paths(run_dir, stim)[0], np.zeros_like(frames), 5)  # the mp4 differs on purpose
        path = layout.reconstruction_frames_path(run_dir, stim)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, frames)
    clips = evaluation_data.find_clips(demo_root, run)
    assert [p.suffix for _, p in clips] == [".npy", ".npy"]
    assert evaluate.main(["--data-root", str(demo_root), "--reconstructions", run, *PIXELS]) == 0
    result = json.loads(layout.metrics_path(layout.evaluation_dir(demo_root, run)).read_text())
    assert result["protocol"]["frames_read"] == {"lossless npy": 2}
    expected = []
    for stim in stims:
        pred, true = metrics.match_frames(np.load(layout.reconstruction_frames_path(run_dir, stim)), read_video(stimulus_path(demo_root, DEMO, stim)), 6, (32, 32))
        expected.append(metrics.ssim_frames(pred, true).mean())
    assert result["metrics"]["ssim"]["mean"] == pytest.approx(np.mean(expected), abs=1e-12)
    # Without the lossless frames the mp4 is read.
    layout.reconstruction_frames_path(run_dir, stims[0]).unlink()
    assert [p.suffix for _, p in evaluation_data.find_clips(demo_root, run)] == [".mp4", ".npy"]


def test_rescoring_side_by_side_gifs(demo_root: Path, tmp_path: Path):
    stims = demo_test_stimuli(demo_root)
    folder = tmp_path / "mindvideo_gifs"
    preds = {}
    for stim in stims:
        truth = sample_frames(stimulus_path(demo_root, DEMO, stim), 6, 32)  # (6, 32, 32, 3)
        preds[stim] = perturbed(truth, int(stim))
        write_gif(folder / f"test{int(stim)}.gif", np.concatenate([truth, preds[stim]], axis=2), 4)  # (6, 32, 64, 3)
    (folder / "notes.txt").write_text("not a clip")
    argv = ["--data-root", str(demo_root), "--videos", str(folder), "--name-pattern", r"test(?P<stim>\d+)\.gif",
            "--name-format", "{:04d}", "--method", "MinD-Video", "--n-frames", "6", "--eval-size", "32", *PIXELS]
    assert evaluate.main(argv) == 0
    out_dir = layout.evaluation_dir(demo_root, "MinD-Video")
    result = json.loads(layout.metrics_path(out_dir).read_text())
    assert result["n_clips"] == len(stims) and result["protocol"]["method"] == "MinD-Video"
    assert result["protocol"]["frames_read"] == {"gif": len(stims)} and result["protocol"]["side_by_side_split"].startswith(f"{len(stims)} side-by-side")
    # The same numbers as scoring the reconstruction half directly (decoded from the gif) ...
    direct = {"ssim": [], "ssim_mindvideo": [], "psnr": []}
    perturbed_direct = {"ssim": [], "psnr": []}
    for stim in stims:
        half = read_video(folder / f"test{int(stim)}.gif")[:, :, 32:]
        pred, true = metrics.match_frames(half, read_video(stimulus_path(demo_root, DEMO, stim)), 6, (32, 32))
        direct["ssim"].append(metrics.ssim_frames(pred, true).mean())
        direct["ssim_mindvideo"].append(metrics.ssim_frames_mindvideo(pred, true).mean())
        direct["psnr"].append(metrics.psnr_frames(pred, true).mean())
        _, true = metrics.match_frames(preds[stim], read_video(stimulus_path(demo_root, DEMO, stim)), 6, (32, 32))
        perturbed_direct["ssim"].append(metrics.ssim_frames(preds[stim], true).mean())
        perturbed_direct["psnr"].append(metrics.psnr_frames(preds[stim], true).mean())
    for key, values in direct.items():
        assert result["metrics"][key]["mean"] == pytest.approx(np.mean(values), abs=1e-12), key
    # ... and close to scoring the perturbed frames before the gif's palette.
    assert result["metrics"]["ssim"]["mean"] == pytest.approx(np.mean(perturbed_direct["ssim"]), abs=0.05)
    assert result["metrics"]["psnr"]["mean"] == pytest.approx(np.mean(perturbed_direct["psnr"]), abs=2.0)
    html = layout.report_path(out_dir).read_text()
    assert "method MinD-Video, protocol brainnetflix" in html and "side-by-side" in html
    assert evaluate.main(argv) == 0  # unchanged inputs: kept


def test_frame_folders_and_name_errors(demo_root: Path, tmp_path: Path):
    from PIL import Image

    stim = demo_test_stimuli(demo_root)[0]
    folder = tmp_path / "frames"
    frames = perturbed(sample_frames(stimulus_path(demo_root, DEMO, stim), 5, 32))
    for i, frame in enumerate(frames):
        (folder / stim).mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(folder / stim / f"{i:03d}.png")
    clips = evaluation_data.find_folder_clips(folder, evaluation_data.DEFAULT_NAME_PATTERN, None, DEMO.canonical)
    assert clips == [(stim, folder / stim)]
    read, split = evaluation_data.read_clip(folder / stim)
    assert not split and np.array_equal(read, frames)
    assert evaluate.main(["--data-root", str(demo_root), "--videos", str(folder), *PIXELS]) == 0
    result = json.loads(layout.metrics_path(layout.evaluation_dir(demo_root, "frames")).read_text())
    assert result["protocol"]["frames_read"] == {"frame folder": 1} and result["protocol"]["method"] == "frames"
    with pytest.raises(ValueError, match="not a stimulus name"):
        evaluation_data.find_folder_clips(folder, r"(?P<stim>\d\d)\d\d", None, DEMO.canonical)
    with pytest.raises(ValueError, match="named group 'stim'"):
        evaluation_data.find_folder_clips(folder, r"\d+", None, DEMO.canonical)
    with pytest.raises(FileNotFoundError, match="no .mp4/.gif file or frame folder matches"):
        evaluation_data.find_folder_clips(folder, r"x(?P<stim>\d+)", None, DEMO.canonical)


def test_video_classifier_fed_other_frame_counts():
    from models import zoo

    model, processor = zoo.load_video_classifier("tiny")
    table = model.videomae.embeddings.position_embeddings
    clip = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    own = metrics.video_class_probs(model, processor, [clip])
    np.testing.assert_allclose(metrics.video_class_probs(model, processor, [clip], n_frames=4), own)
    six = metrics.video_class_probs(model, processor, [clip], n_frames=6)
    assert six.shape == own.shape and not np.allclose(six, own)
    assert model.config.num_frames == 4 and model.videomae.embeddings.position_embeddings is table  # restored
    with pytest.raises(ValueError, match="multiple of the video classifier's tubelet size 2"):
        metrics.video_class_probs(model, processor, [clip], n_frames=5)
