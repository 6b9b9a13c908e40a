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
log.csv, manifest.json) and ``<data-root>/embeddings/<run>/<ds>/subNN.npy``: one row per
prepared trial (all splits, the rows of the subject's trials table, copied beside it as
``subNN_trials.csv``), plus ``embeddings/<run>/manifest.json`` with the test retrieval
metrics (top-1 among the test stimuli and 2-way identification, per subject and mean).

Examples:
  python finetune_contrastive.py --datasets demo --preset tiny --epochs 20
  python finetune_contrastive.py --datasets bmd --mbm all3 --run bmd_clip --epochs 50
  python finetune_contrastive.py --datasets bmd --subjects 1 --mbm sub-01.pth --run sub01_clip
  accelerate launch --num_processes 4 finetune_contrastive.py --datasets bmd had --mbm all3 --run clip4
"""
from __future__ import annotations

import functools
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models import zoo
from models.contrastive import POOL_MODES, BrainCLIP, HeadConfig, clip_loss, embed, parameter_groups
from models.mbm import (
    MaskedBrainModel,
    append_log,
    config_from_preset,
    cosine_warmup_factor,
    load_mbm,
    make_accelerator,
    mixed_precision,
    preset_patch_size,
    save_checkpoint,
)
from utils import layout
from utils.brain_data import (
    INPUT_MODES,
    TrialSet,
    build_items,
    epoch_batches,
    holdout_by_source,
    limit_items,
    load_sources,
    steps_per_epoch,
)
from utils.cli import common_parser, fraction, nonnegative_float, parse_args, positive_int, resolve_device
from utils.io import atomic_path, is_complete_npy, read_json, save_npy, write_manifest
from utils.metrics import n_way_identification, top_k_retrieval
from utils.seeds import seed_everything
from utils.targets import load_targets

STAGE = "contrastive"
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_top1", "lr", "temperature", "samples_per_s", "seconds")
EXPORTS = ("features", "projection")
RUN_FILES = ("last.safetensors", "best.safetensors", "config.json", "log.csv", "manifest.json")


def build_parser():
    """Common flags plus this stage's own."""
    parser = common_parser(__doc__, presets=zoo.PRESETS, multi_dataset=True, roi_set=True)
    parser.set_defaults(batch_size=32)
    parser.add_argument("--run", default=None, help="run name: checkpoints/contrastive/<run>/ and embeddings/<run>/ (default: the --preset name)")
    parser.add_argument(
        "--mbm", default=None,
        help="MBM encoder to start from: a train_mbm.py run name, a checkpoint folder or file, a published sub-XX.pth, "
        "or 'none' for a random encoder of --preset size (default: the run named like --preset)",
    )
    parser.add_argument("--targets", nargs="+", default=["clip"], help="target names under target_vectors_<ds>/ to align to (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=30, help="training epochs (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the head and temperature (default: %(default)s)")
    parser.add_argument("--encoder-lr", type=float, default=1e-4, help="peak learning rate of the encoder (default: %(default)s)")
    parser.add_argument("--freeze-encoder", action="store_true", help="train only the head and temperature")
    parser.add_argument("--warmup-epochs", type=nonnegative_float, default=2.0, help="linear warmup in epochs (default: %(default)s)")
    parser.add_argument("--weight-decay", type=nonnegative_float, default=0.05, help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--grad-clip", type=nonnegative_float, default=1.0, help="max gradient norm, 0 = off (default: %(default)s)")
    parser.add_argument("--pool", default="tokens", choices=POOL_MODES, help="tokens: each encoder token reduced to --token-dim values, kept by position; mean: the average token (Mind-Vis) (default: %(default)s)")
    parser.add_argument("--token-dim", type=positive_int, default=8, help="values per token with --pool tokens (default: %(default)s)")
    parser.add_argument("--hidden-dim", type=int, default=0, help="hidden width of the projection head, 0 = linear (default: %(default)s)")
    parser.add_argument("--dropout", type=fraction, default=0.1, help="dropout before the projection (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.07, help="initial softmax temperature (learned) (default: %(default)s)")
    parser.add_argument("--train-input", default="averaged", choices=INPUT_MODES, help="train on each stimulus's mean over repeats or on single trials (default: %(default)s)")
    parser.add_argument("--recon-weight", type=nonnegative_float, default=0.0, help="weight of the MBM masked-patch loss regulariser, 0 = off (default: %(default)s)")
    parser.add_argument("--mask-ratio", type=fraction, default=None, help="mask ratio of the regulariser (default: the MBM checkpoint's)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1, help="fraction of train stimuli held out to pick the best epoch (default: %(default)s)")
    parser.add_argument("--export", default="features", choices=EXPORTS, help="embeddings to export: pooled encoder features or the CLIP-space projection (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    return parser


def resolve_mbm(name: str | None, data_root: str, preset: str) -> Path | None:
    """The MBM checkpoint to start from (None = random encoder)."""
    if name == "none":
        return None
    name = name or preset
    if Path(name).exists():
        return Path(name)
    run_dir = layout.checkpoint_dir(data_root, "mbm", name)
    if run_dir.exists():
        return run_dir
    raise FileNotFoundError(
        f"No MBM checkpoint {name!r}: it is neither a file nor {run_dir}. Run `python train_mbm.py --preset {preset} "
        f"--run {name}` first, give a published sub-XX.pth, or pass --mbm none to start from a random encoder."
    )


def target_tables(data_root: str, sources: list, targets: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """``{dataset: {stimulus: (n_targets, E)}}`` for every stimulus of the selected subjects."""
    tables: dict[str, dict[str, np.ndarray]] = {}
    for dataset in dict.fromkeys(s.dataset for s in sources):
        stimuli = sorted({stim for s in sources if s.dataset == dataset for stim in s.prepared.trials.stimulus})
        per_target = [load_targets(data_root, dataset, t, stimuli, pool=True)[0] for t in targets]
        dims = {t: m.shape[1] for t, m in zip(targets, per_target, strict=True)}
        if len(set(dims.values())) > 1:
            raise ValueError(f"--targets {targets} of {dataset} have different sizes {dims}; align to targets of one size.")
        stacked = np.stack(per_target, axis=1)  # (S, n_targets, E)
        tables[dataset] = {stim: stacked[i] for i, stim in enumerate(stimuli)}
    return tables


def item_targets(data: TrialSet, tables: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """Targets (n_items, n_targets, E) of every item."""
    values = np.stack([tables[data.sources[s].dataset][stim] for (s, _), stim in zip(data.items, data.stimuli, strict=True)])
    return values.astype(np.float32)


def retrieval_metrics(pred: np.ndarray, true: np.ndarray, seed: int) -> dict[str, float]:
    """Top-1 retrieval among the given stimuli and 2-way identification, with chance levels."""
    n = len(pred)
    out = {"n_stimuli": n, "top1": float(top_k_retrieval(pred, true, 1)), "chance_top1": 1.0 / max(n, 1)}
    if n >= 2:
        out.update({"two_way": float(n_way_identification(pred, true, 2, seed=seed)), "chance_two_way": 0.5})
    return out


def evaluate(model: BrainCLIP, data: TrialSet, tables: dict, batch_size: int, device, seed: int, autocast=None) -> dict[str, float]:
    """Contrastive loss and retrieval (projection vs first target) over every item of ``data``."""
    if len(data) == 0:
        return {}
    pred = embed(model, data, list(range(len(data))), batch_size, device, "projection", autocast)  # (S, E)
    targets = item_targets(data, tables)
    with torch.no_grad():
        loss = float(np.mean([
            float(clip_loss(pred, torch.from_numpy(targets[:, k]), model.logit_scale.detach().cpu()))
            for k in range(targets.shape[1])
        ]))
    return {"loss": loss, **retrieval_metrics(pred.numpy(), targets[:, 0], seed)}


def single_trials(source) -> TrialSet:
    """Every prepared trial of one source, in trials-table order (one item per row)."""
    n = len(source.prepared.trials)
    return TrialSet([source], [(0, np.asarray([r])) for r in range(n)], list(source.prepared.trials.stimulus))


def train(args, run: str, ckpt_dir: Path) -> None:
    """Fine-tune the encoder + head and write the checkpoint folder."""
    accelerator = make_accelerator(args.device, args.dtype)
    seed_everything(args.seed + accelerator.process_index)
    mbm_path = resolve_mbm(args.mbm, args.data_root, args.preset)
    if mbm_path is not None:
        encoder, mbm_config = load_mbm(mbm_path)
        data_config = mbm_config["data"]
        patch_size = encoder.config.patch_size
    else:
        encoder, data_config, patch_size = None, {"pad": "wrap", "norm": "global"}, preset_patch_size(args.preset)
    sources = load_sources(args.data_root, args.datasets, args.subjects, patch_size, data_config["norm"], data_config["pad"], args.roi_set)
    held_out = holdout_by_source(sources, args.val_fraction, args.seed)
    train_set = limit_items(build_items(sources, ("train",), args.train_input, exclude=held_out), args.limit, args.seed)
    val_set = build_items(sources, ("train",), "averaged", only=held_out)
    if len(train_set) < 2:
        raise ValueError(f"Empty training selection: datasets {args.datasets}, subjects {args.subjects} give {len(train_set)} train item(s).")
    if encoder is None:
        encoder = MaskedBrainModel(config_from_preset(args.preset, train_set.num_voxels))
    if encoder.config.num_voxels != train_set.num_voxels:
        raise ValueError(
            f"Voxel count mismatch: the MBM checkpoint {mbm_path} expects num_voxels={encoder.config.num_voxels}, but the data has "
            f"{sources[0].n_vertices} vertices ({train_set.num_voxels} after padding to a multiple of {patch_size})."
        )
    tables = target_tables(args.data_root, sources, args.targets)
    train_targets = item_targets(train_set, tables)
    out_dim = train_targets.shape[-1]
    head = HeadConfig(out_dim, args.pool, args.token_dim, args.hidden_dim, args.dropout, args.temperature)
    model = BrainCLIP(encoder, head)
    recon_ratio = None
    if args.recon_weight > 0:
        recon_ratio = encoder.config.mask_ratio if args.mask_ratio is None else args.mask_ratio
    model.set_trainable(encoder=not args.freeze_encoder, decoder=recon_ratio is not None and not args.freeze_encoder)

    n_steps_epoch = steps_per_epoch(len(train_set), args.batch_size, accelerator.num_processes)
    total_steps = n_steps_epoch * args.epochs
    warmup_steps = int(round(args.warmup_epochs * n_steps_epoch))
    optimizer = torch.optim.AdamW(parameter_groups(model, args.lr, args.encoder_lr, args.weight_decay, args.freeze_encoder), betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_warmup_factor(step, warmup_steps, total_steps))
    config = {
        "model": {k: getattr(encoder.config, k) for k in encoder.config.__dataclass_fields__},
        "head": model.describe(),
        "data": {
            "pad": data_config["pad"], "norm": data_config["norm"], "roi_set": args.roi_set, "n_vertices": sources[0].n_vertices,
            "sources": [s.name for s in sources], "train_input": args.train_input, "targets": args.targets,
            "val_fraction": args.val_fraction,
        },
        "train": {
            "epochs": args.epochs, "lr": args.lr, "encoder_lr": args.encoder_lr, "freeze_encoder": args.freeze_encoder,
            "warmup_epochs": args.warmup_epochs, "weight_decay": args.weight_decay, "batch_size": args.batch_size,
            "seed": args.seed, "recon_weight": args.recon_weight, "recon_mask_ratio": recon_ratio,
            "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
        },
        "mbm": str(mbm_path) if mbm_path is not None else None,
        "preset": args.preset,
    }
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    if accelerator.is_main_process:
        print(
            f"Contrastive {run}: {len(sources)} subject(s), {len(train_set)} train / {len(val_set)} val items, targets "
            f"{args.targets} (dim {out_dim}), encoder from {mbm_path or 'random init'}, {n_steps_epoch} steps/epoch x {args.epochs} epochs."
        )

    best, step, start = None, 0, time.perf_counter()
    for epoch in range(args.epochs):
        batches = epoch_batches(len(train_set), args.batch_size, epoch, args.seed, accelerator.num_processes, accelerator.process_index)
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=None, sampler=batches, num_workers=args.num_workers, generator=torch.Generator()
        )
        model.train()
        loss_sum, samples, epoch_start = 0.0, 0, time.perf_counter()
        bar = tqdm(zip(loader, batches, strict=True), total=len(batches), desc=f"epoch {epoch + 1}/{args.epochs}",
                   disable=not accelerator.is_local_main_process, leave=False)
        for x, ids in bar:
            x = x.to(device, non_blocking=True)  # (B, 1, V)
            targets = torch.from_numpy(train_targets[ids]).to(device)  # (B, n_targets, E)
            emb, scale, recon = model(x, recon_ratio)
            loss = sum(clip_loss(emb, targets[:, k], scale) for k in range(targets.shape[1])) / targets.shape[1]
            if recon is not None:
                loss = loss + args.recon_weight * recon
            accelerator.backward(loss)
            if args.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_sum += float(loss.detach())
            samples += len(x) * accelerator.num_processes
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        elapsed = time.perf_counter() - epoch_start
        train_loss = float(accelerator.reduce(torch.tensor(loss_sum / len(batches), device=device), "mean"))
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            val = evaluate(unwrapped, val_set, tables, args.batch_size, device, args.seed, accelerator.autocast)
            save_checkpoint(ckpt_dir, "last", unwrapped, config)
            score = val.get("loss", train_loss)
            if best is None or score < best:
                best = score
                save_checkpoint(ckpt_dir, "best", unwrapped)
            append_log(ckpt_dir / "log.csv", {
                "epoch": epoch + 1, "step": step, "train_loss": f"{train_loss:.6f}",
                "val_loss": f"{val['loss']:.6f}" if val else "", "val_top1": f"{val['top1']:.4f}" if val else "",
                "lr": f"{scheduler.get_last_lr()[0]:.3e}", "temperature": f"{float(torch.exp(-unwrapped.logit_scale.detach())):.4f}",
                "samples_per_s": f"{samples / max(elapsed, 1e-9):.2f}", "seconds": f"{elapsed:.2f}",
            }, LOG_COLUMNS)
            val_text = f", val loss {val['loss']:.4f}, val top-1 {val['top1']:.3f} (chance {val['chance_top1']:.3f})" if val else ""
            print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}{val_text}")
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(
            ckpt_dir, "finetune_contrastive", args,
            inputs={"mbm": str(mbm_path) if mbm_path else None, **{s.name: list(s.prepared.betas.shape) for s in sources}},
            counts={"train_items": len(train_set), "val_items": len(val_set), "steps": step, "epochs": args.epochs},
            run=run, best_score=best, train_seconds=round(time.perf_counter() - start, 2),
        )


def export(args, run: str, ckpt_dir: Path) -> dict:
    """Test retrieval metrics and embeddings of every prepared trial, from the best checkpoint."""
    from models.contrastive import load_brainclip

    model, config = load_brainclip(ckpt_dir)
    device = resolve_device(args.device)
    model.to(device)
    autocast = None
    precision = mixed_precision(args.dtype, device)
    if precision != "no":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        autocast = functools.partial(torch.autocast, device.split(":")[0], dtype=dtype)
    data_config = config["data"]
    sources = load_sources(args.data_root, args.datasets, args.subjects, model.encoder.config.patch_size,
                           data_config["norm"], data_config["pad"], args.roi_set)
    tables = target_tables(args.data_root, sources, config["data"]["targets"])
    metrics, written, skipped = {}, [], []
    for source in sources:
        test = build_items([source], ("test",), "averaged")
        train_avg = build_items([source], ("train",), "averaged")
        metrics[source.name] = {
            "test": evaluate(model, test, tables, args.batch_size, device, args.seed, autocast),
            "train": evaluate(model, train_avg, tables, args.batch_size, device, args.seed, autocast),
        }
        path = layout.embeddings_path(args.data_root, run, source.dataset, source.folder)
        trials = single_trials(source)
        dim = model.feature_dim if args.export == "features" else model.head_config.out_dim
        if not args.overwrite and is_complete_npy(path, (len(trials), dim)):
            skipped.append(str(path))
            continue
        ids = list(range(len(trials)))
        chunks = [
            embed(model, trials, ids[lo : lo + 1024], args.batch_size, device, args.export, autocast).numpy()
            for lo in tqdm(range(0, len(ids), 1024), desc=f"embed {source.name}", leave=False)
        ]
        table = layout.prepared_trials_path(args.data_root, source.dataset, source.folder, args.roi_set)
        with atomic_path(path.with_name(f"{source.folder}_trials.csv")) as tmp:
            shutil.copyfile(table, tmp)
        save_npy(path, np.concatenate(chunks).astype(np.float32))  # (n_trials, E); written last: it marks the subject done
        written.append(str(path))
    summary = {
        key: float(np.mean([m["test"][key] for m in metrics.values() if key in m["test"]]))
        for key in ("top1", "chance_top1", "two_way")
        if any(key in m["test"] for m in metrics.values())
    }
    out_dir = layout.embeddings_dir(args.data_root, run)
    write_manifest(
        out_dir, "finetune_contrastive", args, inputs={"checkpoint": str(ckpt_dir)},
        counts={"subjects": len(sources), "written": len(written), "skipped": len(skipped)},
        run=run, export=args.export, test_mean=summary, metrics=metrics, embeddings=written + skipped,
    )
    return {"test_mean": summary, "metrics": metrics, "written": written, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    """Fine-tune an MBM encoder against CLIP targets, then export embeddings for every trial; 0 on success."""
    args = parse_args(build_parser(), argv)
    run = args.run or args.preset
    ckpt_dir = layout.checkpoint_dir(args.data_root, STAGE, run)
    if args.overwrite:
        for name in RUN_FILES:
            (ckpt_dir / name).unlink(missing_ok=True)
    if (ckpt_dir / "manifest.json").exists() and read_json(ckpt_dir / "manifest.json", {}).get("stage") == "finetune_contrastive":
        print(f"{ckpt_dir} is already trained; exporting what is missing (pass --overwrite to train again).")
    else:
        train(args, run, ckpt_dir)
    from accelerate import PartialState

    if not PartialState().is_main_process:
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
    raise SystemExit(main())
