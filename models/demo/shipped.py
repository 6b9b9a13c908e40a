"""The demo's fitted models shipped with the repository (``demo_models/``), so a newcomer's numbers do not depend on
the CPU that would otherwise fit them, and their fit is not bounded by a first run's minutes.

``demo_models/`` holds what ``fit_demo_models.py --budget full`` wrote under ``models_demo/`` of a fresh default demo
(the ``save_pretrained`` folders and every ``fit_<step>.json``), plus ``MANIFEST.json``: the code commit and budget
they were fitted with, the demo world's settings (``demo_config.json``), and the sha256 of every file.
``install_shipped`` copies them into a data root whose demo world has the same settings (the runner does it unless
``--refit-demo``); stages then load them from ``models_demo/`` through ``from_pretrained`` as always.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from utils import layout
from utils.io import ArtifactError, atomic_path, jsonable, read_json, sha256_file, write_json

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "demo_models"
MANIFEST = "MANIFEST.json"


def manifest_path(shipped: Path = SHIPPED_DIR) -> Path:
    """``demo_models/MANIFEST.json``: commit, budget, demo settings and the sha256 of every shipped file."""
    return shipped / MANIFEST


def read_manifest(shipped: Path = SHIPPED_DIR) -> dict[str, Any] | None:
    """The shipped models' manifest (None when nothing is shipped)."""
    manifest = read_json(manifest_path(shipped), remake="restore demo_models/ from git (git checkout -- demo_models)")
    if manifest is not None and not (isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)):
        raise ArtifactError(f"{manifest_path(shipped)}: expected an object with 'files' {{path: sha256}}: restore demo_models/ from git.")
    return manifest


def model_files(folder: Path) -> list[Path]:
    """Every file of a ``models_demo/`` folder that belongs to the models (not hidden files or the manifest), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST)


def ship(data_root: str | Path | None, commit: str, budget: str, shipped: Path = SHIPPED_DIR) -> dict[str, Any]:
    """Copy the complete ``models_demo/`` of ``data_root`` to ``shipped`` (replacing it) with its manifest; returns it."""
    source = layout.demo_models_root(data_root)
    files = model_files(source)
    if not files:
        raise FileNotFoundError(f"Nothing to ship: {source} holds no fitted models (run fit_demo_models.py first).")
    if shipped.exists():
        shutil.rmtree(shipped)
    for path in files:
        destination = shipped / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith("fit_") and path.suffix == ".json":  # the record names its folder relative to the data root
            record = read_json(path)
            write_json(destination, record | {"folder": Path(record["folder"]).relative_to(Path(data_root or ".")).as_posix()})
        else:
            shutil.copyfile(path, destination)
    manifest = {
        "code_commit": commit, "budget": budget, "demo": read_json(layout.demo_config_path(data_root, "demo")),
        "files": {p.relative_to(source).as_posix(): sha256_file(shipped / p.relative_to(source)) for p in files},
    }
    write_json(manifest_path(shipped), manifest)
    return manifest


def changed_files(manifest: dict[str, Any], folder: Path) -> list[str]:
    """The files of ``manifest`` that are missing from ``folder`` or whose sha256 differs, sorted."""
    return sorted(rel for rel, digest in manifest["files"].items() if not (folder / rel).is_file() or sha256_file(folder / rel) != digest)


def fits_world(manifest: dict[str, Any] | None, data_root: str | Path | None) -> bool:
    """True when the shipped models were fitted to a demo world made with the settings of ``data_root``'s."""
    return manifest is not None and manifest.get("demo") == read_json(layout.demo_config_path(data_root, "demo"))


def is_installed(data_root: str | Path | None, shipped: Path = SHIPPED_DIR) -> dict[str, Any] | None:
    """The shipped manifest when ``models_demo/`` of ``data_root`` holds exactly the shipped files, else None."""
    manifest = read_manifest(shipped)
    if not fits_world(manifest, data_root) or changed_files(manifest, layout.demo_models_root(data_root)):
        return None
    return manifest


def install_shipped(data_root: str | Path | None, shipped: Path = SHIPPED_DIR) -> dict[str, Any] | None:
    """Copy the shipped models into ``models_demo/`` of ``data_root`` (each file checked against its sha256 first, the
    fit records last); their manifest, or None when none are shipped or they were fitted to another demo world."""
    manifest = read_manifest(shipped)
    if not fits_world(manifest, data_root):
        return None
    changed = changed_files(manifest, shipped)
    if changed:
        raise ArtifactError(f"{shipped}: {len(changed)} shipped file(s) differ from {MANIFEST} (e.g. {changed[:3]}): restore them "
                            "with `git checkout -- demo_models`, or fit the models here with `python run_pipeline.py --refit-demo`.")
    target = layout.demo_models_root(data_root)
    records = [rel for rel in manifest["files"] if Path(rel).name.startswith("fit_")]
    for rel in [r for r in manifest["files"] if r not in records] + records:  # a fit record marks its step complete: last
        with atomic_path(target / rel) as tmp:
            shutil.copyfile(shipped / rel, tmp)
    return manifest


def rescore(data_root: str | Path | None, step: str, held_out_every: int = 10) -> dict[str, Any]:
    """The held-out metrics of ``step``'s model installed under ``data_root``, scored again as its fit scored it (on
    the CPU, one thread, like the fits): what its ``fit_<step>.json`` says, up to float rounding of another machine."""
    import torch

    from models.demo.data import load_demo_data
    from models.demo.fit import build_step

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        built = build_step(step, load_demo_data(data_root, held_out_every), data_root, torch.device("cpu"))
        with torch.inference_mode():
            metrics = built.metrics(built.load(layout.demo_model_dir(data_root, layout.DEMO_MODEL_FOLDERS[step])))
    finally:
        torch.set_num_threads(threads)
    return jsonable(metrics)


def metric_differences(recorded: dict[str, Any], scored: dict[str, Any], tolerance: float) -> dict[str, tuple[float, float]]:
    """``{name: (recorded, scored)}`` of the numeric metrics that differ by more than ``tolerance`` (or are missing)."""
    out = {}
    for name, value in recorded.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            again = scored.get(name)
            if not isinstance(again, (int, float)) or abs(float(again) - float(value)) > tolerance:
                out[name] = (value, again)
    return out
