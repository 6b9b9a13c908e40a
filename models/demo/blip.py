"""Fit step ``blip``: a small BlipForConditionalGeneration that captions frame-averaged embeddings.

The vision encoder sees the 15 target frames of a clip (``ClipSet.target_frames``) prepared as
``models.targets.blip_embeddings`` prepares them with the default settings (squashed to 64 px,
[0, 1], BLIP mean/std); its last hidden state averaged over the frames, (tokens, dim) =
(1 + (64 / patch)^2, width), is the stored ``blip`` target, the one regression predicts from
brain data. The text decoder learns, with the LM loss, to continue the caption prompt
("a picture of ") with each of the clip's 5 captions (lower case, final period dropped),
cross-attending to that average; encoder and decoder train together.

Captions are decoded later from *predicted* embeddings (ridge from noisy fMRI: shrunk toward the
mean, noisy). So the decoder trains on degraded averages: per row, with probability
``1 - clean_fraction``, ``m + s (e - m) + sigma * rms * noise`` with ``m`` the batch mean (detached),
``rms`` the root mean square of ``e - m``, ``s ~ U(shrink)``, ``sigma ~ U(noise)``.

Linear probes (:class:`BlipWithProbes`, not exported) add cross-entropy losses for the design
labels of the fit clips: shape, colour, background and motion axis from the token mean of the
(degraded) average, and shape, colour, background from each frame's token mean. They make the
LM's factors readable in the embedding early in the short fit (held-out colour rose from about
0.7 to 0.9 with the frame probes).

What it learns (bench: 108 fit clips, ~40 s on 2 cores): colour and background almost always,
also from degraded or ridge-predicted embeddings; shape and motion axis stay near chance on
unseen clips: a ViT this small, trained from scratch on 108 clips, memorises the fit clips' shapes
(recognising each clip by its background) instead of learning shape (even per frame).

Word embeddings and the LM head are not tied (``tie_word_embeddings=False``; the real BLIP ties
them): tied tensors share memory, which the training checkpoints (safetensors) refuse.

The held-out metrics (:func:`caption_scores`) decode captions with ``models.captioning`` and its
default settings from the true averages and from degraded ones, and count the captions that name
the clip's shape, colour, background and motion. A time average cannot tell left from right or
up from down (the streak is the same), so the direction is at chance within the axis.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import targets, zoo
from models.captioning import DEFAULT_PROMPT, CaptionSettings, caption_embeddings
from models.demo.data import FACTORS, ClipSet, DemoData, FitStep, IndexedTensors
from models.training import TrainSettings
from utils.synthetic import _BACKGROUND_PHRASES, _MOTION_WORDS, _SHAPE_WORDS

IMAGE_SIZE = zoo.BLIP_IMAGE_SIZE["demo"]
AXES = {"left": "horizontal", "right": "horizontal", "up": "vertical", "down": "vertical"}


@dataclass(frozen=True)
class BlipFitSettings:
    """Sizes, augmentation and optimisation of the demo BLIP.

    shrink / noise: ranges of the training degradation (see the module docstring); clean_fraction:
    share of caption rows trained on the undegraded average; aux_weight: weight of the factor
    probes on the averaged embedding (:class:`BlipWithProbes`, 0 = off); frame_weight: of the
    per-frame probes (0 = off); degraded: (shrink, noise) of the
    held-out "degraded" metric; examples: captions kept in the metrics per condition.
    """

    patch_size: int = 16
    vision_width: int = 64
    vision_layers: int = 3
    text_width: int = 64
    text_layers: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    shrink: tuple[float, float] = (0.2, 1.0)
    noise: tuple[float, float] = (0.0, 0.8)
    clean_fraction: float = 0.2
    aux_weight: float = 1.0
    frame_weight: float = 1.0
    degraded: tuple[float, float] = (0.5, 0.5)
    examples: int = 3
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        epochs=24, lr=4e-3, warmup_epochs=1.0, betas=(0.9, 0.98), min_lr_ratio=0.05, weight_decay=0.05, batch_size=4,
    ))


DEFAULTS = BlipFitSettings()


def blip_config(settings: BlipFitSettings, vocab: dict[str, int]) -> Any:
    """BlipConfig of the demo BLIP: 64 px, ``settings`` widths, the demo vocabulary's special ids (as ``zoo.tiny_blip_config``)."""
    from transformers import BlipConfig

    text = {
        "vocab_size": len(vocab), "hidden_size": settings.text_width, "intermediate_size": settings.mlp_ratio * settings.text_width,
        "num_hidden_layers": settings.text_layers, "num_attention_heads": settings.heads, "max_position_embeddings": 64,
        "pad_token_id": vocab["[PAD]"], "bos_token_id": vocab["[DEC]"], "sep_token_id": vocab["[SEP]"], "eos_token_id": vocab["[SEP]"],
        "tie_word_embeddings": False,
    }
    vision = {
        "image_size": IMAGE_SIZE, "patch_size": settings.patch_size, "hidden_size": settings.vision_width,
        "intermediate_size": settings.mlp_ratio * settings.vision_width, "num_hidden_layers": settings.vision_layers,
        "num_attention_heads": settings.heads,
    }
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=settings.text_width, tie_word_embeddings=False)


def build_processor() -> Any:
    """BlipProcessor of the demo: 64 px image processor with BLIP's mean/std, the demo BertTokenizer (bos ``[DEC]``)."""
    from transformers import BlipProcessor

    image_processor = zoo._image_processor(
        "Blip", size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=zoo.BLIP_MEAN, image_std=zoo.BLIP_STD,
    )
    return BlipProcessor(image_processor=image_processor, tokenizer=zoo.bert_tokenizer(zoo.demo_words()))


def caption_text(caption: str, prompt: str = DEFAULT_PROMPT) -> str:
    """The text the decoder learns: the prompt, then the caption in lower case without its final period."""
    return prompt + caption.strip().rstrip(".").strip().lower()


def target_frames(clips: ClipSet) -> np.ndarray:
    """The clips' 15 target frames squashed to 64 px as ``extract_targets_blip`` does -> uint8 (N, 15, 64, 64, 3)."""
    resize = targets.squash_resize(IMAGE_SIZE)
    return np.stack([resize(frames) for frames in clips.target_frames()])


def tokenize_captions(tokenizer: Any, clips: ClipSet, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder inputs of every clip's captions: (ids, attention mask, labels), each (N, 5, length).

    ids start with BOS (``[DEC]``) in place of ``[CLS]``, as BLIP's generate builds them; labels
    are the ids with padding and the prompt set to -100 (no loss).
    """
    texts = [caption_text(c) for group in clips.captions for c in group]
    tokens = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    ids, mask = tokens.input_ids.clone(), tokens.attention_mask
    ids[:, 0] = tokenizer.bos_token_id
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : prompt_length(tokenizer)] = -100
    n, k = len(clips), len(clips.captions[0])
    return ids.view(n, k, -1), mask.view(n, k, -1), labels.view(n, k, -1)


def prompt_length(tokenizer: Any, prompt: str = DEFAULT_PROMPT) -> int:
    """Positions taken by BOS and the prompt tokens at the start of every decoder input (4 for "a picture of ")."""
    return len(tokenizer(prompt).input_ids) - 1  # [CLS]/BOS + prompt tokens, without the trailing [SEP]


def caption_length(tokenizer: Any, clip_sets: list[ClipSet]) -> int:
    """Longest tokenized caption text over ``clip_sets`` (with [CLS] and [SEP])."""
    return max(len(tokenizer(caption_text(c)).input_ids) for clips in clip_sets for group in clips.captions for c in group)


def frame_states(model: Any, frames: torch.Tensor) -> torch.Tensor:
    """Vision last hidden state of every frame, with gradients: uint8 (B, T, S, S, 3) -> (B, T, tokens, dim).

    The computation of ``models.targets.blip_embeddings`` with normalisation, before its average.
    """
    b, t = frames.shape[:2]
    x = frames.reshape(b * t, *frames.shape[2:]).permute(0, 3, 1, 2).to(torch.float32) / 255.0  # (B*T, 3, S, S)
    x = targets.normalize(x, zoo.BLIP_MEAN, zoo.BLIP_STD)
    states = model.vision_model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state  # (B*T, tokens, dim)
    return states.view(b, t, *states.shape[1:])


def averaged_states(model: Any, frames: torch.Tensor) -> torch.Tensor:
    """The stored ``blip`` target, with gradients: frame states averaged over frames -> (B, tokens, dim)."""
    return frame_states(model, frames).mean(dim=1)


def degrade(states: torch.Tensor, center: torch.Tensor, rms: torch.Tensor | float, shrink: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``center + shrink (states - center) + noise``: states (B, T, D), center (T, D) or (1, T, D), shrink (B,), noise (B, T, D)."""
    return center + shrink.view(-1, 1, 1) * (states - center) + rms * noise


def augment(states: torch.Tensor, repeats: int, settings: BlipFitSettings) -> torch.Tensor:
    """Each row of ``states`` (B, T, D) repeated ``repeats`` times and degraded at random -> (B * repeats, T, D).

    Towards the batch mean (detached), by a shrink drawn from ``settings.shrink`` and Gaussian noise
    of ``sigma * rms`` with sigma from ``settings.noise``; a ``clean_fraction`` of rows is kept as is.
    """
    center = states.detach().mean(dim=0, keepdim=True)  # (1, T, D)
    rms = (states.detach() - center).pow(2).mean().sqrt()
    rows = states.repeat_interleave(repeats, dim=0)  # (B*k, T, D)
    n, device = rows.shape[0], rows.device
    clean = torch.rand(n, device=device) < settings.clean_fraction
    low, high = settings.shrink
    shrink = low + (high - low) * torch.rand(n, device=device)
    low, high = settings.noise
    sigma = low + (high - low) * torch.rand(n, device=device)
    degraded = degrade(rows, center, rms, shrink, sigma.view(-1, 1, 1) * torch.randn_like(rows))
    return torch.where(clean.view(-1, 1, 1), rows, degraded)


PROBE_FACTORS = {"shape": len(FACTORS["shape"]), "colour": len(FACTORS["colour"]), "background": len(FACTORS["background"]), "axis": 2}


class BlipWithProbes(torch.nn.Module):
    """What the step trains: the BLIP (``blip``, the part exported) and linear probes (``probes``)
    reading shape, colour, background and motion axis from the token mean of the averaged embedding."""

    def __init__(self, blip: Any) -> None:
        super().__init__()
        self.blip = blip
        width = blip.config.vision_config.hidden_size
        self.probes = torch.nn.ModuleDict({name: torch.nn.Linear(width, n) for name, n in PROBE_FACTORS.items()})

    def probe_logits(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """{factor: logits (B, classes)} of averaged embeddings (B, T, D)."""
        pooled = states.mean(dim=1)  # (B, D)
        return {name: probe(pooled) for name, probe in self.probes.items()}


def probe_labels(clips: ClipSet) -> torch.Tensor:
    """Class of each clip for the probes, (N, 4): shape, colour, background, motion axis (0 horizontal, 1 vertical)."""
    axis = np.asarray([AXES[FACTORS["motion"][m]] == "vertical" for m in clips.labels["motion"]], dtype=np.int64)
    columns = [clips.labels["shape"], clips.labels["colour"], clips.labels["background"], axis]
    return torch.from_numpy(np.stack(columns, axis=1))


def caption_loss(blip: Any, states: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean LM loss of captions (M, L) given encoder states (M, T, D)."""
    out = blip.text_decoder(
        input_ids=ids, attention_mask=mask, encoder_hidden_states=states,
        encoder_attention_mask=torch.ones(states.shape[:2], dtype=torch.long, device=states.device), labels=labels, reduction="mean",
    )
    return out.loss


def probe_loss(model: BlipWithProbes, states: torch.Tensor, classes: torch.Tensor, names: tuple[str, ...] = tuple(PROBE_FACTORS)) -> torch.Tensor:
    """Summed cross-entropy of the probes ``names`` on states (M, T, D) with classes (M, 4)."""
    logits = model.probe_logits(states)
    order = list(PROBE_FACTORS)
    return sum(torch.nn.functional.cross_entropy(logits[name], classes[:, order.index(name)]) for name in names)


def train_loss(model: BlipWithProbes, batch: tuple[torch.Tensor, ...], settings: BlipFitSettings) -> torch.Tensor:
    """LM loss (plus ``aux_weight`` times the probe loss) of a batch on augmented averages: frames
    (B, 15, S, S, 3) uint8, ids / mask / labels (B, 5, L), probe classes (B, 4)."""
    frames, ids, mask, labels, classes = batch
    k = ids.shape[1]
    per_frame = frame_states(model.blip, frames)  # (B, 15, T, D)
    states = augment(per_frame.mean(dim=1), k, settings)  # (B*k, T, D)
    loss = caption_loss(model.blip, states, ids.flatten(0, 1), mask.flatten(0, 1), labels.flatten(0, 1))
    if settings.aux_weight > 0:
        loss = loss + settings.aux_weight * probe_loss(model, states, classes.repeat_interleave(k, dim=0))
    if settings.frame_weight > 0:  # what one frame shows: shape, colour, background (not the motion axis)
        loss = loss + settings.frame_weight * probe_loss(
            model, per_frame.flatten(0, 1), classes.repeat_interleave(per_frame.shape[1], dim=0), ("shape", "colour", "background"))
    return loss


@torch.no_grad()
def validation_loss(model: BlipWithProbes, data: IndexedTensors, device: torch.device, batch_size: int) -> float:
    """Mean LM loss of the held-out captions on the clean averages."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        ids_list = list(range(start, min(start + batch_size, len(data))))
        frames, ids, mask, labels, _ = (t.to(device) for t in data[ids_list])
        states = averaged_states(model.blip, frames).repeat_interleave(ids.shape[1], dim=0)
        total += float(caption_loss(model.blip, states, ids.flatten(0, 1), mask.flatten(0, 1), labels.flatten(0, 1))) * len(ids_list)
        count += len(ids_list)
    model.train(was_training)
    return total / max(count, 1)


# ---------------------------------------------------------------- caption scoring


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", text) is not None


def _drop(text: str, phrase: str) -> str:
    return re.sub(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", " ", text)


def motion_phrases() -> dict[str, tuple[str, ...]]:
    """Phrases of each motion direction in the captions, longest first ("from right to left", ..., "left")."""
    out = {}
    for motion, (towards, short, across, verbs) in _MOTION_WORDS.items():
        out[motion] = tuple(sorted({towards, short, across, verbs[0]}, key=len, reverse=True))
    return out


def named(caption: str) -> dict[str, set[str]]:
    """What a caption names: {factor: values of ``FACTORS[factor]`` it mentions} (synonyms and phrases of
    utils.synthetic). Colours are looked for outside the background phrases ("blue sky")."""
    text = caption.lower()
    found: dict[str, set[str]] = {"background": {b for b in FACTORS["background"] if any(_has(text, p) for p in _BACKGROUND_PHRASES[b])}}
    for phrases in _BACKGROUND_PHRASES.values():
        for phrase in sorted(phrases, key=len, reverse=True):
            text = _drop(text, phrase)
    found["shape"] = {s for s in FACTORS["shape"] if any(_has(text, w) for w in _SHAPE_WORDS[s])}
    found["colour"] = {c for c in FACTORS["colour"] if _has(text, c)}
    found["motion"] = set()
    phrases = sorted(((p, m) for m, ps in motion_phrases().items() for p in ps), key=lambda pm: len(pm[0]), reverse=True)
    for phrase, motion in phrases:
        if _has(text, phrase):
            found["motion"].add(motion)
            text = _drop(text, phrase)
    return found


def caption_scores(captions: list[str], clips: ClipSet) -> dict[str, float]:
    """Fractions of ``captions`` (one per clip) that name exactly the clip's value of each factor
    (shape, colour, background, motion direction and its axis) and both / either of shape and colour."""
    hits: dict[str, list[bool]] = {k: [] for k in ("shape", "colour", "background", "motion_axis", "motion", "shape_and_colour", "shape_or_colour")}
    for i, caption in enumerate(captions):
        found = named(caption)
        truth = {f: FACTORS[f][int(clips.labels[f][i])] for f in FACTORS}
        right = {f: found[f] == {truth[f]} for f in ("shape", "colour", "background", "motion")}
        for factor, ok in right.items():
            hits[factor].append(ok)
        hits["motion_axis"].append({AXES[m] for m in found["motion"]} == {AXES[truth["motion"]]})
        hits["shape_and_colour"].append(right["shape"] and right["colour"])
        hits["shape_or_colour"].append(right["shape"] or right["colour"])
    return {k: float(np.mean(v)) if v else 0.0 for k, v in hits.items()}


# ---------------------------------------------------------------- the step


def held_out_metrics(model: Any, processor: Any, data: DemoData, frames: dict[str, np.ndarray], settings: BlipFitSettings) -> dict[str, Any]:
    """Caption scores on held-out clips from the true averaged embeddings and from degraded ones
    (``settings.degraded``: shrink toward the fit mean, seeded noise times the fit rms)."""
    mean, std = zoo.BLIP_MEAN, zoo.BLIP_STD
    fit = torch.from_numpy(np.concatenate([targets.blip_embeddings(model, frames["fit"][i : i + 16], mean, std) for i in range(0, len(data.fit), 16)]))
    true = torch.from_numpy(targets.blip_embeddings(model, frames["held_out"], mean, std))  # (N, T, D)
    center = fit.mean(dim=0)
    rms = float((fit - center).pow(2).mean().sqrt())
    shrink, sigma = settings.degraded
    noise = torch.randn(true.shape, generator=torch.Generator().manual_seed(0))
    degraded = degrade(true, center, rms, torch.full((len(true),), shrink), sigma * noise)
    out: dict[str, Any] = {"embedding_shape": list(true.shape[1:]), "fit_rms": rms}
    for name, states in (("true", true), ("degraded", degraded)):
        captions = caption_embeddings(model, processor, states, CaptionSettings())
        out.update({f"{name}_{k}": v for k, v in caption_scores(captions, data.held_out).items()})
        out[f"{name}_examples"] = captions[: settings.examples]
    return out


def export_blip(model: BlipWithProbes, out_dir: Path) -> None:
    """``save_pretrained`` folder of the BLIP (probes left out) and its processor (loads with
    ``BlipForConditionalGeneration`` / ``BlipProcessor.from_pretrained``)."""
    model.blip.save_pretrained(out_dir)
    build_processor().save_pretrained(out_dir)


def blip_step(data: DemoData, data_root: str | Path | None, device: torch.device, settings: BlipFitSettings = DEFAULTS) -> FitStep:
    """The FitStep of the demo BLIP (``models.demo.fit.STEPS["blip"]``); ``data_root`` is not read."""
    from transformers import BlipForConditionalGeneration

    processor = build_processor()
    tokenizer = processor.tokenizer
    vocab = tokenizer.get_vocab()
    with zoo.seeded(settings.train.seed):
        model = BlipWithProbes(BlipForConditionalGeneration(blip_config(settings, vocab))).to(device)
    length = caption_length(tokenizer, [data.fit, data.held_out])
    frames = {"fit": target_frames(data.fit), "held_out": target_frames(data.held_out)}
    train = IndexedTensors(torch.from_numpy(frames["fit"]), *tokenize_captions(tokenizer, data.fit, length), probe_labels(data.fit))
    val = IndexedTensors(torch.from_numpy(frames["held_out"]), *tokenize_captions(tokenizer, data.held_out, length), probe_labels(data.held_out))
    config = {k: v for k, v in asdict(settings).items() if k != "train"}
    config.update(image_size=IMAGE_SIZE, vocab_size=len(vocab), caption_tokens=length, prompt=DEFAULT_PROMPT)
    return FitStep(
        model=model,
        train_data=train,
        loss=lambda m, batch: train_loss(m, batch, settings),
        validate=lambda m: {"val_loss": validation_loss(m, val, device, settings.train.batch_size)},
        export=export_blip,
        metrics=lambda m: {"val_loss": validation_loss(m, val, device, settings.train.batch_size),
                           **held_out_metrics(m.blip, processor, data, frames, settings)},
        settings=settings.train,
        config=config,
        load=lambda directory: BlipWithProbes(BlipForConditionalGeneration.from_pretrained(directory)).to(device).eval(),
    )
