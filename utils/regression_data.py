"""Torch-free assembly of regression inputs (X) and targets (Y) (their scores: ``utils.scoring``).

Inputs come per (dataset, subject): prepared fMRI (``utils.prepare.load_prepared``) or encoder
embeddings ``embeddings/<run>/<ds>/subNN.npy`` whose rows follow the prepared trials table.
Targets are ``target_vectors_<ds>/<target>/<stim>.npy``, flattened to one row per stimulus
for regression (``unflatten`` restores the stored shape). Stimuli are keyed ``(dataset,
stimulus)`` across datasets, so BMD ``0001`` and demo ``0001`` never mix.
``RegressionSettings`` holds the stage's own defaults (the regressors' are in
``models.regressors``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import layout
from utils.datasets import check_subjects, find_subject_folder, get_spec, subject_folder
from utils.io import check_finite, load_npy
from utils.prepare import Trials, load_prepared
from utils.rois import DEFAULT_ROI_SET
from utils.targets import check_same_recipe, load_targets

INPUTS = ("betas", "embeddings")
TRAIN_REPEATS = ("average", "separate")
TEST_AVERAGES = ("auto", "inputs", "predictions")


@dataclass(frozen=True)
class RegressionSettings:
    """What regress.py regresses and how rows are formed; its flags read their defaults from here.

    input: prepared fMRI ``betas`` or encoder ``embeddings``. targets: folders under
    target_vectors_<ds>/. regressor: a name of ``models.regressors.REGRESSORS``.
    train_repeats: training rows are stimuli (repeats ``average``d) or every trial
    (``separate``). test_average: average test repeats before predicting (``inputs``) or the
    per-trial predictions (``predictions``); ``auto`` = inputs when train_repeats is average.
    """

    input: str = "betas"
    targets: tuple[str, ...] = ("z_zeroscope", "blip")
    regressor: str = "ridge"
    train_repeats: str = "average"
    test_average: str = "auto"


def resolve_test_average(test_average: str, train_repeats: str) -> str:
    """``auto`` -> ``inputs`` when training rows average repeats, else ``predictions``; others pass through."""
    if test_average != "auto":
        return test_average
    return "inputs" if train_repeats == "average" else "predictions"


@dataclass
class SubjectRows:
    """Rows of one subject and split: ``stimuli[i]`` is the stimulus of ``X[i]`` (n, F) float32."""

    dataset: str
    subject: int
    stimuli: list[str]
    X: np.ndarray

    @property
    def label(self) -> str:
        return subject_label(self.dataset, self.subject)


def subject_label(dataset: str, subject: int) -> str:
    """``demo/sub01``: the key of one test subject in metrics and folders."""
    return f"{dataset}/{subject_folder(subject)}"


# --------------------------------------------------------------------------- subjects
def parse_subject_selection(tokens: Sequence[str] | None, datasets: Sequence[str]) -> dict[str, list[int]]:
    """Subjects per dataset from ``["1", "sub02", "bmd:3", "cc2017:sub-01"]``.

    A plain token applies to every dataset in ``datasets``; ``ds:sub`` to that dataset only.
    No token for a dataset means all of its subjects (from its spec).
    """
    plain: list[str] = []
    qualified: dict[str, list[str]] = {}
    for token in tokens or []:
        if ":" in token:
            dataset, sub = token.split(":", 1)
            if dataset not in datasets:
                raise ValueError(f"Subject {token!r} names dataset {dataset!r}, which is not among {list(datasets)}.")
            qualified.setdefault(dataset, []).append(sub)
        else:
            plain.append(token)
    selection = {}
    for dataset in datasets:
        chosen = qualified.get(dataset, []) + plain
        selection[dataset] = sorted(set(check_subjects(get_spec(dataset), chosen or None)))
        if not selection[dataset]:
            raise ValueError(f"No subjects selected for dataset {dataset!r}.")
    return selection


def embeddings_command(dataset: str, run: str, data_root: str | Path | None = None) -> str:
    """The command that exports encoder embeddings (for error messages)."""
    return f"python finetune_contrastive.py --dataset {dataset}{layout.root_flag(data_root)} --run {run}"


def load_subject(
    data_root: str | Path | None, dataset: str, subject: int, source: str = "betas",
    embeddings_run: str | None = None, roi_set: str = DEFAULT_ROI_SET,
) -> tuple[np.ndarray, Trials]:
    """Features (n_trials, F) (memory-mapped) and the prepared trials table of one subject."""
    if source not in INPUTS:
        raise ValueError(f"Unknown input={source!r}. Use one of {list(INPUTS)}.")
    prepared = load_prepared(data_root, dataset, subject, roi_set)
    if source == "betas":
        return prepared.betas, prepared.trials
    if not embeddings_run:
        raise ValueError("input='embeddings' needs an embeddings run name (--embeddings-run).")
    path = layout.embeddings_path(data_root, embeddings_run, dataset, find_subject_folder(data_root, dataset, subject))
    if not path.exists():
        raise FileNotFoundError(f"Missing embeddings {path}: run `{embeddings_command(dataset, embeddings_run, data_root)}` first.")
    remake = f"re-export it with `{embeddings_command(dataset, embeddings_run, data_root)} --overwrite`"
    features = check_finite(load_npy(path, remake, mmap=True), path, remake)
    if features.ndim != 2 or len(features) != len(prepared.trials):
        raise ValueError(
            f"{path} has shape {features.shape}; expected ({len(prepared.trials)}, dim), one row per prepared trial of "
            f"{subject_label(dataset, subject)}. Re-export with `{embeddings_command(dataset, embeddings_run, data_root)} --overwrite`."
        )
    return features, prepared.trials


def average_by_key(values: np.ndarray, keys: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Mean of the rows sharing a key: (n, D) -> (unique keys in first-appearance order, (U, D) float32)."""
    unique = list(dict.fromkeys(keys))
    index = {k: i for i, k in enumerate(unique)}
    col = np.asarray([index[k] for k in keys], dtype=np.int64)
    sums = np.zeros((len(unique), values.shape[1]), dtype=np.float64)
    np.add.at(sums, col, np.asarray(values, dtype=np.float64))
    counts = np.bincount(col, minlength=len(unique))[:, None]
    return unique, (sums / counts).astype(np.float32)


def split_rows(
    features: np.ndarray, trials: Trials, split: str, average: bool, limit: int | None = None,
) -> tuple[list[str], np.ndarray]:
    """Trials of ``split`` -> (stimulus per row, X float32): one row per trial, or per stimulus
    (mean over its repeats) when ``average``. ``limit`` keeps the first N stimuli."""
    rows = np.flatnonzero(trials.split == split)
    names = [trials.stimulus[i] for i in rows]
    if limit is not None:
        keep = set(list(dict.fromkeys(names))[:limit])
        mask = np.asarray([n in keep for n in names], dtype=bool)
        rows, names = rows[mask], [n for n, m in zip(names, mask, strict=True) if m]
    X = np.asarray(features[rows], dtype=np.float32)  # (n_rows, F)
    if average:
        return average_by_key(X, names)
    return names, X


def load_rows(
    data_root: str | Path | None, subjects: dict[str, list[int]], split: str, source: str, average: bool,
    embeddings_run: str | None = None, limit: int | None = None, roi_set: str = DEFAULT_ROI_SET,
) -> list[SubjectRows]:
    """``split_rows`` for every (dataset, subject); checks all share one feature count."""
    parts = []
    for dataset, subs in subjects.items():
        for subject in subs:
            features, trials = load_subject(data_root, dataset, subject, source, embeddings_run, roi_set)
            stimuli, X = split_rows(features, trials, split, average, limit)
            if not stimuli:
                raise ValueError(f"{subject_label(dataset, subject)} has no {split!r} trials in its prepared trials table.")
            parts.append(SubjectRows(dataset, subject, stimuli, X))
    check_feature_counts(parts)
    return parts


def check_feature_counts(parts: Sequence[SubjectRows]) -> int:
    """All parts must have the same number of features (vertices); return it."""
    counts = {p.label: p.X.shape[1] for p in parts}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"Mismatched feature (vertex) counts across subjects: {counts}. Every training and test subject must use "
            "the same ROI set (e.g. Group41, 13156 vertices) or the same embedding size."
        )
    return next(iter(counts.values()))


def check_no_overlap(train_keys: Iterable[tuple[str, str]], test_keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Sorted (dataset, stimulus) pairs found in both the training and the test set."""
    return sorted(set(train_keys) & set(test_keys))


# --------------------------------------------------------------------------- targets
def unflatten(row: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(D,) -> the target's stored shape."""
    return np.asarray(row, dtype=np.float32).reshape(tuple(shape))


# --------------------------------------------------------------------------- training and test rows
def drop_overlap(parts: Sequence[SubjectRows], overlap: set[tuple[str, str]]) -> list[SubjectRows]:
    """Training parts without rows whose (dataset, stimulus) is in ``overlap``."""
    kept = []
    for part in parts:
        mask = np.asarray([(part.dataset, s) not in overlap for s in part.stimuli], dtype=bool)
        if mask.any():
            kept.append(SubjectRows(part.dataset, part.subject, [s for s, m in zip(part.stimuli, mask, strict=True) if m], part.X[mask]))
    if not kept:
        raise ValueError("No training rows remain after dropping the test stimuli (--drop-overlap).")
    return kept


def check_one_dataset_per_stimulus(keys: Iterable[tuple[str, str]]) -> None:
    """Test stimuli keyed (dataset, stimulus): one stimulus name may come from one dataset only
    (predictions/<run>/<target>/<stim>.npy has no dataset level)."""
    names: dict[str, str] = {}
    for ds, s in sorted(keys):
        if s in names and names[s] != ds:
            raise ValueError(f"Stimulus {s!r} is in both {names[s]} and {ds}: test on one of these datasets per run.")
        names[s] = ds


def training_targets(data_root: str | Path | None, target: str, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Y (n_rows, D) for training rows keyed (dataset, stimulus), and the target's stored shape; each file is read once."""
    unique = list(dict.fromkeys(keys))
    check_same_recipe(data_root, target, [ds for ds, _ in unique])
    blocks, shapes = {}, {}
    for dataset in dict.fromkeys(ds for ds, _ in unique):
        stimuli = [s for ds, s in unique if ds == dataset]
        Y, shapes[dataset] = load_targets(data_root, dataset, target, stimuli)
        blocks[dataset] = {s: Y[i] for i, s in enumerate(stimuli)}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"Target {target!r} has different shapes across training datasets: {shapes}.")
    return np.stack([blocks[ds][s] for ds, s in keys]), next(iter(shapes.values()))


def predict_part(model, part: SubjectRows, average_predictions: bool) -> tuple[list[str], np.ndarray]:
    """Predictions (S, D) of a fitted regressor (``model.predict``) for one test subject,
    averaged per stimulus when the rows are trials and ``average_predictions``."""
    pred = model.predict(part.X)
    if average_predictions:
        return average_by_key(pred, part.stimuli)
    return part.stimuli, pred


def average_subject_predictions(results: dict[str, tuple[list[str], np.ndarray]], labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Mean prediction (S, D) of each stimulus over several subjects of one dataset (``results[label] = (stimuli, pred)``)."""
    stimuli = [s for label in labels for s in results[label][0]]
    values = np.concatenate([results[label][1] for label in labels])
    return average_by_key(values, stimuli)


def input_path(data_root: str | Path | None, part: SubjectRows, source: str, embeddings_run: str | None, roi_set: str) -> str:
    """The file a subject's inputs came from (for the manifest)."""
    folder = find_subject_folder(data_root, part.dataset, part.subject)
    if source == "embeddings":
        return str(layout.embeddings_path(data_root, embeddings_run, part.dataset, folder))
    return str(layout.prepared_array_path(data_root, part.dataset, folder, roi_set))
