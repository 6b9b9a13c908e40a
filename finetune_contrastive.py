"""Stage 2b: contrastive fine-tuning of the MBM encoder to CLIP; exports encoder embeddings.

Reads the prepared subjects (``download_data.py --prepare``), an MBM checkpoint (``--mbm``:
a run of ``train_mbm.py``, a checkpoint folder or file, or a published ``sub-XX.pth``) and
the CLIP embedding of every stimulus, ``<data-root>/target_vectors_<ds>/<target>/<stim>.npy``
(``--targets clip``, made by ``extract_targets_blip.py``; several names, e.g. an image and a
caption embedding of the same size, average their losses).

Trains the encoder + a projection head with a symmetric InfoNCE loss (learnable temperature)
on the train split (``--val-fraction`` of the train stimuli held out to pick ``best``),
optionally keeping the MBM masked-patch loss as a regulariser (``--recon-weight``).
The input pipeline (padding, normalisation) is the MBM checkpoint's. The encoder output is
pooled by ``--pool tokens`` (default: each token reduced to ``--token-dim`` values and kept
by position; on the demo it reaches ~0.96 test top-1 where ``--pool mean``, the Mind-Vis
average token, stays at chance with a tiny encoder) before the projection head. ``--export``
picks what the embeddings hold: the pooled features (default) or the CLIP-space projection.

Writes ``<data-root>/checkpoints/contrastive/<run>/`` ({last,best}.safetensors, config.json,
log.csv, manifest.json, and ``train_state.pt`` + ``rng_state_<rank>.pt`` for an exact
``--resume`` after ``--stop-after-steps`` or a crash) and ``<data-root>/embeddings/<run>/<ds>/subNN.npy``: one row per
prepared trial (all splits, the rows of the subject's trials table, copied beside it as
``subNN_trials.csv``), plus ``embeddings/<run>/manifest.json`` with the test retrieval
metrics (top-1 among the test stimuli and 2-way identification, per subject and mean).

Every run records its settings (``settings.json`` beside the checkpoints, and beside the
embeddings the checkpoint digest and export settings they were made with): a rerun with the same
flags skips finished work; other flags are refused with the list of differences (``--overwrite``
redoes the work, a new ``--run`` keeps both). ``--device cuda`` without a GPU, ``--dtype float16``
on the CPU and ``--resume --overwrite`` are refused before any work.

Examples:
  python finetune_contrastive.py --datasets demo --preset tiny --epochs 20
  python finetune_contrastive.py --datasets bmd --mbm all3 --run bmd_clip --epochs 50
  python finetune_contrastive.py --datasets bmd --subjects 1 --mbm sub-01.pth --run sub01_clip
  accelerate launch --num_processes 4 finetune_contrastive.py --datasets bmd had --mbm all3 --run clip4
  python finetune_contrastive.py --datasets bmd --mbm all3 --run bmd_clip --epochs 50 --resume
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from models import contrastive, training, zoo
from models.mbm import MaskedBrainModel, load_mbm, resolve_mbm_run
from utils import brain_data, layout, provenance
from utils.cli import common_parser, fraction, nonnegative_float, parse_args, positive_int, resolve_device, run_main, run_name
from utils.io import is_complete_npy, read_json, remove_stale_temps, sha256_file, write_manifest
from utils.locks import run_lock

STAGE = "contrastive"
DEFAULTS = training.TrainSettings(epochs=30, lr=1e-3, warmup_epochs=2.0, betas=(0.9, 0.98))
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_top1", "lr", "temperature", "samples_per_s", "seconds")
EXPORTS = ("features", "projection")
EXPORT_STAGE = "finetune_contrastive.export"
EXPORT_ONLY = ("export",)  # flags that change the embeddings but not the training run
# What must not change between an interrupted run and its --resume: the model, the schedule and the samples.
RESUME_KEYS = {
    "head": ("out_dim", "pool", "token_dim", "hidden_dim", "dropout", "temperature"),
    "train": ("epochs", "lr", "encoder_lr", "freeze_encoder", "warmup_epochs", "weight_decay", "batch_size", "seed", "recon_weight",
              "recon_mask_ratio", "num_processes", "grad_clip", "steps_per_epoch"),
    "data": ("pad", "norm", "roi_set", "sources", "train_input", "targets", "val_fraction"),
}


def build_parser():
    """Common flags plus this stage's own; defaults from ``DEFAULTS`` and ``HeadConfig``."""
    parser = common_parser(__doc__, presets=zoo.PRESETS, multi_dataset=True, roi_set=True)
    parser.set_defaults(batch_size=DEFAULTS.batch_size)
    parser.add_argument("--run", type=run_name, default=None, help="run name: checkpoints/contrastive/<run>/ and embeddings/<run>/ (default: the --preset name)")
    parser.add_argument(
        "--mbm", default=None,
        help="MBM encoder to start from: a train_mbm.py run name, a checkpoint folder or file, a published sub-XX.pth, "
        "or 'none' for a random encoder of --preset size (default: the run named like --preset)",
    )
    parser.add_argument("--targets", nargs="+", default=["clip"], help="target names under target_vectors_<ds>/ to align to (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak learning rate of the head and temperature (default: %(default)s)")
    parser.add_argument("--encoder-lr", type=float, default=1e-4, help="peak learning rate of the encoder (default: %(default)s)")
    parser.add_argument("--freeze-encoder", action="store_true", help="train only the head and temperature")
    parser.add_argument("--warmup-epochs", type=nonnegative_float, default=DEFAULTS.warmup_epochs, help="linear warmup in epochs (default: %(default)s)")
    parser.add_argument("--weight-decay", type=nonnegative_float, default=DEFAULTS.weight_decay, help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--grad-clip", type=nonnegative_float, default=DEFAULTS.grad_clip, help="max gradient norm, 0 = off (default: %(default)s)")
    head = contrastive.HeadConfig
    parser.add_argument("--pool", default=head.pool, choices=contrastive.POOL_MODES, help="tokens: each encoder token reduced to --token-dim values, kept by position; mean: the average token (Mind-Vis) (default: %(default)s)")
    parser.add_argument("--token-dim", type=positive_int, default=head.token_dim, help="values per token with --pool tokens (default: %(default)s)")
    parser.add_argument("--hidden-dim", type=int, default=head.hidden_dim, help="hidden width of the projection head, 0 = linear (default: %(default)s)")
    parser.add_argument("--dropout", type=fraction, default=head.dropout, help="dropout before the projection (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=head.temperature, help="initial softmax temperature (learned) (default: %(default)s)")
    parser.add_argument("--train-input", default="averaged", choices=brain_data.INPUT_MODES, help="train on each stimulus's mean over repeats or on single trials (default: %(default)s)")
    parser.add_argument("--recon-weight", type=nonnegative_float, default=0.0, help="weight of the MBM masked-patch loss regulariser, 0 = off (default: %(default)s)")
    parser.add_argument("--mask-ratio", type=fraction, default=None, help="mask ratio of the regulariser (default: the MBM checkpoint's)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1, help="fraction of train stimuli held out to pick the best epoch (default: %(default)s)")
    parser.add_argument("--export", default="features", choices=EXPORTS, help="embeddings to export: pooled encoder features or the CLIP-space projection (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run <run> exactly where it stopped")
    parser.add_argument("--stop-after-steps", type=positive_int, default=None, help="save and stop this invocation after N optimizer steps; continue with --resume (default: run to the end)")
    parser.add_argument("--num-workers", type=int, default=DEFAULTS.num_workers, help="DataLoader worker processes (default: %(default)s)")
    return parser


def ways_on(run: str) -> str:
    """What a user can do when a folder holds outputs made with other flags."""
    return f"pass --overwrite to redo run {run!r} with these flags, or choose another --run to keep both"


def train(args, run: str, ckpt_dir: Path, accelerator, record: dict) -> bool:
    """Fine-tune the encoder + head into the checkpoint folder (under its lock); True when the run is complete."""
    settings = DEFAULTS.with_args(args)
    saved = training.open_run(ckpt_dir, accelerator, args.resume, args.overwrite)

    # Model: the MBM encoder (its input pipeline too) + pooling + projection head.
    mbm_path = resolve_mbm_run(args.mbm, args.data_root, args.preset)
    encoder, mbm_config = load_mbm(mbm_path) if mbm_path is not None else (None, {"data": {"pad": "wrap", "norm": "global"}})
    data_config = mbm_config["data"]
    patch_size = encoder.config.patch_size if encoder is not None else zoo.mbm_patch_size(args.preset)

    # Data: train-split items with their CLIP targets, minus the held-out validation stimuli.
    sources = brain_data.load_sources(
        args.data_root, args.datasets, args.subjects, patch_size, data_config["norm"], data_config["pad"], args.roi_set
    )
    held_out = brain_data.holdout_by_source(sources, args.val_fraction, args.seed)
    train_set = brain_data.build_items(sources, ("train",), args.train_input, exclude=held_out)
    train_set = brain_data.limit_items(train_set, args.limit, args.seed)
    val_set = brain_data.build_items(sources, ("train",), "averaged", only=held_out)
    if len(train_set) < 2:
        raise ValueError(f"Empty training selection: datasets {args.datasets}, subjects {args.subjects} give {len(train_set)} train item(s).")
    if encoder is None:
        encoder = MaskedBrainModel(zoo.mbm_config(args.preset, train_set.num_voxels))
    if encoder.config.num_voxels != train_set.num_voxels:
        raise ValueError(
            f"Voxel count mismatch: the MBM checkpoint {mbm_path} expects num_voxels={encoder.config.num_voxels}, but the data has "
            f"{sources[0].n_vertices} vertices ({train_set.num_voxels} after padding to a multiple of {patch_size})."
        )
    tables = brain_data.target_tables(args.data_root, sources, args.targets)
    train_data = brain_data.ItemsWithTargets(train_set, brain_data.item_targets(train_set, tables))  # ids -> (x, targets (B, n_targets, E))
    head = contrastive.HeadConfig(train_data.targets.shape[-1], args.pool, args.token_dim, args.hidden_dim, args.dropout, args.temperature)
    model = contrastive.BrainCLIP(encoder, head)
    recon_ratio = None if args.recon_weight == 0 else (encoder.config.mask_ratio if args.mask_ratio is None else args.mask_ratio)
    model.set_trainable(encoder=not args.freeze_encoder, decoder=recon_ratio is not None and not args.freeze_encoder)

    config = {
        "model": {k: getattr(encoder.config, k) for k in encoder.config.__dataclass_fields__},
        "head": model.describe(),
        "data": {
            "pad": data_config["pad"], "norm": data_config["norm"], "roi_set": args.roi_set, "n_vertices": sources[0].n_vertices,
            "sources": [s.name for s in sources], "train_input": args.train_input, "targets": args.targets,
            "val_fraction": args.val_fraction,
        },
        "train": {
            "epochs": settings.epochs, "lr": settings.lr, "encoder_lr": args.encoder_lr, "freeze_encoder": args.freeze_encoder,
            "warmup_epochs": settings.warmup_epochs, "weight_decay": settings.weight_decay, "batch_size": settings.batch_size,
            "seed": settings.seed, "recon_weight": args.recon_weight, "recon_mask_ratio": recon_ratio,
            "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision, "grad_clip": settings.grad_clip,
            "steps_per_epoch": brain_data.steps_per_epoch(len(train_set), settings.batch_size, accelerator.num_processes),
        },
        "mbm": str(mbm_path) if mbm_path is not None else None,
        "preset": args.preset,
        "ran": training.ran(accelerator),
    }
    if saved is not None:  # --resume: the model, schedule and samples first (their own message), then every other setting
        training.check_resume(saved, config, RESUME_KEYS, ckpt_dir)
        provenance.check_settings(ckpt_dir, STAGE, record, has_outputs=False, ways_on=ways_on(run))
    if accelerator.is_main_process:
        provenance.write_settings(ckpt_dir, STAGE, record)

    # Loss: symmetric InfoNCE against each target name (averaged), plus the optional MBM regulariser.
    def loss_fn(model, batch):
        x, targets = batch
        emb, scale, recon = model(x, recon_ratio)
        loss = sum(contrastive.clip_loss(emb, targets[:, k], scale) for k in range(targets.shape[1])) / targets.shape[1]
        return loss if recon is None else loss + args.recon_weight * recon

    def validate(model) -> dict[str, float]:
        val = contrastive.evaluate(model, val_set, tables, settings.batch_size, accelerator.device, settings.seed, accelerator.autocast)
        scores = {"val_loss": val["loss"], "val_top1": val["top1"]} if val else {}
        return {**scores, "temperature": float(model.logit_scale.detach().neg().exp())}

    if accelerator.is_main_process:
        print(
            f"Contrastive {run}: {len(sources)} subject(s), {len(train_set)} train / {len(val_set)} val items, targets "
            f"{args.targets} (dim {model.head_config.out_dim}), encoder from {mbm_path or 'random init'}, {settings.epochs} epochs."
        )
    groups = contrastive.parameter_groups(model, settings.lr, args.encoder_lr, settings.weight_decay, args.freeze_encoder)
    progress = training.fit(
        model, groups, train_data, loss_fn, settings, accelerator, ckpt_dir, config, RESUME_KEYS, LOG_COLUMNS,
        validate=validate, resume=saved is not None, stop_after_steps=args.stop_after_steps,
    )
    if accelerator.is_main_process and progress.complete:
        write_manifest(
            ckpt_dir, "finetune_contrastive", args,
            inputs={"mbm": str(mbm_path) if mbm_path else None, **{s.name: list(s.prepared.betas.shape) for s in sources}},
            counts={"train_items": len(train_set), "val_items": len(val_set), "steps": progress.step, "epochs": settings.epochs},
            run=run, ran=training.ran(accelerator), best_score=progress.best_val, train_seconds=round(progress.seconds, 2),
        )
    return progress.complete


def export_settings(args, run: str, ckpt_dir: Path, precision: str) -> dict:
    """What the embeddings of a run are made from: the checkpoint (by digest), the export kind, the ROI set, the precision."""
    return {"run": run, "checkpoint_sha256": sha256_file(layout.weights_path(ckpt_dir, "best")), "export": args.export,
            "roi_set": args.roi_set, "mixed_precision": precision}


def export(args, run: str, ckpt_dir: Path) -> dict:
    """Test retrieval metrics and embeddings of every prepared trial, from the best checkpoint.

    The embeddings folder records its settings; embeddings made from another checkpoint or with
    other settings are refused (never mixed), unless ``--overwrite`` redoes them.
    """
    model, config = contrastive.load_brainclip(ckpt_dir)
    device = resolve_device(args.device)
    model.to(device)
    autocast = training.autocast_for(args.dtype, device)
    out_dir = layout.embeddings_dir(args.data_root, run)
    with run_lock(out_dir, EXPORT_STAGE):
        return export_locked(args, run, ckpt_dir, model, config, device, autocast)


def export_locked(args, run: str, ckpt_dir: Path, model, config: dict, device: str, autocast) -> dict:
    """``export`` under the lock of the embeddings folder."""
    out_dir = layout.embeddings_dir(args.data_root, run)
    record = export_settings(args, run, ckpt_dir, training.mixed_precision(args.dtype, device))
    for folder in [out_dir, *(sorted(d for d in out_dir.iterdir() if d.is_dir()) if out_dir.is_dir() else [])]:
        remove_stale_temps(folder)  # a killed export's temporary files (we hold the folder's lock)
    existing = sorted(out_dir.glob("*/*.npy"))
    if not args.overwrite:
        provenance.check_settings(out_dir, EXPORT_STAGE, record, has_outputs=bool(existing), ways_on=ways_on(run))
    provenance.write_settings(out_dir, EXPORT_STAGE, record)
    sources = brain_data.load_sources(
        args.data_root, args.datasets, args.subjects, model.encoder.config.patch_size, config["data"]["norm"], config["data"]["pad"], args.roi_set
    )
    tables = brain_data.target_tables(args.data_root, sources, config["data"]["targets"])
    dim = model.feature_dim if args.export == "features" else model.head_config.out_dim
    metrics, written, skipped = {}, [], []
    for source in sources:
        metrics[source.name] = contrastive.split_retrieval(model, source, tables, args.batch_size, device, args.seed, autocast)
        path = layout.embeddings_path(args.data_root, run, source.dataset, source.folder)
        if not args.overwrite and is_complete_npy(path, (len(source.prepared.trials), dim)):
            skipped.append(str(path))
            continue
        contrastive.export_embeddings(model, source, args.data_root, run, args.roi_set, args.export, args.batch_size, device, autocast)
        written.append(str(path))
    tests = [m["test"] for m in metrics.values()]
    summary = {key: float(np.mean([t[key] for t in tests if key in t])) for key in ("top1", "chance_top1", "two_way") if any(key in t for t in tests)}
    if written or not layout.manifest_path(out_dir).exists():  # nothing new: the manifest of the work stays as it is
        write_manifest(
            out_dir, "finetune_contrastive", args, inputs={"checkpoint": str(ckpt_dir), "checkpoint_sha256": record["checkpoint_sha256"]},
            counts={"subjects": len(sources), "written": len(written), "skipped": len(skipped)},
            run=run, export=args.export, test_mean=summary, metrics=metrics, embeddings=written + skipped,
        )
    return {"test_mean": summary, "metrics": metrics, "written": written, "skipped": skipped}


def already_trained(ckpt_dir: Path) -> bool:
    """Complete by its training state, or trained before runs kept one (best weights beside this stage's manifest)."""
    status = training.run_status(ckpt_dir)
    if status != "absent":
        return status == "complete"
    manifest = read_json(layout.manifest_path(ckpt_dir), default={}) or {}
    return manifest.get("stage") == "finetune_contrastive" and layout.weights_path(ckpt_dir, "best").exists()


def main(argv: list[str] | None = None) -> int:
    """Fine-tune an MBM encoder against CLIP targets, then export embeddings for every trial; 0 on success."""
    args = parse_args(build_parser(), argv)
    training.check_run_flags(args.resume, args.overwrite)
    run = args.run or args.preset
    ckpt_dir = layout.checkpoint_dir(args.data_root, STAGE, run)
    accelerator = training.start(args.device, args.dtype, args.seed)  # refuses a device/dtype it cannot apply
    record = training.run_settings(args, run, accelerator.mixed_precision, accelerator.num_processes, leave_out=EXPORT_ONLY)
    with run_lock(ckpt_dir, STAGE):
        if accelerator.is_main_process:
            remove_stale_temps(ckpt_dir)
        if not (args.resume or args.overwrite) and already_trained(ckpt_dir):
            provenance.check_settings(ckpt_dir, STAGE, record, has_outputs=True, ways_on=ways_on(run))
            print(f"{ckpt_dir} is already trained (same settings); exporting what is missing (pass --overwrite to train again).")
        elif not train(args, run, ckpt_dir, accelerator, record):
            return 0  # stopped early (--stop-after-steps): export after the --resume
    if not accelerator.is_main_process:
        return 0
    result = export(args, run, ckpt_dir)
    mean = result["test_mean"]
    print(
        f"Test retrieval (mean over subjects): top-1 {mean.get('top1', float('nan')):.3f} (chance {mean.get('chance_top1', float('nan')):.3f}), "
        f"2-way {mean.get('two_way', float('nan')):.3f} (chance 0.5). Embeddings: {len(result['written'])} written, "
        f"{len(result['skipped'])} already complete, under {layout.embeddings_dir(args.data_root, run)}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
