"""The common command-line layer: value types, --config YAML on every stage, defaults read from the settings dataclasses."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from models import targets
from models.captioning import CaptionSettings
from models.video_diffusion import DiffusionSettings
from utils import cli

STAGE_SCRIPTS = (
    "download_data", "extract_targets_zeroscope", "extract_targets_blip", "train_mbm", "finetune_contrastive",
    "regress", "reconstruct_zeroscope", "evaluate",
)


@pytest.mark.parametrize(
    "kind, good, bad",
    [
        (cli.positive_int, ("1", "7"), ("0", "-1", "x", "1.5")),
        (cli.nonnegative_int, ("0", "3"), ("-1", "x")),
        (cli.positive_float, ("0.5", "2"), ("0", "-1", "nan?")),
        (cli.nonnegative_float, ("0", "1e-3"), ("-0.1", "x")),
        (cli.fraction, ("0", "0.75"), ("1", "-0.1", "x")),
        (cli.unit_float, ("0", "1", "0.3"), ("1.01", "-0.1")),
    ],
)
def test_value_types_accept_and_refuse(kind, good, bad):
    for text in good:
        kind(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            kind(text)


@pytest.mark.parametrize("script", STAGE_SCRIPTS)
def test_every_stage_takes_a_yaml_config_and_the_command_line_wins(script, tmp_path):
    module = importlib.import_module(script)
    config = tmp_path / "stage.yaml"
    config.write_text("seed: 7\nbatch_size: 3\n")
    args = cli.parse_args(module.build_parser(), ["--config", str(config), "--seed", "11"])
    assert (args.seed, args.batch_size) == (11, 3)


def test_config_refuses_unknown_keys_and_bad_booleans(tmp_path):
    parser = importlib.import_module("reconstruct_zeroscope").build_parser()
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="unknown key 'stepz'"):
        cli.parse_args(parser, ["--config", str(unknown)])
    boolean = tmp_path / "boolean.yaml"
    boolean.write_text("forward_chunking: maybe\n")
    with pytest.raises(ValueError, match="true or false"):
        cli.parse_args(parser, ["--config", str(boolean)])
    negated = tmp_path / "negated.yaml"
    negated.write_text("forward_chunking: false\ncaption_sample: true\n")
    args = cli.parse_args(parser, ["--config", str(negated)])
    assert (args.forward_chunking, args.caption_sample) == (False, True)
    with pytest.raises(FileNotFoundError, match="no such file"):
        cli.parse_args(parser, ["--config", str(tmp_path / "absent.yaml")])


def test_cli_defaults_are_the_library_defaults():
    reconstruct = importlib.import_module("reconstruct_zeroscope")
    recon = cli.parse_args(reconstruct.build_parser(), [])
    diffusion, caption = DiffusionSettings(), CaptionSettings()
    assert reconstruct.diffusion_settings(recon) == diffusion  # the caption path's defaults are DiffusionSettings'
    conditioning = reconstruct.diffusion_settings(cli.parse_args(reconstruct.build_parser(), ["--condition", "c_zeroscope"]))
    assert (conditioning.steps, conditioning.strength) == (50, 0.3)  # the original's second path
    assert (recon.caption_beams, recon.caption_max_length, recon.caption_min_length, recon.repetition_penalty) == (
        caption.num_beams, caption.max_length, caption.min_length, caption.repetition_penalty
    )
    zeroscope = cli.parse_args(importlib.import_module("extract_targets_zeroscope").build_parser(), [])
    assert {k: getattr(zeroscope, k) for k in cli.defaults_from(targets.ZeroscopeTargetSettings)} == cli.defaults_from(
        targets.ZeroscopeTargetSettings
    )
    blip = cli.parse_args(importlib.import_module("extract_targets_blip").build_parser(), [])
    assert {k: getattr(blip, k) for k in cli.defaults_from(targets.BlipTargetSettings)} == cli.defaults_from(targets.BlipTargetSettings)
    assert blip.caption_beams == caption.num_beams


def test_runner_makes_the_data_root_absolute_and_passes_only_flags_a_stage_has(tmp_path, monkeypatch):
    import run_pipeline

    monkeypatch.chdir(tmp_path)
    args = run_pipeline.resolve(cli.parse_args(run_pipeline.build_parser(), ["--data-root", "rel", "--seed", "3"]))
    assert Path(args.data_root) == tmp_path / "rel"
    download = run_pipeline.stage_argv("download_data", args)
    assert "--preset" not in download and download[:2] == ["--data-root", str(tmp_path / "rel")]
    recon = run_pipeline.stage_argv("reconstruct_zeroscope", args)
    assert recon[recon.index("--preset") + 1] == args.preset and recon[recon.index("--seed") + 1] == "3"
    assert "--roi-set" not in recon  # not given, and reconstruction reads no betas
