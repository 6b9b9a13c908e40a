"""Benchmark: evaluation throughput (clips/s) on CPU with the tiny models, and optionally the
wall time and peak RAM of each stage of the default demo pipeline.

Part 1 makes a synthetic demo (``--clips`` test videos) and fake reconstructions (noisy
copies, 15 frames), then times ``evaluate.main`` with ``--no-semantic`` (pixel metrics only)
and with every metric, after one warm-up run that loads the models; it also times each
metric family on one clip.
Part 2 (``--pipeline``) runs ``run_pipeline.py --isolate`` (each stage in its own process,
so each has its own peak RSS) on a fresh data root and prints its summary table.

Examples:
    python bench/bench_evaluate.py
    python bench/bench_evaluate.py --clips 48 --pipeline
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import evaluate  # noqa: E402
import run_pipeline  # noqa: E402
from models import zoo  # noqa: E402
from utils import evaluation_data, layout, metrics  # noqa: E402
from utils.datasets import DEMO, stimulus_path  # noqa: E402
from utils.synthetic import make_demo  # noqa: E402
from utils.video import sample_frames, write_mp4  # noqa: E402


def make_inputs(root: Path, n_clips: int, size: int) -> list[str]:
    """Demo with ``n_clips`` test videos and a reconstruction run ``bench`` of noisy 15-frame copies."""
    make_demo(root, n_subjects=1, n_train=2, n_test=n_clips, size=size, n_frames=24)
    rng = np.random.default_rng(0)
    stims = [f"{i:04d}" for i in range(3, 3 + n_clips)]
    for stim in stims:
        frames = sample_frames(stimulus_path(root, DEMO, stim), 15).astype(int)
        frames = np.clip(frames + rng.integers(-30, 31, frames.shape), 0, 255).astype(np.uint8)
        write_mp4(layout.reconstructions_dir(root, "bench") / "mp4" / f"{stim}.mp4", frames, 5)
    return stims


def timed_main(argv: list[str]) -> float:
    """Seconds of one ``evaluate.main(argv)`` (its output silenced)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluate.main(argv)
    return time.perf_counter() - start


def per_family(root: Path, stim: str, repeats: int = 3) -> dict[str, float]:
    """Milliseconds per clip of each metric family on one clip (15 frames)."""
    pred, true = evaluation_data.load_pair(layout.reconstructions_dir(root, "bench") / "mp4" / f"{stim}.mp4", stimulus_path(root, DEMO, stim), 0, 0)
    image, video, clip = zoo.load_image_classifier("tiny"), zoo.load_video_classifier("tiny"), zoo.load_clip("tiny")
    jobs = {
        "decode + match frames": lambda: evaluation_data.load_pair(layout.reconstructions_dir(root, "bench") / "mp4" / f"{stim}.mp4", stimulus_path(root, DEMO, stim), 0, 0),
        "SSIM + PSNR": lambda: (metrics.ssim_frames(pred, true), metrics.psnr_frames(pred, true)),
        "MinD-Video SSIM (skimage, RGB)": lambda: metrics.ssim_frames_mindvideo(pred, true),
        "image classifier (2 x 15 frames) + n-way": lambda: metrics.n_way_top1_classification(
            metrics.image_class_probs(*image, pred), metrics.image_class_probs(*image, true), 50),
        "CLIP (2 x 15 frames)": lambda: (metrics.clip_image_embeddings(*clip, pred), metrics.clip_image_embeddings(*clip, true)),
        "video classifier (2 clips)": lambda: metrics.video_class_probs(*video, [pred, true]),
    }
    out = {}
    for name, job in jobs.items():
        job()
        start = time.perf_counter()
        for _ in range(repeats):
            job()
        out[name] = 1000 * (time.perf_counter() - start) / repeats
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="clips evaluated (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="side of the demo videos in px (default: %(default)s)")
    parser.add_argument("--pipeline", action="store_true", help="also time the default demo pipeline per stage (minutes)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        stims = make_inputs(root, args.clips, args.size)
        base = ["--data-root", str(root), "--reconstructions", "bench", "--preset", "tiny", "--overwrite"]
        timed_main(base + ["--limit", "2"])  # warm-up: imports and model construction
        pixel = timed_main(base + ["--no-semantic"])
        full = timed_main(base)
        print(f"clips: {args.clips} at {args.size}px, 15 frames each; tiny preset; CPU")
        print(f"evaluate.main --no-semantic: {pixel:.1f} s -> {args.clips / pixel:.2f} clips/s")
        print(f"evaluate.main (all metrics, incl. model loading and report): {full:.1f} s -> {args.clips / full:.2f} clips/s")
        for name, ms in per_family(root, stims[0]).items():
            print(f"  {name:<45} {ms:8.1f} ms/clip")
    if args.pipeline:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            code = run_pipeline.main(["--data-root", str(Path(tmp) / "data"), "--isolate"])
            print(f"run_pipeline.py (default demo) exit {code}, wall {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
