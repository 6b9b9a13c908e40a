"""Benchmark: the ridge path of regress.py (himalaya, one CV alpha per target) vs scikit-learn RidgeCV.

Problem: BMD-sized inputs, X (n_samples, 13156) -> Y (n_samples, n_targets), a 5-alpha grid,
alpha chosen per target by both (ours: 5-fold CV in himalaya, kernel solver because
n_samples < n_features; sklearn: RidgeCV's efficient leave-one-out, ``alpha_per_target=True``).
Both get the same standardised data (training statistics); sklearn keeps ``fit_intercept=True`` so
its leave-one-out formula accounts for the centring (with pre-centred data and
``fit_intercept=False`` its LOO leaks when samples < features and picks the smallest alpha).
Each fit runs in its own subprocess, so peak RSS (``ru_maxrss``) is per method.

The real target count (65340 for z_zeroscope) does not fit sklearn on this machine, so every
method is timed at two target counts and the fit time is extrapolated linearly in the number
of targets (fixed cost + per-target cost; both solvers are linear in targets once the kernel or
decomposition is made). Prediction agreement: Pearson r between the two methods' test
predictions per target, the share of targets given the same alpha, each method's test r
against the truth, and an exact check with one fixed alpha (the solvers must then agree).

    python bench/bench_regress.py                                   # n = 1000 and 3000, T = 1024 and 4096
    python bench/bench_regress.py --n-samples 1000 --n-targets 2048 8192 --methods himalaya-torch sklearn
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALPHAS = (1e1, 1e2, 1e3, 1e4, 1e5)
METHODS = ("himalaya-torch", "himalaya-numpy", "sklearn")


def make_problem(n_samples: int, n_features: int, n_targets: int, n_test: int, seed: int = 0):
    """X (n+n_test, F) float32; Y = X A B (rank 32) + noise, per-target signal share varying 0..0.5."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples + n_test, n_features), dtype=np.float32)
    A = rng.standard_normal((n_features, 32), dtype=np.float32) / np.sqrt(n_features)
    B = rng.standard_normal((32, n_targets), dtype=np.float32) / np.sqrt(32)
    signal = X @ A @ B  # (n, T)
    share = np.linspace(0.0, 0.5, n_targets, dtype=np.float32)
    noise = rng.standard_normal(signal.shape, dtype=np.float32)
    Y = signal * np.sqrt(share) + noise * np.sqrt(1 - share)
    return X[:n_samples], Y[:n_samples], X[n_samples:], Y[n_samples:]


def standardise(train: np.ndarray, *others: np.ndarray):
    """Z-score with training statistics; returns the scaled arrays and (mean, std)."""
    mean, std = train.mean(0), train.std(0)
    std[std == 0] = 1
    return [(a - mean) / std for a in (train, *others)], (mean, std)


def worker(method: str, n: int, F: int, T: int, n_test: int, out: str, alphas: tuple[float, ...]) -> dict:
    """Fit one method on one problem size; save test predictions and alphas to ``out``."""
    X, Y, X_test, _ = make_problem(n, F, T, n_test)
    import himalaya.backend.torch  # noqa: F401  (imports are not part of the fit time)
    import himalaya.kernel_ridge  # noqa: F401
    import himalaya.ridge  # noqa: F401
    from sklearn.linear_model import Ridge, RidgeCV

    from models.regressors import make_regressor

    warm = np.random.default_rng(1).standard_normal((40, 60), dtype=np.float32)  # first-call costs (LAPACK init) excluded
    make_regressor("ridge", alphas=alphas, backend="numpy" if method == "sklearn" else method.split("-", 1)[1]).fit(warm, warm[:, :5])
    RidgeCV(alphas=list(alphas), alpha_per_target=True).fit(warm, warm[:, :5])
    start = time.perf_counter()
    if method.startswith("himalaya"):
        model = make_regressor("ridge", alphas=alphas, backend=method.split("-", 1)[1], cv=5).fit(X, Y)
        fit = time.perf_counter() - start
        pred, best = model.predict(X_test), model.best_alphas_
        info = model.info_
    else:
        (Xs, Xt), _ = standardise(X, X_test)
        (Ys,), (y_mean, y_std) = standardise(Y)
        if len(alphas) == 1:
            model = Ridge(alpha=alphas[0], fit_intercept=False).fit(Xs, Ys)
            best = np.full(T, alphas[0])
        else:
            # fit_intercept=True: the leave-one-out formula must see the centring, or it leaks (see results).
            model = RidgeCV(alphas=list(alphas), fit_intercept=True, alpha_per_target=True).fit(Xs, Ys)
            best = np.asarray(model.alpha_)
        fit = time.perf_counter() - start
        pred = model.predict(Xt) * y_std + y_mean
        info = {"solver": "RidgeCV (leave-one-out GCV)" if len(alphas) > 1 else "Ridge"}
    np.savez(out, pred=pred.astype(np.float32), best=np.asarray(best, dtype=np.float64))
    return {"method": method, "n": n, "T": T, "fit_s": fit, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "info": {k: v for k, v in info.items() if k in ("solver", "backend")}}


def run_worker(method: str, n: int, F: int, T: int, n_test: int, alphas: tuple[float, ...], tmp: Path, wait_policy: str = "PASSIVE") -> dict:
    """Run ``worker`` in a fresh process (clean peak-memory figure)."""
    out = tmp / f"{method}-{n}-{T}-{len(alphas)}.npz"
    cmd = [sys.executable, __file__, "--worker", method, "--n-samples", str(n), "--n-features", str(F),
           "--n-targets", str(T), "--n-test", str(n_test), "--out", str(out), "--alphas", *map(str, alphas)]
    env = {**os.environ, **({"OMP_WAIT_POLICY": wait_policy} if wait_policy else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["file"] = str(out)
    return result


def column_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-column Pearson r of (n, T) arrays."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.maximum(np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0), 1e-12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--n-samples", type=int, nargs="+", default=[1000, 3000],
                        help="training samples: 1000 = BMD stimuli (repeats averaged), 3000 = trials (default: %(default)s)")
    parser.add_argument("--n-features", type=int, default=13156, help="vertices (Group41) (default: %(default)s)")
    parser.add_argument("--n-targets", type=int, nargs="+", default=[1024, 4096], help="target counts timed (default: %(default)s)")
    parser.add_argument("--full-targets", type=int, default=65340, help="target count extrapolated to (default: %(default)s)")
    parser.add_argument("--n-test", type=int, default=100, help="held-out samples for agreement (default: %(default)s)")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS), help="alpha grid (default: %(default)s)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods (default: %(default)s)")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY for the fits; '' inherits. PASSIVE avoids OpenMP spin-waits that make torch's "
                             "eigh up to 100x slower on a shared, loaded CPU (default: %(default)s)")
    parser.add_argument("--worker", choices=METHODS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    alphas = tuple(args.alphas)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n_samples[0], args.n_features, args.n_targets[0], args.n_test, args.out, alphas)))
        return 0

    print(f"# bench_regress: F={args.n_features}, alphas={list(alphas)}, cpu_count={os.cpu_count()}, "
          f"load={os.getloadavg()}, OMP_WAIT_POLICY={args.omp_wait_policy or os.environ.get('OMP_WAIT_POLICY')}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        n0, t0 = min(args.n_samples), min(args.n_targets)
        ours = run_worker("himalaya-torch", n0, args.n_features, t0, args.n_test, (1e3,), tmp, args.omp_wait_policy)
        ref = run_worker("sklearn", n0, args.n_features, t0, args.n_test, (1e3,), tmp, args.omp_wait_policy)
        diff = np.abs(np.load(ours["file"])["pred"] - np.load(ref["file"])["pred"]).max()
        scale = np.abs(np.load(ref["file"])["pred"]).max()
        print(f"fixed alpha=1e3, n={n0}, T={t0}: max |ours - sklearn| = {diff:.2e} (prediction scale {scale:.2f})")
        rows = []
        for n in args.n_samples:
            for T in args.n_targets:
                results = {m: run_worker(m, n, args.n_features, T, args.n_test, alphas, tmp, args.omp_wait_policy) for m in args.methods}
                _, _, _, Y_test = make_problem(n, args.n_features, T, args.n_test)
                for m, res in results.items():
                    data = np.load(res["file"])
                    res["test_r"] = float(column_r(data["pred"], Y_test).mean())
                    if "sklearn" in results and m != "sklearn":
                        sk = np.load(results["sklearn"]["file"])
                        res["r_vs_sklearn"] = float(np.median(column_r(data["pred"], sk["pred"])))
                        res["same_alpha"] = float(np.isclose(data["best"], sk["best"], rtol=1e-3).mean())
                    rows.append(res)
                    print(json.dumps({k: v for k, v in res.items() if k != "file"}), flush=True)
        print("\n| method | n | T | fit s | speed-up vs sklearn | peak RSS GB | test r | median r vs sklearn | same alpha |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            sk = [x["fit_s"] for x in rows if x["method"] == "sklearn" and x["n"] == r["n"] and x["T"] == r["T"]]
            speed = sk[0] / r["fit_s"] if sk else float("nan")
            print(f"| {r['method']} | {r['n']} | {r['T']} | {r['fit_s']:.1f} | {speed:.1f}x | {r['peak_rss_gb']:.2f} | {r['test_r']:.3f} | "
                  f"{r.get('r_vs_sklearn', float('nan')):.4f} | {r.get('same_alpha', float('nan')):.2f} |")
        print(f"\n| method | n | fixed s | ms / target | fit s at T={args.full_targets} (extrapolated) | RSS GB at T={args.full_targets} (extrap.) | speed-up vs sklearn |")
        print("|---|---|---|---|---|---|---|")
        fits = {}
        for n in args.n_samples:
            for m in args.methods:
                pts = sorted((r["T"], r["fit_s"], r["peak_rss_gb"]) for r in rows if r["method"] == m and r["n"] == n)
                (t1, f1, m1), (t2, f2, m2) = pts[0], pts[-1]
                slope = (f2 - f1) / (t2 - t1)
                fixed = f1 - slope * t1
                mem = m1 + (m2 - m1) / (t2 - t1) * (args.full_targets - t1)
                fits[(m, n)] = (fixed, slope, fixed + slope * args.full_targets, mem)
            for m in args.methods:
                fixed, slope, full, mem = fits[(m, n)]
                speed = fits[("sklearn", n)][2] / full if ("sklearn", n) in fits else float("nan")
                print(f"| {m} | {n} | {fixed:.1f} | {slope * 1e3:.2f} | {full:.0f} | {mem:.1f} | {speed:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
