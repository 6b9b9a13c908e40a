"""Fit the demo's image and video classifiers (the n-way semantic metrics' judges) to the synthetic world.

- ``image_step``: a ``ViTForImageClassification`` over the 96 classes of ``IMAGE_FACTORS``
  (shape x colour x background), trained on single frames.
- ``video_step``: a ``VideoMAEForVideoClassification`` (mean pooling) over the 384 classes of
  ``VIDEO_FACTORS`` (also the motion), trained on clips sampled as ``utils.metrics.video_class_probs``
  samples them.

The fit clips do not show every class, so both train a FACTORED head: the model's ``classifier``
is one Linear giving the logits of every factor side by side (4 + 6 + 4 [+ 4]), the loss the sum
of the factors' cross-entropies. :func:`fold_factored_head` then folds it into the single Linear
over all combinations that the exported model carries (row of class (s, c, b) = the sum of the
factor rows), so the softmax over the combinations is exactly the product of the factor softmaxes
and a class never seen in training still gets its probability.

Only ~100 fit clips exist, and a small transformer trained on them memorises the clips (their
texture, place, colour) instead of learning the shape and the motion. What helps, all built from
the fit clips alone (:func:`training_views`):

- background swap (``swap_backgrounds``): each clip is split into its static background and its
  moving shape (:func:`split_layers`: the world renders ``background * (1 - alpha) + colour * alpha``),
  and the shape, moved and zoomed, is pasted over another fit clip's background (relabelled);
- a left-right mirror (every shape is left-right symmetric) and, for videos, a time reversal, with
  the motion relabelled (left <-> right; a reversal also up <-> down), so a clip's look cannot name
  its motion (``flip_and_reverse``);
- a small shift (the same for every frame of a clip, so no false motion), a mild blur and noise, as
  reconstructions are blurrier than the true frames (:func:`augment_clips`); the video step also
  draws its frames from a random time window;
- for the video classifier, a training-only head predicting the shape's alpha in every patch token
  (:class:`MaskedClassifier`) and a large weight on the motion's cross-entropy: without them it
  does not learn the motion within the budget.

The held-out metrics run the exported folder through the evaluation path (``from_pretrained``,
``utils.metrics.image_class_probs`` / ``video_class_probs``).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import zoo
from models.demo.data import (
    FACTORS,
    IMAGE_FACTORS,
    N_TARGET_FRAMES,
    VIDEO_FACTORS,
    ClipSet,
    DemoData,
    FitStep,
    IndexedTensors,
    class_names,
    in_eval_mode,
)
from models.training import TrainSettings
from utils import layout, metrics
from utils.synthetic import COLOURS
from utils.video import resize_frames, sample_indices

IMAGE_SIZE = 64  # the demo's frames; the classifiers' input size
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)  # the ViT processor's normalisation
BLUR_RADIUS = 3  # taps each side of the augmentation's Gaussian kernel
METRIC_BLUR_SIGMA = 1.5  # the blur of the "blurred" held-out metrics (px)

IMAGE_TRAIN = TrainSettings(epochs=30, lr=2e-3, warmup_epochs=1.0, betas=(0.9, 0.999), weight_decay=0.05, batch_size=64)
VIDEO_TRAIN = TrainSettings(epochs=60, lr=2e-3, warmup_epochs=3.0, betas=(0.9, 0.999), weight_decay=0.05, batch_size=16)


@dataclass(frozen=True)
class ClassifierConfig:
    """Size, losses and augmentation of a demo classifier (everything but the optimisation settings).

    patch_size .. num_heads: the transformer; num_frames: frames a video clip is fed (tubelet 2);
    label_smoothing: of each factor's cross-entropy; factor_weights: of each factor's cross-entropy (in the
    order of the step's factors: the motion, which the video classifier alone can tell, learns late without
    a large weight); mask_weight: of the training-only loss that predicts
    the shape's alpha in each patch from the last hidden states (0 = none; :class:`MaskedClassifier`);
    paste_prob, move_px, move_scale: the background swap (``swap_backgrounds``); flip_prob: the mirror and
    time reversal (``flip_and_reverse``); shift_px, max_scale, blur_sigma, noise_std: ``augment_clips``;
    min_span: shortest time window (fraction of the clip) the video frames are drawn from.
    """

    patch_size: int = 8
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_frames: int = 8
    label_smoothing: float = 0.1
    factor_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    mask_weight: float = 0.0
    paste_prob: float = 0.9
    move_px: float = 8.0
    move_scale: float = 0.2
    flip_prob: float = 0.5
    shift_px: float = 3.0
    max_scale: float = 0.0
    blur_sigma: float = 1.5
    noise_std: float = 0.04
    min_span: float = 0.7


IMAGE_CONFIG = ClassifierConfig()
VIDEO_CONFIG = ClassifierConfig(patch_size=16, mask_weight=10.0, factor_weights=(1.0, 3.0, 1.0, 10.0), paste_prob=0.0)


# ---------------------------------------------------------------- augmentation


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur every frame of each clip with its own sigma: (B, T, C, H, W), sigma (B,) px -> (B, T, C, H, W)."""
    b, t, c, h, w = x.shape
    offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)  # (K,)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma.to(x.dtype).clamp_min(1e-3)[:, None] ** 2))  # (B, K)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(t * c, dim=0)  # (B*T*C, K)
    flat = x.reshape(1, b * t * c, h, w)
    flat = F.conv2d(F.pad(flat, (BLUR_RADIUS, BLUR_RADIUS, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * t * c)
    flat = F.conv2d(F.pad(flat, (0, 0, BLUR_RADIUS, BLUR_RADIUS), mode="reflect"), kernel[:, None, :, None], groups=b * t * c)
    return flat.reshape(b, t, c, h, w)


def affine_clips(x: torch.Tensor, max_px: float, max_scale: float = 0.0, padding: str = "border") -> torch.Tensor:
    """Shift each clip by a random (dx, dy) in [-max_px, max_px] px and zoom it by a factor in
    [1 - max_scale, 1 + max_scale], the same for all its frames: (B, T, C, H, W) -> same (``padding``: of grid_sample)."""
    b, t, c, h, w = x.shape
    shift = (torch.rand(b, 2, device=x.device) * 2 - 1) * max_px  # (B, 2) px
    zoom = 1 + (torch.rand(b, device=x.device) * 2 - 1) * max_scale  # (B,)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    theta[:, 0, 2], theta[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
    grid = F.affine_grid(theta, [b, t * c, h, w], align_corners=False)
    out = F.grid_sample(x.reshape(b, t * c, h, w), grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.reshape(b, t, c, h, w)


def augment_clips(
    x: torch.Tensor, shift_px: float, blur_sigma: float, noise_std: float, max_scale: float = 0.0, alpha: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Label-keeping augmentation of clips in [0, 1], (B, T, C, H, W) -> same: a shift and zoom (``affine_clips``),
    a blur of sigma U(0, blur_sigma) and noise of std U(0, noise_std), each drawn per clip (the global torch RNG).
    ``alpha`` (B, T, H, W), the shape's coverage, is shifted and zoomed along (returned, or None)."""
    b = len(x)
    if shift_px > 0 or max_scale > 0:
        stacked = x if alpha is None else torch.cat([x, alpha[:, :, None]], dim=2)
        stacked = affine_clips(stacked, shift_px, max_scale)
        x, alpha = (stacked, None) if alpha is None else (stacked[:, :, :-1], stacked[:, :, -1])
    if blur_sigma > 0:
        x = gaussian_blur(x, torch.rand(b, device=x.device) * blur_sigma)
    if noise_std > 0:
        std = (torch.rand(b, device=x.device) * noise_std).view(b, 1, 1, 1, 1)
        x = x + torch.randn(x.shape, device=x.device) * std
    return x.clamp(0.0, 1.0), alpha


def blurred(frames: np.ndarray, sigma: float = METRIC_BLUR_SIGMA) -> np.ndarray:
    """uint8 frames (..., H, W, 3) blurred by a Gaussian of ``sigma`` px (as :func:`gaussian_blur`) -> uint8, same shape."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().reshape(1, -1, *frames.shape[-3:]).movedim(-1, -3)  # (1, F, 3, H, W)
    out = gaussian_blur(x, torch.tensor([sigma])).movedim(-3, -1).reshape(frames.shape)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


# ---------------------------------------------------------------- shape layers (copy-paste augmentation)


@dataclass(frozen=True)
class Layers:
    """Each clip split into its static background and its moving shape (``frame = background * (1 - alpha)
    + colour * alpha``, as the world renders it): background float (N, H, W, 3) in [0, 1], alpha float
    (N, T, H, W) in [0, 1], colour float (N, 3), background_labels int64 (N,)."""

    background: torch.Tensor
    alpha: torch.Tensor
    colour: torch.Tensor
    background_labels: torch.Tensor

    def to(self, device: torch.device) -> Layers:
        """The layers on ``device``."""
        return Layers(*(t.to(device) for t in (self.background, self.alpha, self.colour, self.background_labels)))


def split_layers(frames: np.ndarray, clips: ClipSet, min_alpha: float = 0.05) -> Layers:
    """Estimate the :class:`Layers` of uint8 clips (N, T, H, W, 3) from their colour labels.

    The background of a pixel is its value in the frame where it is least like the shape's colour (the
    shape travels farther than its width, so every pixel shows the background in some frame); alpha is
    the frame's projection between background and colour (0 where the two are alike or below ``min_alpha``).
    """
    colour = torch.tensor([COLOURS[FACTORS["colour"][i]] for i in clips.labels["colour"]], dtype=torch.float32)  # (N, 3)
    backgrounds, alphas = [], []
    for clip, rgb in zip(torch.from_numpy(frames), colour, strict=True):
        x = clip.float() / 255.0  # (T, H, W, 3)
        farthest = (x - rgb).abs().amax(dim=-1).argmax(dim=0)  # (H, W)
        background = x.gather(0, farthest[None, ..., None].expand(1, *x.shape[1:]))[0]  # (H, W, 3)
        span = rgb - background  # (H, W, 3)
        norm = (span**2).sum(dim=-1)  # (H, W)
        alpha = (((x - background) * span).sum(dim=-1) / norm.clamp_min(1e-6)).clamp(0, 1)  # (T, H, W)
        alpha = torch.where((norm[None] > 0.01) & (alpha > min_alpha), alpha, torch.zeros(()))
        backgrounds.append(background)
        alphas.append(alpha)
    labels = torch.from_numpy(clips.labels["background"])
    return Layers(torch.stack(backgrounds), torch.stack(alphas), colour, labels)


def paste(alpha: torch.Tensor, colour: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Frames of shapes (alpha (B, T, H, W), colour (B, 3)) over backgrounds (B, H, W, 3) -> (B, T, 3, H, W) in [0, 1]."""
    a = alpha[..., None]
    return (background[:, None] * (1 - a) + colour[:, None, None, None] * a).movedim(-1, -3)


def swap_backgrounds(
    x: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor, backgrounds: torch.Tensor,
    background_labels: torch.Tensor, prob: float, axis: int, move_px: float = 0.0, move_scale: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """With probability ``prob`` per clip, its shape (alpha (B, T, H, W), colour (B, 3)) pasted over the
    background of a random fit clip (backgrounds (N, H, W, 3), labels (N,)): clips x (B, T, 3, H, W) in
    [0, 1] and factor labels (B, F) -> the same with column ``axis`` (background) relabelled, and the alpha
    shown. The pasted shape is moved and zoomed first (``affine_clips`` with ``move_px``, ``move_scale``),
    so that neither its place nor its size can name the clip it comes from."""
    b = len(x)
    swap = torch.rand(b, device=x.device) < prob
    other = torch.randint(len(backgrounds), (b,), device=x.device)
    moved = affine_clips(alpha[:, :, None], move_px, move_scale, padding="zeros")[:, :, 0] if move_px > 0 or move_scale > 0 else alpha
    x = torch.where(swap[:, None, None, None, None], paste(moved, colour, backgrounds[other]), x)
    labels = labels.clone()
    labels[:, axis] = torch.where(swap, background_labels[other], labels[:, axis])
    return x, labels, torch.where(swap[:, None, None, None], moved, alpha)


def mirror_motion(motions: tuple[str, ...], horizontal: bool) -> torch.Tensor:
    """Where each motion goes under a horizontal mirror (left <-> right) or a time reversal (every direction reversed): (n_motions,) int64."""
    swap = {"left": "right", "right": "left"} if horizontal else {"left": "right", "right": "left", "up": "down", "down": "up"}
    return torch.tensor([motions.index(swap.get(m, m)) for m in motions])


def flip_and_reverse(
    x: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor, prob: float, motion_axis: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mirror clips left-right and, when they have a motion label (column ``motion_axis``), play them backwards,
    each with probability ``prob`` per clip, relabelling the motion: x (B, T, 3, H, W), labels (B, F), alpha
    (B, T, H, W) flipped alike. Every shape of the world is left-right symmetric and every background stays of
    its kind, so only the motion label changes; an up-down mirror would turn the triangle over and is not used."""
    b = len(x)
    labels = labels.clone()
    flips = [(-1, True)] + ([(1, False)] if motion_axis is not None else [])  # (dim of x, horizontal)
    for dim, horizontal in flips:
        chosen = torch.rand(b, device=x.device) < prob
        x = torch.where(chosen[:, None, None, None, None], x.flip(dim), x)
        alpha = torch.where(chosen[:, None, None, None], alpha.flip(dim), alpha)
        if motion_axis is not None:
            mapped = mirror_motion(FACTORS["motion"], horizontal).to(labels.device)[labels[:, motion_axis]]
            labels[:, motion_axis] = torch.where(chosen, mapped, labels[:, motion_axis])
    return x, labels, alpha


def training_views(
    frames: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor, layers: Layers,
    factors: tuple[str, ...], config: ClassifierConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The augmented clips a classifier trains on, from uint8 clips (B, T, H, W, 3) with their factor labels
    (B, F), shape alpha (B, T, H, W) and colour (B, 3): (clips in [0, 1] (B, T, 3, H, W), labels, alpha shown).
    Backgrounds swapped (``swap_backgrounds``), mirrored / reversed (``flip_and_reverse``), then shifted,
    blurred and noised (``augment_clips``)."""
    x, labels, alpha = swap_backgrounds(
        unit_range(frames), labels, alpha, colour, layers.background, layers.background_labels, config.paste_prob,
        factors.index("background"), config.move_px, config.move_scale,
    )
    x, labels, alpha = flip_and_reverse(x, labels, alpha, config.flip_prob, factors.index("motion") if "motion" in factors else None)
    x, alpha = augment_clips(x, config.shift_px, config.blur_sigma, config.noise_std, config.max_scale, alpha)
    return x, labels, alpha


# ---------------------------------------------------------------- the factored head


def factor_sizes(factors: tuple[str, ...]) -> list[int]:
    """Number of values of each factor: (4, 6, 4) for ``IMAGE_FACTORS``."""
    return [len(FACTORS[f]) for f in factors]


def factor_loss(
    logits: torch.Tensor, labels: torch.Tensor, sizes: list[int], smoothing: float = 0.0, weights: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """Sum over factors of the cross-entropy of their logits, times ``weights`` (None = 1 each):
    (B, sum(sizes)), labels (B, n_factors) -> scalar."""
    parts = logits.float().split(sizes, dim=1)
    weights = weights or (1.0,) * len(sizes)
    return sum(w * F.cross_entropy(part, labels[:, i], label_smoothing=smoothing) for i, (part, w) in enumerate(zip(parts, weights, strict=True)))


def fold_factored_head(head: nn.Linear, sizes: list[int]) -> nn.Linear:
    """The Linear over every combination of the factors (first factor slowest, as ``class_names``) whose
    logit of a combination is the sum of its factors' logits of ``head`` (out = sum(sizes))."""
    weight = torch.zeros(1, head.in_features, dtype=head.weight.dtype, device=head.weight.device)  # (combos so far, D)
    bias = torch.zeros(1, dtype=head.weight.dtype, device=head.weight.device)
    for w, b in zip(head.weight.detach().split(sizes), head.bias.detach().split(sizes), strict=True):
        weight = (weight[:, None, :] + w[None, :, :]).reshape(-1, head.in_features)
        bias = (bias[:, None] + b[None, :]).reshape(-1)
    folded = nn.Linear(head.in_features, len(bias)).to(head.weight.device, head.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded


def factor_accuracies(probs: np.ndarray, labels: dict[str, np.ndarray], factors: tuple[str, ...]) -> dict[str, float]:
    """Top-1 accuracy of each factor (its marginal probabilities) and of the full class: probs (N, C) over
    ``class_names(factors)``, labels {factor: (N,)} -> ``{"top1_<factor>": ..., "top1_class": ...}``."""
    joint = probs.reshape(len(probs), *factor_sizes(factors))  # (N, 4, 6, 4[, 4])
    out, class_ids = {}, np.zeros(len(probs), dtype=np.int64)
    for axis, factor in enumerate(factors):
        marginal = joint.sum(axis=tuple(a + 1 for a in range(len(factors)) if a != axis))  # (N, n_values)
        out[f"top1_{factor}"] = float((marginal.argmax(axis=1) == labels[factor]).mean())
        class_ids = class_ids * len(FACTORS[factor]) + labels[factor]  # as ClipSet.class_ids
    out["top1_class"] = float((probs.argmax(axis=1) == class_ids).mean())
    return out


# ---------------------------------------------------------------- shared pieces


def frames_at(frames: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 clips (N, T, H, W, 3) at ``size`` x ``size`` px (resized only when they differ)."""
    if frames.shape[2:4] == (size, size):
        return frames
    n, t = frames.shape[:2]
    return resize_frames(frames.reshape(n * t, *frames.shape[2:]), size).reshape(n, t, size, size, 3)


def unit_range(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) on any device -> float (..., 3, H, W) in [0, 1]."""
    return frames.float().div(255.0).movedim(-1, -3)


def normalized(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> normalised by the processor's mean and std."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return (x - m) / s


def labels_of(clips: ClipSet, factors: tuple[str, ...]) -> torch.Tensor:
    """Factor labels (N, n_factors) int64."""
    return torch.from_numpy(np.stack([clips.labels[f] for f in factors], axis=1))


def label_maps(factors: tuple[str, ...]) -> dict[str, Any]:
    """``num_labels``, ``id2label`` and ``label2id`` of the classes of ``factors``."""
    names = class_names(factors)
    return {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def export_folded(model: nn.Module, processor: Any, sizes: list[int], out_dir: Path) -> None:
    """Save a copy of ``model`` with its factored head folded (``save_pretrained``) and ``processor`` into ``out_dir``."""
    exported = copy.deepcopy(model)
    exported.classifier = fold_factored_head(model.classifier, sizes)
    exported.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


class MaskedClassifier(nn.Module):
    """What a classifier step trains: the Hugging Face classifier (``model``, with its factored head) and a
    training-only ``mask_head`` that predicts, from each patch token's last hidden state, the shape's alpha
    over that patch (``tubelet`` frames x patch x patch values). Only ``model`` is exported.

    The dense target teaches the tokens where the shape is, which the class labels alone teach slowly
    (the video classifier hardly learns the motion without it).
    """

    def __init__(self, model: nn.Module, patch_size: int, tubelet: int) -> None:
        super().__init__()
        self.model = model
        self.patch_size, self.tubelet = patch_size, tubelet
        self.mask_head = nn.Linear(model.config.hidden_size, tubelet * patch_size**2)

    def mask_targets(self, alpha: torch.Tensor) -> torch.Tensor:
        """alpha (B, T, H, W) -> per-token targets (B, tokens, tubelet * p * p), tokens in the patch embedding's order."""
        b, t, h, w = alpha.shape
        p, k = self.patch_size, self.tubelet
        blocks = alpha.reshape(b, t // k, k, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)  # (B, T/k, H/p, W/p, k, p, p)
        return blocks.reshape(b, -1, k * p * p)

    def loss(self, pixels: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor, sizes: list[int], config: ClassifierConfig) -> torch.Tensor:
        """Summed factor cross-entropies plus ``mask_weight`` x the mean squared error of the predicted alpha:
        normalised pixels (B, [T,] 3, H, W), labels (B, F), alpha (B, T, H, W) (T = 1 for images)."""
        out = self.model(pixel_values=pixels, output_hidden_states=config.mask_weight > 0)
        value = factor_loss(out.logits, labels, sizes, config.label_smoothing, config.factor_weights[: len(sizes)])
        if config.mask_weight > 0:
            targets = self.mask_targets(alpha)  # (B, tokens, k * p * p)
            tokens = out.hidden_states[-1][:, -targets.shape[1]:]  # the patch tokens (the ViT's CLS token first)
            value = value + config.mask_weight * F.mse_loss(self.mask_head(tokens).float(), targets)
        return value


# ---------------------------------------------------------------- image classifier


def image_processor() -> Any:
    """The ViT image processor of the demo classifier: 64 x 64 px, mean/std 0.5."""
    return zoo._image_processor("ViT", size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=IMAGE_MEAN, image_std=IMAGE_STD)


def image_model(config: ClassifierConfig) -> nn.Module:
    """A ViTForImageClassification over the 96 image classes, its classifier replaced by the factored head."""
    from transformers import ViTConfig, ViTForImageClassification

    vit = ViTForImageClassification(ViTConfig(
        image_size=IMAGE_SIZE, patch_size=config.patch_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, **label_maps(IMAGE_FACTORS),
    ))
    vit.classifier = nn.Linear(config.hidden_size, sum(factor_sizes(IMAGE_FACTORS)))
    return vit


def image_step(
    data: DemoData, data_root: str | Path | None, device: torch.device,
    settings: TrainSettings = IMAGE_TRAIN, config: ClassifierConfig = IMAGE_CONFIG,
) -> FitStep:
    """The image classifier's FitStep: every frame of the fit clips, augmented (``training_views``), against its clip's factors."""
    sizes = factor_sizes(IMAGE_FACTORS)
    frames = frames_at(data.fit.frames)  # (N, T, 64, 64, 3)
    n, t = frames.shape[:2]
    layers = split_layers(frames, data.fit)
    train = IndexedTensors(
        torch.from_numpy(frames.reshape(n * t, *frames.shape[2:])),  # (N*T, 64, 64, 3) uint8
        labels_of(data.fit, IMAGE_FACTORS).repeat_interleave(t, dim=0),  # (N*T, 3)
        layers.alpha.reshape(n * t, *layers.alpha.shape[2:]),  # (N*T, 64, 64)
        layers.colour.repeat_interleave(t, dim=0),  # (N*T, 3)
    )
    on_device = layers.to(device)
    held = frames_at(data.held_out.target_frames())  # (M, 15, 64, 64, 3)
    held_x = torch.from_numpy(held.reshape(-1, *held.shape[2:]))
    held_y = labels_of(data.held_out, IMAGE_FACTORS).repeat_interleave(held.shape[1], dim=0).to(device)
    processor = image_processor()
    out_dir = layout.demo_model_dir(data_root, layout.DEMO_MODEL_FOLDERS["image_classifier"])

    def loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        pixels, labels, alpha, colour = batch  # (B, 64, 64, 3) uint8, (B, 3), (B, 64, 64), (B, 3)
        x, labels, alpha = training_views(pixels[:, None], labels, alpha[:, None], colour, on_device, IMAGE_FACTORS, config)
        return model.loss(normalized(x[:, 0], IMAGE_MEAN, IMAGE_STD), labels, alpha, sizes, config)

    def validate(model: nn.Module) -> dict[str, float]:
        def run() -> float:
            x = normalized(unit_range(held_x.to(device)), IMAGE_MEAN, IMAGE_STD)
            return float(factor_loss(model.model(pixel_values=x).logits, held_y, sizes))
        return {"val_loss": in_eval_mode(model, run)}

    def export(model: nn.Module, directory: Path) -> None:
        export_folded(model.model, processor, sizes, directory)

    def score(model: nn.Module) -> dict[str, Any]:
        return image_metrics(data.held_out, out_dir, next(model.parameters()).device)

    model = MaskedClassifier(image_model(config), config.patch_size, 1).to(device)

    def load(directory: Path) -> nn.Module:  # score reads the exported folder; the module gives its device
        from transformers import ViTForImageClassification

        return ViTForImageClassification.from_pretrained(directory).to(device)

    return FitStep(model, train, loss, validate, export, score, settings, asdict(config), load=load)


def image_metrics(clips: ClipSet, folder: Path, device: torch.device) -> dict[str, Any]:
    """Held-out metrics of the exported image classifier in ``folder`` on every target frame of ``clips``:
    top-1 per factor and class, and top-1 class on blurred frames (``blurred``)."""
    from transformers import AutoImageProcessor, ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(folder).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    frames = clips.target_frames()  # (M, 15, H, W, 3)
    flat = frames.reshape(-1, *frames.shape[2:])
    labels = {f: np.repeat(v, frames.shape[1]) for f, v in clips.labels.items()}  # per frame
    out: dict[str, Any] = factor_accuracies(metrics.image_class_probs(model, processor, flat), labels, IMAGE_FACTORS)  # (M*15, 96)
    blur = factor_accuracies(metrics.image_class_probs(model, processor, blurred(flat)), labels, IMAGE_FACTORS)
    out["top1_class_blurred"], out["top1_shape_blurred"] = blur["top1_class"], blur["top1_shape"]
    out["frames"] = len(flat)
    return out


# ---------------------------------------------------------------- video classifier


def video_processor() -> Any:
    """The VideoMAE image processor of the demo classifier: shortest edge 64, centre crop 64, ImageNet mean/std."""
    return zoo._image_processor(
        "VideoMAE", size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=zoo.IMAGENET_MEAN, image_std=zoo.IMAGENET_STD,
    )


def video_model(config: ClassifierConfig) -> nn.Module:
    """A VideoMAEForVideoClassification (mean pooling) over the 384 video classes, its classifier the factored head."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    model = VideoMAEForVideoClassification(VideoMAEConfig(
        image_size=IMAGE_SIZE, patch_size=config.patch_size, num_frames=config.num_frames, tubelet_size=2,
        hidden_size=config.hidden_size, intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, use_mean_pooling=True, **label_maps(VIDEO_FACTORS),
    ))
    model.classifier = nn.Linear(config.hidden_size, sum(factor_sizes(VIDEO_FACTORS)))
    return model


def eval_frame_indices(n_total: int, num_frames: int) -> np.ndarray:
    """The decoded frames the evaluation feeds the video classifier: ``num_frames`` of the 15 target frames."""
    return sample_indices(n_total, N_TARGET_FRAMES)[sample_indices(N_TARGET_FRAMES, num_frames)]


def window_indices(b: int, n_total: int, num_frames: int, min_span: float, device: torch.device) -> torch.Tensor:
    """Frame indices (B, num_frames): ``num_frames`` spread evenly over a random window of each clip, at
    least ``min_span`` of its ``n_total`` frames long (the whole clip is one of the windows)."""
    span = (min_span + (1 - min_span) * torch.rand(b, 1, device=device)) * (n_total - 1)  # (B, 1) frames
    start = torch.rand(b, 1, device=device) * (n_total - 1 - span)
    steps = torch.linspace(0, 1, num_frames, device=device)[None]  # (1, F)
    return (start + span * steps).round().long().clamp(0, n_total - 1)


def video_step(
    data: DemoData, data_root: str | Path | None, device: torch.device,
    settings: TrainSettings = VIDEO_TRAIN, config: ClassifierConfig = VIDEO_CONFIG,
) -> FitStep:
    """The video classifier's FitStep: fit clips (frames from a random window, augmented by ``training_views``)
    against their factors."""
    sizes = factor_sizes(VIDEO_FACTORS)
    mean, std = zoo.IMAGENET_MEAN, zoo.IMAGENET_STD
    frames = frames_at(data.fit.frames)  # (N, T, 64, 64, 3)
    n_total = frames.shape[1]
    layers = split_layers(frames, data.fit)
    train = IndexedTensors(torch.from_numpy(frames), labels_of(data.fit, VIDEO_FACTORS), layers.alpha, layers.colour)
    on_device = layers.to(device)
    held_frames = frames_at(data.held_out.frames)
    held_x = torch.from_numpy(held_frames[:, eval_frame_indices(held_frames.shape[1], config.num_frames)])  # (M, F, 64, 64, 3)
    held_y = labels_of(data.held_out, VIDEO_FACTORS).to(device)
    processor = video_processor()
    out_dir = layout.demo_model_dir(data_root, layout.DEMO_MODEL_FOLDERS["video_classifier"])

    def loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        clips, labels, alpha, colour = batch  # (B, T, 64, 64, 3) uint8, (B, 4), (B, T, 64, 64), (B, 3)
        index = window_indices(len(clips), n_total, config.num_frames, config.min_span, clips.device)  # (B, F)
        rows = torch.arange(len(clips), device=clips.device)[:, None]
        x, labels, alpha = training_views(clips[rows, index], labels, alpha[rows, index], colour, on_device, VIDEO_FACTORS, config)
        return model.loss(normalized(x, mean, std), labels, alpha, sizes, config)

    def validate(model: nn.Module) -> dict[str, float]:
        def run() -> float:
            x = normalized(unit_range(held_x.to(device)), mean, std)
            return float(factor_loss(model.model(pixel_values=x).logits, held_y, sizes))
        return {"val_loss": in_eval_mode(model, run)}

    def export(model: nn.Module, directory: Path) -> None:
        export_folded(model.model, processor, sizes, directory)

    def score(model: nn.Module) -> dict[str, Any]:
        return video_metrics(data.held_out, out_dir, next(model.parameters()).device)

    model = MaskedClassifier(video_model(config), config.patch_size, 2).to(device)

    def load(directory: Path) -> nn.Module:  # score reads the exported folder; the module gives its device
        from transformers import VideoMAEForVideoClassification

        return VideoMAEForVideoClassification.from_pretrained(directory).to(device)

    return FitStep(model, train, loss, validate, export, score, settings, asdict(config), load=load)


def video_metrics(clips: ClipSet, folder: Path, device: torch.device) -> dict[str, Any]:
    """Held-out metrics of the exported video classifier in ``folder`` on the 15 target frames of each of
    ``clips`` (sampled by ``video_class_probs``): top-1 per factor and class, and top-1 class when blurred."""
    from transformers import AutoImageProcessor, VideoMAEForVideoClassification

    model = VideoMAEForVideoClassification.from_pretrained(folder).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    frames = clips.target_frames()  # (M, 15, H, W, 3)
    probs = metrics.video_class_probs(model, processor, list(frames))  # (M, 384)
    blur_probs = metrics.video_class_probs(model, processor, [blurred(clip) for clip in frames])
    out: dict[str, Any] = factor_accuracies(probs, clips.labels, VIDEO_FACTORS)
    blur = factor_accuracies(blur_probs, clips.labels, VIDEO_FACTORS)
    out["top1_class_blurred"], out["top1_motion_blurred"] = blur["top1_class"], blur["top1_motion"]
    out["clips"] = len(frames)
    return out
