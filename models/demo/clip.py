"""Fit the demo's CLIP (``transformers.CLIPModel``) to the synthetic world, contrastively.

Each step takes a batch of fit clips, one random frame of each (augmented as the classifiers'
frames, ``models.demo.classifiers.augment_clips``, then normalised as the exported processor
does: ``models.targets.clip_image_embeddings`` and ``utils.metrics.clip_image_embeddings`` see
the same numbers) and one random caption of each, and minimises the symmetric InfoNCE loss with
CLIP's learnable logit scale. Clips of the same image class (shape, colour, background: what one
frame shows) in a batch are not negatives of each other: with ``class_aware`` the targets spread
over every caption of the frame's class.

The text tower also serves as the demo Zeroscope's text encoder, whose UNet cross-attends to its
last hidden states, so they must tell the captions of different classes apart, motion included,
which no single frame shows. ``text_text_weight`` adds a supervised contrastive loss between two
captions of each clip on the text tower's pooled state (before the projection, which stays free to
match the frames): for each of ``text_text_factors`` (motion included), the captions of clips with
the same value are the positives, one loss per factor, each weighted by ``text_text_weight``.

The exported folder is ``CLIPModel.save_pretrained`` + ``CLIPProcessor`` (a 64 px
``CLIPImageProcessor`` with BLIP/CLIP's mean and std, and ``zoo.clip_tokenizer(zoo.demo_words())``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import zoo
from models.demo.classifiers import augment_clips, blurred, frames_at, in_eval_mode, normalized, unit_range
from models.demo.data import FACTORS, IMAGE_FACTORS, VIDEO_FACTORS, ClipSet, DemoData, FitStep, IndexedTensors
from models.training import TrainSettings
from utils import layout, metrics

IMAGE_SIZE = zoo.CLIP_IMAGE_SIZE["demo"]
CLIP_TRAIN = TrainSettings(epochs=50, lr=1e-3, warmup_epochs=5.0, betas=(0.9, 0.98), weight_decay=0.1, batch_size=32)


@dataclass(frozen=True)
class ClipConfig:
    """Size, loss and augmentation of the demo CLIP (everything but the optimisation settings).

    hidden_size: width of both towers; class_aware: same-image-class captions are positives;
    text_text_weight / text_temperature: the caption-caption loss on the text tower's pooled state;
    shift_px, blur_sigma, noise_std: the frame augmentation (``augment_clips``).
    """

    patch_size: int = 8
    hidden_size: int = 64
    intermediate_size: int = 128
    vision_layers: int = 3
    text_layers: int = 3
    num_heads: int = 4
    projection_dim: int = 64
    class_aware: bool = True
    text_text_weight: float = 1.0
    text_temperature: float = 0.1
    text_text_factors: tuple[str, ...] = VIDEO_FACTORS
    shift_px: float = 3.0
    blur_sigma: float = 1.5
    noise_std: float = 0.04


def clip_config(tokenizer: Any, config: ClipConfig) -> Any:
    """The ``CLIPConfig`` of the demo CLIP: 64 px images, the demo tokenizer's vocabulary, 77 positions."""
    from transformers import CLIPConfig

    text = {
        **zoo.tiny_clip_text_config(tokenizer, config.hidden_size, config.projection_dim),
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.text_layers, "num_attention_heads": config.num_heads,
    }
    vision = {
        "image_size": IMAGE_SIZE, "patch_size": config.patch_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.vision_layers,
        "num_attention_heads": config.num_heads, "projection_dim": config.projection_dim,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.projection_dim)


def clip_processor(tokenizer: Any) -> Any:
    """The exported ``CLIPProcessor``: 64 px (shortest edge, centre crop), BLIP/CLIP mean and std, ``tokenizer``."""
    from transformers import CLIPProcessor

    image_processor = zoo._image_processor(
        "CLIP", size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=zoo.BLIP_MEAN, image_std=zoo.BLIP_STD,
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tokenize(tokenizer: Any, captions: tuple[tuple[str, ...], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention masks of every clip's captions, padded to the longest: (N, K, L) each."""
    flat = [c for group in captions for c in group]
    tokens = tokenizer(flat, padding=True, truncation=True, return_tensors="pt")
    n, k = len(captions), len(captions[0])
    return tokens["input_ids"].view(n, k, -1), tokens["attention_mask"].view(n, k, -1)


def image_features(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm projected image embeddings (as ``get_image_features``): (B, 3, S, S) normalised -> (B, D)."""
    return F.normalize(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1)


def same_class_targets(classes: torch.Tensor, class_aware: bool) -> torch.Tensor:
    """InfoNCE targets (B, B): uniform over the batch items of the same class (or the identity)."""
    same = classes[:, None] == classes[None, :] if class_aware else torch.eye(len(classes), dtype=torch.bool, device=classes.device)
    same = same.float()
    return same / same.sum(dim=1, keepdim=True)


def soft_info_nce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets: logits (B, B) row i = query i, targets (B, B) symmetric in support."""
    rows = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    cols = -(targets.T * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (rows + cols) / 2


def contrastive_loss(
    model: nn.Module, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor, class_aware: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image-text InfoNCE with the learnable logit scale, the pooled text states (B, hidden)) of one batch:
    normalised frames (B, 3, S, S), captions ids / mask (B, L), image classes (B,)."""
    pooled = model.text_model(input_ids=ids, attention_mask=mask).pooler_output  # (B, hidden)
    text = F.normalize(model.text_projection(pooled), dim=-1)  # (B, D)
    scale = model.logit_scale.exp().clamp(max=100.0)
    logits = scale * image_features(model, pixels) @ text.T  # (B, B)
    return soft_info_nce(logits.float(), same_class_targets(classes, class_aware)), pooled


def clip_step(
    data: DemoData, data_root: str | Path | None, device: torch.device,
    settings: TrainSettings = CLIP_TRAIN, config: ClipConfig = ClipConfig(),
) -> FitStep:
    """The CLIP's FitStep: a random frame and a random caption of each fit clip per batch item."""
    from transformers import CLIPModel

    tokenizer = zoo.clip_tokenizer(zoo.demo_words())
    processor = clip_processor(tokenizer)
    frames = frames_at(data.fit.frames, IMAGE_SIZE)  # (N, T, 64, 64, 3)
    ids, mask = tokenize(tokenizer, data.fit.captions)  # (N, 5, L)
    train = IndexedTensors(
        torch.from_numpy(frames), ids, mask,
        torch.from_numpy(data.fit.class_ids(IMAGE_FACTORS)),
        torch.from_numpy(np.stack([data.fit.labels[f] for f in config.text_text_factors], axis=1)),  # (N, factors)
    )
    n_frames, n_captions = frames.shape[1], ids.shape[1]
    held = frames_at(data.held_out.target_frames(), IMAGE_SIZE)
    held_pixels = torch.from_numpy(held[:, held.shape[1] // 2])  # (M, 64, 64, 3): the middle frame of each clip
    held_ids, held_mask = (t[:, 0] for t in tokenize(tokenizer, data.held_out.captions))  # (M, L): the first caption
    held_classes = torch.from_numpy(data.held_out.class_ids(IMAGE_FACTORS))
    out_dir = layout.demo_model_dir(data_root, layout.DEMO_MODEL_FOLDERS["clip"])

    def loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        clips, ids, mask, image_classes, factor_labels = batch  # (B, T, 64, 64, 3) uint8, (B, 5, L) x2, (B,), (B, factors)
        rows = torch.arange(len(clips), device=clips.device)
        frame = torch.randint(n_frames, (len(clips),), device=clips.device)
        first = torch.randint(n_captions, (len(clips),), device=clips.device)
        x = augment_clips(unit_range(clips[rows, frame][:, None]), config.shift_px, config.blur_sigma, config.noise_std)[0][:, 0]
        value, pooled = contrastive_loss(
            model, normalized(x, zoo.BLIP_MEAN, zoo.BLIP_STD), ids[rows, first], mask[rows, first], image_classes, config.class_aware,
        )
        if config.text_text_weight > 0:
            second = (first + torch.randint(1, n_captions, (len(clips),), device=clips.device)) % n_captions  # another caption
            other = model.text_model(input_ids=ids[rows, second], attention_mask=mask[rows, second]).pooler_output
            logits = F.normalize(pooled, dim=-1) @ F.normalize(other, dim=-1).T / config.text_temperature  # (B, B)
            per_factor = [soft_info_nce(logits.float(), same_class_targets(labels, True)) for labels in factor_labels.T]
            value = value + config.text_text_weight * sum(per_factor)
        return value

    def validate(model: nn.Module) -> dict[str, float]:
        def run() -> float:
            pixels = normalized(unit_range(held_pixels.to(device)), zoo.BLIP_MEAN, zoo.BLIP_STD)
            value, _ = contrastive_loss(
                model, pixels, held_ids.to(device), held_mask.to(device), held_classes.to(device), config.class_aware,
            )
            return float(value)
        return {"val_loss": in_eval_mode(model, run)}

    def export(model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)
        processor.save_pretrained(directory)

    def score(model: nn.Module) -> dict[str, Any]:
        from transformers import CLIPProcessor

        return clip_metrics(model, CLIPProcessor.from_pretrained(out_dir), data)

    model = CLIPModel(clip_config(tokenizer, config)).to(device)
    return FitStep(model, train, loss, validate, export, score, settings, asdict(config),
                   load=lambda directory: CLIPModel.from_pretrained(directory).to(device).eval())


def clip_metrics(model: nn.Module, processor: Any, data: DemoData) -> dict[str, Any]:
    """Held-out metrics of the CLIP through the evaluation path (``utils.metrics``, the exported processor).

    retrieval_top1_clip / _class: a held-out target frame's best caption among all held-out captions is
    one of its clip's / of a clip of its image class (chance about 1 / clips); frames_2way_identification:
    a clip's even target frames identify its odd ones (mean embedding, cosine, 2-way as for reconstructions);
    blurred_2way_identification: its blurred frames identify its clean ones; text_state_top1_<factor>:
    a linear probe of each factor on the last hidden states of the captions, padded to 77 tokens as the
    Zeroscope prompts and averaged over the tokens (:func:`text_state_accuracies`).
    """
    held = data.held_out
    frames = held.target_frames()  # (M, 15, H, W, 3)
    m, t = frames.shape[:2]
    flat = frames.reshape(m * t, *frames.shape[2:])
    emb = metrics.clip_image_embeddings(model, processor, flat).reshape(m, t, -1)  # (M, 15, D)
    blur_emb = metrics.clip_image_embeddings(model, processor, blurred(flat)).reshape(m, t, -1)
    captions = [c for group in held.captions for c in group]
    text = metrics.clip_text_embeddings(model, processor, captions)  # (M*K, D)
    k = len(held.captions[0])
    best_clip = metrics.cosine_matrix(emb.reshape(m * t, -1), text).argmax(axis=1) // k  # (M*15,)
    frame_clip = np.repeat(np.arange(m), t)
    image_class = held.class_ids(IMAGE_FACTORS)
    out: dict[str, Any] = {
        "retrieval_top1_clip": float((best_clip == frame_clip).mean()),
        "retrieval_top1_class": float((image_class[best_clip] == image_class[frame_clip]).mean()),
        "retrieval_chance": 1.0 / m,
    }
    if m >= 2:
        pairs = {"frames_2way_identification": (emb[:, ::2], emb[:, 1::2]), "blurred_2way_identification": (blur_emb, emb)}
        for name, (pred, true) in pairs.items():
            scores = metrics.cosine_matrix(pred.mean(axis=1), true.mean(axis=1))  # (M, M)
            out[name] = float(metrics.n_way_from_scores(scores, 2).mean())
    out.update(text_state_accuracies(model, processor.tokenizer, data))
    return out


def text_states(model: nn.Module, tokenizer: Any, captions: list[str]) -> np.ndarray:
    """The text tower's last hidden state of each caption padded to 77 tokens (as ``encode_prompts``), averaged over tokens -> (K, hidden)."""
    from models.video_diffusion import encode_prompts

    states = encode_prompts(model.text_model, tokenizer, captions, next(model.parameters()).device)  # (K, 77, hidden)
    return states.float().mean(dim=1).cpu().numpy().astype(np.float64)


def text_state_accuracies(model: nn.Module, tokenizer: Any, data: DemoData, ridge: float = 10.0) -> dict[str, float]:
    """Per factor, the held-out top-1 of a linear probe (ridge regression onto the one-hot values, standardised
    features, fitted on the fit clips' captions) of the captions' token-averaged text states."""
    def states_and_labels(clips: ClipSet) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        k = len(clips.captions[0])
        states = text_states(model, tokenizer, [c for group in clips.captions for c in group])
        return states, {f: np.repeat(v, k) for f, v in clips.labels.items()}

    fit_states, fit_labels = states_and_labels(data.fit)
    held_states, held_labels = states_and_labels(data.held_out)
    mean, std = fit_states.mean(axis=0), fit_states.std(axis=0) + 1e-6
    x, x_held = (fit_states - mean) / std, (held_states - mean) / std  # (K, hidden), (K_held, hidden)
    gram = x.T @ x + ridge * np.eye(x.shape[1])
    out = {}
    for factor in FACTORS:
        onehot = np.eye(len(FACTORS[factor]))[fit_labels[factor]]  # (K, n_values)
        weights = np.linalg.solve(gram, x.T @ (onehot - onehot.mean(axis=0)))  # (hidden, n_values)
        out[f"text_state_top1_{factor}"] = float(((x_held @ weights).argmax(axis=1) == held_labels[factor]).mean())
    return out
