"""The per-stimulus targets ``target_vectors_<ds>/<target>/<stim>.npy``: one loader, and their records.

Every stage that consumes targets (contrastive fine-tuning, regression, reconstruction's
oracles) reads them here, so a missing or unreadable file always names its path and the
command that makes it.

Every target folder holds ``settings.json`` (``utils.provenance``): the recipe
(models/recipes.py) and the settings that determined its files. Writers call
:func:`open_target_folder` before writing (same settings resume; other settings, or files
without a record, are refused unless ``--overwrite``; ``--adopt`` records files made
elsewhere after checking their shapes and dtypes). Readers get the record through
:func:`target_settings` (``load_targets`` refuses a folder without one), and
:func:`check_same_recipe` refuses to use targets of two recipes together.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from utils import layout
from utils.provenance import SettingsMismatchError, check_settings, differences, read_settings, require_settings, write_settings

# The script that writes each target (for the "run this first" messages), and its extra flags.
TARGET_SCRIPTS = {
    "z_zeroscope": "extract_targets_zeroscope.py",
    "c_zeroscope": "extract_targets_zeroscope.py",
    "blip": "extract_targets_blip.py",
    "clip": "extract_targets_blip.py",
    "clip_frames": "extract_targets_blip.py",
    "clip_text": "extract_targets_blip.py",
}
TARGET_FLAGS = {"c_zeroscope": " --targets c_zeroscope"}
ADOPTED = "adopted"  # the record key of folders whose files were adopted, not computed here


def target_command(target: str, dataset: str, data_root: str | Path | None = None) -> str:
    """The command that makes a target for a dataset (for error messages); a target no script makes is named as such."""
    if target not in TARGET_SCRIPTS:
        return f"the extraction of {target!r}, which no script here makes (known targets: {sorted(TARGET_SCRIPTS)})"
    return f"python {TARGET_SCRIPTS[target]} --dataset {dataset}{layout.root_flag(data_root)}{TARGET_FLAGS.get(target, '')}"


# ----------------------------------------------------------------------------- records (writers)


def target_files(directory: str | Path) -> list[Path]:
    """The target files of a folder (HAD keeps class subfolders), without temporary files, sorted."""
    folder = Path(directory)
    return sorted(p for p in folder.rglob("*.npy") if not p.name.endswith(".tmp.npy")) if folder.is_dir() else []


def recipe_of(record: dict[str, Any] | None) -> str | None:
    """The recipe name of a folder's record (None when there is no record)."""
    return None if record is None else record["settings"].get("recipe")


def check_adoptable(directory: str | Path, shape: tuple[int, ...], dtype: str) -> list[Path]:
    """Every target file of a folder, checked to be a readable ``dtype`` array of ``shape``; a
    ValueError names each file that is not (with what it holds)."""
    files = target_files(directory)
    bad = []
    for path in files:
        try:
            array = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            bad.append(f"{path.name}: unreadable ({error})")
            continue
        if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
            bad.append(f"{path.name}: {array.dtype} {tuple(array.shape)}")
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise ValueError(
            f"Cannot adopt {directory}: the asked settings make {dtype} {tuple(shape)} files, but {shown}. "
            "Adopt only files made with the settings you ask for (e.g. --recipe original for the original's float16 latents)."
        )
    return files


def open_target_folder(
    directory: str | Path,
    stage: str,
    settings: dict[str, Any],
    will_write: Sequence[Path],
    overwrite: bool = False,
    adopt: tuple[tuple[int, ...], str] | None = None,
) -> bool:
    """Check (and record) a target folder's settings before writing into it; True when the record
    is to be written by the caller after the run (``write_settings``), False when it is in place.

    - no record, no files: a new folder, the record is written now (so an interrupted run resumes);
    - the same settings (an adopted record included): resume;
    - no record but files: refused, unless ``adopt=(shape, dtype)``: every file is checked against
      what the asked settings make and the record is written marked ``"adopted": true``;
    - other settings: refused, naming the folder, the recipe found and the recipe asked.
    With ``overwrite``, other settings or files without a record are redone: ``will_write`` (the
    files this run writes) must then cover every file of the folder, and the old record is
    removed now and the new one written after the run.
    """
    directory = Path(directory)
    record = read_settings(directory)
    asked = settings | ({ADOPTED: True} if record is not None and record["settings"].get(ADOPTED) else {})
    same = record is not None and not differences(record["settings"], asked)
    files = target_files(directory)
    found = "no record" if record is None else f"recipe {recipe_of(record)!r}"
    if overwrite and not same and files:
        kept = sorted(set(files) - {Path(p) for p in will_write})
        if kept:
            raise SettingsMismatchError(
                f"{directory} ({found}) is to be redone with recipe {settings.get('recipe')!r}, but this run would leave "
                f"{len(kept)} of its {len(files)} files as they are (e.g. {kept[0].name}): redo them all (no --limit, "
                "--stimuli or --subset), or write elsewhere with another --data-root."
            )
        layout.settings_path(directory).unlink(missing_ok=True)
        return True
    if record is None and files and adopt is not None:
        check_adoptable(directory, *adopt)
        write_settings(directory, stage, settings | {ADOPTED: True})
        print(f"adopted {len(files)} files of {directory} as recipe {settings.get('recipe')!r}")
        return False
    ways = (
        f"found {found}, asked recipe {settings.get('recipe')!r}; pass --overwrite to redo them, write elsewhere with "
        "another --data-root, or --adopt to record files without a record as made with the asked settings "
        "(after checking their shapes and dtypes)"
    )
    check_settings(directory, stage, asked, has_outputs=bool(files), ways_on=ways)
    if record is None:
        write_settings(directory, stage, settings)
    return False


# ----------------------------------------------------------------------------- records (readers)


def target_settings(data_root: str | Path | None, dataset: str, target: str) -> dict[str, Any]:
    """The recorded settings of a target folder (recipe, sizes, models, ...); refused without a record."""
    command = target_command(target, dataset, data_root)
    return require_settings(
        layout.targets_dir(data_root, dataset, target), {}, f"{target} targets of {dataset}",
        f"make them with `{command}`, or record files made elsewhere with `{command} --adopt`",
    )


def check_same_recipe(data_root: str | Path | None, target: str, datasets: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{dataset: recorded settings}`` of one target over datasets used together; refuses two recipes.

    A dataset whose target folder does not exist yet is left out (loading names its missing files).
    """
    present = [ds for ds in dict.fromkeys(datasets) if layout.targets_dir(data_root, ds, target).is_dir()]
    records = {ds: target_settings(data_root, ds, target) for ds in present}
    recipes = {ds: r.get("recipe") for ds, r in records.items()}
    if len(set(recipes.values())) > 1:
        listed = ", ".join(f"{layout.targets_dir(data_root, ds, target)} has recipe {r!r}" for ds, r in recipes.items())
        raise SettingsMismatchError(
            f"Target {target!r} mixes recipes across datasets ({listed}): use targets of one recipe, e.g. redo one "
            f"with `{target_command(target, next(iter(recipes)), data_root)} --recipe {next(iter(recipes.values()))} --overwrite`."
        )
    return records


def as_stored_shape(
    array: np.ndarray, shape: tuple[int, ...], name: str, expects: str, hint: str = "", verb: str = "has",
) -> np.ndarray:
    """``array`` as float32 of ``shape``: a flattened vector of the same size is reshaped, a leading
    batch axis of 1 dropped; any other shape raises naming ``name``, the found shape, ``expects`` and ``hint``."""
    array = np.asarray(array)
    if array.ndim == 1 and array.size == int(np.prod(shape)):
        array = array.reshape(shape)
    if array.ndim == len(shape) + 1 and array.shape[0] == 1:
        array = array[0]
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} {verb} shape {tuple(array.shape)}; {expects} {tuple(shape)} (or flattened {int(np.prod(shape))}).{hint}")
    return array.astype(np.float32, copy=False)


def check_targets_exist(data_root: str | Path | None, dataset: str, target: str, stimuli: Sequence[str]) -> None:
    """Raise listing every stimulus whose target file is missing, with the command that makes it."""
    missing = [s for s in stimuli if not layout.target_path(data_root, dataset, target, s).exists()]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise FileNotFoundError(
            f"Target {target!r} is missing for {len(missing)} of {len(stimuli)} {dataset} stimuli in "
            f"{layout.targets_dir(data_root, dataset, target)}: {shown}. Run `{target_command(target, dataset, data_root)}` first."
        )


def read_target(path: Path, target: str, dataset: str, data_root: str | Path | None = None) -> np.ndarray:
    """One target file, memory-mapped; an unreadable file, or one not of floating-point numbers, names itself and the
    command to redo it."""
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"Cannot read target {path} ({error}); rerun `{target_command(target, dataset, data_root)} --overwrite`.") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"Target {path} holds {array.dtype} values, expected floating-point numbers (float16 or float32); "
                         f"rerun `{target_command(target, dataset, data_root)} --overwrite`.")
    return array


def load_targets(
    data_root: str | Path | None, dataset: str, target: str, stimuli: Sequence[str], pool: bool = False, recipe: str | None = None,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Targets of ``stimuli`` as (S, D) float32 rows, and the stored per-stimulus shape.

    The folder must have a record (:func:`target_settings`, which gives it to callers that log
    the recipe); ``recipe``: also refuse a folder of another recipe (datasets loaded together).
    pool=False: each file flattened (D = prod(shape)); every file must have the same shape.
    pool=True: each file averaged over all but its last axis (per-frame or per-caption
    embeddings -> one vector, D = E); leading axes may differ between stimuli, the returned
    shape is ``(E,)``. Missing files are listed all at once; non-finite values are refused.
    """
    check_targets_exist(data_root, dataset, target, stimuli)
    found = target_settings(data_root, dataset, target).get("recipe") if stimuli else recipe
    if recipe is not None and found != recipe:
        raise SettingsMismatchError(
            f"{layout.targets_dir(data_root, dataset, target)} has recipe {found!r}, asked recipe {recipe!r}: targets of two "
            f"recipes cannot be used together; redo them with `{target_command(target, dataset, data_root)} --recipe {recipe} --overwrite`."
        )
    shape: tuple[int, ...] | None = None
    out: np.ndarray | None = None
    for i, stim in enumerate(stimuli):
        path = layout.target_path(data_root, dataset, target, stim)
        array = read_target(path, target, dataset, data_root)
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
                f"(rerun `{target_command(target, dataset, data_root)} --overwrite`)."
            )
        out[i] = np.asarray(array, dtype=np.float32).ravel()
    if out is None:
        return np.zeros((0, 0), dtype=np.float32), ()
    if not np.isfinite(out).all():
        bad = [s for s, row in zip(stimuli, out, strict=True) if not np.isfinite(row).all()]
        raise ValueError(f"Target {target!r} of {dataset} holds NaN/inf for {bad[:10]}; rerun `{target_command(target, dataset, data_root)} --overwrite`.")
    return out, shape
