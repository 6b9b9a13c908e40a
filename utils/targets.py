"""Reading the per-stimulus targets ``target_vectors_<ds>/<target>/<stim>.npy``: one loader.

Every stage that consumes targets (contrastive fine-tuning, regression, reconstruction's
oracles) reads them here, so a missing or unreadable file always names its path and the
command that makes it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils import layout

# The script that writes each target (for the "run this first" messages).
TARGET_SCRIPTS = {
    "z_zeroscope": "extract_targets_zeroscope.py",
    "blip": "extract_targets_blip.py",
    "clip": "extract_targets_blip.py",
    "clip_frames": "extract_targets_blip.py",
    "clip_text": "extract_targets_blip.py",
}


def target_command(target: str, dataset: str) -> str:
    """The command that makes a target for a dataset (for error messages)."""
    script = TARGET_SCRIPTS.get(target, "the target extraction script that writes this target")
    return f"python {script} --dataset {dataset}"


def check_targets_exist(data_root: str | Path | None, dataset: str, target: str, stimuli: Sequence[str]) -> None:
    """Raise listing every stimulus whose target file is missing, with the command that makes it."""
    missing = [s for s in stimuli if not layout.target_path(data_root, dataset, target, s).exists()]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise FileNotFoundError(
            f"Target {target!r} is missing for {len(missing)} of {len(stimuli)} {dataset} stimuli in "
            f"{layout.targets_dir(data_root, dataset, target)}: {shown}. Run `{target_command(target, dataset)}` first."
        )


def read_target(path: Path, target: str, dataset: str) -> np.ndarray:
    """One target file, memory-mapped; an unreadable file names itself and the command to redo it."""
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"Cannot read target {path} ({error}); rerun `{target_command(target, dataset)} --overwrite`.") from None


def load_targets(
    data_root: str | Path | None, dataset: str, target: str, stimuli: Sequence[str], pool: bool = False,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Targets of ``stimuli`` as (S, D) float32 rows, and the stored per-stimulus shape.

    pool=False: each file flattened (D = prod(shape)); every file must have the same shape.
    pool=True: each file averaged over all but its last axis (per-frame or per-caption
    embeddings -> one vector, D = E); leading axes may differ between stimuli, the returned
    shape is ``(E,)``. Missing files are listed all at once; non-finite values are refused.
    """
    check_targets_exist(data_root, dataset, target, stimuli)
    shape: tuple[int, ...] | None = None
    out: np.ndarray | None = None
    for i, stim in enumerate(stimuli):
        path = layout.target_path(data_root, dataset, target, stim)
        array = read_target(path, target, dataset)
        if pool:
            if array.ndim == 0:
                raise ValueError(f"{path}: expected an embedding vector, found a scalar.")
            array = np.asarray(array, dtype=np.float32).reshape(-1, array.shape[-1]).mean(axis=0)
        if shape is None:
            shape = tuple(array.shape)
            out = np.empty((len(stimuli), int(np.prod(shape))), dtype=np.float32)
        elif tuple(array.shape) != shape:
            what = "embedding size" if pool else "shape"
            raise ValueError(
                f"Target {path} has {what} {tuple(array.shape)} but {stimuli[0]} has {shape}; all stimuli must agree "
                f"(rerun `{target_command(target, dataset)} --overwrite`)."
            )
        out[i] = np.asarray(array, dtype=np.float32).ravel()
    if out is None:
        return np.zeros((0, 0), dtype=np.float32), ()
    if not np.isfinite(out).all():
        bad = [s for s, row in zip(stimuli, out, strict=True) if not np.isfinite(row).all()]
        raise ValueError(f"Target {target!r} of {dataset} holds NaN/inf for {bad[:10]}; rerun `{target_command(target, dataset)} --overwrite`.")
    return out, shape
