"""Stage 1a: BLIP image embeddings, BLIP captions and CLIP embeddings of every stimulus.

For each video, 15 frames picked by ``linspace`` over all decoded frames (rounded;
``--frame-sampling floor`` as the original), then:
- ``blip``: frames resized to ``--image-size`` (240 for the real preset, BLIP base CapFilt-L
  = Salesforce/blip-image-captioning-base; 32 for tiny; antialiased unless
  ``--no-resize-antialias``), in [0, 1], BLIP normalisation (``--blip-normalize``; the
  original skipped it), the vision encoder's last hidden state averaged over the 15 frames
  -> (226, 768) for the real preset;
- a caption: the BLIP text decoder on that averaged embedding (the target itself, so it is
  the caption that a perfect prediction would give; ``--caption-beams`` 3 (1 = greedy, the
  original's), max length 20, min 4, repetition penalty 6.0, prompt "a picture of " stripped,
  "/" -> " " with ``--caption-slash-to-space``; models/captioning.py) -> ``captions.json``,
  merged across runs and written atomically after every batch;
- ``clip`` / ``clip_frames``: CLIP image embeddings (openai/clip-vit-large-patch14, projected,
  not L2-normalised) of the frames centre-cropped to the CLIP size, mean (768,) and per
  frame (15, 768);
- ``clip_text``: where the dataset has human captions (``metadata_<ds>/annotations.json``:
  BMD and the demo), the CLIP text embeddings of the captions, averaged (768,).

``--recipe original`` switches the defaults of ``--frame-sampling --resize-antialias
--blip-normalize --caption-beams --caption-slash-to-space`` to the original code's (README,
"1. Targets"); a flag given explicitly still wins.

Reads:  <data-root>/stimuli_<ds>/... and <data-root>/metadata_<ds>/annotations.json (if any)
Writes: <data-root>/target_vectors_<ds>/{blip,clip,clip_frames,clip_text}/<stim>.npy (float32;
        HAD keeps the class subfolder), target_vectors_<ds>/captions.json, and in each target
        folder settings.json (the recipe and every setting that determines the files) and
        manifest.json (flags, counts, timings, the device and dtype that ran, ``failed``: kept
        across runs until the stimulus is written, ``short_videos``).

A stimulus is skipped when all its outputs are complete (``--overwrite`` redoes it). A folder
made with other settings (e.g. another recipe), or files without settings.json, are refused:
``--overwrite`` redoes them, another ``--data-root`` writes elsewhere, and ``--adopt`` records
files copied in as made with the asked settings after checking every file's shape and dtype.
An undecodable video is named, recorded in the manifests and skipped; missing videos (a
partial download) are counted in one line naming the first few and the command that fetches
them; either makes the exit status 1. A video with fewer than 15 frames is allowed (repeated
frames, as the original's): it is warned about once and listed in the manifests. Videos are
decoded frame by frame, keeping only the picked frames at the BLIP and CLIP sizes.

Refused before any work: ``--device cuda`` without CUDA, ``--model-path`` / ``--clip-path``
with ``--preset tiny`` (built in code; the paths would be ignored), a second copy of the stage
writing the same folders (a run lock; a killed run's lock and temporary files are cleaned up),
and a corrupt annotations.json or captions.json (named, with the command that remakes it).
Ctrl-C stops with one line; finished files are kept and a rerun resumes.

Examples:
    python extract_targets_blip.py --dataset bmd
    python extract_targets_blip.py --dataset bmd --recipe original
    python extract_targets_blip.py --dataset bmd --model-path ~/models/blip-base --clip-path ~/models/clip-l14
    python extract_targets_blip.py --dataset demo --preset tiny
    python extract_targets_blip.py --dataset cc2017 --subset test --no-captions --limit 100
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models import targets, zoo
from models.captioning import CaptionSettings, caption_embeddings, embedding_shape
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
from utils.io import is_complete_npy, remove_stale_temps, save_npy, write_json, write_manifest
from utils.provenance import write_settings
from utils.seeds import seed_everything
from utils.targets import open_target_folder

STAGE = "extract_targets_blip"
TARGETS = ("blip", "clip", "clip_frames", "clip_text")


def build_parser() -> argparse.ArgumentParser:
    """Common flags plus this stage's own."""
    parser = common_parser(__doc__, presets=zoo.PRESETS)
    parser.set_defaults(**defaults_from(targets.BlipTargetSettings))
    parser.add_argument("--subset", default="all", choices=targets.SUBSETS, help="stimuli to process (default: %(default)s)")
    parser.add_argument("--stimuli", nargs="+", default=None, metavar="STIM", help="process only these stimuli (default: every stimulus of --subset)")
    parser.add_argument("--image-size", type=positive_int, help=f"BLIP input size (default by preset: {zoo.describe_sizes(zoo.BLIP_IMAGE_SIZE)})")
    targets.add_recipe_arguments(parser, targets.RECIPE_FIELDS["blip"])
    parser.add_argument("--adopt", action="store_true", help="record target files that have no settings.json as made with the asked settings, after checking their shapes and dtypes")
    parser.add_argument("--captions", action=argparse.BooleanOptionalAction, help="caption every video with BLIP into captions.json (default: %(default)s)")
    parser.add_argument("--clip", action=argparse.BooleanOptionalAction, help="also write the CLIP image (and caption text) embeddings (default: %(default)s)")
    parser.add_argument("--workers", type=nonnegative_int, help="video decoding threads; 0 decodes in the main thread (default: %(default)s)")
    parser.add_argument("--model-path", default=None, help="local BLIP directory (default: the Hugging Face id through the cache)")
    parser.add_argument("--clip-path", default=None, help="local CLIP directory (default: the Hugging Face id through the cache)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Extract the embeddings and captions; returns 0, or 1 when some videos were missing or could not be decoded."""
    args = parse_args(build_parser(), argv, bundle=targets.RECIPE_BUNDLE)
    zoo.refuse_unused_model_paths(args.preset, {"--model-path": args.model_path, "--clip-path": args.clip_path})
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    seed_everything(args.seed)
    jobs = targets.plan_jobs(args.data_root, args.dataset, args.subset, args.stimuli, args.limit)
    notes = targets.dataset_annotations(args.data_root, args.dataset) if args.clip else None
    folders = ["blip"] + (["clip", "clip_frames"] if args.clip else []) + (["clip_text"] if args.clip and notes else [])
    with targets.lock_folders([layout.targets_dir(args.data_root, args.dataset, t) for t in folders], STAGE):
        remove_stale_temps(layout.captions_path(args.data_root, args.dataset).parent)  # captions.json's, beside the folders
        return extract(args, jobs, notes, folders, device, dtype)


def extract(args: argparse.Namespace, jobs: list[targets.Job], notes: dict | None, folders: list[str], device: str, dtype) -> int:
    """Write the ``folders`` targets and the captions of ``jobs`` (the caller holds the locks); the exit status."""
    from tqdm import tqdm

    image_size = args.image_size or zoo.blip_image_size(args.preset)
    previous = {t: targets.previous_manifest(layout.targets_dir(args.data_root, args.dataset, t)) for t in folders}
    captions_file = layout.captions_path(args.data_root, args.dataset)
    captions: dict[str, str] = targets.read_blip_captions(args.data_root, args.dataset)

    blip, blip_processor = zoo.load_blip(args.preset, args.model_path, device=device, dtype=dtype, flag="--model-path", data_root=args.data_root)
    shapes: dict[str, tuple[int, ...]] = {"blip": embedding_shape(blip, image_size)}
    clip = clip_processor = None
    clip_size = 0
    if args.clip:
        clip, clip_processor = zoo.load_clip(args.preset, args.clip_path, device=device, dtype=dtype, flag="--clip-path", data_root=args.data_root)
        clip_size = int(clip_processor.image_processor.crop_size["height"])
        dim = int(clip.config.projection_dim)
        shapes.update(clip=(dim,), clip_frames=(targets.N_FRAMES, dim), clip_text=(dim,))

    def out_of(target: str, stimulus: str) -> Path:
        return layout.target_path(args.data_root, args.dataset, target, stimulus)

    def wanted(stimulus: str) -> list[str]:
        names = ["blip"] + (["clip", "clip_frames"] if args.clip else [])
        return names + (["clip_text"] if args.clip and targets.human_captions(notes, stimulus) else [])

    def complete(stimulus: str) -> bool:
        files_ok = all(is_complete_npy(out_of(t, stimulus), shapes[t]) for t in wanted(stimulus))
        return files_ok and (not args.captions or stimulus in captions)

    models = {
        "blip": zoo.model_source(args.preset, args.model_path, zoo.BLIP_ID, args.data_root, "blip"),
        "clip": zoo.model_source(args.preset, args.clip_path, zoo.CLIP_ID, args.data_root, "clip") if args.clip else None,
    }
    common = {"preset": args.preset, "n_frames": targets.N_FRAMES}
    records = {
        "blip": targets.record_settings("blip", vars(args), image_size=image_size, model=models["blip"], **common),
        "clip": targets.record_settings("clip", vars(args), image_size=clip_size, model=models["clip"], **common),
        "clip_frames": targets.record_settings("clip_frames", vars(args), image_size=clip_size, model=models["clip"], **common),
        "clip_text": targets.record_settings("clip_text", vars(args), captions="annotations", model=models["clip"], preset=args.preset),
    }
    record_after = {
        t: open_target_folder(
            layout.targets_dir(args.data_root, args.dataset, t), STAGE, records[t],
            [out_of(t, j.stimulus) for j in jobs if t in wanted(j.stimulus)], args.overwrite,
            (shapes[t], "float32") if args.adopt else None,
        )
        for t in folders
    }
    todo, skipped = targets.split_done(jobs, complete, args.overwrite)
    todo, missing = targets.split_missing(todo)
    print(f"blip/clip: {len(jobs)} stimuli of {args.dataset} ({len(skipped)} already complete), recipe {args.recipe}, "
          f"BLIP {image_size}px -> {shapes['blip']}, CLIP {clip_size or 'off'}, {device} {dtype}")
    settings = CaptionSettings(num_beams=args.caption_beams, seed=args.seed, slash_to_space=args.caption_slash_to_space)
    mean, std = blip_processor.image_processor.image_mean, blip_processor.image_processor.image_std

    def process(batch: list[targets.Job], loaded: list[dict]) -> None:
        names = [j.stimulus for j in batch]
        states = targets.blip_embeddings(blip, np.stack([x.views["blip"] for x in loaded]), mean, std, args.blip_normalize)  # (B, tokens, dim)
        for name, state in zip(names, states, strict=True):
            save_npy(out_of("blip", name), state)
        if clip is not None:
            image_processor = clip_processor.image_processor
            frames = targets.clip_image_embeddings(clip, np.stack([x.views["clip"] for x in loaded]), image_processor.image_mean, image_processor.image_std)
            for name, per_frame in zip(names, frames, strict=True):  # (15, dim)
                save_npy(out_of("clip_frames", name), per_frame)
                save_npy(out_of("clip", name), per_frame.mean(axis=0))
            with_text = [n for n in names if targets.human_captions(notes, n)]
            if with_text:
                texts = targets.clip_text_embeddings(clip, clip_processor.tokenizer, [targets.human_captions(notes, n) for n in with_text])
                for name, text in zip(with_text, texts, strict=True):
                    save_npy(out_of("clip_text", name), text)
        if args.captions:
            new = dict(zip(names, caption_embeddings(blip, blip_processor, states, settings, batch_size=len(names)), strict=True))
            captions.update(targets.read_blip_captions(args.data_root, args.dataset))  # keep what other runs wrote meanwhile
            captions.update(new)
            write_json(captions_file, dict(sorted(captions.items())))

    transforms = {"blip": targets.squash_resize(image_size, args.resize_antialias)}
    if clip is not None:
        transforms["clip"] = targets.center_crop(clip_size, args.resize_antialias)
    loader = targets.frame_loader(targets.N_FRAMES, transforms, args.frame_sampling)
    with tqdm(total=len(todo), unit="video", desc="blip/clip", disable=not args.progress) as bar:
        stats = targets.run_batches(todo, loader, process, args.batch_size, args.workers, bar)
    stats.skipped, stats.missing = skipped, missing

    for target in folders:
        out_dir = layout.targets_dir(args.data_root, args.dataset, target)
        if record_after[target]:
            write_settings(out_dir, STAGE, records[target])
        if not targets.changed_anything(previous[target], stats):
            continue
        write_manifest(
            out_dir, STAGE, args,
            inputs={"stimuli": str(layout.stimuli_dir(args.data_root, args.dataset)), **models},
            counts=stats.counts(), shape=list(shapes[target]), image_size=image_size, clip_size=clip_size,
            captions=str(captions_file) if args.captions else None, ran={"device": device, "dtype": str(dtype).removeprefix("torch.")},
            **targets.manifest_records(previous[target], stats),
        )
    return targets.print_summary(stats, captions_file.parent, targets.fetch_command(args.dataset, args.data_root))


if __name__ == "__main__":
    raise SystemExit(run_main(main))
