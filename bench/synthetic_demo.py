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

from utils.cli import positive_int  # noqa: E402
from utils.report import markdown_table  # noqa: E402
from utils.synthetic import add_demo_arguments, demo_settings, make_demo  # noqa: E402


def folder_size(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    """Time fresh and resumed demo builds and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_demo_arguments(parser, help_prefix="")
    parser.add_argument("--rounds", type=positive_int, default=3, help="fresh builds; the median is reported (default: %(default)s)")
    args = parser.parse_args(argv)
    settings = demo_settings(args)

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
    rows = [
        ("fresh build (s)", f"{statistics.median(fresh):.2f} (min {min(fresh):.2f}, max {max(fresh):.2f})"),
        ("rerun, everything skipped (s)", f"{statistics.median(resume):.2f}"),
        ("videos written", summary["videos_written"]),
        ("pickles written", summary["pickles_written"]),
        ("size on disk (MB)", f"{size / 1e6:.1f}"),
    ]
    print(markdown_table(["what", "value"], rows), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
