r"""Stage 5: evaluate reconstructed videos against the watched ones; tables, figures, HTML report.

Reads, under --data-root:
    reconstructions/<run>/frames/<stim>.npy   lossless reconstructed frames, when present (reconstruct_zeroscope.py)
    reconstructions/<run>/mp4/<stim>.mp4      reconstructed clips, read where the lossless frames are absent
    reconstructions/<run>/captions.json       decoded captions, if any
    stimuli_<ds>/...                          ground-truth videos (utils.datasets.stimulus_path)
    metadata_<ds>/annotations.json            human captions (BMD and demo)
    predictions/<run>/metrics.json            regression metrics (regress.py), if present
or, with --videos DIR, any folder of videos: .mp4/.gif files or folders of PNG/JPG frames, one per
clip, names mapped to stimuli by --name-pattern (and --name-format); MinD-Video's side-by-side
gifs (ground truth left, reconstruction right) are split automatically.
Writes evaluation/<run>/ (with --videos: evaluation/<method>/):
    metrics.json      per-metric mean, SEM, n, chance or mismatched baseline; regression numbers
    metrics.md        the same as a markdown table
    per_sample.csv    one row per clip
    report.html       self-contained gallery: ground truth beside reconstruction, labelled captions, tables
    figures/          distributions.png, per_subject.png, examples.png
    media/            the clips of the gallery (mp4 at --report-size)
    manifest.json

Metrics (utils.metrics): per-frame SSIM under two conventions (``ssim``: MindEye's, grayscale
Gaussian window; ``ssim_mindvideo``: MinD-Video's, RGB 7x7 uniform window) and PSNR at a
common size; n-way top-1 semantic classification (2-way and 50-way, 100 seeded trials; the
ground truth's top-3 classes as in MinD-Video, --gt-top-k 1 for MinD-Vis's top-1) with an
image classifier (ViT) on frames and a video classifier (VideoMAE) on clips;
CLIP similarity of matching frames and 2-way identification among clips; the spatiotemporal
(ST) score; caption BLEU-4, CLIP text similarity and 2-way retrieval of the human captions.
Pixel and CLIP similarities also get a mismatched baseline (each reconstruction against the
ground truth of another clip). A rerun on the same inputs reproduces every number and skips
the work unless --overwrite. A YAML ``--config`` sets any flag by its name (``n_ways: [2, 50]``);
flags given on the command line win.

Oracle variants (utils.evaluation_data.find_oracles): the report and metrics.json ("oracles") of a
full prediction <run> table, in this order, gt_<ds> (ground-truth latent + ground-truth caption),
<run>_z-gt_caption-pred, <run>_z-pred_caption-gt and <run> itself: "where information is lost".
Variants evaluated in the same call or kept from an earlier one (same clips and settings) are
used; the full prediction is evaluated again when its variants' results change. With the tiny
preset's random models, the metrics computed with a model print "not a measurement".

Protocols (--protocol, utils.scoring.PROTOCOLS) switch the defaults of --n-frames, --eval-size,
--ssim, --n-trials, --n-ways, --gt-top-k, --video-frames and --clip-model at once; a flag given
explicitly wins. ``brainnetflix`` (default): today's settings; ``mindvideo``: MinD-Video's code
(6 frames at 256 px, its SSIM first, top-3, VideoMAE fed 6 frames, CLIP ViT-B/32 named);
``mindeye``: MindEye's SSIM only. metrics.json and report.html carry the protocol card.

Examples:
    python evaluate.py --dataset demo --preset tiny --reconstructions demo_sub01
    python evaluate.py --dataset bmd --reconstructions bmd_sub01 --device cuda
    python evaluate.py --dataset demo --reconstructions demo_demo demo_demo_z-pred_caption-gt demo_demo_z-gt_caption-pred gt_demo
    python evaluate.py --dataset bmd --reconstructions bmd_sub01 bmd_sub02 --no-embed-media
    python evaluate.py --config configs/evaluate.yaml --reconstructions bmd_sub01
    python evaluate.py --dataset bmd --reconstructions bmd_sub01 --protocol mindvideo
    python evaluate.py --dataset bmd --videos released/mindvideo_gifs --name-pattern 'test(?P<stim>\d+)\.gif' \
        --name-format '{:04d}' --method MinD-Video --protocol mindvideo
"""
from __future__ import annotations

import argparse
import contextlib
import time
from functools import partial
from pathlib import Path
from typing import Any

from models import zoo
from utils import evaluation_data, layout, provenance, report, scoring
from utils.cli import common_parser, parse_args, positive_int, resolve_device, resolve_dtype, run_main, run_name
from utils.datasets import check_stimuli, check_subjects, get_spec, stimulus_path
from utils.io import jsonable, remove_stale_temps, write_manifest
from utils.locks import run_lock
from utils.report import ClipMedia, ReportSettings, RunEvaluation
from utils.scoring import DEFAULT_PROTOCOL, PROTOCOLS, SSIM_KEYS, EvaluationSettings, RunScores, get_protocol
from utils.seeds import seed_everything
from utils.video import resize_frames

STAGE = "evaluate"


def build_parser() -> argparse.ArgumentParser:
    """Common flags plus the evaluation settings (defaults from EvaluationSettings and ReportSettings)."""
    parser = common_parser(__doc__, presets=zoo.PRESETS)
    parser.add_argument(
        "--reconstructions", nargs="+", type=run_name, default=None, metavar="RUN",
        help="reconstruction runs to evaluate (folders under reconstructions/); default: every run found",
    )
    parser.add_argument(
        "--protocol", default=DEFAULT_PROTOCOL, choices=sorted(PROTOCOLS),
        help="published evaluation protocol whose settings become the defaults of the flags below; flags given explicitly win "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--videos", default=None, metavar="DIR",
        help="score this folder of videos (.mp4/.gif files or PNG/JPG frame folders, one per clip) instead of reconstruction runs",
    )
    parser.add_argument(
        "--name-pattern", default=evaluation_data.DEFAULT_NAME_PATTERN, metavar="REGEX",
        help="with --videos: regex (full match) with a named group 'stim' mapping an entry name to its stimulus, e.g. "
        "'test(?P<stim>\\d+)\\.gif' (default: the name without .mp4/.gif)",
    )
    parser.add_argument(
        "--name-format", default=None, metavar="FORMAT",
        help="with --videos: format applied to the 'stim' group before the dataset's name check, digits as an integer, "
        "e.g. '{:04d}' for BMD's 4-digit names (default: none)",
    )
    parser.add_argument(
        "--method", type=run_name, default=None,
        help="with --videos: name of the method whose videos these are (metrics.json, the report, evaluation/<method>/; "
        "default: the folder's name)",
    )
    parser.add_argument(
        "--output-root", default=None, metavar="DIR",
        help="write evaluation/<run>/ under this folder instead of --data-root, e.g. when the data root is read-only; the "
        "inputs are still read from --data-root (default: --data-root)",
    )
    parser.add_argument(
        "--predictions-run", type=run_name, default=None,
        help="run under predictions/ whose metrics.json to include (default: the same name as each reconstruction run)",
    )
    parser.add_argument(
        "--n-frames", type=int, default=EvaluationSettings.n_frames,
        help="frames compared per clip; 0 = the reconstruction's frame count (default: %(default)s)",
    )
    parser.add_argument(
        "--eval-size", type=int, default=EvaluationSettings.eval_size,
        help="common square size in px for pixel metrics; 0 = the reconstruction's height (default: %(default)s)",
    )
    parser.add_argument(
        "--color-ssim", action="store_true", default=EvaluationSettings.color_ssim,
        help="MindEye's SSIM per RGB channel (averaged) instead of on grayscale",
    )
    parser.add_argument(
        "--ssim", nargs="+", default=list(EvaluationSettings.ssim), choices=sorted(SSIM_KEYS),
        help="SSIM conventions to report, the first is the headline: mindeye (key ssim: grayscale, Gaussian window) and "
        "mindvideo (key ssim_mindvideo: RGB, 7x7 uniform window, sample covariance) (default: %(default)s)",
    )
    parser.add_argument(
        "--video-frames", type=int, default=EvaluationSettings.video_frames,
        help="frames fed to the video classifier; 0 = its own config.num_frames (MinD-Video feeds 6) (default: %(default)s)",
    )
    parser.add_argument(
        "--clip-model", default=EvaluationSettings.clip_model,
        help="CLIP model the protocol names, recorded in the protocol card; the preset's CLIP (or --clip-path) is what is loaded "
        "(default: the preset's)",
    )
    parser.add_argument(
        "--n-trials", type=positive_int, default=EvaluationSettings.n_trials, help="trials per clip of the n-way tests (default: %(default)s)",
    )
    parser.add_argument(
        "--n-ways", type=int, nargs="+", default=list(EvaluationSettings.n_ways), help="n of the n-way classification tests (default: %(default)s)",
    )
    parser.add_argument(
        "--gt-top-k", type=positive_int, default=EvaluationSettings.gt_top_k,
        help="classes of the ground truth (its top-k by the classifier); 3 = MinD-Video, 1 = MinD-Vis; "
        "chance is k / (k + n - 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--semantic", action=argparse.BooleanOptionalAction, default=EvaluationSettings.semantic,
        help="compute the model-based metrics (classifiers, CLIP, captions); --no-semantic keeps pixel metrics only",
    )
    parser.add_argument("--clip-path", default=None, help="local CLIP directory for --preset default (default: Hugging Face id)")
    parser.add_argument("--image-classifier-path", default=None, help="local ViT classifier directory (default: Hugging Face id)")
    parser.add_argument("--video-classifier-path", default=None, help="local VideoMAE classifier directory (default: Hugging Face id)")
    parser.add_argument(
        "--report-size", type=positive_int, default=ReportSettings.report_size, help="side in px of the clips shown in report.html (default: %(default)s)",
    )
    parser.add_argument(
        "--embed-media", action=argparse.BooleanOptionalAction, default=ReportSettings.embed_media,
        help="embed clips and figures in report.html (one self-contained file); --no-embed-media links them relatively",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Value checks that argparse types cannot express (exit with a usage message); subject numbers the dataset does
    not have are refused."""
    check_subjects(get_spec(args.dataset), args.subjects)
    if args.n_frames < 0 or args.eval_size < 0:
        parser.error(f"--n-frames and --eval-size must be >= 0, got {args.n_frames} and {args.eval_size}.")
    if args.eval_size and args.eval_size < 11:
        parser.error(f"--eval-size={args.eval_size} is smaller than the 11 px SSIM window.")
    if any(n < 2 for n in args.n_ways):
        parser.error(f"--n-ways must all be >= 2, got {args.n_ways}.")
    if args.video_frames < 0:
        parser.error(f"--video-frames must be >= 0, got {args.video_frames}.")
    if args.videos is not None and args.reconstructions:
        parser.error("--videos and --reconstructions are exclusive: score either a folder of videos or reconstruction runs.")
    paths = {"--clip-path": args.clip_path, "--image-classifier-path": args.image_classifier_path, "--video-classifier-path": args.video_classifier_path}
    zoo.refuse_unused_model_paths(args.preset, paths)


def evaluation_settings(args: argparse.Namespace) -> EvaluationSettings:
    """The scoring settings from the parsed flags."""
    return EvaluationSettings(
        seed=args.seed, batch_size=args.batch_size, n_frames=args.n_frames, eval_size=args.eval_size, color_ssim=args.color_ssim,
        ssim=tuple(dict.fromkeys(args.ssim)), n_trials=args.n_trials, n_ways=tuple(args.n_ways), gt_top_k=args.gt_top_k,
        video_frames=args.video_frames, clip_model=args.clip_model, semantic=args.semantic,
    )


def videos_run_name(args: argparse.Namespace) -> str:
    """The name of the evaluation of --videos: --method, else the folder's name (which must be a safe name)."""
    if args.method:
        return args.method
    return layout.check_name(Path(args.videos).resolve().name, f"--videos {args.videos}: the folder's name (give --method NAME instead)")


def find_clips(args: argparse.Namespace, run: str) -> list[tuple[str, Path]]:
    """(stimulus, path) of the clips of a reconstruction run, or of the --videos folder."""
    spec = get_spec(args.dataset)
    if args.videos is None:
        clips = evaluation_data.find_clips(args.data_root, run)
        check_stimuli(spec, [stim for stim, _ in clips], f"reconstruction run {layout.reconstructions_dir(args.data_root, run)}")
        return clips[: args.limit]
    return evaluation_data.find_folder_clips(args.videos, args.name_pattern, args.name_format, spec.canonical)[: args.limit]


def load_models(args: argparse.Namespace, device: str, dtype) -> dict[str, Any]:
    """CLIP, image and video classifiers of the preset (models/zoo.py)."""
    return {
        "clip": zoo.load_clip(args.preset, args.clip_path, device=device, dtype=dtype, flag="--clip-path", data_root=args.data_root),
        "image": zoo.load_image_classifier(args.preset, args.image_classifier_path, device=device, dtype=dtype, data_root=args.data_root),
        "video": zoo.load_video_classifier(args.preset, args.video_classifier_path, device=device, dtype=dtype, data_root=args.data_root),
    }


def evaluate_run(args: argparse.Namespace, settings: EvaluationSettings, run: str, models: dict[str, Any] | None) -> RunEvaluation:
    """Score every clip of one run against its ground truth; the metrics.json result and the report's inputs."""
    spec = get_spec(args.dataset)
    clips = find_clips(args, run)
    stimuli = [stim for stim, _ in clips]
    captions = evaluation_data.decoded_captions(args.data_root, run) if args.videos is None else {}
    humans = evaluation_data.human_captions(args.data_root, args.dataset)
    blip = evaluation_data.blip_captions(args.data_root, args.dataset)
    grayscale = not settings.color_ssim
    scores = RunScores()
    media = []
    first_pred = prev_true = None
    n_split = 0
    for stim, recon_path in _progress(clips, run):
        true_path = stimulus_path(args.data_root, spec, stim)
        pred, true, split = evaluation_data.load_clip_pair(recon_path, true_path, settings.n_frames, settings.eval_size)  # (n, s, s, 3) each
        n_split += split
        scoring.add_pixel_scores(scores, pred, true, grayscale, ssim=settings.ssim)
        if prev_true is not None:  # mismatched baseline: this reconstruction against the previous clip's truth
            scoring.add_pixel_scores(scores, pred, prev_true, grayscale, mismatched=True, ssim=settings.ssim)
        first_pred = pred if first_pred is None else first_pred
        prev_true = true
        fps = evaluation_data.display_fps(true_path, len(true))
        media.append(ClipMedia(stim, resize_frames(pred, args.report_size), resize_frames(true, args.report_size), fps))
        if models is not None:
            scoring.add_semantic_scores(scores, models, settings, stim, pred, true)
    if len(clips) > 1:  # the first reconstruction against the last truth closes the cycle
        scoring.add_pixel_scores(scores, first_pred, prev_true, grayscale, mismatched=True, ssim=settings.ssim)
    out, skipped = scoring.summarize_run(scores, stimuli, settings, models, captions, humans)

    used = {
        "method": run if args.videos is not None else "brain2video (this project)",
        "source": str(args.videos) if args.videos is not None else str(layout.reconstructions_dir(args.data_root, run)),
        "n_frames_scored": int(first_pred.shape[0]), "eval_size_px": int(first_pred.shape[1]),
        "frames_read": _count([evaluation_data.clip_kind(path) for _, path in clips]),
        "side_by_side_split": (
            f"{n_split} side-by-side gifs (MinD-Video layout) split; the right half (reconstruction) scored against the dataset's ground truth"
            if n_split else "none"
        ),
    }
    if models is not None:
        video_model = models["video"][0]
        used |= {
            "video_classifier_frames": settings.video_frames or int(video_model.config.num_frames),
            "models_loaded": {k: getattr(m[0], "name_or_path", "") or f"{args.preset} preset" for k, m in models.items()},
        }
    subject = evaluation_data.run_subject(args.data_root, run) if args.videos is None else run
    result = {
        "run": run, "dataset": args.dataset, "synthetic": get_spec(args.dataset).synthetic, "preset": args.preset,
        "subject": subject, "n_clips": len(stimuli),
        "settings": scoring.recorded_settings(settings, first_pred.shape[0], first_pred.shape[1]),
        "protocol": scoring.protocol_card(args.protocol, settings, used),
        "metrics": out, "skipped": skipped,
    }
    regression = None if args.videos is not None else evaluation_data.read_regression_metrics(args.data_root, args.predictions_run or run)
    if regression is not None:
        result["regression"] = regression
    text = {"decoded_caption": [captions.get(s, "") for s in stimuli], "human_caption": [(humans.get(s) or [""])[0] for s in stimuli]}
    label = evaluation_data.caption_label(args.data_root, run) if args.videos is None else "decoded caption"
    return RunEvaluation(result, stimuli, scores.full_columns(len(stimuli)), text, humans, media, label, blip)


def check_run_inputs(args: argparse.Namespace, runs: list[str]) -> None:
    """Before any scoring: read every run's decoded captions and regression metrics, so a corrupt or ill-typed
    file is named now rather than after the clips are scored."""
    if args.videos is not None:
        return
    for run in runs:
        evaluation_data.decoded_captions(args.data_root, run)
        evaluation_data.read_regression_metrics(args.data_root, args.predictions_run or run)
        evaluation_data.run_subject(args.data_root, run)  # reads the reconstruction's manifest


def run_key(args: argparse.Namespace, run: str) -> str:
    """The inputs fingerprint of a run's evaluation: its clips, captions, regression metrics and the settings."""
    clips = find_clips(args, run)
    inputs = [] if args.videos is not None else evaluation_data.fingerprint_inputs(args.data_root, run, args.predictions_run, args.dataset)
    return evaluation_data.fingerprint(clips, inputs, evaluation_data.fingerprint_settings(args))


def figure_results(results: list[dict], data_root: str) -> list[dict]:
    """The results the per-subject figure shows: the full predictions (oracle variants have their own table), or all."""
    mains = [r for r in results if evaluation_data.is_main_run(data_root, r["run"])]
    return mains or results


def _count(kinds: list[str]) -> dict[str, int]:
    """``{kind: clips}`` of the files read (``evaluation_data.clip_kind``)."""
    return {k: kinds.count(k) for k in sorted(set(kinds))}


def _progress(items: list, run: str):
    from tqdm import tqdm

    return tqdm(items, desc=f"evaluate {run}", unit="clip", leave=False, disable=None)


def main(argv: list[str] | None = None) -> int:
    """Evaluate each run; returns 0 on success."""
    parser = build_parser()
    args = parse_args(parser, argv, bundle=("protocol", lambda name: get_protocol(name).flags()))
    check_args(parser, args)
    seed_everything(args.seed)
    settings = evaluation_settings(args)
    report_settings = ReportSettings(
        report_size=args.report_size, embed_media=args.embed_media, random_models=zoo.has_random_weights(args.preset)
    )
    runs = [videos_run_name(args)] if args.videos is not None else args.reconstructions or evaluation_data.find_runs(args.data_root)
    if not runs:
        raise FileNotFoundError(f"No reconstruction runs under {layout.reconstructions_root(args.data_root)}: run reconstruct_zeroscope.py first.")
    if args.predictions_run and not layout.regression_metrics_path(args.data_root, args.predictions_run).exists():
        raise FileNotFoundError(
            f"--predictions-run {args.predictions_run}: there is no {layout.regression_metrics_path(args.data_root, args.predictions_run)}; "
            f"run `python regress.py{layout.root_flag(args.data_root)} --run {args.predictions_run}` first, or drop --predictions-run."
        )
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    out_root = args.output_root or args.data_root

    # Runs whose inputs and settings are unchanged keep their earlier results (unless --overwrite).
    keys = {run: run_key(args, run) for run in runs}
    pending, done = [], {}
    for run, key in keys.items():
        out_dir = layout.evaluation_dir(out_root, run)
        previous = None if args.overwrite else evaluation_data.is_evaluated(out_dir, key)
        if previous is not None:
            print(f"[evaluate] {run}: inputs unchanged, keeping {out_dir} (--overwrite redoes it)")
            done[run] = previous
        else:
            pending.append(run)
    check_run_inputs(args, pending)
    # A full prediction's report tables its oracle variants: it is redone when their results change.
    oracles = {} if args.videos is not None else {
        run: evaluation_data.find_oracles(args.data_root, run, args.dataset) for run in runs if evaluation_data.is_main_run(args.data_root, run)
    }

    with contextlib.ExitStack() as held:  # one evaluation at a time per output folder; a killed one's temp files go
        recorded = evaluation_data.fingerprint_settings(args)  # what settings.json records: the flags that change the numbers
        for run in [r for r in runs if r in pending or r in oracles]:
            out_dir = layout.evaluation_dir(out_root, run)
            if held.enter_context(run_lock(out_dir, STAGE)) is None and run in pending:
                raise ValueError(f"{out_dir} refuses new files (a read-only data root?), so the evaluation of {run} cannot be written "
                                 "there: pass --output-root DIR to write it into another folder.")
            for folder in (out_dir, layout.figures_dir(out_dir), layout.media_dir(out_dir)):
                remove_stale_temps(folder)
            if run in pending and not args.overwrite:  # new inputs are scored again; other settings would silently replace the results
                provenance.check_settings(
                    out_dir, STAGE, recorded, layout.metrics_path(out_dir).exists(),
                    "pass --overwrite to replace that evaluation, or use another --data-root",
                )
        loaded: dict[str, Any] = {}
        computed: dict[str, tuple[RunEvaluation, float]] = {}

        def evaluate_pending(run: str) -> None:
            if args.semantic and not loaded:
                loaded.update(load_models(args, device, dtype))
            start = time.perf_counter()
            evaluation = evaluate_run(args, settings, run, loaded or None)
            evaluation.result["inputs_fingerprint"] = keys[run]
            computed[run] = (evaluation, time.perf_counter() - start)
            done[run] = evaluation.result

        for run in pending:
            evaluate_pending(run)
        for run, found in oracles.items():
            record = evaluation_data.oracle_record(found, evaluation_data.oracle_results(out_root, found, done, partial(run_key, args)))
            if run not in computed and jsonable(record) != jsonable({k: done[run].get(k) for k in record}):
                print(f"[evaluate] {run}: its oracle variants changed, evaluating it again")
                evaluate_pending(run)
                record = evaluation_data.oracle_record(found, evaluation_data.oracle_results(out_root, found, done, partial(run_key, args)))
            done[run].update(record)

        panels = scoring.subject_groups(figure_results(list(done.values()), args.data_root), report_settings.random_models)
        for run, (evaluation, seconds) in computed.items():
            out_dir = report.write_evaluation(layout.evaluation_dir(out_root, run), evaluation, panels, report_settings, scoring.clip_card_scores)
            source = "videos" if args.videos is not None else "reconstructions"
            write_manifest(
                out_dir, STAGE, args, inputs={source: evaluation.result["protocol"]["source"]},
                counts={"clips": len(evaluation.stimuli), "seconds": round(seconds, 2)}, device=device, dtype=str(dtype),
            )
            provenance.write_settings(out_dir, STAGE, recorded)
    for run, result in done.items():
        print(f"[evaluate] {run}: {result['n_clips']} clips -> {layout.report_path(layout.evaluation_dir(out_root, run))}")
        print(f"[evaluate] {run}: {scoring.headline(result, report_settings.random_models)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
