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


def metric(mean: float, sem: float = 0.0, chance: float | None = None, baseline: float | None = None) -> dict:
    entry = {"mean": mean, "sem": sem, "n": 4, "chance": chance, "baseline": baseline}
    return entry | ({"baseline_label": "mismatched"} if baseline is not None else {})


def test_subject_groups_one_group_per_test_subject_headline_and_card_scores():
    regression = {"targets": {
        "blip": {"subjects": {"demo/sub01": {"identification": {"2-way": 0.9, "50-way": None}}, "demo/sub02": {"identification": {"2-way": 0.8}}}},
        "z_zeroscope": {"subjects": {"demo/sub01": {"identification": {"2-way": 0.7}}, "demo/sub02": {"identification": {"2-way": 0.6}}}},
    }}
    result = {"run": "demo_tiny", "subject": "demo_tiny", "metrics": {"ssim": metric(0.5, 0.1, baseline=0.2), "video_2way": metric(0.75, 0.05, 0.5)},
              "regression": regression}
    # One run: its numbers are the metrics table; the figure groups the regression by test subject, a bar per target.
    (panel,) = scoring.subject_groups([result])
    assert (panel.title, panel.axis, panel.chance) == ("regression: 2-way identification", "test subject", 0.5)
    assert panel.groups == {"sub01": {"blip": (0.9, 0.0), "z_zeroscope": (0.7, 0.0)}, "sub02": {"blip": (0.8, 0.0), "z_zeroscope": (0.6, 0.0)}}
    # Several runs of their own subjects: a panel per headline metric, a bar per run labelled by its subject.
    other = {"run": "demo_sub02", "subject": "sub02", "metrics": {"ssim": metric(0.4, 0.1, baseline=0.3)}}
    first = result | {"run": "demo_sub01", "subject": "sub01", "regression": None}
    ssim, video = scoring.subject_groups([first, other])
    assert (ssim.title, ssim.axis, ssim.groups, ssim.baselines) == ("ssim", "subject", {"sub01": {"ssim": (0.5, 0.1)}, "sub02": {"ssim": (0.4, 0.1)}},
                                                                     {"sub01": 0.2, "sub02": 0.3})
    assert (video.groups, video.chance) == ({"sub01": {"video_2way": (0.75, 0.05)}}, 0.5)
    # Random models: the model-based panels are left out; runs without their own subject are labelled by name.
    (ssim,) = scoring.subject_groups([first | {"subject": "demo_sub01"}, other | {"subject": "demo_sub01"}], random_models=True)
    assert (ssim.axis, list(ssim.groups)) == ("run", ["demo_sub01", "demo_sub02"])
    assert scoring.headline(result) == "ssim 0.500; video_2way 0.750 (chance 0.50)"
    assert scoring.headline(result, random_models=True) == "ssim 0.500; video_2way (random model: not a measurement)"
    columns = {"ssim": np.array([0.1, 0.2]), "st_score": np.array([1.0, 1.0]), "clip_similarity": np.array([0.3, 0.4])}
    assert scoring.clip_card_scores(columns, 1) == {"ssim": 0.2, "clip_similarity": 0.4}


def test_per_subject_figure_draws_every_panel(tmp_path):
    from utils.report import plot_group_bars

    panels = [scoring.BarPanel("regression: 2-way identification", "test subject", {"sub01": {"blip": (0.9, 0.0), "z": (0.7, 0.0)}}, 0.5),
              scoring.BarPanel("ssim", "run", {"a": {"ssim": (0.5, 0.1)}, "b": {"ssim": (0.4, 0.1)}}, None, {"a": 0.2})]
    assert plot_group_bars(panels, tmp_path / "bars.png").stat().st_size > 1000
    assert plot_group_bars([], tmp_path / "empty.png").is_file()


def test_model_based_metrics_and_oracle_columns():
    assert not any(scoring.is_model_based(k) for k in ("ssim", "ssim_mindvideo", "psnr", "caption_bleu4"))
    assert all(scoring.is_model_based(k) for k in ("clip_2way_identification", "video_50way", "image_2way", "st_score", "caption_2way_retrieval"))
    names = ["psnr", "image_50way", "image_2way", "video_50way", "video_2way", "caption_2way_retrieval", "clip_2way_identification", "st_score", "ssim"]
    result = {"run": "r", "n_clips": 4, "metrics": {k: metric(0.5, chance=0.5) for k in names}, "protocol": {"ssim_headline": "ssim"}}
    assert scoring.oracle_metric_names(result) == [
        "ssim", "psnr", "clip_2way_identification", "video_2way", "video_50way", "image_2way", "image_50way", "caption_2way_retrieval",
    ]
    summary = scoring.oracle_summary(result)
    assert summary["run"] == "r" and summary["n_clips"] == 4 and "st_score" not in summary["metrics"]
    assert summary["metrics"]["psnr"] == {"mean": 0.5, "sem": 0.0, "n": 4, "chance": 0.5, "baseline": None}


def test_tables_say_not_a_measurement_for_random_models_and_the_demo_preset_prints_its_numbers():
    from utils import report

    result = {"run": "r", "dataset": "demo", "n_clips": 4, "synthetic": True, "preset": "tiny",
              "metrics": {"ssim": metric(0.512, baseline=0.2), "video_2way": metric(0.987, chance=0.75)}}
    text = report.metrics_markdown(result, random_models=True)
    assert "| ssim | 0.512 |" in text and "0.987" not in text
    assert "| video_2way | random model (tiny preset): not a measurement | - | chance 0.750 |" in text
    demo = report.metrics_markdown(result | {"preset": "demo"}, random_models=False)
    assert "| video_2way | 0.987 |" in demo and report.DEMO_NOTE in demo and report.SYNTHETIC_NOTE in demo
    assert report.DEMO_NOTE not in text and "not a measurement" not in demo
    page = report.render_report(result | {"preset": "demo"}, [], {})
    assert 'id="synthetic-note"' in page and "fitted by this project to this simulated world" in page


def test_oracle_rows_and_caption_rows():
    from utils import report

    oracles = {
        "gt_latent_gt_caption": {"label": "ground-truth latent + ground-truth caption", "run": "gt_demo", "n_clips": 4,
                                 "metrics": {"ssim": metric(0.8, 0.01, baseline=0.3), "video_2way": metric(0.9, 0.02, chance=0.75)}},
        "full_prediction": {"label": "full prediction", "run": "r", "n_clips": 4, "metrics": {"ssim": metric(0.4, 0.02, baseline=0.3)}},
    }
    header, rows = report.oracle_rows(oracles)
    assert header == ["variant", "run", "clips", "ssim", "video_2way"]
    assert rows == [["ground-truth latent + ground-truth caption", "gt_demo", "4", "0.800 ± 0.010 (mismatched 0.300)", "0.900 ± 0.020 (chance 0.750)"],
                    ["full prediction", "r", "4", "0.400 ± 0.020 (mismatched 0.300)", "-"]]
    assert report.oracle_rows(oracles, random_models=True)[1][0][4] == "not a measurement"
    rows = report.caption_rows(["a", "b"], ["a red ball", ""], {"a": "a red circle"}, {"a": ["A red circle.", "A red ball."]}, np.array([0.5, np.nan]))
    assert rows == [["a", "a red ball", "a red circle", "A red circle. (+1 more in the gallery)", "0.50"], ["b", "-", "-", "-", "-"]]


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
    with pytest.raises(ValueError, match=r"captions\.json: expected a mapping of stimulus -> caption string, "
                                         r"found the number 4 under key '0003':"):
        evaluation_data.decoded_captions(tmp_path, "demo_sub03")
    write_json(layout.reconstruction_captions_path(run_dir), {"0001": {"caption": "a red ball"}, "0002": "a box"})
    assert evaluation_data.decoded_captions(tmp_path, "demo_sub03") == {"0001": "a red ball", "0002": "a box"}
    inputs = evaluation_data.fingerprint_inputs(tmp_path, "demo_sub03", None, "demo")
    key = evaluation_data.fingerprint(clips, inputs, {"seed": 0})
    assert key == evaluation_data.fingerprint(clips, inputs, {"seed": 0}) != evaluation_data.fingerprint(clips, inputs, {"seed": 1})
    write_json(layout.regression_metrics_path(tmp_path, "demo_sub03"), {"targets": {}})
    assert evaluation_data.fingerprint(clips, inputs, {"seed": 0}) != key  # a new regression metrics.json is an input
    assert evaluation_data.read_regression_metrics(tmp_path, "demo_sub03") == {"targets": {}}
    with_regression = evaluation_data.fingerprint(clips, inputs, {"seed": 0})
    write_json(layout.captions_path(tmp_path, "demo"), {"0001": "a red circle"})
    assert evaluation_data.fingerprint(clips, inputs, {"seed": 0}) != with_regression  # so are the BLIP captions shown beside the decoded ones
    assert evaluation_data.blip_captions(tmp_path, "demo") == {"0001": "a red circle"}


def test_human_captions_must_be_lists_of_strings(tmp_path):
    notes = layout.annotations_path(tmp_path, "demo")
    write_json(notes, {"0001": {"set": "test", "text_descriptions": ["a red ball", "a ball"]}, "0002": {"set": "test", "text_descriptions": []}})
    assert evaluation_data.human_captions(tmp_path, "demo") == {"0001": ["a red ball", "a ball"]}
    write_json(notes, {"0001": {"set": "test", "text_descriptions": "a red ball"}})  # was read as 10 one-letter captions
    with pytest.raises(ValueError, match=r"annotations\.json: expected a list of caption strings as the text_descriptions of '0001', "
                                         r"found the string \"a red ball\""):
        evaluation_data.human_captions(tmp_path, "demo")
    write_json(notes, {"0001": {"set": "test", "text_descriptions": ["a red ball", None]}})
    with pytest.raises(ValueError, match="text_descriptions of '0001', found null in the list"):
        evaluation_data.human_captions(tmp_path, "demo")


def recon_run(root, name: str, z_from: str | None = None, caption_from: str | None = None, **settings) -> None:
    """An empty reconstruction run (one mp4 name) with, given its sources, recorded settings."""
    mp4 = layout.reconstruction_mp4_dir(layout.reconstructions_dir(root, name))
    mp4.mkdir(parents=True)
    (mp4 / "0001.mp4").write_bytes(name.encode())
    if z_from:
        record = {"condition": "caption", "z_from": z_from, "caption_from": caption_from, "steps": 4, "preset": "tiny"} | settings
        write_json(layout.settings_path(layout.reconstructions_dir(root, name)), {"stage": "reconstruct_zeroscope", "settings": record})


def test_oracle_variants_are_found_in_one_place(tmp_path):
    assert evaluation_data.oracle_run_names("demo_tiny", "demo") == {
        "vae_round_trip": ("demo_tiny_z-gt_decode-only",),
        "gt_latent_gt_caption": ("demo_tiny_z-gt_caption-gt", "gt_demo"), "gt_latent_decoded_caption": ("demo_tiny_z-gt_caption-pred",),
        "pred_latent_gt_caption": ("demo_tiny_z-pred_caption-gt",), "pred_latent_decoded": ("demo_tiny_z-pred_decode-only",),
        "full_prediction": ("demo_tiny",),
    }
    assert evaluation_data.oracle_run_names("r_c_zeroscope", "bmd", "c_zeroscope")["gt_latent_decoded_caption"] == ("r_z-gt_c_zeroscope-pred",)
    recon_run(tmp_path, "run", "pred", "pred")
    recon_run(tmp_path, "gt_demo", "gt", "gt")
    recon_run(tmp_path, "run_z-pred_caption-gt", "pred", "gt", steps=20)  # other diffusion settings: not comparable
    recon_run(tmp_path, "named")  # no record: judged by its name
    assert [evaluation_data.is_main_run(tmp_path, r) for r in ("run", "gt_demo", "run_z-pred_caption-gt", "named", "x_z-gt_caption-pred")] == [
        True, False, False, True, False]
    found = evaluation_data.find_oracles(tmp_path, "run", "demo")
    assert found.runs == {"gt_latent_gt_caption": "gt_demo", "full_prediction": "run"}
    assert found.excluded == {"run_z-pred_caption-gt": "steps: 20, the full prediction's 4"}
    assert found.missing == {"vae_round_trip": "run_z-gt_decode-only", "gt_latent_decoded_caption": "run_z-gt_caption-pred", "pred_latent_decoded": "run_z-pred_decode-only"}
    recon_run(tmp_path, "other_z-gt_caption-gt", "gt", "gt", seed=1)
    recon_run(tmp_path, "other", "pred", "pred", seed=1)
    recon_run(tmp_path, "other_z-gt_caption-pred", "gt", "gt", seed=1)  # its record says gt caption: not this variant
    other = evaluation_data.find_oracles(tmp_path, "other", "demo")  # the run's own ground-truth variant before gt_<ds>
    assert other.runs == {"gt_latent_gt_caption": "other_z-gt_caption-gt", "full_prediction": "other"}
    assert other.excluded == {"other_z-gt_caption-pred": "caption_from='gt' where 'pred' was expected"}
    assert other.missing == {"vae_round_trip": "other_z-gt_decode-only", "pred_latent_gt_caption": "other_z-pred_caption-gt",
                             "pred_latent_decoded": "other_z-pred_decode-only"}
    # The decode-only baselines run no diffusion: other steps and seed do not matter, but their strength must be 0.
    recon_run(tmp_path, "other_z-pred_decode-only", "pred", "none", steps=20, strength=0.0)
    recon_run(tmp_path, "other_z-gt_decode-only", "gt", "none", strength=0.5)
    other = evaluation_data.find_oracles(tmp_path, "other", "demo")
    assert other.runs["pred_latent_decoded"] == "other_z-pred_decode-only" and "vae_round_trip" not in other.runs
    assert other.excluded["other_z-gt_decode-only"] == "strength=0.5 where 0.0 was expected"
    # Results: this evaluation's, else a kept evaluation whose fingerprint is the current one.
    main = {"run": "run", "n_clips": 1, "metrics": {"ssim": metric(0.3)}}
    kept = {"run": "gt_demo", "n_clips": 1, "metrics": {"ssim": metric(0.9)}, "inputs_fingerprint": "k1"}
    write_json(layout.metrics_path(layout.evaluation_dir(tmp_path, "gt_demo")), kept)
    layout.report_path(layout.evaluation_dir(tmp_path, "gt_demo")).write_text("<html>")
    results = evaluation_data.oracle_results(tmp_path, found, {"run": main}, lambda run: "k1")
    assert list(results) == ["gt_latent_gt_caption", "full_prediction"] and results["gt_latent_gt_caption"]["metrics"]["ssim"]["mean"] == 0.9
    assert list(evaluation_data.oracle_results(tmp_path, found, {"run": main}, lambda run: "changed")) == ["full_prediction"]
    record = evaluation_data.oracle_record(found, results)
    assert list(record["oracles"]) == ["gt_latent_gt_caption", "full_prediction"]
    assert record["oracles"]["gt_latent_gt_caption"]["label"] == "ground-truth latent + ground-truth caption"
    assert record["oracles_missing"] == found.missing and record["oracles_excluded"] == found.excluded
    assert evaluation_data.caption_label(tmp_path, "run") == "decoded from brain data"
    assert evaluation_data.caption_label(tmp_path, "gt_demo").startswith("ground-truth caption")
    assert evaluation_data.caption_label(tmp_path, "named") == "decoded caption"
