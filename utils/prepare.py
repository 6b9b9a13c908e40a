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

Non-finite policy (DATA_FORMATS section 2, missing trials are NaN-filled upstream): a trial
is non-finite when one of its values is NaN or +-Inf once stored as float32 (a value beyond
float32's range counts as Inf). ``drop`` (default) removes every such trial; ``zero``
replaces NaN and +-Inf by 0 (the z-scored mean) and keeps the trial. NaN and Inf trials are
counted either way (per split too); a split left without trials is warned about and listed
in the summary's ``warnings``. Non-finite values never reach training.

Provenance: the summary's ``settings`` are what determine the array (ROI set, policy, the
source's file name, size and sha256, ``PREPARE_VERSION``). A rerun with the same settings
skips; with other settings, or over a summary without them, it refuses naming each
difference and ``--overwrite``. Each subject is prepared under ``utils.locks.run_lock`` on
its folder (a second copy stops, a dead one's lock is taken over), which first removes the
temporary files a killed run left there.
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
    check_stimuli,
    download_command,
    expected_rows,
    find_subject_folder,
    get_spec,
    row_stimuli,
)
from utils.io import ArtifactError, atomic_path, load_npy, read_json, remove_stale_temps, sha256_file, write_json, write_text
from utils.locks import run_lock
from utils.provenance import SettingsMismatchError, differences
from utils.rois import DEFAULT_ROI_SET, check_roi_indices, get_roi_set, parse_roi_set, select_vertices
from utils.safe_pickle import load_pickle
from utils.synthetic import demo_command, missing_demo_subject

NAN_POLICIES = ("drop", "zero")
# The version of the conversion; a summary made by another one is refused on rerun.
# 2: +-Inf (and float32 overflow) handled like NaN.
PREPARE_VERSION = 2
SPLITS = ("train", "test")
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


def prepare_command(
    dataset: str, subject: int, roi_set: str = DEFAULT_ROI_SET, nan_policy: str = "drop", step: str = "--prepare",
    data_root: str | Path | None = None,
) -> str:
    """The command that prepares one subject with these settings (``step``: ``--prepare`` or ``--from-indiv``)."""
    command = f"python download_data.py --dataset {dataset}{layout.root_flag(data_root)} --subjects {subject} {step}"
    if roi_set != DEFAULT_ROI_SET:
        command += f" --roi-set {roi_set}"
    return command + (f" --nan-policy {nan_policy}" if nan_policy != "drop" else "")


def prepare_settings(roi_set: str, nan_policy: str, source: dict) -> dict:
    """The settings that determine a prepared array: ROI set, policy, source record, code version."""
    return {"roi_set": roi_set, "nan_policy": nan_policy, **source, "prepare_version": PREPARE_VERSION}


def file_source(path: Path, subject_dir: Path, summary: dict | None) -> tuple[dict, int]:
    """``({"source", "source_size", "source_sha256"}, mtime_ns)`` of a source file.

    The sha256 recorded in ``summary`` is reused when the file's size and mtime are those it
    recorded (a rerun does not hash a multi-GB pickle again).
    """
    stat = path.stat()
    recorded = (summary or {}).get("settings") or {}
    same_file = recorded.get("source_size") == stat.st_size and (summary or {}).get("source_mtime_ns") == stat.st_mtime_ns
    digest = recorded.get("source_sha256") if same_file else None
    source = {
        "source": path.relative_to(subject_dir).as_posix(),
        "source_size": stat.st_size,
        "source_sha256": digest or sha256_file(path),
    }
    return source, stat.st_mtime_ns


def reuse_prepared(summary: dict | None, settings: dict, overwrite: bool, summary_path: Path, command: str) -> dict | None:
    """The summary (with ``skipped``) of a subject prepared with ``settings``; None when it is to be made.

    Refuses (``SettingsMismatchError``) a preparation made with other settings, or one without
    a record of them, unless ``overwrite``; the message lists each difference and the way on.
    """
    if summary is None or overwrite:
        return None
    recorded = summary.get("settings")
    if not isinstance(recorded, dict):
        raise SettingsMismatchError(
            f"{summary_path} has no record of the settings that made it (an older version of prepare): "
            f"pass --overwrite to prepare it again (`{command} --overwrite`)."
        )
    diffs = differences(recorded, settings)
    if diffs:
        raise SettingsMismatchError(
            f"{summary_path} records other settings ({'; '.join(diffs)}): pass --overwrite to prepare it again "
            f"with the asked ones (`{command} --overwrite`), or ask for the recorded ones."
        )
    return {**summary, "skipped": True}


def recorded_summary(data_root: str | Path | None, dataset: str, subject: int, roi_set: str) -> dict | None:
    """The summary of a complete preparation of ``roi_set`` (None when it is missing, incomplete or corrupt)."""
    if not is_prepared(data_root, dataset, subject, roi_set):
        return None
    folder = find_subject_folder(data_root, dataset, subject)
    return read_json(layout.prepared_summary_path(data_root, dataset, folder, roi_set))


def source_command(data_root: str | Path | None, spec: DatasetSpec, subject: int) -> str:
    """The command that makes a subject's pickle (the demo: with the sizes it was generated with)."""
    return demo_command(data_root) if spec.synthetic else download_command(spec, subject, data_root)


def missing_pickle_message(data_root: str | Path | None, spec: DatasetSpec, subject: int, path: Path) -> str:
    """What to say when a subject's pickle is missing: the path and the command that makes it."""
    if spec.synthetic:
        return f"Missing pickle {path}: {missing_demo_subject(data_root, subject)}"
    return f"Missing pickle {path}: run `{download_command(spec, subject, data_root)}` first."


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
        raise ValueError(f"{source}: missing key(s) {missing}; expected {needed}, found {sorted(data)}.")
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


def _as_float32(chunk: np.ndarray) -> np.ndarray:
    """A chunk as stored (float32); values beyond float32's range become +-Inf without a warning."""
    with np.errstate(over="ignore"):
        return np.asarray(chunk, dtype=np.float32)


def _nonfinite_rows(value: np.ndarray, columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(nan, inf)``, each (T,) bool: trials holding a NaN, trials holding a +-Inf in ``columns`` (None: all).

    Checked on the float32 values that are stored, in chunks to bound memory.
    """
    rows = _rows_2d(value)
    nan = np.zeros(len(rows), dtype=bool)
    inf = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), _CHUNK_ROWS):
        chunk = rows[start : start + _CHUNK_ROWS]
        chunk = _as_float32(chunk if columns is None else chunk[:, columns])  # (<=256, V)
        nan[start : start + _CHUNK_ROWS] = np.isnan(chunk).any(axis=1)
        inf[start : start + _CHUNK_ROWS] = np.isinf(chunk).any(axis=1)
    return nan, inf


def trials_to_csv(trials: Trials) -> str:
    """The trials table as CSV text (header: row, stimulus, repeat, split)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "stimulus", "repeat", "split"])
    for i, (stim, rep, split) in enumerate(zip(trials.stimulus, trials.repeat, trials.split, strict=True)):
        writer.writerow([i, stim, int(rep), split])
    return buffer.getvalue()


def _row_ok(index: int, row: dict) -> bool:
    """True for a complete trials-table line number ``index`` (a truncated line lacks fields)."""
    try:
        return None not in row and int(row["row"]) == index and int(row["repeat"]) >= 0 and row["split"] in SPLITS
    except (TypeError, ValueError):
        return False


def read_trials_csv(path: Path, remake: str = "delete it and prepare the subject again with --overwrite") -> Trials:
    """Read a trials table written by ``trials_to_csv``; a truncated or malformed one raises naming it and ``remake``."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and list(rows[0]) != ["row", "stimulus", "repeat", "split"]:
        raise ArtifactError(f"{path}: expected columns row,stimulus,repeat,split, found {list(rows[0])}: {remake}.")
    bad = next((i for i, row in enumerate(rows) if not _row_ok(i, row)), None)
    if bad is not None:
        raise ArtifactError(f"{path} is truncated or malformed at line {bad + 2} (expected row {bad}, a stimulus, a repeat >= 0 and a "
                            f"split of {list(SPLITS)}; found {dict(rows[bad])}): {remake}.")
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


def _csv_rows(path: Path) -> int:
    """Data lines of a trials table (its lines less the header)."""
    with open(path, "rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def is_prepared(data_root: str | Path | None, dataset: str, subject: int, roi_set: str = DEFAULT_ROI_SET) -> bool:
    """True when the subject's prepared files are all there and consistent (a corrupt one: False, to be redone)."""
    folder = find_subject_folder(data_root, dataset, subject)
    array_path, trials_path, summary_path = _paths(data_root, dataset, folder, roi_set)
    try:
        summary = read_json(summary_path)
    except ArtifactError:
        return False
    if not isinstance(summary, dict) or not array_path.exists() or not trials_path.exists():
        return False
    try:
        shape = np.load(array_path, mmap_mode="r").shape
    except (ValueError, OSError, EOFError):
        return False
    return list(shape) == summary.get("shape") and _csv_rows(trials_path) == shape[0]


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
    names the missing ROIs). A subject already prepared with the same settings is skipped; one
    prepared with other settings is refused unless ``overwrite`` (see ``reuse_prepared``).
    The summary has the shape, trial counts per split, NaN and Inf counts, the policy applied,
    warnings (a split left empty) and the settings.
    """
    check_nan_policy(nan_policy)
    spec = get_spec(dataset)
    parse_roi_set(roi_set)  # an unknown ROI set fails before the pickle is loaded
    pkl = source_pickle_path(data_root, spec, subject)
    folder = find_subject_folder(data_root, dataset, subject)
    subject_dir = layout.betas_dir(data_root, dataset, folder)
    command = prepare_command(dataset, subject, roi_set, nan_policy, data_root=data_root)
    if not pkl.exists() and (overwrite or not is_prepared(data_root, dataset, subject, roi_set)):
        raise FileNotFoundError(missing_pickle_message(data_root, spec, subject, pkl))
    with run_lock(subject_dir, "prepare"):
        remove_stale_temps(subject_dir)
        summary = recorded_summary(data_root, dataset, subject, roi_set)
        if pkl.exists():
            source, mtime_ns = file_source(pkl, subject_dir, summary)
        else:  # prepared, then the pickle was deleted: its record stands for it
            source, mtime_ns = {k: v for k, v in (summary.get("settings") or {}).items() if k.startswith("source")}, None
        settings = prepare_settings(roi_set, nan_policy, source)
        done = reuse_prepared(summary, settings, overwrite, layout.prepared_summary_path(data_root, dataset, folder, roi_set), command)
        if done is not None:
            return done
        summary = convert_pickle(data_root, spec, subject, roi_set, nan_policy, pkl)
        summary.update(settings=settings, source_mtime_ns=mtime_ns)
        finish_prepared(data_root, dataset, subject, roi_set, summary.pop("kept"), summary)
    return {**summary, "skipped": False}


def convert_pickle(data_root: str | Path | None, spec: DatasetSpec, subject: int, roi_set: str, nan_policy: str, pkl: Path) -> dict:
    """Load and check the pickle, write the prepared array in place; its summary, with the kept ``Trials`` as ``kept``."""
    remake = f"delete it and run `{source_command(data_root, spec, subject)}`"
    pickle_vertices = get_roi_set(spec.pickle_roi_set)  # (V_pickle,) grayordinates
    data = load_pickle(pkl, remake)
    validate_pickle(data, spec, subject, len(pickle_vertices), str(pkl))  # its roi_indices_hcp follow the rule
    columns = select_vertices(pickle_vertices, spec.pickle_roi_set, roi_set, str(pkl))  # (V,) or None = all
    n_vertices = len(pickle_vertices) if columns is None else len(columns)
    blocks, trials = trial_table(data, spec)
    masks = [_nonfinite_rows(data[key], columns) for key, _, _ in blocks]
    nan_mask = np.concatenate([nan for nan, _ in masks])  # (T,)
    inf_mask = np.concatenate([inf for _, inf in masks])  # (T,)
    keep = ~(nan_mask | inf_mask) if nan_policy == "drop" else np.ones(len(trials), dtype=bool)

    with write_prepared_array(data_root, spec.name, subject, roi_set) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(int(keep.sum()), n_vertices))
        write_row = 0
        for key, start, count in blocks:
            rows = _rows_2d(data[key])
            for lo in range(0, count, _CHUNK_ROWS):
                chunk = rows[lo : lo + _CHUNK_ROWS]  # (<=256, V_pickle)
                if columns is not None:
                    chunk = chunk[:, columns]  # (<=256, V)
                chunk = _as_float32(chunk)
                chunk = chunk[keep[start + lo : start + lo + len(chunk)]]
                if nan_policy == "zero":
                    chunk = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0)
                out[write_row : write_row + len(chunk)] = chunk
                write_row += len(chunk)
            data[key] = None
        out.flush()
        del out
    summary = prepared_summary(spec.name, subject, roi_set, pkl, trials, nan_mask, keep, nan_policy, n_vertices, inf_mask)
    summary["folder"] = pkl.parents[1].name
    return {**summary, "kept": trials.select(keep)}


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
    inf_mask: np.ndarray | None = None,
) -> dict:
    """The summary of a prepared subject from all its trials (T,), NaN mask (T,), kept mask (T,) and Inf mask (T,)."""
    inf_mask = np.zeros(len(trials), dtype=bool) if inf_mask is None else inf_mask
    kept = trials.select(keep)
    by_split = {s: trials.split == s for s in SPLITS}  # (T,) bool each
    summary = {
        "dataset": dataset,
        "subject": subject,
        "roi_set": roi_set,
        "source": str(source),
        "shape": [len(kept), n_vertices],
        "trials": {s: int((kept.split == s).sum()) for s in SPLITS},
        "stimuli": {s: len(set(np.asarray(kept.stimulus)[kept.split == s])) for s in SPLITS},
        "nan_trials": int(nan_mask.sum()),
        "nan_trials_by_split": {s: int((nan_mask & by_split[s]).sum()) for s in SPLITS},
        "inf_trials": int(inf_mask.sum()),
        "inf_trials_by_split": {s: int((inf_mask & by_split[s]).sum()) for s in SPLITS},
        "nan_policy": nan_policy,
        "dropped_trials": int((~keep).sum()),
    }
    summary["warnings"] = empty_split_warnings(summary, {s: int(by_split[s].sum()) for s in SPLITS})
    return summary


def empty_split_warnings(summary: dict, source_trials: dict[str, int]) -> list[str]:
    """One line per split left without trials: how many the source had and why none is left."""
    warnings = []
    for split in SPLITS:
        if summary["trials"][split]:
            continue
        total = source_trials[split]
        why = (
            f"all {total} of its trials are non-finite ({summary['nan_trials_by_split'][split]} with NaN, "
            f"{summary['inf_trials_by_split'][split]} with Inf) and policy {summary['nan_policy']!r} dropped them"
            if total else "the source holds none"
        )
        warnings.append(f"{summary['dataset']} sub{summary['subject']:02d} has no {split} trial left: {why}.")
    return warnings


def finish_prepared(data_root: str | Path | None, dataset: str, subject: int, roi_set: str, kept: Trials, summary: dict) -> None:
    """After the array is in place: write the trials table, then the summary that marks completion."""
    folder = find_subject_folder(data_root, dataset, subject)
    _, trials_path, summary_path = _paths(data_root, dataset, folder, roi_set)
    write_text(trials_path, trials_to_csv(kept))
    write_json(summary_path, summary)


def load_prepared(data_root: str | Path | None, dataset: str, subject: int, roi_set: str = DEFAULT_ROI_SET) -> Prepared:
    """Memory-map a prepared subject; a missing, incomplete or corrupt file is named with the command that remakes it."""
    folder = find_subject_folder(data_root, dataset, subject)
    array_path, trials_path, summary_path = _paths(data_root, dataset, folder, roi_set)
    remake = f"rerun `{prepare_command(dataset, subject, roi_set, data_root=data_root)} --overwrite`"
    summary = read_json(summary_path, remake=remake)
    if summary is None:
        raise FileNotFoundError(
            f"Subject {subject} of {dataset} is not prepared ({summary_path} missing): "
            f"run `{prepare_command(dataset, subject, roi_set, data_root=data_root)}` first."
        )
    if not isinstance(summary, dict) or not isinstance(summary.get("shape"), list):
        raise ArtifactError(f"{summary_path} is not a prepared summary (no 'shape'): {remake}.")
    betas = load_npy(array_path, remake, mmap=True, shape=tuple(summary["shape"]))
    if not trials_path.exists():
        raise FileNotFoundError(f"Missing {trials_path}: {remake}.")
    trials = read_trials_csv(trials_path, remake)
    check_stimuli(get_spec(dataset), sorted(set(trials.stimulus)), f"{trials_path} (column 'stimulus')")
    if len(trials) != betas.shape[0]:
        raise ArtifactError(f"{trials_path} has {len(trials)} rows but {array_path} has {betas.shape[0]}: {remake}.")
    bad = first_nonfinite_row(betas)
    if bad is not None:
        raise ArtifactError(
            f"{array_path}: row {bad} ({dataset} sub{subject:02d}, stimulus {trials.stimulus[bad]!r}, repeat {int(trials.repeat[bad])}) holds "
            f"NaN or Inf, which prepare never writes: prepare the subject again, dropping such trials (--nan-policy drop) or setting "
            f"them to 0 (--nan-policy zero): `{prepare_command(dataset, subject, roi_set, data_root=data_root)} --overwrite`."
        )
    return Prepared(dataset, subject, roi_set, betas, trials)


def first_nonfinite_row(betas: np.ndarray, chunk: int = 4096) -> int | None:
    """Index of the first row of ``betas`` (n_trials, n_vertices) holding NaN or Inf, read in chunks; None when all are finite."""
    for start in range(0, len(betas), chunk):
        rows = np.flatnonzero(~np.isfinite(np.asarray(betas[start:start + chunk])).all(axis=1))
        if rows.size:
            return start + int(rows[0])
    return None


def average_repeats(prepared: Prepared, split: str) -> tuple[list[str], np.ndarray]:
    """Mean over repeats per stimulus of ``split``: (stimuli in first-appearance order, X (S, V) float32)."""
    if split not in SPLITS:
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
    """One line per subject for the console, then one ``WARNING:`` line per warning of the summary."""
    status = "skipped (already prepared)" if summary.get("skipped") else "prepared"
    folder = summary.get("folder")
    where = f" (folder {folder}/)" if folder and folder != f"sub{summary['subject']:02d}" else ""
    line = (
        f"{summary['dataset']} sub{summary['subject']:02d}{where}: {status}, shape {tuple(summary['shape'])}, "
        f"train {summary['trials']['train']} / test {summary['trials']['test']} trials, "
        f"{summary.get('inf_trials', 0)} Inf trial(s), {summary['nan_trials']} NaN trial(s) -> policy {summary['nan_policy']!r}"
    )
    return "\n".join([line, *(f"WARNING: {w}" for w in summary.get("warnings", []))])
