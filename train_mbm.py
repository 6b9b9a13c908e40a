"""Stage 2a: masked brain modeling (MBM) pretraining of the fMRI encoder.

Reads the prepared subjects (``download_data.py --dataset DS --prepare``):
``<data-root>/betas_cifti_<ds>/subNN/Group41.npy`` + ``Group41_trials.csv``.
Writes ``<data-root>/checkpoints/mbm/<run>/``: ``last.safetensors`` (end of the latest
epoch or interruption), ``best.safetensors`` (lowest validation loss), ``config.json``
(model, input pipeline, training flags), ``train_state.pt`` + ``rng_state_<rank>.pt``
(optimizer, scheduler, step and RNG state for ``--resume``), ``log.csv`` (loss and
throughput per epoch) and ``manifest.json``.

Samples are the train-split trials of every selected subject and dataset (repeats as
separate samples; ``--input averaged`` averages them), minus ``--val-fraction`` of the train
stimuli held out for the validation loss. The input pipeline is the published one (wrap-pad
to a multiple of the patch size, z-score with one mean/std per subject from its train
trials); ``--pad`` and ``--norm`` select alternatives. ``--dtype auto`` trains in bf16
autocast on GPUs that support it (fp16 otherwise) and fp32 on CPU; ``--dtype float16`` needs a
GPU and ``--device cuda`` a visible one (both are refused before any work otherwise).

Every run records its settings (``settings.json``): a rerun over a finished run with the same
flags skips it; other flags are refused with the list of differences (``--overwrite`` trains it
again, a new ``--run`` keeps both). Checkpoints are committed by ``train_state.pt`` (weights,
optimizer and RNG state together), so a kill at any instant resumes exactly with ``--resume``.
A non-finite loss stops the run with an error naming the epoch, the step and the last good
checkpoint. ``N`` processes (``torchrun``/``accelerate launch``, ``--batch-size`` per process)
equal one process with ``N`` times the batch size: masks and noise are drawn for the whole global
batch on every process, which takes its own share.

Examples:
  python train_mbm.py --datasets demo --preset tiny --epochs 5 --batch-size 32
  python train_mbm.py --datasets bmd had cc2017 --run all3 --epochs 200 --batch-size 64
  accelerate launch --num_processes 4 train_mbm.py --datasets bmd --run bmd4
  OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 train_mbm.py --datasets demo --preset tiny --device cpu --batch-size 16
  python train_mbm.py --datasets bmd --subjects 1 --init-from sub-01.pth --run sub01
  python train_mbm.py --datasets bmd had cc2017 --run all3 --epochs 200 --batch-size 64 --resume
"""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from models import training, zoo
from models.mbm import MaskedBrainModel, MBMConfig, load_mbm, masked_loss, mbm_config_from_dict, with_mask_ratio
from utils import brain_data, layout, provenance
from utils.cli import common_parser, fraction, nonnegative_float, parse_args, positive_int, run_main, run_name
from utils.io import remove_stale_temps, write_manifest
from utils.locks import run_lock
from utils.safe_pickle import UnsafePickleError

STAGE = "mbm"
DEFAULTS = training.TrainSettings(epochs=100, lr=2.5e-4, warmup_epochs=5.0, betas=(0.9, 0.95))
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "lr", "samples_per_s", "seconds")
# What must not change between an interrupted run and its --resume: the schedule and the samples.
RESUME_KEYS = {
    "train": ("epochs", "lr", "min_lr_ratio", "warmup_epochs", "weight_decay", "batch_size", "seed", "grad_clip", "noise_std",
              "num_processes", "steps_per_epoch"),
    "data": ("pad", "norm", "input", "roi_set", "sources", "val_fraction"),
}


def build_parser():
    """Common flags plus this stage's own; training defaults from ``DEFAULTS``."""
    parser = common_parser(__doc__, presets=zoo.PRESETS, multi_dataset=True, roi_set=True)
    parser.set_defaults(batch_size=DEFAULTS.batch_size)
    parser.add_argument("--run", type=run_name, default=None, help="run name: checkpoints/mbm/<run>/ (default: the --preset name)")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak AdamW learning rate (default: %(default)s)")
    parser.add_argument("--min-lr-ratio", type=nonnegative_float, default=DEFAULTS.min_lr_ratio, help="final lr as a fraction of --lr (default: %(default)s)")
    parser.add_argument("--warmup-epochs", type=nonnegative_float, default=DEFAULTS.warmup_epochs, help="linear warmup length in epochs (default: %(default)s)")
    parser.add_argument("--weight-decay", type=nonnegative_float, default=DEFAULTS.weight_decay, help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--grad-clip", type=nonnegative_float, default=DEFAULTS.grad_clip, help="max gradient norm, 0 = off (default: %(default)s)")
    parser.add_argument("--mask-ratio", type=fraction, default=None, help=f"fraction of patches masked (default: the checkpoint's, else {MBMConfig.mask_ratio})")
    parser.add_argument("--input", default="trials", choices=brain_data.INPUT_MODES, help="samples: every trial, or each stimulus's mean over repeats (default: %(default)s)")
    parser.add_argument("--pad", default="wrap", choices=brain_data.PAD_MODES, help="pad vertices to a multiple of the patch size by wrap-around or zeros (default: %(default)s)")
    parser.add_argument("--norm", default="global", choices=brain_data.NORM_MODES, help="z-score per subject with one train mean/std, per vertex, or none (default: %(default)s)")
    parser.add_argument("--noise-std", type=nonnegative_float, default=0.0, help="augmentation: Gaussian noise added to inputs (default: %(default)s)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1, help="fraction of train stimuli held out for the validation loss (default: %(default)s)")
    parser.add_argument("--val-every", type=positive_int, default=DEFAULTS.val_every, help="validate every N epochs and at the end (default: %(default)s)")
    parser.add_argument("--init-from", default=None, help="start from these weights: a published sub-XX.pth or one of our checkpoints (default: random init)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run <run> exactly where it stopped")
    parser.add_argument("--stop-after-steps", type=positive_int, default=None, help="save and stop this invocation after N optimizer steps; continue with --resume (default: run to the end)")
    parser.add_argument("--num-workers", type=int, default=DEFAULTS.num_workers, help="DataLoader worker processes (default: %(default)s)")
    return parser


def ways_on(run: str) -> str:
    """What a user can do when a run folder holds a run made with other flags."""
    return f"pass --overwrite to train run {run!r} again with these flags, or choose another --run to keep both"


def main(argv: list[str] | None = None) -> int:
    """Pretrain (or resume) the masked brain model; 0 on success."""
    args = parse_args(build_parser(), argv)
    training.check_run_flags(args.resume, args.overwrite)
    run = args.run or args.preset
    run_dir = layout.checkpoint_dir(args.data_root, STAGE, run)
    accelerator = training.start(args.device, args.dtype, args.seed, same_seed=True)  # refuses a device/dtype it cannot apply
    record = training.run_settings(args, run, accelerator.mixed_precision, accelerator.num_processes)
    with run_lock(run_dir, STAGE):
        if accelerator.is_main_process:
            remove_stale_temps(run_dir)
        if not (args.resume or args.overwrite) and training.run_status(run_dir) == "complete":
            provenance.check_settings(run_dir, STAGE, record, has_outputs=True, ways_on=ways_on(run))
            if accelerator.is_main_process:
                print(f"{run_dir} is complete (same settings); pass --overwrite to train it again.")
            return 0
        return train(args, run, run_dir, accelerator, record)


def train(args, run: str, run_dir, accelerator, record: dict) -> int:
    """Build the data and the model, then train into ``run_dir`` (under its lock); 0 on success."""
    settings = DEFAULTS.with_args(args)
    saved = training.open_run(run_dir, accelerator, args.resume, args.overwrite)

    # Model: the resumed run's config, or the --init-from checkpoint's, or the preset's (once the data fixes num_voxels).
    init_state, model_config = None, None
    if saved is not None:
        model_config = mbm_config_from_dict(saved["model"], str(layout.config_path(run_dir)))
    elif args.init_from:
        try:
            init_model, _ = load_mbm(args.init_from)
        except (UnsafePickleError, ValueError, FileNotFoundError) as error:
            raise type(error)(f"--init-from {args.init_from}: {error}") from None
        model_config, init_state = with_mask_ratio(init_model.config, args.mask_ratio), init_model.state_dict()
    patch_size = model_config.patch_size if model_config is not None else zoo.mbm_patch_size(args.preset)

    # Data: train-split samples of every subject, minus the held-out validation stimuli.
    sources = brain_data.load_sources(args.data_root, args.datasets, args.subjects, patch_size, args.norm, args.pad, args.roi_set)
    held_out = brain_data.holdout_by_source(sources, args.val_fraction, args.seed)
    train_set = brain_data.limit_items(brain_data.build_items(sources, ("train",), args.input, exclude=held_out), args.limit, args.seed)
    val_set = brain_data.build_items(sources, ("train",), args.input, only=held_out)
    if len(train_set) == 0:
        raise ValueError(f"Empty training selection: datasets {args.datasets}, subjects {args.subjects} have no train trials left.")
    if model_config is None:
        model_config = zoo.mbm_config(args.preset, train_set.num_voxels, mask_ratio=args.mask_ratio)
    if model_config.num_voxels != train_set.num_voxels:
        raise ValueError(
            f"Voxel count mismatch: the model expects num_voxels={model_config.num_voxels}, but the data has "
            f"{sources[0].n_vertices} vertices ({train_set.num_voxels} after padding to a multiple of {patch_size}). "
            "Use a checkpoint trained on the same ROI set."
        )
    model = MaskedBrainModel(model_config)
    if init_state is not None:
        model.load_state_dict(init_state, strict=True)

    n_steps = brain_data.steps_per_epoch(len(train_set), settings.batch_size, accelerator.num_processes)
    config = {
        "model": asdict(model_config),
        "data": {
            "pad": args.pad, "norm": args.norm, "input": args.input, "roi_set": args.roi_set,
            "n_vertices": sources[0].n_vertices, "datasets": args.datasets, "sources": [s.name for s in sources],
            "val_fraction": args.val_fraction, "stats": {s.name: s.stats.to_dict() for s in sources},
        },
        "train": {
            "epochs": settings.epochs, "lr": settings.lr, "min_lr_ratio": settings.min_lr_ratio, "warmup_epochs": settings.warmup_epochs,
            "weight_decay": settings.weight_decay, "batch_size": settings.batch_size, "seed": settings.seed, "grad_clip": settings.grad_clip,
            "noise_std": args.noise_std, "num_processes": accelerator.num_processes, "steps_per_epoch": n_steps,
            "total_steps": n_steps * settings.epochs, "init_from": args.init_from, "mixed_precision": accelerator.mixed_precision,
        },
        "preset": args.preset,
        "ran": training.ran(accelerator),
    }
    if saved is not None:  # --resume: the schedule and samples first (their own message), then every other setting
        training.check_resume(saved, config, RESUME_KEYS, run_dir)
        provenance.check_settings(run_dir, STAGE, record, has_outputs=False, ways_on=ways_on(run))
    if accelerator.is_main_process:
        provenance.write_settings(run_dir, STAGE, record)

    # Loss: masked-patch MSE on inputs with optional Gaussian noise. Every process holds the same global RNG
    # and draws the masks and noise of the whole global batch, then takes its share: N processes equal one.
    world, rank = accelerator.num_processes, accelerator.process_index

    def loss_fn(model, x):  # x (B, 1, V): this process's share of a global batch of world * B
        share = slice(rank * len(x), (rank + 1) * len(x))
        if args.noise_std > 0:
            x = x + args.noise_std * torch.randn(world * len(x), *x.shape[1:], device=x.device, dtype=x.dtype)[share]
        mask_noise = torch.rand(world * len(x), model_config.num_patches, device=x.device)[share]  # (B, L)
        return model(x, model_config.mask_ratio, noise=mask_noise)[0]

    def validate(model) -> dict[str, float]:
        return {"val_loss": masked_loss(model, val_set, settings.batch_size, accelerator.device, model_config.mask_ratio, settings.seed, accelerator.autocast)}

    if accelerator.is_main_process:
        print(
            f"MBM {run}: {len(sources)} subject(s) {[s.name for s in sources]}, {len(train_set)} train / {len(val_set)} val "
            f"samples, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {n_steps} steps/epoch x {settings.epochs} "
            f"epochs, {accelerator.num_processes} process(es), precision {accelerator.mixed_precision}, device {accelerator.device}."
        )
    start_time = time.perf_counter()
    progress = training.fit(
        model, training.param_groups(model, settings.weight_decay), train_set, loss_fn, settings, accelerator, run_dir, config,
        RESUME_KEYS, LOG_COLUMNS, validate=validate if len(val_set) else None, resume=saved is not None,
        stop_after_steps=args.stop_after_steps,
    )
    if accelerator.is_main_process and progress.complete:
        write_manifest(
            run_dir, "train_mbm", args,
            inputs={s.name: {"array": str(layout.prepared_array_path(args.data_root, s.dataset, s.folder, args.roi_set)), "shape": list(s.prepared.betas.shape)} for s in sources},
            counts={"train_samples": len(train_set), "val_samples": len(val_set), "steps": progress.step, "epochs": settings.epochs, "subjects": len(sources)},
            run=run, ran=training.ran(accelerator), final_train_loss=progress.last_train_loss, best_val_loss=progress.best_val,
            train_seconds=round(progress.seconds, 2), elapsed_this_call=round(time.perf_counter() - start_time, 2),
        )
        print(f"Done: {layout.weights_path(run_dir, 'best')} (best {'val' if len(val_set) else 'train'} loss {progress.best_val:.4f}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
