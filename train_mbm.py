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
autocast on GPUs that support it (fp16 otherwise) and fp32 on CPU.

Examples:
  python train_mbm.py --datasets demo --preset tiny --epochs 5 --batch-size 32
  python train_mbm.py --datasets bmd had cc2017 --run all3 --epochs 200 --batch-size 64
  accelerate launch --num_processes 4 train_mbm.py --datasets bmd --run bmd4
  python train_mbm.py --datasets bmd --subjects 1 --init-from sub-01.pth --run sub01
  python train_mbm.py --datasets bmd had cc2017 --run all3 --epochs 200 --batch-size 64 --resume
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from models import zoo
from models.mbm import (
    MaskedBrainModel,
    append_log,
    checkpoint_step,
    config_from_preset,
    cosine_warmup_factor,
    load_mbm,
    load_rng_state,
    load_state_strict,
    make_accelerator,
    masked_loss,
    mbm_config_from_dict,
    param_groups,
    preset_patch_size,
    read_safetensors,
    save_checkpoint,
    save_rng_state,
    with_mask_ratio,
)
from utils import layout
from utils.brain_data import (
    INPUT_MODES,
    NORM_MODES,
    PAD_MODES,
    build_items,
    epoch_batches,
    holdout_by_source,
    limit_items,
    load_sources,
)
from utils.brain_data import steps_per_epoch as count_steps
from utils.cli import common_parser, fraction, nonnegative_float, parse_args, positive_int
from utils.io import atomic_path, read_json, write_json, write_manifest
from utils.seeds import seed_everything

STAGE = "mbm"
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "lr", "samples_per_s", "seconds")
RUN_FILES = ("last.safetensors", "best.safetensors", "config.json", "train_state.pt", "log.csv", "manifest.json")
# Flags that must not change between an interrupted run and its --resume.
RESUME_KEYS = (
    "epochs", "lr", "min_lr_ratio", "warmup_epochs", "weight_decay", "batch_size", "seed", "grad_clip", "noise_std", "num_processes",
    "steps_per_epoch",
)
# Input-pipeline settings that must not change either (the samples and their normalisation).
RESUME_DATA_KEYS = ("pad", "norm", "input", "roi_set", "sources", "val_fraction")


def build_parser():
    """Common flags plus this stage's own."""
    parser = common_parser(__doc__, presets=zoo.PRESETS, multi_dataset=True, roi_set=True)
    parser.set_defaults(batch_size=32)
    parser.add_argument("--run", default=None, help="run name: checkpoints/mbm/<run>/ (default: the --preset name)")
    parser.add_argument("--epochs", type=positive_int, default=100, help="training epochs (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2.5e-4, help="peak AdamW learning rate (default: %(default)s)")
    parser.add_argument("--min-lr-ratio", type=nonnegative_float, default=0.0, help="final lr as a fraction of --lr (default: %(default)s)")
    parser.add_argument("--warmup-epochs", type=nonnegative_float, default=5.0, help="linear warmup length in epochs (default: %(default)s)")
    parser.add_argument("--weight-decay", type=nonnegative_float, default=0.05, help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--grad-clip", type=nonnegative_float, default=1.0, help="max gradient norm, 0 = off (default: %(default)s)")
    parser.add_argument("--mask-ratio", type=fraction, default=None, help="fraction of patches masked (default: the preset's, 0.75)")
    parser.add_argument("--input", default="trials", choices=INPUT_MODES, help="samples: every trial, or each stimulus's mean over repeats (default: %(default)s)")
    parser.add_argument("--pad", default="wrap", choices=PAD_MODES, help="pad vertices to a multiple of the patch size by wrap-around or zeros (default: %(default)s)")
    parser.add_argument("--norm", default="global", choices=NORM_MODES, help="z-score per subject with one train mean/std, per vertex, or none (default: %(default)s)")
    parser.add_argument("--noise-std", type=nonnegative_float, default=0.0, help="augmentation: Gaussian noise added to inputs (default: %(default)s)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1, help="fraction of train stimuli held out for the validation loss (default: %(default)s)")
    parser.add_argument("--val-every", type=positive_int, default=1, help="validate every N epochs and at the end (default: %(default)s)")
    parser.add_argument("--init-from", default=None, help="start from these weights: a published sub-XX.pth or one of our checkpoints (default: random init)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run <run> exactly where it stopped")
    parser.add_argument("--stop-after-steps", type=positive_int, default=None, help="save and stop this invocation after N optimizer steps; continue with --resume (default: run to the end)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    return parser


def check_resume(saved: dict, current: dict, run_dir: Path) -> None:
    """Raise when a flag that shapes the schedule or the samples differs from the interrupted run's (whole configs)."""
    diffs = [
        f"{k}: saved {saved.get(part, {}).get(k)!r}, given {current[part].get(k)!r}"
        for part, keys in (("train", RESUME_KEYS), ("data", RESUME_DATA_KEYS))
        for k in keys
        if saved.get(part, {}).get(k) != current[part].get(k)
    ]
    if diffs:
        raise ValueError(
            f"--resume of {run_dir}: these flags differ from the interrupted run ({'; '.join(diffs)}). "
            "Give the same flags, or start a new --run with --init-from to train further."
        )


def save_training_state(run_dir: Path, accelerator, optimizer, scheduler, state: dict) -> None:
    """train_state.pt (main process) and rng_state_<rank>.pt (every process), atomically."""
    save_rng_state(run_dir / f"rng_state_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        payload = {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        with atomic_path(run_dir / "train_state.pt") as tmp:
            torch.save(payload, tmp)


def main(argv: list[str] | None = None) -> int:
    """Pretrain (or resume) the masked brain model; 0 on success."""
    args = parse_args(build_parser(), argv)
    run = args.run or args.preset
    run_dir = layout.checkpoint_dir(args.data_root, STAGE, run)
    state_path = run_dir / "train_state.pt"
    accelerator = make_accelerator(args.device, args.dtype)
    previous = torch.load(state_path, map_location="cpu", weights_only=True) if state_path.exists() else None
    if args.overwrite and not args.resume:
        if accelerator.is_main_process:
            for path in [run_dir / name for name in RUN_FILES] + sorted(run_dir.glob("rng_state_*.pt")):
                path.unlink(missing_ok=True)
        accelerator.wait_for_everyone()
        previous = None
    elif previous is not None and previous.get("complete") and not args.resume:
        if accelerator.is_main_process:
            print(f"{run_dir} is complete ({previous['step']} steps); pass --overwrite to train it again.")
        return 0
    elif previous is not None and not args.resume:
        raise FileExistsError(f"{run_dir} holds an interrupted run: pass --resume to continue it or --overwrite to restart.")
    elif args.resume and previous is None:
        raise FileNotFoundError(f"--resume: no train_state.pt in {run_dir}; start the run without --resume.")
    seed_everything(args.seed + accelerator.process_index)
    saved_config = read_json(run_dir / "config.json") if previous is not None else None

    # Model: the resumed run's config, or the --init-from checkpoint's, or the preset.
    init_state = None
    if saved_config is not None:
        model_config = mbm_config_from_dict(saved_config["model"], str(run_dir / "config.json"))
    elif args.init_from:
        init_model, _ = load_mbm(args.init_from)
        model_config = with_mask_ratio(init_model.config, args.mask_ratio)
        init_state = init_model.state_dict()
    else:
        model_config = None
    patch_size = model_config.patch_size if model_config is not None else preset_patch_size(args.preset)

    sources = load_sources(args.data_root, args.datasets, args.subjects, patch_size, args.norm, args.pad, args.roi_set)
    held_out = holdout_by_source(sources, args.val_fraction, args.seed)
    train_set = limit_items(build_items(sources, ("train",), args.input, exclude=held_out), args.limit, args.seed)
    val_set = build_items(sources, ("train",), args.input, only=held_out)
    if len(train_set) == 0:
        raise ValueError(f"Empty training selection: datasets {args.datasets}, subjects {args.subjects} have no train trials left.")
    if model_config is None:
        model_config = config_from_preset(args.preset, train_set.num_voxels, mask_ratio=args.mask_ratio)
    if model_config.num_voxels != train_set.num_voxels:
        raise ValueError(
            f"Voxel count mismatch: the model expects num_voxels={model_config.num_voxels}, but the data has "
            f"{sources[0].n_vertices} vertices ({train_set.num_voxels} after padding to a multiple of {patch_size}). "
            "Use a checkpoint trained on the same ROI set."
        )

    model = MaskedBrainModel(model_config)
    if init_state is not None:
        model.load_state_dict(init_state, strict=True)
    n_steps_epoch = count_steps(len(train_set), args.batch_size, accelerator.num_processes)
    total_steps = n_steps_epoch * args.epochs
    warmup_steps = int(round(args.warmup_epochs * n_steps_epoch))
    train_flags = {
        "epochs": args.epochs, "lr": args.lr, "min_lr_ratio": args.min_lr_ratio, "warmup_epochs": args.warmup_epochs,
        "weight_decay": args.weight_decay, "batch_size": args.batch_size, "seed": args.seed, "grad_clip": args.grad_clip,
        "noise_std": args.noise_std, "num_processes": accelerator.num_processes, "steps_per_epoch": n_steps_epoch,
        "total_steps": total_steps, "init_from": args.init_from, "mixed_precision": accelerator.mixed_precision,
    }
    config = {
        "model": asdict(model_config),
        "data": {
            "pad": args.pad, "norm": args.norm, "input": args.input, "roi_set": args.roi_set,
            "n_vertices": sources[0].n_vertices, "datasets": args.datasets, "sources": [s.name for s in sources],
            "val_fraction": args.val_fraction, "stats": {s.name: s.stats.to_dict() for s in sources},
        },
        "train": train_flags,
        "preset": args.preset,
    }
    if saved_config is not None:
        check_resume(saved_config, config, run_dir)

    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_warmup_factor(step, warmup_steps, total_steps, args.min_lr_ratio)
    )
    progress = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "loss_sum": 0.0, "loss_count": 0, "best_val": None, "complete": False, "seconds": 0.0, "last_train_loss": None}
    if previous is not None:
        last = run_dir / "last.safetensors"
        load_state_strict(model, read_safetensors(last), str(last))
        if checkpoint_step(last) not in (None, previous["step"]):
            raise RuntimeError(
                f"--resume: {last} holds step {checkpoint_step(last)} but train_state.pt step {previous['step']}: "
                "the run was interrupted while saving. Start it again with --overwrite (or a new --run)."
            )
        optimizer.load_state_dict(previous["optimizer"])
        scheduler.load_state_dict(previous["scheduler"])
        progress.update({k: previous[k] for k in progress})
        rng_path = run_dir / f"rng_state_{accelerator.process_index}.pt"
        if rng_path.exists():
            load_rng_state(rng_path)
        if accelerator.is_main_process:
            print(f"Resuming {run_dir} at epoch {progress['epoch'] + 1}, step {progress['step']}.")
    elif accelerator.is_main_process:
        write_json(run_dir / "config.json", config)
    if not accelerator.is_main_process:
        progress["loss_sum"], progress["loss_count"] = 0.0, 0

    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    log_path = run_dir / "log.csv"
    if accelerator.is_main_process:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"MBM {run}: {len(sources)} subject(s) {[s.name for s in sources]}, {len(train_set)} train / {len(val_set)} val "
            f"samples, {n_params / 1e6:.2f} M parameters, {n_steps_epoch} steps/epoch x {args.epochs} epochs, "
            f"{accelerator.num_processes} process(es), precision {accelerator.mixed_precision}, device {device}."
        )

    steps_this_call = 0
    stopped = False
    start_time = time.perf_counter()
    while progress["epoch"] < args.epochs and not stopped:
        epoch = progress["epoch"]
        batches = epoch_batches(len(train_set), args.batch_size, epoch, args.seed, accelerator.num_processes, accelerator.process_index)
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=None, sampler=batches[progress["batch_in_epoch"] :], num_workers=args.num_workers,
            generator=torch.Generator(),  # keeps the global RNG (masks, noise) untouched for exact resume
        )
        epoch_start = time.perf_counter()
        samples = 0
        model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not accelerator.is_local_main_process, leave=False)
        for x in bar:
            x = x.to(device, non_blocking=True)  # (B, 1, V)
            if args.noise_std > 0:
                x = x + args.noise_std * torch.randn_like(x)
            loss, _, _ = model(x, model_config.mask_ratio)
            accelerator.backward(loss)
            if args.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress["step"] += 1
            progress["batch_in_epoch"] += 1
            progress["loss_sum"] += float(loss.detach())
            progress["loss_count"] += 1
            samples += len(x) * accelerator.num_processes
            steps_this_call += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if args.stop_after_steps is not None and steps_this_call >= args.stop_after_steps and progress["batch_in_epoch"] < len(batches):
                stopped = True
                break
        elapsed = time.perf_counter() - epoch_start
        progress["seconds"] += elapsed
        totals = accelerator.reduce(torch.tensor([progress["loss_sum"], progress["loss_count"]], device=device, dtype=torch.float64), "sum")
        if stopped:
            if accelerator.is_main_process:
                progress["loss_sum"], progress["loss_count"] = float(totals[0]), int(totals[1])
                save_checkpoint(run_dir, "last", accelerator.unwrap_model(model), step=progress["step"])
            save_training_state(run_dir, accelerator, optimizer, scheduler, progress)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                print(f"Stopped after {steps_this_call} step(s) at epoch {epoch + 1}, step {progress['step']}; continue with --resume.")
            break

        train_loss = float(totals[0] / totals[1])
        last_epoch = epoch + 1 == args.epochs
        val_loss = None
        if accelerator.is_main_process:
            if len(val_set) and ((epoch + 1) % args.val_every == 0 or last_epoch):
                val_loss = masked_loss(
                    accelerator.unwrap_model(model), val_set, args.batch_size, device, model_config.mask_ratio, args.seed, accelerator.autocast
                )
            unwrapped = accelerator.unwrap_model(model)
            save_checkpoint(run_dir, "last", unwrapped, step=progress["step"])
            score = val_loss if len(val_set) else train_loss
            if score is not None and (progress["best_val"] is None or score < progress["best_val"]):
                progress["best_val"] = score
                save_checkpoint(run_dir, "best", unwrapped)
            append_log(log_path, {
                "epoch": epoch + 1, "step": progress["step"], "train_loss": f"{train_loss:.6f}",
                "val_loss": "" if val_loss is None else f"{val_loss:.6f}", "lr": f"{scheduler.get_last_lr()[0]:.3e}",
                "samples_per_s": f"{samples / max(elapsed, 1e-9):.2f}", "seconds": f"{elapsed:.2f}",
            }, LOG_COLUMNS)
            val_text = "" if val_loss is None else f", val loss {val_loss:.4f}"
            print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}{val_text}, {samples / max(elapsed, 1e-9):.1f} samples/s")
        progress.update({"last_train_loss": train_loss, "epoch": epoch + 1, "batch_in_epoch": 0, "loss_sum": 0.0, "loss_count": 0, "complete": last_epoch})
        save_training_state(run_dir, accelerator, optimizer, scheduler, progress)
        accelerator.wait_for_everyone()
        if args.stop_after_steps is not None and steps_this_call >= args.stop_after_steps and not last_epoch:
            if accelerator.is_main_process:
                print(f"Stopped after {steps_this_call} step(s) at the end of epoch {epoch + 1}; continue with --resume.")
            stopped = True

    if accelerator.is_main_process and progress["complete"]:
        write_manifest(
            run_dir, "train_mbm", args,
            inputs={s.name: {"array": str(layout.prepared_array_path(args.data_root, s.dataset, s.folder, args.roi_set)), "shape": list(s.prepared.betas.shape)} for s in sources},
            counts={"train_samples": len(train_set), "val_samples": len(val_set), "steps": progress["step"], "epochs": args.epochs, "subjects": len(sources)},
            run=run, final_train_loss=progress["last_train_loss"],
            best_val_loss=progress["best_val"], train_seconds=round(progress["seconds"], 2),
            elapsed_this_call=round(time.perf_counter() - start_time, 2),
        )
        print(f"Done: {run_dir}/best.safetensors (best {'val' if len(val_set) else 'train'} loss {progress['best_val']:.4f}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
