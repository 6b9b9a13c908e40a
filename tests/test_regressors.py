"""Unit tests of models/regressors.py on small synthetic linear problems (CPU, seconds)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.regressors import (
    Standardizer,
    is_saved,
    load_regressor,
    make_regressor,
    set_himalaya_backend,
    validation_folds,
    validation_split,
)
from utils.metrics import n_way_identification, pearson_rows

FAST_NET = {"hidden_dim": 32, "max_epochs": 100, "patience": 15, "batch_size": 32, "lr": 3e-3, "dropout": 0.0}
CASES = {
    "ridge-kernel": ("ridge", {"solver": "kernel", "alphas": (0.1, 1, 10, 100, 1000)}),
    "ridge-primal": ("ridge", {"solver": "primal", "alphas": (0.1, 1, 10, 100, 1000)}),
    "mlp": ("mlp", FAST_NET),
    "swiglu": ("swiglu", FAST_NET),
}


def linear_problem(n_train: int = 160, n_test: int = 40, n_features: int = 30, n_targets: int = 12, noise: float = 0.3, seed: int = 0):
    """X (n, F) with offsets and scales, Y = X W + noise with its own offsets and scales."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_train + n_test, n_features)) * rng.uniform(0.5, 3, n_features) + rng.uniform(-5, 5, n_features)
    W = rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features)
    Y = (X - X.mean(0)) / X.std(0) @ W + noise * rng.standard_normal((n_train + n_test, n_targets))
    Y = Y * rng.uniform(0.5, 4, n_targets) + rng.uniform(-3, 3, n_targets)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


@pytest.fixture(scope="module")
def problem():
    return linear_problem()


@pytest.fixture(scope="module")
def fitted(problem):
    X, Y, _, _ = problem
    return {name: make_regressor(model, **params).fit(X, Y) for name, (model, params) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_recovers_known_linear_map(name, problem, fitted):
    _, _, X_test, Y_test = problem
    pred = fitted[name].predict(X_test)
    assert pred.shape == Y_test.shape and pred.dtype == np.float32
    # Chance: r ~ 0, 10-way 0.1.
    assert pearson_rows(pred, Y_test).mean() > 0.8
    assert n_way_identification(pred, Y_test, n_way=10) > 0.7


@pytest.mark.parametrize("name", list(CASES))
def test_save_load_roundtrip(name, problem, fitted, tmp_path):
    _, _, X_test, _ = problem
    model = fitted[name]
    model.save(tmp_path / name)
    assert is_saved(tmp_path / name)
    loaded = load_regressor(tmp_path / name)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded.predict(X_test), model.predict(X_test), rtol=1e-5, atol=1e-5)


def test_ridge_solvers_agree_and_report_backend(fitted, problem):
    _, _, X_test, _ = problem
    kernel, primal = fitted["ridge-kernel"], fitted["ridge-primal"]
    assert kernel.info_["solver"] == "kernel" and primal.info_["solver"] == "primal"
    assert kernel.info_["backend"] == "torch"  # backend='auto' on CPU
    np.testing.assert_array_equal(kernel.best_alphas_, primal.best_alphas_)
    np.testing.assert_allclose(kernel.predict(X_test), primal.predict(X_test), rtol=1e-3, atol=1e-3)


def test_standardisation_uses_training_statistics_only(problem):
    X, Y, X_test, _ = problem
    model = make_regressor("ridge", alphas=(1, 10, 100)).fit(X, Y)
    np.testing.assert_allclose(model.x_scaler.mean, X.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.x_scaler.std, X.std(0), rtol=1e-5)
    np.testing.assert_allclose(model.y_scaler.mean, Y.mean(0), rtol=1e-5, atol=1e-5)
    # A test row's prediction does not depend on which other rows are in the batch (no test stats).
    full = model.predict(X_test)
    shifted = np.concatenate([X_test[:1], X_test[1:] * 5 + 100])
    np.testing.assert_allclose(model.predict(shifted)[0], full[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(X_test[:1])[0], full[0], rtol=1e-5, atol=1e-5)
    # Predictions come back in Y's units: affine changes of Y carry through exactly.
    scaled = make_regressor("ridge", alphas=(1, 10, 100)).fit(X, Y * 10 + 7).predict(X_test)
    np.testing.assert_allclose(scaled, full * 10 + 7, rtol=1e-3, atol=1e-2)


def test_standardizer_constant_columns_and_inverse():
    X = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], dtype=np.float32)
    scaler = Standardizer().fit(X)
    Z = scaler.transform(X)
    np.testing.assert_allclose(Z[:, 1], 0.0)
    np.testing.assert_allclose(scaler.inverse_transform(Z), X, rtol=1e-6)


def test_torch_regressors_are_seeded(problem):
    X, Y, X_test, _ = problem
    params = {**FAST_NET, "max_epochs": 5}
    a = make_regressor("mlp", seed=3, **params).fit(X, Y).predict(X_test)
    b = make_regressor("mlp", seed=3, **params).fit(X, Y).predict(X_test)
    c = make_regressor("mlp", seed=4, **params).fit(X, Y).predict(X_test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_early_stopping_restores_best_epoch(problem):
    X, Y, _, _ = problem
    model = make_regressor("mlp", **{**FAST_NET, "patience": 3, "max_epochs": 400, "lr": 3e-2}).fit(X, Y)
    info = model.info_
    assert info["epochs_run"] == info["best_epoch"] + 4 or info["epochs_run"] == 400
    val = [v for _, v in info["history"]]
    assert info["best_val_loss"] == pytest.approx(min(val), rel=1e-5)


def test_groups_stay_on_one_side_of_splits():
    groups = np.repeat([f"s{i}" for i in range(10)], 3)
    for train, val in validation_folds(len(groups), 5, groups):
        assert not set(groups[train]) & set(groups[val])
    train, val = validation_split(len(groups), 0.2, groups, seed=0)
    assert len(val) == 6 and not set(groups[train]) & set(groups[val])
    with pytest.raises(ValueError, match="cv=20"):
        validation_folds(len(groups), 20, groups)


def test_validation_errors_name_parameter_and_value(problem):
    X, Y, _, _ = problem
    with pytest.raises(ValueError, match=r"Unknown model='x'\. Use one of \['mlp', 'ridge', 'swiglu'\]"):
        make_regressor("x")
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) \['hidden'\] for model='mlp'"):
        make_regressor("mlp", hidden=3)
    with pytest.raises(ValueError, match="Unknown loss='l1'"):
        make_regressor("mlp", loss="l1")
    with pytest.raises(ValueError, match="Unknown backend='cupy'"):
        make_regressor("ridge", backend="cupy")
    with pytest.raises(ValueError, match="alphas"):
        make_regressor("ridge", alphas=(1, -1))
    with pytest.raises(ValueError, match="dropout=1.5"):
        make_regressor("swiglu", dropout=1.5)
    with pytest.raises(RuntimeError, match="not fitted"):
        make_regressor("ridge").predict(X)
    with pytest.raises(ValueError, match="NaN"):
        bad = X.copy()
        bad[0, 0] = np.nan
        make_regressor("ridge").fit(bad, Y)
    with pytest.raises(ValueError, match="160 samples but Y has 10"):
        make_regressor("ridge").fit(X, Y[:10])
    model = make_regressor("ridge", alphas=(1.0,), cv=2).fit(X, Y)
    with pytest.raises(ValueError, match="X has 5 features but the regressor was fitted on 30"):
        model.predict(X[:, :5])


def test_himalaya_backend_is_set_in_one_place():
    from himalaya.backend import get_backend

    assert set_himalaya_backend("numpy") == "numpy" and get_backend().name == "numpy"
    assert set_himalaya_backend("auto", device="cpu") == "torch" and get_backend().name == "torch"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch_cuda"):
            set_himalaya_backend("torch_cuda")


def test_load_is_strict(problem, tmp_path):
    X, Y, _, _ = problem
    make_regressor("mlp", **{**FAST_NET, "max_epochs": 2}).fit(X, Y).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["params"]["hidden_dim"] = 16  # weights no longer fit the architecture
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises((KeyError, ValueError, RuntimeError), match="size mismatch|do not match"):
        load_regressor(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="regress.py"):
        load_regressor(tmp_path / "missing")


def constant_column_problem():
    """``linear_problem`` with columns 0, 5 and 11 of Y replaced by constants (-2.5, 0, 1e3)."""
    X, Y, X_test, Y_test = linear_problem()
    constant = {0: -2.5, 5: 0.0, 11: 1e3}
    for column, value in constant.items():
        Y[:, column] = value
    real = [c for c in range(Y.shape[1]) if c not in constant]
    return X, Y, X_test, Y_test, constant, real


@pytest.mark.parametrize("model", ["mlp", "swiglu"])
def test_torch_regressors_predict_constant_columns_exactly(model, tmp_path):
    X, Y, X_test, Y_test, constant, real = constant_column_problem()
    fitted = make_regressor(model, **FAST_NET).fit(X, Y)
    pred = fitted.predict(X_test)
    for column, value in constant.items():
        assert np.all(pred[:, column] == np.float32(value)), column
    # The real columns are learnt as well as without the constant ones beside them.
    alone = make_regressor(model, **FAST_NET).fit(X, Y[:, real]).predict(X_test)
    r_real = pearson_rows(pred[:, real].T, Y_test[:, real].T)  # per column, over test samples
    assert r_real.mean() > 0.8
    assert r_real.mean() > pearson_rows(alone.T, Y_test[:, real].T).mean() - 0.05
    np.testing.assert_array_equal(fitted.y_scaler.constant, np.isin(np.arange(Y.shape[1]), list(constant)))
    assert fitted.info_["constant_targets"] == 3
    # The mask survives save -> load.
    loaded = load_regressor(fitted.save(tmp_path / model))
    np.testing.assert_array_equal(loaded.y_scaler.constant, fitted.y_scaler.constant)
    np.testing.assert_array_equal(loaded.predict(X_test), pred)


def test_a_saved_torch_regressor_without_the_constant_mask_still_loads(tmp_path):
    from safetensors.numpy import load_file, save_file

    X, Y, X_test, _ = linear_problem()
    model = make_regressor("mlp", **{**FAST_NET, "max_epochs": 3}).fit(X, Y)
    directory = model.save(tmp_path / "old")
    weights, config_file = directory / "weights.safetensors", directory / "config.json"
    tensors = load_file(str(weights))
    del tensors["y_constant"]  # a file written before the mask was stored
    save_file(tensors, str(weights))
    config = json.loads(config_file.read_text())
    del config["tensors"]["y_constant"]
    config_file.write_text(json.dumps(config))
    loaded = load_regressor(directory)
    assert not loaded.y_scaler.constant.any()
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
