"""Inputs of the evaluation stage: reconstruction runs, folders of videos, clip pairs, captions, the resume fingerprint.

Torch-free; ``evaluate.py`` reads everything it scores through these functions, and
``utils.scoring`` scores it. Paths come from ``utils.layout``.

A reconstruction run's clip is read from its lossless frames
(``layout.reconstruction_frames_path``, uint8 (F, H, W, 3) .npy) when they exist, else from
its mp4. A folder of videos (``evaluate.py --videos DIR``) holds one entry per clip: an
.mp4 or .gif file, or a folder of PNG/JPG frames (sorted by name); entry names map to
stimuli by a regex with a named group ``stim``. A gif twice as wide as tall is MinD-Video's
side-by-side layout (ground truth left, reconstruction right): its right half is scored. Each
clip is matched to its own ground truth (its own frame count and size); a clip of fewer than
``MIN_CLIP_FRAMES`` frames is refused, naming it, before anything is scored.

Caption files (``reconstructions/<run>/captions.json``, ``target_vectors_<ds>/captions.json``) must
map stimulus -> caption string; anything else is refused naming the file and what it holds.

Oracle variants: besides the full prediction ``<run>``, reconstruct_zeroscope.py makes
``<run>_z-pred_caption-gt`` (predicted latent, ground-truth caption), ``<run>_z-gt_caption-pred``
(ground-truth latent, decoded caption) and ``<run>_z-gt_caption-gt`` or ``gt_<ds>`` (both from
the ground truth). Every
question about them (their names, which exist and are comparable, their kept evaluations,
the record in the main run's metrics.json) is answered here: ``find_oracles``, ``oracle_results``,
``oracle_record``.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils import layout, metrics, provenance, scoring
from utils.datasets import load_annotations
from utils.io import ArtifactError, check_captions, json_kind, read_captions, read_json, sha256_file
from utils.video import read_video, video_info

# Frames a clip needs: the ST score and the video classifier compare frames.
MIN_CLIP_FRAMES = 2

# Flags that change the numbers or the report (the resume fingerprint hashes them).
FINGERPRINT_FLAGS = (
    "dataset", "preset", "seed", "limit", "n_frames", "eval_size", "color_ssim", "n_trials", "n_ways", "gt_top_k", "semantic",
    "report_size", "embed_media", "protocol", "ssim", "video_frames", "clip_model", "videos", "name_pattern", "name_format", "method",
)
DEFAULT_FPS = 5.0
VIDEO_SUFFIXES = (".mp4", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_NAME_PATTERN = r"(?P<stim>.+?)(?:\.(?:mp4|gif))?"


def find_runs(data_root: str | Path | None) -> list[str]:
    """Runs under reconstructions/ that have an ``mp4/`` folder, sorted."""
    base = layout.reconstructions_root(data_root)
    return sorted(p.name for p in base.iterdir() if layout.reconstruction_mp4_dir(p).is_dir()) if base.exists() else []


def find_clips(data_root: str | Path | None, run: str) -> list[tuple[str, Path]]:
    """(stimulus, path to read) of a run, sorted by stimulus; HAD class subfolders kept in the name.

    The path is the clip's lossless frames (.npy) when reconstruction wrote them, else its mp4.
    """
    run_dir = layout.reconstructions_dir(data_root, run)
    mp4_dir = layout.reconstruction_mp4_dir(run_dir)
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
    return [(stim, _lossless_or(layout.reconstruction_frames_path(run_dir, stim), mp4)) for stim, mp4 in clips]


def _lossless_or(frames_path: Path, mp4: Path) -> Path:
    return frames_path if frames_path.is_file() else mp4


def stimulus_from_name(name: str, pattern: str, name_format: str | None, canonical: Callable[[str], str]) -> str | None:
    """Stimulus of a folder entry called ``name``: ``pattern`` (regex, named group ``stim``, full match), then
    ``name_format`` (e.g. ``{:04d}``; digits are formatted as an integer), then the dataset's ``canonical``.

    None when ``pattern`` does not match; ValueError when the name is not a stimulus of the dataset.
    """
    match = re.fullmatch(pattern, name)
    if match is None:
        return None
    stim = match.group("stim")
    if name_format:
        try:
            stim = name_format.format(int(stim) if stim.isdigit() else stim)
        except (ValueError, IndexError, KeyError) as error:
            raise ValueError(f"--name-format {name_format!r} cannot format {stim!r} from {name!r} ({error}).") from None
    try:
        return canonical(stim)
    except ValueError as error:
        raise ValueError(f"{name!r} maps to {stim!r} by --name-pattern/--name-format, which is not a stimulus name: {error}") from None


def find_folder_clips(
    folder: str | Path, pattern: str, name_format: str | None, canonical: Callable[[str], str],
) -> list[tuple[str, Path]]:
    """(stimulus, path) of every clip of a folder of videos, sorted by stimulus.

    Entries: .mp4 / .gif files and folders of PNG/JPG frames; those whose name ``pattern``
    does not match are skipped. Raises when none matches or two entries map to one stimulus.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--videos {folder}: no such folder.")
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"--name-pattern {pattern!r} is not a valid regular expression ({error}).") from None
    if "stim" not in compiled.groupindex:
        raise ValueError(f"--name-pattern {pattern!r} needs a named group 'stim', e.g. 'test(?P<stim>\\d+)\\.gif'.")
    clips: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not (entry.suffix.lower() in VIDEO_SUFFIXES or (entry.is_dir() and frame_files(entry))):
            continue
        stim = stimulus_from_name(entry.name, pattern, name_format, canonical)
        if stim is None:
            continue
        if stim in clips:
            raise ValueError(f"--videos {folder}: {clips[stim].name!r} and {entry.name!r} both map to stimulus {stim!r}.")
        clips[stim] = entry
    if not clips:
        raise FileNotFoundError(
            f"--videos {folder}: no .mp4/.gif file or frame folder matches --name-pattern {pattern!r} "
            f"(entries: {sorted(p.name for p in folder.iterdir())[:5]})."
        )
    for path in clips.values():
        check_clip_frames(path, clip_frame_count(path))
    return sorted(clips.items())


def clip_frame_count(path: Path) -> int:
    """Frames of a folder's clip without decoding its pixels: its frame files, or the video's packets."""
    return len(frame_files(path)) if path.is_dir() else int(video_info(path)["n_frames"])


def check_clip_frames(path: Path, n_frames: int) -> None:
    """Refuse a clip of fewer than ``MIN_CLIP_FRAMES`` frames, naming it."""
    if n_frames < MIN_CLIP_FRAMES:
        raise ValueError(
            f"Clip {path} has {n_frames} frame(s); scoring needs at least {MIN_CLIP_FRAMES} per clip "
            "(the ST score and the video classifier compare frames): drop it or give it more frames."
        )


def frame_files(folder: Path) -> list[Path]:
    """The PNG/JPG files of a frame folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith("."))


def clip_kind(path: Path) -> str:
    """How a clip is stored: ``lossless npy``, ``mp4``, ``gif`` or ``frame folder``."""
    if path.is_dir():
        return "frame folder"
    return {".npy": "lossless npy", ".gif": "gif"}.get(path.suffix.lower(), "mp4")


def is_side_by_side(frames: np.ndarray) -> bool:
    """MinD-Video's layout: (T, H, 2H, 3), ground truth and reconstruction side by side."""
    return frames.shape[2] == 2 * frames.shape[1]


def read_clip(path: Path) -> tuple[np.ndarray, bool]:
    """(uint8 (T, H, W, 3) frames, split) of one clip; split: a side-by-side gif whose right half was kept."""
    if path.is_dir():
        from PIL import Image

        files = frame_files(path)
        if not files:
            raise FileNotFoundError(f"Frame folder {path} holds no PNG/JPG files.")
        frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])  # (T, H, W, 3)
    elif path.suffix == ".npy":
        frames = np.load(path)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"Lossless frames {path} must be uint8 (F, H, W, 3), found {frames.dtype} {frames.shape}.")
    else:
        frames = read_video(path)
    check_clip_frames(path, len(frames))
    if path.suffix.lower() == ".gif" and is_side_by_side(frames):
        return frames[:, :, frames.shape[2] // 2 :], True
    return frames, False


def decoded_captions(data_root: str | Path | None, run: str) -> dict[str, str]:
    """``reconstructions/<run>/captions.json`` as ``{stimulus: caption}`` (empty when absent).

    Accepts ``{stim: "text"}`` or ``{stim: {"caption": "text", ...}}``; anything else raises naming the file.
    """
    path = layout.reconstruction_captions_path(layout.reconstructions_dir(data_root, run))
    remake = f"delete it and rerun the reconstruct_zeroscope.py command of run {run!r} with --overwrite"
    raw = read_json(path, default={}, remake=remake)
    if isinstance(raw, dict):  # {stim: {"caption": text, ...}} -> {stim: text}
        raw = {k: v["caption"] if isinstance(v, dict) and "caption" in v else v for k, v in raw.items()}
    return check_captions(raw, path, remake)


def blip_captions(data_root: str | Path | None, dataset: str) -> dict[str, str]:
    """BLIP's caption of each watched clip (``target_vectors_<ds>/captions.json``; empty when absent); a file that
    is not a mapping of stimulus -> caption string raises naming it."""
    path = layout.captions_path(data_root, dataset)
    remake = f"delete it and rerun `python extract_targets_blip.py --dataset {dataset}`"
    return read_captions(path, remake, default={})


def reconstruction_settings(data_root: str | Path | None, run: str) -> dict[str, Any] | None:
    """The settings reconstruct_zeroscope.py recorded for a run (``settings.json``), or None when it has none."""
    record = provenance.read_settings(layout.reconstructions_dir(data_root, run))
    return record["settings"] if record else None


CAPTION_LABELS = {  # reconstruct_zeroscope.py --caption-from -> what the caption of a clip is
    "pred": "decoded from brain data", "gt": "ground-truth caption (BLIP on the watched clip)",
}


def caption_label(data_root: str | Path | None, run: str) -> str:
    """What the captions of a run are, for the report: decoded from brain data, or the ground truth's BLIP caption."""
    settings = reconstruction_settings(data_root, run) or {}
    return CAPTION_LABELS.get(settings.get("caption_from"), "decoded caption")


def human_captions(data_root: str | Path | None, dataset: str) -> dict[str, list[str]]:
    """Human captions per stimulus from the BMD-format annotations (empty when the dataset has none); a
    ``text_descriptions`` that is not a list of strings raises naming the file and the stimulus."""
    try:
        notes = load_annotations(data_root, dataset)
    except FileNotFoundError:
        return {}
    out = {}
    for stim, entry in notes.items():
        texts = entry.get("text_descriptions") or []
        if isinstance(texts, list):
            found = next((f"{json_kind(t)} in the list" for t in texts if not isinstance(t, str)), None)
        else:
            found = json_kind(texts)
        if found is not None:
            raise ValueError(
                f"{layout.annotations_path(data_root, dataset)}: expected a list of caption strings as the text_descriptions of "
                f"{stim!r}, found {found}."
            )
        if texts:
            out[stim] = list(texts)
    return out


def run_subject(data_root: str | Path | None, run: str) -> str:
    """Label of the subject(s) of a run: the reconstruction manifest's ``subjects`` flag, else ``subNN`` in the name."""
    path = layout.manifest_path(layout.reconstructions_dir(data_root, run))
    manifest = read_json(path, default={}) or {}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("flags") or {}, dict):
        raise ArtifactError(f"{path}: expected a stage manifest (an object with 'flags'), found {json_kind(manifest)}: delete it and "
                            f"rerun the reconstruct_zeroscope.py command of run {run!r}.")
    subjects = (manifest.get("flags") or {}).get("subjects")
    if subjects:
        return "+".join(f"sub{int(re.sub(r'[^0-9]', '', str(s)) or 0):02d}" for s in subjects)
    match = re.search(r"sub-?(\d+)", run)
    return f"sub{int(match.group(1)):02d}" if match else run


def fingerprint_inputs(data_root: str | Path | None, run: str, predictions_run: str | None, dataset: str | None = None) -> list[Path]:
    """Files besides the clips whose content changes a run's evaluation: its captions, the regression metrics and,
    given the dataset, the BLIP captions of the watched clips (shown beside the decoded ones)."""
    return [
        layout.reconstruction_captions_path(layout.reconstructions_dir(data_root, run)),
        layout.regression_metrics_path(data_root, predictions_run or run),
        *([layout.captions_path(data_root, dataset)] if dataset else []),
    ]


def fingerprint(clips: Sequence[tuple[str, Path]], extra_files: Sequence[Path], settings: dict[str, Any]) -> str:
    """SHA-256 over the reconstruction files, extra inputs and settings: unchanged inputs -> same value."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for stim, path in clips:
        for file in frame_files(path) if path.is_dir() else [path]:
            digest.update(f"{stim}:{file.name}:{sha256_file(file)}".encode())
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
    pred, true, _ = load_clip_pair(recon_path, true_path, n_frames, eval_size)
    return pred, true


def load_clip_pair(recon_path: Path, true_path: Path, n_frames: int, eval_size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """``load_pair`` plus whether the clip was a side-by-side gif that was split (``read_clip``)."""
    if not true_path.exists():
        raise FileNotFoundError(f"Ground-truth video {true_path} is missing: run `python download_data.py` for this dataset first.")
    pred, split = read_clip(recon_path)  # (T1, H, W, 3)
    true = read_video(true_path)  # (T2, H', W', 3)
    size = eval_size or pred.shape[1]
    pred, true = metrics.match_frames(pred, true, n_frames or len(pred), (size, size))
    return pred, true, split


def display_fps(true_path: Path, n_frames: int) -> float:
    """Frame rate that plays ``n_frames`` in the ground truth's duration (``DEFAULT_FPS`` when unknown)."""
    try:
        duration = video_info(true_path)["duration"]
    except (ValueError, OSError):
        return DEFAULT_FPS
    return round(n_frames / duration, 3) if duration and np.isfinite(duration) and duration > 0 else DEFAULT_FPS


def read_regression_metrics(data_root: str | Path | None, predictions_run: str) -> dict | None:
    """regress.py's ``predictions/<run>/metrics.json``, or None when that run has none; a corrupt file, or one that
    is not an object with a ``targets`` object, raises naming it."""
    path = layout.regression_metrics_path(data_root, predictions_run)
    remake = f"rerun `python regress.py{layout.root_flag(data_root)} --run {predictions_run} --overwrite`"
    metrics = read_json(path, remake=remake)
    if metrics is not None and not (isinstance(metrics, dict) and isinstance(metrics.get("targets", {}), dict)):
        found = json_kind(metrics) if not isinstance(metrics, dict) else f"'targets' as {json_kind(metrics['targets'])}"
        raise ArtifactError(f"{path}: expected regress.py's metrics (an object with a 'targets' object), found {found}: {remake}.")
    return metrics


# ----------------------------------------------------------------------------- oracle variants of a run

ORACLE_VARIANTS = (
    "vae_round_trip", "gt_latent_gt_caption", "gt_latent_decoded_caption", "pred_latent_gt_caption", "pred_latent_decoded",
    "full_prediction",
)
ORACLE_SOURCES = {  # variant -> (--z-from, --caption-from) of reconstruct_zeroscope.py
    "vae_round_trip": ("gt", "none"), "gt_latent_gt_caption": ("gt", "gt"), "gt_latent_decoded_caption": ("gt", "pred"),
    "pred_latent_gt_caption": ("pred", "gt"), "pred_latent_decoded": ("pred", "none"), "full_prediction": ("pred", "pred"),
}
ORACLE_LABELS = {
    "vae_round_trip": "VAE round trip of the true clip (true latent, no diffusion)",
    "gt_latent_gt_caption": "ground-truth latent + ground-truth caption",
    "gt_latent_decoded_caption": "ground-truth latent + decoded caption",
    "pred_latent_gt_caption": "predicted latent + ground-truth caption",
    "pred_latent_decoded": "predicted latent, decoded without diffusion (strength 0)",
    "full_prediction": "full prediction (predicted latent + decoded caption)",
}
# The baselines the generator must beat: latents decoded by the VAE alone (reconstruct_zeroscope.py --strength 0).
DECODE_ONLY = ("vae_round_trip", "pred_latent_decoded")
# Reconstruction settings that must agree for variants to be compared (the diffusion and its models); a decode-only
# variant runs no diffusion, so only its models and dtype are compared, and its strength must be 0.
COMPARED_SETTINGS = ("condition", "steps", "strength", "guidance_scale", "negative_prompt", "seed", "preset", "zeroscope", "dtype")
DECODE_COMPARED = ("preset", "zeroscope", "dtype")
VARIANT_NAME = re.compile(r"^gt_|_z-(?:pred|gt)_(?:caption|c_zeroscope)-(?:pred|gt|none)$|_z-(?:pred|gt)_decode-only$")


def oracle_run_names(run: str, dataset: str, condition: str = "caption") -> dict[str, tuple[str, ...]]:
    """``{variant: candidate reconstruction runs}`` of a main run, in table order, each variant's candidates in order of
    preference: reconstruct_zeroscope.py's ``output_name`` for the mixes; for both inputs from the ground truth the run's
    own ``<run>_z-gt_caption-gt`` (what run_pipeline.py writes, with the run's diffusion settings), then the dataset's
    ``gt_<ds>`` (``--source targets``). The c_zeroscope path's names end in ``_c_zeroscope``."""
    if condition == "c_zeroscope":
        base = run.removesuffix("_c_zeroscope")
        text = "c_zeroscope"
        truth = (f"{base}_z-gt_c_zeroscope-gt", f"gt_{dataset}_c_zeroscope")
    else:
        base, text = run, "caption"
        truth = (f"{run}_z-gt_caption-gt", f"gt_{dataset}")
    names = (
        (f"{base}_z-gt_decode-only",), truth, (f"{base}_z-gt_{text}-pred",), (f"{base}_z-pred_{text}-gt",),
        (f"{base}_z-pred_decode-only",), (run,),
    )
    return dict(zip(ORACLE_VARIANTS, names, strict=True))


def is_main_run(data_root: str | Path | None, run: str) -> bool:
    """True for a full prediction (latent and caption from the brain): by its recorded settings, else by its name."""
    settings = reconstruction_settings(data_root, run)
    if settings and "z_from" in settings:
        return (settings.get("z_from"), settings.get("caption_from")) == ORACLE_SOURCES["full_prediction"]
    return VARIANT_NAME.search(run) is None


@dataclass(frozen=True)
class OracleRuns:
    """The oracle variants of a main run: ``runs`` ``{variant: run}`` that exist and are comparable (the main
    run itself as ``full_prediction``), ``excluded`` ``{run: why not}``, ``missing`` ``{variant: run}`` not made."""

    runs: dict[str, str]
    excluded: dict[str, str]
    missing: dict[str, str]


def find_oracles(data_root: str | Path | None, run: str, dataset: str) -> OracleRuns:
    """The reconstructed oracle variants of main run ``run`` (per variant the first comparable candidate of
    ``oracle_run_names``); a candidate whose recorded sources or diffusion settings (``COMPARED_SETTINGS``) differ from
    the main run's is excluded, with the differences."""
    main = reconstruction_settings(data_root, run) or {}
    existing = set(find_runs(data_root)) | {run}
    runs, excluded, missing = {}, {}, {}
    for variant, candidates in oracle_run_names(run, dataset, main.get("condition", "caption")).items():
        found = [c for c in candidates if c in existing]
        if not found:
            missing[variant] = " or ".join(candidates)
        for name in found:  # the first comparable one
            why = [] if name == run else oracle_differences(main, reconstruction_settings(data_root, name), variant)
            if not why:
                runs[variant] = name
                break
            excluded[name] = "; ".join(why)
    return OracleRuns(runs, excluded, missing)


def oracle_differences(main: dict[str, Any], other: dict[str, Any] | None, variant: str) -> list[str]:
    """Why a variant's recorded reconstruction settings make it incomparable with the main run's ([] = comparable;
    runs without a record are compared by name only)."""
    if not main or not other:
        return []
    z_from, caption_from = ORACLE_SOURCES[variant]
    expected = {"z_from": z_from, "caption_from": caption_from} | ({"strength": 0.0} if variant in DECODE_ONLY else {})
    why = [f"{k}={other.get(k)!r} where {v!r} was expected" for k, v in expected.items() if other.get(k) != v]
    compared = DECODE_COMPARED if variant in DECODE_ONLY else COMPARED_SETTINGS
    return why + [f"{k}: {other.get(k)!r}, the full prediction's {main.get(k)!r}" for k in compared if other.get(k) != main.get(k)]


def oracle_results(
    data_root: str | Path | None, oracles: OracleRuns, known: dict[str, dict], current_key: Callable[[str], str],
) -> dict[str, dict]:
    """``{variant: metrics.json result}`` of the oracle runs evaluated on their current clips with the current settings:
    a result of this evaluation (``known``: ``{run: result}``) or a kept ``evaluation/<run>/metrics.json`` whose
    fingerprint is ``current_key(run)``; a variant with neither is left out."""
    out = {}
    for variant, name in oracles.runs.items():
        result = known.get(name)
        if result is None and layout.metrics_path(layout.evaluation_dir(data_root, name)).exists():
            try:
                result = is_evaluated(layout.evaluation_dir(data_root, name), current_key(name))
            except FileNotFoundError:  # its clips are gone or not written yet: no comparable evaluation
                result = None
        if result is not None:
            out[variant] = result
    return out


def oracle_record(oracles: OracleRuns, results: dict[str, dict]) -> dict[str, Any]:
    """The main run's metrics.json entries: ``oracles`` ``{variant: label, run, clips, headline numbers}`` in table
    order, ``oracles_excluded`` ``{run: why}`` and ``oracles_missing`` ``{variant: run(s)}`` (variants reconstructed but
    not evaluated count as missing)."""
    missing = dict(oracles.missing) | {v: oracles.runs[v] for v in oracles.runs if v not in results}
    return {
        "oracles": {v: {"label": ORACLE_LABELS[v], **scoring.oracle_summary(results[v])} for v in ORACLE_VARIANTS if v in results},
        "oracles_excluded": dict(oracles.excluded),
        "oracles_missing": {v: missing[v] for v in ORACLE_VARIANTS if v in missing},
    }
