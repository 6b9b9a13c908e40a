"""models.training: settings, run status, resume checks, scores and log rows (the loop runs in test_train_mbm / test_contrastive)."""
from __future__ import annotations

import argparse

import pytest
import torch

import finetune_contrastive
import train_mbm
from models import training
from models.contrastive import HeadConfig
from utils import layout


def test_settings_take_flag_values_and_clis_read_their_defaults():
    args = argparse.Namespace(epochs=3, lr=0.5, unrelated=1)
    settings = train_mbm.DEFAULTS.with_args(args)
    assert settings.epochs == 3 and settings.lr == 0.5 and settings.warmup_epochs == train_mbm.DEFAULTS.warmup_epochs
    mbm = train_mbm.build_parser().parse_args([])
    for name in ("epochs", "lr", "min_lr_ratio", "warmup_epochs", "weight_decay", "grad_clip", "batch_size", "val_every", "num_workers"):
        assert getattr(mbm, name) == getattr(train_mbm.DEFAULTS, name), name
    clip = finetune_contrastive.build_parser().parse_args([])
    for name in ("epochs", "lr", "warmup_epochs", "weight_decay", "grad_clip", "batch_size", "num_workers"):
        assert getattr(clip, name) == getattr(finetune_contrastive.DEFAULTS, name), name
    head = HeadConfig(out_dim=4)
    assert (clip.pool, clip.token_dim, clip.hidden_dim, clip.dropout, clip.temperature) == (
        head.pool, head.token_dim, head.hidden_dim, head.dropout, head.temperature
    )


def test_run_status(tmp_path):
    assert training.run_status(tmp_path) == "absent"
    torch.save({"complete": False, "step": 3}, layout.train_state_path(tmp_path))
    assert training.run_status(tmp_path) == "interrupted"
    torch.save({"complete": True, "step": 9}, layout.train_state_path(tmp_path))
    assert training.run_status(tmp_path) == "complete"


def test_check_resume_names_every_difference(tmp_path):
    saved = {"train": {"lr": 0.1, "epochs": 3}, "data": {"norm": "global"}}
    keys = {"train": ("lr", "epochs"), "data": ("norm",)}
    training.check_resume(saved, {"train": {"lr": 0.1, "epochs": 3, "other": 1}, "data": {"norm": "global"}}, keys, tmp_path)
    with pytest.raises(ValueError, match="lr: saved 0.1, given 0.2; norm: saved 'global', given 'none'"):
        training.check_resume(saved, {"train": {"lr": 0.2, "epochs": 3}, "data": {"norm": "none"}}, keys, tmp_path)


def test_epoch_score_and_log_row():
    assert training.epoch_score(2.0, {"val_loss": 1.0}, True) == 1.0
    assert training.epoch_score(2.0, None, False) == 2.0  # nothing validates: the train loss
    assert training.epoch_score(2.0, {"temperature": 0.07}, True) == 2.0  # validated without a val loss
    assert training.epoch_score(2.0, None, True) is None  # validation not due this epoch
    row = training.log_row(training.Progress(step=7, epoch=1), 1.5, {"val_loss": 1.25, "val_top1": 0.5}, 1e-3, 64, 2.0)
    assert row == {"epoch": 2, "step": 7, "train_loss": "1.500000", "lr": "1.000e-03", "samples_per_s": "32.00", "seconds": "2.00",
                   "val_loss": "1.250000", "val_top1": "0.5000"}
