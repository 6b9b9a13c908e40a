"""How the stages score their outputs: the protocols built on the primitives of ``utils.metrics``.

``utils.metrics`` holds per-array metrics (SSIM of two frame stacks, n-way accuracy of a score
matrix, BLEU of one caption) with known-answer tests. This module decides *what is compared
with what*: which pairs of clips, which seeds, which chance levels, and how per-clip values
become the entries of ``metrics.json``. It is split from ``utils.metrics`` so that module
stays a flat list of metric functions, and the protocol of each stage reads in one place.

- Video evaluation (``evaluate.py``): ``EvaluationSettings``, the published protocols as
  presets (``Protocol``, ``PROTOCOLS``), ``RunScores`` (per-clip values, filled clip by clip),
  ``add_pixel_scores`` / ``add_semantic_scores``, ``summarize_run``, ``protocol_card``,
  ``subject_groups`` (the per-subject figure's ``BarPanel`` s), ``oracle_summary`` (a row of the
  "where information is lost" table), ``is_model_based`` and ``headline``.
- Regression (``regress.py``): ``score_predictions``, ``chance_levels``,
  ``mean_over_subjects``, ``per_sample_rows`` and ``regression_notes``.

Models (CLIP, ViT, VideoMAE) come in as ``{"clip": (model, processor), "image": ...,
"video": ...}``; this module imports no project model code.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from utils import metrics
from utils.seeds import stimulus_seed

# ---------------------------------------------------------------------------------- video evaluation

HEADLINE = ("ssim", "psnr", "clip_2way_identification", "video_2way", "image_2way", "caption_2way_retrieval")

# SSIM conventions: metrics.json key and description. "mindeye" is this project's SSIM since
# its start (MindEye's: grayscale, 11-tap Gaussian window, population covariance);
# "mindvideo" is MinD-Video's evaluation code (skimage defaults on RGB: 7x7 uniform window,
# sample covariance, data_range 255).
SSIM_KEYS = {"mindeye": "ssim", "mindvideo": "ssim_mindvideo"}
SSIM_DESCRIPTIONS = {
    "mindeye": "MindEye's SSIM: Gaussian window (11 taps, sigma 1.5), population covariance, data_range 255",
    "mindvideo": "MinD-Video's SSIM: RGB, 7x7 uniform window, sample covariance, data_range 255 (skimage defaults, channel_axis=-1)",
}


@dataclass(frozen=True)
class EvaluationSettings:
    """How clips are scored; ``evaluate.py`` reads its flag defaults from here.

    seed and batch_size come from the common flags (``utils.cli.common_parser``).
    n_frames: frames compared per clip, 0 = the reconstruction's frame count. eval_size:
    common square size in px of the pixel metrics, 0 = the reconstruction's height.
    color_ssim: MindEye's SSIM per RGB channel instead of on grayscale. ssim: the SSIM
    conventions computed (``SSIM_KEYS``), the first is the headline. n_trials, n_ways: the
    n-way tests. gt_top_k: classes of the ground truth (its top-k by the classifier; 3 =
    MinD-Video, 1 = MinD-Vis). video_frames: frames fed to the video classifier, 0 = its
    ``config.num_frames``. clip_model: the CLIP a protocol names ("" = the preset's); recorded
    in the protocol card, the preset's CLIP is what is loaded. semantic: the model-based
    metrics (classifiers, CLIP, captions) besides the pixel metrics.
    """

    seed: int
    batch_size: int
    n_frames: int = 0
    eval_size: int = 0
    color_ssim: bool = False
    ssim: tuple[str, ...] = ("mindeye", "mindvideo")
    n_trials: int = 100
    n_ways: tuple[int, ...] = (2, 50)
    gt_top_k: int = 3
    video_frames: int = 0
    clip_model: str = ""
    semantic: bool = True


@dataclass(frozen=True)
class Protocol:
    """A published evaluation protocol as flag defaults (``evaluate.py --protocol NAME``).

    Fields named as ``EvaluationSettings`` fields are the settings it switches (``flags``);
    source: where each choice comes from.
    """

    name: str
    n_frames: int
    eval_size: int
    ssim: tuple[str, ...]
    n_trials: int
    n_ways: tuple[int, ...]
    gt_top_k: int
    video_frames: int
    clip_model: str
    source: str

    def flags(self) -> dict[str, Any]:
        """``{flag dest: value}`` of the settings this protocol switches (lists where argparse gives lists)."""
        return {
            "n_frames": self.n_frames, "eval_size": self.eval_size, "ssim": list(self.ssim), "n_trials": self.n_trials,
            "n_ways": list(self.n_ways), "gt_top_k": self.gt_top_k, "video_frames": self.video_frames, "clip_model": self.clip_model,
        }


# Checked against MinD-Video's released evaluation code (scripts/run_metrics.py and
# utils/eval_metrics.py): 6 frames of 256 px per clip (its gifs), skimage SSIM with
# channel_axis=-1 and data_range=255, ground-truth classes = the classifier's top 3 on the
# ground truth, 50-way with 100 trials, VideoMAE loaded with num_frames=6 and fed the 6
# frames, CLIP openai/clip-vit-base-patch32. MinD-Vis takes the top-1 class as the ground
# truth (--gt-top-k 1); Mind-Animator scores 8 frames at 512 px (--n-frames 8 --eval-size 512).
PROTOCOLS = {
    "brainnetflix": Protocol(
        "brainnetflix", n_frames=0, eval_size=0, ssim=("mindeye", "mindvideo"), n_trials=100, n_ways=(2, 50), gt_top_k=3,
        video_frames=0, clip_model="",
        source="this project's protocol: every reconstructed frame (15) at the reconstruction's size, both SSIM conventions "
        "(MindEye's the headline), the preset's CLIP, the video classifier's own frame count",
    ),
    "mindvideo": Protocol(
        "mindvideo", n_frames=6, eval_size=256, ssim=("mindvideo", "mindeye"), n_trials=100, n_ways=(2, 50), gt_top_k=3,
        video_frames=6, clip_model="openai/clip-vit-base-patch32",
        source="MinD-Video's evaluation code: 6 frames at 256 px, its SSIM the headline, top-3 ground-truth classes, "
        "100 trials, VideoMAE fed 6 frames, CLIP ViT-B/32",
    ),
    "mindeye": Protocol(
        "mindeye", n_frames=0, eval_size=0, ssim=("mindeye",), n_trials=100, n_ways=(2, 50), gt_top_k=3,
        video_frames=0, clip_model="",
        source="MindEye's SSIM only (grayscale, Gaussian window); MindEye scores images, so the other settings are this project's",
    ),
}
DEFAULT_PROTOCOL = "brainnetflix"


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ValueError listing the known ones."""
    if name not in PROTOCOLS:
        raise ValueError(f"Unknown protocol={name!r}; known: {sorted(PROTOCOLS)}.")
    return PROTOCOLS[name]


class RunScores:
    """Per-clip values of one run, filled clip by clip; ``mismatched`` pairs clip i with truth i-1."""

    def __init__(self) -> None:
        self.columns: dict[str, list[float]] = {}
        self.mismatched: dict[str, list[float]] = {}
        self.clip_frames: list[tuple[np.ndarray, np.ndarray]] = []  # per clip: CLIP (n, D) of reconstruction, truth
        self.video_probs: list[tuple[np.ndarray, np.ndarray]] = []  # per clip: video classifier (C,) of reconstruction, truth

    def add(self, name: str, value: float, mismatched: bool = False) -> None:
        (self.mismatched if mismatched else self.columns).setdefault(name, []).append(float(value))

    def array(self, name: str, mismatched: bool = False) -> np.ndarray | None:
        """The values of one metric as (N,) float64, or None when it has none."""
        values = (self.mismatched if mismatched else self.columns).get(name)
        return None if values is None else np.asarray(values, dtype=np.float64)

    def full_columns(self, n_clips: int) -> dict[str, np.ndarray]:
        """Metrics with one value per clip, ``{name: (n_clips,) float64}`` (for per_sample.csv)."""
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.columns.items() if len(v) == n_clips}


def add_pixel_scores(
    scores: RunScores, pred: np.ndarray, true: np.ndarray, grayscale: bool, mismatched: bool = False,
    ssim: Sequence[str] = EvaluationSettings.ssim,
) -> None:
    """SSIM under each convention of ``ssim`` (``SSIM_KEYS``) and PSNR, means over frames, of one pair of uint8 (n, s, s, 3) clips.

    grayscale applies to MindEye's SSIM; MinD-Video's is always on RGB. A mismatched ``true`` (another clip's truth,
    of its own frame count and size) is first brought to ``pred``'s frames and size.
    """
    if mismatched:
        _, true = metrics.match_frames(pred, true, len(pred), pred.shape[1:3])  # (n, s, s, 3)
    for variant in ssim:
        if variant == "mindvideo":
            value = metrics.ssim_frames_mindvideo(pred, true).mean()
        else:
            value = metrics.ssim_frames(pred, true, grayscale=grayscale).mean()
        scores.add(SSIM_KEYS[variant], value, mismatched)
    scores.add("psnr", metrics.psnr_frames(pred, true).mean(), mismatched)


def add_semantic_scores(
    scores: RunScores, models: dict[str, Any], settings: EvaluationSettings, stimulus: str, pred: np.ndarray, true: np.ndarray,
) -> None:
    """Image-classifier n-way, CLIP frame features and video-classifier probabilities of one pair of (n, s, s, 3) clips.

    The n-way trials of a clip are seeded by ``stimulus_seed(settings.seed, stimulus)``.
    """
    image_model, image_proc = models["image"]
    p_probs = metrics.image_class_probs(image_model, image_proc, pred, settings.batch_size)  # (n, C)
    t_probs = metrics.image_class_probs(image_model, image_proc, true, settings.batch_size)
    for n_way in settings.n_ways:
        if n_way - 1 <= p_probs.shape[1] - settings.gt_top_k:
            acc = metrics.n_way_top1_classification(
                p_probs, t_probs, n_way, settings.n_trials, settings.gt_top_k, stimulus_seed(settings.seed, stimulus),
            )  # (n,)
            scores.add(f"image_{n_way}way", acc.mean())
    clip_model, clip_proc = models["clip"]
    p_emb = metrics.clip_image_embeddings(clip_model, clip_proc, pred, settings.batch_size)  # (n, D)
    t_emb = metrics.clip_image_embeddings(clip_model, clip_proc, true, settings.batch_size)
    scores.add("clip_similarity", metrics.clip_frame_similarity(p_emb, t_emb))
    scores.add("st_score", metrics.spatiotemporal_score(p_emb))
    scores.add("st_score_ground_truth", metrics.spatiotemporal_score(t_emb))
    scores.clip_frames.append((p_emb, t_emb))
    video_model, video_proc = models["video"]
    probs = metrics.video_class_probs(video_model, video_proc, [pred, true], settings.batch_size, settings.video_frames)  # (2, C)
    scores.video_probs.append((probs[0], probs[1]))


def pixel_summary(scores: RunScores, color_ssim: bool, ssim: Sequence[str] = EvaluationSettings.ssim) -> dict[str, dict]:
    """``{"ssim": summary, "ssim_mindvideo": summary, "psnr": summary}`` (the SSIMs of ``ssim``) with the mismatched baseline of each."""
    out = {}
    for variant in ssim:
        key = SSIM_KEYS[variant]
        kind = "RGB" if variant == "mindvideo" else ("RGB channels" if color_ssim else "grayscale")
        out[key] = metrics.summary(
            scores.array(key), f"{SSIM_DESCRIPTIONS[variant]}; per frame ({kind}), mean over frames", None, scores.array(key, True),
        )
    out["psnr"] = metrics.summary(
        scores.array("psnr"), f"PSNR per frame in dB (capped at {metrics.PSNR_CAP_DB:g})", None, scores.array("psnr", True),
    )
    return out


def summarize_run(
    scores: RunScores, stimuli: Sequence[str], settings: EvaluationSettings, models: dict[str, Any] | None,
    captions: dict[str, str], humans: dict[str, list[str]],
) -> tuple[dict[str, dict], dict[str, str]]:
    """(metrics, skipped) of one run: ``{name: summary}`` and ``{name: why it was not computed}``.

    Run-level metrics (video n-way, CLIP identification, captions) add their per-clip
    columns to ``scores``. ``models`` None = pixel metrics only.
    """
    out = pixel_summary(scores, settings.color_ssim, settings.ssim)
    skipped: dict[str, str] = {}
    if models is None:
        skipped["semantic metrics"] = "--no-semantic"
        return out, skipped
    _classifier_summary(scores, stimuli, settings, out, skipped)
    _clip_summary(scores, settings, out, skipped)
    _caption_summary(scores, stimuli, settings, models, captions, humans, out, skipped)
    return out, skipped


def _classifier_summary(scores: RunScores, stimuli: Sequence[str], settings: EvaluationSettings, out: dict, skipped: dict) -> None:
    """Image n-way (per clip, already scored) and video n-way (per clip, seeded per stimulus) summaries."""
    for n_way in settings.n_ways:
        name = f"image_{n_way}way"
        values = scores.array(name)
        if values is None:
            skipped[name] = "the image classifier has too few classes"
        else:
            out[name] = metrics.summary(
                values, f"{n_way}-way top-1 class of frames (image classifier), {settings.n_trials} trials",
                metrics.classification_chance(n_way, settings.gt_top_k),
            )
    p_probs = np.stack([p for p, _ in scores.video_probs])  # (N, C)
    t_probs = np.stack([t for _, t in scores.video_probs])
    for n_way in settings.n_ways:
        name = f"video_{n_way}way"
        if n_way - 1 > p_probs.shape[1] - settings.gt_top_k:
            skipped[name] = "the video classifier has too few classes"
            continue
        acc = np.array([
            metrics.n_way_top1_classification(
                p_probs[i : i + 1], t_probs[i : i + 1], n_way, settings.n_trials, settings.gt_top_k, stimulus_seed(settings.seed, s),
            )[0]
            for i, s in enumerate(stimuli)
        ])  # (N,)
        scores.columns[name] = list(acc)
        out[name] = metrics.summary(
            acc, f"{n_way}-way top-1 class of clips (video classifier), {settings.n_trials} trials",
            metrics.classification_chance(n_way, settings.gt_top_k),
        )


def _clip_summary(scores: RunScores, settings: EvaluationSettings, out: dict, skipped: dict) -> None:
    """CLIP frame similarity (with its mismatched baseline), 2-way identification among clips, ST score."""
    frames = scores.clip_frames
    n = len(frames)
    mismatched = np.array([
        metrics.clip_frame_similarity(frames[i][0], _rows_like(frames[i - 1][1], frames[i][0])) for i in range(n)
    ]) if n > 1 else None
    out["clip_similarity"] = metrics.summary(scores.array("clip_similarity"), "CLIP cosine of matching frames", None, mismatched)
    if n >= 2:
        mean_pred = np.stack([p.mean(axis=0) for p, _ in frames])  # (N, D)
        mean_true = np.stack([t.mean(axis=0) for _, t in frames])
        acc = metrics.n_way_from_scores(metrics.cosine_matrix(mean_pred, mean_true), 2, settings.n_trials, settings.seed)  # (N,)
        scores.columns["clip_2way_identification"] = list(acc)
        out["clip_2way_identification"] = metrics.summary(
            acc, "2-way identification of the true clip among the clips by mean CLIP image embedding", 0.5,
        )
    else:
        skipped["clip_2way_identification"] = "needs at least 2 clips"
    out["st_score"] = metrics.summary(
        scores.array("st_score"), "ST score: CLIP cosine of consecutive reconstructed frames", None,
        scores.array("st_score_ground_truth"), baseline_label="ground truth",
    )


def _rows_like(rows: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``rows`` (T2, D) picked by linspace to as many rows as ``like`` (T1, D): another clip's frames against this clip's."""
    from utils.video import sample_indices

    return rows[sample_indices(len(rows), len(like))]


def _caption_summary(
    scores: RunScores, stimuli: Sequence[str], settings: EvaluationSettings, models: dict[str, Any],
    captions: dict[str, str], humans: dict[str, list[str]], out: dict, skipped: dict,
) -> None:
    """Caption BLEU-4, CLIP text similarity and 2-way retrieval, for clips with both kinds of caption."""
    with_text = [i for i, s in enumerate(stimuli) if captions.get(s) and humans.get(s)]
    if not with_text:
        skipped["caption metrics"] = "no decoded captions" if not captions else "the dataset has no human captions"
        return
    clip_model, clip_proc = models["clip"]
    decoded = [captions[stimuli[i]] for i in with_text]
    refs = [humans[stimuli[i]] for i in with_text]
    bleu = np.array([metrics.bleu(c, r) for c, r in zip(decoded, refs, strict=True)])  # (M,)
    pred_text = metrics.clip_text_embeddings(clip_model, clip_proc, decoded)  # (M, D)
    human_text = [metrics.clip_text_embeddings(clip_model, clip_proc, r) for r in refs]  # M x (K, D)
    sim = np.array([metrics.caption_text_similarity(p, h) for p, h in zip(pred_text, human_text, strict=True)])
    mismatched = np.array([metrics.caption_text_similarity(pred_text[i], human_text[i - 1]) for i in range(len(sim))]) if len(sim) > 1 else None
    out["caption_bleu4"] = metrics.summary(bleu, "sentence BLEU-4 of the decoded caption against the human captions")
    out["caption_clip_similarity"] = metrics.summary(
        sim, "CLIP text cosine of the decoded caption with the mean human caption", None, mismatched,
    )
    per_clip = {"caption_bleu4": bleu, "caption_clip_similarity": sim}
    if len(with_text) >= 2:
        human_mean = np.stack([metrics.mean_direction(h) for h in human_text])  # (M, D)
        acc = metrics.n_way_from_scores(metrics.cosine_matrix(pred_text, human_mean), 2, settings.n_trials, settings.seed)
        out["caption_2way_retrieval"] = metrics.summary(acc, "2-way retrieval of the true human captions by CLIP text similarity", 0.5)
        per_clip["caption_2way_retrieval"] = acc
    for name, values in per_clip.items():
        full = np.full(len(stimuli), np.nan)  # (N,), NaN where a clip lacks a caption
        full[with_text] = values
        scores.columns[name] = list(full)


def recorded_settings(settings: EvaluationSettings, n_frames: int, eval_size: int) -> dict[str, Any]:
    """The ``settings`` block of metrics.json; n_frames and eval_size as actually used."""
    return {
        "n_frames": int(n_frames), "eval_size": int(eval_size), "ssim": "rgb" if settings.color_ssim else "grayscale",
        "n_trials": settings.n_trials, "n_ways": list(settings.n_ways), "gt_top_k": settings.gt_top_k,
        "seed": settings.seed, "semantic": bool(settings.semantic),
    }


def protocol_card(protocol: str, settings: EvaluationSettings, used: dict[str, Any]) -> dict[str, Any]:
    """The ``protocol`` block of metrics.json and the report: every choice of the scoring.

    protocol: the ``--protocol`` preset; used: what the run actually used and read (frames
    and size, video classifier frames, the models loaded, which files were read, the method).
    ``overrides`` lists the settings given explicitly that differ from the preset.
    """
    preset = get_protocol(protocol)
    chosen = {
        "n_frames": settings.n_frames, "eval_size": settings.eval_size, "ssim": list(settings.ssim), "n_trials": settings.n_trials,
        "n_ways": list(settings.n_ways), "gt_top_k": settings.gt_top_k, "video_frames": settings.video_frames, "clip_model": settings.clip_model,
    }
    overrides = {k: v for k, v in chosen.items() if preset.flags()[k] != v}
    return {
        "protocol": protocol, "protocol_source": preset.source, "overrides": overrides,
        "ssim_headline": SSIM_KEYS[settings.ssim[0]],
        "ssim_conventions": {SSIM_KEYS[v]: SSIM_DESCRIPTIONS[v] for v in settings.ssim},
        "mindeye_ssim_on": "RGB channels" if settings.color_ssim else "grayscale",
        "n_trials": settings.n_trials, "n_ways": list(settings.n_ways), "gt_top_k": settings.gt_top_k,
        "gt_top_k_convention": "ground-truth classes = the classifier's top-k on the ground truth (3 = MinD-Video, 1 = MinD-Vis); "
        "chance k / (k + n - 1)",
        "clip_model_of_protocol": settings.clip_model or "the preset's",
        "seed": settings.seed, **used,
    }


def clip_card_scores(columns: dict[str, np.ndarray], index: int) -> dict[str, float]:
    """The per-clip numbers shown on a gallery card: the headline metrics, MinD-Video's SSIM and the CLIP similarity."""
    return {k: float(v[index]) for k, v in columns.items() if k in HEADLINE or k in ("ssim_mindvideo", "clip_similarity")}


# Metrics computed without a model (pixels, BLEU of the caption text): they keep their numbers whatever the preset.
MODEL_FREE_METRICS = ("ssim", "ssim_mindvideo", "psnr", "caption_bleu4")


def is_model_based(name: str) -> bool:
    """True for metrics computed with an evaluation model (classifiers, CLIP): with random weights they measure nothing."""
    return name not in MODEL_FREE_METRICS


def headline_names(result: dict) -> list[str]:
    """The headline metrics of a result present in it, in ``HEADLINE`` order (the protocol's SSIM first)."""
    ssim_key = (result.get("protocol") or {}).get("ssim_headline", "ssim")
    names = [ssim_key if name == "ssim" else name for name in HEADLINE]
    return [name for name in names if name in result["metrics"]]


CLASSIFIER_TEST = re.compile(r"(image|video)_(\d+)way")


def oracle_metric_names(result: dict) -> list[str]:
    """Columns of the "where information is lost" table: pixels and CLIP identification, every n-way test of the
    classifiers (video first), then the caption retrieval."""
    names = headline_names(result)
    tests = [m for m in map(CLASSIFIER_TEST.fullmatch, result["metrics"]) if m]
    classifiers = [m.group(0) for m in sorted(tests, key=lambda m: (m.group(1) != "video", int(m.group(2))))]
    first = [n for n in names if not n.startswith(("image_", "video_", "caption_"))]
    return first + classifiers + [n for n in names if n.startswith("caption_")]


SUMMARY_KEYS = ("mean", "sem", "n", "chance", "baseline", "baseline_label")


def oracle_summary(result: dict) -> dict[str, Any]:
    """What the oracle table keeps of one variant's result: run, clips and the numbers of ``oracle_metric_names``."""
    return {
        "run": result["run"], "n_clips": result["n_clips"],
        "metrics": {k: {f: result["metrics"][k].get(f) for f in SUMMARY_KEYS if f in result["metrics"][k]} for k in oracle_metric_names(result)},
    }


@dataclass(frozen=True)
class BarPanel:
    """One panel of the per-subject figure: groups of bars along an axis (test subjects or runs).

    groups: ``{group (x tick): {bar (legend): (mean, sem)}}``; chance: the dashed line;
    baselines: ``{group: value}`` of a single-bar panel (the mismatched baseline, drawn as a tick).
    """

    title: str
    axis: str
    groups: dict[str, dict[str, tuple[float, float]]]
    chance: float | None = None
    baselines: dict[str, float] = field(default_factory=dict)


def regression_panels(results: Sequence[dict]) -> list[BarPanel]:
    """One panel per n-way test of the regression (predictions/<run>/metrics.json): a group per test subject, a bar per target."""
    rows = []  # (run, subject, target, n-way key, accuracy)
    for result in results:
        for target, entry in ((result.get("regression") or {}).get("targets") or {}).items():
            for subject, values in ((entry.get("subjects") or {}) if isinstance(entry, dict) else {}).items():
                for way, value in ((values.get("identification") or {}) if isinstance(values, dict) else {}).items():
                    if value is not None:
                        rows.append((result["run"], subject.split("/")[-1], target, way, float(value)))
    pairs = {(run, subject) for run, subject, *_ in rows}
    unique = len({subject for _, subject in pairs}) == len(pairs)
    panels = []
    for way in dict.fromkeys(row[3] for row in rows):
        groups: dict[str, dict[str, tuple[float, float]]] = {}
        for run, subject, target, key, value in rows:
            if key == way:
                groups.setdefault(subject if unique else f"{run}: {subject}", {})[target] = (value, 0.0)
        n = int(way.split("-")[0])
        panels.append(BarPanel(f"regression: {way} identification", "test subject", groups, 1.0 / n))
    return panels


def run_panels(results: Sequence[dict], random_models: bool = False) -> list[BarPanel]:
    """One panel per headline metric, a bar per run (labelled by its subject when every run has its own).

    random_models: leave out the model-based metrics (they measure nothing).
    """
    subjects = [r.get("subject", r["run"]) for r in results]
    by_subject = len(set(subjects)) == len(subjects) and all(s != r["run"] for s, r in zip(subjects, results, strict=True))
    labels = subjects if by_subject else [r["run"] for r in results]
    panels = []
    for name in dict.fromkeys(n for r in results for n in headline_names(r)):
        if random_models and is_model_based(name):
            continue
        entries = {label: r["metrics"][name] for label, r in zip(labels, results, strict=True) if name in r["metrics"]}
        chance = next((e["chance"] for e in entries.values() if e.get("chance") is not None), None)
        baselines = {k: e["baseline"] for k, e in entries.items() if e.get("baseline") is not None and e.get("baseline_label") == "mismatched"}
        groups = {k: {name: (e["mean"], e["sem"])} for k, e in entries.items()}
        panels.append(BarPanel(name, "subject" if by_subject else "run", groups, chance, baselines))
    return panels


def subject_groups(results: Sequence[dict], random_models: bool = False) -> list[BarPanel]:
    """Panels of the per-subject figure: the regression's n-way identification per test subject and target
    (``regression_panels``), then, when several runs are shown or there is no regression, each headline
    metric per run (``run_panels``; a run's reconstructions are of the subject-averaged prediction)."""
    panels = regression_panels(results)
    if len(results) > 1 or not panels:
        panels += run_panels(results, random_models)
    return panels


def headline(result: dict, random_models: bool = False) -> str:
    """One line of the main numbers of a metrics.json result; random_models: model-based ones say so instead."""
    parts = []
    for name in headline_names(result):
        entry = result["metrics"][name]
        if random_models and is_model_based(name):
            parts.append(f"{name} (random model: not a measurement)")
            continue
        ref = f" (chance {entry['chance']:.2f})" if entry.get("chance") is not None else ""
        parts.append(f"{name} {entry['mean']:.3f}{ref}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------- regression

REGRESSION_N_WAYS = (2, 5, 10, 50)
REGRESSION_N_TRIALS = 100
SUBJECT_MEAN_KEYS = ("mse", "r2", "pearson_r", "feature_r")


def chance_levels(n_ways: Sequence[int] = REGRESSION_N_WAYS) -> dict[str, float]:
    """Chance accuracy of each n-way identification: ``{"2-way": 0.5, ...}`` (1/n)."""
    return {f"{n}-way": 1.0 / n for n in n_ways}


def score_predictions(pred: np.ndarray, true: np.ndarray, n_ways: Sequence[int] = REGRESSION_N_WAYS, seed: int = 0) -> dict:
    """Scores of predictions (S, D) against truths (S, D), both in target units.

    mse; r2 (mean over features of per-feature R2); pearson_r (mean per-sample r);
    feature_r (mean per-feature r across stimuli); identification: n-way top-1 accuracy
    among the S test stimuli (``REGRESSION_N_TRIALS`` seeded trials; None when n > S).
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"Predictions {pred.shape} and truths {true.shape} differ in shape.")
    per_sample = metrics.pearson_rows(pred, true)  # (S,)
    ident = {
        f"{n}-way": (metrics.n_way_identification(pred, true, n, REGRESSION_N_TRIALS, seed=seed) if n <= len(pred) else None)
        for n in n_ways
    }
    return {
        "n_stimuli": len(pred),
        "mse": float(((pred - true) ** 2).mean()),
        "r2": float(metrics.r2_columns(pred, true).mean()),
        "pearson_r": float(per_sample.mean()),
        "feature_r": float(metrics.pearson_columns(pred, true).mean()),
        "identification": ident,
    }


def mean_over_subjects(subject_scores: Sequence[dict]) -> dict[str, float]:
    """Mean of mse, r2, pearson_r and feature_r over several ``score_predictions`` results."""
    return {k: float(np.mean([s[k] for s in subject_scores])) for k in SUBJECT_MEAN_KEYS}


def per_sample_rows(target: str, label: str, stimuli: Sequence[str], pred: np.ndarray, true: np.ndarray) -> list[list]:
    """CSV rows (target, subject, stimulus, pearson_r, mse) of predictions (S, D) against truths (S, D)."""
    r = metrics.pearson_rows(pred, true)  # (S,)
    mse = ((np.asarray(pred, dtype=np.float64) - true) ** 2).mean(axis=1)
    return [[target, label, s, f"{a:.6f}", f"{b:.6g}"] for s, a, b in zip(stimuli, r, mse, strict=True)]


def regression_notes(synthetic: bool) -> str:
    """The ``notes`` of regress.py's metrics.json: what each number means."""
    return (
        "pearson_r: mean per-stimulus Pearson r over target features; feature_r: mean per-feature r over test "
        f"stimuli; r2: mean per-feature R2; identification: n-way top-1 among the test stimuli ({REGRESSION_N_TRIALS} seeded trials "
        "per stimulus; null when fewer stimuli than n)" + ("; the demo data are SYNTHETIC" if synthetic else "")
    )
