"""The original individual-file layout: one ``.npy`` vector per trial.

``betas_cifti_<ds>/subNN/indiv_npys/<roi_set><suffix>/<stim>_rep<k>.npy``, each a
(n_vertices,) vector (13156 for Group41), ``k`` counting the repeats of a stimulus from 0 in
order of appearance (the repeat column of the prepared trials table). BMD files named
``NNNN_<k>.npy`` (a renaming step of the original project that was never run) are read too.

Stimulus names follow ``utils.datasets``: BMD/demo ``NNNN``; CC2017 zero-padded
``seg1_begin-002_end-004`` (unpadded files are read and padded); HAD ``<Class>/<clip>``, so a
HAD file lies in a class subfolder whose name keeps its spaces:
``indiv_npys/<roi_set><suffix>/Drum corps/v_Drum corps_id_..._label_1_rep0.npy``. Flat HAD
files (``v_<Class>_id_..._rep0.npy`` directly in the folder) are read as well.

File names are parsed with anchored regexes (``^<stim>_rep(\\d+)\\.npy$`` first, then
``^<stim>_(\\d+)\\.npy$`` where the spec's ``indiv_namings`` allow it) and the stimulus part
is checked against the dataset's naming rule (``spec.canonical``); nothing is matched by
substring. Splits come from the dataset's split rule (``utils.datasets.stimulus_splits``).
A folder that mixes both namings, holds the same
trial twice (e.g. padded and unpadded CC2017 names) or holds unrecognised files is refused.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils import layout
from utils.datasets import N_GROUP41, DatasetSpec, find_subject_folder, get_spec, stimulus_splits
from utils.io import is_complete_npy, remove_stale_temps, save_npy
from utils.locks import run_lock
from utils.prepare import (
    Prepared,
    Trials,
    check_nan_policy,
    finish_prepared,
    is_prepared,
    load_prepared,
    prepare_command,
    prepare_settings,
    prepared_summary,
    recorded_summary,
    reuse_prepared,
    write_prepared_array,
)
from utils.rois import DEFAULT_ROI_SET, get_roi_set, roi_set_size, select_vertices

_REP_RE = re.compile(r"^(?P<stim>.+)_rep(?P<k>\d+)\.npy$")
_NUM_RE = re.compile(r"^(?P<stim>.+)_(?P<k>\d+)\.npy$")
_NAMINGS = {"rep": ("<stim>_rep<k>.npy", _REP_RE), "number": ("NNNN_<k>.npy", _NUM_RE)}
_SPLIT_ORDER = {"train": 0, "test": 1}


def indiv_file(directory: str | Path, stimulus: str, repeat: int) -> Path:
    """Path of one trial's vector: ``<dir>/<stim>_rep<k>.npy`` (HAD: ``<dir>/<Class>/<clip>_rep<k>.npy``)."""
    return Path(directory) / f"{stimulus}_rep{int(repeat)}.npy"


def subject_indiv_dir(data_root: str | Path | None, dataset: str, subject: int, roi_set: str = DEFAULT_ROI_SET) -> Path:
    """``indiv_npys/<roi_set><suffix>/`` of one subject (``subNN`` or an existing ``sub-NN``)."""
    spec = get_spec(dataset)
    return layout.indiv_dir(data_root, dataset, find_subject_folder(data_root, dataset, subject), roi_set, spec.suffix)


def indiv_source(data_root: str | Path | None, dataset: str, subject: int, roi_set: str = DEFAULT_ROI_SET) -> tuple[Path, str]:
    """The indiv folder to build ``roi_set`` from and the ROI set its files hold.

    ``roi_set``'s own folder when it exists, else the folder of the ROI set the dataset's
    pickles hold (``spec.pickle_roi_set``, e.g. Group41), from which ``roi_set`` is selected.
    """
    own = subject_indiv_dir(data_root, dataset, subject, roi_set)
    if own.is_dir():
        return own, roi_set
    source_set = get_spec(dataset).pickle_roi_set
    return subject_indiv_dir(data_root, dataset, subject, source_set), source_set


def write_indiv(
    source: Prepared | tuple[np.ndarray, Trials], out_dir: str | Path, overwrite: bool = False, progress: bool = True
) -> dict:
    """Write every trial of ``source`` as ``<stim>_rep<k>.npy`` under ``out_dir``.

    source: a ``Prepared`` subject or ``(betas (T, V), trials)``. Files already complete with
    the right shape are kept unless ``overwrite``; each file is written atomically.
    Returns counts: ``written``, ``skipped``.
    """
    betas, trials = (source.betas, source.trials) if isinstance(source, Prepared) else source
    if betas.ndim != 2 or betas.shape[0] != len(trials):
        raise ValueError(f"betas must be (n_trials={len(trials)}, V), found shape {tuple(betas.shape)}.")
    out_dir = Path(out_dir)
    seen: set[tuple[str, int]] = set()
    written = skipped = 0
    rows = tqdm(range(len(trials)), desc=f"indiv -> {out_dir.name}", unit="file", disable=not progress)
    for row in rows:
        key = (trials.stimulus[row], int(trials.repeat[row]))
        if key in seen:
            raise ValueError(f"Trial {key[0]!r} repeat {key[1]} appears twice in the trials table; cannot name its file.")
        seen.add(key)
        path = indiv_file(out_dir, *key)
        if not overwrite and is_complete_npy(path, (betas.shape[1],)):
            skipped += 1
            continue
        save_npy(path, np.asarray(betas[row], dtype=np.float32))  # (V,)
        written += 1
    return {"written": written, "skipped": skipped, "directory": str(out_dir)}


def _check_stimulus(spec: DatasetSpec, stem: str) -> str | None:
    """Canonical stimulus for the stimulus part of a file name, or None if it breaks the naming rule."""
    try:
        return spec.canonical(stem)
    except ValueError:
        return None


def parse_indiv_name(dataset: str, relpath: str) -> tuple[str, int, str] | None:
    """``(canonical stimulus, repeat, naming)`` of one file path relative to the folder, or None.

    naming is ``"rep"`` for ``<stim>_rep<k>.npy`` and ``"number"`` for ``NNNN_<k>.npy``
    (where the spec's ``indiv_namings`` allow it: BMD and demo). A path may carry one folder
    where stimulus names do (HAD's class folder).
    """
    spec = get_spec(dataset)
    parts = relpath.split("/")
    if len(parts) > 2 or (len(parts) == 2 and not spec.stimulus_folders):
        return None
    name = parts[-1]
    for naming, (_, regex) in _NAMINGS.items():
        match = regex.match(name)
        if not match:
            continue
        if naming not in spec.indiv_namings:
            return None
        # HAD: the class comes from the clip name when it has one (the folder may spell it with _).
        stimulus = _check_stimulus(spec, match["stim"])
        if stimulus is None and len(parts) == 2:
            stimulus = _check_stimulus(spec, f"{parts[0]}/{match['stim']}")
        if stimulus is None:
            continue
        if len(parts) == 2 and stimulus.split("/", 1)[0].replace(" ", "_") != parts[0].replace(" ", "_"):
            return None
        return stimulus, int(match["k"]), naming
    return None


def _natural_key(text: str) -> list:
    """Sort key that orders ``seg2`` before ``seg10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def default_splits(dataset: str, stimuli: list[str], data_root: str | Path | None = None, subject: int | None = None) -> dict[str, str]:
    """Split of each stimulus by the dataset's split rule (``utils.datasets.stimulus_splits``).

    Per-subject splits (HAD, from ``metadata_had/had_{train,test}_set_per_subject.json``)
    need ``data_root`` and ``subject``; the demo's come from its annotations under ``data_root``.
    """
    return stimulus_splits(get_spec(dataset), stimuli, data_root, subject)


def scan_indiv(directory: str | Path, dataset: str) -> list[tuple[str, int, Path]]:
    """``(stimulus, repeat, path)`` of every trial file in ``directory``; refuses ambiguous folders."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Missing individual-file folder {directory}: write it with "
            f"`python download_data.py --dataset {dataset} --subjects N --write-indiv`."
        )
    found: dict[tuple[str, int], Path] = {}
    namings: dict[str, Path] = {}
    unknown: list[str] = []
    for path in sorted(directory.rglob("*")):
        if path.is_dir() or path.name.startswith("."):
            continue
        rel = path.relative_to(directory).as_posix()
        parsed = parse_indiv_name(dataset, rel)
        if parsed is None:
            unknown.append(rel)
            continue
        stimulus, repeat, naming = parsed
        namings.setdefault(naming, path)
        if (stimulus, repeat) in found:
            raise ValueError(
                f"{directory}: trial {stimulus!r} repeat {repeat} is stored twice "
                f"({found[(stimulus, repeat)].name} and {path.name}); keep one of them."
            )
        found[(stimulus, repeat)] = path
    if unknown:
        allowed = " or ".join(repr(_NAMINGS[n][0]) for n in get_spec(dataset).indiv_namings)
        raise ValueError(f"{directory}: {len(unknown)} file(s) do not follow the {dataset} naming {allowed}: {unknown[:5]}.")
    if len(namings) > 1:
        raise ValueError(
            f"{directory} mixes '<stim>_rep<k>.npy' files (e.g. {namings['rep'].name}) and 'NNNN_<k>.npy' files "
            f"(e.g. {namings['number'].name}); move one kind out so each trial has one name."
        )
    if not found:
        raise FileNotFoundError(f"{directory} holds no trial files ('<stim>_rep<k>.npy').")
    return [(s, k, p) for (s, k), p in found.items()]


def read_indiv(
    directory: str | Path,
    dataset: str,
    n_vertices: int = N_GROUP41,
    splits: dict[str, str] | None = None,
    data_root: str | Path | None = None,
    subject: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, Trials]:
    """Read an individual-file folder into ``betas`` (T, V) float32 and its ``Trials``.

    Rows are ordered train then test, stimuli in natural order, repeats ascending (the
    prepared order for BMD and the demo). ``splits`` maps stimulus -> split; by default the
    dataset's rule (see ``default_splits``). Every file must hold a (n_vertices,) vector.
    """
    entries = scan_indiv(directory, dataset)
    stimuli = sorted({s for s, _, _ in entries})
    splits = splits if splits is not None else default_splits(dataset, stimuli, data_root, subject)
    no_split = [s for s in stimuli if splits.get(s) not in _SPLIT_ORDER]
    if no_split:
        raise ValueError(f"{directory}: no train/test split known for stimuli {no_split[:5]} ({len(no_split)} in all).")
    entries.sort(key=lambda e: (_SPLIT_ORDER[splits[e[0]]], _natural_key(e[0]), e[1]))
    betas = np.empty((len(entries), n_vertices), dtype=np.float32)  # (T, V)
    for row, (_, _, path) in enumerate(tqdm(entries, desc="read indiv", unit="file", disable=not progress)):
        vector = np.load(path)
        if vector.shape != (n_vertices,):
            raise ValueError(f"{path}: expected a vector of shape ({n_vertices},), found {vector.shape}.")
        betas[row] = vector
    trials = Trials(
        [s for s, _, _ in entries],
        np.asarray([k for _, k, _ in entries], dtype=np.int64),
        np.asarray([splits[s] for s, _, _ in entries]),
    )
    return betas, trials


def folder_source(directory: Path, subject_dir: Path) -> dict:
    """``{"source", "source_files", "source_bytes"}`` of an indiv folder (its trial files, hidden ones left out)."""
    files = [p for p in directory.rglob("*.npy") if p.is_file() and not p.name.startswith(".")]
    return {
        "source": directory.relative_to(subject_dir).as_posix(),
        "source_files": len(files),
        "source_bytes": sum(p.stat().st_size for p in files),
    }


def write_prepared_from_indiv(
    data_root: str | Path | None,
    dataset: str,
    subject: int,
    roi_set: str = DEFAULT_ROI_SET,
    overwrite: bool = False,
    nan_policy: str = "drop",
) -> dict:
    """Read a subject's indiv folder and write the prepared layout of ``roi_set`` (array, trials CSV, summary).

    The folder is ``roi_set``'s own or the pickle ROI set's, whose vectors then give
    ``roi_set``'s vertices (see ``indiv_source``). Non-finite trials (NaN, +-Inf) get the policy
    of ``utils.prepare`` (``drop`` or ``zero``). The summary (``<roi_set>_prepared.json``, the
    completion mark that ``utils.prepare`` checks) is written last, with the settings (the
    folder's file count and bytes as the source record). A subject already prepared with the
    same settings is skipped (its summary returned with ``skipped``); other settings are
    refused unless ``overwrite``. Runs under the subject folder's lock.
    """
    check_nan_policy(nan_policy)
    source, source_set = indiv_source(data_root, dataset, subject, roi_set)
    if not source.is_dir() and (overwrite or not is_prepared(data_root, dataset, subject, roi_set)):
        scan_indiv(source, dataset)  # raises naming the folder and the command that writes it
    subject_dir = layout.betas_dir(data_root, dataset, find_subject_folder(data_root, dataset, subject))
    with run_lock(subject_dir, "from-indiv"):
        remove_stale_temps(subject_dir)
        summary = recorded_summary(data_root, dataset, subject, roi_set)
        if source.is_dir():
            record = folder_source(source, subject_dir)
        else:  # prepared, then the indiv folder was deleted: its record stands for it
            record = {k: v for k, v in (summary.get("settings") or {}).items() if k.startswith("source")}
        settings = prepare_settings(roi_set, nan_policy, record)
        summary_path = layout.prepared_summary_path(data_root, dataset, subject_dir.name, roi_set)
        command = prepare_command(dataset, subject, roi_set, nan_policy, step="--from-indiv", data_root=data_root)
        done = reuse_prepared(summary, settings, overwrite, summary_path, command)
        if done is not None:
            return done
        betas, trials = read_indiv(source, dataset, roi_set_size(source_set), data_root=data_root, subject=subject, progress=True)
        columns = select_vertices(get_roi_set(source_set), source_set, roi_set, str(source))  # (V,) or None = all
        if columns is not None:
            betas = betas[:, columns]  # (T, V)
        nan_mask, inf_mask = np.isnan(betas).any(axis=1), np.isinf(betas).any(axis=1)  # (T,) each
        keep = ~(nan_mask | inf_mask) if nan_policy == "drop" else np.ones(len(trials), dtype=bool)
        betas, kept = np.nan_to_num(betas[keep], nan=0.0, posinf=0.0, neginf=0.0), trials.select(keep)
        with write_prepared_array(data_root, dataset, subject, roi_set) as tmp:
            np.save(tmp, betas)
        summary = prepared_summary(dataset, subject, roi_set, source, trials, nan_mask, keep, nan_policy, betas.shape[1], inf_mask)
        summary.update(folder=subject_dir.name, settings=settings)
        finish_prepared(data_root, dataset, subject, roi_set, kept, summary)
    return {**summary, "skipped": False}


def write_subject_indiv(data_root: str | Path | None, dataset: str, subject: int, roi_set: str = DEFAULT_ROI_SET, overwrite: bool = False) -> dict:
    """Write a prepared subject's individual files (see ``write_indiv``) under its folder's lock, removing stale temporary files first."""
    target = subject_indiv_dir(data_root, dataset, subject, roi_set)
    prepared = load_prepared(data_root, dataset, subject, roi_set)
    with run_lock(layout.betas_dir(data_root, dataset, find_subject_folder(data_root, dataset, subject)), "write-indiv"):
        for folder in [target, *sorted(p for p in target.glob("*") if p.is_dir())]:  # HAD: one folder per class
            remove_stale_temps(folder)
        return write_indiv(prepared, target, overwrite=overwrite)
