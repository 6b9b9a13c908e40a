"""Benchmark: the default `python run_pipeline.py` on a fresh data root (demo preset: the shipped demo models
installed, or fitted here with ``--refit-demo``).

Runs the runner twice in a child process (fresh, then the rerun that finds everything done),
each with ``/proc``-free accounting: wall time, and the peak resident memory of the child
(``resource.RUSAGE_CHILDREN``). Then it reads what the run wrote and prints, as Markdown:

- time per stage (the runner's summary) and the totals;
- the fit records (models_demo/fit_<step>.json): seconds and held-out metrics of each step;
- the metrics of the full prediction beside every link of "where information is lost", the two baselines without
  diffusion included (the VAE round trip of the true clip, the predicted latent decoded at strength 0);
- the VAE round trip on the TEST frames (a measurement after the fit: PSNR / SSIM of
  encode -> decode with the fitted demo VAE, the same SSIM as evaluate.py);
- the reconstruction metrics of the full prediction and of its oracles (evaluation/*/metrics.json),
  each as mean +- its standard error over the test clips;
- each oracle minus the full prediction, clip by clip (evaluation/*/per_sample.csv): the mean
  difference +- its paired standard error, so "the oracle is above" can be read against the noise
  of 24 clips;
- how often the captions decoded from predicted BLIP embeddings name the true shape, colour,
  background and motion of the test clip (reconstructions/<run>/captions.json against the demo's design);
- what the demo's classifiers read in each run's test clips, against the demo's design: the image
  classifier's top-1 shape, colour and background (factor marginals) on frames 0, 7 and 14 of the 15,
  the video classifier's top-1 motion on the clip; the ground-truth clips first, as the classifiers'
  own accuracy. A proxy for "a person recognises the shape, colour and motion", not a person.

    python bench/bench_demo.py --data-root /tmp/bench_demo
    python bench/bench_demo.py --data-root /tmp/bench_demo --no-run      # only read a finished run
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.demo.data import FACTORS, IMAGE_FACTORS  # noqa: E402
from models.demo.fit import STEPS  # noqa: E402
from utils import evaluation_data, layout  # noqa: E402
from utils.datasets import DEMO, list_stimuli, stimulus_path  # noqa: E402
from utils.metrics import mean_sem  # noqa: E402
from utils.report import markdown_table  # noqa: E402
from utils.synthetic import _BACKGROUND_PHRASES, _MOTION_WORDS, _SHAPE_WORDS  # noqa: E402

RUN = "demo_demo"
METRICS = ("ssim", "psnr", "clip_2way_identification", "video_50way", "image_50way", "caption_2way_retrieval")


def run_child(argv: list[str]) -> tuple[float, float, str]:
    """Run the pipeline in a child -> (seconds, peak RSS of the child in MiB, its output)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run_pipeline.py failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, proc.stdout


def stage_rows(output: str) -> list[list[str]]:
    """The runner's summary table rows (stage, status, seconds)."""
    summary = output.split("[pipeline] summary", 1)[-1].splitlines()
    return [line.split()[:3] for line in summary if re.match(r"^[a-z_]+\s+(ran|failed|not run)\s", line)]


def vae_round_trip(root: Path) -> dict[str, float]:
    """PSNR / SSIM (grayscale, as evaluate.py's headline) of the fitted demo VAE's round trip
    (posterior mean -> decode) on every frame of the TEST clips."""
    import torch

    from models import zoo
    from models.targets import vae_latents
    from utils.metrics import psnr_frames, ssim_frames
    from utils.video import read_video

    vae = zoo.load_zeroscope("demo", data_root=root, parts=("vae",))["vae"]
    scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for stim in list_stimuli(DEMO, "test", root):
        frames = read_video(stimulus_path(root, DEMO, stim))  # (T, 64, 64, 3) uint8
        latents = torch.from_numpy(vae_latents(vae, frames[None], [stim])[0]) / vae.config.scaling_factor  # (T, 4, 8, 8)
        with torch.inference_mode():
            decoded = vae.decode(latents).sample  # (T, 3, 64, 64) in [-1, 1]
        recon = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # (T, 64, 64, 3)
        scores["psnr"].append(float(psnr_frames(recon, frames).mean()))
        scores["ssim"].append(float(ssim_frames(recon, frames).mean()))
    return {k: round(float(np.mean(v)), 3) for k, v in scores.items()}


def names(text: str, words: tuple[str, ...] | list[str]) -> bool:
    """Whether ``text`` contains any of ``words`` as whole words."""
    return any(re.search(rf"\b{re.escape(w)}\b", text.lower()) for w in words)


def caption_hits(root: Path, run: str) -> dict[str, float]:
    """Fraction of test clips whose decoded caption names the true shape, colour, background, motion."""
    captions = json.loads(layout.reconstruction_captions_path(layout.reconstructions_dir(root, run)).read_text())
    design = np.load(layout.encoding_model_path(root, DEMO.name))
    row = {str(s): i for i, s in enumerate(design["stimuli"])}
    hits = {"shape": [], "colour": [], "shape or colour": [], "shape and colour": [], "background": [], "motion": []}
    for stim, caption in captions.items():
        i = row[stim]
        shape = names(caption, _SHAPE_WORDS[str(design["shape"][i])])
        colour = names(caption, [str(design["colour"][i])])
        motion = _MOTION_WORDS[str(design["motion"][i])]
        hits["shape"].append(shape)
        hits["colour"].append(colour)
        hits["shape or colour"].append(shape or colour)
        hits["shape and colour"].append(shape and colour)
        hits["background"].append(any(p.lower() in caption.lower() for p in _BACKGROUND_PHRASES[str(design["background"][i])]))
        hits["motion"].append(names(caption, [w for w in motion[:3] if " " not in w]) or any(p in caption.lower() for p in motion[:3]))
    return {k: float(np.mean(v)) for k, v in hits.items()}


def readout_rows(root: Path, runs: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """What the demo's image and video classifiers read in the ground-truth test clips and in each run's, and the
    colour read per true colour (frames of that colour whose colour the image classifier reads right)."""
    from models import zoo
    from models.demo.classifiers import factor_accuracies
    from models.demo.data import N_TARGET_FRAMES, VIDEO_FACTORS, design_labels
    from utils.evaluation_data import find_clips, read_clip
    from utils.metrics import image_class_probs, video_class_probs
    from utils.video import read_video, sample_indices

    image_model, image_processor = zoo.load_image_classifier("demo", data_root=root)
    video_model, video_processor = zoo.load_video_classifier("demo", data_root=root)
    stimuli = list_stimuli(DEMO, "test", root)
    labels = design_labels(root, stimuli)
    frames_read = [0, N_TARGET_FRAMES // 2, N_TARGET_FRAMES - 1]
    truth = [read_video(stimulus_path(root, DEMO, s)) for s in stimuli]  # (T, H, W, 3) each
    clip_sets = {"ground truth": [clip[sample_indices(len(clip), N_TARGET_FRAMES)] for clip in truth]}  # the targets' 15 frames
    for run in runs:
        if layout.reconstructions_dir(root, run).is_dir():
            found = dict(find_clips(root, run))
            clip_sets[run] = [read_clip(found[s])[0] for s in stimuli]
    rows, colour_rows = [], []
    for name, clips in clip_sets.items():
        probs = np.stack([image_class_probs(image_model, image_processor, clip[frames_read]) for clip in clips])  # (N, 3, C)
        per_frame = np.repeat(np.arange(len(clips)), len(frames_read))
        frame_labels = {f: labels[f][per_frame] for f in IMAGE_FACTORS}
        flat = probs.reshape(-1, probs.shape[-1])  # (N*3, C)
        image = factor_accuracies(flat, frame_labels, IMAGE_FACTORS)
        video = factor_accuracies(video_class_probs(video_model, video_processor, clips), labels, VIDEO_FACTORS)
        rows.append([name, *(f"{image[f'top1_{f}']:.2f}" for f in IMAGE_FACTORS), f"{video['top1_motion']:.2f}"])
        cells = []
        for colour in range(len(FACTORS["colour"])):
            keep = frame_labels["colour"] == colour
            read = factor_accuracies(flat[keep], {f: v[keep] for f, v in frame_labels.items()}, IMAGE_FACTORS) if keep.any() else None
            cells.append("-" if read is None else f"{read['top1_colour']:.2f} ({int(keep.sum())})")
        colour_rows.append([name, *cells])
    return rows, colour_rows


def metric_rows(root: Path, runs: list[str]) -> list[list[str]]:
    """One row per evaluated run: the headline metrics with their chance / baseline."""
    rows = []
    for run in runs:
        path = layout.metrics_path(layout.evaluation_dir(root, run))
        if not path.exists():
            continue
        metrics = json.loads(path.read_text())["metrics"]
        cells = []
        for name in METRICS:
            entry = metrics.get(name) or {}
            ref = entry.get("chance") if entry.get("chance") is not None else entry.get("baseline")
            shown = "-" if "mean" not in entry else f"{entry['mean']:.3f} ± {entry['sem']:.3f}"
            cells.append(shown + (f" ({ref:.3f})" if ref is not None and "mean" in entry else ""))
        rows.append([run, *cells])
    return rows


def per_clip(root: Path, run: str) -> dict[str, dict[str, float]]:
    """{stimulus: {metric: value}} of a run's evaluation/<run>/per_sample.csv (the METRICS columns it has)."""
    with layout.per_sample_path(layout.evaluation_dir(root, run)).open(newline="") as handle:
        return {row["stimulus"]: {m: float(row[m]) for m in METRICS if row.get(m) not in (None, "")} for row in csv.DictReader(handle)}


def paired_rows(root: Path, base: str, others: list[str]) -> list[list[str]]:
    """One row per run of ``others``: its per-clip metric minus ``base``'s on the same clips, mean ± paired SEM."""
    reference = per_clip(root, base)
    rows = []
    for run in others:
        if not layout.per_sample_path(layout.evaluation_dir(root, run)).exists():
            continue
        scores = per_clip(root, run)
        if set(scores) != set(reference):
            raise SystemExit(f"{run} and {base} scored other clips: {sorted(set(scores) ^ set(reference))[:5]}")
        cells = []
        for name in METRICS:
            diffs = [scores[s][name] - reference[s][name] for s in reference if name in scores[s] and name in reference[s]]
            mean, sem = mean_sem(np.asarray(diffs)) if diffs else (None, None)
            cells.append("-" if mean is None else f"{mean:+.3f} ± {sem:.3f}")
        rows.append([f"{run} - {base}", *cells])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run (unless --no-run) and report."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="a fresh (or finished, with --no-run) data root")
    parser.add_argument("--no-run", action="store_true", help="only read the outputs of a finished run")
    parser.add_argument("--refit-demo", action="store_true", help="fit the demo models here instead of installing the shipped ones")
    args = parser.parse_args(argv)
    root = Path(args.data_root).resolve()
    if not args.no_run:
        if root.exists() and any(root.iterdir()):
            raise SystemExit(f"{root} is not empty: the benchmark needs a fresh data root.")
        first, peak, output = run_child(["--data-root", str(root), *(["--refit-demo"] if args.refit_demo else [])])
        rerun, peak_rerun, _ = run_child(["--data-root", str(root)])
        print(f"fresh run: {first:.0f} s, rerun: {rerun:.0f} s, peak RSS of the children: {max(peak, peak_rerun):.0f} MiB\n")
        print(markdown_table(["stage", "status", "seconds"], stage_rows(output)))
    fit_rows = []
    for step in STEPS:
        record = json.loads(layout.demo_fit_manifest_path(root, step).read_text())
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in record["held_out_metrics"].items())
        fit_rows.append([step, f"{record['seconds']}", shown])
    print("\nfits (held-out train clips):\n")
    print(markdown_table(["step", "seconds", "held-out metrics"], fit_rows))
    print(f"\nVAE round trip on the test frames: {vae_round_trip(root)}\n")
    variants = evaluation_data.oracle_run_names(RUN, DEMO.name)
    runs = [RUN, *(variants[v][0] for v in evaluation_data.ORACLE_VARIANTS if v != "full_prediction")]
    print(markdown_table(["run", *METRICS], metric_rows(root, runs)))
    print(f"\nper clip, each oracle minus {RUN} (mean ± paired SEM over the test clips):\n")
    print(markdown_table(["difference", *METRICS], paired_rows(root, RUN, runs[1:])))
    print(f"\ndecoded captions of {RUN} (test clips) naming the truth: {caption_hits(root, RUN)}")
    chance = ", ".join(f"{f} {1 / len(FACTORS[f]):.2f}" for f in (*IMAGE_FACTORS, "motion"))
    print(f"\nthe demo classifiers' top-1 on the test clips (image: frames 0, 7, 14; video: the clip; chance {chance}):\n")
    readout, by_colour = readout_rows(root, runs)
    print(markdown_table(["clips", *IMAGE_FACTORS, "motion"], readout))
    print("\ncolour read per true colour (image classifier, frames 0, 7, 14; in brackets: frames of that colour):\n")
    print(markdown_table(["clips", *FACTORS["colour"]], by_colour))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
