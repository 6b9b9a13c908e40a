"""train_mbm.py end to end on small prepared data: learning, files, exact resume, bad input."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import train_mbm
from models import zoo
from models.mbm import MaskedBrainModel, load_mbm, masked_loss
from utils import layout
from utils.brain_data import build_items, holdout_by_source, load_sources
from utils.datasets import subject_folder
from utils.io import save_npy, write_json, write_text
from utils.prepare import Trials, trials_to_csv

N_VERTICES = 1000  # -> 1024 = 16 patches of the tiny preset (patch 64)



def write_prepared(data_root, dataset: str, subject: int, betas: np.ndarray, stimuli: list[str], repeats: list[int], splits: list[str]) -> None:
    """A subject in the prepared layout of utils.prepare (array, trials table, summary written last)."""
    folder = subject_folder(subject)
    array_path = layout.prepared_array_path(data_root, dataset, folder, "Group41")
    save_npy(array_path, betas.astype(np.float32))
    write_text(layout.prepared_trials_path(data_root, dataset, folder, "Group41"), trials_to_csv(Trials(stimuli, np.asarray(repeats), np.asarray(splits))))
    write_json(array_path.with_name("Group41_prepared.json"), {"shape": list(betas.shape)})


def make_structured(data_root, subjects=(1, 2), n_train: int = 40, n_test: int = 8, seed: int = 0) -> None:
    """Trials with spatial structure a masked autoencoder can learn: offset + amplitude x smooth pattern + noise."""
    rng = np.random.default_rng(seed)
    pattern = np.sin(np.linspace(0, 8 * np.pi, N_VERTICES))
    for subject in subjects:
        stimuli, repeats, splits = [], [], []
        for i in range(n_train + n_test):
            split, reps = ("train", 3) if i < n_train else ("test", 2)
            stimuli += [f"{i + 1:04d}"] * reps
            repeats += list(range(reps))
            splits += [split] * reps
        n = len(stimuli)
        betas = 3.0 + rng.normal(0, 1.5, (n, 1)) + rng.normal(0, 1.0, (n, 1)) * pattern + rng.normal(0, 0.2, (n, N_VERTICES))
        write_prepared(data_root, "demo", subject, betas, stimuli, repeats, splits)


def run(data_root, *extra: str, subjects: tuple[str, ...] = ("1", "2")) -> int:
    base = ["--subjects", *subjects, "--data-root", str(data_root), "--preset", "tiny", "--datasets", "demo", "--batch-size", "32", "--lr", "3e-3", "--warmup-epochs", "0.5"]
    return train_mbm.main(base + list(extra))


def log_rows(run_dir) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_learns_and_writes_every_file(tmp_path, capsys):
    make_structured(tmp_path)
    assert run(tmp_path, "--epochs", "4", "--run", "r1") == 0
    run_dir = layout.checkpoint_dir(tmp_path, "mbm", "r1")
    for name in ("last.safetensors", "best.safetensors", "config.json", "train_state.pt", "log.csv", "manifest.json", "rng_state_0.pt"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["num_voxels"] == 1024 and config["data"]["pad"] == "wrap" and config["data"]["norm"] == "global"
    assert config["data"]["sources"] == ["demo/sub01", "demo/sub02"]
    rows = log_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4] and all(float(r["samples_per_s"]) > 0 for r in rows)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["steps"] == int(rows[-1]["step"]) and manifest["counts"]["train_samples"] == 216

    # Loss of the same untrained model (same seed) on the same validation trials, same masks.
    sources = load_sources(tmp_path, ["demo"], None, 64)
    held = holdout_by_source(sources, 0.1, 0)
    val = build_items(sources, ("train",), "trials", only=held)
    torch.manual_seed(0)
    initial = masked_loss(MaskedBrainModel(zoo.mbm_config("tiny", 1024)), val, 32, "cpu", 0.75, 0)
    trained, _ = load_mbm(run_dir)
    final = masked_loss(trained, val, 32, "cpu", 0.75, 0)
    assert final < 0.5 * initial, (initial, final)
    assert final == pytest.approx(min(float(r["val_loss"]) for r in rows), rel=1e-4)  # best = lowest val loss

    capsys.readouterr()
    assert run(tmp_path, "--epochs", "4", "--run", "r1") == 0  # complete: skipped
    assert "is complete" in capsys.readouterr().out


def test_resume_matches_an_uninterrupted_run(tmp_path):
    make_structured(tmp_path, subjects=(1,))
    one = {"subjects": ("1",)}
    run(tmp_path, "--epochs", "3", "--run", "whole", **one)
    assert run(tmp_path, "--epochs", "3", "--run", "split", "--stop-after-steps", "6", **one) == 0  # stops inside epoch 2
    split_dir = layout.checkpoint_dir(tmp_path, "mbm", "split")
    assert len(log_rows(split_dir)) == 1
    with pytest.raises(FileExistsError, match="--resume"):
        run(tmp_path, "--epochs", "3", "--run", "split", **one)
    with pytest.raises(ValueError, match="lr: saved 0.003, given 0.001"):
        train_mbm.main(["--data-root", str(tmp_path), "--preset", "tiny", "--batch-size", "32", "--lr", "1e-3", "--warmup-epochs", "0.5", "--epochs", "3", "--run", "split", "--resume", "--subjects", "1"])
    with pytest.raises(ValueError, match="norm: saved 'global', given 'vertex'"):  # the samples must not change either
        run(tmp_path, "--epochs", "3", "--run", "split", "--resume", "--norm", "vertex", **one)
    assert run(tmp_path, "--epochs", "3", "--run", "split", "--resume", **one) == 0
    whole = load_file(str(layout.checkpoint_dir(tmp_path, "mbm", "whole") / "last.safetensors"))
    resumed = load_file(str(split_dir / "last.safetensors"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
    a, b = log_rows(layout.checkpoint_dir(tmp_path, "mbm", "whole")), log_rows(split_dir)
    assert [(r["step"], r["train_loss"], r["val_loss"]) for r in a] == [(r["step"], r["train_loss"], r["val_loss"]) for r in b]


def test_resume_after_weights_saved_without_their_optimizer_state(tmp_path):
    """A kill between last.safetensors and train_state.pt: train_state.pt (the commit) holds its own weights, so the
    resume continues from it exactly (an old train_state.pt without weights still refuses: test_training_faults)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    make_structured(tmp_path, subjects=(1,))
    one = {"subjects": ("1",)}
    assert run(tmp_path, "--epochs", "3", "--run", "cut", "--stop-after-steps", "2", **one) == 0
    last = layout.checkpoint_dir(tmp_path, "mbm", "cut") / "last.safetensors"
    with safe_open(str(last), framework="pt") as handle:
        assert handle.metadata()["step"] == "2"
    newer = {k: v + 1.0 for k, v in load_file(str(last)).items()}
    save_file(newer, str(last), metadata={"format": "pt", "step": "3"})  # crash between the two saves
    assert run(tmp_path, "--epochs", "3", "--run", "cut", "--resume", **one) == 0
    assert run(tmp_path, "--epochs", "3", "--run", "whole", **one) == 0
    whole = load_file(str(layout.checkpoint_dir(tmp_path, "mbm", "whole") / "last.safetensors"))
    resumed = load_file(str(last))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_bad_inputs(tmp_path):
    make_structured(tmp_path, subjects=(1,))
    with pytest.raises(FileNotFoundError, match=f"download_data.py --dataset demo --data-root {tmp_path} --subjects 5 --prepare"):
        run(tmp_path, "--epochs", "1", subjects=("5",))
    with pytest.raises(FileNotFoundError, match="no train_state.pt"):
        run(tmp_path, "--epochs", "1", "--run", "new", "--resume", subjects=("1",))
    with pytest.raises(SystemExit):
        run(tmp_path, "--mask-ratio", "1.5")


def test_init_from_published_checks_voxels(tmp_path):
    from test_mbm import small_model, write_published

    make_structured(tmp_path, subjects=(1,))
    wrong = tmp_path / "sub-01.pth"
    write_published(wrong, small_model(num_voxels=256))
    with pytest.raises(ValueError, match="num_voxels=256.*1000 vertices \\(1008 after padding"):
        run(tmp_path, "--epochs", "1", "--run", "ft", "--init-from", str(wrong), subjects=("1",))
    right = tmp_path / "sub-01b.pth"
    write_published(right, small_model(num_voxels=1008))
    assert run(tmp_path, "--epochs", "1", "--run", "ft", "--init-from", str(right), subjects=("1",)) == 0
    config = json.loads((layout.checkpoint_dir(tmp_path, "mbm", "ft") / "config.json").read_text())
    assert config["model"]["embed_dim"] == 32 and config["model"]["patch_size"] == 16
