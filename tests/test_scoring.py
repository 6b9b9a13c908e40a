"""Known-answer tests of utils.scoring (the stages' protocols) and the evaluation inputs."""
from __future__ import annotations

import numpy as np
import pytest

from utils import evaluation_data, layout, scoring
from utils.io import write_json
from utils.report import read_regression_csv, regression_csv
from utils.scoring import EvaluationSettings, RunScores


def test_score_predictions_known_answers():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(6, 20))
    perfect = scoring.score_predictions(true, true)
    assert perfect["n_stimuli"] == 6 and perfect["mse"] == 0.0
    assert perfect["r2"] == pytest.approx(1.0) and perfect["pearson_r"] == pytest.approx(1.0) and perfect["feature_r"] == pytest.approx(1.0)
    assert perfect["identification"] == {"2-way": 1.0, "5-way": 1.0, "10-way": None, "50-way": None}  # None: fewer stimuli than n
    assert scoring.score_predictions(true, true, seed=1) == perfect
    with pytest.raises(ValueError, match="differ in shape"):
        scoring.score_predictions(true, true[:, :3])
    assert scoring.chance_levels() == {"2-way": 0.5, "5-way": 0.2, "10-way": 0.1, "50-way": 0.02}


def test_mean_over_subjects_and_per_sample_rows(tmp_path):
    a = {"mse": 1.0, "r2": 0.0, "pearson_r": 0.5, "feature_r": 0.2, "identification": {}}
    b = {"mse": 3.0, "r2": 1.0, "pearson_r": 0.7, "feature_r": 0.4, "identification": {}}
    assert scoring.mean_over_subjects([a, b]) == pytest.approx({"mse": 2.0, "r2": 0.5, "pearson_r": 0.6, "feature_r": 0.3})
    true = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    rows = scoring.per_sample_rows("blip", "demo/sub01", ["0001", "0002"], true, true)
    assert rows == [["blip", "demo/sub01", "0001", "1.000000", "0"], ["blip", "demo/sub01", "0002", "1.000000", "0"]]
    path = tmp_path / "per_sample.csv"
    path.write_text(regression_csv(rows))
    assert path.read_text().splitlines()[0] == "target,subject,stimulus,pearson_r,mse"
    assert read_regression_csv(path) == rows and read_regression_csv(tmp_path / "absent.csv") == []
    assert scoring.regression_notes(True).endswith("SYNTHETIC") and "SYNTHETIC" not in scoring.regression_notes(False)


def test_pixel_run_summary_and_mismatched_baseline():
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8) for _ in range(3)]
    scores = RunScores()
    for i, clip in enumerate(clips):
        scoring.add_pixel_scores(scores, clip, clip, grayscale=True)
        if i:
            scoring.add_pixel_scores(scores, clip, clips[i - 1], grayscale=True, mismatched=True)
    settings = EvaluationSettings(seed=0, batch_size=8, semantic=False)
    out, skipped = scoring.summarize_run(scores, ["a", "b", "c"], settings, None, {}, {})
    assert set(out) == {"ssim", "ssim_mindvideo", "psnr"} and skipped == {"semantic metrics": "--no-semantic"}
    assert out["ssim"]["mean"] == pytest.approx(1.0) and out["ssim"]["n"] == 3 and out["ssim"]["baseline"] < 0.2
    assert out["psnr"]["mean"] == 100.0 and out["psnr"]["baseline_label"] == "mismatched"
    assert list(scores.full_columns(3)) == ["ssim", "ssim_mindvideo", "psnr"]
    recorded = scoring.recorded_settings(settings, 3, 16)
    assert recorded == {"n_frames": 3, "eval_size": 16, "ssim": "grayscale", "n_trials": 100, "n_ways": [2, 50], "gt_top_k": 3,
                        "seed": 0, "semantic": False}


def test_subject_groups_headline_and_card_scores():
    result = {
        "subject": "sub01",
        "metrics": {"ssim": {"mean": 0.5, "sem": 0.1, "chance": None}, "video_2way": {"mean": 0.75, "sem": 0.05, "chance": 0.5}},
        "regression": {"targets": {"blip": {"subjects": {"demo/sub02": {"identification": {"2-way": 0.9}}}}}},
    }
    groups = scoring.subject_groups([result])
    assert groups == {"sub01": {"ssim": (0.5, 0.1), "video_2way": (0.75, 0.05)}, "sub02": {"regression blip 2-way": (0.9, 0.0)}}
    assert scoring.headline(result) == "ssim 0.500; video_2way 0.750 (chance 0.50)"
    columns = {"ssim": np.array([0.1, 0.2]), "st_score": np.array([1.0, 1.0]), "clip_similarity": np.array([0.3, 0.4])}
    assert scoring.clip_card_scores(columns, 1) == {"ssim": 0.2, "clip_similarity": 0.4}


def test_evaluation_inputs(tmp_path):
    run_dir = layout.reconstructions_dir(tmp_path, "demo_sub03")
    (layout.reconstruction_mp4_dir(run_dir)).mkdir(parents=True)
    (layout.reconstruction_mp4_dir(run_dir) / "0001.mp4").write_bytes(b"x")
    layout.reconstructions_dir(tmp_path, "empty").mkdir()
    assert evaluation_data.find_runs(tmp_path) == ["demo_sub03"] and evaluation_data.find_runs(tmp_path / "none") == []
    clips = evaluation_data.find_clips(tmp_path, "demo_sub03")
    assert [s for s, _ in clips] == ["0001"]
    with pytest.raises(FileNotFoundError, match="runs found: \\['demo_sub03'\\]"):
        evaluation_data.find_clips(tmp_path, "empty")
    assert evaluation_data.run_subject(tmp_path, "demo_sub03") == "sub03"
    write_json(layout.manifest_path(run_dir), {"flags": {"subjects": ["1", "sub-02"]}})
    assert evaluation_data.run_subject(tmp_path, "demo_sub03") == "sub01+sub02"
    write_json(layout.reconstruction_captions_path(run_dir), {"0001": {"caption": "a red ball"}, "0002": "a box", "0003": 4})
    assert evaluation_data.decoded_captions(tmp_path, "demo_sub03") == {"0001": "a red ball", "0002": "a box"}
    inputs = evaluation_data.fingerprint_inputs(tmp_path, "demo_sub03", None)
    key = evaluation_data.fingerprint(clips, inputs, {"seed": 0})
    assert key == evaluation_data.fingerprint(clips, inputs, {"seed": 0}) != evaluation_data.fingerprint(clips, inputs, {"seed": 1})
    write_json(layout.regression_metrics_path(tmp_path, "demo_sub03"), {"targets": {}})
    assert evaluation_data.fingerprint(clips, inputs, {"seed": 0}) != key  # a new regression metrics.json is an input
    assert evaluation_data.read_regression_metrics(tmp_path, "demo_sub03") == {"targets": {}}
