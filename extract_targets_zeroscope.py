"""Stage 1b: Zeroscope VAE latents (the ``z_zeroscope`` regression target) of every stimulus.

For each video: 15 frames picked by ``linspace`` over all decoded frames, resized to
``--size`` x ``--size`` (268 for the real preset -> latents (15, 4, 33, 33); 64 for the tiny
preset -> (15, 4, 8, 8)), scaled to [-1, 1], encoded by the Zeroscope VAE
(cerspense/zeroscope_v2_576w), times ``vae.config.scaling_factor``. ``--latent mean`` (the
default) takes the posterior mean; ``--latent sample`` adds the posterior noise as the original
pipeline did, from a generator seeded per stimulus by ``--seed``, so reruns and any batching
give identical files. The real VAE's posterior is narrow, so the two differ little there; a
random tiny VAE's posterior noise would drown the stimulus. Stimuli are batched (``--batch-size`` videos per batch) while
background threads decode the next ones (``--workers``). fp16 on CUDA, fp32 on CPU by default
(``--dtype``).

Reads:  <data-root>/stimuli_<ds>/... (videos; made by download_data.py)
Writes: <data-root>/target_vectors_<ds>/z_zeroscope/<stim>.npy   float32 (15, 4, h/8, w/8)
        (HAD keeps the class subfolder) and z_zeroscope/manifest.json (flags, counts,
        timings, and ``failed``: {stimulus: error} for undecodable videos).

Complete outputs are skipped (``--overwrite`` redoes them). An undecodable video is named,
recorded in the manifest and skipped; the script then exits with status 1.

Examples:
    python extract_targets_zeroscope.py --dataset bmd
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
from utils.cli import common_parser, defaults_from, nonnegative_int, parse_args, positive_int, resolve_device, resolve_dtype
from utils.io import is_complete_npy, save_npy, write_manifest
from utils.seeds import seed_everything

TARGET = "z_zeroscope"


def build_parser() -> argparse.ArgumentParser:
    """Common flags plus this stage's own."""
    parser = common_parser(__doc__, presets=zoo.PRESETS)
    parser.set_defaults(**defaults_from(targets.ZeroscopeTargetSettings))
    parser.add_argument("--subset", default="all", choices=targets.SUBSETS, help="stimuli to process (default: %(default)s)")
    parser.add_argument("--stimuli", nargs="+", default=None, metavar="STIM", help="process only these stimuli (default: every stimulus of --subset)")
    parser.add_argument("--size", type=positive_int, help=f"square frame size before encoding (default by preset: {zoo.describe_sizes(zoo.ZEROSCOPE_FRAME_SIZE)})")
    parser.add_argument("--latent", choices=targets.LATENT_MODES, help="posterior mean, or a sample seeded per stimulus as the original (default: %(default)s)")
    parser.add_argument("--frames-per-forward", type=positive_int, help="frames per VAE encoder call, bounds memory (default: %(default)s)")
    parser.add_argument("--workers", type=nonnegative_int, help="video decoding threads; 0 decodes in the main thread (default: %(default)s)")
    parser.add_argument("--model-path", default=None, help="local Zeroscope directory with a vae/ subfolder (default: the Hugging Face id through the cache)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Extract the latents; returns 0, or 1 when some videos could not be decoded."""
    from tqdm import tqdm

    args = parse_args(build_parser(), argv)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    size = args.size or zoo.zeroscope_frame_size(args.preset)
    jobs = targets.plan_jobs(args.data_root, args.dataset, args.subset, args.stimuli, args.limit)

    vae = zoo.load_zeroscope(args.preset, args.model_path, device=device, dtype=dtype, parts=("vae",))["vae"]
    shape = targets.latent_shape(vae, size)

    def out_of(stimulus: str) -> Path:
        return layout.target_path(args.data_root, args.dataset, TARGET, stimulus)

    todo, skipped = targets.split_done(jobs, lambda stimulus: is_complete_npy(out_of(stimulus), shape), args.overwrite)
    print(f"{TARGET}: {len(jobs)} stimuli of {args.dataset} ({len(skipped)} already complete), frames {size}px -> latents {shape}, {device} {dtype}")

    def process(batch: list[targets.Job], videos: list[np.ndarray]) -> None:
        latents = targets.vae_latents(
            vae, np.stack(videos), [j.stimulus for j in batch], args.latent, args.seed, args.frames_per_forward
        )  # (B, 15, 4, h, w)
        for job, latent in zip(batch, latents, strict=True):
            save_npy(out_of(job.stimulus), latent)

    with tqdm(total=len(todo), unit="video", desc=TARGET, disable=not args.progress) as bar:
        stats = targets.run_batches(
            todo, targets.frame_loader(targets.N_FRAMES, {"frames": targets.squash_resize(size)}),
            lambda batch, loaded: process(batch, [item["frames"] for item in loaded]),
            args.batch_size, args.workers, bar,
        )
    stats.skipped = skipped
    out_dir = layout.targets_dir(args.data_root, args.dataset, TARGET)
    write_manifest(
        out_dir, "extract_targets_zeroscope", args,
        inputs={"stimuli": str(layout.stimuli_dir(args.data_root, args.dataset)), "model": zoo.model_source(args.preset, args.model_path, zoo.ZEROSCOPE_ID)},
        counts=stats.counts(), shape=list(shape), frame_size=size, failed=stats.failed,
    )
    return targets.print_summary(stats, out_dir)


if __name__ == "__main__":
    raise SystemExit(main())
