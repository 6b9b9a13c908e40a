"""Stage 3: regression from fMRI (or encoder embeddings) to the targets; saves predictions.

Reads
  betas_cifti_<ds>/subNN/Group41.npy + Group41_trials.csv   (download_data.py --dataset DS --prepare)
  or embeddings/<embeddings-run>/<ds>/subNN.npy             (finetune_contrastive.py), rows = prepared trials
  target_vectors_<ds>/<target>/<stim>.npy                   (extract_targets_zeroscope.py / extract_targets_blip.py)
Writes
  checkpoints/regress/<run>/config.json                     the run's settings
  checkpoints/regress/<run>/<target>/{config.json,weights.safetensors,run_config.json}   the fitted
                                                            regressor and the run settings it was fitted with
  predictions/<run>/<target>/<stim>.npy                     prediction in the target's own shape; with
                                                            several test subjects, their mean (stage 4 reads it)
  predictions/<run>/<target>/by_subject/<ds>/subNN/<stim>.npy   each test subject (only when there are several)
  predictions/<run>/metrics.json, per_sample.csv, manifest.json

Training rows are stimuli (repeats averaged, default) or single trials (``--train-repeats
separate``), stacked over every training dataset and subject; validation folds keep all rows
of one stimulus together. Test rows are the test split of each test subject; repeats are
averaged before prediction (``--test-average inputs``) or the per-trial predictions are
averaged (``predictions``). ``--test-subjects`` that were not trained on give zero-shot tests.
Subjects: ``1``, ``sub01`` or ``sub-01`` apply to every dataset; ``bmd:1`` to one dataset.
The run name is ``--run`` or derived from the flags (never from results); rerunning with the
same flags reuses a finished run unless ``--overwrite``. A YAML ``--config`` sets any flag by
its name (``regressor: mlp``, ``train_on: [bmd]``); flags given on the command line win.

Examples:
  python regress.py --dataset demo --targets z_zeroscope blip --regressor ridge
  python regress.py --train-on bmd --subjects 1 --targets z_zeroscope blip
  python regress.py --train-on bmd --subjects 1 2 3 4 5 6 7 8 9 --test-subjects 10 --regressor mlp
  python regress.py --train-on bmd cc2017 --subjects bmd:1 cc2017:1 --test-on bmd --test-subjects bmd:1
  python regress.py --input embeddings --embeddings-run contrastive_demo --dataset demo
  python regress.py --config configs/regress.yaml --regressor swiglu
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from models import zoo
from models.regressors import (
    DEFAULT_ALPHAS,
    HIMALAYA_BACKENDS,
    LOSSES,
    REGRESSORS,
    RIDGE_SOLVERS,
    is_saved,
    load_regressor,
    make_regressor,
)
from utils import cli, layout
from utils.cli import common_parser, fraction, nonnegative_float, positive_float, positive_int, resolve_device
from utils.datasets import DATASETS, find_subject_folder, subject_folder
from utils.io import is_complete_npy, read_json, save_npy, write_json, write_manifest, write_text
from utils.regression_data import (
    INPUTS,
    N_WAYS,
    SubjectRows,
    average_by_key,
    chance_levels,
    check_feature_counts,
    check_no_overlap,
    load_rows,
    parse_subject_selection,
    per_sample_csv,
    per_sample_rows,
    score_predictions,
    subject_label,
    unflatten,
)
from utils.seeds import seed_everything
from utils.targets import check_targets_exist, load_targets

STAGE = "regress"
DEFAULT_TARGETS = ("z_zeroscope", "blip")
HIDDEN_DIM = {"default": 1024, "tiny": 128}
# Flags that do not change the fitted models or predictions (left out of the run's identity).
NOT_IN_CONFIG = ("data_root", "overwrite", "run", "config", "targets", "device", "dtype")


def build_parser() -> argparse.ArgumentParser:
    """Common flags plus the regression flags (defaults in one visible block)."""
    parser = common_parser(__doc__.split("\n")[0], presets=zoo.PRESETS, multi_dataset=True, roi_set=True)
    parser.set_defaults(batch_size=64)
    names = sorted(DATASETS)
    parser.add_argument("--train-on", dest="datasets", nargs="+", choices=names, metavar="DS", default=argparse.SUPPRESS,
                        help="same as --datasets: datasets to train on (default: demo)")
    parser.add_argument("--train-subjects", dest="subjects", nargs="+", metavar="SUB", default=argparse.SUPPRESS,
                        help="same as --subjects: training subjects (default: all)")
    parser.add_argument("--test-on", nargs="+", choices=names, metavar="DS", default=None,
                        help="datasets to test on (default: the training datasets)")
    parser.add_argument("--test-subjects", nargs="+", metavar="SUB", default=None,
                        help="test subjects; ones not trained on give zero-shot tests (default: the training subjects)")
    parser.add_argument("--input", default="betas", choices=INPUTS,
                        help="regress from prepared fMRI betas or from encoder embeddings (default: %(default)s)")
    parser.add_argument("--embeddings-run", default=None,
                        help="run name under embeddings/ when --input embeddings (default: %(default)s)")
    parser.add_argument("--targets", "--target", nargs="+", default=list(DEFAULT_TARGETS), metavar="TARGET",
                        help="targets under target_vectors_<ds>/, e.g. z_zeroscope blip clip (default: %(default)s)")
    parser.add_argument("--regressor", default="ridge", choices=sorted(REGRESSORS), help="regression model (default: %(default)s)")
    parser.add_argument("--run", default=None, help="run name (default: derived from the flags)")
    parser.add_argument("--train-repeats", default="average", choices=("average", "separate"),
                        help="training rows: stimuli with repeats averaged, or every trial (default: %(default)s)")
    parser.add_argument("--test-average", default="auto", choices=("auto", "inputs", "predictions"),
                        help="average test repeats before predicting (inputs) or average the per-trial predictions; "
                             "auto = inputs when --train-repeats average, else predictions (default: %(default)s)")
    parser.add_argument("--drop-overlap", action="store_true",
                        help="drop training rows whose (dataset, stimulus) is also a test stimulus instead of stopping")
    ridge = parser.add_argument_group("ridge")
    ridge.add_argument("--alphas", nargs="+", type=positive_float, default=list(DEFAULT_ALPHAS),
                       help="ridge alpha grid; one alpha is chosen per target by CV (default: %(default)s)")
    ridge.add_argument("--cv", type=positive_int, default=5, help="cross-validation folds for ridge (default: %(default)s)")
    ridge.add_argument("--ridge-solver", default="auto", choices=RIDGE_SOLVERS,
                       help="kernel (dual) or primal ridge; auto = kernel when samples < features (default: %(default)s)")
    ridge.add_argument("--ridge-backend", default="auto", choices=HIMALAYA_BACKENDS,
                       help="himalaya backend; auto = torch_cuda on a CUDA --device, else torch (default: %(default)s)")
    net = parser.add_argument_group("mlp / swiglu")
    net.add_argument("--hidden-dim", type=positive_int, default=None,
                     help=f"hidden width (default: {HIDDEN_DIM['default']}, {HIDDEN_DIM['tiny']} with --preset tiny)")
    net.add_argument("--n-layers", type=positive_int, default=1, help="hidden layers / SwiGLU blocks (default: %(default)s)")
    net.add_argument("--dropout", type=fraction, default=0.1, help="dropout (default: %(default)s)")
    net.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate (default: %(default)s)")
    net.add_argument("--weight-decay", type=nonnegative_float, default=1e-2, help="AdamW weight decay (default: %(default)s)")
    net.add_argument("--max-epochs", type=positive_int, default=200, help="most training epochs (default: %(default)s)")
    net.add_argument("--patience", type=positive_int, default=10,
                     help="stop after this many epochs without a better validation loss (default: %(default)s)")
    net.add_argument("--val-fraction", type=fraction, default=0.1,
                     help="fraction of training stimuli held out for early stopping (default: %(default)s)")
    net.add_argument("--loss", default="mse", choices=LOSSES, help="training loss (default: %(default)s)")
    return parser


# --------------------------------------------------------------------------- flags and config
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags (YAML config first, then the command line) and check their combination."""
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    if args.input == "embeddings" and not args.embeddings_run:
        parser.error("--input embeddings needs --embeddings-run RUN (the folder under embeddings/).")
    if args.dtype not in ("auto", "float32"):
        parser.error(f"--dtype {args.dtype}: regression runs in float32; use --dtype auto or float32.")
    if args.hidden_dim is None:
        args.hidden_dim = HIDDEN_DIM[args.preset]
    if args.test_average == "auto":
        args.test_average = "inputs" if args.train_repeats == "average" else "predictions"
    args.targets = list(dict.fromkeys(args.targets))
    return args


def resolve_test_subjects(tokens: list[str] | None, test_datasets: list[str], train: dict[str, list[int]]) -> dict[str, list[int]]:
    """Test subjects per dataset: as given, else the training subjects of that dataset (else all)."""
    if tokens:
        return parse_subject_selection(tokens, test_datasets)
    selection = parse_subject_selection(None, test_datasets)
    return {ds: train.get(ds, selection[ds]) for ds in test_datasets}


def run_config(args: argparse.Namespace, train: dict[str, list[int]], test: dict[str, list[int]]) -> dict[str, Any]:
    """Everything that determines the fitted models and predictions (JSON-normalised)."""
    config = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_CONFIG}
    config.update(train_subjects=train, test_subjects=test, test_on=list(test))
    return json.loads(json.dumps(config))


def derive_run_name(args: argparse.Namespace, config: dict[str, Any]) -> str:
    """``<input>-<regressor>-<train datasets>-<8 hex of the config>``: readable and unique per settings."""
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    return f"{args.input}-{args.regressor}-{'+'.join(args.datasets)}-{digest}"


def regressor_params(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Keyword arguments of ``make_regressor`` from the flags."""
    if args.regressor == "ridge":
        return {"alphas": tuple(args.alphas), "cv": args.cv, "solver": args.ridge_solver, "backend": args.ridge_backend, "device": device}
    return {
        "hidden_dim": args.hidden_dim, "n_layers": args.n_layers, "dropout": args.dropout, "lr": args.lr,
        "weight_decay": args.weight_decay, "batch_size": args.batch_size, "max_epochs": args.max_epochs,
        "patience": args.patience, "val_fraction": args.val_fraction, "loss": args.loss, "seed": args.seed, "device": device,
    }


def check_run_config(path: Path, config: dict[str, Any], run: str, overwrite: bool) -> None:
    """A run folder made with other settings is an error unless ``--overwrite``."""
    previous = read_json(path)
    if previous is None or previous == config or overwrite:
        return
    changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
    details = ", ".join(f"{k}: {previous.get(k)!r} -> {config.get(k)!r}" for k in changed[:6])
    raise ValueError(f"Run {run!r} ({path}) was made with other settings ({details}); pass --overwrite to redo it or choose another --run.")


def finished(manifest: dict | None, config: dict[str, Any], targets: list[str], data_root: str) -> bool:
    """True when a complete manifest with the same config lists every requested target's files, all complete."""
    if not manifest or manifest.get("status") != "complete" or manifest.get("config") != config:
        return False
    files = manifest.get("files", {})
    root = layout.root(data_root)
    return all(t in files and all(is_complete_npy(root / f) for f in files[t]) for t in targets)


# --------------------------------------------------------------------------- data
def drop_overlap(parts: list[SubjectRows], overlap: set[tuple[str, str]]) -> list[SubjectRows]:
    """Training parts without rows whose (dataset, stimulus) is in ``overlap``."""
    kept = []
    for part in parts:
        mask = np.asarray([(part.dataset, s) not in overlap for s in part.stimuli], dtype=bool)
        if mask.any():
            kept.append(SubjectRows(part.dataset, part.subject, [s for s, m in zip(part.stimuli, mask, strict=True) if m], part.X[mask]))
    if not kept:
        raise ValueError("No training rows remain after dropping the test stimuli (--drop-overlap).")
    return kept


def training_targets(data_root: str, target: str, keys: list[tuple[str, str]]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Y (n_rows, D) for training rows keyed (dataset, stimulus); each file is read once."""
    unique = list(dict.fromkeys(keys))
    blocks, shapes = {}, {}
    for dataset in dict.fromkeys(ds for ds, _ in unique):
        stimuli = [s for ds, s in unique if ds == dataset]
        Y, shapes[dataset] = load_targets(data_root, dataset, target, stimuli)
        blocks[dataset] = {s: Y[i] for i, s in enumerate(stimuli)}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"Target {target!r} has different shapes across training datasets: {shapes}.")
    return np.stack([blocks[ds][s] for ds, s in keys]), next(iter(shapes.values()))


def predict_part(model: Any, part: SubjectRows, average_predictions: bool) -> tuple[list[str], np.ndarray]:
    """Predictions (S, D) for one test subject, averaged per stimulus when rows are trials."""
    pred = model.predict(part.X)
    if average_predictions:
        return average_by_key(pred, part.stimuli)
    return part.stimuli, pred


def mean_over_subjects(results: dict[str, tuple[list[str], np.ndarray]], labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Average predictions of the same stimulus over several subjects of one dataset."""
    stimuli = [s for label in labels for s in results[label][0]]
    values = np.concatenate([results[label][1] for label in labels])
    return average_by_key(values, stimuli)


# --------------------------------------------------------------------------- one target
def run_target(
    args: argparse.Namespace, run: str, config: dict[str, Any], target: str, device: str,
    train: list[SubjectRows], test: list[SubjectRows],
) -> tuple[dict[str, Any], list[str], list[list]]:
    """Fit (or load) the regressor for one target, write its predictions; return metrics, files, CSV rows."""
    keys = [(p.dataset, s) for p in train for s in p.stimuli]
    Y, shape = training_targets(args.data_root, target, keys)
    ckpt = layout.checkpoint_dir(args.data_root, STAGE, run) / target
    stamp = ckpt / "run_config.json"  # the run settings this checkpoint was fitted with
    start = time.perf_counter()
    if is_saved(ckpt) and read_json(stamp) == config and not args.overwrite:
        model = load_regressor(ckpt, device=device)
        print(f"[{target}] loaded the fitted {args.regressor} from {ckpt}")
    else:
        stamp.unlink(missing_ok=True)  # until the new fit is saved, the folder is not a finished one
        X = np.concatenate([p.X for p in train])  # (n_rows, F)
        groups = [f"{ds}/{s}" for ds, s in keys]
        print(f"[{target}] fitting {args.regressor}: X {X.shape} -> Y {Y.shape} (target shape {shape})")
        model = make_regressor(args.regressor, **regressor_params(args, device)).fit(X, Y, groups=groups)
        del X
        model.save(ckpt)
        write_json(stamp, config)
    fit_seconds = time.perf_counter() - start
    if "backend" in model.info_:
        print(f"[{target}] himalaya backend in use: {model.info_['backend']}, solver: {model.info_['solver']}")

    average_predictions = args.test_average == "predictions"
    results = {p.label: predict_part(model, p, average_predictions) for p in test}
    by_dataset: dict[str, list[str]] = {}
    for part in test:
        by_dataset.setdefault(part.dataset, []).append(part.label)
    files: list[str] = []
    rows: list[list] = []
    subjects_metrics: dict[str, Any] = {}
    datasets_metrics: dict[str, Any] = {}
    root = layout.root(args.data_root)
    for dataset, labels in by_dataset.items():
        for part in (p for p in test if p.dataset == dataset):
            stimuli, pred = results[part.label]
            truth, true_shape = load_targets(args.data_root, dataset, target, stimuli)
            if true_shape != shape:
                raise ValueError(f"Target {target!r} of {dataset} has shape {true_shape}, the training targets {shape}.")
            subjects_metrics[part.label] = score_predictions(pred, truth, seed=args.seed)
            rows += per_sample_rows(target, part.label, stimuli, pred, truth)
            if len(test) > 1:
                out_dir = layout.subject_predictions_dir(args.data_root, run, target, dataset, subject_folder(part.subject))
                for s, row in zip(stimuli, pred, strict=True):
                    save_npy(out_dir / f"{s}.npy", unflatten(row, shape))
                    files.append(str((out_dir / f"{s}.npy").relative_to(root)))
        stimuli, pred = mean_over_subjects(results, labels)
        truth, _ = load_targets(args.data_root, dataset, target, stimuli)
        scores = [subjects_metrics[label] for label in labels]
        datasets_metrics[dataset] = {
            "subjects": labels,
            "mean_over_subjects": {k: float(np.mean([s[k] for s in scores])) for k in ("mse", "r2", "pearson_r", "feature_r")},
            "subject_averaged_prediction": score_predictions(pred, truth, seed=args.seed),
        }
        if len(labels) > 1:
            rows += per_sample_rows(target, f"{dataset}/mean", stimuli, pred, truth)
        for s, row in zip(stimuli, pred, strict=True):
            path = layout.prediction_path(args.data_root, run, target, s)
            save_npy(path, unflatten(row, shape))
            files.append(str(path.relative_to(root)))
    metrics = {
        "shape": list(shape), "n_train_rows": len(keys), "n_train_stimuli": len(set(keys)),
        "fit_or_load_seconds": round(fit_seconds, 3), "model_info": {k: v for k, v in model.info_.items() if k != "history"},
        "subjects": subjects_metrics, "datasets": datasets_metrics,
    }
    return metrics, files, rows


def print_summary(target: str, metrics: dict[str, Any]) -> None:
    """One console line per test subject."""
    for label, m in metrics["subjects"].items():
        ident = " ".join(f"{k} {v:.3f}" for k, v in m["identification"].items() if v is not None)
        print(f"[{target}] {label}: r {m['pearson_r']:.3f}, feature r {m['feature_r']:.3f}, R2 {m['r2']:.3f}, {ident}")


# --------------------------------------------------------------------------- main
def read_per_sample(path: Path) -> list[list[str]]:
    """Rows of an earlier per_sample.csv (without its header); [] when absent."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.reader(handle))[1:]


def input_path(args: argparse.Namespace, part: SubjectRows) -> str:
    """The file a subject's inputs came from (for the manifest)."""
    folder = find_subject_folder(args.data_root, part.dataset, part.subject)
    if args.input == "embeddings":
        return str(layout.embeddings_path(args.data_root, args.embeddings_run, part.dataset, folder))
    return str(layout.prepared_array_path(args.data_root, part.dataset, folder, args.roi_set))


def main(argv: list[str] | None = None) -> int:
    """Fit each target's regressor, save test predictions and metrics; 0 on success."""
    args = parse_args(argv)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    train_subjects = parse_subject_selection(args.subjects, args.datasets)
    test_subjects = resolve_test_subjects(args.test_subjects, args.test_on or args.datasets, train_subjects)
    config = run_config(args, train_subjects, test_subjects)
    run = args.run or derive_run_name(args, config)
    ckpt_root = layout.checkpoint_dir(args.data_root, STAGE, run)
    out_root = layout.predictions_run_dir(args.data_root, run)
    check_run_config(ckpt_root / "config.json", config, run, args.overwrite)
    manifest = read_json(out_root / "manifest.json")
    if not args.overwrite and finished(manifest, config, args.targets, args.data_root):
        print(f"Run {run!r} is already finished in {out_root}; reusing it (pass --overwrite to redo).")
        return 0

    average_inputs = args.train_repeats == "average"
    train = load_rows(args.data_root, train_subjects, "train", args.input, average_inputs, args.embeddings_run, args.limit, args.roi_set)
    test = load_rows(args.data_root, test_subjects, "test", args.input, args.test_average == "inputs", args.embeddings_run, args.limit, args.roi_set)
    check_feature_counts(train + test)
    test_stimuli = {(p.dataset, s) for p in test for s in p.stimuli}
    overlap = check_no_overlap(((p.dataset, s) for p in train for s in p.stimuli), test_stimuli)
    if overlap and not args.drop_overlap:
        shown = ", ".join(f"{ds}:{s}" for ds, s in overlap[:10])
        raise ValueError(f"{len(overlap)} test stimuli are also training stimuli ({shown}); pass --drop-overlap to drop them from training.")
    if overlap:
        train = drop_overlap(train, set(overlap))
        print(f"Dropped {len(overlap)} test stimuli from the training rows (--drop-overlap).")
    names = {}
    for ds, s in sorted(test_stimuli):
        if s in names and names[s] != ds:
            raise ValueError(f"Stimulus {s!r} is in both {names[s]} and {ds}: test on one of these datasets per run.")
        names[s] = ds
    for target in args.targets:  # every missing target file is reported before any fitting
        for dataset in dict.fromkeys(list(train_subjects) + list(test_subjects)):
            stimuli = {s for p in train + test if p.dataset == dataset for s in p.stimuli}
            check_targets_exist(args.data_root, dataset, target, sorted(stimuli))
    print(f"Run {run}: {args.input} -> {args.targets} with {args.regressor}; train {sum(len(p.stimuli) for p in train)} rows "
          f"from {[p.label for p in train]}, test {[p.label for p in test]}")
    write_json(ckpt_root / "config.json", config)

    same = bool(manifest) and manifest.get("config") == config  # earlier targets of this run stay valid
    all_metrics = dict((read_json(layout.regression_metrics_path(args.data_root, run)) or {}).get("targets", {})) if same else {}
    all_files = dict(manifest.get("files", {})) if same else {}
    csv_rows = [r for r in read_per_sample(out_root / "per_sample.csv") if r[0] not in args.targets] if same else []
    for target in args.targets:
        metrics, files, rows = run_target(args, run, config, target, device, train, test)
        print_summary(target, metrics)
        all_metrics[target], all_files[target] = metrics, files
        csv_rows += rows
    synthetic = any(ds == "demo" for ds in list(train_subjects) + list(test_subjects))
    write_json(layout.regression_metrics_path(args.data_root, run), {
        "run": run, "input": args.input, "regressor": args.regressor,
        "train": {ds: [subject_label(ds, s) for s in subs] for ds, subs in train_subjects.items()},
        "test": {ds: [subject_label(ds, s) for s in subs] for ds, subs in test_subjects.items()},
        "zero_shot_subjects": sorted({p.label for p in test} - {p.label for p in train}),
        "test_average": args.test_average, "train_repeats": args.train_repeats,
        "chance": chance_levels(N_WAYS),
        "notes": ("pearson_r: mean per-stimulus Pearson r over target features; feature_r: mean per-feature r over test "
                  "stimuli; r2: mean per-feature R2; identification: n-way top-1 among the test stimuli (100 seeded trials "
                  "per stimulus; null when fewer stimuli than n)" + ("; the demo data are SYNTHETIC" if synthetic else "")),
        "targets": all_metrics,
    })
    write_text(out_root / "per_sample.csv", per_sample_csv(csv_rows))
    inputs = {p.label: input_path(args, p) for p in train + test}
    write_manifest(
        out_root, STAGE, args, inputs=inputs,
        counts={"train_rows": sum(len(p.stimuli) for p in train), "test_subjects": len(test),
                "predictions": {t: len(f) for t, f in all_files.items()}},
        run=run, config=config, files=all_files, checkpoints=str(ckpt_root), status="complete",
    )
    print(f"Wrote predictions/{run}/ ({', '.join(args.targets)}) and checkpoints/regress/{run}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
