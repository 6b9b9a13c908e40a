"""The prepare step: one subject's Brain Netflix pickle -> one contiguous float32 array.

Input: the subject's pickle, which holds the vertices of the dataset's ``pickle_roi_set``
(Group41 for the published files, listed in its ``roi_indices_hcp`` when present). Any ROI
set whose vertices the pickle holds can be prepared: a named set (``Group41``) or MMP ROI
names joined by ``+`` (``V1+V2+MT``, see ``utils.rois``); its columns are taken from the
pickle in the order of the ROI set's rule.

Output per subject (paths from ``utils.layout``), written in this order, each atomically:
1. ``<roi_set>.npy``: (n_trials, n_vertices) float32, memory-mappable, one row per trial;
2. ``<roi_set>_trials.csv``: row, stimulus, repeat, split (one line per array row);
3. ``<roi_set>_prepared.json``: the summary, written last, so it marks completion.

NaN policy (DATA_FORMATS section 2, missing trials are NaN-filled upstream):
``drop`` (default) removes every trial that has a NaN; ``zero`` replaces NaNs by 0 (the
z-scored mean) and keeps the trial. Counts are reported either way; NaN never reaches
training.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from utils import layout
from utils.datasets import (
    DatasetSpec,
    download_command,
    expected_rows,
    find_subject_folder,
    get_spec,
    row_stimuli,
)
from utils.io import atomic_path, read_json, write_json, write_text
from utils.rois import DEFAULT_ROI_SET, check_roi_indices, get_roi_set, parse_roi_set, select_vertices
from utils.safe_pickle import load_pickle

NAN_POLICIES = ("drop", "zero")
_CHUNK_ROWS = 256


@dataclass
class Trials:
    """One row per prepared trial: stimulus name, repeat index (from 0), split."""

    stimulus: list[str]
    repeat: np.ndarray  # (T,) int64
    split: np.ndarray  # (T,) str, 'train' or 'test'

    def __len__(self) -> int:
        return len(self.stimulus)

    def select(self, mask: np.ndarray) -> Trials:
        """Rows where ``mask`` (T,) is true."""
        idx = np.flatnonzero(mask)
        return Trials([self.stimulus[i] for i in idx], self.repeat[idx], self.split[idx])


@dataclass
class Prepared:
    """A prepared subject: ``betas`` (T, V) float32 (memory-mapped) and its trials table."""

    dataset: str
    subject: int
    roi_set: str
    betas: np.ndarray  # (T, V) float32
    trials: Trials


def check_nan_policy(nan_policy: str) -> None:
    """Raise for a NaN policy other than those in ``NAN_POLICIES``."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"Unknown nan_policy={nan_policy!r}. Use one of {NAN_POLICIES}.")


def skipped_summary(data_root: str | Path | None, dataset: str, subject: int, roi_set: str, overwrite: bool) -> dict | None:
    """The summary (with ``skipped``) of a subject already prepared, unless ``overwrite``; else None."""
    if overwrite or not is_prepared(data_root, dataset, subject, roi_set):
        return None
    folder = find_subject_folder(data_root, dataset, subject)
    return {**read_json(layout.prepared_summary_path(data_root, dataset, folder, roi_set)), "skipped": True}


def write_prepared_array(data_root: str | Path | None, dataset: str, subject: int, roi_set: str):
    """Context manager giving the temporary path of the prepared array; renamed into place on success.

    Removes an old summary (the completion mark) first, so that an interrupted rewrite is
    never taken as complete.
    """
    folder = find_subject_folder(data_root, dataset, subject)
    layout.prepared_summary_path(data_root, dataset, folder, roi_set).unlink(missing_ok=True)
    return atomic_path(layout.prepared_array_path(data_root, dataset, folder, roi_set), suffix=".tmp.npy")


def source_pickle_path(data_root: str | Path | None, spec: DatasetSpec, subject: int) -> Path:
    """The subject's downloaded pickle (it holds the ``spec.pickle_roi_set`` vertices)."""
    folder = find_subject_folder(data_root, spec.name, subject)
    return layout.pickle_path(data_root, spec.name, folder, spec.pickle_roi_set, spec.suffix)


def validate_pickle(data: object, spec: DatasetSpec, subject: int, n_vertices: int, source: str) -> None:
    """Check keys, shapes and ``roi_indices_hcp`` of a loaded pickle; raise naming ``source``.

    n_vertices: the size of the pickle's ROI set (``spec.pickle_roi_set``).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a dict of arrays, found {type(data).__name__}.")
    needed = [a.key for a in spec.arrays] + [a.order_key for a in spec.arrays if a.order_key]
    missing = [k for k in needed if k not in data]
    if missing:
        raise KeyError(f"{source}: missing key(s) {missing}; expected {needed}, found {sorted(data)}.")
    for array in spec.arrays:
        value = data[array.key]
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) != array.ndim or shape[-1] != n_vertices:
            want = "(stimuli, repeats, V)" if array.ndim == 3 else "(trials, V)"
            raise ValueError(f"{source}: {array.key!r} should be {want} with V={n_vertices}, found shape {shape}.")
        rows = expected_rows(spec, array, subject)
        if rows is not None and shape[0] != rows:
            raise ValueError(f"{source}: {array.key!r} should have {rows} rows for {spec.name} subject {subject}, found {shape[0]}.")
        if array.ndim == 3 and array.split == "train" and shape[1] != spec.repeats["train"]:
            raise ValueError(f"{source}: {array.key!r} should have {spec.repeats['train']} repeats, found {shape[1]}.")
    if "roi_indices_hcp" in data:
        check_roi_indices(np.asarray(data["roi_indices_hcp"]), spec.pickle_roi_set, source=source)


def trial_table(data: dict, spec: DatasetSpec) -> tuple[list[tuple[str, int, int]], Trials]:
    """Rows of every array flattened to trials, before any NaN policy.

    Returns ``blocks`` = (key, first_trial, n_trials) per array and the full Trials.
    """
    stimuli: list[str] = []
    repeats: list[int] = []
    splits: list[str] = []
    blocks = []
    n_train_rows = 0
    for array in spec.arrays:
        value = data[array.key]
        order = data.get(array.order_key) if array.order_key else None
        names = row_stimuli(spec, array, value.shape[0], order, n_train_rows)
        if array.split == "train":
            n_train_rows = value.shape[0]
        row_split = spec.row_split(names) if array.split is None else [array.split] * len(names)
        start = len(stimuli)
        if array.ndim == 3:
            n_rep = value.shape[1]
            for name, split in zip(names, row_split, strict=True):
                stimuli += [name] * n_rep
                repeats += list(range(n_rep))
                splits += [split] * n_rep
        else:
            seen: dict[str, int] = {}
            for name in names:
                repeats.append(seen.get(name, 0))
                seen[name] = seen.get(name, 0) + 1
            stimuli += names
            splits += [array.split] * len(names)
        blocks.append((array.key, start, len(stimuli) - start))
    return blocks, Trials(stimuli, np.asarray(repeats, dtype=np.int64), np.asarray(splits))


def _rows_2d(value: np.ndarray) -> np.ndarray:
    """(S, R, V) or (T, V) -> (S*R or T, V) view."""
    return value.reshape(-1, value.shape[-1])


def _nan_rows(value: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """(T,) bool: trials holding any NaN in ``columns`` (None: all), computed in chunks to bound memory."""
    rows = _rows_2d(value)
    out = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), _CHUNK_ROWS):
        chunk = rows[start : start + _CHUNK_ROWS]
        out[start : start + _CHUNK_ROWS] = np.isnan(chunk if columns is None else chunk[:, columns]).any(axis=1)
    return out


def trials_to_csv(trials: Trials) -> str:
    """The trials table as CSV text (header: row, stimulus, repeat, split)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "stimulus", "repeat", "split"])
    for i, (stim, rep, split) in enumerate(zip(trials.stimulus, trials.repeat, trials.split, strict=True)):
        writer.writerow([i, stim, int(rep), split])
    return buffer.getvalue()


def read_trials_csv(path: Path) -> Trials:
    """Read a trials table written by ``trials_to_csv``."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and list(rows[0]) != ["row", "stimulus", "repeat", "split"]:
        raise ValueError(f"{path}: expected columns row,stimulus,repeat,split, found {list(rows[0])}.")
    return Trials(
        [r["stimulus"] for r in rows],
        np.asarray([int(r["repeat"]) for r in rows], dtype=np.int64),
        np.asarray([r["split"] for r in rows]),
    )


def _paths(data_root: str | Path | None, dataset: str, folder: str, roi_set: str) -> tuple[Path, Path, Path]:
    """The prepared array, trials table and summary of one subject folder."""
    array_path = layout.prepared_array_path(data_root, dataset, folder, roi_set)
    trials_path = layout.prepared_trials_path(data_root, dataset, folder, roi_set)
    return array_path, trials_path, layout.prepared_summary_path(data_root, dataset, folder, roi_set)


def is_prepared(data_root: str | Path | None, dataset: str, subject: int, roi_set: str = DEFAULT_ROI_SET) -> bool:
    """True when the subject's prepared files are all there and consistent."""
    folder = find_subject_folder(data_root, dataset, subject)
    array_path, trials_path, summary_path = _paths(data_root, dataset, folder, roi_set)
    summary = read_json(summary_path)
    if summary is None or not array_path.exists() or not trials_path.exists():
        return False
    try:
        shape = np.load(array_path, mmap_mode="r").shape
    except (ValueError, OSError):
        return False
    return list(shape) == summary["shape"]


def prepare_subject(
    data_root: str | Path | None,
    dataset: str,
    subject: int,
    roi_set: str = DEFAULT_ROI_SET,
    overwrite: bool = False,
    nan_policy: str = "drop",
) -> dict:
    """Convert one subject's pickle to the prepared layout of ``roi_set``; return the summary dict.

    ``roi_set``'s vertices are selected from the pickle's (which must hold them all; the error
    names the missing ROIs). Skips a subject that is already prepared unless ``overwrite``.
    The summary has the shape, trial counts per split, NaN counts and the policy applied.
    """
    check_nan_policy(nan_policy)
    spec = get_spec(dataset)
    parse_roi_set(roi_set)  # an unknown ROI set fails before the pickle is loaded
    done = skipped_summary(data_root, dataset, subject, roi_set, overwrite)
    if done is not None:
        return done
    pkl = source_pickle_path(data_root, spec, subject)
    if not pkl.exists():
        raise FileNotFoundError(f"Missing pickle {pkl}: run `{download_command(spec, subject)}` first.")
    pickle_vertices = get_roi_set(spec.pickle_roi_set)  # (V_pickle,) grayordinates
    data = load_pickle(pkl)
    validate_pickle(data, spec, subject, len(pickle_vertices), str(pkl))  # its roi_indices_hcp follow the rule
    columns = select_vertices(pickle_vertices, spec.pickle_roi_set, roi_set, str(pkl))  # (V,) or None = all
    n_vertices = len(pickle_vertices) if columns is None else len(columns)
    blocks, trials = trial_table(data, spec)
    nan_mask = np.concatenate([_nan_rows(data[key], columns) for key, _, _ in blocks])
    keep = ~nan_mask if nan_policy == "drop" else np.ones(len(trials), dtype=bool)
    kept = trials.select(keep)

    with write_prepared_array(data_root, dataset, subject, roi_set) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(kept), n_vertices))
        write_row = 0
        for key, start, count in blocks:
            rows = _rows_2d(data[key])
            for lo in range(0, count, _CHUNK_ROWS):
                chunk = rows[lo : lo + _CHUNK_ROWS]  # (<=256, V_pickle)
                if columns is not None:
                    chunk = chunk[:, columns]  # (<=256, V)
                chunk = np.asarray(chunk, dtype=np.float32)
                chunk = chunk[keep[start + lo : start + lo + len(chunk)]]
                if nan_policy == "zero":
                    chunk = np.nan_to_num(chunk, nan=0.0)
                out[write_row : write_row + len(chunk)] = chunk
                write_row += len(chunk)
            data[key] = None
        out.flush()
        del out
    summary = prepared_summary(dataset, subject, roi_set, pkl, trials, nan_mask, keep, nan_policy, n_vertices)
    finish_prepared(data_root, dataset, subject, roi_set, kept, summary)
    return {**summary, "skipped": False}


def prepared_summary(
    dataset: str,
    subject: int,
    roi_set: str,
    source: Path,
    trials: Trials,
    nan_mask: np.ndarray,
    keep: np.ndarray,
    nan_policy: str,
    n_vertices: int,
) -> dict:
    """The summary of a prepared subject from all its trials (T,), NaN mask (T,) and kept mask (T,)."""
    kept = trials.select(keep)
    return {
        "dataset": dataset,
        "subject": subject,
        "roi_set": roi_set,
        "source": str(source),
        "shape": [len(kept), n_vertices],
        "trials": {s: int((kept.split == s).sum()) for s in ("train", "test")},
        "stimuli": {s: len(set(np.asarray(kept.stimulus)[kept.split == s])) for s in ("train", "test")},
        "nan_trials": int(nan_mask.sum()),
        "nan_trials_by_split": {s: int((nan_mask & (trials.split == s)).sum()) for s in ("train", "test")},
        "nan_policy": nan_policy,
        "dropped_trials": int((~keep).sum()),
    }


def finish_prepared(data_root: str | Path | None, dataset: str, subject: int, roi_set: str, kept: Trials, summary: dict) -> None:
    """After the array is in place: write the trials table, then the summary that marks completion."""
    folder = find_subject_folder(data_root, dataset, subject)
    _, trials_path, summary_path = _paths(data_root, dataset, folder, roi_set)
    write_text(trials_path, trials_to_csv(kept))
    write_json(summary_path, summary)


def load_prepared(data_root: str | Path | None, dataset: str, subject: int, roi_set: str = DEFAULT_ROI_SET) -> Prepared:
    """Memory-map a prepared subject; a missing or incomplete one names the command to run."""
    folder = find_subject_folder(data_root, dataset, subject)
    array_path, trials_path, summary_path = _paths(data_root, dataset, folder, roi_set)
    if not is_prepared(data_root, dataset, subject, roi_set):
        raise FileNotFoundError(
            f"Subject {subject} of {dataset} is not prepared ({summary_path} missing or inconsistent): "
            f"run `python download_data.py --dataset {dataset} --subjects {subject} --prepare` first."
        )
    betas = np.load(array_path, mmap_mode="r")
    trials = read_trials_csv(trials_path)
    if len(trials) != betas.shape[0]:
        raise ValueError(f"{trials_path} has {len(trials)} rows but {array_path} has {betas.shape[0]}; rerun with --overwrite.")
    return Prepared(dataset, subject, roi_set, betas, trials)


def average_repeats(prepared: Prepared, split: str) -> tuple[list[str], np.ndarray]:
    """Mean over repeats per stimulus of ``split``: (stimuli in first-appearance order, X (S, V) float32)."""
    if split not in ("train", "test"):
        raise ValueError(f"Unknown split={split!r}; use 'train' or 'test'.")
    rows = np.flatnonzero(prepared.trials.split == split)
    names = [prepared.trials.stimulus[i] for i in rows]
    stimuli = list(dict.fromkeys(names))
    index = {s: i for i, s in enumerate(stimuli)}
    col = np.asarray([index[n] for n in names])
    counts = np.bincount(col, minlength=len(stimuli)).astype(np.float64)
    weights = 1.0 / counts[col]
    averager = scipy.sparse.csr_matrix((weights, (col, np.arange(len(rows)))), shape=(len(stimuli), len(rows)))
    x = averager @ np.asarray(prepared.betas[rows], dtype=np.float64)
    return stimuli, x.astype(np.float32)


def summary_text(summary: dict) -> str:
    """One line per subject for the console."""
    status = "skipped (already prepared)" if summary.get("skipped") else "prepared"
    return (
        f"{summary['dataset']} sub{summary['subject']:02d}: {status}, shape {tuple(summary['shape'])}, "
        f"train {summary['trials']['train']} / test {summary['trials']['test']} trials, "
        f"{summary['nan_trials']} NaN trial(s) -> policy {summary['nan_policy']!r}"
    )

