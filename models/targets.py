"""Regression targets from stimulus videos: Zeroscope VAE latents, BLIP and CLIP embeddings.

Every target starts from the same 15 frames per video, picked by ``linspace`` over all
decoded frames (``utils.video.sample_frames``; rounded, or floored with ``--frame-sampling
floor`` as the original), so variable frame rates never matter. Resizing is bilinear with
antialiasing unless ``--no-resize-antialias`` (the original's). ``--recipe original`` sets
these and the other settings of models/recipes.py at once.

- ``z_zeroscope`` (:func:`vae_latents`): frames resized (squashed) to ``size`` x ``size``
  (268 for the real preset), scaled to [-1, 1], VAE-encoded, times
  ``vae.config.scaling_factor`` -> float32 (15, 4, size/8, size/8), (15, 4, 33, 33) at 268;
  stored as ``--z-dtype`` (float32, or float16 as the original).
  ``mode="mean"`` (the default, ``ZeroscopeTargetSettings.latent``) takes the posterior mean.
  The original pipeline took ``latent_dist.sample()`` (unseeded); here ``mode="sample"`` draws
  the posterior noise from a generator seeded per stimulus (:func:`utils.seeds.stimulus_seed`),
  so results do not depend on batching or order and a rerun gives the same numbers.
- ``blip`` (:func:`blip_embeddings`): frames resized (squashed) to the BLIP size (240 real),
  in [0, 1], then BLIP's normalisation (mean/std of CLIP; the original skipped it:
  ``--no-blip-normalize``), through the BLIP vision encoder
  with position embeddings interpolated; last hidden state averaged over the 15 frames ->
  float32 (tokens, dim), (226, 768) for BLIP base at 240.
- ``clip`` / ``clip_frames`` (:func:`clip_image_embeddings`): frames resized by their
  shortest side and centre-cropped to the CLIP size (224 real), normalised like CLIP's
  processor; the projected image embeddings (not L2-normalised) per frame (15, dim) and
  their mean (dim,).
- ``clip_text`` (:func:`clip_text_embeddings`): projected CLIP text embeddings (not
  L2-normalised) of a stimulus' human captions, averaged -> (dim,).
- ``c_zeroscope`` (:func:`zeroscope_text_states`): the Zeroscope text encoder's last hidden
  state of a stimulus' captions (padded to 77 tokens, as reconstruction encodes prompts),
  averaged over the captions -> float32 (77, D), (77, 1024) for the real encoder.

Every target folder carries ``settings.json`` (``utils.provenance``): the recipe and the
settings that determine its files (:func:`target_settings`); ``utils.targets`` checks it
before writing and before reading.

:func:`iter_loaded` decodes videos in background threads while the model runs, and
:func:`run_batches` drives a per-batch callback, turning undecodable videos into per-stimulus
failures (``VideoDecodeError`` naming the file) instead of stopping the run. Videos are
decoded frame by frame and only the picked frames are kept, already at the target size
(``utils.video.sample_views``), so memory does not grow with the resolution or length.

Short videos (fewer decoded frames than the 15 sampled) are allowed: their targets repeat
frames by the linspace rule, as the original code's did; each such video is warned about
once (one line) and recorded in the folder's manifest (``short_videos``: {stimulus: frames}).
Missing videos (a partial download) are counted in one line that names the first few and the
command that fetches them (:func:`split_missing`, :func:`print_summary`); the manifest's
``failed`` keeps every stimulus that failed or was missing in any run until its target is
written (:func:`carry_over`). A missing or undecodable video makes the exit status 1.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.recipes import DEFAULT_RECIPE, FRAME_SAMPLING, RECIPES, Z_DTYPES, get_recipe
from utils import layout
from utils.cli import positive_int
from utils.datasets import (
    annotations_path,
    download_command,
    get_spec,
    has_annotations,
    list_stimuli,
    load_annotations,
    stimulus_path,
)
from utils.io import read_captions, read_json, remove_stale_temps
from utils.locks import run_lock
from utils.seeds import stimulus_seed
from utils.video import SampledVideo, VideoDecodeError, resize_frames, sample_frames, sample_views

N_FRAMES = 15
SUBSETS = ("train", "test", "all")
LATENT_MODES = ("mean", "sample")
DEFAULT = get_recipe(DEFAULT_RECIPE)
# The recipe fields (models/recipes.py) that determine each target's files.
RECIPE_FIELDS = {
    "z_zeroscope": ("frame_sampling", "resize_antialias", "latent", "z_dtype"),
    "blip": ("frame_sampling", "resize_antialias", "blip_normalize", "caption_beams", "caption_slash_to_space"),
    "clip": ("frame_sampling", "resize_antialias"),
    "clip_frames": ("frame_sampling", "resize_antialias"),
    "clip_text": (),
    "c_zeroscope": (),
}


@dataclass(frozen=True)
class ZeroscopeTargetSettings:
    """How ``extract_targets_zeroscope.py`` makes latents (its flags read their defaults here).

    size: square frame size before encoding, None = the preset's (``zoo.zeroscope_frame_size``);
    latent: ``mean`` (posterior mean) or ``sample`` (seeded per stimulus, as the original);
    frames_per_forward: frames per VAE encoder call (bounds memory); workers: decoding threads.
    """

    size: int | None = None
    latent: str = DEFAULT.latent
    frames_per_forward: int = 60
    workers: int = 2


@dataclass(frozen=True)
class BlipTargetSettings:
    """How ``extract_targets_blip.py`` makes BLIP/CLIP targets (its flags read their defaults here).

    image_size: BLIP input size, None = the preset's (``zoo.blip_image_size``); blip_normalize:
    BLIP's mean/std after scaling to [0, 1]; captions / clip: also write captions.json / the CLIP
    embeddings; workers: decoding threads. Caption decoding settings are ``CaptionSettings``.
    """

    image_size: int | None = None
    blip_normalize: bool = DEFAULT.blip_normalize
    captions: bool = True
    clip: bool = True
    workers: int = 2


@dataclass(frozen=True)
class Job:
    """One stimulus to process: its canonical name and video file."""

    stimulus: str
    video: Path


@dataclass
class RunStats:
    """What a run did: counts, failures {stimulus: message}, missing videos, short videos
    {stimulus: decoded frames} and timings (seconds)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # {stimulus: its absent video file}
    short: dict[str, int] = field(default_factory=dict)
    decode_s: float = 0.0  # summed over decode threads
    wait_s: float = 0.0  # main thread waiting for decoded videos
    model_s: float = 0.0  # main thread inside the batch callback (models + writes)
    wall_s: float = 0.0

    def counts(self) -> dict[str, Any]:
        """Counts and timings for a manifest."""
        return {
            "written": len(self.written), "skipped": len(self.skipped), "failed": len(self.failed),
            "missing": len(self.missing), "short": len(self.short),
            "decode_s": round(self.decode_s, 3), "wait_s": round(self.wait_s, 3),
            "model_s": round(self.model_s, 3), "wall_s": round(self.wall_s, 3),
        }


# ---------------------------------------------------------------- planning


def plan_jobs(
    data_root: str | Path | None, dataset: str, subset: str = "all", stimuli: Sequence[str] | None = None, limit: int | None = None
) -> list[Job]:
    """Stimuli of ``subset`` (or the explicit ``stimuli``), first ``limit`` of them, with video paths.

    Raises FileNotFoundError naming the command that makes a missing stimuli folder, and
    ``ArtifactError`` naming a corrupt annotations.json.
    """
    spec = get_spec(dataset)
    if subset not in SUBSETS:
        raise ValueError(f"Unknown subset={subset!r}; use one of {list(SUBSETS)}.")
    folder = layout.stimuli_dir(data_root, dataset)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Stimuli folder {folder} is missing: run `{fetch_command(dataset, data_root)}` first."
        )
    if has_annotations(dataset) and annotations_path(data_root, dataset).exists():
        read_annotations(data_root, dataset)  # the stimulus lists come from it: a corrupt file is named here
    names = list(stimuli) if stimuli else list_stimuli(spec, subset, data_root)
    if limit is not None:
        names = names[:limit]
    return [Job(name, stimulus_path(data_root, spec, name)) for name in names]


def split_done(jobs: Sequence[Job], complete: Callable[[str], bool], overwrite: bool = False) -> tuple[list[Job], list[str]]:
    """(jobs to run, names skipped): a job is skipped when ``complete(stimulus)`` and not ``overwrite``."""
    todo = [j for j in jobs if overwrite or not complete(j.stimulus)]
    pending = {j.stimulus for j in todo}
    return todo, [j.stimulus for j in jobs if j.stimulus not in pending]


def split_missing(jobs: Sequence[Job]) -> tuple[list[Job], dict[str, str]]:
    """(jobs whose video exists, {stimulus: video path} of those whose video does not)."""
    missing = {j.stimulus: str(j.video) for j in jobs if not j.video.exists()}
    return [j for j in jobs if j.stimulus not in missing], missing


def fetch_command(dataset: str, data_root: str | Path | None = None) -> str:
    """The command that fetches a dataset's stimulus videos."""
    return f"{download_command(get_spec(dataset), data_root=data_root)} --what stimuli"


def carry_over(previous: dict[str, Any], redone: Iterable[str], now: dict[str, Any]) -> dict[str, Any]:
    """A manifest record kept across runs: ``previous`` entries of stimuli not ``redone`` by this run, then ``now``'s."""
    redone = set(redone) | set(now)
    return dict(sorted(({k: v for k, v in previous.items() if k not in redone} | now).items()))


@contextlib.contextmanager
def lock_folders(directories: Sequence[Path], stage: str) -> Iterator[None]:
    """Hold the run lock (``utils.locks.run_lock``) of every folder this run writes, then delete the
    temporary files a killed run left in them (HAD's class subfolders included)."""
    with contextlib.ExitStack() as stack:
        for directory in directories:
            stack.enter_context(run_lock(directory, stage))
        for directory in directories:
            for folder in [directory, *sorted(p for p in Path(directory).rglob("*") if p.is_dir())]:
                remove_stale_temps(folder)
        yield


def previous_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest an earlier run left in a target folder ({} when none); a corrupt one is named."""
    return read_json(
        layout.manifest_path(directory), default={},
        remake="delete it (the next run writes it again, but forgets the failures it listed)",
    )


def changed_anything(previous: dict[str, Any], stats: RunStats) -> bool:
    """False for a rerun that found every stimulus complete and wrote, failed or missed none: its folder's manifest is
    kept as it is (so a finished folder on a read-only data root is skipped without a write)."""
    return not previous or bool(stats.written or stats.failed or stats.missing or stats.short)


def manifest_records(previous: dict[str, Any], stats: RunStats) -> dict[str, Any]:
    """``failed`` ({stimulus: message}, every failure or missing video of any run until the stimulus'
    target is written) and ``short_videos`` ({stimulus: decoded frames}) for a folder's manifest,
    carried over from the ``previous`` one (:func:`previous_manifest`, read before the run)."""
    done = set(stats.written) | set(stats.skipped)
    missing = {s: f"the video {path} does not exist" for s, path in stats.missing.items()}
    return {
        "failed": carry_over(previous.get("failed") or {}, done, missing | stats.failed),
        "short_videos": carry_over(previous.get("short_videos") or {}, stats.written, stats.short),
    }


# ---------------------------------------------------------------- frames


def to_unit_tensor(frames: np.ndarray, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1] on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return x.permute(0, 3, 1, 2).to(dtype) / 255.0


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Channel normalisation of (N, 3, H, W) in [0, 1]."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def resize_center_crop(frames: np.ndarray, size: int, antialias: bool = True) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, size, size, 3): shortest side to ``size``, then centre crop (CLIP)."""
    h, w = frames.shape[1:3]
    scale = size / min(h, w)
    rh, rw = max(size, round(h * scale)), max(size, round(w * scale))
    resized = resize_frames(frames, (rh, rw), antialias)
    top, left = (rh - size) // 2, (rw - size) // 2
    return np.ascontiguousarray(resized[:, top : top + size, left : left + size])


# ---------------------------------------------------------------- recipe flags

# For ``utils.cli.parse_args(..., bundle=RECIPE_BUNDLE)``: ``--recipe`` switches the defaults of the recipe flags.
RECIPE_BUNDLE = ("recipe", lambda name: get_recipe(name).flags())


def add_recipe_arguments(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    """``--recipe`` and the individual flags of the recipe ``fields`` a stage uses (dest = field name);
    their defaults are the default recipe's until ``--recipe`` switches them."""
    parser.add_argument(
        "--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES),
        help="target recipe: 'default' = this project's, 'original' = the original Brain Netflix code's; sets the defaults "
        "of the flags below (README table; an explicit flag still wins) (default: %(default)s)",
    )
    switch = argparse.BooleanOptionalAction
    flags: dict[str, tuple[str, dict[str, Any], str]] = {
        "frame_sampling": ("--frame-sampling", {"choices": FRAME_SAMPLING}, "linspace frame indices rounded, or floored as the original"),
        "resize_antialias": ("--resize-antialias", {"action": switch}, "antialiased bilinear resizing; --no-resize-antialias as the original"),
        "latent": ("--latent", {"choices": LATENT_MODES}, "posterior mean, or a sample seeded per stimulus as the original"),
        "z_dtype": ("--z-dtype", {"choices": Z_DTYPES}, "dtype of the stored latents; the original stored float16"),
        "blip_normalize": ("--blip-normalize", {"action": switch}, "BLIP's mean/std normalisation after scaling to [0, 1]; the original skipped it"),
        "caption_beams": ("--caption-beams", {"type": positive_int}, "beam width of caption decoding; 1 = greedy as the original"),
        "caption_slash_to_space": ("--caption-slash-to-space", {"action": switch}, "replace '/' in captions with a space as the original"),
    }
    for name in fields:
        option, kwargs, text = flags[name]
        parser.add_argument(option, dest=name, default=getattr(DEFAULT, name), help=f"{text} (default: by --recipe, %(default)s)", **kwargs)


def record_settings(target: str, flags: dict[str, Any], **facts: Any) -> dict[str, Any]:
    """The settings recorded for a target folder: the recipe name, the recipe fields that apply
    to ``target`` (their values from ``flags``, the parsed arguments) and ``facts`` (sizes,
    model source, preset, seed, frame count)."""
    return {"recipe": flags["recipe"], **{name: flags[name] for name in RECIPE_FIELDS[target]}, **facts}


# ---------------------------------------------------------------- captions


def read_annotations(data_root: str | Path | None, dataset: str) -> dict:
    """``metadata_<ds>/annotations.json``, checked (``utils.datasets.load_annotations``)."""
    return load_annotations(data_root, dataset)


def read_blip_captions(data_root: str | Path | None, dataset: str) -> dict[str, str]:
    """``target_vectors_<ds>/captions.json`` ({} when absent); a corrupt file is named with the command that remakes it."""
    return read_captions(
        layout.captions_path(data_root, dataset), default={},
        remake=f"delete it and rerun `python extract_targets_blip.py --dataset {dataset}{layout.root_flag(data_root)}` (it captions the stimuli again)",
    )


def dataset_annotations(data_root: str | Path | None, dataset: str) -> dict | None:
    """Human captions of datasets that have them (BMD, demo); None otherwise or when absent."""
    if not has_annotations(dataset):
        return None
    if not annotations_path(data_root, dataset).exists():
        print(f"note: {annotations_path(data_root, dataset)} is missing, so no human captions "
              f"(run `{download_command(get_spec(dataset), data_root=data_root)}` to get the annotations)")
        return None
    return read_annotations(data_root, dataset)


def conditioning_captions(data_root: str | Path | None, dataset: str, stimuli: Sequence[str]) -> tuple[dict[str, list[str]], str]:
    """``({stimulus: captions}, source)`` for ``c_zeroscope``: the human captions (annotations'
    ``text_descriptions``) where the dataset has them, else the BLIP captions of captions.json.
    Raises naming the stimuli without any caption and the command that makes them."""
    if has_annotations(dataset):
        if not annotations_path(data_root, dataset).exists():
            raise FileNotFoundError(
                f"{annotations_path(data_root, dataset)} is missing: c_zeroscope encodes the human captions; "
                f"run `{download_command(get_spec(dataset), data_root=data_root)}` first."
            )
        notes = read_annotations(data_root, dataset)
        captions, source = {s: human_captions(notes, s) for s in stimuli}, "annotations"
    else:
        blip = read_blip_captions(data_root, dataset)
        captions, source = {s: [blip[s]] if blip.get(s) else [] for s in stimuli}, "blip_captions"
    missing = [s for s, c in captions.items() if not c]
    if missing:
        where = annotations_path(data_root, dataset) if source == "annotations" else layout.captions_path(data_root, dataset)
        how = (
            f"`{download_command(get_spec(dataset), data_root=data_root)}`" if source == "annotations"
            else f"`python extract_targets_blip.py --dataset {dataset}{layout.root_flag(data_root)}`"
        )
        raise FileNotFoundError(
            f"No caption for {len(missing)} of {len(stimuli)} {dataset} stimuli in {where} (e.g. {missing[:5]}): "
            f"c_zeroscope encodes each stimulus' captions; run {how} first."
        )
    return captions, source


# ---------------------------------------------------------------- models


def latent_shape(vae: Any, size: int, n_frames: int = N_FRAMES) -> tuple[int, int, int, int]:
    """(frames, channels, h, w) of the latents of ``size`` x ``size`` frames for this VAE."""
    spatial = size
    for _ in range(len(vae.config.block_out_channels) - 1):  # stride-2 convs with (0, 1) padding
        spatial //= 2
    return n_frames, int(vae.config.latent_channels), spatial, spatial


@torch.inference_mode()
def vae_latents(
    vae: Any,
    videos: np.ndarray,
    stimuli: Sequence[str],
    mode: str = ZeroscopeTargetSettings.latent,
    seed: int = 0,
    frames_per_forward: int = ZeroscopeTargetSettings.frames_per_forward,
) -> np.ndarray:
    """Scaled VAE latents of uint8 videos (B, T, H, W, 3) -> float32 (B, T, C, H/8, W/8).

    ``mode="sample"`` adds posterior noise from a per-stimulus seeded generator; ``"mean"``
    uses the posterior mean. Frames go through the VAE ``frames_per_forward`` at a time.
    """
    if mode not in LATENT_MODES:
        raise ValueError(f"Unknown latent mode={mode!r}; use one of {list(LATENT_MODES)}.")
    param = next(vae.parameters())
    b, t = videos.shape[:2]
    flat = videos.reshape(b * t, *videos.shape[2:])  # (B*T, H, W, 3)
    means, stds = [], []
    for start in range(0, len(flat), frames_per_forward):
        x = to_unit_tensor(flat[start : start + frames_per_forward], param.device, param.dtype) * 2 - 1  # (n, 3, H, W)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    mean = torch.cat(means).view(b, t, *means[0].shape[1:])  # (B, T, C, h, w)
    if mode == "sample":
        std = torch.cat(stds).view_as(mean)
        noise = torch.stack([
            torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(stimulus_seed(seed, s))) for s in stimuli
        ]).to(mean.device)
        mean = mean + std * noise
    return (mean * vae.config.scaling_factor).cpu().numpy().astype(np.float32)


@torch.inference_mode()
def blip_embeddings(
    model: Any, videos: np.ndarray, mean: Sequence[float], std: Sequence[float], normalize_inputs: bool = True
) -> np.ndarray:
    """BLIP vision last hidden state averaged over frames: uint8 (B, T, S, S, 3) -> float32 (B, tokens, dim)."""
    param = next(model.parameters())
    b, t = videos.shape[:2]
    x = to_unit_tensor(videos.reshape(b * t, *videos.shape[2:]), param.device, torch.float32)  # (B*T, 3, S, S)
    if normalize_inputs:
        x = normalize(x, mean, std)
    states = model.vision_model(pixel_values=x.to(param.dtype), interpolate_pos_encoding=True).last_hidden_state
    return states.float().view(b, t, *states.shape[1:]).mean(dim=1).cpu().numpy()


def _features(output: Any) -> torch.Tensor:
    """transformers 5 returns a model output with the projection in ``pooler_output``; older ones a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.inference_mode()
def clip_image_embeddings(model: Any, videos: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Projected CLIP image embeddings per frame: uint8 (B, T, S, S, 3) -> float32 (B, T, dim)."""
    param = next(model.parameters())
    b, t = videos.shape[:2]
    x = normalize(to_unit_tensor(videos.reshape(b * t, *videos.shape[2:]), param.device, torch.float32), mean, std)
    features = _features(model.get_image_features(pixel_values=x.to(param.dtype)))  # (B*T, dim)
    return features.float().view(b, t, -1).cpu().numpy()


@torch.inference_mode()
def clip_text_embeddings(model: Any, tokenizer: Any, captions: Sequence[Sequence[str]]) -> np.ndarray:
    """Projected CLIP text embeddings of each stimulus' captions, averaged -> float32 (B, dim)."""
    device = next(model.parameters()).device
    flat = [c for group in captions for c in group]
    if not flat:
        raise ValueError("clip_text_embeddings needs at least one caption.")
    tokens = tokenizer(flat, padding=True, truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt").to(device)
    features = _features(model.get_text_features(**tokens)).float().cpu()  # (sum n_i, dim)
    out, start = [], 0
    for group in captions:
        if not group:
            raise ValueError("Every stimulus needs at least one caption for clip_text_embeddings.")
        out.append(features[start : start + len(group)].mean(dim=0))
        start += len(group)
    return torch.stack(out).numpy()


@torch.inference_mode()
def zeroscope_text_states(text_encoder: Any, tokenizer: Any, captions: Sequence[Sequence[str]]) -> np.ndarray:
    """Zeroscope text-encoder last hidden states of each stimulus' captions (padded to the
    tokenizer's 77 tokens, as reconstruction encodes prompts), averaged -> float32 (B, 77, D)."""
    from models.video_diffusion import encode_prompts

    device = next(text_encoder.parameters()).device
    flat = [c for group in captions for c in group]
    if not flat or not all(captions):
        raise ValueError("zeroscope_text_states needs at least one caption per stimulus.")
    states = encode_prompts(text_encoder, tokenizer, flat, device).float().cpu()  # (sum n_i, 77, D)
    out, start = [], 0
    for group in captions:
        out.append(states[start : start + len(group)].mean(dim=0))
        start += len(group)
    return torch.stack(out).numpy()


def text_states_shape(text_encoder: Any, tokenizer: Any) -> tuple[int, int]:
    """(tokens, dim) of ``c_zeroscope``: (77, 1024) for the real Zeroscope text encoder."""
    return int(tokenizer.model_max_length), int(text_encoder.config.hidden_size)


# ---------------------------------------------------------------- running


def _timed(load: Callable[[Path], Any], path: Path) -> tuple[Any, float]:
    start = time.perf_counter()
    return load(path), time.perf_counter() - start


def iter_loaded(
    jobs: Iterable[Job], load: Callable[[Path], Any], workers: int = 2, lookahead: int = 16
) -> Iterator[tuple[Job, Any, VideoDecodeError | None, float]]:
    """Yield (job, loaded, error, seconds) in job order, decoding up to ``lookahead`` videos
    ahead in ``workers`` threads (``workers=0``: in this thread). Only VideoDecodeError is
    caught; any other error propagates."""
    if workers <= 0:
        for job in jobs:
            start = time.perf_counter()
            try:
                yield job, load(job.video), None, time.perf_counter() - start
            except VideoDecodeError as error:
                yield job, None, error, time.perf_counter() - start
        return
    pending: deque[tuple[Job, Future]] = deque()
    iterator = iter(jobs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        def submit_next() -> None:
            job = next(iterator, None)
            if job is not None:
                pending.append((job, pool.submit(_timed, load, job.video)))

        for _ in range(max(1, lookahead)):
            submit_next()
        while pending:
            job, future = pending.popleft()
            try:
                loaded, seconds = future.result()
                result = (job, loaded, None, seconds)
            except VideoDecodeError as error:
                result = (job, None, error, 0.0)
            submit_next()
            yield result


def run_batches(
    jobs: Sequence[Job],
    load: Callable[[Path], Any],
    process: Callable[[list[Job], list[Any]], None],
    batch_size: int,
    workers: int = 2,
    progress: Any = None,
) -> RunStats:
    """Decode ``jobs`` (in threads), call ``process(jobs, loaded)`` per batch of ``batch_size``.

    Undecodable videos land in ``stats.failed`` ({stimulus: message}) and the rest go on. A loaded
    ``SampledVideo`` with fewer frames than sampled is warned about (one line) and lands in
    ``stats.short``. ``progress`` (e.g. a tqdm bar) gets ``update(1)`` per stimulus.
    """
    stats = RunStats()
    start = time.perf_counter()
    batch_jobs: list[Job] = []
    batch_data: list[Any] = []

    def flush() -> None:
        if not batch_jobs:
            return
        t0 = time.perf_counter()
        process(list(batch_jobs), list(batch_data))
        stats.model_s += time.perf_counter() - t0
        stats.written.extend(j.stimulus for j in batch_jobs)
        if progress is not None:
            progress.update(len(batch_jobs))
        batch_jobs.clear()
        batch_data.clear()

    loaded_iter = iter_loaded(jobs, load, workers=workers, lookahead=max(2 * batch_size, workers))
    while True:
        t0 = time.perf_counter()
        item = next(loaded_iter, None)
        stats.wait_s += time.perf_counter() - t0
        if item is None:
            break
        job, data, error, seconds = item
        stats.decode_s += seconds
        if error is not None:
            stats.failed[job.stimulus] = str(error)
            if progress is not None:
                progress.update(1)
            continue
        if isinstance(data, SampledVideo) and data.is_short:
            stats.short[job.stimulus] = data.n_decoded
            print(f"warning: {job.video} has {data.n_decoded} frames, fewer than the {data.n_sampled} sampled: "
                  f"its targets repeat frames (allowed, recorded in the manifest's short_videos)")
        batch_jobs.append(job)
        batch_data.append(data)
        if len(batch_jobs) >= batch_size:
            flush()
    flush()
    stats.wall_s = time.perf_counter() - start
    return stats


def frame_loader(
    n_frames: int = N_FRAMES, transforms: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None, rounding: str = DEFAULT.frame_sampling
) -> Callable[[Path], Any]:
    """A loader: sample ``n_frames`` frames (uint8 (T, H, W, 3)) with ``rounding`` of the linspace
    indices; with ``transforms`` return a ``SampledVideo`` whose ``views`` are
    ``{name: transform(frames)}`` instead, each frame transformed as soon as it is decoded (in
    the decode threads; only one full-size frame is held at a time)."""

    def load(path: Path) -> Any:
        if transforms is None:
            return sample_frames(path, n_frames, rounding=rounding)  # (T, H, W, 3) uint8, native size
        return sample_views(path, n_frames, transforms, rounding)

    return load


def squash_resize(size: int, antialias: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Transform: resize frames to ``size`` x ``size`` ignoring aspect (as the original pipeline)."""
    return lambda frames: resize_frames(frames, size, antialias)


def center_crop(size: int, antialias: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Transform: shortest side to ``size`` then centre crop (CLIP's processor)."""
    return lambda frames: resize_center_crop(frames, size, antialias)


def human_captions(annotations: dict | None, stimulus: str) -> list[str]:
    """The human captions (``text_descriptions``) of a stimulus, or [] when there are none."""
    if not annotations or stimulus not in annotations:
        return []
    return [str(c) for c in annotations[stimulus].get("text_descriptions") or [] if str(c).strip()]


def missing_line(missing: dict[str, str], fetch: str, shown: int = 5) -> str:
    """One line for every missing video: the count, the first ``shown`` names, their folder and ``fetch``."""
    names = list(missing)
    first = ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
    folder = Path(next(iter(missing.values()))).parent
    return f"MISSING {len(names)} videos in {folder} ({first}): fetch them with `{fetch}`, then rerun"


def print_summary(stats: RunStats, out_dir: Path, fetch: str = "python download_data.py") -> int:
    """Print a run's closing lines (counts, timings, one line for the missing videos, each failure);
    return the exit status, 1 when some videos were missing or failed. ``fetch``: the command that
    fetches missing videos."""
    missing = f", missing {len(stats.missing)}" if stats.missing else ""
    short = f", {len(stats.short)} short (repeated frames)" if stats.short else ""
    print(f"wrote {len(stats.written)}, skipped {len(stats.skipped)} complete, failed {len(stats.failed)}{missing}{short} -> {out_dir}")
    print(f"time: decode {stats.decode_s:.1f}s (waited {stats.wait_s:.1f}s), model+write {stats.model_s:.1f}s, wall {stats.wall_s:.1f}s")
    if stats.missing:
        print(missing_line(stats.missing, fetch))
    for stim, message in stats.failed.items():
        print(f"FAILED {stim}: {message}")
    return 1 if stats.failed or stats.missing else 0
