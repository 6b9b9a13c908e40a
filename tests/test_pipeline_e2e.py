"""run_pipeline.py: stage selection and argv (fast), and the whole demo pipeline end to end (slow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import run_pipeline
from tests.conftest import SMALL_RUN
from utils import evaluation_data, layout
from utils.metrics import n_way_identification


def resolved(*argv: str):
    return run_pipeline.resolve(run_pipeline.build_parser().parse_args(list(argv)))


def test_defaults_and_stage_selection():
    args = resolved()
    assert args.preset == "demo" and args.run == "demo_demo" and args.selected == list(run_pipeline.STAGES)
    assert "fit_demo_models" not in resolved("--preset", "tiny").selected  # only the demo preset fits models
    real = resolved("--dataset", "bmd", "--subjects", "1")
    assert real.preset == "default" and real.run == "bmd_default_sub01" and "fit_demo_models" not in real.selected
    assert resolved("--from-stage", "regress").selected == ["regress", "reconstruct_zeroscope", "reconstruct_oracles", "evaluate"]
    assert resolved("--from-stage", "regress", "--no-oracles").selected == ["regress", "reconstruct_zeroscope", "evaluate"]
    assert resolved("--stages", "evaluate", "prepare").selected == ["prepare", "evaluate"]
    assert resolved("--stages", "prepare", "evaluate", "--from-stage", "regress").selected == ["evaluate"]


def test_stage_argv_pass_through_and_overrides(tmp_path: Path):
    args = resolved(
        "--data-root", str(tmp_path), "--preset", "tiny", "--device", "cpu", "--seed", "3", "--stage-args", 'train_mbm=--epochs 7 --lr "1e-4"'
    )
    mbm = run_pipeline.stage_argv("train_mbm", args)
    assert mbm[:6] == ["--data-root", str(tmp_path), "--dataset", "demo", "--preset", "tiny"]
    assert mbm[mbm.index("--device") + 1] == "cpu" and mbm[mbm.index("--seed") + 1] == "3"
    assert "--batch-size" not in mbm and "--limit" not in mbm  # not given: each stage keeps its own default
    assert mbm[-4:] == ["--epochs", "7", "--lr", "1e-4"]  # --stage-args come last and win over DEMO_FAST
    regress = run_pipeline.stage_argv("regress", args)
    assert regress[regress.index("--embeddings-run") + 1] == "demo_tiny_clip"
    oracles = run_pipeline.stage_argvs("reconstruct_oracles", args)
    assert [a[a.index("--output-run") + 1] for a in oracles] == [
        "demo_tiny_z-gt_decode-only", "demo_tiny_z-gt_caption-gt", "demo_tiny_z-gt_caption-pred", "demo_tiny_z-pred_caption-gt",
        "demo_tiny_z-pred_decode-only",
    ]
    decode = [a for a in oracles if a[-1].endswith("decode-only")]  # no diffusion: strength 0, after the demo settings
    assert all(a[a.index("--caption-from") + 1] == "none" and a[len(a) - 1 - a[::-1].index("--strength") + 1] == "0" for a in decode)
    evaluate = run_pipeline.stage_argv("evaluate", args)
    assert evaluate[evaluate.index("--reconstructions") + 1 :] == ["demo_tiny", *(a[a.index("--output-run") + 1] for a in oracles)]
    assert "--embeddings-run" not in run_pipeline.stage_argv("regress", resolved("--regress-input", "betas"))
    assert run_pipeline.stage_argv("prepare", args)[-1] == "--prepare"
    assert "--latent" not in run_pipeline.stage_argv("extract_targets_zeroscope", resolved("--no-demo-fast"))
    with pytest.raises(ValueError, match="STAGE=ARGS"):
        resolved("--stage-args", "nonsense")


def test_failure_stops_and_is_reported(tmp_path: Path, capsys):
    # No demo data: regress fails, the later stages are reported as not run.
    code = run_pipeline.main(["--data-root", str(tmp_path / "empty"), "--stages", "regress", "evaluate"])
    out = capsys.readouterr().out
    assert code == 1
    assert "regress                     failed" in out and "evaluate                    not run" in out


@pytest.mark.slow
def test_demo_pipeline_end_to_end(finished_demo_run, capfd):
    root, run = finished_demo_run
    report = layout.evaluation_dir(root, run) / "report.html"
    assert report.is_file() and (layout.reconstructions_dir(root, run) / "mp4" / "0041.mp4").is_file()

    # Decoding is above chance: 2-way identification of the test predictions against the true targets.
    for target in ("z_zeroscope", "blip"):
        stims = sorted(p.stem for p in layout.predictions_dir(root, run, target).glob("*.npy"))
        assert stims == [f"{n:04d}" for n in range(41, 49)]
        pred = np.stack([np.load(layout.predictions_dir(root, run, target) / f"{s}.npy") for s in stims])
        true = np.stack([np.load(layout.target_path(root, "demo", target, s)) for s in stims])
        assert n_way_identification(pred, true, 2, 100) > 0.6, target

    # The reconstructions themselves carry the stimulus: their caption and classifier scores above chance by a margin.
    metrics = json.loads((layout.evaluation_dir(root, run) / "metrics.json").read_text())
    assert metrics["synthetic"] and metrics["preset"] == "demo" and metrics["n_clips"] == 8
    scores = metrics["metrics"]
    assert scores["caption_2way_retrieval"]["mean"] > scores["caption_2way_retrieval"]["chance"] + 0.1
    assert scores["image_50way"]["mean"] > scores["image_50way"]["chance"] + 0.03
    # Pixel metrics are not asserted on this small world: the UNet of its short fit (10 epochs on 36 clips) does not yet
    # keep its input latent (held-out video-to-video SSIM 0.56 against 0.57 for mismatched pairs, in
    # fit_zeroscope.json), so SSIM is within noise of the mismatched pairs' for every run. The full demo's margins are
    # in bench/results_demo.md. The oracle runs are evaluated beside the full prediction.
    for oracle in run_pipeline.oracle_runs(run_pipeline.resolve(run_pipeline.build_parser().parse_args(["--data-root", str(root), *SMALL_RUN]))):
        assert json.loads((layout.evaluation_dir(root, oracle) / "metrics.json").read_text())["n_clips"] == 8, oracle
    assert "Where information is lost" in report.read_text()
    # Every link is measured, the two baselines without diffusion included.
    assert list(metrics["oracles"]) == list(evaluation_data.ORACLE_VARIANTS) and metrics["oracles_missing"] == {}

    # A rerun (each stage in its own process) finds every output complete and leaves the evaluation as it was.
    before = (layout.evaluation_dir(root, run) / "metrics.json").read_bytes()
    assert run_pipeline.main(["--data-root", str(root), "--isolate", *SMALL_RUN]) == 0
    out = capfd.readouterr().out
    assert "inputs unchanged" in out and "is complete" in out and "fitted before" in out
    peak = float(next(line for line in out.splitlines() if line.startswith("evaluate ")).split()[3])
    assert 50 < peak < 4000  # MiB, the child's own peak
    assert (layout.evaluation_dir(root, run) / "metrics.json").read_bytes() == before
