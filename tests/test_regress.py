"""regress.py end to end on a small synthetic demo (3 subjects) with targets made from its
known stimulus features: exact files, decoding above chance, zero-shot, resume, bad inputs."""
from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest

import regress
from utils import layout, provenance
from utils.io import ArtifactError, save_npy
from utils.prepare import prepare_subject
from utils.regression_data import split_rows
from utils.synthetic import make_demo
from utils.targets import load_targets

N_TRAIN, N_TEST = 40, 12
SHAPES = {"z_zeroscope": (3, 2, 4, 4), "clip": (16,)}
RIDGE = ["--alphas", "10", "100", "1000", "10000", "100000", "--cv", "3"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Demo with 3 prepared subjects; targets = fixed random linear maps of the true stimulus features."""
    from utils import provenance

    data_root = tmp_path_factory.mktemp("regress_demo")
    make_demo(data_root, n_subjects=3, n_train=N_TRAIN, n_test=N_TEST, size=16, n_frames=4, snr=1.0)
    for subject in (1, 2, 3):
        prepare_subject(data_root, "demo", subject)
    truth = np.load(layout.encoding_model_path(data_root, "demo"))
    features = truth["features"]  # (N, F)
    rng = np.random.default_rng(1)
    for target, shape in SHAPES.items():
        weights = rng.standard_normal((features.shape[1], int(np.prod(shape)))) / np.sqrt(features.shape[1])
        for stimulus, row in zip(truth["stimuli"], features @ weights, strict=True):
            save_npy(layout.target_path(data_root, "demo", target, str(stimulus)), row.reshape(shape).astype(np.float32))
        provenance.write_settings(layout.targets_dir(data_root, "demo", target), "test", {"recipe": "default"})
    return data_root


def demo_test_stimuli():
    return [f"{i:04d}" for i in range(N_TRAIN + 1, N_TRAIN + N_TEST + 1)]


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_main_writes_exact_files_decodes_and_resumes(root, capsys):
    argv = ["--data-root", str(root), "--subjects", "1", "--targets", "z_zeroscope", "clip", "--run", "ridge1", *RIDGE]
    assert regress.main(argv) == 0
    out = root / "predictions" / "ridge1"
    expected = ["manifest.json", "metrics.json", "per_sample.csv", "settings.json"]
    expected += [f"{t}/{s}.npy" for t in SHAPES for s in demo_test_stimuli()]
    assert listing(out) == sorted(expected)
    for target, shape in SHAPES.items():
        assert np.load(out / target / f"{demo_test_stimuli()[0]}.npy").shape == shape
    ckpt = root / "checkpoints" / "regress" / "ridge1"
    assert listing(ckpt) == sorted(["config.json"] + [f"{t}/{f}" for t in SHAPES for f in ("config.json", "run_config.json", "weights.safetensors")])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["chance"] == {"2-way": 0.5, "5-way": 0.2, "10-way": 0.1, "50-way": 0.02}
    for target in SHAPES:
        scores = metrics["targets"][target]["subjects"]["demo/sub01"]
        assert scores["n_stimuli"] == N_TEST
        assert scores["identification"]["10-way"] > 0.6  # chance 0.1
        assert scores["identification"]["50-way"] is None  # only 12 test stimuli
        assert scores["pearson_r"] > 0.5 and metrics["targets"][target]["model_info"]["backend"] == "torch"
    with open(out / "per_sample.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * N_TEST and {r["subject"] for r in rows} == {"demo/sub01"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["run"] == "ridge1"

    stamp = (out / "clip" / f"{demo_test_stimuli()[0]}.npy").stat().st_mtime_ns
    capsys.readouterr()
    assert regress.main(argv) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "clip" / f"{demo_test_stimuli()[0]}.npy").stat().st_mtime_ns == stamp

    changed = [a if a != "3" else "4" for a in argv]  # --cv 4
    with pytest.raises(ValueError, match=r"other settings \(cv: 3 -> 4\).*--overwrite"):
        regress.main(changed)
    assert regress.main([*changed, "--targets", "clip", "--overwrite"]) == 0
    assert json.loads((ckpt / "config.json").read_text())["cv"] == 4
    assert json.loads((ckpt / "z_zeroscope" / "run_config.json").read_text())["cv"] == 3  # not redone yet
    capsys.readouterr()
    assert regress.main(changed) == 0  # z_zeroscope's checkpoint is stale (cv 3): refitted, clip reused
    log = capsys.readouterr().out
    assert "[z_zeroscope] fitting ridge" in log and "[clip] loaded the fitted ridge" in log
    assert json.loads((ckpt / "z_zeroscope" / "run_config.json").read_text())["cv"] == 4
    assert sorted(json.loads((out / "metrics.json").read_text())["targets"]) == ["clip", "z_zeroscope"]
    (out / "clip" / f"{demo_test_stimuli()[0]}.npy").unlink()  # incomplete: clip is redone from its checkpoint
    assert regress.main([*changed, "--targets", "clip"]) == 0
    assert (out / "clip" / f"{demo_test_stimuli()[0]}.npy").exists()
    assert sorted(json.loads((out / "metrics.json").read_text())["targets"]) == ["clip", "z_zeroscope"]
    with open(out / "per_sample.csv") as handle:
        assert sorted({r["target"] for r in csv.DictReader(handle)}) == ["clip", "z_zeroscope"]


def test_derived_run_name_has_no_metrics_and_is_stable(root):
    args = regress.parse_args(["--data-root", str(root), "--subjects", "1", *RIDGE])
    train = {"demo": [1]}
    config = regress.run_config(args, train, train)
    name = regress.derive_run_name(args, config)
    assert name.startswith("betas-ridge-demo-") and name == regress.derive_run_name(args, regress.run_config(args, train, train))
    other = regress.parse_args(["--data-root", str(root), "--subjects", "1", *RIDGE, "--cv", "4"])
    assert regress.derive_run_name(other, regress.run_config(other, train, train)) != name


def test_zero_shot_mlp_to_held_out_subject(root):
    argv = ["--data-root", str(root), "--subjects", "1", "2", "--test-subjects", "3", "--targets", "clip",
            "--regressor", "mlp", "--preset", "tiny", "--hidden-dim", "32", "--max-epochs", "60", "--patience", "8",
            "--dropout", "0", "--lr", "3e-3", "--batch-size", "16", "--run", "zeroshot"]
    assert regress.main(argv) == 0
    out = root / "predictions" / "zeroshot"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["zero_shot_subjects"] == ["demo/sub03"]
    scores = metrics["targets"]["clip"]["subjects"]["demo/sub03"]
    assert scores["identification"]["5-way"] > 0.6  # chance 0.2
    assert sorted(p.name for p in (out / "clip").glob("*.npy")) == [f"{s}.npy" for s in demo_test_stimuli()]
    assert not (out / "clip" / "by_subject").exists()


def write_embeddings(root, run, dims, seed=0):
    """Embeddings per trial: a fixed random projection of each subject's prepared betas."""
    for subject, dim in dims.items():
        betas = np.load(layout.prepared_array_path(root, "demo", f"sub{subject:02d}", "Group41"))
        proj = np.random.default_rng(seed).standard_normal((betas.shape[1], dim)).astype(np.float32) / np.sqrt(betas.shape[1])
        save_npy(layout.embeddings_path(root, run, "demo", f"sub{subject:02d}"), betas @ proj)


def test_embeddings_trials_and_several_test_subjects(root):
    write_embeddings(root, "emb", {1: 64, 2: 64})
    argv = ["--data-root", str(root), "--input", "embeddings", "--embeddings-run", "emb", "--subjects", "1", "2",
            "--targets", "clip", "--train-repeats", "separate", "--run", "emb-trials", *RIDGE]
    assert regress.main(argv) == 0
    out = root / "predictions" / "emb-trials"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_average"] == "predictions" and metrics["targets"]["clip"]["n_train_rows"] == 2 * 3 * N_TRAIN
    for label in ("demo/sub01", "demo/sub02"):
        assert metrics["targets"]["clip"]["subjects"][label]["identification"]["5-way"] > 0.6
    stim = demo_test_stimuli()[0]
    per_subject = [np.load(out / "clip" / "by_subject" / "demo" / f"sub0{s}" / f"{stim}.npy") for s in (1, 2)]
    np.testing.assert_allclose(np.load(out / "clip" / f"{stim}.npy"), np.mean(per_subject, axis=0), rtol=1e-5, atol=1e-6)
    assert metrics["targets"]["clip"]["datasets"]["demo"]["subject_averaged_prediction"]["n_stimuli"] == N_TEST


def test_mismatched_feature_counts(root):
    write_embeddings(root, "emb-bad", {1: 64, 2: 32})
    argv = ["--data-root", str(root), "--input", "embeddings", "--embeddings-run", "emb-bad", "--subjects", "1", "2", "--targets", "clip"]
    with pytest.raises(ValueError, match=r"Mismatched feature \(vertex\) counts.*'demo/sub01': 64, 'demo/sub02': 32"):
        regress.main(argv)


def test_missing_inputs_name_their_command(root):
    with pytest.raises(FileNotFoundError, match=r"missing for 52 of 52 demo stimuli.*extract_targets_blip.py --dataset demo"):
        regress.main(["--data-root", str(root), "--subjects", "1", "--targets", "blip"])
    partial = layout.targets_dir(root, "demo", "partial")
    shutil.copytree(layout.targets_dir(root, "demo", "clip"), partial)
    (partial / "0003.npy").unlink()
    (partial / "0007.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing for 2 of 3 demo stimuli .*: 0003, 0007\."):
        load_targets(root, "demo", "partial", ["0003", "0004", "0007"])
    with pytest.raises(FileNotFoundError, match=rf"download_data.py --dataset demo --data-root {root} --subjects 7 --prepare"):
        regress.main(["--data-root", str(root), "--subjects", "7", "--targets", "clip"])
    with pytest.raises(FileNotFoundError, match="finetune_contrastive.py"):
        regress.main(["--data-root", str(root), "--input", "embeddings", "--embeddings-run", "nope", "--subjects", "1"])


def test_overlap_between_train_and_test_is_an_error_unless_dropped(root):
    src, dst = layout.betas_dir(root, "demo", "sub01"), layout.betas_dir(root, "demo", "sub04")
    shutil.copytree(src, dst)
    trials = dst / "Group41_trials.csv"
    trials.write_text(trials.read_text().replace(",test\n", ",train\n"))  # every stimulus a training stimulus
    argv = ["--data-root", str(root), "--subjects", "4", "--test-subjects", "1", "--targets", "clip", "--run", "overlap", *RIDGE]
    with pytest.raises(ValueError, match=r"12 test stimuli are also training stimuli \(demo:0041, .*--drop-overlap"):
        regress.main(argv)
    assert regress.main([*argv, "--drop-overlap"]) == 0
    metrics = json.loads((root / "predictions" / "overlap" / "metrics.json").read_text())
    assert metrics["targets"]["clip"]["n_train_stimuli"] == N_TRAIN


def test_split_rows_average_and_limit(root):
    from utils.prepare import load_prepared

    prepared = load_prepared(root, "demo", 1)
    names, X = split_rows(prepared.betas, prepared.trials, "test", average=True, limit=3)
    assert names == demo_test_stimuli()[:3] and X.shape == (3, prepared.betas.shape[1])
    rows = [i for i, s in enumerate(prepared.trials.stimulus) if s == names[0]]
    np.testing.assert_allclose(X[0], prepared.betas[rows].mean(0), rtol=1e-5, atol=1e-6)
    names, X = split_rows(prepared.betas, prepared.trials, "train", average=False, limit=2)
    assert names == ["0001"] * 3 + ["0002"] * 3 and X.shape[0] == 6


def test_yaml_config_and_command_line_precedence(tmp_path):
    config = tmp_path / "regress.yaml"
    config.write_text("regressor: mlp\ntrain_on: [demo]\nsubjects: [1, 2]\nalphas: [1, 10]\ncv: 3\ndrop-overlap: true\n")
    args = regress.parse_args(["--config", str(config), "--cv", "4"])
    assert (args.regressor, args.cv, args.alphas, args.subjects, args.drop_overlap) == ("mlp", 4, [1.0, 10.0], ["1", "2"], True)
    config.write_text("regresor: mlp\n")
    with pytest.raises(ValueError, match="unknown key 'regresor'"):
        regress.parse_args(["--config", str(config)])
    config.write_text("regressor: forest\n")
    with pytest.raises(SystemExit):
        regress.parse_args(["--config", str(config)])


def test_flag_errors():
    with pytest.raises(SystemExit):
        regress.parse_args(["--input", "embeddings"])
    with pytest.raises(SystemExit):
        regress.parse_args(["--dtype", "float16"])
    with pytest.raises(SystemExit):
        regress.parse_args(["--alphas", "0"])
    with pytest.raises(ValueError, match="names dataset 'bmd'"):
        regress.main(["--subjects", "bmd:1"])


def test_flag_defaults_come_from_the_settings_dataclasses():
    from dataclasses import asdict

    from models import zoo
    from models.regressors import MLPRegressor, NetSettings, RidgeRegressor, RidgeSettings
    from utils.regression_data import RegressionSettings

    args = regress.parse_args([])
    assert (args.input, args.targets, args.regressor, args.train_repeats) == (
        RegressionSettings.input, list(RegressionSettings.targets), RegressionSettings.regressor, RegressionSettings.train_repeats,
    )
    assert args.test_average == "inputs"  # auto with averaged training repeats
    assert (tuple(args.alphas), args.cv, args.ridge_solver, args.ridge_backend) == (
        RidgeSettings.alphas, RidgeSettings.cv, RidgeSettings.solver, RidgeSettings.backend,
    )
    net = {k: getattr(args, k) for k in ("n_layers", "dropout", "lr", "weight_decay", "batch_size", "max_epochs", "patience", "val_fraction", "loss")}
    assert net == {k: v for k, v in asdict(NetSettings()).items() if k in net}
    assert args.hidden_dim == zoo.REGRESSOR_HIDDEN_DIM["default"] == NetSettings.hidden_dim
    assert regress.parse_args(["--preset", "tiny"]).hidden_dim == zoo.REGRESSOR_HIDDEN_DIM["tiny"]
    assert RidgeRegressor.DEFAULTS == asdict(RidgeSettings()) and MLPRegressor.DEFAULTS == asdict(NetSettings())


# ----------------------------------------------------------------------------- issue 12: every bad file named, flags honoured
def test_truncated_embeddings_name_the_file_and_command(root):
    write_embeddings(root, "emb-cut", {1: 64})
    path = layout.embeddings_path(root, "emb-cut", "demo", "sub01")
    path.write_bytes(path.read_bytes()[:200])  # was: "mmap length is greater than file size"
    argv = ["--data-root", str(root), "--input", "embeddings", "--embeddings-run", "emb-cut", "--subjects", "1", "--targets", "clip"]
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(path))} is truncated.*finetune_contrastive\.py --dataset demo --data-root .* --run emb-cut --overwrite"):
        regress.main(argv)


def test_corrupt_metrics_json_is_named(root):
    argv = ["--data-root", str(root), "--subjects", "1", "--targets", "clip", "--run", "ridge-metrics", *RIDGE]
    assert regress.main(argv) == 0
    metrics = layout.regression_metrics_path(root, "ridge-metrics")
    metrics.write_text(metrics.read_text()[:50])
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(metrics))} is truncated.*delete it .*--run ridge-metrics --overwrite"):
        regress.main(argv)
    metrics.unlink()
    assert regress.main([*argv, "--overwrite"]) == 0
    assert json.loads(metrics.read_text())["run"] == "ridge-metrics"
    record = provenance.read_settings(layout.predictions_run_dir(root, "ridge-metrics"))
    assert record["settings"]["config"] == json.loads(layout.manifest_path(layout.predictions_run_dir(root, "ridge-metrics")).read_text())["config"]


def test_rerun_with_other_settings_over_a_finished_run_is_refused(root):
    argv = ["--data-root", str(root), "--subjects", "1", "--targets", "clip", "--run", "ridge-other", *RIDGE]
    assert regress.main(argv) == 0
    manifest = layout.manifest_path(layout.predictions_run_dir(root, "ridge-other"))
    before = manifest.read_text()
    with pytest.raises(ValueError, match=r"other settings .*cv: 3 -> 4.*--overwrite.*--run"):
        regress.main([*argv, "--cv", "4"])
    assert manifest.read_text() == before  # the manifest never claims the refused settings


@pytest.mark.parametrize("flags", [
    ["--train-on", "demo", "--datasets", "bmd"],
    ["--train-on", "demo", "--dataset", "demo"],
    ["--subjects", "1", "--train-subjects", "2"],
    ["--target", "clip", "--targets", "blip"],
    ["--embeddings-run", "emb"],  # ignored with --input betas
])
def test_conflicting_flags_are_refused_before_work(flags, capsys):
    with pytest.raises(SystemExit):
        regress.parse_args(flags)
    err = capsys.readouterr().err
    assert "give only one" in err or "ignored with --input betas" in err


def test_conflicting_flags_messages(capsys):
    with pytest.raises(SystemExit):
        regress.parse_args(["--train-on", "demo", "--datasets", "bmd"])
    assert "--train-on and --datasets set the same thing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        regress.parse_args(["--embeddings-run", "emb"])
    assert "ignored with --input betas" in capsys.readouterr().err


def test_locked_run_and_stale_temps(root):
    import os
    import socket

    from utils.locks import RunLockedError

    out = layout.predictions_run_dir(root, "ridge-lock")
    out.mkdir(parents=True, exist_ok=True)
    layout.lock_path(out).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": "regress"}))
    argv = ["--data-root", str(root), "--subjects", "1", "--targets", "clip", "--run", "ridge-lock", *RIDGE]
    with pytest.raises(RunLockedError, match="in use by regress"):
        regress.main(argv)
    layout.lock_path(out).write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "stage": "regress"}))
    stale = out / ".metrics.json.abc.tmp.json"
    stale.write_text("{")
    assert regress.main(argv) == 0  # a dead holder's lock is taken over; its temp files are removed
    assert not stale.exists() and not layout.lock_path(out).exists()
