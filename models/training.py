"""The training loop shared by the stage scripts (``train_mbm.py``, ``finetune_contrastive.py``).

A script declares its model, its data and its loss, then calls ``fit``; this module does the
rest, the same way for every stage:

- ``start``: the ``accelerate.Accelerator`` (``--device``, ``--dtype``; ``accelerate launch``
  picks the processes) and the seed of this process (``seed + process_index``).
- ``run_status`` / ``open_run``: is a run folder ``absent``, ``interrupted`` or ``complete``;
  ``--resume`` and ``--overwrite`` checked against it.
- ``fit``: AdamW over the given parameter groups, linear warmup then cosine decay per step,
  the epoch loop (seeded batches from ``utils.brain_data.epoch_batches``, a DataLoader with
  its own generator so the global torch RNG serves the model alone), gradient clipping, the
  loss reduced over processes, per-epoch validation, ``last`` / ``best`` checkpoints,
  ``log.csv`` and ``--stop-after-steps``.
- exact resume: ``train_state.pt`` (main process) is the one commit record of a checkpoint: the
  weights, optimizer, scheduler, progress and the RNG state of every process, written
  atomically after ``last.safetensors`` (and ``rng_state_<rank>.pt``, kept for inspection). A
  kill at any instant leaves the previous complete record or the new one, and a resume
  continues from it exactly (log rows of epochs after it are dropped); a resume refuses flags
  that change the schedule or the samples.
- a non-finite training loss stops the run (``NonFiniteLossError``) before the update, naming the
  epoch, the step and the last good checkpoint.

Checkpoint files: ``save_checkpoint`` (safetensors, atomic), ``read_safetensors`` and
``load_state_strict`` (strict loading that names missing / unexpected keys and shapes).
"""
from __future__ import annotations

import csv
import functools
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from utils import layout
from utils.brain_data import epoch_batches, steps_per_epoch
from utils.io import ArtifactError, atomic_path, read_json, write_json, write_text
from utils.seeds import seed_everything


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one training stage.

    Each stage script keeps one instance of its defaults (``DEFAULTS``), which its flags read;
    ``with_args`` then takes the values given on the command line.
    """

    epochs: int
    lr: float  # peak learning rate (groups may set their own)
    warmup_epochs: float  # linear warmup, then cosine decay to ``min_lr_ratio * lr``, per step
    betas: tuple[float, float]  # AdamW
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05
    grad_clip: float = 1.0  # max gradient norm, 0 = off
    batch_size: int = 32  # per process
    seed: int = 0
    val_every: int = 1  # epochs between validations (and the last epoch)
    num_workers: int = 0  # DataLoader workers

    def with_args(self, args: Any) -> TrainSettings:
        """A copy with every field that ``args`` (parsed flags) has replaced by the flag's value."""
        return replace(self, **{f.name: getattr(args, f.name) for f in fields(self) if hasattr(args, f.name)})


# ----------------------------------------------------------------------------- schedule and optimizer


def cosine_warmup_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier: linear warmup to 1 over ``warmup_steps``, then cosine to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms and tokens (1-D or token parameters)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith("_token") else decay).append(param)
    extra = {} if lr is None else {"lr": lr}
    return [{"params": decay, "weight_decay": weight_decay, **extra}, {"params": no_decay, "weight_decay": 0.0, **extra}]


def make_optimizer(groups: list[dict], settings: TrainSettings, steps_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over ``groups`` and its per-step warmup + cosine ``LambdaLR`` for ``settings.epochs`` epochs."""
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=settings.betas)
    total_steps = steps_epoch * settings.epochs
    warmup_steps = int(round(settings.warmup_epochs * steps_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_warmup_factor(step, warmup_steps, total_steps, settings.min_lr_ratio)
    )
    return optimizer, scheduler


# ----------------------------------------------------------------------------- accelerator


def mixed_precision(dtype: str, device: str) -> str:
    """accelerate's ``mixed_precision`` from --dtype: auto = bf16 (fp16 without bf16) on CUDA, none on CPU.

    fp16 mixed precision needs CUDA (accelerate has no CPU fp16): ``--dtype float16`` on a CPU is refused.
    """
    if dtype == "auto":
        if not device.startswith("cuda"):
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    choices = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}
    if dtype not in choices:
        raise ValueError(f"Unknown dtype={dtype!r}; use auto or one of {sorted(choices)}.")
    if choices[dtype] == "fp16" and not device.startswith("cuda"):
        raise ValueError(
            f"--dtype float16 on --device {device}: fp16 mixed precision needs a CUDA GPU (accelerate does not apply it on "
            "the CPU); use --dtype float32 or bfloat16 on the CPU."
        )
    return choices[dtype]


def make_accelerator(device_flag: str, dtype: str):
    """An ``accelerate.Accelerator`` honouring --device (auto, cpu or cuda) and --dtype.

    Under ``accelerate launch`` the launcher picks the GPUs; a plain ``python`` run uses one device.
    """
    from accelerate import Accelerator

    from utils.cli import resolve_device

    device = resolve_device(device_flag)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device={device_flag!r}: use auto, cpu or cuda (pick GPUs with CUDA_VISIBLE_DEVICES or accelerate launch).")
    return Accelerator(cpu=device == "cpu", mixed_precision=mixed_precision(dtype, device))


def start(device_flag: str, dtype: str, seed: int, same_seed: bool = False):
    """The accelerator of this run, with this process seeded by ``seed + process_index``.

    same_seed: seed every process with ``seed`` (a loss that draws the random numbers of the whole
    global batch and takes its own share, so that N processes equal one).
    """
    accelerator = make_accelerator(device_flag, dtype)
    seed_everything(seed if same_seed else seed + accelerator.process_index)
    return accelerator


def ran(accelerator) -> dict[str, Any]:
    """What actually ran: device, mixed precision and number of processes (for config.json and the manifest)."""
    return {"device": str(accelerator.device), "mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes}


def check_run_flags(resume: bool, overwrite: bool) -> None:
    """Refuse ``--resume`` with ``--overwrite`` (continue a run, or delete it: not both) before any work."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite conflict: --resume continues the interrupted run, --overwrite deletes it and "
                         "starts again; pass one of them.")


# Flags that do not change what a training run writes (left out of its settings.json).
NOT_SETTINGS = ("config", "data_root", "device", "dtype", "overwrite", "resume", "stop_after_steps", "num_workers")


def run_settings(args: Any, run: str, precision: str, num_processes: int, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of a training run for ``utils.provenance``: its flags (less ``NOT_SETTINGS`` and
    ``leave_out``), the run name, and the mixed precision and processes it trains with."""
    flags = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS + leave_out}
    return {**flags, "run": run, "mixed_precision": precision, "num_processes": num_processes}


def remake_hint(run_dir: str | Path) -> str:
    """How to make a run folder's files again (for messages naming a corrupt or missing file)."""
    run_dir = Path(run_dir)
    return f"start the run again with the same command plus --overwrite (it deletes {run_dir}'s files), or choose another --run"


# ----------------------------------------------------------------------------- checkpoint files


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes differ from the model built from its config."""


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """``load_state_dict(strict=True)`` after a check that names missing/unexpected keys and shapes.

    Keys starting with one of ``ignore_prefixes`` are dropped first (parts of published
    checkpoints the model does not have).
    """
    state = {k: v for k, v in state.items() if not (ignore_prefixes and k.startswith(ignore_prefixes))}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_describe(shapes)}")
        raise CheckpointMismatchError(f"{source} does not match the model built from its config; " + "; ".join(parts) + ".")
    model.load_state_dict(state, strict=True)


def save_checkpoint(
    directory: str | Path, name: str, model: nn.Module, config: dict[str, Any] | None = None, step: int | None = None
) -> Path:
    """Write ``<directory>/<name>.safetensors`` atomically (and ``config.json`` when given).

    ``step`` (the optimizer step the weights belong to) goes into the file's metadata, so a
    resume can check that weights and optimizer state were saved together.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = layout.weights_path(directory, name)
    metadata = {"format": "pt"} if step is None else {"format": "pt", "step": str(step)}
    with atomic_path(path, suffix=".tmp.safetensors") as tmp:
        save_file(state, str(tmp), metadata=metadata)
    if config is not None:
        write_json(layout.config_path(directory), config)
    return path


def checkpoint_step(path: str | Path) -> int | None:
    """The optimizer step recorded by ``save_checkpoint`` (None when the file has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        step = (handle.metadata() or {}).get("step")
    return int(step) if step is not None else None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict from a safetensors file, with a clear error when it is missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Missing checkpoint {path}.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is truncated or not a safetensors file ({error}).") from error


# ----------------------------------------------------------------------------- logs and RNG state


def append_log(path: str | Path, row: dict[str, Any], columns: tuple[str, ...]) -> None:
    """Append one row to a CSV training log (rewritten atomically, header first)."""
    path = Path(path)
    rows = []
    if path.exists():
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def save_rng_state(path: str | Path) -> None:
    """Torch CPU (and CUDA) RNG state of this process -> ``path`` (atomic)."""
    with atomic_path(path) as tmp:
        torch.save(rng_state(), tmp)


def load_rng_state(path: str | Path) -> None:
    """Restore what ``save_rng_state`` wrote (weights_only load)."""
    rng = torch.load(path, map_location="cpu", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


# ----------------------------------------------------------------------------- run folders and resume


@dataclass
class Progress:
    """Where a run stands; saved in ``train_state.pt`` (these keys) for an exact resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    best_val: float | None = None
    complete: bool = False
    seconds: float = 0.0
    last_train_loss: float | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        """The progress part of a loaded ``train_state.pt``."""
        return cls(**{f.name: state[f.name] for f in fields(cls)})


def read_train_state(run_dir: str | Path, mmap: bool = False) -> dict[str, Any] | None:
    """The loaded ``train_state.pt`` of a run folder (None when there is none).

    mmap=True maps the tensors (the optimizer state) instead of reading them: cheap when only
    the progress fields are wanted. A truncated or foreign file raises ``ArtifactError`` naming it.
    """
    path = layout.train_state_path(run_dir)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, ValueError) as error:  # truncated zip, bad magic, unsafe global
        raise ArtifactError(
            f"{path} is truncated or not a training state this code wrote ({str(error).splitlines()[0]}): {remake_hint(run_dir)}."
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise ArtifactError(f"{path} holds no training progress (found {type(state).__name__}): {remake_hint(run_dir)}.")
    return state


def run_status(run_dir: str | Path) -> str:
    """``absent`` (no training state), ``interrupted`` (a state to ``--resume``) or ``complete``."""
    state = read_train_state(run_dir, mmap=True)
    if state is None:
        return "absent"
    return "complete" if state.get("complete", False) else "interrupted"


def run_files(run_dir: str | Path) -> list[Path]:
    """Every file a training run writes into its folder (what ``--overwrite`` deletes)."""
    files = [layout.weights_path(run_dir, name) for name in ("last", "best")]
    files += [layout.config_path(run_dir), layout.train_state_path(run_dir), layout.log_path(run_dir), layout.manifest_path(run_dir),
              layout.settings_path(run_dir)]
    return files + layout.rng_state_paths(run_dir)


def open_run(run_dir: str | Path, accelerator, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check ``--resume`` / ``--overwrite`` against the run folder; the saved config.json when resuming, else None.

    ``--overwrite`` without ``--resume`` deletes the run's files (main process). Raises when
    the folder holds an interrupted run and neither flag is given, or on ``--resume``
    without a saved state. A complete run (see ``run_status``) is the script's to skip.
    """
    run_dir = Path(run_dir)
    if overwrite and not resume:  # before reading anything: the way on from a corrupt run folder
        if accelerator.is_main_process:
            for path in run_files(run_dir):
                path.unlink(missing_ok=True)
        accelerator.wait_for_everyone()
        return None
    status = run_status(run_dir)
    if resume and status == "absent":
        raise FileNotFoundError(f"--resume: no {layout.train_state_path(run_dir).name} in {run_dir}; start the run without --resume.")
    if status == "interrupted" and not resume:
        raise FileExistsError(f"{run_dir} holds an interrupted run: pass --resume to continue it or --overwrite to restart.")
    return read_json(layout.config_path(run_dir), remake=remake_hint(run_dir)) if resume else None


def check_resume(saved: dict, current: dict, keys: dict[str, tuple[str, ...]], run_dir: str | Path) -> None:
    """Raise when a value in ``keys`` (``{config section: names}``) differs between the saved and the current config."""
    diffs = [
        f"{k}: saved {saved.get(part, {}).get(k)!r}, given {current[part].get(k)!r}"
        for part, names in keys.items()
        for k in names
        if saved.get(part, {}).get(k) != current[part].get(k)
    ]
    if diffs:
        raise ValueError(
            f"--resume of {run_dir}: these flags differ from the interrupted run ({'; '.join(diffs)}). "
            "Give the same flags, or start a new --run to train further."
        )


def rng_state() -> dict[str, torch.Tensor]:
    """Torch CPU (and CUDA) RNG state of this process."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    return rng


def save_training_state(run_dir: Path, accelerator, model: nn.Module, optimizer, scheduler, progress: Progress) -> None:
    """Commit a checkpoint: train_state.pt (main process; weights, optimizer, scheduler, progress and every
    process's RNG state), atomically, after rng_state_<rank>.pt (every process).

    Call it after ``last.safetensors`` is written: a kill before the rename of train_state.pt leaves
    the previous record whole, and a resume continues from that record alone.
    """
    from accelerate.utils import gather_object

    save_rng_state(layout.rng_state_path(run_dir, accelerator.process_index))
    every_rng = gather_object([rng_state()])  # one per process, in rank order
    if accelerator.is_main_process:
        weights = {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        payload = {**asdict(progress), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "model": weights, "rng": every_rng}
        with atomic_path(layout.train_state_path(run_dir)) as tmp:
            torch.save(payload, tmp)


def restore_training_state(run_dir: Path, accelerator, model: nn.Module, optimizer, scheduler) -> Progress:
    """Load the weights, the optimizer, the scheduler, the progress and this process's RNG state of the last commit.

    A train_state.pt from before commits held the weights is paired with last.safetensors (same step required).
    """
    state = read_train_state(run_dir)
    state_path = layout.train_state_path(run_dir)
    if "model" in state:
        load_state_strict(model, state["model"], str(state_path))
    else:
        last = layout.weights_path(run_dir, "last")
        load_state_strict(model, read_safetensors(last), str(last))
        if checkpoint_step(last) not in (None, state["step"]):
            raise RuntimeError(
                f"--resume: {last} holds step {checkpoint_step(last)} but {state_path.name} step {state['step']}: "
                "the run was interrupted while saving. Start it again with --overwrite (or a new --run)."
            )
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress = Progress.from_state(state)
    every_rng = state.get("rng")
    if every_rng is not None and len(every_rng) == accelerator.num_processes:
        rng = every_rng[accelerator.process_index]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    elif layout.rng_state_path(run_dir, accelerator.process_index).exists():
        load_rng_state(layout.rng_state_path(run_dir, accelerator.process_index))
    if accelerator.is_main_process:
        trim_log(layout.log_path(run_dir), progress.epoch)
    else:  # the main process holds the reduced partial sums
        progress.loss_sum, progress.loss_count = 0.0, 0
    return progress


def trim_log(path: Path, epochs_done: int) -> None:
    """Drop log.csv rows of epochs after the committed ``epochs_done`` (written before a kill, redone on resume)."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames or [], list(reader)
    kept = [row for row in rows if int(row["epoch"]) <= epochs_done]
    if len(kept) == len(rows):
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    write_text(path, buffer.getvalue())


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops before the update."""


def non_finite_message(run_dir: Path, value: float, progress: Progress, n_batches: int) -> str:
    """What stopped, where, and the last good checkpoint (the last committed train_state.pt)."""
    state = read_train_state(run_dir, mmap=True)
    if state is None:
        good = "none was saved yet (the run starts from scratch)"
    else:
        good = f"{layout.weights_path(run_dir, 'last')} with {layout.train_state_path(run_dir).name} (step {state['step']}, resumable)"
    return (
        f"Non-finite training loss ({value}) at epoch {progress.epoch + 1}, step {progress.step + 1} (batch "
        f"{progress.batch_in_epoch + 1} of {n_batches}) in {run_dir}: training stopped before this update. The last good "
        f"checkpoint: {good}. Check the inputs for NaN/Inf values (the prepared arrays) or lower --lr."
    )


# ----------------------------------------------------------------------------- the loop


def to_device(batch: Any, device: torch.device) -> Any:
    """A tensor, or a tuple/list of tensors, moved to ``device``."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(b.to(device, non_blocking=True) for b in batch)
    return batch.to(device, non_blocking=True)


def batch_length(batch: Any) -> int:
    """Items in a batch (the length of its first tensor)."""
    return len(batch[0] if isinstance(batch, (tuple, list)) else batch)


def epoch_score(train_loss: float, metrics: dict[str, float] | None, can_validate: bool) -> float | None:
    """What ``best`` minimises: the val loss when there is one, the train loss when nothing validates, else None."""
    if metrics is not None and "val_loss" in metrics:
        return metrics["val_loss"]
    if not can_validate or metrics is not None:
        return train_loss
    return None


def log_row(progress: Progress, train_loss: float, metrics: dict[str, float], lr: float, samples: int, elapsed: float) -> dict[str, str]:
    """One log.csv row: losses with 6 decimals, other metrics with 4."""
    row = {"epoch": progress.epoch + 1, "step": progress.step, "train_loss": f"{train_loss:.6f}", "lr": f"{lr:.3e}",
           "samples_per_s": f"{samples / max(elapsed, 1e-9):.2f}", "seconds": f"{elapsed:.2f}"}
    row.update({k: f"{v:.6f}" if k.endswith("_loss") else f"{v:.4f}" for k, v in metrics.items()})
    return row


def fit(
    model: nn.Module,
    groups: list[dict],
    train_data: Any,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    settings: TrainSettings,
    accelerator,
    run_dir: str | Path,
    config: dict[str, Any],
    resume_keys: dict[str, tuple[str, ...]],
    log_columns: tuple[str, ...],
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    resume: bool = False,
    stop_after_steps: int | None = None,
) -> Progress:
    """Train ``model`` on ``train_data`` (indexable by id lists -> a batch) and write the run folder.

    ``loss_fn(model, batch)`` returns the scalar loss of one batch (on the device).
    ``validate(unwrapped_model)`` (main process, every ``settings.val_every`` epochs and at
    the end) returns log values by column name; ``val_loss`` picks ``best`` (without it, the
    train loss does). ``config`` is written to config.json (checked against the saved one on
    ``resume`` for the names in ``resume_keys``). Returns the progress; ``complete`` is False
    when ``stop_after_steps`` stopped it early.
    """
    run_dir = Path(run_dir)
    if resume:
        check_resume(read_json(layout.config_path(run_dir), remake=remake_hint(run_dir)), config, resume_keys, run_dir)
    steps_epoch = steps_per_epoch(len(train_data), settings.batch_size, accelerator.num_processes)
    optimizer, scheduler = make_optimizer(groups, settings, steps_epoch)
    if resume:
        progress = restore_training_state(run_dir, accelerator, model, optimizer, scheduler)
        if accelerator.is_main_process:
            print(f"Resuming {run_dir} at epoch {progress.epoch + 1}, step {progress.step}.")
    else:
        progress = Progress()
        if accelerator.is_main_process:
            write_json(layout.config_path(run_dir), config)
    model, optimizer = accelerator.prepare(model, optimizer)

    steps_this_call = 0
    while progress.epoch < settings.epochs:
        batches = epoch_batches(len(train_data), settings.batch_size, progress.epoch, settings.seed, accelerator.num_processes, accelerator.process_index)
        loader = torch.utils.data.DataLoader(
            train_data, batch_size=None, sampler=batches[progress.batch_in_epoch :], num_workers=settings.num_workers,
            generator=torch.Generator(),  # keeps the global RNG (masks, noise, dropout) untouched for exact resume
        )
        epoch_start, samples, stopped = time.perf_counter(), 0, False
        model.train()
        bar = tqdm(loader, desc=f"epoch {progress.epoch + 1}/{settings.epochs}", disable=not accelerator.is_local_main_process, leave=False)
        for batch in bar:
            batch = to_device(batch, accelerator.device)
            loss = loss_fn(model, batch)
            bad = (~torch.isfinite(loss.detach())).float().reshape(1)
            if accelerator.num_processes > 1:  # every process stops at the same step
                bad = accelerator.reduce(bad, "sum")
            if bool(bad.item()):
                raise NonFiniteLossError(non_finite_message(run_dir, float(loss.detach()), progress, len(batches)))
            accelerator.backward(loss)
            if settings.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.batch_in_epoch += 1
            progress.loss_sum += float(loss.detach())
            progress.loss_count += 1
            samples += batch_length(batch) * accelerator.num_processes
            steps_this_call += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if stop_after_steps is not None and steps_this_call >= stop_after_steps and progress.batch_in_epoch < len(batches):
                stopped = True
                break
        elapsed = time.perf_counter() - epoch_start
        progress.seconds += elapsed
        totals = accelerator.reduce(
            torch.tensor([progress.loss_sum, progress.loss_count], device=accelerator.device, dtype=torch.float64), "sum"
        )
        if stopped:
            _save_midway(run_dir, accelerator, model, optimizer, scheduler, progress, totals)
            if accelerator.is_main_process:
                print(f"Stopped after {steps_this_call} step(s) at epoch {progress.epoch + 1}, step {progress.step}; continue with --resume.")
            return progress
        _end_epoch(run_dir, accelerator, model, scheduler, progress, float(totals[0] / totals[1]), settings, validate,
                   log_columns, samples, elapsed)
        save_training_state(run_dir, accelerator, model, optimizer, scheduler, progress)
        accelerator.wait_for_everyone()
        if stop_after_steps is not None and steps_this_call >= stop_after_steps and not progress.complete:
            if accelerator.is_main_process:
                print(f"Stopped after {steps_this_call} step(s) at the end of epoch {progress.epoch}; continue with --resume.")
            return progress
    return progress


def _save_midway(run_dir: Path, accelerator, model, optimizer, scheduler, progress: Progress, totals: torch.Tensor) -> None:
    """Save weights and state inside an epoch (the main process keeps the reduced loss sums)."""
    if accelerator.is_main_process:
        progress.loss_sum, progress.loss_count = float(totals[0]), int(totals[1])
        save_checkpoint(run_dir, "last", accelerator.unwrap_model(model), step=progress.step)
    save_training_state(run_dir, accelerator, model, optimizer, scheduler, progress)
    accelerator.wait_for_everyone()


def _end_epoch(
    run_dir: Path, accelerator, model, scheduler, progress: Progress, train_loss: float, settings: TrainSettings,
    validate: Callable[[nn.Module], dict[str, float]] | None, log_columns: tuple[str, ...], samples: int, elapsed: float,
) -> None:
    """Validate, save last (and best), log and print one finished epoch (main process); advance the progress."""
    last_epoch = progress.epoch + 1 == settings.epochs
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        due = validate is not None and ((progress.epoch + 1) % settings.val_every == 0 or last_epoch)
        metrics = validate(unwrapped) if due else None
        save_checkpoint(run_dir, "last", unwrapped, step=progress.step)
        score = epoch_score(train_loss, metrics, validate is not None)
        if score is not None and (progress.best_val is None or score < progress.best_val):
            progress.best_val = score
            save_checkpoint(run_dir, "best", unwrapped)
        row = log_row(progress, train_loss, metrics or {}, scheduler.get_last_lr()[0], samples, elapsed)
        append_log(layout.log_path(run_dir), row, log_columns)
        shown = "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in (metrics or {}).items())
        print(f"epoch {progress.epoch + 1}/{settings.epochs}: train loss {train_loss:.4f}{shown}, {samples / max(elapsed, 1e-9):.1f} samples/s")
    progress.last_train_loss = train_loss
    progress.epoch += 1
    progress.batch_in_epoch, progress.loss_sum, progress.loss_count = 0, 0.0, 0
    progress.complete = last_epoch


def autocast_for(dtype: str, device: str) -> Callable[[], Any] | None:
    """An autocast context factory for ``--dtype`` on ``device`` outside ``fit`` (None = full precision)."""
    precision = mixed_precision(dtype, device)
    if precision == "no":
        return None
    return functools.partial(torch.autocast, device.split(":")[0], dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
