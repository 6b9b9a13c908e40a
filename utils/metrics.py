"""The one seeded metrics module shared by training, regression and ``evaluate.py``.

Vector metrics (used on predicted targets and embeddings) come first; video and caption
metrics follow. Every function takes numpy arrays with the shapes in its docstring.
"""
from __future__ import annotations

import numpy as np


def _flat(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float64."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def _zscore_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def pearson_rows(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-sample Pearson r between pred and true (N, ...) -> (N,)."""
    p, t = _zscore_rows(_flat(pred)), _zscore_rows(_flat(true))
    return (p * t).sum(axis=1)


def pearson_columns(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-feature Pearson r across samples (N, D) -> (D,) (0 where a column is constant)."""
    p, t = _flat(pred), _flat(true)
    p = p - p.mean(axis=0)
    t = t - t.mean(axis=0)
    denom = np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0)
    return np.where(denom == 0, 0.0, (p * t).sum(axis=0) / np.where(denom == 0, 1.0, denom))


def r2_columns(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-feature coefficient of determination (N, D) -> (D,)."""
    p, t = _flat(pred), _flat(true)
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ss_res / np.where(ss_tot == 0, 1.0, ss_tot)


def correlation_matrix(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson r of every prediction with every truth (N, ...) x (M, ...) -> (N, M)."""
    return _zscore_rows(_flat(pred)) @ _zscore_rows(_flat(true)).T


def n_way_identification(
    pred: np.ndarray, true: np.ndarray, n_way: int = 2, n_trials: int = 100, seed: int = 0
) -> float:
    """Mean n-way identification accuracy from (N, ...) predictions and truths.

    For each sample and trial, the prediction is compared (Pearson r) with its own truth and
    ``n_way - 1`` other truths drawn at random; it is correct when its own truth correlates
    most. Chance is ``1 / n_way``. Seeded, so the same inputs give the same number.
    """
    n = len(pred)
    if n_way < 2 or n_way > n:
        raise ValueError(f"n_way={n_way} must be between 2 and the number of samples ({n}).")
    corr = correlation_matrix(pred, true)  # (N, N)
    rng = np.random.default_rng(seed)
    correct = 0
    for i in range(n):
        others = np.delete(np.arange(n), i)
        for _ in range(n_trials):
            picks = rng.choice(others, size=n_way - 1, replace=False)
            correct += corr[i, i] > corr[i, picks].max()
    return correct / (n * n_trials)


def top_k_retrieval(pred: np.ndarray, true: np.ndarray, k: int = 1) -> float:
    """Fraction of predictions whose own truth is among the k best-correlated of all N."""
    corr = correlation_matrix(pred, true)
    ranks = (corr > np.diag(corr)[:, None]).sum(axis=1)
    return float((ranks < k).mean())
