"""Inputs of the evaluation stage: reconstruction runs, clip pairs, captions, the resume fingerprint.

Torch-free; ``evaluate.py`` reads everything it scores through these functions, and
``utils.scoring`` scores it. Paths come from ``utils.layout``.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils import layout, metrics
from utils.datasets import load_annotations
from utils.io import read_json, sha256_file
from utils.video import read_video, video_info

# Flags that change the numbers or the report (the resume fingerprint hashes them).
FINGERPRINT_FLAGS = (
    "dataset", "preset", "seed", "limit", "n_frames", "eval_size", "color_ssim", "n_trials", "n_ways", "gt_top_k", "semantic",
    "report_size", "embed_media",
)
DEFAULT_FPS = 5.0


def find_runs(data_root: str | Path | None) -> list[str]:
    """Runs under reconstructions/ that have an ``mp4/`` folder, sorted."""
    base = layout.reconstructions_root(data_root)
    return sorted(p.name for p in base.iterdir() if layout.reconstruction_mp4_dir(p).is_dir()) if base.exists() else []


def find_clips(data_root: str | Path | None, run: str) -> list[tuple[str, Path]]:
    """(stimulus, mp4 path) of a run, sorted by stimulus; HAD class subfolders kept in the name."""
    mp4_dir = layout.reconstruction_mp4_dir(layout.reconstructions_dir(data_root, run))
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


def decoded_captions(data_root: str | Path | None, run: str) -> dict[str, str]:
    """``reconstructions/<run>/captions.json`` as ``{stimulus: caption}`` (empty when absent).

    Accepts ``{stim: "text"}`` or ``{stim: {"caption": "text", ...}}``.
    """
    raw = read_json(layout.reconstruction_captions_path(layout.reconstructions_dir(data_root, run)), default={}) or {}
    out = {}
    for stim, value in raw.items():
        text = value.get("caption") if isinstance(value, dict) else value
        if isinstance(text, str):
            out[stim] = text
    return out


def human_captions(data_root: str | Path | None, dataset: str) -> dict[str, list[str]]:
    """Human captions per stimulus from the BMD-format annotations (empty when the dataset has none)."""
    try:
        notes = load_annotations(data_root, dataset)
    except FileNotFoundError:
        return {}
    return {stim: list(entry.get("text_descriptions") or []) for stim, entry in notes.items() if entry.get("text_descriptions")}


def run_subject(data_root: str | Path | None, run: str) -> str:
    """Label of the subject(s) of a run: the reconstruction manifest's ``subjects`` flag, else ``subNN`` in the name."""
    manifest = read_json(layout.manifest_path(layout.reconstructions_dir(data_root, run)), default={}) or {}
    subjects = (manifest.get("flags") or {}).get("subjects")
    if subjects:
        return "+".join(f"sub{int(re.sub(r'[^0-9]', '', str(s)) or 0):02d}" for s in subjects)
    match = re.search(r"sub-?(\d+)", run)
    return f"sub{int(match.group(1)):02d}" if match else run


def fingerprint_inputs(data_root: str | Path | None, run: str, predictions_run: str | None) -> list[Path]:
    """Files besides the clips whose content changes a run's evaluation: its captions, the regression metrics."""
    return [
        layout.reconstruction_captions_path(layout.reconstructions_dir(data_root, run)),
        layout.regression_metrics_path(data_root, predictions_run or run),
    ]


def fingerprint(clips: Sequence[tuple[str, Path]], extra_files: Sequence[Path], settings: dict[str, Any]) -> str:
    """SHA-256 over the reconstruction files, extra inputs and settings: unchanged inputs -> same value."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for stim, path in clips:
        digest.update(f"{stim}:{sha256_file(path)}".encode())
    for path in extra_files:
        if path.exists():
            digest.update(f"{path.name}:{sha256_file(path)}".encode())
    return digest.hexdigest()


def fingerprint_settings(args: Any) -> dict[str, Any]:
    """The flags of ``FINGERPRINT_FLAGS`` from parsed args."""
    return {k: getattr(args, k) for k in FINGERPRINT_FLAGS}


def is_evaluated(out_dir: Path, key: str) -> dict | None:
    """The earlier metrics.json of ``out_dir`` when it was made from the same inputs (``key``) and its report exists."""
    previous = read_json(layout.metrics_path(out_dir))
    if previous and previous.get("inputs_fingerprint") == key and layout.report_path(out_dir).exists():
        return previous
    return None


def load_pair(recon_path: Path, true_path: Path, n_frames: int, eval_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction and ground truth as uint8 (n, s, s, 3) each, frames matched by linspace.

    n_frames 0 = the reconstruction's frame count; eval_size 0 = the reconstruction's height.
    """
    if not true_path.exists():
        raise FileNotFoundError(f"Ground-truth video {true_path} is missing: run `python download_data.py` for this dataset first.")
    pred = read_video(recon_path)  # (T1, H, W, 3)
    true = read_video(true_path)  # (T2, H', W', 3)
    size = eval_size or pred.shape[1]
    return metrics.match_frames(pred, true, n_frames or len(pred), (size, size))


def display_fps(true_path: Path, n_frames: int) -> float:
    """Frame rate that plays ``n_frames`` in the ground truth's duration (``DEFAULT_FPS`` when unknown)."""
    try:
        duration = video_info(true_path)["duration"]
    except (ValueError, OSError):
        return DEFAULT_FPS
    return round(n_frames / duration, 3) if duration and np.isfinite(duration) and duration > 0 else DEFAULT_FPS


def read_regression_metrics(data_root: str | Path | None, predictions_run: str) -> dict | None:
    """regress.py's ``predictions/<run>/metrics.json``, or None when that run has none."""
    return read_json(layout.regression_metrics_path(data_root, predictions_run))
