"""The one seeded metrics module shared by training, regression and ``evaluate.py``.

Vector metrics (used on predicted targets and embeddings) come first; video and caption
metrics follow. Every function takes numpy arrays with the shapes in its docstring.
Which pairs a stage compares, with which seeds and chance levels, is ``utils.scoring``.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np


def _flat(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float64."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def _zscore_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def pearson_rows(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-sample Pearson r between pred and true (N, ...) -> (N,)."""
    p, t = _zscore_rows(_flat(pred)), _zscore_rows(_flat(true))
    return (p * t).sum(axis=1)


def pearson_columns(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-feature Pearson r across samples (N, D) -> (D,) (0 where a column is constant)."""
    p, t = _flat(pred), _flat(true)
    p = p - p.mean(axis=0)
    t = t - t.mean(axis=0)
    denom = np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0)
    return np.where(denom == 0, 0.0, (p * t).sum(axis=0) / np.where(denom == 0, 1.0, denom))


def r2_columns(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-feature coefficient of determination (N, D) -> (D,)."""
    p, t = _flat(pred), _flat(true)
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    return 1.0 - ss_res / np.where(ss_tot == 0, 1.0, ss_tot)


def correlation_matrix(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson r of every prediction with every truth (N, ...) x (M, ...) -> (N, M)."""
    return _zscore_rows(_flat(pred)) @ _zscore_rows(_flat(true)).T


def n_way_identification(
    pred: np.ndarray, true: np.ndarray, n_way: int = 2, n_trials: int = 100, seed: int = 0
) -> float:
    """Mean n-way identification accuracy from (N, ...) predictions and truths.

    For each sample and trial, the prediction is compared (Pearson r) with its own truth and
    ``n_way - 1`` other truths drawn at random; it is correct when its own truth correlates
    most. Chance is ``1 / n_way``. Seeded, so the same inputs give the same number.
    """
    corr = correlation_matrix(pred, true)  # (N, N)
    return float(_n_way_correct(corr, n_way, n_trials, seed).sum() / (len(corr) * n_trials))


def top_k_retrieval(pred: np.ndarray, true: np.ndarray, k: int = 1) -> float:
    """Fraction of predictions whose own truth is among the k best-correlated of all N."""
    corr = correlation_matrix(pred, true)
    ranks = (corr > np.diag(corr)[:, None]).sum(axis=1)
    return float((ranks < k).mean())


def n_way_from_scores(scores: np.ndarray, n_way: int = 2, n_trials: int = 100, seed: int = 0) -> np.ndarray:
    """Per-sample n-way identification accuracy from a score matrix (N, N) -> (N,).

    ``scores[i, j]`` is how well prediction i matches truth j (higher = better). For each
    sample i and trial, ``n_way - 1`` other truths are drawn at random and the trial is
    correct when ``scores[i, i]`` is strictly the highest. Chance is ``1 / n_way``.
    """
    return _n_way_correct(scores, n_way, n_trials, seed) / n_trials


def _n_way_correct(scores: np.ndarray, n_way: int, n_trials: int, seed: int) -> np.ndarray:
    """Number of correct trials per sample of n-way identification on scores (N, N) -> (N,) int."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if scores.shape != (n, n):
        raise ValueError(f"scores must be a square (N, N) matrix, got shape {scores.shape}.")
    if n_way < 2 or n_way > n:
        raise ValueError(f"n_way={n_way} must be between 2 and the number of samples ({n}).")
    rng = np.random.default_rng(seed)
    correct = np.zeros(n, dtype=np.int64)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        for _ in range(n_trials):
            picks = rng.choice(others, size=n_way - 1, replace=False)
            correct[i] += scores[i, i] > scores[i, picks].max()
    return correct


# ----------------------------------------------------------------------------------------
# Video metrics. Frames are uint8 (T, H, W, 3) RGB unless stated; "clip" = one video.
# ----------------------------------------------------------------------------------------

PSNR_CAP_DB = 100.0


def mean_sem(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean (ddof=1; 0 for a single value) of a 1-D array."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("mean_sem needs at least one value.")
    sem = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), sem


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two frame stacks of the same (T, H, W[, C]) shape as float64."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"Frame stacks differ in shape: {a.shape} vs {b.shape}; resize both to a common size first (match_frames)."
        )
    if a.ndim not in (3, 4):
        raise ValueError(f"Frames must be (T, H, W) or (T, H, W, C), got shape {a.shape}.")
    return a.astype(np.float64), b.astype(np.float64)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """RGB (..., 3) -> luma (...) float64 with the ITU-R BT.601 weights (as skimage.rgb2gray)."""
    frames = np.asarray(frames, dtype=np.float64)
    return frames @ np.array([0.2125, 0.7154, 0.0721])


def psnr_frames(pred: np.ndarray, true: np.ndarray, data_range: float = 255.0, cap: float | None = PSNR_CAP_DB) -> np.ndarray:
    """Per-frame PSNR in dB of (T, H, W[, C]) stacks -> (T,).

    Identical frames have infinite PSNR; ``cap`` (default 100 dB) clips it so that means
    stay finite (``cap=None`` keeps ``inf``).
    """
    p, t = _check_pair(pred, true)
    mse = ((p - t) ** 2).reshape(len(p), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(data_range**2 / mse)
    return psnr if cap is None else np.minimum(psnr, cap)


def _ssim_2d(x: np.ndarray, y: np.ndarray, data_range: float, sigma: float) -> float:
    """Mean SSIM of two (H, W) float images: Gaussian window (11 taps at sigma 1.5), K1=0.01, K2=0.03.

    As Wang et al. 2004 and ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``: local statistics by Gaussian filtering, the border of half a
    window cropped before averaging.
    """
    from scipy.ndimage import gaussian_filter

    truncate = 3.5
    radius = int(truncate * sigma + 0.5)
    if min(x.shape) < 2 * radius + 1:
        raise ValueError(f"Frames of {x.shape[0]}x{x.shape[1]} px are smaller than the SSIM window ({2 * radius + 1} px).")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return gaussian_filter(img, sigma=sigma, truncate=truncate, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map[radius:-radius, radius:-radius].mean())


def ssim_frames(
    pred: np.ndarray, true: np.ndarray, data_range: float = 255.0, grayscale: bool = True, sigma: float = 1.5
) -> np.ndarray:
    """Per-frame SSIM of (T, H, W, 3) (or (T, H, W)) stacks -> (T,).

    grayscale: compare luma (``to_gray``); otherwise average SSIM over the colour channels.
    Identical frames give 1.0.
    """
    p, t = _check_pair(pred, true)
    if p.ndim == 4 and grayscale:
        p, t = to_gray(p), to_gray(t)
    if p.ndim == 3:
        return np.array([_ssim_2d(a, b, data_range, sigma) for a, b in zip(p, t, strict=True)])
    return np.array(
        [np.mean([_ssim_2d(a[..., c], b[..., c], data_range, sigma) for c in range(a.shape[-1])]) for a, b in zip(p, t, strict=True)]
    )


def ssim_frames_mindvideo(pred: np.ndarray, true: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-frame SSIM of MinD-Video's evaluation code: uint8 (T, H, W, 3) stacks -> (T,).

    RGB, 7x7 uniform window, sample covariance, K1=0.01, K2=0.03, data_range 255: the
    defaults of ``skimage.metrics.structural_similarity`` with ``channel_axis=-1`` (SSIM of
    each channel, averaged). On structured frames it differs from ``ssim_frames`` (MindEye's
    grayscale Gaussian variant) by up to about 0.13, so the two are reported side by side.
    """
    from skimage.metrics import structural_similarity

    p, t = np.asarray(pred), np.asarray(true)
    _check_pair(p, t)
    if p.ndim != 4 or min(p.shape[1:3]) < 7:
        raise ValueError(f"MinD-Video SSIM needs RGB frames (T, H, W, 3) of at least 7x7 px, got shape {p.shape}.")
    return np.array([structural_similarity(a, b, data_range=data_range, channel_axis=-1) for a, b in zip(p, t, strict=True)])


def match_frames(pred: np.ndarray, true: np.ndarray, n_frames: int | None = None, size: int | tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bring two uint8 clips (T1, H1, W1, 3), (T2, H2, W2, 3) to (n, h, w, 3) each.

    Frames are picked by ``linspace`` over each clip (n = ``n_frames`` or the shorter clip's
    length) and resized to ``size`` (default: the ground truth's size).
    """
    from utils.video import resize_frames, sample_indices

    n = n_frames or min(len(pred), len(true))
    pred, true = pred[sample_indices(len(pred), n)], true[sample_indices(len(true), n)]
    size = size if size is not None else tuple(true.shape[1:3])
    return resize_frames(pred, size), resize_frames(true, size)


def top_k_classes(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most probable classes of each row (N, C) -> (N, k), best first (stable ties)."""
    return np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :k]


def n_way_top1_classification(
    pred_probs: np.ndarray, true_probs: np.ndarray, n_way: int, n_trials: int = 100, gt_top_k: int = 1, seed: int = 0
) -> np.ndarray:
    """Semantic n-way top-1 accuracy per sample (N, C), (N, C) -> (N,).

    The classifier's ``gt_top_k`` most probable classes on the ground truth are its classes
    (3 = MinD-Video's evaluation code, 1 = MinD-Vis's). In each trial ``n_way - 1`` distractor
    classes are drawn from the other classes; the trial is correct when the reconstruction's
    probability of a ground-truth class is strictly higher than that of every distractor.
    Chance is ``classification_chance(n_way, gt_top_k)``.
    """
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    true_probs = np.asarray(true_probs, dtype=np.float64)
    if pred_probs.shape != true_probs.shape or pred_probs.ndim != 2:
        raise ValueError(f"pred_probs and true_probs must both be (N, C), got {pred_probs.shape} and {true_probs.shape}.")
    n_classes = pred_probs.shape[1]
    if gt_top_k < 1 or n_way < 2 or n_way - 1 > n_classes - gt_top_k:
        raise ValueError(
            f"n_way={n_way} with gt_top_k={gt_top_k} needs at least {n_way - 1 + gt_top_k} classes; the classifier has {n_classes}."
        )
    rng = np.random.default_rng(seed)
    gt_classes = top_k_classes(true_probs, gt_top_k)  # (N, k)
    accuracy = np.zeros(len(pred_probs))
    for i, probs in enumerate(pred_probs):
        best_gt = probs[gt_classes[i]].max()
        others = np.setdiff1d(np.arange(n_classes), gt_classes[i])
        picks = np.stack([rng.choice(others, size=n_way - 1, replace=False) for _ in range(n_trials)])  # (trials, n-1)
        accuracy[i] = (best_gt > probs[picks].max(axis=1)).mean()
    return accuracy


def classification_chance(n_way: int, gt_top_k: int = 1) -> float:
    """Chance of ``n_way_top1_classification``: the best of k ground-truth classes beats n-1 others."""
    return gt_top_k / (gt_top_k + n_way - 1)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows (N, D), (N, D) -> (N,)."""
    a, b = _flat(a), _flat(b)
    if a.shape != b.shape:
        raise ValueError(f"cosine_rows needs two arrays of the same shape, got {a.shape} and {b.shape}.")
    return (_unit(a) * _unit(b)).sum(axis=1)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of a with every row of b (N, D), (M, D) -> (N, M)."""
    return _unit(_flat(a)) @ _unit(_flat(b)).T


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


def clip_frame_similarity(pred_emb: np.ndarray, true_emb: np.ndarray) -> float:
    """Mean CLIP cosine similarity of matching frames: embeddings (T, D), (T, D) -> scalar."""
    return float(cosine_rows(pred_emb, true_emb).mean())


def spatiotemporal_score(frame_emb: np.ndarray) -> float:
    """ST-level score (NeuroClips): mean CLIP cosine similarity of consecutive frames (T, D) -> scalar.

    1.0 for a still clip; needs T >= 2.
    """
    frame_emb = _flat(frame_emb)
    if len(frame_emb) < 2:
        raise ValueError(f"spatiotemporal_score needs at least 2 frames, got {len(frame_emb)}.")
    return float(cosine_rows(frame_emb[:-1], frame_emb[1:]).mean())


# ----------------------------------------------------------------------------------------
# Caption metrics: decoded caption vs the human captions of the same clip.
# ----------------------------------------------------------------------------------------


def tokenize_caption(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, apostrophes)."""
    import re

    return re.findall(r"[a-z0-9']+", text.lower())


def _ngrams(tokens: list[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
    return counts


def bleu(candidate: str, references: list[str], max_n: int = 4) -> float:
    """Sentence BLEU-``max_n`` of a caption against several references, in [0, 1].

    Clipped n-gram precisions (counts clipped by the maximum count in any reference),
    geometric mean with uniform weights, brevity penalty against the closest reference
    length, and add-one smoothing of the precisions for n > 1 (Lin & Och 2004) so a short
    caption without 4-gram matches is not zero. Identical strings give 1.0.
    """
    cand = tokenize_caption(candidate)
    refs = [tokenize_caption(r) for r in references]
    if not refs:
        raise ValueError("bleu needs at least one reference caption.")
    if not cand:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        cand_counts = _ngrams(cand, n)
        max_ref: dict[tuple[str, ...], int] = {}
        for ref in refs:
            for gram, count in _ngrams(ref, n).items():
                max_ref[gram] = max(max_ref.get(gram, 0), count)
        matched = sum(min(count, max_ref.get(gram, 0)) for gram, count in cand_counts.items())
        total = max(len(cand) - n + 1, 0)
        smooth = 0 if n == 1 else 1
        if matched + smooth == 0:
            return 0.0
        log_precision += np.log((matched + smooth) / (total + smooth)) / max_n
    closest = min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    brevity = 1.0 if len(cand) >= closest else float(np.exp(1 - closest / len(cand)))
    return float(brevity * np.exp(log_precision))


def caption_text_similarity(pred_text_emb: np.ndarray, human_text_emb: np.ndarray) -> float:
    """CLIP text similarity: cosine of a decoded caption's embedding (D,) with the mean of the human ones (K, D)."""
    human = mean_direction(human_text_emb).reshape(1, -1)
    return float(cosine_rows(np.asarray(pred_text_emb).reshape(1, -1), human)[0])


def mean_direction(emb: np.ndarray) -> np.ndarray:
    """Mean of the unit-normalised rows of (K, D) embeddings -> (D,) (e.g. of the 5 human captions)."""
    return _unit(_flat(emb)).mean(axis=0)


# ----------------------------------------------------------------------------------------
# Model-based features. The models (CLIP, ViT, VideoMAE from models/zoo.py) and their
# processors are passed in, so this module imports no project model code.
# ----------------------------------------------------------------------------------------


def _model_device_dtype(model) -> tuple:
    param = next(model.parameters())
    return param.device, param.dtype


def _per_frame_batches(model, processor, frames: np.ndarray, batch_size: int, forward) -> np.ndarray:
    """``forward(pixel_values (B, 3, h, w)) -> (B, K)`` over uint8 (T, H, W, 3) frames in batches -> (T, K) float64."""
    import torch

    device, dtype = _model_device_dtype(model)
    out = []
    with torch.inference_mode():
        for start in range(0, len(frames), batch_size):
            batch = processor(images=list(frames[start : start + batch_size]), return_tensors="pt")
            out.append(forward(batch["pixel_values"].to(device, dtype)).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def image_class_probs(model, processor, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Softmax class probabilities of an image classifier on each frame: uint8 (T, H, W, 3) -> (T, C) float64."""
    import torch

    return _per_frame_batches(
        model, processor, frames, batch_size, lambda pixels: torch.softmax(model(pixel_values=pixels).logits.float(), dim=-1),  # (B, C)
    )


def video_class_probs(model, processor, clips: list[np.ndarray], batch_size: int = 8, n_frames: int = 0) -> np.ndarray:
    """Softmax class probabilities of a video classifier: clips of uint8 (T, H, W, 3) -> (N, C) float64.

    Each clip is resampled by ``linspace`` to ``n_frames`` frames (0 = the model's
    ``config.num_frames``); another count is fed as ``from_pretrained(..., num_frames=n)``
    builds the model (``video_frames``), as MinD-Video feeds its 6 frames.
    """
    import torch

    from utils.video import sample_indices

    device, dtype = _model_device_dtype(model)
    n_frames = n_frames or int(model.config.num_frames)
    out = []
    with torch.inference_mode(), video_frames(model, n_frames):
        for start in range(0, len(clips), batch_size):
            videos = [list(clip[sample_indices(len(clip), n_frames)]) for clip in clips[start : start + batch_size]]
            batch = processor(videos, return_tensors="pt")  # pixel_values (B, num_frames, 3, h, w)
            logits = model(pixel_values=batch["pixel_values"].to(device, dtype)).logits  # (B, C)
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


@contextmanager
def video_frames(model, n_frames: int):
    """Within the block, a VideoMAE classifier takes ``n_frames`` frames.

    VideoMAE's position embeddings are a fixed sinusoid table over its patches; this swaps in
    the table of ``n_frames`` frames (what ``from_pretrained(..., num_frames=n)`` builds) and
    restores the model's own afterwards. The weights are untouched.
    """
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    config, embeddings = model.config, model.videomae.embeddings
    tubelet = int(config.tubelet_size)
    if n_frames < tubelet or n_frames % tubelet:
        raise ValueError(f"video_frames={n_frames} must be a positive multiple of the video classifier's tubelet size {tubelet}.")
    saved = (config.num_frames, embeddings.position_embeddings)
    per_frame = (config.image_size // config.patch_size) ** 2
    config.num_frames = n_frames
    embeddings.position_embeddings = get_sinusoid_encoding_table(per_frame * (n_frames // tubelet), config.hidden_size)
    try:
        yield model
    finally:
        config.num_frames, embeddings.position_embeddings = saved


def clip_image_embeddings(model, processor, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """CLIP image embeddings (projected, not normalised) of each frame: uint8 (T, H, W, 3) -> (T, D) float64."""
    return _per_frame_batches(
        model, processor, frames, batch_size, lambda pixels: _as_tensor(model.get_image_features(pixel_values=pixels)).float(),
    )


def clip_text_embeddings(model, processor, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """CLIP text embeddings (projected) of captions: K strings -> (K, D) float64."""
    import torch

    device, _ = _model_device_dtype(model)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = processor(text=list(texts[start : start + batch_size]), return_tensors="pt", padding=True, truncation=True)
            emb = model.get_text_features(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            out.append(_as_tensor(emb).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _as_tensor(output):
    """``get_*_features`` returns a tensor in most transformers versions, a model output in some."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output


def summary(
    values: np.ndarray, description: str = "", chance: float | None = None, baseline: np.ndarray | None = None,
    baseline_label: str = "mismatched",
) -> dict:
    """Summary of a per-clip metric (N,): mean, SEM, n, chance level, and the mean of a baseline
    (by default ``mismatched``: each reconstruction scored against another clip's ground truth)."""
    mean, sem = mean_sem(values)
    out = {"mean": mean, "sem": sem, "n": int(np.asarray(values).size), "chance": chance, "baseline": None, "description": description}
    if baseline is not None:
        out.update(baseline=float(np.mean(baseline)), baseline_label=baseline_label)
    return out
