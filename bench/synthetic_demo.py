"""Benchmark of utils.synthetic.make_demo: wall time of the demo dataset at given sizes.

Builds the demo in a temporary folder (``--rounds`` times, fresh each time), then once more
into the same folder to time the resume path, and prints a Markdown table with the time of
the fresh and resumed builds, the counts written and the size on disk.
Writes nothing outside the temporary folder.

    python bench/synthetic_demo.py
    python bench/synthetic_demo.py --n-subjects 10 --n-train 1000 --n-test 102 --rounds 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.synthetic import make_demo  # noqa: E402


def folder_size(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-subjects", type=int, default=2, help="subjects (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=120, help="train stimuli (default: %(default)s)")
    parser.add_argument("--n-test", type=int, default=24, help="test stimuli (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="video size in px (default: %(default)s)")
    parser.add_argument("--n-frames", type=int, default=24, help="frames per video (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh builds; the median is reported (default: %(default)s)")
    args = parser.parse_args(argv)
    settings = {"n_subjects": args.n_subjects, "n_train": args.n_train, "n_test": args.n_test, "size": args.size, "n_frames": args.n_frames}

    fresh, resume, summary, size = [], [], {}, 0
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = make_demo(tmp, **settings)
            fresh.append(time.perf_counter() - start)
            size = folder_size(Path(tmp))
            start = time.perf_counter()
            make_demo(tmp, **settings)
            resume.append(time.perf_counter() - start)

    print(f"settings: {settings}; {args.rounds} round(s), median reported\n")
    print("| what | value |")
    print("|---|---:|")
    print(f"| fresh build (s) | {statistics.median(fresh):.2f} (min {min(fresh):.2f}, max {max(fresh):.2f}) |")
    print(f"| rerun, everything skipped (s) | {statistics.median(resume):.2f} |")
    print(f"| videos written | {summary['videos_written']} |")
    print(f"| pickles written | {summary['pickles_written']} |")
    print(f"| size on disk (MB) | {size / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
