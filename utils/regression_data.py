"""Torch-free assembly of regression inputs (X) and targets (Y), and their scores.

Inputs come per (dataset, subject): prepared fMRI (``utils.prepare.load_prepared``) or encoder
embeddings ``embeddings/<run>/<ds>/subNN.npy`` whose rows follow the prepared trials table.
Targets are ``target_vectors_<ds>/<target>/<stim>.npy``, flattened to one row per stimulus
for regression (``unflatten`` restores the stored shape). Stimuli are keyed ``(dataset,
stimulus)`` across datasets, so BMD ``0001`` and demo ``0001`` never mix.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import layout
from utils.datasets import check_subjects, find_subject_folder, get_spec, subject_folder
from utils.metrics import n_way_identification, pearson_columns, pearson_rows, r2_columns
from utils.prepare import Trials, load_prepared

INPUTS = ("betas", "embeddings")
N_WAYS = (2, 5, 10, 50)


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


def embeddings_command(dataset: str, run: str) -> str:
    """The command that exports encoder embeddings (for error messages)."""
    return f"python finetune_contrastive.py --dataset {dataset} --run {run}"


def load_subject(
    data_root: str | Path | None, dataset: str, subject: int, source: str = "betas",
    embeddings_run: str | None = None, roi_set: str = "Group41",
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
        raise FileNotFoundError(f"Missing embeddings {path}: run `{embeddings_command(dataset, embeddings_run)}` first.")
    features = np.load(path, mmap_mode="r")
    if features.ndim != 2 or len(features) != len(prepared.trials):
        raise ValueError(
            f"{path} has shape {features.shape}; expected ({len(prepared.trials)}, dim), one row per prepared trial of "
            f"{subject_label(dataset, subject)}. Re-export with `{embeddings_command(dataset, embeddings_run)} --overwrite`."
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
    embeddings_run: str | None = None, limit: int | None = None, roi_set: str = "Group41",
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


# --------------------------------------------------------------------------- outputs and scores
def chance_levels(n_ways: Sequence[int] = N_WAYS) -> dict[str, float]:
    """Chance accuracy of each n-way identification: 1/n."""
    return {f"{n}-way": 1.0 / n for n in n_ways}


def score_predictions(pred: np.ndarray, true: np.ndarray, n_ways: Sequence[int] = N_WAYS, seed: int = 0) -> dict:
    """Scores of predictions (S, D) against truths (S, D), both in target units.

    mse; r2 (mean over features of per-feature R2); pearson_r (mean per-sample r);
    feature_r (mean per-feature r across stimuli); identification: n-way top-1 accuracy
    among the S test stimuli (None when n > S).
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"Predictions {pred.shape} and truths {true.shape} differ in shape.")
    per_sample = pearson_rows(pred, true)
    ident = {f"{n}-way": (n_way_identification(pred, true, n, seed=seed) if n <= len(pred) else None) for n in n_ways}
    return {
        "n_stimuli": len(pred),
        "mse": float(((pred - true) ** 2).mean()),
        "r2": float(r2_columns(pred, true).mean()),
        "pearson_r": float(per_sample.mean()),
        "feature_r": float(pearson_columns(pred, true).mean()),
        "identification": ident,
    }


def per_sample_rows(target: str, label: str, stimuli: Sequence[str], pred: np.ndarray, true: np.ndarray) -> list[list]:
    """CSV rows (target, subject, stimulus, pearson_r, mse) for one set of predictions."""
    r = pearson_rows(pred, true)
    mse = ((np.asarray(pred, dtype=np.float64) - true) ** 2).mean(axis=1)
    return [[target, label, s, f"{a:.6f}", f"{b:.6g}"] for s, a, b in zip(stimuli, r, mse, strict=True)]


def per_sample_csv(rows: Sequence[Sequence]) -> str:
    """CSV text with header target,subject,stimulus,pearson_r,mse."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["target", "subject", "stimulus", "pearson_r", "mse"])
    writer.writerows(rows)
    return buffer.getvalue()

