"""Benchmark of utils.video on real BMD stimuli: decoding, 15-frame sampling, resizing, writing.

Reads the ten real BMD sample videos (default ``../shared/data/bmd_samples/mp4``; any folder
of mp4s works) and prints a Markdown table of median timings over ``--repeats`` rounds,
plus decoding variants (PyAV thread types, decoding without RGB conversion) that inform
the defaults of ``utils.video.read_video``. Writes nothing.

    python bench/video_decoding.py
    python bench/video_decoding.py --videos data/stimuli_bmd/mp4 --limit 50 --repeats 1
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.video import read_video, resize_frames, sample_frames, video_info, write_gif, write_mp4  # noqa: E402

DEFAULT_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "bmd_samples" / "mp4"


def decode_variant(path: Path, thread_type: str | None, to_rgb: bool) -> int:
    """Decode with PyAV directly (a given thread type, with or without RGB conversion); frame count."""
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if thread_type:
            stream.thread_type = thread_type
        for frame in container.decode(stream):
            if to_rgb:
                frame.to_ndarray(format="rgb24")
            count += 1
    return count


def time_interleaved(paths: list[Path], jobs: dict[str, Callable[[Path], object]], repeats: int) -> dict[str, float]:
    """Median over rounds of the mean seconds per video; jobs alternate within each round,
    so a change in machine load hits every job alike."""
    rounds: dict[str, list[float]] = {label: [] for label in jobs}
    for _ in range(repeats):
        for label, fn in jobs.items():
            start = time.perf_counter()
            for path in paths:
                fn(path)
            rounds[label].append((time.perf_counter() - start) / len(paths))
    return {label: statistics.median(values) for label, values in rounds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of mp4 files (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many videos (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds; the median is reported (default: %(default)s)")
    args = parser.parse_args(argv)
    paths = sorted(args.videos.glob("*.mp4"))[: args.limit]
    if not paths:
        raise SystemExit(f"No mp4 files in {args.videos}.")
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    frames = [read_video(p) for p in paths]  # warm-up (file cache, torch import)
    resize_frames(frames[0][:2], 240)
    n_frames = sum(len(f) for f in frames)
    per_video_frames = n_frames / len(paths)

    jobs: dict[str, Callable[[Path], object]] = {
        "read_video (all frames, RGB)": read_video,
        "sample_frames(15)": lambda p: sample_frames(p, 15),
        "sample_frames(15, size=240)": lambda p: sample_frames(p, 15, size=240),
        "sample_frames(15, size=(320, 576))": lambda p: sample_frames(p, 15, size=(320, 576)),
        "video_info (demux only)": video_info,
    }
    for thread_type in (None, "FRAME", "AUTO"):
        for to_rgb in (True, False):
            label = f"PyAV decode thread_type={thread_type or 'default'}{' + rgb24' if to_rgb else ' (no RGB conversion)'}"
            jobs[label] = lambda p, t=thread_type, r=to_rgb: decode_variant(p, t, r)
    timings = time_interleaved(paths, jobs, args.repeats)

    clip = frames[0][np.linspace(0, len(frames[0]) - 1, 15).round().astype(int)]  # (15, H, W, 3)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        writes = {
            "write_mp4 (15 frames, stored size)": lambda p: write_mp4(p / "a.mp4", clip, 5),
            "write_gif (15 frames, stored size)": lambda p: write_gif(p / "a.gif", clip, 5),
        }
        timings.update(time_interleaved([out], writes, args.repeats))
    rows = list(timings.items())

    print(f"videos: {len(paths)} from {args.videos}; {n_frames} frames in all ({per_video_frames:.1f} per video); "
          f"sizes {sorted({f.shape[1:3] for f in frames})}")
    print(f"machine: {platform.machine()}, {platform.python_version()}, PyAV {av.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); median of {args.repeats} rounds\n")
    print("| operation | ms per video | decoded frames/s |")
    print("|---|---:|---:|")
    for label, seconds in rows:
        rate = f"{per_video_frames / seconds:.0f}" if "write" not in label and "info" not in label else "-"
        print(f"| {label} | {seconds * 1000:.1f} | {rate} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
