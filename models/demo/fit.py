"""Fit the demo preset's models to the synthetic world, step by step, resumably.

Steps, in order (each reads only train-split clips, ``models.demo.data``):

=================  ============================================  =====================================
step               what is fitted                                written (``utils.layout``)
=================  ============================================  =====================================
vae                AutoencoderKL on train frames                 models_demo/zeroscope/vae/
clip               CLIPModel, contrastive on frames + captions   models_demo/clip/
zeroscope          UNet3DConditionModel, caption-conditioned     models_demo/zeroscope/{unet,text_encoder,
                   denoiser of the VAE latents (text encoder:    tokenizer,scheduler}/
                   the fitted CLIP's text tower)
blip               BlipForConditionalGeneration: captions from   models_demo/blip/
                   frame-averaged vision embeddings
image_classifier   ViTForImageClassification, shape x colour x   models_demo/image_classifier/
                   background
video_classifier   VideoMAEForVideoClassification, also motion   models_demo/video_classifier/
=================  ============================================  =====================================

Each step trains through ``models.training.fit`` in ``checkpoints/demo_fit/<step>/`` (seeded,
progress bars, log.csv, exact resume after a kill), exports its ``save_pretrained`` folder,
scores the exported model on held-out train-split clips, and writes
``models_demo/fit_<step>.json`` last: the settings and those metrics. A step whose record
exists with the same settings is skipped, so a rerun costs nothing; other settings are refused
unless ``overwrite``. Fits run on one CPU thread (the fitted weights are then the same on
every machine with the same library versions).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from models import training
from models.demo.data import DemoData, FitStep, check_train_only, load_demo_data
from utils import layout
from utils.io import jsonable, read_json, write_json, write_text

# step -> "module:function" building its FitStep from (data, data_root, device).
STEPS: dict[str, str] = {
    "vae": "models.demo.zeroscope:vae_step",
    "clip": "models.demo.clip:clip_step",
    "zeroscope": "models.demo.zeroscope:unet_step",
    "blip": "models.demo.blip:blip_step",
    "image_classifier": "models.demo.classifiers:image_step",
    "video_classifier": "models.demo.classifiers:video_step",
}
# What each step loads from earlier steps.
NEEDS = {"zeroscope": ("vae", "clip")}
# The fit steps each demo model folder needs (what a loader checks before loading).
FOLDER_STEPS = {"zeroscope": ("vae", "zeroscope"), "clip": ("clip",), "blip": ("blip",),
                "image_classifier": ("image_classifier",), "video_classifier": ("video_classifier",)}
# Fit budgets: each step's epochs times these (times --epoch-scale). "quick" fits the demo in a few CPU minutes (the
# tests, a first look); "full" is the budget the shipped demo models (demo_models/) were fitted with: about an hour
# of CPU, where the VAE keeps the shapes' colours, the UNet keeps the latent it starts from, and the classifiers
# read shapes and motion (bench/results_demo.md).
BUDGETS: dict[str, dict[str, float]] = {
    "quick": {},
    "full": {"vae": 5.0, "clip": 1.0, "zeroscope": 5.0, "blip": 2.0, "image_classifier": 4.0, "video_classifier": 4.0},
}
LOG_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "lr", "samples_per_s", "seconds")
README = """MODELS FITTED TO THE SYNTHETIC DEMO WORLD - NOT the real Zeroscope, BLIP, CLIP, ViT or VideoMAE.

fit_demo_models.py trained these small models (the same classes as the real ones, in the same
save_pretrained layout) on the TRAIN-split clips of the synthetic demo under this data root.
They know only coloured shapes moving over four textures. Numbers obtained with them show that
the pipeline carries information from (simulated) brain activity to videos; they say nothing
about how well real brains decode. Each fit_<step>.json holds the settings and held-out metrics.
"""


def build_step(step: str, data: DemoData, data_root: str | Path | None, device: torch.device, epoch_scale: float = 1.0) -> FitStep:
    """The FitStep of ``step`` (its module imported on demand); ``epoch_scale`` scales its epochs (at least 1)."""
    module, function = STEPS[step].split(":")
    builder: Callable[..., FitStep] = getattr(importlib.import_module(module), function)
    built = builder(data, data_root, device)
    if epoch_scale != 1.0:
        epochs = max(1, round(built.settings.epochs * epoch_scale))
        built.settings = dataclasses.replace(built.settings, epochs=epochs, warmup_epochs=min(built.settings.warmup_epochs, epochs / 4))
    return built


def step_record(data_root: str | Path | None, step: str) -> dict[str, Any] | None:
    """The completion record ``models_demo/fit_<step>.json`` (None when the step has not finished)."""
    return read_json(layout.demo_fit_manifest_path(data_root, step))


def missing_steps(data_root: str | Path | None, folder: str) -> list[str]:
    """Fit steps the demo model folder ``folder`` still needs (empty: it is complete)."""
    return [step for step in FOLDER_STEPS[folder] if step_record(data_root, step) is None]


def step_settings(step: str, built: FitStep, data: DemoData, demo_config: dict, seed: int) -> dict[str, Any]:
    """What determines a step's weights: its settings, its config, the demo and held-out clips, the seed."""
    return jsonable({
        "step": step, "seed": seed, "train": vars(built.settings), "config": built.config, "demo": demo_config,
        "held_out": list(data.held_out.stimuli),
    })


def run_step(
    step: str, data: DemoData, data_root: str | Path | None, device_flag: str, seed: int, overwrite: bool, epoch_scale: float = 1.0
) -> dict[str, Any]:
    """Fit, export and score one step unless its record says it is done; returns its record."""
    for need in NEEDS.get(step, ()):
        if step_record(data_root, need) is None:
            raise FileNotFoundError(f"Fit step {step!r} needs {need!r} first: run `python fit_demo_models.py --data-root {data_root}`.")
    accelerator = training.start(device_flag, "float32", seed)
    built = build_step(step, data, data_root, accelerator.device, epoch_scale)
    demo_config = read_json(layout.demo_config_path(data_root, "demo")) or {}
    settings = step_settings(step, built, data, demo_config, seed)
    record_path = layout.demo_fit_manifest_path(data_root, step)
    run_dir = layout.demo_fit_run_dir(data_root, step)
    record = read_json(record_path)
    if record is not None and not overwrite:
        if record["settings"] != settings:
            raise ValueError(
                f"{record_path}: the demo's {step} model was fitted with other settings; pass --overwrite to fit it again."
            )
        print(f"[fit_demo_models] {step}: fitted before ({record_path}), kept", flush=True)
        return record
    if overwrite:
        record_path.unlink(missing_ok=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    check_train_only(data_root, data.fit.stimuli + data.held_out.stimuli)
    start = time.perf_counter()
    status = training.run_status(run_dir)
    if status != "complete":
        print(f"[fit_demo_models] {step}: fitting on {len(data.fit)} train clips ({'resumed' if status == 'interrupted' else 'new'})", flush=True)
        training.fit(
            built.model, built.groups or training.param_groups(built.model, built.settings.weight_decay), built.train_data,
            built.loss, built.settings, accelerator, run_dir, {"settings": settings}, {"settings": tuple(settings)},
            LOG_COLUMNS, validate=built.validate, resume=status == "interrupted",
        )
    state = training.read_safetensors(layout.weights_path(run_dir, "last"))
    training.load_state_strict(built.model, state, str(layout.weights_path(run_dir, "last")))
    built.model.eval()
    out_dir = layout.demo_model_dir(data_root, layout.DEMO_MODEL_FOLDERS[step])
    built.export(built.model, out_dir)
    with torch.inference_mode():
        metrics = built.metrics(built.model)
    write_text(layout.demo_models_root(data_root) / "README.txt", README)
    record = {
        "step": step, "folder": str(out_dir), "settings": settings, "held_out_metrics": jsonable(metrics),
        "fit_stimuli": len(data.fit), "held_out_stimuli": list(data.held_out.stimuli), "device": str(accelerator.device),
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(record_path, record)
    shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    print(f"[fit_demo_models] {step}: held-out {shown} -> {out_dir}", flush=True)
    return record


def fit_all(
    data_root: str | Path | None, device_flag: str = "cpu", seed: int = 0, overwrite: bool = False, steps: tuple[str, ...] = tuple(STEPS),
    held_out_every: int = 10, epoch_scale: float = 1.0, jobs: int = 1, budget: str = "quick",
) -> dict[str, dict[str, Any]]:
    """Run ``steps`` (in the order of ``STEPS``); returns {step: record}. Each step's epochs are scaled by its
    ``BUDGETS[budget]`` factor times ``epoch_scale`` (< 1 shortens every fit: tests, quick looks); the records say
    what ran. ``jobs`` > 1 fits independent steps side by side in that many worker processes
    (:func:`fit_in_workers`), each on one thread, with the same weights as one after another."""
    if budget not in BUDGETS:
        raise ValueError(f"--budget {budget!r}: expected one of {sorted(BUDGETS)}.")
    chosen = [step for step in STEPS if step in steps]
    scales = {step: epoch_scale * BUDGETS[budget].get(step, 1.0) for step in chosen}
    if jobs > 1 and len(chosen) > 1:
        return fit_in_workers(chosen, jobs, data_root, device_flag, seed, overwrite, held_out_every, scales)
    data = load_demo_data(data_root, held_out_every)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU float results depend on the thread count: one thread makes a fit the same everywhere
    try:
        return {step: run_step(step, data, data_root, device_flag, seed, overwrite, scales[step]) for step in chosen}
    finally:
        torch.set_num_threads(threads)


def fit_one_in_worker(
    step: str, data_root: str | Path | None, device_flag: str, seed: int, overwrite: bool, held_out_every: int, epoch_scale: float,
) -> dict[str, Any]:
    """One step in a worker process, on one thread; its progress bars (stderr) appended to ``layout.demo_fit_log_path``,
    its messages on the shared stdout."""
    torch.set_num_threads(1)
    log = layout.demo_fit_log_path(data_root, step)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out, contextlib.redirect_stderr(out):
        data = load_demo_data(data_root, held_out_every)
        return run_step(step, data, data_root, device_flag, seed, overwrite, epoch_scale)


def ready_steps(pending: list[str], finished: set[str], chosen: list[str]) -> list[str]:
    """The pending steps whose needs among ``chosen`` have all finished, in order."""
    return [step for step in pending if all(need in finished or need not in chosen for need in NEEDS.get(step, ()))]


def fit_in_workers(
    chosen: list[str], jobs: int, data_root: str | Path | None, device_flag: str, seed: int, overwrite: bool,
    held_out_every: int, scales: dict[str, float],
) -> dict[str, dict[str, Any]]:
    """Fit ``chosen`` (each step's epochs scaled by ``scales[step]``) in up to ``jobs`` spawned processes, each step starting once the steps it needs
    (``NEEDS``) have finished. A failed step stops the others from starting; its error is raised
    once the running ones end (their records are written, so a rerun keeps them)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    pending, finished = list(chosen), set()
    records: dict[str, dict[str, Any]] = {}
    running: dict[Future, str] = {}
    error: BaseException | None = None
    print(f"[fit_demo_models] {len(chosen)} steps in {min(jobs, len(chosen))} processes; each step's progress bars: "
          f"{layout.demo_fit_log_path(data_root, 'step').with_name('<step>.log')}", flush=True)
    with ProcessPoolExecutor(max_workers=min(jobs, len(chosen)), mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            if error is None:
                for step in ready_steps(pending, finished, chosen)[: jobs - len(running)]:
                    pending.remove(step)
                    print(f"[fit_demo_models] {step}: started", flush=True)
                    running[pool.submit(fit_one_in_worker, step, data_root, device_flag, seed, overwrite, held_out_every, scales[step])] = step
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                step = running.pop(future)
                try:
                    records[step] = future.result()
                except BaseException as failure:  # noqa: BLE001 - re-raised below, after the running steps end
                    error = error or failure
                    print(f"[fit_demo_models] {step}: failed ({type(failure).__name__}: {failure}); see {layout.demo_fit_log_path(data_root, step)}", flush=True)
                    continue
                finished.add(step)
    if error is not None:
        raise error
    return {step: records[step] for step in chosen}
