"""Regressors from fMRI (or encoder embeddings) to flattened targets, behind one interface.

- ``RidgeRegressor``: ridge with cross-validated alphas *per target* through himalaya;
  kernel ridge (``KernelRidgeCV``, dual weights) when samples < features, primal
  ``RidgeCV`` otherwise. The himalaya backend (numpy / torch / torch_cuda) is chosen in one
  place, ``set_himalaya_backend``, which raises instead of silently falling back to numpy.
- ``MLPRegressor`` and ``SwiGLURegressor``: small torch networks trained with AdamW, MSE or
  smooth-L1 loss and early stopping on a validation split, seeded.

Defaults live in one dataclass per kind, ``RidgeSettings`` and ``NetSettings``; the regressors'
``DEFAULTS`` and regress.py's flags both read them.

Every regressor standardises X and Y with statistics of the training data only
(himalaya's ``fit_intercept`` is off, so centring is ours) and returns predictions in the
original units of Y. Target columns constant in the training Y are predicted as that constant
exactly (ridge: their standardised targets are 0; the torch networks: left out of the loss and
set to the training mean, the mask saved as ``y_constant``).
Shapes: X (n_samples, n_features) float32, Y (n_samples, n_targets).

    model = make_regressor("ridge", alphas=(1e2, 1e3, 1e4)).fit(X, Y, groups=stimulus_ids)
    Y_hat = model.predict(X_test)
    model.save("checkpoints/regress/<run>/<target>")
    same = load_regressor("checkpoints/regress/<run>/<target>")
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from models.zoo import REGRESSOR_HIDDEN_DIM
from utils import layout
from utils.io import atomic_path, jsonable, write_json

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
HIMALAYA_BACKENDS = ("auto", "numpy", "torch", "torch_cuda")
RIDGE_SOLVERS = ("auto", "kernel", "primal")
LOSSES = ("mse", "smooth_l1")
DEFAULT_ALPHAS = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6)
WEIGHTS_NAME = "weights"  # <dir>/weights.safetensors beside <dir>/config.json


@dataclass(frozen=True)
class RidgeSettings:
    """Parameters of ``RidgeRegressor`` and their defaults (see its docstring)."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    cv: int = 5
    solver: str = "auto"
    backend: str = "auto"
    device: str = "cpu"
    n_targets_batch: int = 8192


@dataclass(frozen=True)
class NetSettings:
    """Parameters of ``MLPRegressor`` / ``SwiGLURegressor`` and their defaults.

    hidden_dim: the ``default`` preset's width (``models.zoo.REGRESSOR_HIDDEN_DIM``).
    """

    hidden_dim: int = REGRESSOR_HIDDEN_DIM["default"]
    n_layers: int = 1
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 10
    val_fraction: float = 0.1
    loss: str = "mse"
    seed: int = 0
    device: str = "cpu"


# --------------------------------------------------------------------------- validation
def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise naming the parameter."""
    if value not in allowed:
        raise ValueError(f"Unknown {name}={value!r}. Use one of {list(allowed)}.")
    return value


def check_positive(name: str, value: float, allow_zero: bool = False, integer: bool = False) -> None:
    """Raise ``ValueError`` naming the parameter unless ``value`` is > 0 (>= 0 if allowed)."""
    if integer and (isinstance(value, bool) or int(value) != value):
        raise ValueError(f"{name}={value!r} must be an integer.")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not math.isfinite(float(value)):
        raise ValueError(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}.")


def check_fraction(name: str, value: float) -> None:
    """Raise unless 0 <= value < 1."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}={value!r} must be in [0, 1).")


def check_xy(X: np.ndarray, Y: np.ndarray | None = None, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate inputs: 2-D, finite, same number of rows, expected feature count -> float32."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features but the regressor was fitted on {n_features}.")
    if len(X) == 0:
        raise ValueError("X has no samples.")
    X = X.astype(np.float32, copy=False)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values; drop those trials first.")
    if Y is None:
        return X, None
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (n_samples, n_targets), got shape {Y.shape}.")
    if len(Y) != len(X):
        raise ValueError(f"X has {len(X)} samples but Y has {len(Y)}.")
    Y = Y.astype(np.float32, copy=False)
    if not np.isfinite(Y).all():
        raise ValueError("Y contains NaN or infinite values.")
    return X, Y


# --------------------------------------------------------------------------- standardiser
STD_FLOOR = 1e-8  # a column whose training std is below this is constant (its std is stored as 1)


class Standardizer:
    """Column z-scoring with statistics from the data given to ``fit`` (the training set).

    ``constant`` (d,) bool marks the columns whose std was below ``STD_FLOOR`` (their std is 1, so
    they cannot be told apart from ``std`` afterwards); None when unknown.
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None, constant: np.ndarray | None = None) -> None:
        self.mean = mean
        self.std = std
        self.constant = constant

    def fit(self, X: np.ndarray, chunk: int = 4096) -> Standardizer:
        """Column mean and std (ddof=0, float64 accumulation, constant columns -> std 1)."""
        mean = np.empty(X.shape[1], dtype=np.float64)
        std = np.empty(X.shape[1], dtype=np.float64)
        for start in range(0, X.shape[1], chunk):
            block = np.asarray(X[:, start:start + chunk], dtype=np.float64)  # (n, chunk)
            mean[start:start + chunk] = block.mean(axis=0)
            std[start:start + chunk] = block.std(axis=0)
        self.constant = std < STD_FLOOR
        std[self.constant] = 1.0
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d) float32 z-scores."""
        return ((X - self.mean) / self.std).astype(np.float32, copy=False)

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """Undo ``transform``: (n, d) -> (n, d) float32 in original units."""
        return (Z * self.std + self.mean).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- base class
class BaseRegressor:
    """Shared interface: ``fit(X, Y, groups=None)``, ``predict(X)``, ``save(dir)``.

    Subclasses declare their parameters in ``DEFAULTS`` (from a settings dataclass); ``_validate`` checks them in one
    place. ``groups`` (one label per sample, e.g. the stimulus) keeps all samples of a group
    on the same side of every validation split (repeats of a stimulus never leak).
    """

    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown} for model={self.name!r}. Known: {sorted(self.DEFAULTS)}.")
        self.params = {**self.DEFAULTS, **params}
        self._validate()
        self.x_scaler: Standardizer | None = None
        self.y_scaler: Standardizer | None = None
        self.n_features_in_: int | None = None
        self.n_targets_: int | None = None
        self.info_: dict[str, Any] = {}

    def _validate(self) -> None:
        raise NotImplementedError

    # -- public API
    def fit(self, X: np.ndarray, Y: np.ndarray, groups: Sequence[Any] | None = None) -> BaseRegressor:
        """Fit on X (n, F) and Y (n, T); standardisation statistics come from these rows only."""
        X, Y = check_xy(X, Y)
        if groups is not None and len(groups) != len(X):
            raise ValueError(f"groups has {len(groups)} labels but X has {len(X)} samples.")
        self.x_scaler = Standardizer().fit(X)
        self.y_scaler = Standardizer().fit(Y)
        self.n_features_in_, self.n_targets_ = X.shape[1], Y.shape[1]
        self._fit(self.x_scaler.transform(X), self.y_scaler.transform(Y), groups)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """X (n, F) -> Y_hat (n, T) float32 in the original units of the training Y."""
        if self.x_scaler is None or self.y_scaler is None:
            raise RuntimeError(f"This {type(self).__name__} is not fitted yet: call fit(X, Y) or load_regressor(dir).")
        X, _ = check_xy(X, n_features=self.n_features_in_)
        return self.y_scaler.inverse_transform(self._predict(self.x_scaler.transform(X)))

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` (params, shapes, fit info) and ``weights.safetensors``."""
        if self.x_scaler is None:
            raise RuntimeError("Cannot save an unfitted regressor.")
        directory = Path(directory)
        tensors = {
            "x_mean": self.x_scaler.mean, "x_std": self.x_scaler.std,
            "y_mean": self.y_scaler.mean, "y_std": self.y_scaler.std,
            **self._state(),
        }
        with atomic_path(layout.weights_path(directory, WEIGHTS_NAME), suffix=".tmp.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
        write_json(layout.config_path(directory), {
            "format_version": FORMAT_VERSION, "model": self.name, "params": jsonable(self.params),
            "n_features": self.n_features_in_, "n_targets": self.n_targets_, "info": jsonable(self.info_),
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
        })
        return directory

    # -- subclass hooks
    def _fit(self, Xs: np.ndarray, Ys: np.ndarray, groups: Sequence[Any] | None) -> None:
        raise NotImplementedError

    def _predict(self, Xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _load_state(self, tensors: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


def group_labels(n_samples: int, groups: Sequence[Any] | None) -> np.ndarray:
    """Integer group of each sample (n,): one group per sample when ``groups`` is None."""
    return np.arange(n_samples) if groups is None else np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]


def validation_folds(n_samples: int, n_splits: int, groups: Sequence[Any] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K contiguous folds over samples, or over unique groups when given (GroupKFold-like)."""
    labels = group_labels(n_samples, groups)
    n_groups = int(labels.max()) + 1
    if n_splits < 2 or n_splits > n_groups:
        raise ValueError(f"cv={n_splits} needs 2 <= cv <= number of {'groups' if groups is not None else 'samples'} ({n_groups}).")
    fold_of_group = np.arange(n_groups) * n_splits // n_groups  # contiguous blocks of groups
    fold = fold_of_group[labels]
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_splits)]


# --------------------------------------------------------------------------- ridge (himalaya)
def set_himalaya_backend(name: str, device: str = "cpu") -> str:
    """The one place that sets himalaya's global backend; returns the backend in use.

    ``auto`` -> ``torch_cuda`` when ``device`` is a CUDA device, else ``torch``. Errors are
    raised (himalaya's own fallback to numpy only warns).
    """
    from himalaya.backend import get_backend, set_backend

    check_choice("backend", name, HIMALAYA_BACKENDS)
    if name == "auto":
        name = "torch_cuda" if str(device).startswith("cuda") else "torch"
    if name == "torch_cuda" and not torch.cuda.is_available():
        raise RuntimeError("backend='torch_cuda' needs a CUDA device, but torch sees none; use backend='torch' or 'numpy'.")
    set_backend(name, on_error="raise")
    in_use = get_backend().name
    if in_use != name:
        raise RuntimeError(f"himalaya backend is {in_use!r} after asking for {name!r}.")
    LOG.info("himalaya backend in use: %s", in_use)
    return in_use


class RidgeRegressor(BaseRegressor):
    """Ridge with one alpha per target chosen by K-fold CV (himalaya).

    Parameters: ``alphas`` grid; ``cv`` folds (grouped when ``groups`` is given);
    ``solver`` auto/kernel/primal (auto = kernel when n_samples < n_features);
    ``backend`` auto/numpy/torch/torch_cuda; ``device`` used by ``backend='auto'``;
    ``n_targets_batch`` targets per block (bounds memory).
    """

    name = "ridge"
    DEFAULTS: ClassVar[dict[str, Any]] = dataclasses.asdict(RidgeSettings())

    def _validate(self) -> None:
        p = self.params
        alphas = np.asarray(p["alphas"], dtype=np.float64).ravel()
        if alphas.size == 0 or not np.all(alphas > 0):
            raise ValueError(f"alphas={p['alphas']!r} must be a non-empty list of numbers > 0.")
        p["alphas"] = tuple(float(a) for a in np.sort(alphas))
        check_positive("cv", p["cv"], integer=True)
        check_choice("solver", p["solver"], RIDGE_SOLVERS)
        check_choice("backend", p["backend"], HIMALAYA_BACKENDS)
        check_positive("n_targets_batch", p["n_targets_batch"], integer=True)
        self.coef_: np.ndarray | None = None  # (F, T) primal weights
        self.x_fit_: np.ndarray | None = None  # (n, F) standardised training X (kernel solver)
        self.dual_coef_: np.ndarray | None = None  # (n, T)
        self.best_alphas_: np.ndarray | None = None  # (T,)

    def _fit(self, Xs: np.ndarray, Ys: np.ndarray, groups: Sequence[Any] | None) -> None:
        from himalaya.kernel_ridge import KernelRidgeCV
        from himalaya.ridge import RidgeCV

        p = self.params
        backend = set_himalaya_backend(p["backend"], p["device"])
        solver = p["solver"]
        if solver == "auto":
            solver = "kernel" if Xs.shape[0] < Xs.shape[1] else "primal"
        folds = validation_folds(len(Xs), int(p["cv"]), groups)
        batch = dict(n_targets_batch=int(p["n_targets_batch"]), n_targets_batch_refit=int(p["n_targets_batch"]))
        alphas = np.asarray(p["alphas"], dtype=np.float32)
        if solver == "kernel":
            model = KernelRidgeCV(alphas=alphas, kernel="linear", cv=folds, solver_params=batch, warn=False).fit(Xs, Ys)
            self.x_fit_, self.dual_coef_ = Xs, _to_numpy(model.dual_coef_)
        else:
            model = RidgeCV(alphas=alphas, cv=folds, solver_params=batch).fit(Xs, Ys)
            self.coef_ = _to_numpy(model.coef_)
        self.best_alphas_ = _to_numpy(model.best_alphas_)
        values, counts = np.unique(self.best_alphas_, return_counts=True)
        self.info_ = {
            "solver": solver, "backend": backend, "n_samples": int(len(Xs)),
            "alpha_counts": {f"{v:g}": int(c) for v, c in zip(values, counts, strict=True)},
            "mean_cv_score": float(np.mean(_to_numpy(model.cv_scores_))),
        }

    def _predict(self, Xs: np.ndarray) -> np.ndarray:
        if self.coef_ is not None:
            return Xs @ self.coef_  # (n, F) @ (F, T)
        return (Xs @ self.x_fit_.T) @ self.dual_coef_  # (n, n_fit) @ (n_fit, T)

    def _state(self) -> dict[str, np.ndarray]:
        state = {"best_alphas": self.best_alphas_}
        if self.coef_ is not None:
            state["coef"] = self.coef_
        else:
            state["x_fit"], state["dual_coef"] = self.x_fit_, self.dual_coef_
        return state

    def _load_state(self, tensors: dict[str, np.ndarray]) -> None:
        self.best_alphas_ = tensors.pop("best_alphas")
        if "coef" in tensors:
            self.coef_ = tensors.pop("coef")
        else:
            self.x_fit_, self.dual_coef_ = tensors.pop("x_fit"), tensors.pop("dual_coef")


def _to_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy().astype(np.float32, copy=False)
    return np.asarray(array, dtype=np.float32)


# --------------------------------------------------------------------------- torch networks
class MLP(nn.Module):
    """x (B, F) -> [Linear -> LayerNorm -> GELU -> Dropout] x n_layers -> Linear -> (B, T)."""

    def __init__(self, n_features: int, n_targets: int, hidden_dim: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_dim
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SwiGLUBlock(nn.Module):
    """Pre-norm residual SwiGLU: h + W_out(silu(W_gate n(h)) * W_up n(h)), h (B, D)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Linear(dim, 2 * dim)
        self.up = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(2 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.norm(h)
        return h + self.drop(self.out(nn.functional.silu(self.gate(z)) * self.up(z)))


class SwiGLUNet(nn.Module):
    """x (B, F) -> Linear (B, D) -> SwiGLU blocks -> LayerNorm -> Linear -> (B, T)."""

    def __init__(self, n_features: int, n_targets: int, hidden_dim: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, hidden_dim)
        self.blocks = nn.Sequential(*[SwiGLUBlock(hidden_dim, dropout) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, n_targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))))


class _TorchRegressor(BaseRegressor):
    """Shared training loop: AdamW, MSE/smooth-L1, early stopping on a grouped validation split."""

    NET: ClassVar[type[nn.Module]] = MLP
    DEFAULTS: ClassVar[dict[str, Any]] = dataclasses.asdict(NetSettings())

    def _validate(self) -> None:
        p = self.params
        for key in ("hidden_dim", "n_layers", "batch_size", "max_epochs", "patience"):
            check_positive(key, p[key], integer=True)
        for key in ("lr",):
            check_positive(key, p[key])
        check_positive("weight_decay", p["weight_decay"], allow_zero=True)
        check_fraction("dropout", p["dropout"])
        check_fraction("val_fraction", p["val_fraction"])
        check_choice("loss", p["loss"], LOSSES)
        self.net: nn.Module | None = None

    def _build(self, n_features: int, n_targets: int) -> nn.Module:
        p = self.params
        return self.NET(n_features, n_targets, int(p["hidden_dim"]), int(p["n_layers"]), float(p["dropout"]))

    def _loss(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        if self.params["loss"] == "smooth_l1":
            return nn.functional.smooth_l1_loss(pred, true)
        return nn.functional.mse_loss(pred, true)

    def _constant_mask(self) -> np.ndarray:
        """(T,) bool: target columns constant in the training Y (none when the scaler does not know)."""
        constant = self.y_scaler.constant if self.y_scaler is not None else None
        return np.zeros(self.n_targets_, dtype=bool) if constant is None else np.asarray(constant, dtype=bool)

    def _fit(self, Xs: np.ndarray, Ys: np.ndarray, groups: Sequence[Any] | None) -> None:
        p = self.params
        device = torch.device(p["device"])
        train_idx, val_idx = validation_split(len(Xs), float(p["val_fraction"]), groups, int(p["seed"]))
        constant = self._constant_mask()
        learnt = torch.from_numpy(np.flatnonzero(~constant)).to(device)  # (T_learnt,) columns in the loss
        if not len(learnt):
            LOG.warning("%s: every target column is constant in the training Y; the network is not trained.", self.name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(p["seed"]))
            net = self._build(Xs.shape[1], Ys.shape[1]).to(device)
            Y_learnt = Ys[:, ~constant] if constant.any() else Ys  # (n, T_learnt), no copy when every column is learnt
            X_t, Y_t = torch.from_numpy(Xs).to(device), torch.from_numpy(Y_learnt).to(device)
            optimizer = torch.optim.AdamW(net.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
            generator = torch.Generator().manual_seed(int(p["seed"]))
            best = (math.inf, 0, {k: v.detach().clone() for k, v in net.state_dict().items()})
            history: list[tuple[float, float]] = []
            for epoch in range(int(p["max_epochs"]) if len(learnt) else 0):
                train_loss = self._train_epoch(net, optimizer, X_t, Y_t, learnt, torch.as_tensor(train_idx), generator)
                val_loss = self._eval_loss(net, X_t, Y_t, learnt, val_idx) if len(val_idx) else train_loss
                history.append((train_loss, val_loss))
                if val_loss < best[0] - 1e-7:
                    best = (val_loss, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
                elif epoch - best[1] >= int(p["patience"]):
                    break
            net.load_state_dict(best[2])
        self.net = net.eval()
        self.info_ = {
            "best_epoch": best[1], "epochs_run": len(history), "best_val_loss": best[0] if history else None,
            "n_train": len(train_idx), "n_val": len(val_idx), "constant_targets": int(constant.sum()),
            "history": [[round(a, 6), round(b, 6)] for a, b in history],
        }

    def _train_epoch(self, net: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, Y: torch.Tensor,
                     learnt: torch.Tensor, idx: torch.Tensor, generator: torch.Generator) -> float:
        """One epoch over ``idx``; the loss compares the output columns ``learnt`` with Y (n, T_learnt)."""
        net.train()
        order = idx[torch.randperm(len(idx), generator=generator)]
        total = 0.0
        for start in range(0, len(order), int(self.params["batch_size"])):
            batch = order[start:start + int(self.params["batch_size"])].to(X.device)
            loss = self._loss(net(X[batch])[:, learnt], Y[batch])  # (B, T_learnt) vs (B, T_learnt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        return total / len(order)

    @torch.no_grad()
    def _eval_loss(self, net: nn.Module, X: torch.Tensor, Y: torch.Tensor, learnt: torch.Tensor, idx: np.ndarray) -> float:
        net.eval()
        index = torch.as_tensor(idx, device=X.device)
        return float(self._loss(net(X[index])[:, learnt], Y[index]))

    @torch.no_grad()
    def _predict(self, Xs: np.ndarray) -> np.ndarray:
        device = next(self.net.parameters()).device
        out = []
        for start in range(0, len(Xs), 1024):
            out.append(self.net(torch.from_numpy(Xs[start:start + 1024]).to(device)).float().cpu().numpy())
        pred = np.concatenate(out)  # (n, T) standardised
        pred[:, self._constant_mask()] = 0.0  # -> exactly the training constant in Y's units
        return pred

    def _state(self) -> dict[str, np.ndarray]:
        weights = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        return {"y_constant": self._constant_mask(), **weights}

    def _load_state(self, tensors: dict[str, np.ndarray]) -> None:
        stored = tensors.pop("y_constant", None)  # absent in files written before the mask was stored: no column is constant
        self.y_scaler.constant = np.zeros(self.n_targets_, dtype=bool) if stored is None else stored.astype(bool)
        net = self._build(self.n_features_in_, self.n_targets_)
        expected = {f"net.{k}" for k in net.state_dict()}
        found = {k for k in tensors if k.startswith("net.")}
        if expected != found:
            raise KeyError(f"{self.name} weights do not match the architecture: missing {sorted(expected - found)}, "
                           f"unexpected {sorted(found - expected)}.")
        net.load_state_dict({k[4:]: torch.from_numpy(tensors.pop(k)) for k in sorted(found)}, strict=True)
        self.net = net.to(self.params["device"]).eval()


def validation_split(n_samples: int, fraction: float, groups: Sequence[Any] | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train_idx, val_idx); whole groups go to validation. fraction 0 -> no validation."""
    labels = group_labels(n_samples, groups)
    n_groups = int(labels.max()) + 1
    n_val = int(round(fraction * n_groups))
    if fraction > 0 and not 1 <= n_val < n_groups:
        raise ValueError(f"val_fraction={fraction} leaves {n_val} of {n_groups} groups for validation; need at least 1 and fewer than all.")
    val_groups = np.random.default_rng(seed).permutation(n_groups)[:n_val]
    is_val = np.isin(labels, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class MLPRegressor(_TorchRegressor):
    """MLP regressor (see ``MLP``); parameters in ``_TorchRegressor.DEFAULTS``."""

    name = "mlp"
    NET = MLP


class SwiGLURegressor(_TorchRegressor):
    """Residual SwiGLU regressor (see ``SwiGLUNet``); ``n_layers`` = number of blocks."""

    name = "swiglu"
    NET = SwiGLUNet


# --------------------------------------------------------------------------- factory, loading
REGRESSORS: dict[str, type[BaseRegressor]] = {cls.name: cls for cls in (RidgeRegressor, MLPRegressor, SwiGLURegressor)}


def make_regressor(model: str, **params: Any) -> BaseRegressor:
    """Build a regressor by name (``ridge``, ``mlp``, ``swiglu``) with its parameters."""
    check_choice("model", model, sorted(REGRESSORS))
    return REGRESSORS[model](**params)


def is_saved(directory: str | Path) -> bool:
    """True when ``directory`` holds a complete saved regressor."""
    return layout.config_path(directory).is_file() and layout.weights_path(directory, WEIGHTS_NAME).is_file()


def load_regressor(directory: str | Path, device: str | None = None) -> BaseRegressor:
    """Load a regressor written by ``save``; strict about model name, keys and shapes."""
    directory = Path(directory)
    if not is_saved(directory):
        raise FileNotFoundError(f"No saved regressor in {directory} (expected config.json and weights.safetensors): run regress.py first.")
    config_file = layout.config_path(directory)
    config = json.loads(config_file.read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_file}: format_version={config.get('format_version')!r}, expected {FORMAT_VERSION}.")
    params = dict(config["params"])
    if device is not None and "device" in params:
        params["device"] = device
    model = make_regressor(config["model"], **params)
    tensors = load_file(str(layout.weights_path(directory, WEIGHTS_NAME)))
    shapes = {k: list(v.shape) for k, v in tensors.items()}
    if shapes != config["tensors"]:
        raise ValueError(f"{directory}: weights do not match config.json (expected {config['tensors']}, found {shapes}).")
    model.n_features_in_, model.n_targets_ = int(config["n_features"]), int(config["n_targets"])
    model.x_scaler = Standardizer(tensors.pop("x_mean"), tensors.pop("x_std"))
    model.y_scaler = Standardizer(tensors.pop("y_mean"), tensors.pop("y_std"))
    model._load_state(tensors)
    if tensors:
        raise KeyError(f"{directory}: unexpected tensors {sorted(tensors)} for model={model.name!r}.")
    model.info_ = config.get("info", {})
    return model
