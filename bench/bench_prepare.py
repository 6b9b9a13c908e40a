"""Benchmark of the prepare step and of the prepared layout against the individual-file layout.

Makes a synthetic BMD-sized subject in a temporary folder (nothing is kept or committed):
a float64 pickle with train (1000, 3, 13156) and test (102, 10, 13156), as the real
``Group41_betas-GLMsingle_type-typed_z=1.pkl``, then measures

(a) reading all 4020 trials (betas + trials table) from the prepared layout
    (``load_prepared`` -> in-memory array) vs from the individual-file layout
    (``read_indiv`` over 4020 ``<stim>_rep<k>.npy``): seconds, best of ``--repeats``, with a warm
    page cache and with a cold one (files evicted by ``posix_fadvise`` before each read; the
    eviction is not timed);
(b) peak RAM of ``prepare_subject`` in a child process (``ru_maxrss`` via RUSAGE_CHILDREN) minus the peak of a
    child that only imports the same modules, against the pickle's size.

Usage:
    python bench/bench_prepare.py                 # prints a markdown table
    python bench/bench_prepare.py --repeats 5 --tmp-dir /scratch
"""
from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils import layout  # noqa: E402
from utils.datasets import BMD, N_GROUP41  # noqa: E402
from utils.report import markdown_table  # noqa: E402

_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from utils.prepare import prepare_subject
{work}
"""
# A small launcher runs the measured child and reports RUSAGE_CHILDREN: Linux keeps the peak
# RSS of a process across fork + exec, so a child forked straight from this (large) process
# would start with our peak.
_LAUNCHER = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-c", sys.argv[1]], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def make_pickle(data_root: Path, seed: int = 0) -> Path:
    """Write a BMD-sized float64 pickle for subject 1; return its path."""
    rng = np.random.default_rng(seed)
    data = {
        "train_data_allvoxel": rng.standard_normal((BMD.n_train, BMD.repeats["train"], N_GROUP41)),  # (1000, 3, V)
        "test_data_allvoxel": rng.standard_normal((BMD.n_test, BMD.repeats["test"], N_GROUP41)),  # (102, 10, V)
    }
    path = layout.pickle_path(data_root, BMD.name, "sub01", BMD.pickle_roi_set, BMD.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def child_peak_kib(work: str) -> int:
    """Peak RSS (KiB, Linux ru_maxrss) of a fresh Python running ``work`` after the imports."""
    code = _CHILD.format(repo=str(REPO), work=work)
    out = subprocess.run([sys.executable, "-c", _LAUNCHER, code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def evict_page_cache(folder: Path) -> None:
    """Drop every file under ``folder`` from the page cache (POSIX_FADV_DONTNEED, no root needed)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def best_of(fn, repeats: int, before=None) -> float:
    """Smallest wall time of ``repeats`` calls; ``before`` (untimed) runs ahead of each call.

    Without ``before`` a first untimed call warms the page cache.
    """
    if before is None:
        fn()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per reader (default: %(default)s)")
    parser.add_argument("--tmp-dir", default=None, help="where the temporary data root goes (default: system temp)")
    args = parser.parse_args(argv)

    from utils.indiv import read_indiv, subject_indiv_dir, write_indiv
    from utils.prepare import load_prepared

    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="bench_prepare_") as tmp:
        root = Path(tmp)
        pkl = make_pickle(root)
        pickle_mib = pkl.stat().st_size / 2**20

        baseline = child_peak_kib("")
        start = time.perf_counter()
        peak = child_peak_kib(f"prepare_subject({str(root)!r}, 'bmd', 1, overwrite=True)")
        prepare_s = time.perf_counter() - start
        prepared = load_prepared(root, "bmd", 1)
        n_trials = prepared.betas.shape[0]
        array_mib = prepared.betas.nbytes / 2**20

        indiv = subject_indiv_dir(root, "bmd", 1)
        start = time.perf_counter()
        write_indiv(prepared, indiv, progress=False)
        write_indiv_s = time.perf_counter() - start
        del prepared  # its memory map would pin the array's pages in the page cache

        def read_prepared() -> np.ndarray:
            loaded = load_prepared(root, "bmd", 1)
            return np.array(loaded.betas)  # (T, V) in memory

        def read_files() -> np.ndarray:
            return read_indiv(indiv, "bmd")[0]

        t_prepared = best_of(read_prepared, args.repeats)
        t_indiv = best_of(read_files, args.repeats)
        prepared_dir = layout.betas_dir(root, "bmd", "sub01")
        t_prepared_cold = best_of(read_prepared, args.repeats, before=lambda: evict_page_cache(prepared_dir))
        t_indiv_cold = best_of(read_files, args.repeats, before=lambda: evict_page_cache(prepared_dir))
        np.testing.assert_array_equal(read_prepared(), read_files())

    delta_mib = (peak - baseline) / 1024
    load = os.getloadavg()[0]
    rows = [
        ("read all trials, prepared layout", f"{t_prepared:.3f} s"),
        ("read all trials, individual files", f"{t_indiv:.3f} s ({n_trials} files)"),
        ("speed-up, warm page cache", f"{t_indiv / t_prepared:.1f}x"),
        ("read all trials, cold cache: prepared / individual files", f"{t_prepared_cold:.3f} s / {t_indiv_cold:.3f} s"),
        ("speed-up, cold page cache (files evicted before each read)", f"{t_indiv_cold / t_prepared_cold:.1f}x"),
        ("pickle size", f"{pickle_mib:.0f} MiB"),
        ("prepare peak RSS", f"{peak / 1024:.0f} MiB (baseline process {baseline / 1024:.0f} MiB)"),
        ("prepare peak RSS minus baseline", f"{delta_mib:.0f} MiB = {delta_mib / pickle_mib:.2f}x the pickle"),
        ("prepare wall time (child incl. start-up)", f"{prepare_s:.1f} s"),
        ("write individual files", f"{write_indiv_s:.1f} s"),
        (f"1-min load average at the end ({os.cpu_count()} CPUs)", f"{load:.1f}"),
    ]
    print(markdown_table(["trials x vertices", f"{n_trials} x {N_GROUP41} (float32 {array_mib:.0f} MiB)"], rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
