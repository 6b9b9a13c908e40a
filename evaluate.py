"""Stage 5: evaluate reconstructed videos against the watched ones; tables, figures, HTML report.

Reads, under --data-root:
    reconstructions/<run>/mp4/<stim>.mp4      reconstructed clips (reconstruct_zeroscope.py)
    reconstructions/<run>/captions.json       decoded captions, if any
    stimuli_<ds>/...                          ground-truth videos (utils.datasets.stimulus_path)
    metadata_<ds>/annotations.json            human captions (BMD and demo)
    predictions/<run>/metrics.json            regression metrics (regress.py), if present
Writes evaluation/<run>/:
    metrics.json      per-metric mean, SEM, n, chance or mismatched baseline; regression numbers
    metrics.md        the same as a markdown table
    per_sample.csv    one row per clip
    report.html       self-contained gallery: ground truth beside reconstruction, captions, tables
    figures/          distributions.png, per_subject.png, examples.png
    media/            the clips of the gallery (mp4 at --report-size)
    manifest.json

Metrics (utils.metrics; the protocol of MinD-Video and later papers): per-frame SSIM and
PSNR at a common size; n-way top-1 semantic classification (2-way and 50-way, 100 seeded
trials) with an image classifier (ViT) on frames and a video classifier (VideoMAE) on clips;
CLIP similarity of matching frames and 2-way identification among clips; the spatiotemporal
(ST) score; caption BLEU-4, CLIP text similarity and 2-way retrieval of the human captions.
Pixel and CLIP similarities also get a mismatched baseline (each reconstruction against the
ground truth of another clip). A rerun on the same inputs reproduces every number and skips
the work unless --overwrite.

Examples:
    python evaluate.py --dataset demo --preset tiny --reconstructions demo_sub01
    python evaluate.py --dataset bmd --reconstructions bmd_sub01 --device cuda
    python evaluate.py --dataset bmd --reconstructions bmd_sub01 bmd_sub02 --no-embed-media
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from models import zoo
from utils import layout, metrics, report
from utils.cli import common_parser, parse_args, positive_int, resolve_device, resolve_dtype
from utils.datasets import get_spec, load_annotations, stimulus_path
from utils.io import read_json, sha256_file, write_json, write_manifest, write_text
from utils.seeds import seed_everything, stimulus_seed
from utils.video import read_video, resize_frames, video_info, write_mp4

STAGE = "evaluate"
HEADLINE = ("ssim", "psnr", "clip_2way_identification", "video_2way", "image_2way", "caption_2way_retrieval")


def build_parser():
    """Common flags plus the evaluation settings."""
    parser = common_parser(__doc__, presets=zoo.PRESETS)
    parser.add_argument(
        "--reconstructions", nargs="+", default=None, metavar="RUN",
        help="reconstruction runs to evaluate (folders under reconstructions/); default: every run found",
    )
    parser.add_argument(
        "--predictions-run", default=None,
        help="run under predictions/ whose metrics.json to include (default: the same name as each reconstruction run)",
    )
    parser.add_argument("--n-frames", type=int, default=0, help="frames compared per clip; 0 = the reconstruction's frame count (default: %(default)s)")
    parser.add_argument("--eval-size", type=int, default=0, help="common square size in px for pixel metrics; 0 = the reconstruction's height (default: %(default)s)")
    parser.add_argument("--color-ssim", action="store_true", help="SSIM per RGB channel (averaged) instead of on grayscale")
    parser.add_argument("--n-trials", type=positive_int, default=100, help="trials per clip of the n-way tests (default: %(default)s)")
    parser.add_argument("--n-ways", type=int, nargs="+", default=[2, 50], help="n of the n-way classification tests (default: %(default)s)")
    parser.add_argument(
        "--gt-top-k", type=positive_int, default=3,
        help="classes of the ground truth (its top-k by the classifier); 3 = the issue's protocol, 1 = MinD-Video; "
        "chance is k / (k + n - 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--semantic", action=argparse.BooleanOptionalAction, default=True,
        help="compute the model-based metrics (classifiers, CLIP, captions); --no-semantic keeps pixel metrics only",
    )
    parser.add_argument("--clip-path", default=None, help="local CLIP directory for --preset default (default: Hugging Face id)")
    parser.add_argument("--image-classifier-path", default=None, help="local ViT classifier directory (default: Hugging Face id)")
    parser.add_argument("--video-classifier-path", default=None, help="local VideoMAE classifier directory (default: Hugging Face id)")
    parser.add_argument("--report-size", type=positive_int, default=128, help="side in px of the clips shown in report.html (default: %(default)s)")
    parser.add_argument(
        "--embed-media", action=argparse.BooleanOptionalAction, default=True,
        help="embed clips and figures in report.html (one self-contained file); --no-embed-media links them relatively",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Value checks that argparse types cannot express (exit with a usage message)."""
    if args.n_frames < 0 or args.eval_size < 0:
        parser.error(f"--n-frames and --eval-size must be >= 0, got {args.n_frames} and {args.eval_size}.")
    if args.eval_size and args.eval_size < 11:
        parser.error(f"--eval-size={args.eval_size} is smaller than the 11 px SSIM window.")
    if any(n < 2 for n in args.n_ways):
        parser.error(f"--n-ways must all be >= 2, got {args.n_ways}.")


# ---------------------------------------------------------------------------------- inputs


def find_runs(data_root: str | Path) -> list[str]:
    """Runs under reconstructions/ that have an ``mp4/`` folder, sorted."""
    base = layout.root(data_root) / "reconstructions"
    return sorted(p.parent.name for p in base.glob("*/mp4") if p.is_dir()) if base.exists() else []


def find_clips(data_root: str | Path, run: str) -> list[tuple[str, Path]]:
    """(stimulus, mp4 path) of a run, sorted by stimulus; HAD class subfolders kept in the name."""
    mp4_dir = layout.reconstructions_dir(data_root, run) / "mp4"
    if not mp4_dir.is_dir():
        raise FileNotFoundError(
            f"No reconstructions in {mp4_dir}: run `python reconstruct_zeroscope.py --data-root {data_root} ...` first "
            f"(runs found: {find_runs(data_root) or 'none'})."
        )
    clips = sorted(
        (p.relative_to(mp4_dir).with_suffix("").as_posix(), p)
        for p in mp4_dir.rglob("*.mp4")
        if not p.name.startswith(".")
    )
    if not clips:
        raise FileNotFoundError(f"{mp4_dir} holds no .mp4 files: run reconstruct_zeroscope.py for run {run!r} first.")
    return clips


def decoded_captions(data_root: str | Path, run: str) -> dict[str, str]:
    """``reconstructions/<run>/captions.json`` as ``{stimulus: caption}`` (empty when absent).

    Accepts ``{stim: "text"}`` or ``{stim: {"caption": "text", ...}}``.
    """
    raw = read_json(layout.reconstructions_dir(data_root, run) / "captions.json", default={}) or {}
    out = {}
    for stim, value in raw.items():
        text = value.get("caption") if isinstance(value, dict) else value
        if isinstance(text, str):
            out[stim] = text
    return out


def human_captions(data_root: str | Path, dataset: str) -> dict[str, list[str]]:
    """Human captions per stimulus from the BMD-format annotations (empty when the dataset has none)."""
    try:
        notes = load_annotations(data_root, dataset)
    except FileNotFoundError:
        return {}
    return {stim: list(entry.get("text_descriptions") or []) for stim, entry in notes.items() if entry.get("text_descriptions")}


def run_subject(data_root: str | Path, run: str) -> str:
    """Label of the subject(s) of a run: the reconstruction manifest's ``subjects`` flag, else ``subNN`` in the name."""
    manifest = read_json(layout.reconstructions_dir(data_root, run) / "manifest.json", default={}) or {}
    subjects = (manifest.get("flags") or {}).get("subjects")
    if subjects:
        return "+".join(f"sub{int(re.sub(r'[^0-9]', '', str(s)) or 0):02d}" for s in subjects)
    match = re.search(r"sub-?(\d+)", run)
    return f"sub{int(match.group(1)):02d}" if match else run


def fingerprint(clips: list[tuple[str, Path]], extra_files: list[Path], settings: dict) -> str:
    """SHA-256 over the reconstruction files, extra inputs and settings: unchanged inputs -> same value."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for stim, path in clips:
        digest.update(f"{stim}:{sha256_file(path)}".encode())
    for path in extra_files:
        if path.exists():
            digest.update(f"{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- models


def load_models(args, device: str, dtype) -> dict[str, Any]:
    """CLIP, image and video classifiers of the preset (models/zoo.py)."""

    return {
        "clip": zoo.load_clip(args.preset, args.clip_path, device=device, dtype=dtype),
        "image": zoo.load_image_classifier(args.preset, args.image_classifier_path, device=device, dtype=dtype),
        "video": zoo.load_video_classifier(args.preset, args.video_classifier_path, device=device, dtype=dtype),
    }


# ---------------------------------------------------------------------------------- evaluation


def load_pair(recon_path: Path, true_path: Path, n_frames: int, eval_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction and ground truth as uint8 (n, s, s, 3) each, frames matched by linspace."""
    if not true_path.exists():
        raise FileNotFoundError(f"Ground-truth video {true_path} is missing: run `python download_data.py` for this dataset first.")
    pred = read_video(recon_path)  # (T1, H, W, 3)
    true = read_video(true_path)  # (T2, H', W', 3)
    size = eval_size or pred.shape[1]
    return metrics.match_frames(pred, true, n_frames or len(pred), (size, size))


class RunScores:
    """Per-clip values of one run, filled clip by clip; ``mismatched`` pairs clip i with truth i-1."""

    def __init__(self) -> None:
        self.columns: dict[str, list[float]] = {}
        self.mismatched: dict[str, list[float]] = {}
        self.clip_frames: list[tuple[np.ndarray, np.ndarray]] = []  # per clip: CLIP (n, D) of reconstruction, truth
        self.video_probs: list[tuple[np.ndarray, np.ndarray]] = []  # per clip: video classifier (C,) of reconstruction, truth

    def add(self, name: str, value: float, mismatched: bool = False) -> None:
        (self.mismatched if mismatched else self.columns).setdefault(name, []).append(float(value))

    def array(self, name: str, mismatched: bool = False) -> np.ndarray | None:
        values = (self.mismatched if mismatched else self.columns).get(name)
        return None if values is None else np.asarray(values, dtype=np.float64)


def pixel_scores(scores: RunScores, pred: np.ndarray, true: np.ndarray, grayscale: bool, mismatched: bool = False) -> None:
    """SSIM and PSNR (mean over frames) of one pair of (n, s, s, 3) clips."""
    scores.add("ssim", metrics.ssim_frames(pred, true, grayscale=grayscale).mean(), mismatched)
    scores.add("psnr", metrics.psnr_frames(pred, true).mean(), mismatched)


def semantic_scores(args, scores: RunScores, models: dict[str, Any], stim: str, pred: np.ndarray, true: np.ndarray) -> None:
    """Image-classifier n-way, CLIP frame features and video-classifier probabilities of one clip."""
    image_model, image_proc = models["image"]
    p_probs = metrics.image_class_probs(image_model, image_proc, pred, args.batch_size)  # (n, C)
    t_probs = metrics.image_class_probs(image_model, image_proc, true, args.batch_size)
    for n_way in args.n_ways:
        if n_way - 1 <= p_probs.shape[1] - args.gt_top_k:
            acc = metrics.n_way_top1_classification(p_probs, t_probs, n_way, args.n_trials, args.gt_top_k, stimulus_seed(args.seed, stim))
            scores.add(f"image_{n_way}way", acc.mean())
    clip_model, clip_proc = models["clip"]
    p_emb = metrics.clip_image_embeddings(clip_model, clip_proc, pred, args.batch_size)  # (n, D)
    t_emb = metrics.clip_image_embeddings(clip_model, clip_proc, true, args.batch_size)
    scores.add("clip_similarity", metrics.clip_frame_similarity(p_emb, t_emb))
    scores.add("st_score", metrics.spatiotemporal_score(p_emb))
    scores.add("st_score_ground_truth", metrics.spatiotemporal_score(t_emb))
    scores.clip_frames.append((p_emb, t_emb))
    video_model, video_proc = models["video"]
    probs = metrics.video_class_probs(video_model, video_proc, [pred, true], args.batch_size)  # (2, C)
    scores.video_probs.append((probs[0], probs[1]))


def evaluate_run(args, run: str, models: dict[str, Any] | None) -> dict[str, Any]:
    """All metrics of one run.

    Returns ``result`` (what goes to metrics.json), ``stimuli``, ``columns`` (per-clip arrays),
    ``text`` (caption columns), ``media`` ([(stim, pred, true)] at --report-size) and ``chance``.
    """
    spec = get_spec(args.dataset)
    clips = find_clips(args.data_root, run)[: args.limit]
    stimuli = [stim for stim, _ in clips]
    captions = decoded_captions(args.data_root, run)
    humans = human_captions(args.data_root, args.dataset)
    grayscale = not args.color_ssim
    scores = RunScores()
    media = []
    first_pred = prev_true = None
    for stim, recon_path in _progress(clips, run):
        pred, true = load_pair(recon_path, stimulus_path(args.data_root, spec, stim), args.n_frames, args.eval_size)
        pixel_scores(scores, pred, true, grayscale)
        if prev_true is not None:
            pixel_scores(scores, pred, prev_true, grayscale, mismatched=True)
        first_pred = pred if first_pred is None else first_pred
        prev_true = true
        media.append((stim, resize_frames(pred, args.report_size), resize_frames(true, args.report_size)))
        if models is not None:
            semantic_scores(args, scores, models, stim, pred, true)
    if len(clips) > 1:
        pixel_scores(scores, first_pred, prev_true, grayscale, mismatched=True)

    out: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    ssim_kind = "RGB channels" if args.color_ssim else "grayscale"
    out["ssim"] = metrics.summary(scores.array("ssim"), f"SSIM per frame ({ssim_kind}), mean over frames", None, scores.array("ssim", True))
    out["psnr"] = metrics.summary(scores.array("psnr"), f"PSNR per frame in dB (capped at {metrics.PSNR_CAP_DB:g})", None, scores.array("psnr", True))
    if models is not None:
        _semantic_summary(args, stimuli, scores, models, captions, humans, out, skipped)
    else:
        skipped["semantic metrics"] = "--no-semantic"

    settings = {
        "n_frames": int(first_pred.shape[0]), "eval_size": int(first_pred.shape[1]),
        "ssim": "rgb" if args.color_ssim else "grayscale", "n_trials": args.n_trials, "n_ways": list(args.n_ways),
        "gt_top_k": args.gt_top_k, "seed": args.seed, "semantic": bool(args.semantic),
    }
    result = {
        "run": run, "dataset": args.dataset, "synthetic": args.dataset == "demo", "preset": args.preset,
        "subject": run_subject(args.data_root, run), "n_clips": len(stimuli), "settings": settings,
        "metrics": out, "skipped": skipped,
    }
    regression = read_json(layout.regression_metrics_path(args.data_root, args.predictions_run or run))
    if regression is not None:
        result["regression"] = regression
    text = {"decoded_caption": [captions.get(s, "") for s in stimuli], "human_caption": [(humans.get(s) or [""])[0] for s in stimuli]}
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in scores.columns.items() if len(v) == len(stimuli)}
    return {
        "result": result, "stimuli": stimuli, "columns": columns, "text": text, "media": media,
        "chance": {k: v["chance"] for k, v in out.items()},
    }


def _semantic_summary(args, stimuli, scores: RunScores, models, captions, humans, out, skipped) -> None:
    """Summaries of the classifier, CLIP and caption metrics of one run (fills ``out``, ``skipped``, ``scores``)."""
    n = len(stimuli)
    for n_way in args.n_ways:
        name = f"image_{n_way}way"
        values = scores.array(name)
        if values is None:
            skipped[name] = "the image classifier has too few classes"
        else:
            out[name] = metrics.summary(values, f"{n_way}-way top-1 class of frames (image classifier), {args.n_trials} trials", metrics.classification_chance(n_way, args.gt_top_k))
    p_probs = np.stack([p for p, _ in scores.video_probs])  # (N, C)
    t_probs = np.stack([t for _, t in scores.video_probs])
    for n_way in args.n_ways:
        name = f"video_{n_way}way"
        if n_way - 1 > p_probs.shape[1] - args.gt_top_k:
            skipped[name] = "the video classifier has too few classes"
            continue
        acc = np.array([
            metrics.n_way_top1_classification(p_probs[i : i + 1], t_probs[i : i + 1], n_way, args.n_trials, args.gt_top_k, stimulus_seed(args.seed, s))[0]
            for i, s in enumerate(stimuli)
        ])
        scores.columns[name] = list(acc)
        out[name] = metrics.summary(acc, f"{n_way}-way top-1 class of clips (video classifier), {args.n_trials} trials", metrics.classification_chance(n_way, args.gt_top_k))

    frames = scores.clip_frames
    mismatched = np.array([metrics.clip_frame_similarity(frames[i][0], frames[i - 1][1]) for i in range(n)]) if n > 1 else None
    out["clip_similarity"] = metrics.summary(scores.array("clip_similarity"), "CLIP cosine of matching frames", None, mismatched)
    if n >= 2:
        mean_pred = np.stack([p.mean(axis=0) for p, _ in frames])  # (N, D)
        mean_true = np.stack([t.mean(axis=0) for _, t in frames])
        acc = metrics.n_way_from_scores(metrics.cosine_matrix(mean_pred, mean_true), 2, args.n_trials, args.seed)
        scores.columns["clip_2way_identification"] = list(acc)
        out["clip_2way_identification"] = metrics.summary(acc, "2-way identification of the true clip among the clips by mean CLIP image embedding", 0.5)
    else:
        skipped["clip_2way_identification"] = "needs at least 2 clips"
    out["st_score"] = metrics.summary(
        scores.array("st_score"), "ST score: CLIP cosine of consecutive reconstructed frames", None,
        scores.array("st_score_ground_truth"), baseline_label="ground truth",
    )
    _caption_summary(args, stimuli, scores, models, captions, humans, out, skipped)


def _caption_summary(args, stimuli, scores: RunScores, models, captions, humans, out, skipped) -> None:
    """Caption BLEU-4, CLIP text similarity and 2-way retrieval, for clips with both kinds of caption."""
    with_text = [i for i, s in enumerate(stimuli) if captions.get(s) and humans.get(s)]
    if not with_text:
        skipped["caption metrics"] = "no decoded captions" if not captions else "the dataset has no human captions"
        return
    clip_model, clip_proc = models["clip"]
    decoded = [captions[stimuli[i]] for i in with_text]
    refs = [humans[stimuli[i]] for i in with_text]
    bleu = np.array([metrics.bleu(c, r) for c, r in zip(decoded, refs, strict=True)])
    pred_text = metrics.clip_text_embeddings(clip_model, clip_proc, decoded)  # (M, D)
    human_text = [metrics.clip_text_embeddings(clip_model, clip_proc, r) for r in refs]  # M x (K, D)
    sim = np.array([metrics.caption_text_similarity(p, h) for p, h in zip(pred_text, human_text, strict=True)])
    mismatched = np.array([metrics.caption_text_similarity(pred_text[i], human_text[i - 1]) for i in range(len(sim))]) if len(sim) > 1 else None
    out["caption_bleu4"] = metrics.summary(bleu, "sentence BLEU-4 of the decoded caption against the human captions")
    out["caption_clip_similarity"] = metrics.summary(sim, "CLIP text cosine of the decoded caption with the mean human caption", None, mismatched)
    per_clip = {"caption_bleu4": bleu, "caption_clip_similarity": sim}
    if len(with_text) >= 2:
        human_mean = np.stack([metrics.mean_direction(h) for h in human_text])  # (M, D)
        acc = metrics.n_way_from_scores(metrics.cosine_matrix(pred_text, human_mean), 2, args.n_trials, args.seed)
        out["caption_2way_retrieval"] = metrics.summary(acc, "2-way retrieval of the true human captions by CLIP text similarity", 0.5)
        per_clip["caption_2way_retrieval"] = acc
    for name, values in per_clip.items():
        full = np.full(len(stimuli), np.nan)
        full[with_text] = values
        scores.columns[name] = list(full)


def _progress(items: list, run: str):
    from tqdm import tqdm

    return tqdm(items, desc=f"evaluate {run}", unit="clip", leave=False, disable=None)


# ---------------------------------------------------------------------------------- outputs


def write_outputs(args, evaluation: dict[str, Any], groups: dict[str, dict[str, tuple[float, float]]]) -> Path:
    """metrics.json, metrics.md, per_sample.csv, figures, media and report.html of one run."""
    result, stimuli, columns, text = evaluation["result"], evaluation["stimuli"], evaluation["columns"], evaluation["text"]
    out_dir = layout.evaluation_dir(args.data_root, result["run"])
    write_text(out_dir / "metrics.md", report.metrics_markdown(result))
    report.write_per_sample_csv(out_dir / "per_sample.csv", stimuli, columns, extra=text)

    fig_dir = out_dir / "figures"
    chance = evaluation["chance"]
    figures = {
        "Per-clip distributions": report.plot_distributions(columns, chance, fig_dir / "distributions.png"),
        "Per subject (mean +- SEM)": report.plot_group_bars(groups, chance, fig_dir / "per_subject.png"),
        "Examples (truth above reconstruction)": report.plot_examples([(s, t, p) for s, p, t in evaluation["media"][:4]], fig_dir / "examples.png"),
    }
    figure_src = {k: report.png_data_uri(v) if args.embed_media else report.media_src(v, out_dir, False) for k, v in figures.items()}

    spec = get_spec(args.dataset)
    humans = human_captions(args.data_root, args.dataset)
    cards = []
    for i, (stim, pred, true) in enumerate(evaluation["media"]):
        fps = _display_fps(stimulus_path(args.data_root, spec, stim), len(true))
        sources = {}
        for kind, frames in (("gt", true), ("recon", pred)):
            path = out_dir / "media" / f"{stim}_{kind}.mp4"
            write_mp4(path, frames, fps)
            sources[kind] = report.media_src(path, out_dir, args.embed_media)
        clip_scores = {k: float(v[i]) for k, v in columns.items() if k in HEADLINE or k == "clip_similarity"}
        cards.append(report.clip_card(stim, sources["gt"], sources["recon"], humans.get(stim, []), text["decoded_caption"][i] or None, clip_scores))
    write_text(out_dir / "report.html", report.render_report(result, cards, figure_src))
    # Last: its inputs fingerprint marks the run complete for the resume check in main().
    write_json(out_dir / "metrics.json", result)
    return out_dir


def _display_fps(true_path: Path, n_frames: int) -> float:
    """Frame rate that plays ``n_frames`` in the ground truth's duration (5 fps when unknown)."""
    try:
        duration = video_info(true_path)["duration"]
    except (ValueError, OSError):
        return 5.0
    return round(n_frames / duration, 3) if duration and np.isfinite(duration) and duration > 0 else 5.0


def subject_groups(results: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Bars of the per-subject figure: ``{subject: {metric: (mean, sem)}}``.

    Each run's metrics go under its subject label; the regression's 2-way identification of
    each test subject (predictions/<run>/metrics.json) goes under that subject.
    """
    groups: dict[str, dict[str, tuple[float, float]]] = {}
    for result in results:
        groups.setdefault(result["subject"], {}).update({k: (v["mean"], v["sem"]) for k, v in result["metrics"].items()})
        for target, entry in ((result.get("regression") or {}).get("targets") or {}).items():
            for subject, values in (entry.get("subjects") or {}).items():
                two_way = (values.get("identification") or {}).get("2-way")
                if two_way is not None:
                    groups.setdefault(subject.split("/")[-1], {})[f"regression {target} 2-way"] = (float(two_way), 0.0)
    return groups


def headline(result: dict) -> str:
    """One line of the main numbers."""
    parts = []
    for name in HEADLINE:
        entry = result["metrics"].get(name)
        if entry:
            ref = f" (chance {entry['chance']:.2f})" if entry.get("chance") is not None else ""
            parts.append(f"{name} {entry['mean']:.3f}{ref}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Evaluate each run; returns 0 on success."""
    parser = build_parser()
    args = parse_args(parser, argv)
    check_args(parser, args)
    seed_everything(args.seed)
    runs = args.reconstructions or find_runs(args.data_root)
    if not runs:
        raise FileNotFoundError(
            f"No reconstruction runs under {layout.root(args.data_root) / 'reconstructions'}: run reconstruct_zeroscope.py first."
        )
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    pending, done = [], {}
    for run in runs:
        clips = find_clips(args.data_root, run)[: args.limit]
        inputs = [layout.reconstructions_dir(args.data_root, run) / "captions.json", layout.regression_metrics_path(args.data_root, args.predictions_run or run)]
        key = fingerprint(clips, inputs, _settings_key(args))
        out_dir = layout.evaluation_dir(args.data_root, run)
        previous = read_json(out_dir / "metrics.json")
        if previous and previous.get("inputs_fingerprint") == key and (out_dir / "report.html").exists() and not args.overwrite:
            print(f"[evaluate] {run}: inputs unchanged, keeping {out_dir} (--overwrite redoes it)")
            done[run] = previous
        else:
            pending.append((run, key))
    models = load_models(args, device, dtype) if pending and args.semantic else None
    computed = {}
    for run, key in pending:
        start = time.perf_counter()
        evaluation = evaluate_run(args, run, models)
        evaluation["result"]["inputs_fingerprint"] = key
        evaluation["seconds"] = time.perf_counter() - start
        computed[run] = evaluation
        done[run] = evaluation["result"]
    groups = subject_groups(list(done.values()))
    for run, evaluation in computed.items():
        out_dir = write_outputs(args, evaluation, groups)
        write_manifest(
            out_dir, STAGE, args, inputs={"reconstructions": str(layout.reconstructions_dir(args.data_root, run))},
            counts={"clips": len(evaluation["stimuli"]), "seconds": round(evaluation["seconds"], 2)},
        )
    for run, result in done.items():
        print(f"[evaluate] {run}: {result['n_clips']} clips -> {layout.evaluation_dir(args.data_root, run) / 'report.html'}")
        print(f"[evaluate] {run}: {headline(result)}")
    return 0


def _settings_key(args) -> dict:
    """The flags that change the numbers (for the resume fingerprint)."""
    keys = ("dataset", "preset", "seed", "limit", "n_frames", "eval_size", "color_ssim", "n_trials", "n_ways", "gt_top_k", "semantic", "report_size", "embed_media")
    return {k: getattr(args, k) for k in keys}


if __name__ == "__main__":
    sys.exit(main())
