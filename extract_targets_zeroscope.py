"""Stage 1b: Zeroscope targets of every stimulus: VAE latents (``z_zeroscope``) and, on request,
text-encoder conditioning (``c_zeroscope``).

``z_zeroscope``: for each video, 15 frames picked by ``linspace`` over all decoded frames
(rounded; ``--frame-sampling floor`` as the original), resized to ``--size`` x ``--size`` (268
for the real preset -> latents (15, 4, 33, 33); 64 for the tiny preset -> (15, 4, 8, 8);
antialiased unless ``--no-resize-antialias``), scaled to [-1, 1], encoded by the Zeroscope VAE
(cerspense/zeroscope_v2_576w), times ``vae.config.scaling_factor``, stored as ``--z-dtype``.
``--latent mean`` (the default) takes the posterior mean; ``--latent sample`` adds the
posterior noise as the original pipeline did, from a generator seeded per stimulus by
``--seed``, so reruns and any batching give identical files. The real VAE's posterior is
narrow, so the two differ little there; a random tiny VAE's posterior noise would drown the
stimulus. Stimuli are batched (``--batch-size`` videos per batch) while background threads
decode the next ones (``--workers``). fp16 on CUDA, fp32 on CPU by default (``--dtype``).

``c_zeroscope`` (``--targets z_zeroscope c_zeroscope``): the Zeroscope text encoder's last
hidden state (77, D; D = 1024 for the real encoder) of each stimulus' human captions
(``metadata_<ds>/annotations.json``; datasets without annotations use the BLIP captions of
``target_vectors_<ds>/captions.json``, made by extract_targets_blip.py), averaged over the
captions: the original's conditioning target, for ``reconstruct_zeroscope.py --condition c_zeroscope``.

``--recipe original`` switches the defaults of ``--frame-sampling --resize-antialias --latent
--z-dtype`` to the original code's (README, "1. Targets"); a flag given explicitly still wins.

Reads:  <data-root>/stimuli_<ds>/... (videos; made by download_data.py), and for c_zeroscope
        metadata_<ds>/annotations.json or target_vectors_<ds>/captions.json
Writes: <data-root>/target_vectors_<ds>/z_zeroscope/<stim>.npy   (15, 4, h/8, w/8) float32 (float16
        with --z-dtype float16); target_vectors_<ds>/c_zeroscope/<stim>.npy (77, D) float32
        (HAD keeps the class subfolder); in each folder settings.json (the recipe and every
        setting that determines the files) and manifest.json (flags, counts, timings, the device
        and dtype that ran, ``failed``: {stimulus: error} for undecodable or missing videos, kept
        across runs until the stimulus is written, and ``short_videos``: {stimulus: frames}).

Complete outputs made with the same settings are skipped (``--overwrite`` redoes them). A
folder made with other settings (e.g. another recipe), or files without settings.json, are
refused: ``--overwrite`` redoes them, another ``--data-root`` writes elsewhere, and ``--adopt``
records files copied in (e.g. the original's float16 latents) as made with the asked settings
after checking every file's shape and dtype. An undecodable video is named, recorded in the
manifest and skipped; missing videos (a partial download) are counted in one line naming the
first few and the command that fetches them; either makes the exit status 1. A video with
fewer than 15 frames is allowed (its latents repeat frames, as the original's did): it is
warned about once and listed in the manifest. Videos are decoded frame by frame and only the
15 picked frames are kept, resized at once, so an 8K video needs little memory.

Refused before any work: ``--device cuda`` without CUDA, ``--model-path`` with ``--preset
tiny`` (built in code; the path would be ignored), and a second copy of the stage writing the
same folder (a run lock; a killed run's lock and temporary files are cleaned up). Ctrl-C stops
with one line; finished files are kept and a rerun resumes.

Examples:
    python extract_targets_zeroscope.py --dataset bmd
    python extract_targets_zeroscope.py --dataset bmd --recipe original
    python extract_targets_zeroscope.py --dataset bmd --targets z_zeroscope c_zeroscope
    python extract_targets_zeroscope.py --dataset bmd --recipe original --adopt     # the original's z files copied in
    python extract_targets_zeroscope.py --dataset bmd --model-path ~/models/zeroscope_v2_576w --batch-size 16
    python extract_targets_zeroscope.py --dataset demo --preset tiny
    python extract_targets_zeroscope.py --dataset bmd --stimuli 0025 0031 --subset train
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models import targets, zoo
from utils import layout
from utils.cli import (
    common_parser,
    defaults_from,
    nonnegative_int,
    parse_args,
    positive_int,
    resolve_device,
    resolve_dtype,
    run_main,
)
from utils.io import is_complete_npy, save_npy, write_manifest
from utils.provenance import write_settings
from utils.seeds import seed_everything
from utils.targets import open_target_folder

STAGE = "extract_targets_zeroscope"
TARGETS = ("z_zeroscope", "c_zeroscope")


def build_parser() -> argparse.ArgumentParser:
    """Common flags plus this stage's own."""
    parser = common_parser(__doc__, presets=zoo.PRESETS)
    parser.set_defaults(**defaults_from(targets.ZeroscopeTargetSettings))
    parser.add_argument("--targets", nargs="+", default=["z_zeroscope"], choices=TARGETS, help="targets to extract (default: %(default)s)")
    parser.add_argument("--subset", default="all", choices=targets.SUBSETS, help="stimuli to process (default: %(default)s)")
    parser.add_argument("--stimuli", nargs="+", default=None, metavar="STIM", help="process only these stimuli (default: every stimulus of --subset)")
    parser.add_argument("--size", type=positive_int, help=f"square frame size before encoding (default by preset: {zoo.describe_sizes(zoo.ZEROSCOPE_FRAME_SIZE)})")
    targets.add_recipe_arguments(parser, targets.RECIPE_FIELDS["z_zeroscope"])
    parser.add_argument("--adopt", action="store_true", help="record target files that have no settings.json as made with the asked settings, after checking their shapes and dtypes")
    parser.add_argument("--frames-per-forward", type=positive_int, help="frames per VAE encoder call, bounds memory (default: %(default)s)")
    parser.add_argument("--workers", type=nonnegative_int, help="video decoding threads; 0 decodes in the main thread (default: %(default)s)")
    parser.add_argument("--model-path", default=None, help="local Zeroscope directory with vae/ (and text_encoder/, tokenizer/) subfolders (default: the Hugging Face id through the cache)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: %(default)s)")
    return parser


def ran(device: str, dtype) -> dict[str, str]:
    """What actually ran, for the manifest."""
    return {"device": device, "dtype": str(dtype).removeprefix("torch.")}


def extract_latents(args: argparse.Namespace, jobs: list[targets.Job], device: str, dtype) -> int:
    """Write z_zeroscope for ``jobs`` (the caller holds the folder's lock); 0, or 1 when some videos were missing or could not be decoded."""
    from tqdm import tqdm

    target = "z_zeroscope"
    out_dir = layout.targets_dir(args.data_root, args.dataset, target)
    previous = targets.previous_manifest(out_dir)
    size = args.size or zoo.zeroscope_frame_size(args.preset)
    vae = zoo.load_zeroscope(args.preset, args.model_path, device=device, dtype=dtype, parts=("vae",), flag="--model-path", data_root=args.data_root)["vae"]
    shape = targets.latent_shape(vae, size)
    model = zoo.model_source(args.preset, args.model_path, zoo.ZEROSCOPE_ID, args.data_root, "zeroscope")
    seed = {"seed": args.seed} if args.latent == "sample" else {}
    settings = targets.record_settings(target, vars(args), frame_size=size, model=model, preset=args.preset, n_frames=targets.N_FRAMES, **seed)

    def out_of(stimulus: str) -> Path:
        return layout.target_path(args.data_root, args.dataset, target, stimulus)

    record_after = open_target_folder(
        out_dir, STAGE, settings, [out_of(j.stimulus) for j in jobs], args.overwrite, (shape, args.z_dtype) if args.adopt else None
    )
    todo, skipped = targets.split_done(jobs, lambda stimulus: is_complete_npy(out_of(stimulus), shape), args.overwrite)
    todo, missing = targets.split_missing(todo)
    print(f"{target}: {len(jobs)} stimuli of {args.dataset} ({len(skipped)} already complete), recipe {args.recipe}, "
          f"frames {size}px -> latents {shape} {args.z_dtype}, {device} {dtype}")

    def process(batch: list[targets.Job], videos: list[np.ndarray]) -> None:
        latents = targets.vae_latents(
            vae, np.stack(videos), [j.stimulus for j in batch], args.latent, args.seed, args.frames_per_forward
        )  # (B, 15, 4, h, w) float32
        for job, latent in zip(batch, latents, strict=True):
            save_npy(out_of(job.stimulus), latent.astype(args.z_dtype))

    loader = targets.frame_loader(targets.N_FRAMES, {"frames": targets.squash_resize(size, args.resize_antialias)}, args.frame_sampling)
    with tqdm(total=len(todo), unit="video", desc=target, disable=not args.progress) as bar:
        stats = targets.run_batches(
            todo, loader, lambda batch, loaded: process(batch, [item.views["frames"] for item in loaded]), args.batch_size, args.workers, bar
        )
    stats.skipped, stats.missing = skipped, missing
    if record_after:
        write_settings(out_dir, STAGE, settings)
    if targets.changed_anything(previous, stats):
        write_manifest(
            out_dir, STAGE, args, inputs={"stimuli": str(layout.stimuli_dir(args.data_root, args.dataset)), "model": model},
            counts=stats.counts(), shape=list(shape), frame_size=size, ran=ran(device, dtype), **targets.manifest_records(previous, stats),
        )
    return targets.print_summary(stats, out_dir, targets.fetch_command(args.dataset, args.data_root))


def extract_conditioning(args: argparse.Namespace, jobs: list[targets.Job], device: str, dtype) -> int:
    """Write c_zeroscope (text-encoder states of each stimulus' captions, averaged) for ``jobs`` (the
    caller holds the folder's lock); 0."""
    target = "c_zeroscope"
    out_dir = layout.targets_dir(args.data_root, args.dataset, target)
    previous = targets.previous_manifest(out_dir)
    parts = zoo.load_zeroscope(
        args.preset, args.model_path, device=device, dtype=dtype, parts=("text_encoder", "tokenizer"), flag="--model-path", data_root=args.data_root
    )
    shape = targets.text_states_shape(parts["text_encoder"], parts["tokenizer"])
    model = zoo.model_source(args.preset, args.model_path, zoo.ZEROSCOPE_ID, args.data_root, "zeroscope")

    def out_of(stimulus: str) -> Path:
        return layout.target_path(args.data_root, args.dataset, target, stimulus)

    stimuli = [j.stimulus for j in jobs]
    captions, source = targets.conditioning_captions(args.data_root, args.dataset, stimuli)
    settings = targets.record_settings(target, vars(args), captions=source, model=model, preset=args.preset)
    record_after = open_target_folder(out_dir, STAGE, settings, [out_of(s) for s in stimuli], args.overwrite, (shape, "float32") if args.adopt else None)
    todo, skipped = targets.split_done(jobs, lambda stimulus: is_complete_npy(out_of(stimulus), shape), args.overwrite)
    print(f"{target}: {len(jobs)} stimuli of {args.dataset} ({len(skipped)} already complete), {source} -> {shape}, {device} {dtype}")
    stats = targets.RunStats(skipped=skipped)
    for start in range(0, len(todo), args.batch_size):
        batch = [j.stimulus for j in todo[start : start + args.batch_size]]
        states = targets.zeroscope_text_states(parts["text_encoder"], parts["tokenizer"], [captions[s] for s in batch])  # (B, 77, D)
        for stimulus, state in zip(batch, states, strict=True):
            save_npy(out_of(stimulus), state)
        stats.written += batch
    if record_after:
        write_settings(out_dir, STAGE, settings)
    if targets.changed_anything(previous, stats):
        write_manifest(
            out_dir, STAGE, args, inputs={"captions": source, "model": model}, counts=stats.counts(), shape=list(shape),
            ran=ran(device, dtype), **targets.manifest_records(previous, stats),
        )
    return targets.print_summary(stats, out_dir)


def main(argv: list[str] | None = None) -> int:
    """Extract the asked targets; returns 0, or 1 when some videos were missing or could not be decoded."""
    args = parse_args(build_parser(), argv, bundle=targets.RECIPE_BUNDLE)
    zoo.refuse_unused_model_paths(args.preset, {"--model-path": args.model_path})
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    seed_everything(args.seed)
    jobs = targets.plan_jobs(args.data_root, args.dataset, args.subset, args.stimuli, args.limit)
    extract = {"z_zeroscope": extract_latents, "c_zeroscope": extract_conditioning}
    folders = [layout.targets_dir(args.data_root, args.dataset, t) for t in args.targets]
    with targets.lock_folders(folders, STAGE):
        return max(extract[t](args, jobs, device, dtype) for t in TARGETS if t in args.targets)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
