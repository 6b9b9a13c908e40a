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
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from models import zoo
from models.regressors import (
    HIMALAYA_BACKENDS,
    LOSSES,
    REGRESSORS,
    RIDGE_SOLVERS,
    BaseRegressor,
    NetSettings,
    RidgeSettings,
    is_saved,
    load_regressor,
    make_regressor,
)
from utils import cli, layout, provenance, scoring
from utils.cli import common_parser, fraction, nonnegative_float, positive_float, positive_int, resolve_device, run_main, run_name
from utils.datasets import DATASETS, subject_folder
from utils.io import is_complete_npy, read_json, remove_stale_temps, save_npy, write_json, write_manifest, write_text
from utils.locks import run_lock
from utils.regression_data import (
    INPUTS,
    TEST_AVERAGES,
    TRAIN_REPEATS,
    RegressionSettings,
    SubjectRows,
    average_subject_predictions,
    check_feature_counts,
    check_no_overlap,
    check_one_dataset_per_stimulus,
    drop_overlap,
    input_path,
    load_rows,
    parse_subject_selection,
    predict_part,
    resolve_test_average,
    subject_label,
    training_targets,
    unflatten,
)
from utils.report import read_regression_csv, regression_csv
from utils.seeds import seed_everything
from utils.targets import check_same_recipe, check_targets_exist, load_targets

STAGE = "regress"
# Flags that do not change the fitted models or predictions (left out of the run's identity).
NOT_IN_CONFIG = ("data_root", "overwrite", "run", "config", "targets", "device", "dtype")
# Spellings of one setting: giving two of them is a contradiction (the last one would win silently).
ALIASES = (("--train-on", "--datasets", "--dataset"), ("--train-subjects", "--subjects"), ("--targets", "--target"))


def build_parser() -> argparse.ArgumentParser:
    """Common flags plus the regression flags (defaults from RegressionSettings, RidgeSettings, NetSettings)."""
    parser = common_parser(__doc__.split("\n")[0], presets=zoo.PRESETS, multi_dataset=True, roi_set=True)
    parser.set_defaults(batch_size=NetSettings.batch_size)
    names = sorted(DATASETS)
    parser.add_argument("--train-on", dest="datasets", nargs="+", choices=names, metavar="DS", default=argparse.SUPPRESS,
                        help="same as --datasets: datasets to train on (default: demo)")
    parser.add_argument("--train-subjects", dest="subjects", nargs="+", metavar="SUB", default=argparse.SUPPRESS,
                        help="same as --subjects: training subjects (default: all)")
    parser.add_argument("--test-on", nargs="+", choices=names, metavar="DS", default=None,
                        help="datasets to test on (default: the training datasets)")
    parser.add_argument("--test-subjects", nargs="+", metavar="SUB", default=None,
                        help="test subjects; ones not trained on give zero-shot tests (default: the training subjects)")
    parser.add_argument("--input", default=RegressionSettings.input, choices=INPUTS,
                        help="regress from prepared fMRI betas or from encoder embeddings (default: %(default)s)")
    parser.add_argument("--embeddings-run", type=run_name, default=None,
                        help="run name under embeddings/ when --input embeddings (default: %(default)s)")
    parser.add_argument("--targets", "--target", nargs="+", default=list(RegressionSettings.targets), metavar="TARGET",
                        help="targets under target_vectors_<ds>/, e.g. z_zeroscope blip clip (default: %(default)s)")
    parser.add_argument("--regressor", default=RegressionSettings.regressor, choices=sorted(REGRESSORS),
                        help="regression model (default: %(default)s)")
    parser.add_argument("--run", type=run_name, default=None, help="run name (default: derived from the flags)")
    parser.add_argument("--train-repeats", default=RegressionSettings.train_repeats, choices=TRAIN_REPEATS,
                        help="training rows: stimuli with repeats averaged, or every trial (default: %(default)s)")
    parser.add_argument("--test-average", default=RegressionSettings.test_average, choices=TEST_AVERAGES,
                        help="average test repeats before predicting (inputs) or average the per-trial predictions; "
                             "auto = inputs when --train-repeats average, else predictions (default: %(default)s)")
    parser.add_argument("--drop-overlap", action="store_true",
                        help="drop training rows whose (dataset, stimulus) is also a test stimulus instead of stopping")
    ridge = parser.add_argument_group("ridge")
    ridge.add_argument("--alphas", nargs="+", type=positive_float, default=list(RidgeSettings.alphas),
                       help="ridge alpha grid; one alpha is chosen per target by CV (default: %(default)s)")
    ridge.add_argument("--cv", type=positive_int, default=RidgeSettings.cv, help="cross-validation folds for ridge (default: %(default)s)")
    ridge.add_argument("--ridge-solver", default=RidgeSettings.solver, choices=RIDGE_SOLVERS,
                       help="kernel (dual) or primal ridge; auto = kernel when samples < features (default: %(default)s)")
    ridge.add_argument("--ridge-backend", default=RidgeSettings.backend, choices=HIMALAYA_BACKENDS,
                       help="himalaya backend; auto = torch_cuda on a CUDA --device, else torch (default: %(default)s)")
    net = parser.add_argument_group("mlp / swiglu")
    widths = ", ".join(f"{w} with --preset {p}" for p, w in zoo.REGRESSOR_HIDDEN_DIM.items())
    net.add_argument("--hidden-dim", type=positive_int, default=None, help=f"hidden width (default: {widths})")
    net.add_argument("--n-layers", type=positive_int, default=NetSettings.n_layers, help="hidden layers / SwiGLU blocks (default: %(default)s)")
    net.add_argument("--dropout", type=fraction, default=NetSettings.dropout, help="dropout (default: %(default)s)")
    net.add_argument("--lr", type=positive_float, default=NetSettings.lr, help="AdamW learning rate (default: %(default)s)")
    net.add_argument("--weight-decay", type=nonnegative_float, default=NetSettings.weight_decay,
                     help="AdamW weight decay (default: %(default)s)")
    net.add_argument("--max-epochs", type=positive_int, default=NetSettings.max_epochs, help="most training epochs (default: %(default)s)")
    net.add_argument("--patience", type=positive_int, default=NetSettings.patience,
                     help="stop after this many epochs without a better validation loss (default: %(default)s)")
    net.add_argument("--val-fraction", type=fraction, default=NetSettings.val_fraction,
                     help="fraction of training stimuli held out for early stopping (default: %(default)s)")
    net.add_argument("--loss", default=NetSettings.loss, choices=LOSSES, help="training loss (default: %(default)s)")
    return parser


# --------------------------------------------------------------------------- flags and run identity
def given_flags(argv: list[str]) -> set[str]:
    """The long flags named on the command line (``--flag`` and ``--flag=value``)."""
    return {token.split("=", 1)[0] for token in argv if token.startswith("--")}


def contradictions(argv: list[str], args: argparse.Namespace) -> list[str]:
    """Flag combinations that contradict each other or would be ignored, as messages (empty when none)."""
    given = given_flags(argv)
    problems = []
    for spellings in ALIASES:
        named = [flag for flag in spellings if flag in given]
        if len(named) > 1:
            problems.append(f"{' and '.join(named)} set the same thing; give only one of them")
    if args.input == "embeddings" and not args.embeddings_run:
        problems.append("--input embeddings needs --embeddings-run RUN (the folder under embeddings/)")
    if args.input == "betas" and args.embeddings_run:
        problems.append(f"--embeddings-run {args.embeddings_run} is ignored with --input betas; add --input embeddings or drop it")
    return problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags (YAML config first, then the command line) and check their combination."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = cli.parse_args(parser, argv)
    problems = contradictions(argv, args)
    if problems:
        parser.error("; ".join(problems) + ".")
    if args.dtype not in ("auto", "float32"):
        parser.error(f"--dtype {args.dtype}: regression runs in float32; use --dtype auto or float32.")
    if args.hidden_dim is None:
        args.hidden_dim = zoo.REGRESSOR_HIDDEN_DIM[args.preset]
    args.test_average = resolve_test_average(args.test_average, args.train_repeats)
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
    previous = read_json(path, remake=f"rerun with --run {run} --overwrite")
    if previous is None or previous == config or overwrite:
        return
    changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
    details = ", ".join(f"{k}: {previous.get(k)!r} -> {config.get(k)!r}" for k in changed[:6])
    raise ValueError(f"Run {run!r} ({path}) was made with other settings ({details}); pass --overwrite to redo it or choose another --run.")


def finished(manifest: dict | None, config: dict[str, Any], recipes: dict[str, dict[str, str]], data_root: str) -> bool:
    """True when a complete manifest with the same config lists every requested target's files, all complete,
    made from targets of the same recipes (``{target: {dataset: recipe}}``)."""
    if not manifest or manifest.get("status") != "complete" or manifest.get("config") != config:
        return False
    targets = list(recipes)
    if any(manifest.get("target_recipes", {}).get(t) != recipes[t] for t in targets):
        return False
    files = manifest.get("files", {})
    root = layout.root(data_root)
    return all(t in files and all(is_complete_npy(root / f) for f in files[t]) for t in targets)


# --------------------------------------------------------------------------- one target
def fit_or_load(
    args: argparse.Namespace, ckpt: Path, config: dict[str, Any], device: str, train: list[SubjectRows],
    keys: list[tuple[str, str]], Y: np.ndarray,
) -> BaseRegressor:
    """The regressor of one target: loaded when ``ckpt`` holds one fitted with this run's config, else fitted on X (n_rows, F) -> Y and saved."""
    stamp = layout.run_config_path(ckpt)  # the run settings this checkpoint was fitted with
    if is_saved(ckpt) and read_json(stamp, remake="rerun with --overwrite") == config and not args.overwrite:
        print(f"[{ckpt.name}] loaded the fitted {args.regressor} from {ckpt}")
        return load_regressor(ckpt, device=device)
    stamp.unlink(missing_ok=True)  # until the new fit is saved, the folder is not a finished one
    X = np.concatenate([p.X for p in train])  # (n_rows, F)
    groups = [f"{ds}/{s}" for ds, s in keys]
    print(f"[{ckpt.name}] fitting {args.regressor}: X {X.shape} -> Y {Y.shape}")
    model = make_regressor(args.regressor, **regressor_params(args, device)).fit(X, Y, groups=groups)
    del X
    model.save(ckpt)
    write_json(stamp, config)
    return model


def run_target(
    args: argparse.Namespace, run: str, config: dict[str, Any], target: str, device: str,
    train: list[SubjectRows], test: list[SubjectRows],
) -> tuple[dict[str, Any], list[str], list[list]]:
    """Fit (or load) the regressor for one target, write its predictions; return metrics, files, CSV rows."""
    keys = [(p.dataset, s) for p in train for s in p.stimuli]
    Y, shape = training_targets(args.data_root, target, keys)  # (n_rows, D), the stored shape
    start = time.perf_counter()
    model = fit_or_load(args, layout.checkpoint_dir(args.data_root, STAGE, run) / target, config, device, train, keys, Y)
    fit_seconds = time.perf_counter() - start
    if "backend" in model.info_:
        print(f"[{target}] himalaya backend in use: {model.info_['backend']}, solver: {model.info_['solver']}")

    average_predictions = args.test_average == "predictions"
    results = {p.label: predict_part(model, p, average_predictions) for p in test}  # label -> (stimuli, (S, D))
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
            subjects_metrics[part.label] = scoring.score_predictions(pred, truth, seed=args.seed)
            rows += scoring.per_sample_rows(target, part.label, stimuli, pred, truth)
            if len(test) > 1:  # each subject's own predictions beside their mean
                for s, row in zip(stimuli, pred, strict=True):
                    path = layout.subject_prediction_path(args.data_root, run, target, dataset, subject_folder(part.subject), s)
                    save_npy(path, unflatten(row, shape))
                    files.append(str(path.relative_to(root)))
        stimuli, pred = average_subject_predictions(results, labels)
        truth, _ = load_targets(args.data_root, dataset, target, stimuli)
        datasets_metrics[dataset] = {
            "subjects": labels,
            "mean_over_subjects": scoring.mean_over_subjects([subjects_metrics[label] for label in labels]),
            "subject_averaged_prediction": scoring.score_predictions(pred, truth, seed=args.seed),
        }
        if len(labels) > 1:
            rows += scoring.per_sample_rows(target, f"{dataset}/mean", stimuli, pred, truth)
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
    check_run_config(layout.config_path(ckpt_root), config, run, args.overwrite)
    with run_lock(ckpt_root, STAGE), run_lock(out_root, STAGE):
        for folder in (ckpt_root, out_root):
            for directory in [folder, *(d for d in folder.rglob("*") if d.is_dir())]:
                remove_stale_temps(directory)
        return regress_run(args, run, config, train_subjects, test_subjects, device)


def regress_run(
    args: argparse.Namespace, run: str, config: dict[str, Any], train_subjects: dict[str, list[int]],
    test_subjects: dict[str, list[int]], device: str,
) -> int:
    """The run's work under its locks: reuse a finished run, else fit, predict and score every target."""
    ckpt_root = layout.checkpoint_dir(args.data_root, STAGE, run)
    out_root = layout.predictions_run_dir(args.data_root, run)
    redo = f"delete it and rerun `python regress.py{layout.root_flag(args.data_root)} ... --run {run} --overwrite`"
    manifest = read_json(layout.manifest_path(out_root), remake=redo)
    datasets = list(dict.fromkeys(list(train_subjects) + list(test_subjects)))
    recipes = {  # each target's recorded recipe (mixed recipes are refused): its predictions depend on it
        t: {ds: record.get("recipe") for ds, record in check_same_recipe(args.data_root, t, datasets).items()} for t in args.targets
    }
    metrics_file = layout.regression_metrics_path(args.data_root, run)
    metrics_ok = args.overwrite or read_json(metrics_file, remake=redo) is not None  # a corrupt one raises naming it
    if not args.overwrite and metrics_ok and finished(manifest, config, recipes, args.data_root):
        print(f"Run {run!r} is already finished in {out_root}; reusing it (pass --overwrite to redo).")
        return 0

    # Rows: training stimuli (or trials) of every training subject; test stimuli of every test subject.
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
    check_one_dataset_per_stimulus(test_stimuli)
    for target in args.targets:  # every missing target file is reported before any fitting
        for dataset in dict.fromkeys(list(train_subjects) + list(test_subjects)):
            stimuli = {s for p in train + test if p.dataset == dataset for s in p.stimuli}
            check_targets_exist(args.data_root, dataset, target, sorted(stimuli))
    print(f"Run {run}: {args.input} -> {args.targets} with {args.regressor}; train {sum(len(p.stimuli) for p in train)} rows "
          f"from {[p.label for p in train]}, test {[p.label for p in test]}")
    write_json(layout.config_path(ckpt_root), config)
    layout.settings_path(out_root).unlink(missing_ok=True)  # recorded again once the predictions are written

    # Fit, predict and score each target; targets of an earlier pass of the same run are kept.
    same = bool(manifest) and manifest.get("config") == config
    all_metrics = dict((read_json(metrics_file, remake=redo) or {}).get("targets", {})) if same else {}
    all_files = dict(manifest.get("files", {})) if same else {}
    csv_rows = [r for r in read_regression_csv(layout.per_sample_path(out_root)) if r[0] not in args.targets] if same else []
    all_recipes = dict(manifest.get("target_recipes", {})) if same else {}
    for target in args.targets:
        metrics, files, rows = run_target(args, run, {**config, "target_recipe": recipes[target]}, target, device, train, test)
        all_recipes[target] = recipes[target]
        print_summary(target, metrics)
        all_metrics[target], all_files[target] = metrics, files
        csv_rows += rows

    synthetic = any(DATASETS[ds].synthetic for ds in list(train_subjects) + list(test_subjects))
    write_json(layout.regression_metrics_path(args.data_root, run), {
        "run": run, "input": args.input, "regressor": args.regressor,
        "train": {ds: [subject_label(ds, s) for s in subs] for ds, subs in train_subjects.items()},
        "test": {ds: [subject_label(ds, s) for s in subs] for ds, subs in test_subjects.items()},
        "zero_shot_subjects": sorted({p.label for p in test} - {p.label for p in train}),
        "test_average": args.test_average, "train_repeats": args.train_repeats,
        "chance": scoring.chance_levels(),
        "notes": scoring.regression_notes(synthetic),
        "targets": all_metrics,
    })
    write_text(layout.per_sample_path(out_root), regression_csv(csv_rows))
    inputs = {p.label: input_path(args.data_root, p, args.input, args.embeddings_run, args.roi_set) for p in train + test}
    write_manifest(
        out_root, STAGE, args, inputs=inputs,
        counts={"train_rows": sum(len(p.stimuli) for p in train), "test_subjects": len(test),
                "predictions": {t: len(f) for t, f in all_files.items()}},
        run=run, config=config, files=all_files, target_recipes=all_recipes, checkpoints=str(ckpt_root), status="complete",
    )
    provenance.write_settings(out_root, STAGE, {"config": config, "target_recipes": all_recipes})
    print(f"Wrote predictions/{run}/ ({', '.join(args.targets)}) and checkpoints/regress/{run}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
