"""Stage 4: reconstruct videos with Zeroscope from predicted latents and decoded captions.

Each clip: a caption (the BLIP text decoder on the predicted BLIP embedding, or the
ground-truth BLIP caption, or none) conditions Zeroscope video-to-video started from the
predicted latent: the latent is re-noised to ``--strength`` of a ``--steps``-step DPM-Solver
schedule and denoised with classifier-free guidance (empty negative prompt), then decoded by
the VAE (see models/video_diffusion.py). ``--condition c_zeroscope`` is the original's second
path: the UNet is conditioned directly on the predicted prompt embeddings (the Zeroscope text
encoder's states, (77, 1024)) instead of a decoded caption, with guidance against the
negative prompt's embedding, and that path's defaults (50 steps, strength 0.3; explicit
``--steps``/``--strength`` win). ``--recipe original`` decodes captions the original's way
(greedy, "/" replaced by a space; models/recipes.py). Several clips share each UNet forward
(``--batch-size``) for caption decoding and text encoding; the UNet and the VAE run one clip
at a time, and every clip has its own seed derived from ``--seed`` and its name, so a clip's
lossless frames are bit-identical (on CPU float32, tested) whatever the batch size, ``--limit``,
resume or number of processes. On a GPU, kernels may round differently from run to run, and
sampled captions (``--caption-sample``) draw from one generator per caption batch, so those
depend on the batch.

Reads (under --data-root):
    predictions/<run>/z_zeroscope/<stim>.npy   (15, 4, 33, 33) or flattened 65340    --z-from pred
    predictions/<run>/blip/<stim>.npy          (226, 768) or flattened 173568        --caption-from pred
    predictions/<run>/c_zeroscope/<stim>.npy   (77, 1024) or flattened 78848         --condition c_zeroscope --caption-from pred
    target_vectors_<ds>/z_zeroscope/<stim>.npy                                        --z-from gt
    target_vectors_<ds>/captions.json                                                 --caption-from gt
    target_vectors_<ds>/c_zeroscope/<stim>.npy (77, 1024)                             --condition c_zeroscope --caption-from gt
Writes reconstructions/<out>/ with frames/<stim>.npy (the frames, lossless uint8 (F, H, W, 3):
what evaluation reads), mp4/<stim>.mp4 (--fps) and gif/<stim>.gif (for viewing), captions.json
(stimulus -> caption used; "" with --condition c_zeroscope) and manifest.json. HAD names keep
their class subfolder. <out> is --output-run, or the predictions run when both inputs are
predicted, or ``<run>_z-<z>_caption-<c>`` for oracle mixes, or ``gt_<ds>`` (``--source
targets``: the ground-truth latents and captions, i.e. the ceiling set by the VAE and the
caption); with --condition c_zeroscope the same names end in ``_c_zeroscope``
(``<run>_c_zeroscope``, ``<run>_z-<z>_c_zeroscope-<c>``, ``gt_<ds>_c_zeroscope``).

The settings that determine the clips (steps, strength, guidance, negative prompt, seed,
condition and sources, caption decoding, fps, dtype, preset and model sources, the predictions
run and a digest of its recorded settings) are kept in settings.json. A rerun with the same
settings skips clips whose frames, mp4, gif and caption all exist (a clip's caption is recorded
before its files, so a killed run loses none); a rerun with other settings is refused with
the list of differences: pass --overwrite to redo the folder with the new settings, or choose
another --output-run. Every input file is checked before any work. Under
``accelerate launch`` (GPUs) or ``torchrun`` the clips are split across processes by process
index (``accelerate.PartialState``); captions of each process go to a part file that the main
process folds into captions.json at the end. Without a launcher it runs as one process.
(``accelerate launch --cpu`` starts a single process; for several CPU processes use
``torchrun --nproc-per-node N``, passing the run as ``--predictions``, which torchrun does not
confuse with its own ``--run-path``.)

Examples:
    python reconstruct_zeroscope.py --dataset bmd --run ridge_bmd_sub01
    python reconstruct_zeroscope.py --dataset bmd --run ridge_bmd_sub01 --caption-from gt
    python reconstruct_zeroscope.py --dataset bmd --source targets --limit 10
    python reconstruct_zeroscope.py --dataset bmd --run ridge_bmd_sub01 --condition c_zeroscope
    python reconstruct_zeroscope.py --dataset bmd --source targets --condition c_zeroscope --limit 10
    python reconstruct_zeroscope.py --dataset bmd --run ridge_bmd_sub01 --recipe original
    python reconstruct_zeroscope.py --dataset demo --preset tiny --run demo_ridge --limit 4
    accelerate launch --num_processes 4 reconstruct_zeroscope.py --dataset bmd --run ridge_bmd_sub01
    torchrun --nproc-per-node 2 reconstruct_zeroscope.py --dataset demo --preset tiny --predictions demo_ridge
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from tqdm import tqdm

from models import targets, zoo
from models.captioning import CaptionSettings, caption_embeddings, check_embedding, embedding_shape, strip_prompt
from models.recipes import DEFAULT_RECIPE, RECIPES, get_recipe
from models.video_diffusion import CONDITIONING_DEFAULTS, DiffusionSettings, VideoDiffusion, to_unet_layout
from utils import layout, provenance
from utils.cli import (
    common_parser,
    nonnegative_float,
    parse_args,
    positive_float,
    positive_int,
    resolve_device,
    resolve_dtype,
    run_main,
    run_name,
    unit_float,
)
from utils.datasets import check_stimuli, check_subjects, get_spec, list_stimuli
from utils.io import (
    check_finite,
    check_within,
    jsonable,
    load_npy,
    read_captions,
    read_json,
    remove_stale_temps,
    save_npy,
    write_json,
    write_manifest,
)
from utils.locks import run_lock
from utils.seeds import seed_everything, stimulus_seed
from utils.targets import as_stored_shape, check_targets_exist, target_settings
from utils.video import write_gif, write_mp4

STAGE = "reconstruct_zeroscope"
# What conditions the UNet, and the diffusion defaults of each path (the original's for both).
CONDITIONS = ("caption", "c_zeroscope")
DIFFUSION_DEFAULTS = {"caption": DiffusionSettings(), "c_zeroscope": CONDITIONING_DEFAULTS}
# The prediction/target folder each condition reads its text condition from.
CONDITION_TARGET = {"caption": "blip", "c_zeroscope": "c_zeroscope"}


def build_parser() -> argparse.ArgumentParser:
    """Common flags plus this stage's own."""
    parser = common_parser(__doc__, presets=zoo.PRESETS)
    parser.set_defaults(batch_size=4)
    caption, embeds = DIFFUSION_DEFAULTS["caption"], DIFFUSION_DEFAULTS["c_zeroscope"]
    recipe = get_recipe(DEFAULT_RECIPE)
    parser.add_argument("--run", "--predictions", dest="run", type=run_name, default=None, help="predictions run to reconstruct: predictions/<run>/ (default: none; needed unless --source targets)")
    parser.add_argument("--source", default="predictions", choices=("predictions", "targets"), help="default for --z-from/--caption-from: 'predictions' = pred, 'targets' = gt (default: %(default)s)")
    parser.add_argument("--z-from", default=None, choices=("pred", "gt"), help="initial latents: predicted or ground-truth (default: from --source)")
    parser.add_argument("--caption-from", default=None, choices=("pred", "gt", "none"), help="text condition: with --condition caption the caption decoded from the predicted BLIP embedding, the ground-truth BLIP caption, or none; with --condition c_zeroscope the predicted or the true c_zeroscope embeddings (none is refused) (default: from --source)")
    parser.add_argument("--condition", default="caption", choices=CONDITIONS, help="what conditions the UNet: a caption (encoded by the text encoder) or c_zeroscope prompt embeddings fed directly (default: %(default)s)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES), help="defaults of --caption-beams and --caption-slash-to-space: 'original' = the Brain Netflix code's (greedy, '/' -> space), see models/recipes.py (default: %(default)s)")
    parser.add_argument("--subset", default="test", choices=("train", "test", "all"), help="stimuli to reconstruct when nothing comes from predictions (default: %(default)s)")
    parser.add_argument("--output-run", type=run_name, default=None, help="output folder name under reconstructions/ (default: derived, see above)")
    parser.add_argument("--steps", type=positive_int, default=None, help=f"length of the DPM-Solver schedule (default: {caption.steps} with --condition caption, {embeds.steps} with c_zeroscope)")
    parser.add_argument("--strength", type=unit_float, default=None, help=f"how far the latents are re-noised, 0 = decode only, 1 = from pure noise (default: {caption.strength} with --condition caption, {embeds.strength} with c_zeroscope)")
    parser.add_argument("--guidance-scale", type=nonnegative_float, default=DiffusionSettings.guidance_scale, help="classifier-free guidance weight, <= 1 disables it (default: %(default)s)")
    parser.add_argument("--negative-prompt", default=DiffusionSettings.negative_prompt, help="text of the unconditional branch (default: empty)")
    parser.add_argument("--fps", type=positive_float, default=5.0, help="frame rate of the written mp4 and gif (default: %(default)s)")
    parser.add_argument("--decode-chunk", type=positive_int, default=DiffusionSettings.decode_chunk, help="frames per VAE decoder call, bounds memory (default: %(default)s)")
    parser.add_argument("--forward-chunking", action=argparse.BooleanOptionalAction, default=False, help="chunk the UNet feed-forward layers to lower peak memory (default: %(default)s)")
    parser.add_argument("--caption-beams", type=positive_int, default=recipe.caption_beams, help="beam width of caption decoding, 1 = greedy (default: from --recipe, %(default)s for the default recipe)")
    parser.add_argument("--caption-slash-to-space", action=argparse.BooleanOptionalAction, default=recipe.caption_slash_to_space, help="replace '/' with a space in decoded captions, as the original did (default: from --recipe, %(default)s for the default recipe)")
    parser.add_argument("--caption-max-length", type=positive_int, default=CaptionSettings.max_length, help="max caption tokens, prompt included (default: %(default)s)")
    parser.add_argument("--caption-min-length", type=positive_int, default=CaptionSettings.min_length, help="min caption tokens, prompt included (default: %(default)s)")
    parser.add_argument("--repetition-penalty", type=nonnegative_float, default=CaptionSettings.repetition_penalty, help="caption repetition penalty (default: %(default)s)")
    parser.add_argument("--caption-sample", action=argparse.BooleanOptionalAction, default=CaptionSettings.sample, help="nucleus sampling instead of beam search for captions (default: %(default)s)")
    parser.add_argument("--top-p", type=unit_float, default=CaptionSettings.top_p, help="nucleus mass when --caption-sample (default: %(default)s)")
    parser.add_argument("--zeroscope-path", default=None, help="local Zeroscope directory (default: the Hugging Face id through the cache)")
    parser.add_argument("--blip-path", default=None, help="local BLIP directory (default: the Hugging Face id through the cache)")
    return parser


def diffusion_settings(args: argparse.Namespace) -> DiffusionSettings:
    """The sampling settings: --steps/--strength when given, else the --condition path's defaults."""
    defaults = DIFFUSION_DEFAULTS[args.condition]
    return DiffusionSettings(
        steps=defaults.steps if args.steps is None else args.steps,
        strength=defaults.strength if args.strength is None else args.strength,
        guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt, decode_chunk=args.decode_chunk,
    )


def resolve_sources(args: argparse.Namespace) -> tuple[str, str]:
    """(z_from, caption_from) from the flags; raise when a predictions run is needed but not given."""
    default = "pred" if args.source == "predictions" else "gt"
    z_from = args.z_from or default
    caption_from = args.caption_from or default
    if args.condition == "c_zeroscope" and caption_from == "none":
        raise ValueError(
            "--caption-from none has no c_zeroscope embeddings to read (--condition c_zeroscope takes pred or gt); "
            "for an unconditioned reconstruction use --condition caption --caption-from none."
        )
    if "pred" in (z_from, caption_from) and not args.run:
        raise ValueError(
            f"--run is needed to read predictions (--z-from {z_from} --caption-from {caption_from}); "
            "pass --run <name of a predictions/<run>/ folder>, or --source targets for ground truth."
        )
    return z_from, caption_from


def output_name(args: argparse.Namespace, z_from: str, caption_from: str) -> str:
    """Folder name under reconstructions/ (never contains results); the c_zeroscope path's names end in ``_c_zeroscope``."""
    if args.output_run:
        return args.output_run
    if args.condition == "c_zeroscope":
        if z_from == caption_from:
            return f"gt_{args.dataset}_c_zeroscope" if z_from == "gt" else f"{args.run}_c_zeroscope"
        return f"{args.run}_z-{z_from}_c_zeroscope-{caption_from}"
    if z_from == "gt" and caption_from != "pred":
        return f"gt_{args.dataset}" if caption_from == "gt" else f"gt_{args.dataset}_caption-{caption_from}"
    if z_from == "pred" and caption_from == "pred":
        return args.run
    return f"{args.run}_z-{z_from}_caption-{caption_from}"


def list_npy(directory: Path) -> list[str]:
    """Stimulus names of the ``.npy`` files under ``directory`` (HAD class subfolders kept).

    The per-subject copies under ``by_subject/`` that regress.py writes are not stimuli.
    """
    names = (p.relative_to(directory) for p in directory.rglob("*.npy") if not p.name.startswith("."))
    return sorted(n.with_suffix("").as_posix() for n in names if n.parts[0] != layout.BY_SUBJECT)


def missing_predictions_error(data_root: str, run: str, target: str, dataset: str, missing: list[str] | None = None) -> FileNotFoundError:
    """The error for absent predictions, naming the command that makes them."""
    folder = layout.predictions_dir(data_root, run, target)
    runs_root = layout.predictions_root(data_root)
    runs = sorted(p.parent.name for p in runs_root.glob(f"*/{target}")) if runs_root.exists() else []
    what = f"Missing predictions {folder}" if missing is None else f"Predictions {folder} lack {len(missing)} stimuli (e.g. {missing[:5]})"
    return FileNotFoundError(
        f"{what}: run `python regress.py{layout.root_flag(data_root)} --target {target} --test-on {dataset} --run {run}` first. "
        f"Runs with {target} predictions: {runs or 'none'}."
    )


def select_stimuli(args: argparse.Namespace, z_from: str, caption_from: str) -> list[str]:
    """Stimuli to reconstruct, sorted; checks that every needed input exists."""
    root = args.data_root
    condition_target = CONDITION_TARGET[args.condition]
    if "pred" in (z_from, caption_from):
        target = "z_zeroscope" if z_from == "pred" else condition_target
        folder = layout.predictions_dir(root, args.run, target)
        stimuli = check_stimuli(get_spec(args.dataset), list_npy(folder) if folder.is_dir() else [], f"predictions folder {folder}")
        if not stimuli:
            raise missing_predictions_error(root, args.run, target, args.dataset)
    else:
        stimuli = list_stimuli(get_spec(args.dataset), args.subset, root)
    if z_from == "gt":
        missing = [s for s in stimuli if not layout.target_path(root, args.dataset, "z_zeroscope", s).exists()]
        if missing:
            raise FileNotFoundError(
                f"Ground-truth latents missing for {len(missing)} stimuli in {layout.targets_dir(root, args.dataset, 'z_zeroscope')} "
                f"(e.g. {missing[:5]}): run `python extract_targets_zeroscope.py --dataset {args.dataset}{layout.root_flag(root)}` first."
            )
    if caption_from == "pred" and z_from == "pred":
        missing = [s for s in stimuli if not layout.prediction_path(root, args.run, condition_target, s).exists()]
        if missing:
            raise missing_predictions_error(root, args.run, condition_target, args.dataset, missing)
    if caption_from == "gt" and args.condition == "c_zeroscope":
        check_targets_exist(root, args.dataset, "c_zeroscope", stimuli)
        target_settings(root, args.dataset, "c_zeroscope")  # refuses files without a record
    return stimuli[: args.limit] if args.limit else stimuli


def expected_latent_shape(args: argparse.Namespace, stimulus: str, channels: int | None = None) -> tuple[int, int, int, int] | None:
    """(frames, channels, h, w) predictions must have: the ground-truth target's shape when it
    exists, else 15 frames at the preset's default latent size (33x33 real, 8x8 tiny) with the
    model's ``channels`` (None when those are not known yet).

    Raises when the ground-truth latents have no record of their settings, or were extracted
    with another ``--preset`` (their record says which), since predictions regressed on them
    fit that preset's model only.
    """
    target = layout.target_path(args.data_root, args.dataset, "z_zeroscope", stimulus)
    if target.exists():
        made_with = target_settings(args.data_root, args.dataset, "z_zeroscope").get("preset")
        if made_with is not None and made_with != args.preset:
            raise ValueError(
                f"--preset {args.preset!r} does not match the latents in {target.parent}, made with preset "
                f"{made_with!r}: pass --preset {made_with}, or rerun `python extract_targets_zeroscope.py{layout.root_flag(args.data_root)} --dataset "
                f"{args.dataset} --preset {args.preset} --overwrite` and the regression."
            )
        shape = tuple(np.load(target, mmap_mode="r").shape)
        if len(shape) == 4:
            return shape  # type: ignore[return-value]
    if channels is None:
        return None
    size = zoo.latent_size(zoo.zeroscope_frame_size(args.preset))
    return (targets.N_FRAMES, channels, size, size)


def remake_command(args: argparse.Namespace, target: str, source: str) -> str:
    """The command that writes an input of ``target`` ('z_zeroscope', 'blip', 'c_zeroscope') again."""
    if source == "pred":
        return f"rerun `python regress.py{layout.root_flag(args.data_root)} --target {target} --test-on {args.dataset} --run {args.run} --overwrite`"
    script = "extract_targets_zeroscope.py" if target in ("z_zeroscope", "c_zeroscope") else "extract_targets_blip.py"
    return f"rerun `python {script} --dataset {args.dataset}{layout.root_flag(args.data_root)} --overwrite`"


def input_files(args: argparse.Namespace, z_from: str, caption_from: str, stimulus: str) -> list[tuple[Path, str]]:
    """(path, remake command) of every array file one clip reads."""
    files = [(latent_path(args, z_from, stimulus), remake_command(args, "z_zeroscope", z_from))]
    if args.condition == "c_zeroscope":
        files.append((prompt_embeds_path(args, caption_from, stimulus), remake_command(args, "c_zeroscope", caption_from)))
    elif caption_from == "pred":
        files.append((layout.prediction_path(args.data_root, args.run, "blip", stimulus), remake_command(args, "blip", "pred")))
    return files


def check_inputs(args: argparse.Namespace, z_from: str, caption_from: str, stimuli: list[str]) -> None:
    """Read every input array of ``stimuli`` before any model loads: a missing, truncated or non-finite file
    (NaN or Inf would decode to a black clip), or a latent of another shape than the ground-truth targets',
    raises naming it and the command that remakes it."""
    shape = expected_latent_shape(args, stimuli[0]) if stimuli else None
    for stimulus in stimuli:
        for path, remake in input_files(args, z_from, caption_from, stimulus):
            array = check_finite(load_npy(path, remake), path, remake)
            if shape is not None and path == latent_path(args, z_from, stimulus):
                load_latent(path, shape, args.preset, remake, array)


def load_latent(
    path: Path, shape: tuple[int, int, int, int], preset: str, remake: str = "rerun the stage that wrote it", array: np.ndarray | None = None
) -> np.ndarray:
    """One latent (frames, channels, h, w) float32 (``array``: its contents, already read); a flattened vector is
    reshaped; wrong sizes and non-finite values raise."""
    hint = " Regenerate the predictions from targets made with the same model, or pick the matching --preset."
    array = check_finite(load_npy(path, remake) if array is None else array, path, remake)
    return as_stored_shape(array, shape, f"Latent {path}", f"the {preset!r} preset expects", hint)


def latent_path(args: argparse.Namespace, z_from: str, stimulus: str) -> Path:
    """Where the initial latent of a stimulus comes from."""
    if z_from == "pred":
        return layout.prediction_path(args.data_root, args.run, "z_zeroscope", stimulus)
    return layout.target_path(args.data_root, args.dataset, "z_zeroscope", stimulus)


def prompt_embeds_path(args: argparse.Namespace, caption_from: str, stimulus: str) -> Path:
    """Where the c_zeroscope prompt embeddings of a stimulus come from (predicted or true)."""
    if caption_from == "pred":
        return layout.prediction_path(args.data_root, args.run, "c_zeroscope", stimulus)
    return layout.target_path(args.data_root, args.dataset, "c_zeroscope", stimulus)


def load_prompt_embeds(path: Path, shape: tuple[int, int], preset: str, remake: str = "rerun the stage that wrote it") -> np.ndarray:
    """One clip's prompt embeddings (tokens, dim) float32; a flattened vector is reshaped; wrong sizes raise."""
    hint = " That is (tokenizer max length, hidden size): make the targets and predictions with the same --preset, or pick the matching one."
    expects = f"the {preset!r} preset's text encoder expects"
    return as_stored_shape(load_npy(path, remake), shape, f"c_zeroscope embeddings {path}", expects, hint, verb="have")


def clip_paths(out_dir: Path, stimulus: str) -> tuple[Path, Path, Path]:
    """(frames npy, mp4, gif) of one reconstructed clip."""
    return (layout.reconstruction_frames_path(out_dir, stimulus), *layout.reconstruction_video_paths(out_dir, stimulus))


def is_done(out_dir: Path, stimulus: str, captions: dict[str, str] | None = None) -> bool:
    """The lossless frames, the mp4 and the gif all exist and are non-empty (writes are atomic, so they are
    complete), and, when ``captions`` is given, the clip's caption is recorded there."""
    if captions is not None and stimulus not in captions:
        return False
    return all(p.exists() and p.stat().st_size > 0 for p in clip_paths(out_dir, stimulus))


def write_clip(out_dir: Path, stimulus: str, clip: np.ndarray, fps: float) -> None:
    """Write one clip's frames uint8 (F, H, W, 3) losslessly as .npy, then as mp4 and gif for viewing."""
    frames_path, mp4, gif = clip_paths(out_dir, stimulus)
    save_npy(frames_path, np.ascontiguousarray(clip, dtype=np.uint8))
    write_mp4(mp4, clip, fps)
    write_gif(gif, clip, fps)


def gt_captions(args: argparse.Namespace, stimuli: list[str]) -> dict[str, str]:
    """Ground-truth BLIP captions from target_vectors_<ds>/captions.json, prompt stripped."""
    path = layout.captions_path(args.data_root, args.dataset)
    blip = f"python extract_targets_blip.py --dataset {args.dataset}{layout.root_flag(args.data_root)}"
    captions = read_captions(path, remake=f"rerun `{blip} --overwrite`")
    if captions is None:
        raise FileNotFoundError(f"Missing ground-truth captions {path}: run `{blip}` first.")
    missing = [s for s in stimuli if not isinstance(captions.get(s), str)]
    if missing:
        raise ValueError(f"{path} has no caption string for {len(missing)} stimuli (e.g. {missing[:5]}): rerun `{blip}`.")
    return {s: strip_prompt(captions[s]) for s in stimuli}


def predicted_captions(args: argparse.Namespace, stimuli: list[str], device, dtype) -> dict[str, str]:
    """Decode captions from the predicted BLIP embeddings with the BLIP text decoder."""
    if not stimuli:
        return {}
    model, processor = zoo.load_blip(args.preset, model_path=args.blip_path, device=str(device), dtype=dtype, flag="--blip-path", data_root=args.data_root)
    shape = embedding_shape(model, zoo.blip_image_size(args.preset))
    settings = caption_settings(args)
    captions: dict[str, str] = {}
    for start in range(0, len(stimuli), args.batch_size):
        names = stimuli[start : start + args.batch_size]
        paths = [layout.prediction_path(args.data_root, args.run, "blip", s) for s in names]
        remake = remake_command(args, "blip", "pred")
        embeds = np.stack([check_embedding(load_npy(path, remake), shape, f"BLIP prediction {path}") for path in paths])
        captions.update(zip(names, caption_embeddings(model, processor, embeds, settings, batch_size=len(names)), strict=True))
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return captions


CAPTIONS_REMAKE = "delete it and rerun the same command with --overwrite"


def caption_parts(out_dir: Path) -> list[Path]:
    """The per-process caption part files of a folder (left by a running or killed run)."""
    return sorted(Path(out_dir).glob(layout.reconstruction_captions_part_path(out_dir, "*").name))


def recorded_captions(out_dir: Path) -> dict[str, str]:
    """Every caption recorded in a folder: captions.json updated by the part files, sorted by stimulus."""
    captions = read_captions(layout.reconstruction_captions_path(out_dir), default={}, remake=CAPTIONS_REMAKE)
    for part in caption_parts(out_dir):
        captions.update(read_captions(part, default={}, remake=CAPTIONS_REMAKE))
    return dict(sorted(captions.items()))


def merge_captions(out_dir: Path) -> dict[str, str]:
    """Fold the per-process caption parts into captions.json (sorted) and delete the parts."""
    parts = caption_parts(out_dir)
    captions = recorded_captions(out_dir)
    write_json(layout.reconstruction_captions_path(out_dir), captions)
    for part in parts:
        part.unlink()
    return captions


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags this run would ignore, and subject numbers the dataset does not have (before any work)."""
    zoo.refuse_unused_model_paths(args.preset, {"--zeroscope-path": args.zeroscope_path, "--blip-path": args.blip_path})
    check_subjects(get_spec(args.dataset), args.subjects)  # recorded in the manifest: the report's subject label


def caption_settings(args: argparse.Namespace) -> CaptionSettings:
    """How captions are decoded from predicted BLIP embeddings."""
    return CaptionSettings(
        num_beams=args.caption_beams, max_length=args.caption_max_length, min_length=args.caption_min_length,
        repetition_penalty=args.repetition_penalty, sample=args.caption_sample, top_p=args.top_p, seed=args.seed,
        slash_to_space=args.caption_slash_to_space,
    )


def predictions_digest(data_root: str, run: str | None) -> str | None:
    """A digest of the recorded settings of a predictions run (its settings.json, else its manifest's
    config), so a folder of clips notices when the predictions were remade otherwise; None without a record."""
    if run is None:
        return None
    folder = layout.predictions_run_dir(data_root, run)
    record = provenance.read_settings(folder)
    recorded = record["settings"] if record else (read_json(layout.manifest_path(folder), default={}, remake="rerun regress.py with --overwrite") or {}).get("config")
    if recorded is None:
        return None
    return hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()[:16]


def clip_settings(args: argparse.Namespace, z_from: str, caption_from: str, settings: DiffusionSettings, dtype: torch.dtype) -> dict:
    """Everything that determines the clips of a folder (what settings.json records and a rerun compares)."""
    uses_blip = args.condition == "caption" and caption_from == "pred"
    reads_predictions = "pred" in (z_from, caption_from)
    return {
        "dataset": args.dataset, "condition": args.condition, "z_from": z_from, "caption_from": caption_from,
        "predictions_run": args.run if reads_predictions else None,
        "predictions_digest": predictions_digest(args.data_root, args.run) if reads_predictions else None,
        "steps": settings.steps, "strength": settings.strength, "guidance_scale": settings.guidance_scale,
        "negative_prompt": settings.negative_prompt, "decode_chunk": settings.decode_chunk,
        "forward_chunking": args.forward_chunking, "seed": args.seed, "fps": args.fps, "dtype": str(dtype),
        "preset": args.preset, "zeroscope": zoo.model_source(args.preset, args.zeroscope_path, zoo.ZEROSCOPE_ID, args.data_root, "zeroscope"),
        "blip": zoo.model_source(args.preset, args.blip_path, zoo.BLIP_ID, args.data_root, "blip") if uses_blip else None,
        "captions": dataclasses.asdict(caption_settings(args)) if uses_blip else None,
    }


def clip_folders(out_dir: Path) -> list[Path]:
    """The folders of a reconstruction folder's clips: ``frames/``, ``mp4/``, ``gif/``."""
    return [layout.reconstruction_frames_path(out_dir, "x").parent, *(p.parent for p in layout.reconstruction_video_paths(out_dir, "x"))]


def has_clips(out_dir: Path) -> bool:
    """True when the folder holds any clip file (temp files of a killed run aside) or caption."""
    clip_files = (f for d in clip_folders(out_dir) if d.is_dir() for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
    return any(True for _ in clip_files) or bool(recorded_captions(out_dir))


def clear_clips(out_dir: Path) -> None:
    """Delete a folder's clips, captions and manifest (``--overwrite`` with other settings: none of them still holds)."""
    for folder in clip_folders(out_dir):
        shutil.rmtree(folder, ignore_errors=True)
    for path in (layout.reconstruction_captions_path(out_dir), layout.manifest_path(out_dir), *caption_parts(out_dir)):
        path.unlink(missing_ok=True)


def needs_clearing(out_dir: Path, record: dict, overwrite: bool) -> bool:
    """Before any clip: refuse a folder made with other settings, unless --overwrite (then True: its clips must go,
    and only when this stage's own record says it made them)."""
    ways_on = "pass --overwrite to redo the folder with these settings, or write elsewhere with --output-run NAME"
    check_within([*clip_folders(out_dir), *caption_parts(out_dir), layout.reconstruction_captions_path(out_dir)], out_dir)
    try:
        provenance.check_settings(out_dir, STAGE, record, has_clips(out_dir), ways_on)
    except provenance.SettingsMismatchError:
        if not overwrite:
            raise
        if (provenance.read_settings(out_dir) or {}).get("stage") != STAGE:
            raise ValueError(
                f"--overwrite: {out_dir} holds files that no reconstruction recorded as its own (its {layout.settings_path(out_dir).name} "
                f"is missing or names another stage), so nothing there is deleted: move them away, or write elsewhere with --output-run NAME."
            ) from None
        return True
    return False


def start_folder(out_dir: Path, record: dict, clear: bool) -> None:
    """Once the inputs are checked (main process): clear the clips of other settings, remove stale temp files and
    record the settings."""
    if clear:
        print(f"reconstruct: --overwrite: removing the clips of {out_dir} made with other settings")
        clear_clips(out_dir)
    for folder in [out_dir, *(d for d in out_dir.rglob("*") if d.is_dir())]:
        remove_stale_temps(folder)
    if provenance.read_settings(out_dir) != {"stage": STAGE, "settings": jsonable(record)}:
        provenance.write_settings(out_dir, STAGE, record)


def main(argv: list[str] | None = None) -> int:
    """Reconstruct the selected clips (this process's share under a launcher); returns 0."""
    parser = build_parser()
    args = parse_args(parser, argv, bundle=("recipe", lambda name: get_recipe(name).flags()))
    check_flags(args)
    z_from, caption_from = resolve_sources(args)
    settings = diffusion_settings(args)
    args.steps, args.strength = settings.steps, settings.strength  # the values used, for the manifest

    resolve_device(args.device)  # refuses cuda without CUDA before any work
    on_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    state = PartialState(cpu=on_cpu)  # several processes under `accelerate launch` / torchrun, else one
    device = state.device if args.device == "auto" else torch.device(args.device)
    dtype = resolve_dtype(args.dtype, str(device))
    seed_everything(args.seed)

    stimuli = select_stimuli(args, z_from, caption_from)
    out_dir = layout.reconstructions_dir(args.data_root, output_name(args, z_from, caption_from))
    record = clip_settings(args, z_from, caption_from, settings, dtype)
    with run_lock(out_dir, STAGE):
        clear = needs_clearing(out_dir, record, args.overwrite)
        known = recorded_captions(out_dir)
        todo = [s for s in stimuli if args.overwrite or not is_done(out_dir, s, known)]
        check_inputs(args, z_from, caption_from, todo)
        if not todo and not caption_parts(out_dir):
            print(f"reconstruct: all {len(stimuli)} clips of {out_dir} are done with these settings; nothing to write")
            return 0
        state.wait_for_everyone()
        if state.is_main_process:
            start_folder(out_dir, record, clear)
        state.wait_for_everyone()
        mine = todo[state.process_index :: state.num_processes]
        if state.is_main_process:
            print(f"reconstruct: {len(stimuli)} clips -> {out_dir} ({len(stimuli) - len(todo)} done, {len(todo)} to do, {state.num_processes} process(es), {device}, {dtype})")
        seconds = reconstruct(args, z_from, caption_from, settings, out_dir, mine, state, device, dtype)
        state.wait_for_everyone()
        if state.is_main_process:
            captions = merge_captions(out_dir)
            write_reconstruction_manifest(args, z_from, caption_from, out_dir, stimuli, todo, captions, record, seconds, len(mine), state, device, dtype)
            print(f"reconstruct: wrote {len(todo)} clips to {out_dir}")
    return 0


def clip_captions(args: argparse.Namespace, caption_from: str, mine: list[str], device, dtype) -> dict[str, str]:
    """The caption of each clip of this process ("" when the UNet is conditioned on embeddings or nothing)."""
    if args.condition == "c_zeroscope" or caption_from == "none":
        return dict.fromkeys(mine, "")
    if caption_from == "pred":
        return predicted_captions(args, mine, device, dtype)
    return gt_captions(args, mine)


def reconstruct(
    args: argparse.Namespace, z_from: str, caption_from: str, settings: DiffusionSettings, out_dir: Path,
    mine: list[str], state: PartialState, device, dtype,
) -> float:
    """Reconstruct and write this process's clips; each clip's caption is recorded before its files. Seconds spent."""
    if not mine:
        return 0.0
    captions = clip_captions(args, caption_from, mine, device, dtype)
    part_path = layout.reconstruction_captions_part_path(out_dir, state.process_index)
    written: dict[str, str] = read_captions(part_path, default={}, remake=CAPTIONS_REMAKE)
    components = zoo.load_zeroscope(
        args.preset, model_path=args.zeroscope_path, device=str(device), dtype=dtype, flag="--zeroscope-path", data_root=args.data_root
    )
    model = VideoDiffusion.from_components(components, forward_chunking=args.forward_chunking)
    shape = expected_latent_shape(args, mine[0], model.latent_channels)
    latent_remake = remake_command(args, "z_zeroscope", z_from)
    embeds_remake = remake_command(args, "c_zeroscope", caption_from)
    start_time = time.perf_counter()
    bar = tqdm(total=len(mine), unit="clip", desc="reconstruct", disable=not state.is_local_main_process)
    for start in range(0, len(mine), args.batch_size):
        names = mine[start : start + args.batch_size]
        latents = np.stack([load_latent(latent_path(args, z_from, s), shape, args.preset, latent_remake) for s in names])  # (B, F, C, h, w)
        seeds = [stimulus_seed(args.seed, s) for s in names]
        if args.condition == "c_zeroscope":
            embeds = np.stack([
                load_prompt_embeds(prompt_embeds_path(args, caption_from, s), model.prompt_embeds_shape, args.preset, embeds_remake)
                for s in names
            ])  # (B, L, D)
            frames = model(to_unet_layout(latents), None, seeds, settings, prompt_embeds=torch.from_numpy(embeds))
        else:
            frames = model(to_unet_layout(latents), [captions[s] for s in names], seeds, settings)  # (B, F, H, W, 3) uint8
        for name, clip in zip(names, frames, strict=True):
            written[name] = captions[name]
            write_json(part_path, written)  # the caption first: a clip whose files exist always has its caption
            write_clip(out_dir, name, clip, args.fps)
        bar.update(len(names))
    bar.close()
    return time.perf_counter() - start_time


def write_reconstruction_manifest(
    args: argparse.Namespace, z_from: str, caption_from: str, out_dir: Path, stimuli: list[str], todo: list[str],
    captions: dict[str, str], record: dict, seconds: float, n_mine: int, state: PartialState, device, dtype,
) -> None:
    """manifest.json: the flags of this call, the settings every clip of the folder was made with, and counts."""
    inputs = {
        "condition": args.condition, "z_from": z_from, "caption_from": caption_from,
        "latents": str(latent_path(args, z_from, "<stim>")),
        "predictions_run": args.run,
    }
    if args.condition == "c_zeroscope":
        inputs["prompt_embeds"] = str(prompt_embeds_path(args, caption_from, "<stim>"))
    counts = {
        "stimuli": len(stimuli), "complete": sum(is_done(out_dir, s, captions) for s in stimuli),
        "reconstructed": len(todo), "skipped": len(stimuli) - len(todo), "processes": state.num_processes,
        "seconds_per_clip_main_process": round(seconds / n_mine, 3) if n_mine else None,
    }
    write_manifest(out_dir, STAGE, args, inputs=inputs, counts=counts, settings=record, device=str(device), dtype=str(dtype))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
