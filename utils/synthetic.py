"""The offline SYNTHETIC demo dataset, written in the exact BMD file formats.

``make_demo`` draws, deterministically from ``seed``, one design per stimulus (shape,
colour, motion direction, background texture, plus size / position / phase jitter), renders
it as a short video, and simulates fMRI for it with a KNOWN encoding model:

1. Features per stimulus (``stimulus_features``): category one-hots (shape, colour,
   background), motion (direction one-hot and velocity) and a pixel summary (the frames of
   each temporal half averaged and block-averaged to 4x4 RGB). Each feature is standardised
   with train statistics and each group is scaled by 1/sqrt(its size), so the three groups
   carry equal variance.
2. Weights (``encoding_weights``) over the 13156 Group41 vertices: Gaussian noise smoothed
   along the vertex index within each ROI (neighbouring vertices share tuning), scaled per
   ROI and feature group (early visual ROIs favour pixels, dorsal ROIs motion, the others
   category); each subject mixes the shared weights with its own:
   ``W_s = sqrt(1 - mix) * W_shared + sqrt(mix) * W_subject``.
3. Per trial: ``signal * sqrt(snr) + noise`` with the signal scaled to unit variance per
   vertex over train stimuli and unit-variance Gaussian noise, so ``snr`` is the per-trial
   signal variance / noise variance of every vertex. Train stimuli get 3 repeats, test 10.
4. Each vertex is z-scored with the mean and std (ddof=1) of the train trials, like the
   real ``z=1`` files, and saved as float32.

Outputs under ``data_root`` (paths from ``utils.layout`` and the ``DEMO`` spec):
``stimuli_demo/mp4/NNNN.mp4``, ``metadata_demo/annotations.json`` (BMD annotation
format), ``metadata_demo/encoding_model.npz`` (the ground truth), ``metadata_demo/README.txt``,
``metadata_demo/demo_config.json`` and
``betas_cifti_demo/subNN/prepared_allvoxel_pkl/Group41_betas-GLMsingle_type-typed_z=1.pkl``
(plain pickle, protocol 4, of a dict of numpy arrays). Existing files are kept (resume);
``overwrite`` rewrites everything and removes videos / subjects beyond the new settings.
Default sizes take about 8-15 s on a 2-core CPU (bench/results_synthetic_demo.md).
"""
from __future__ import annotations

import argparse
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from utils import layout
from utils.cli import nonnegative_float, positive_int
from utils.datasets import DEMO, numbered_stimulus, parse_subject, stimulus_path, subject_folder
from utils.io import atomic_path, read_json, write_json, write_text
from utils.rois import get_roi_set, parse_roi_set, roi_indices
from utils.video import write_mp4

# The demo pickles hold the vertices of this ROI set, as the published pickles do (Group41).
ROI_SET = DEMO.pickle_roi_set

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (0.86, 0.16, 0.16),
    "green": (0.16, 0.70, 0.24),
    "blue": (0.16, 0.31, 0.86),
    "yellow": (0.92, 0.82, 0.16),
    "purple": (0.59, 0.24, 0.75),
    "white": (0.97, 0.97, 0.97),
}
MOTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # (dx, dy), image y down
BACKGROUNDS = ("stripes", "tiles", "sky", "sand")

_SHAPE_WORDS = {
    "circle": ("circle", "ball", "disc", "round shape"),
    "square": ("square", "box", "block", "square tile"),
    "triangle": ("triangle", "pyramid", "wedge", "triangular shape"),
    "diamond": ("diamond", "rhombus", "kite", "diamond shape"),
}
_MOTION_WORDS = {
    "left": ("to the left", "leftwards", "from right to left", ("moving left", "sliding", "drifting", "moving", "travelling")),
    "right": ("to the right", "rightwards", "from left to right", ("moving right", "sliding", "drifting", "moving", "travelling")),
    "up": ("upwards", "up", "from bottom to top", ("rising", "floating", "lifting", "moving", "ascending")),
    "down": ("downwards", "down", "from top to bottom", ("falling", "dropping", "sinking", "moving", "descending")),
}
_SCENE_WORDS = {  # scene labels (BMD "scenes") as in a places classifier
    "stripes": ("wall", "indoor room", "curtain", "wallpaper", "fence"),
    "tiles": ("tiled floor", "bathroom", "kitchen", "game room", "checkerboard"),
    "sky": ("sky", "outdoor", "horizon", "open air", "clouds"),
    "sand": ("desert", "beach", "dune", "sand", "outdoor"),
}
_BACKGROUND_PHRASES = {  # how each caption names the background
    "stripes": ("striped wall", "background of diagonal stripes", "striped pattern", "striped wallpaper", "striped backdrop"),
    "tiles": ("tiled floor", "checkerboard", "checkered pattern", "chessboard-like floor", "tiled background"),
    "sky": ("blue sky", "cloudy sky", "bright sky", "sky with soft clouds", "pale blue sky"),
    "sand": ("sandy desert", "sand dune", "sandy ground", "patch of sand", "stretch of desert sand"),
}

EARLY_ROIS = frozenset({"V1", "V2", "V3", "V4"})
DORSAL_ROIS = frozenset({"MT", "MST", "V6", "V3A", "V3B", "V7", "IPS1", "LIPv", "VIP", "MIP", "IP0", "IP1", "IP2"})
FEATURE_GROUPS = ("category", "motion", "pixel")
PIXEL_GRID = 4
SMOOTH_SIGMA = 8.0  # vertices
SUBJECT_MIX = 0.3
# Stimuli are lossless H.264 (CRF 0): every process decodes the very frames rendered. At CRF 18 two processes under CPU
# load wrote other bytes and other decoded pixels for 10 of 48 clips (bench/results_demo.md), so the fits moved.
STIMULUS_CRF = 0
REPEATS = {"train": DEMO.repeats["train"], "test": DEMO.repeats["test"]}

README = """SYNTHETIC DATA - NOT fMRI, NOT BOLD Moments.

This folder was written by utils.synthetic.make_demo (python download_data.py --dataset demo).
It imitates the BOLD Moments (BMD) file formats so that the whole brain2video pipeline runs
offline, but every video is procedurally generated (a coloured shape moving over a textured
background) and every "fMRI" value comes from a known synthetic encoding model:
stimulus features (shape, colour and background one-hots; motion direction and velocity; a
4x4 RGB pixel summary of each half of the video), standardised, times fixed random weights
that are smooth along the vertex index within each Group41 ROI, plus Gaussian noise at a
per-trial signal-to-noise ratio (signal variance / noise variance per vertex) of {snr}.
Each subject mixes shared weights with its own (mix {mix}). Vertices are z-scored with the
train-trial mean and std, like the real z=1 files.

Settings: seed {seed}, {n_subjects} subjects, {n_train} train stimuli (3 repeats),
{n_test} test stimuli (10 repeats), {size}x{size} px, {n_frames} frames at {fps} fps.
The generating features are in encoding_model.npz. Results on this dataset only show that
information flows through the pipeline; they say nothing about real brains.
"""


@dataclass(frozen=True)
class Design:
    """What one synthetic video shows; the jitter values are in units of the frame size."""

    shape: str
    colour: str
    motion: str
    background: str
    radius: float
    offset: float
    texture_phase: float
    texture_scale: float


def draw_designs(n: int, rng: np.random.Generator) -> list[Design]:
    """``n`` random stimulus designs (categories uniform, jitter uniform)."""
    designs = []
    colours = list(COLOURS)
    motions = list(MOTIONS)
    for _ in range(n):
        designs.append(
            Design(
                shape=SHAPES[rng.integers(len(SHAPES))],
                colour=colours[rng.integers(len(colours))],
                motion=motions[rng.integers(len(motions))],
                background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
                radius=float(rng.uniform(0.11, 0.17)),
                offset=float(rng.uniform(-0.2, 0.2)),
                texture_phase=float(rng.uniform(0, 2 * np.pi)),
                texture_scale=float(rng.uniform(0.8, 1.25)),
            )
        )
    return designs


def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field in [0, 1], (size, size), from a coarse grid upsampled bilinearly."""
    coarse = rng.random((cells + 1, cells + 1))
    pos = np.linspace(0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    frac = pos - i0
    rows = coarse[i0] * (1 - frac)[:, None] + coarse[i0 + 1] * frac[:, None]  # (size, cells+1)
    return rows[:, i0] * (1 - frac)[None, :] + rows[:, i0 + 1] * frac[None, :]


def render_background(design: Design, size: int, rng: np.random.Generator) -> np.ndarray:
    """Static textured background float32 (size, size, 3) in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if design.background == "stripes":
        angle = design.texture_phase
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * design.texture_scale * (x * np.cos(angle) + y * np.sin(angle)))
        a, b = np.array([0.85, 0.85, 0.80]), np.array([0.20, 0.40, 0.45])
    elif design.background == "tiles":
        n = 5 * design.texture_scale
        wave = ((np.floor(x * n + design.texture_phase) + np.floor(y * n)) % 2).astype(np.float32)
        wave = 0.15 + 0.7 * wave
        a, b = np.array([0.92, 0.88, 0.75]), np.array([0.45, 0.30, 0.20])
    elif design.background == "sky":
        clouds = _smooth_noise(size, 4, rng)
        wave = np.clip(0.75 * y + 0.35 * clouds, 0, 1)
        a, b = np.array([0.95, 0.95, 0.98]), np.array([0.25, 0.50, 0.90])
    else:  # sand
        wave = 0.6 * _smooth_noise(size, 6, rng) + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * design.texture_scale * y + design.texture_phase))
        a, b = np.array([0.65, 0.45, 0.25]), np.array([0.93, 0.80, 0.55])
    return (wave[..., None] * a + (1 - wave[..., None]) * b).astype(np.float32)


def _shape_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Signed distance-like value in pixels, positive inside the shape centred at 0."""
    if shape == "circle":
        return r - np.sqrt(dx**2 + dy**2)
    if shape == "square":
        return 0.85 * r - np.maximum(np.abs(dx), np.abs(dy))
    if shape == "diamond":
        return 1.2 * r - (np.abs(dx) + np.abs(dy))
    big = 1.25 * r  # equilateral triangle pointing up, circumradius big
    edges = np.maximum(np.maximum(dy, 0.866 * dx - 0.5 * dy), -0.866 * dx - 0.5 * dy)
    return 0.5 * big - edges


def render_video(design: Design, size: int, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Render one design -> float32 (n_frames, size, size, 3) in [0, 1]."""
    background = render_background(design, size, rng)  # (H, W, 3)
    colour = np.asarray(COLOURS[design.colour], dtype=np.float32)
    vx, vy = MOTIONS[design.motion]
    travel = 0.6 * size
    t = np.linspace(-0.5, 0.5, n_frames, dtype=np.float32)  # (T,)
    cx = size / 2 + vx * travel * t + (1 - abs(vx)) * design.offset * size  # (T,)
    cy = size / 2 + vy * travel * t + (1 - abs(vy)) * design.offset * size
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx = x[None] - cx[:, None, None]  # (T, H, W)
    dy = y[None] - cy[:, None, None]
    alpha = np.clip(_shape_distance(design.shape, dx, dy, design.radius * size) + 0.5, 0, 1)[..., None]  # (T, H, W, 1)
    return (background[None] * (1 - alpha) + colour * alpha).astype(np.float32)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float [0, 1] frames -> uint8."""
    return np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)


def _block_mean(image: np.ndarray, grid: int) -> np.ndarray:
    """(H, W, C) -> (grid, grid, C) means over nearly equal blocks."""
    rows = np.linspace(0, image.shape[0], grid + 1).astype(int)[:-1]
    cols = np.linspace(0, image.shape[1], grid + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(image, rows, axis=0), cols, axis=1)
    counts = np.diff(np.append(rows, image.shape[0]))[:, None] * np.diff(np.append(cols, image.shape[1]))[None, :]
    return sums / counts[..., None]


def raw_features(design: Design, frames: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """Unstandardised features of one stimulus: (values (F,), names, groups)."""
    values, names, groups = [], [], []

    def add(group: str, name: str, value: float) -> None:
        values.append(float(value))
        names.append(name)
        groups.append(group)

    for shape in SHAPES:
        add("category", f"shape={shape}", design.shape == shape)
    for colour in COLOURS:
        add("category", f"colour={colour}", design.colour == colour)
    for background in BACKGROUNDS:
        add("category", f"background={background}", design.background == background)
    for motion in MOTIONS:
        add("motion", f"motion={motion}", design.motion == motion)
    add("motion", "velocity_x", MOTIONS[design.motion][0])
    add("motion", "velocity_y", MOTIONS[design.motion][1])
    half = max(1, len(frames) // 2)
    for part, chunk in (("first", frames[:half]), ("second", frames[half:] if len(frames) > 1 else frames)):
        grid = _block_mean(chunk.mean(axis=0), PIXEL_GRID)  # (4, 4, 3)
        for (i, j, c), value in np.ndenumerate(grid):
            add("pixel", f"pixel_{part}_{i}{j}{'rgb'[c]}", value)
    return np.asarray(values, dtype=np.float64), names, groups


def standardise_features(raw: np.ndarray, groups: list[str], train: np.ndarray) -> np.ndarray:
    """Z-score each feature with train rows, then scale each group by 1/sqrt(group size) -> float32."""
    mean = raw[train].mean(axis=0)
    std = raw[train].std(axis=0)
    out = (raw - mean) / np.where(std > 0, std, 1.0)
    group_array = np.asarray(groups)
    for group in FEATURE_GROUPS:
        mask = group_array == group
        out[:, mask] /= np.sqrt(max(1, mask.sum()))
    return out.astype(np.float32)


def roi_slices() -> list[tuple[str, slice]]:
    """(ROI name, slice of the ``ROI_SET`` vertex vector) for its ROIs, in order (Group41: 41 ROIs)."""
    out, start = [], 0
    for name in parse_roi_set(ROI_SET):
        n = roi_indices([name]).size
        out.append((name, slice(start, start + n)))
        start += n
    return out


def roi_gain(roi: str, group: str) -> float:
    """How strongly ROI ``roi`` is driven by feature group ``group`` (1.0 preferred, 0.3 otherwise)."""
    preferred = "pixel" if roi in EARLY_ROIS else "motion" if roi in DORSAL_ROIS else "category"
    return 1.0 if group == preferred else 0.3


def _smooth_weights(rng: np.random.Generator, groups: list[str]) -> np.ndarray:
    """Gaussian weights (F, 13156), smoothed within each ROI and scaled by ROI x group gains."""
    group_array = np.asarray(groups)
    slices = roi_slices()
    n_vertices = slices[-1][1].stop
    weights = rng.standard_normal((len(groups), n_vertices), dtype=np.float32)
    norm = np.sqrt(1.0 / (2 * np.sqrt(np.pi) * SMOOTH_SIGMA))  # std of white noise after the filter
    for roi, part in slices:
        block = gaussian_filter1d(weights[:, part], SMOOTH_SIGMA, axis=1, mode="nearest") / norm
        for group in FEATURE_GROUPS:
            block[group_array == group] *= roi_gain(roi, group)
        weights[:, part] = block
    return weights


def encoding_weights(seed: int, groups: list[str], subject: int) -> np.ndarray:
    """Subject ``subject``'s weights float32 (F, 13156): shared weights mixed with its own."""
    shared = _smooth_weights(np.random.default_rng([seed, 1]), groups)
    own = _smooth_weights(np.random.default_rng([seed, 2, subject]), groups)
    return (np.sqrt(1 - SUBJECT_MIX) * shared + np.sqrt(SUBJECT_MIX) * own).astype(np.float32)


def simulate_betas(
    features: np.ndarray, weights: np.ndarray, n_train: int, snr: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Trial betas from the encoding model, z-scored per vertex with train trials.

    features (n_train + n_test, F), weights (F, V) -> train (n_train, 3, V), test (n_test, 10, V) float32.
    """
    signal = features @ weights  # (N, V)
    std = signal[:n_train].std(axis=0)
    signal = signal / np.where(std > 0, std, 1.0) * np.float32(np.sqrt(snr))
    train = signal[:n_train, None] + rng.standard_normal((n_train, REPEATS["train"], signal.shape[1]), dtype=np.float32)
    test = signal[n_train:, None] + rng.standard_normal((len(signal) - n_train, REPEATS["test"], signal.shape[1]), dtype=np.float32)
    flat = train.reshape(-1, train.shape[-1])
    mean, scale = flat.mean(axis=0), flat.std(axis=0, ddof=1)
    scale = np.where(scale > 0, scale, 1.0)
    return ((train - mean) / scale).astype(np.float32), ((test - mean) / scale).astype(np.float32)


def annotation(design: Design, split: str, name: str, rng: np.random.Generator) -> dict:
    """One BMD-format annotation entry describing ``design``."""
    shape_words = _SHAPE_WORDS[design.shape]
    towards, towards_short, across, verbs = _MOTION_WORDS[design.motion]
    scenes = _SCENE_WORDS[design.background]
    bg = _BACKGROUND_PHRASES[design.background]
    c = design.colour
    captions = [
        f"A {c} {design.shape} moves {towards} across a {bg[0]}.",
        f"A {c} {shape_words[1]} slides {towards_short} in front of a {bg[1]}.",
        f"Animation of a {c} {shape_words[2]} travelling {across} over a {bg[2]}.",
        f"A simple {c} {shape_words[3]} glides {towards} on a {bg[3]}.",
        f"The {c} {design.shape} is {verbs[0]} against a {bg[4]}.",
    ]
    return {
        "bmd_matrixfilename": f"vid_idx{name}",
        "MiT_url": "",
        "MiT_filename": f"synthetic/{name}.mp4",
        "set": split,
        "objects": [design.shape, f"{c} {design.shape}", shape_words[1], shape_words[2], "geometric shape"],
        "scenes": list(scenes),
        "actions": list(verbs),
        "text_descriptions": captions,
        "spoken_transcription": f"a {c} {design.shape} going {towards_short}",
        "memorability_score": round(float(rng.uniform(0.6, 0.95)), 6),
        "memorability_decay": round(float(rng.uniform(-0.006, -0.0005)), 8),
    }


def caption_words() -> list[str]:
    """Every word the demo's captions use (lower case, in first-use order): a demo tokenizer's vocabulary."""
    import re

    texts = [
        "a an the moves slides in front of animation travelling over simple glides on is against across",
        " ".join(COLOURS), " ".join(SHAPES),
        *(" ".join(words) for words in _SHAPE_WORDS.values()),
        *(" ".join(w if isinstance(w, str) else " ".join(w) for w in words) for words in _MOTION_WORDS.values()),
        *(" ".join(words) for words in _BACKGROUND_PHRASES.values()),
    ]
    words: list[str] = []
    for text in texts:
        for word in re.findall(r"[a-z]+", text.lower()):
            if word not in words:
                words.append(word)
    return words


DEMO_FLAGS = ("n_subjects", "n_train", "n_test", "size", "n_frames", "fps", "snr")


def add_demo_arguments(parser: argparse.ArgumentParser, help_prefix: str = "demo: ") -> None:
    """Add the size flags of ``make_demo`` (``--n-subjects`` ... ``--snr``, its defaults) to ``parser``."""
    flags = [
        ("--n-subjects", positive_int, 2, "number of subjects"),
        ("--n-train", positive_int, 120, "train videos"),
        ("--n-test", positive_int, 24, "test videos"),
        ("--size", positive_int, 64, "video side in pixels"),
        ("--n-frames", positive_int, 24, "frames per video"),
        ("--fps", positive_int, 8, "frame rate"),
        ("--snr", nonnegative_float, 1.0, "signal-to-noise ratio of the synthetic fMRI"),
    ]
    for flag, kind, default, text in flags:
        parser.add_argument(flag, type=kind, default=default, help=f"{help_prefix}{text} (default: %(default)s)")


def demo_command(data_root: str | Path | None, n_subjects: int | None = None, overwrite: bool = False) -> str:
    """The command that makes the demo under ``data_root`` with the sizes recorded there (``n_subjects`` changed when given)."""
    config = read_json(layout.demo_config_path(data_root, DEMO.name), default={}) or {}
    if n_subjects is not None:
        config = {**config, "n_subjects": n_subjects}
    flags = "".join(f" --{name.replace('_', '-')} {config[name]}" for name in DEMO_FLAGS if name in config)
    seed = f" --seed {config['seed']}" if config.get("seed") else ""
    root = f" --data-root {data_root}" if data_root is not None else ""
    return f"python download_data.py --dataset {DEMO.name}{root}{flags}{seed}{' --overwrite' if overwrite else ''}"


def demo_subjects(data_root: str | Path | None) -> int | None:
    """How many subjects the demo under ``data_root`` was generated with (None: no demo there)."""
    config = read_json(layout.demo_config_path(data_root, DEMO.name))
    return None if config is None else int(config["n_subjects"])


def missing_demo_subject(data_root: str | Path | None, subject: int) -> str:
    """Why a demo subject's pickle is missing and the command that makes it."""
    n_subjects = demo_subjects(data_root)
    if n_subjects is None:
        return f"there is no demo under {layout.root(data_root)}: make it with `{demo_command(data_root, max(subject, 2))}` first."
    if subject > n_subjects:
        return (
            f"the demo under {layout.root(data_root)} has subjects 1..{n_subjects} as generated "
            f"({layout.demo_config_path(data_root, DEMO.name)}); make {subject} with "
            f"`{demo_command(data_root, subject, overwrite=True)}`."
        )
    return f"rerun `{demo_command(data_root)}` to write it again."


def check_demo_subjects(data_root: str | Path | None, subjects: list[int]) -> None:
    """Refuse, before any work, demo subjects beyond those generated, or any when there is no demo (the
    message names the command that makes them); pass the subjects whose pickle is missing."""
    missing = [s for s in subjects if demo_subjects(data_root) is None or s > demo_subjects(data_root)]
    if missing:
        raise ValueError(f"Subject(s) {missing} of the demo do not exist: {missing_demo_subject(data_root, max(missing))}")


def check_demo_subject_flags(subjects: list[str] | None, n_subjects: int) -> list[int]:
    """The ``--subjects`` of a demo synthesis (``--n-subjects n_subjects``) as numbers; a label that is not
    one of 1..n_subjects raises ValueError naming the flag, the labels and the valid range."""
    numbers, bad = [], []
    for label in subjects or []:
        try:
            number = parse_subject(label)
        except ValueError:
            number = None
        if number is None or number > n_subjects:
            bad.append(str(label))
        else:
            numbers.append(number)
    if bad:
        raise ValueError(
            f"--subjects {' '.join(bad)}: the demo has subjects 1..{n_subjects} (--n-subjects {n_subjects}); "
            "give subjects in that range, or more with --n-subjects."
        )
    return numbers


def demo_settings(args: argparse.Namespace) -> dict:
    """The ``make_demo`` keyword arguments from flags added by ``add_demo_arguments``."""
    return {name: getattr(args, name) for name in DEMO_FLAGS}


def _check_args(n_subjects: int, n_train: int, n_test: int, size: int, n_frames: int, fps: float, snr: float) -> None:
    """Raise ValueError naming the first bad parameter."""
    checks = [
        ("n_subjects", n_subjects, n_subjects >= 1, ">= 1"),
        ("n_train", n_train, n_train >= 2, ">= 2"),
        ("n_test", n_test, n_test >= 2, ">= 2"),
        ("n_train + n_test", n_train + n_test, n_train + n_test <= 9999, "<= 9999 (4-digit names)"),
        ("size", size, size >= 8, ">= 8"),
        ("n_frames", n_frames, n_frames >= 2, ">= 2"),
        ("fps", fps, fps > 0, "> 0"),
        ("snr", snr, snr > 0, "> 0"),
    ]
    for name, value, ok, rule in checks:
        if not ok:
            raise ValueError(f"make_demo: {name}={value!r} is invalid; it must be {rule}.")


def _write_pickle(path: Path, payload: dict) -> None:
    """Atomically pickle (protocol 4) a dict of numpy arrays."""
    with atomic_path(path, suffix=".tmp.pkl") as tmp, open(tmp, "wb") as handle:
        pickle.dump(payload, handle, protocol=4)


def _remove_stale(data_root: str | Path | None, names: list[str], n_subjects: int) -> list[Path]:
    """Delete demo videos and subject pickles beyond the current settings (on overwrite)."""
    removed = []
    video_dir = stimulus_path(data_root, DEMO, names[0]).parent
    keep = set(names)
    for path in sorted(video_dir.glob("[0-9][0-9][0-9][0-9].mp4")):
        if path.stem not in keep:
            removed.append(path)
    betas_root = layout.dataset_betas_dir(data_root, DEMO.name)
    for folder in sorted(betas_root.glob("sub[0-9][0-9]")):
        if int(folder.name[3:]) > n_subjects:
            path = layout.pickle_path(data_root, DEMO.name, folder.name, ROI_SET, DEMO.suffix)
            if path.exists():
                removed.append(path)
    for path in removed:
        path.unlink()
    return removed


def make_demo(
    data_root: str | Path | None,
    n_subjects: int = 2,
    n_train: int = 120,
    n_test: int = 24,
    size: int = 64,
    n_frames: int = 24,
    fps: float = 8,
    snr: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write the synthetic demo dataset (see the module docstring); returns a summary dict.

    Existing outputs are kept unless ``overwrite``; an existing demo made with other
    settings raises ValueError unless ``overwrite``.
    """
    _check_args(n_subjects, n_train, n_test, size, n_frames, fps, snr)
    start = time.perf_counter()
    config = {
        "seed": seed, "n_subjects": n_subjects, "n_train": n_train, "n_test": n_test,
        "size": size, "n_frames": n_frames, "fps": fps, "snr": snr,
    }
    config_path = layout.demo_config_path(data_root, DEMO.name)
    previous = read_json(config_path)
    if previous is not None and previous != config and not overwrite:
        raise ValueError(
            f"{config_path}: the demo in {layout.root(data_root)} was made with {previous}, not {config}; "
            f"add --overwrite to make it again with the asked settings (`python download_data.py --dataset demo{layout.root_flag(data_root)} "
            "... --overwrite`), or use another --data-root."
        )

    write_json(config_path, config)  # first, so a crash leaves the settings of what was written

    n_total = n_train + n_test
    names = [numbered_stimulus(i + 1) for i in range(n_total)]
    splits = ["train"] * n_train + ["test"] * n_test
    video_paths = [stimulus_path(data_root, DEMO, name) for name in names]
    notes_path = layout.annotations_path(data_root, DEMO.name)
    model_path = layout.encoding_model_path(data_root, DEMO.name)
    readme_path = layout.demo_readme_path(data_root, DEMO.name)
    pickles = [layout.pickle_path(data_root, DEMO.name, subject_folder(s), ROI_SET, DEMO.suffix) for s in range(1, n_subjects + 1)]
    removed = _remove_stale(data_root, names, n_subjects) if overwrite else []
    complete = not overwrite and all(p.exists() for p in [*video_paths, notes_path, model_path, readme_path, *pickles])

    videos_written = pickles_written = 0
    if not complete:
        design_rng = np.random.default_rng([seed, 0])
        designs = draw_designs(n_total, design_rng)
        raws = []
        for path, design in zip(video_paths, designs, strict=True):
            frames = render_video(design, size, n_frames, design_rng)  # (T, H, W, 3) float
            values, feature_names, groups = raw_features(design, frames)
            raws.append(values)
            if overwrite or not path.exists():
                write_mp4(path, to_uint8(frames), fps, crf=STIMULUS_CRF)
                videos_written += 1
        raw = np.stack(raws)  # (N, F)
        features = standardise_features(raw, groups, np.arange(n_total) < n_train)  # (N, F)

        notes_rng = np.random.default_rng([seed, 4])
        if overwrite or not notes_path.exists():
            write_json(notes_path, {n: annotation(d, s, n, notes_rng) for n, d, s in zip(names, designs, splits, strict=True)})
        if overwrite or not model_path.exists():
            with atomic_path(model_path, suffix=".tmp.npz") as tmp:
                np.savez(
                    tmp, stimuli=np.asarray(names), split=np.asarray(splits), features=features, raw_features=raw,
                    feature_names=np.asarray(feature_names), feature_groups=np.asarray(groups),
                    shape=np.asarray([d.shape for d in designs]), colour=np.asarray([d.colour for d in designs]),
                    motion=np.asarray([d.motion for d in designs]), background=np.asarray([d.background for d in designs]),
                    snr=np.float64(snr), seed=np.int64(seed), subject_mix=np.float64(SUBJECT_MIX),
                    smooth_sigma=np.float64(SMOOTH_SIGMA), roi_set=np.asarray(ROI_SET),
                )
        if overwrite or not readme_path.exists():
            write_text(readme_path, README.format(snr=snr, mix=SUBJECT_MIX, **{k: v for k, v in config.items() if k != "snr"}))

        roi_indices_hcp = np.asarray(get_roi_set(ROI_SET), dtype=np.int64)
        for subject, path in enumerate(pickles, start=1):
            if path.exists() and not overwrite:
                continue
            weights = encoding_weights(seed, groups, subject)  # (F, V)
            train, test = simulate_betas(features, weights, n_train, snr, np.random.default_rng([seed, 3, subject]))
            _write_pickle(path, {"train_data_allvoxel": train, "test_data_allvoxel": test, "roi_indices_hcp": roi_indices_hcp})
            pickles_written += 1

    return {
        "data_root": str(layout.root(data_root)),
        "dataset": DEMO.name,
        "synthetic": True,
        **config,
        "stimuli_dir": str(video_paths[0].parent),
        "annotations": str(notes_path),
        "encoding_model": str(model_path),
        "readme": str(readme_path),
        "pickles": [str(p) for p in pickles],
        "videos_written": videos_written,
        "videos_skipped": n_total - videos_written,
        "pickles_written": pickles_written,
        "pickles_skipped": n_subjects - pickles_written,
        "stale_removed": [str(p) for p in removed],
        "seconds": round(time.perf_counter() - start, 3),
    }
