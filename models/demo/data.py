"""What the demo fits may read: train-split clips of the synthetic world, nothing else.

:func:`load_demo_data` reads the videos, design labels and captions of the TRAIN split only
(``utils.datasets.list_stimuli(DEMO, "train")``) and keeps every ``held_out_every``-th of them
out of the fits, for the held-out fit metrics of each manifest. Test stimuli never enter:
:func:`check_train_only` is called on every set handed to a fit (and tested).

A fit step (:class:`FitStep`) is what ``models.demo.fit`` needs to train, export and score one
component through the shared loop ``models.training.fit``.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.training import TrainSettings
from utils import layout
from utils.datasets import DEMO, list_stimuli, load_annotations, stimulus_path
from utils.synthetic import BACKGROUNDS, COLOURS, MOTIONS, SHAPES
from utils.video import read_video, sample_indices

# The design factors of the synthetic world and their values (label index = position).
FACTORS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "colour": tuple(COLOURS), "background": BACKGROUNDS, "motion": tuple(MOTIONS),
}
IMAGE_FACTORS = ("shape", "colour", "background")  # what one frame shows
VIDEO_FACTORS = ("shape", "colour", "background", "motion")  # what a clip shows
N_TARGET_FRAMES = 15  # frames per clip of every target (models/targets.py)


@dataclass(frozen=True)
class ClipSet:
    """Clips of the demo with their design and captions.

    frames: uint8 (N, T, H, W, 3), every decoded frame; labels: factor -> int (N,) index into
    ``FACTORS[factor]``; captions: the 5 human captions of each clip.
    """

    stimuli: tuple[str, ...]
    frames: np.ndarray
    labels: dict[str, np.ndarray]
    captions: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.stimuli)

    def target_frames(self, n: int = N_TARGET_FRAMES) -> np.ndarray:
        """The ``n`` frames per clip the targets use (``sample_indices``, rounded) -> uint8 (N, n, H, W, 3)."""
        return self.frames[:, sample_indices(self.frames.shape[1], n)]

    def class_ids(self, factors: tuple[str, ...]) -> np.ndarray:
        """Index (N,) of each clip's class in :func:`class_names` ``(factors)``."""
        ids = np.zeros(len(self), dtype=np.int64)
        for factor in factors:
            ids = ids * len(FACTORS[factor]) + self.labels[factor]
        return ids


@dataclass(frozen=True)
class DemoData:
    """The clips fits train on (``fit``) and the train-split clips kept out for fit metrics (``held_out``)."""

    fit: ClipSet
    held_out: ClipSet


def class_names(factors: tuple[str, ...]) -> list[str]:
    """Names of every combination of ``factors``, the first factor slowest: ``"red circle, sky, moving left"``."""
    names = []
    for combo in itertools.product(*(FACTORS[f] for f in factors)):
        values = dict(zip(factors, combo, strict=True))
        text = f"{values['colour']} {values['shape']}, {values['background']}"
        names.append(text + (f", moving {values['motion']}" if "motion" in values else ""))
    return names


def train_stimuli(data_root: str | Path | None) -> list[str]:
    """The demo's train-split stimuli (its annotations' ``set``), the only ones a fit may read."""
    return list_stimuli(DEMO, "train", data_root)


def check_train_only(data_root: str | Path | None, stimuli: tuple[str, ...] | list[str]) -> None:
    """Raise if any of ``stimuli`` is not in the demo's train split."""
    allowed = set(train_stimuli(data_root))
    bad = [s for s in stimuli if s not in allowed]
    if bad:
        raise ValueError(f"Demo fits may read train-split stimuli only; {bad[:5]} are not in the train split of {layout.root(data_root)}.")


def design_labels(data_root: str | Path | None, stimuli: list[str]) -> dict[str, np.ndarray]:
    """The demo design's labels of ``stimuli`` (any split; no video is read): factor -> int64 (N,) index into ``FACTORS[factor]``."""
    design = np.load(layout.encoding_model_path(data_root, DEMO.name))
    row = {str(s): i for i, s in enumerate(design["stimuli"])}
    return {
        factor: np.asarray([values.index(str(design[factor][row[s]])) for s in stimuli], dtype=np.int64)
        for factor, values in FACTORS.items()
    }


def load_clips(data_root: str | Path | None, stimuli: list[str]) -> ClipSet:
    """Read the videos, labels and captions of train-split ``stimuli``."""
    check_train_only(data_root, stimuli)
    labels = design_labels(data_root, stimuli)
    notes = load_annotations(data_root, DEMO.name)
    captions = tuple(tuple(notes[s]["text_descriptions"]) for s in stimuli)
    frames = np.stack([read_video(stimulus_path(data_root, DEMO, s)) for s in stimuli])  # (N, T, H, W, 3)
    return ClipSet(tuple(stimuli), frames, labels, captions)


def load_demo_data(data_root: str | Path | None, held_out_every: int = 10) -> DemoData:
    """Train-split clips: every ``held_out_every``-th (the last of each block) held out, the rest to fit."""
    names = train_stimuli(data_root)
    held = [s for i, s in enumerate(names) if i % held_out_every == held_out_every - 1]
    fit = [s for s in names if s not in set(held)]
    return DemoData(load_clips(data_root, fit), load_clips(data_root, held))


def to_unit_range(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
    return tensor.movedim(-1, -3)


@dataclass
class FitStep:
    """One component to fit with ``models.training.fit`` and export.

    model: the module trained (built under a fixed seed); groups: its optimizer parameter
    groups (None = ``training.param_groups``); train_data: indexable by a list of ids -> a
    batch; loss: ``(model, batch) -> scalar``; validate: ``model -> {"val_loss": ...}`` on the
    held-out clips; export: writes the ``save_pretrained`` folder(s) from the trained model into
    the given directory; metrics: held-out fit metrics of the exported model (for the manifest);
    settings: the optimisation settings; config: everything else that determines the weights;
    load: the exported folder -> the module ``metrics`` takes (to score shipped models again).
    """

    model: torch.nn.Module
    train_data: Any
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]
    validate: Callable[[torch.nn.Module], dict[str, float]]
    export: Callable[[torch.nn.Module, Path], None]
    metrics: Callable[[torch.nn.Module], dict[str, Any]]
    settings: TrainSettings
    config: dict[str, Any] = field(default_factory=dict)
    groups: list[dict] | None = None
    load: Callable[[Path], torch.nn.Module] | None = None


def in_eval_mode(model: torch.nn.Module, fn: Any) -> Any:
    """``fn()`` under ``torch.no_grad`` with ``model`` in eval mode (its mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.train(was_training)


class IndexedTensors(torch.utils.data.Dataset):
    """Tensors sharing their first dimension, indexed by a list of ids -> a tuple of batches."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, ids: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(ids, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)
