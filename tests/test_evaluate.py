"""evaluate.py on a tiny synthetic demo with fake reconstructions (tiny models, CPU, offline)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

import evaluate
from utils import cli, layout
from utils.datasets import DEMO, load_annotations, stimulus_path
from utils.io import write_json
from utils.synthetic import make_demo
from utils.video import sample_frames, write_mp4

RUN = "demo_sub01"


def make_reconstructions(root: Path, run: str = RUN, noise: int = 25, n_frames: int = 6, size: int = 24) -> list[str]:
    """Noisy, smaller, shorter copies of the demo's test videos as a reconstruction run, with captions."""
    notes = load_annotations(root, "demo")
    test = sorted(k for k, v in notes.items() if v["set"] == "test")
    rng = np.random.default_rng(0)
    captions = {}
    for i, stim in enumerate(test):
        frames = sample_frames(stimulus_path(root, DEMO, stim), n_frames, size).astype(int)
        frames = np.clip(frames + rng.integers(-noise, noise + 1, frames.shape), 0, 255).astype(np.uint8)
        write_mp4(layout.reconstructions_dir(root, run) / "mp4" / f"{stim}.mp4", frames, 5)
        captions[stim] = notes[stim]["text_descriptions"][0] if i % 2 == 0 else "a dark room"
    write_json(layout.reconstructions_dir(root, run) / "captions.json", captions)
    return test


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval") / "data"
    make_demo(root, n_subjects=1, n_train=2, n_test=5, size=32, n_frames=8)
    make_reconstructions(root)
    write_json(layout.regression_metrics_path(root, RUN), {"targets": {"z": {"subjects": {"demo/sub01": {"pearson_r": 0.5}}}}})
    return root


FAST = ["--preset", "tiny", "--n-ways", "2", "5", "--n-trials", "20", "--report-size", "32"]


@pytest.fixture(scope="module")
def evaluated(demo_root: Path) -> Path:
    assert evaluate.main(["--data-root", str(demo_root), "--reconstructions", RUN, *FAST]) == 0
    return layout.evaluation_dir(demo_root, RUN)


def test_outputs_and_metrics(evaluated: Path):
    for name in ("metrics.json", "metrics.md", "per_sample.csv", "report.html", "manifest.json", "figures/distributions.png", "figures/per_subject.png", "figures/examples.png"):
        assert (evaluated / name).is_file(), name
    result = json.loads((evaluated / "metrics.json").read_text())
    assert result["n_clips"] == 5 and result["synthetic"] is True and result["subject"] == "sub01"
    m = result["metrics"]
    expected = {"ssim", "psnr", "image_2way", "image_5way", "video_2way", "video_5way", "clip_similarity", "clip_2way_identification", "st_score",
                "caption_bleu4", "caption_clip_similarity", "caption_2way_retrieval"}
    assert expected <= set(m)
    assert m["ssim"]["mean"] > m["ssim"]["baseline"] + 0.2  # noisy copy vs another clip's truth
    assert m["psnr"]["mean"] > m["psnr"]["baseline"]
    assert m["image_5way"]["chance"] == pytest.approx(3 / 7)  # default --gt-top-k 3: k / (k + n - 1)
    assert 0 <= m["video_2way"]["mean"] <= 1 and m["video_2way"]["n"] == 5
    # Captions: clips 0, 2, 4 decode their own first human caption exactly.
    assert m["caption_bleu4"]["n"] == 5
    assert result["settings"]["n_frames"] == 6 and result["settings"]["eval_size"] == 24
    assert result["regression"]["targets"]["z"]["subjects"]["demo/sub01"]["pearson_r"] == 0.5

    with open(evaluated / "per_sample.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["stimulus"] for r in rows] == ["0003", "0004", "0005", "0006", "0007"]
    assert float(rows[0]["caption_bleu4"]) == pytest.approx(1.0)
    assert rows[1]["decoded_caption"] == "a dark room"
    markdown = (evaluated / "metrics.md").read_text()
    assert "SYNTHETIC" in markdown
    html = (evaluated / "report.html").read_text()
    assert "synthetic-note" in html and html.count("<video") == 10 and 'id="metrics-table"' in html
    # Tiny models are random: their metrics say so instead of a score; pixel metrics keep their numbers.
    assert f"| video_2way | random model (tiny preset): not a measurement | - | chance {m['video_2way']['chance']:.3f} |" in markdown
    assert f"| ssim | {m['ssim']['mean']:.3f} |" in markdown and f"{m['video_2way']['mean']:.3f}" not in markdown.split("## Protocol")[0]
    assert html.count("random model (tiny preset): not a measurement") == 9  # the 9 model-based rows of the metrics table
    # Captions: a table of decoded vs true captions, and labelled captions on every card.
    assert "## Decoded and true captions of the test clips" in markdown and "| 0004 | a dark room |" in markdown
    assert 'id="caption-table"' in html and html.count("caption (decoded caption)") == 6  # 5 cards + the table header
    assert html.count("human captions of the watched clip") == 5
    # No oracle variant was made: the report says which are missing.
    assert list(result["oracles"]) == ["full_prediction"] and len(result["oracles_missing"]) == 5 and "gt_demo" in markdown


def test_rerun_skips_and_overwrite_reproduces(demo_root: Path, evaluated: Path, capsys):
    before = (evaluated / "metrics.json").read_bytes()
    assert evaluate.main(["--data-root", str(demo_root), "--reconstructions", RUN, *FAST]) == 0
    assert "inputs unchanged" in capsys.readouterr().out
    assert evaluate.main(["--data-root", str(demo_root), "--reconstructions", RUN, *FAST, "--overwrite"]) == 0
    assert (evaluated / "metrics.json").read_bytes() == before  # same inputs -> identical numbers


def test_pixel_only_and_changed_inputs(demo_root: Path, tmp_path: Path):
    run = "pixels"
    make_reconstructions(demo_root, run, noise=0, n_frames=8, size=32)
    argv = ["--data-root", str(demo_root), "--reconstructions", run, "--no-semantic", "--limit", "3", "--report-size", "32"]
    assert evaluate.main(argv) == 0
    result = json.loads((layout.evaluation_dir(demo_root, run) / "metrics.json").read_text())
    assert set(result["metrics"]) == {"ssim", "ssim_mindvideo", "psnr"} and result["n_clips"] == 3
    assert result["metrics"]["ssim"]["mean"] > 0.9  # same frames, re-encoded
    # A changed reconstruction changes the fingerprint, so the run is evaluated again.
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    write_mp4(layout.reconstructions_dir(demo_root, run) / "mp4" / "0003.mp4", frames, 5)
    assert evaluate.main(argv) == 0
    again = json.loads((layout.evaluation_dir(demo_root, run) / "metrics.json").read_text())
    assert again["metrics"]["ssim"]["mean"] < result["metrics"]["ssim"]["mean"]


def test_bad_inputs(demo_root: Path, tmp_path: Path, capsys):
    with pytest.raises(FileNotFoundError, match="reconstruct_zeroscope.py"):
        evaluate.main(["--data-root", str(demo_root), "--reconstructions", "nope", "--no-semantic"])
    with pytest.raises(FileNotFoundError, match="No reconstruction runs"):
        evaluate.main(["--data-root", str(tmp_path), "--no-semantic"])
    with pytest.raises(SystemExit):
        evaluate.main(["--data-root", str(demo_root), "--reconstructions", RUN, "--eval-size", "8"])
    assert "smaller than the 11 px SSIM window" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--data-root", str(demo_root), "--n-ways", "1"])
    assert "--n-ways must all be >= 2" in capsys.readouterr().err
    # A reconstruction whose ground truth is missing names the file and the command.
    orphan = layout.reconstructions_dir(demo_root, "orphan") / "mp4" / "9999.mp4"
    write_mp4(orphan, np.zeros((4, 16, 16, 3), np.uint8), 5)
    with pytest.raises(FileNotFoundError, match=r"9999\.mp4 is missing: run `python download_data.py"):
        evaluate.main(["--data-root", str(demo_root), "--reconstructions", "orphan", "--no-semantic", "--eval-size", "16"])


def test_yaml_config_sets_flags_and_command_line_wins(demo_root: Path, tmp_path: Path):
    config = tmp_path / "evaluate.yaml"
    config.write_text("semantic: false\nlimit: 2\nreport_size: 32\nn-ways: [2, 5]\nembed_media: false\n")
    args = cli.parse_args(evaluate.build_parser(), ["--config", str(config), "--limit", "3"])
    assert (args.semantic, args.limit, args.report_size, args.n_ways, args.embed_media) == (False, 3, 32, [2, 5], False)
    run = "from_config"
    make_reconstructions(demo_root, run, noise=0, n_frames=8, size=32)
    assert evaluate.main(["--data-root", str(demo_root), "--reconstructions", run, "--config", str(config)]) == 0
    result = json.loads((layout.evaluation_dir(demo_root, run) / "metrics.json").read_text())
    assert result["n_clips"] == 2 and set(result["metrics"]) == {"ssim", "ssim_mindvideo", "psnr"} and result["settings"]["n_ways"] == [2, 5]
    config.write_text("n_way: [2]\n")
    with pytest.raises(ValueError, match="unknown key 'n_way'"):
        evaluate.main(["--data-root", str(demo_root), "--config", str(config)])


def test_flag_defaults_come_from_the_settings_dataclasses():
    from utils.report import ReportSettings
    from utils.scoring import EvaluationSettings

    args = evaluate.build_parser().parse_args([])
    settings = evaluate.evaluation_settings(args)
    assert settings == EvaluationSettings(seed=args.seed, batch_size=args.batch_size)
    assert (args.report_size, args.embed_media) == (ReportSettings.report_size, ReportSettings.embed_media)


def test_example_config_holds_the_defaults():
    args = cli.parse_args(evaluate.build_parser(), ["--config", str(Path(__file__).parents[1] / "configs" / "evaluate.yaml")])
    defaults = evaluate.build_parser().parse_args(["--dataset", "bmd"])
    assert vars(args) | {"config": None} == vars(defaults)


def test_a_named_predictions_run_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--predictions-run nonexistent: there is no .*predictions/nonexistent/metrics\.json"):
        evaluate.main(["--data-root", str(tmp_path), "--preset", "tiny", "--reconstructions", "r", "--predictions-run", "nonexistent"])


def test_a_live_evaluation_locks_its_folder_and_a_killed_ones_temp_files_go(tmp_path):
    from utils import locks

    root = tmp_path / "data"
    make_demo(root, n_subjects=1, n_train=2, n_test=2, size=32, n_frames=8)
    make_reconstructions(root, "locked")
    out_dir = layout.evaluation_dir(root, "locked")
    argv = ["--data-root", str(root), "--reconstructions", "locked", "--no-semantic", *FAST]
    with locks.run_lock(out_dir, "evaluate"):
        with pytest.raises(locks.RunLockedError, match="in use by evaluate"):
            evaluate.main(argv)
    (out_dir / ".report.html.abc.tmp.html").write_text("half")
    assert evaluate.main(argv) == 0
    assert not list(out_dir.glob(".*.tmp*")) and not layout.lock_path(out_dir).exists()


def test_other_settings_over_a_finished_evaluation_are_refused(tmp_path):
    from utils.provenance import SettingsMismatchError

    root = tmp_path / "data"
    make_demo(root, n_subjects=1, n_train=2, n_test=2, size=32, n_frames=8)
    make_reconstructions(root, "twice")
    argv = ["--data-root", str(root), "--reconstructions", "twice", "--no-semantic", *FAST]
    assert evaluate.main(argv) == 0
    before = (layout.evaluation_dir(root, "twice") / "metrics.json").read_text()
    with pytest.raises(SettingsMismatchError, match=r"n_trials: recorded 20, asked 30.*--overwrite"):
        evaluate.main([*argv, "--n-trials", "30"])
    assert (layout.evaluation_dir(root, "twice") / "metrics.json").read_text() == before
    assert evaluate.main([*argv, "--n-trials", "30", "--overwrite"]) == 0
    with pytest.raises(ValueError, match="--preset tiny builds its models in code and would ignore --clip-path"):
        evaluate.main([*argv, "--clip-path", str(tmp_path)])


ORACLE_RUNS = {  # variant -> (run, noise of its fake reconstruction)
    "vae_round_trip": ("r_z-gt_decode-only", 0),
    "gt_latent_gt_caption": ("gt_demo", 3), "gt_latent_decoded_caption": ("r_z-gt_caption-pred", 20),
    "pred_latent_gt_caption": ("r_z-pred_caption-gt", 40), "pred_latent_decoded": ("r_z-pred_decode-only", 55),
    "full_prediction": ("r", 70),
}


def test_the_main_report_tables_its_oracle_variants(tmp_path: Path, capsys):
    root = tmp_path / "data"
    make_demo(root, n_subjects=1, n_train=2, n_test=3, size=32, n_frames=8)
    for run, noise in ORACLE_RUNS.values():
        make_reconstructions(root, run, noise=noise, n_frames=8, size=32)
    argv = ["--data-root", str(root), "--no-semantic", "--report-size", "32", "--reconstructions"]

    def metrics_of(run: str) -> dict:
        return json.loads(layout.metrics_path(layout.evaluation_dir(root, run)).read_text())

    # Two variants evaluated first; then the main run with the third: the kept results fill its table too.
    assert evaluate.main([*argv, "gt_demo", "r_z-gt_caption-pred"]) == 0
    assert evaluate.main([*argv, "r", "r_z-pred_caption-gt", "r_z-gt_decode-only", "r_z-pred_decode-only"]) == 0
    result = metrics_of("r")
    assert list(result["oracles"]) == list(ORACLE_RUNS) and result["oracles_missing"] == {} and result["oracles_excluded"] == {}
    ssim = [result["oracles"][v]["metrics"]["ssim"]["mean"] for v in ORACLE_RUNS]
    assert ssim == [metrics_of(run)["metrics"]["ssim"]["mean"] for run, _ in ORACLE_RUNS.values()]
    assert ssim == sorted(ssim, reverse=True)  # less noise, closer to the truth
    markdown = (layout.evaluation_dir(root, "r") / "metrics.md").read_text()
    table = markdown.split("## Where information is lost")[1].split("##")[0]
    labels = ["VAE round trip of the true clip", "ground-truth latent + ground-truth caption", "ground-truth latent + decoded caption",
              "predicted latent + ground-truth caption", "predicted latent, decoded without diffusion", "full prediction"]
    # The decoded latent (less noise than the full prediction here) beats it: the report says so plainly.
    assert "The generator adds nothing at these settings on ssim, psnr" in markdown
    assert [table.index(label) for label in labels] == sorted(table.index(label) for label in labels)
    assert f"{ssim[0]:.3f} ± " in table and "(mismatched " in table
    html = (layout.evaluation_dir(root, "r") / "report.html").read_text()
    assert html.count('id="oracle-table"') == 1 and "oracles" not in metrics_of("gt_demo")

    # Nothing changed: all four kept.
    capsys.readouterr()
    assert evaluate.main([*argv, *(run for run, _ in ORACLE_RUNS.values())]) == 0
    out = capsys.readouterr().out
    assert out.count("inputs unchanged") == len(ORACLE_RUNS) and "evaluating it again" not in out
    # Two variants reconstructed again, one of them evaluated: the main run is evaluated again with its new numbers,
    # and the other is not used until it is evaluated again.
    make_reconstructions(root, "gt_demo", noise=30, n_frames=8, size=32)
    make_reconstructions(root, "r_z-gt_caption-pred", noise=5, n_frames=8, size=32)
    assert evaluate.main([*argv, "gt_demo", "r"]) == 0
    assert "r: its oracle variants changed, evaluating it again" in capsys.readouterr().out
    result = metrics_of("r")
    assert result["oracles"]["gt_latent_gt_caption"]["metrics"]["ssim"]["mean"] == metrics_of("gt_demo")["metrics"]["ssim"]["mean"] < ssim[0]
    assert "gt_latent_decoded_caption" not in result["oracles"] and result["oracles_missing"] == {"gt_latent_decoded_caption": "r_z-gt_caption-pred"}


def copies_folder(root: Path, folder: Path, shapes: dict[str, tuple[int, int]]) -> Path:
    """``folder`` of mp4 copies of the demo's stimuli, ``{stim: (n_frames, size)}`` each (a 1-frame clip as a gif)."""
    from utils.video import write_gif

    for stim, (n_frames, size) in shapes.items():
        frames = sample_frames(stimulus_path(root, DEMO, stim), n_frames, size)
        if n_frames == 1:
            write_gif(folder / f"{stim}.gif", frames, 5)
        else:
            write_mp4(folder / f"{stim}.mp4", frames, 5)
    return folder


def test_videos_of_other_sizes_and_lengths_are_each_scored_against_their_own_truth(demo_root: Path, tmp_path: Path):
    from utils import evaluation_data, metrics

    shapes = {"0003": (6, 24), "0004": (4, 16), "0005": (8, 32)}
    folder = copies_folder(demo_root, tmp_path / "mixed", shapes)
    assert evaluate.main(["--data-root", str(demo_root), "--videos", str(folder), *FAST]) == 0
    out_dir = layout.evaluation_dir(demo_root, "mixed")
    with open(out_dir / "per_sample.csv") as handle:
        rows = {r["stimulus"]: r for r in csv.DictReader(handle)}
    for stim, (n_frames, size) in shapes.items():  # each clip scores as it does alone: at its own frames and size
        pred, true = evaluation_data.load_pair(folder / f"{stim}.mp4", stimulus_path(demo_root, DEMO, stim), 0, 0)
        assert pred.shape == true.shape == (n_frames, size, size, 3)
        assert float(rows[stim]["ssim"]) == pytest.approx(metrics.ssim_frames(pred, true).mean(), abs=1e-6)
    m = json.loads((out_dir / "metrics.json").read_text())["metrics"]
    assert m["ssim"]["mean"] > 0.9 and m["ssim"]["baseline"] < m["ssim"]["mean"] - 0.2  # against another clip's truth, resized
    assert m["clip_similarity"]["baseline"] is not None and m["clip_similarity"]["n"] == 3


def test_a_one_frame_clip_is_refused_before_any_scoring(demo_root: Path, tmp_path: Path):
    folder = copies_folder(demo_root, tmp_path / "short", {"0003": (6, 24), "0004": (1, 24)})
    for flags in (FAST, ["--no-semantic"]):
        with pytest.raises(ValueError, match=r"Clip .*short/0004\.gif has 1 frame\(s\); scoring needs at least 2 per clip"):
            evaluate.main(["--data-root", str(demo_root), "--videos", str(folder), *flags])
        assert not layout.evaluation_dir(demo_root, "short").exists()


@pytest.mark.parametrize("content, decoded_found, blip_found", [
    (["a red ball", "a box"], "found a list of 2 items", "found a list of 2 items"),
    ({"0003": "a red ball", "0004": 4}, "found the number 4 under key '0004'", "found the number 4 under key '0004'"),
    ({"0003": {"caption": None}}, "found null under key '0003'", "found an object of 1 key under key '0003'"),
])
def test_caption_files_that_are_not_a_mapping_of_captions_are_refused(demo_root: Path, content, decoded_found, blip_found):
    from utils import evaluation_data

    run = "bad_captions"
    make_reconstructions(demo_root, run)
    decoded = layout.reconstructions_dir(demo_root, run) / "captions.json"
    write_json(decoded, content)
    argv = ["--data-root", str(demo_root), "--reconstructions", run, "--no-semantic", "--report-size", "32"]
    expected = re.escape(f"{decoded}: expected a mapping of stimulus -> caption string, {decoded_found}: delete it and rerun")
    with pytest.raises(ValueError, match=expected):
        evaluate.main(argv)
    with pytest.raises(ValueError, match=expected):
        evaluation_data.decoded_captions(demo_root, run)
    make_reconstructions(demo_root, run)  # good decoded captions; BLIP's captions of the watched clips broken instead
    blip = layout.captions_path(demo_root, "demo")
    write_json(blip, content)
    try:
        expected = re.escape(f"{blip}: expected a mapping of stimulus -> caption string, {blip_found}: "
                             "delete it and rerun `python extract_targets_blip.py")
        with pytest.raises(ValueError, match=expected):
            evaluate.main(argv)
        with pytest.raises(ValueError, match=expected):
            evaluation_data.blip_captions(demo_root, "demo")
    finally:
        blip.unlink()
