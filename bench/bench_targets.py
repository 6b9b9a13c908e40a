"""Benchmark of target extraction: decode time vs model time, stimuli per second.

Parts (each prints markdown table rows):
1. decode: the frame loaders of both extractors on the real BMD samples (H.264, 266-268 px,
   72-91 frames): ms per video to decode all frames, pick 15 and resize.
2. tiny: both extraction scripts end to end with ``--preset tiny`` on a synthetic demo
   (``--n-demo`` videos, 64 px) and on the BMD samples; stimuli/s and the split between
   decoding (in threads), waiting for decoding, and the models (+ writes), from the manifests.
3. full: the full-size architectures built from their real configs with random weights
   (``models.zoo.build_random``): Zeroscope VAE encoder at 268 px, BLIP ViT-B/16 at 240 px,
   CLIP ViT-L/14 at 224 px, and one BLIP caption (beam 3, max 20 tokens); ``--full-frames``
   frames are timed and the time per 15-frame stimulus is extrapolated.

Usage (from the repository root):
    python bench/bench_targets.py
    python bench/bench_targets.py --n-demo 48 --threads 2 --full-frames 3
    python bench/bench_targets.py --no-full --device cpu
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "bmd_samples"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-demo", type=int, default=24, help="synthetic demo videos for the tiny runs (default: %(default)s)")
    parser.add_argument("--samples", default=str(SAMPLES), help="folder with the BMD samples mp4/ and annotations.json (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=8, help="stimuli per batch for the tiny runs (default: %(default)s)")
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="time the full-size architectures (default: %(default)s)")
    parser.add_argument("--full-frames", type=int, default=2, help="frames per full-size timing (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device for the full-size timings (default: %(default)s)")
    return parser


def bench_decode(videos: list[Path]) -> None:
    """Part 1: decode + sample + resize time per video for both extractors' loaders."""
    from models import targets
    from utils.video import video_info

    loaders = {
        "zeroscope (268 squash)": targets.frame_loader(15, {"z": targets.squash_resize(268)}),
        "blip+clip (240 squash, 224 crop)": targets.frame_loader(15, {"b": targets.squash_resize(240), "c": targets.center_crop(224)}),
    }
    frames = [video_info(v)["n_frames"] for v in videos]
    print(f"\n### decode ({len(videos)} BMD samples, {min(frames)}-{max(frames)} frames each)\n")
    print("| loader | ms / video |\n|---|---|")
    for name, load in loaders.items():
        load(videos[0])  # warm-up
        start = time.perf_counter()
        for video in videos:
            load(video)
        print(f"| {name} | {1000 * (time.perf_counter() - start) / len(videos):.1f} |")


def run_script(main, args: list[str], manifest: Path) -> dict:
    """Run a script's main, return the manifest counts."""
    from utils.io import read_json

    code = main(args)
    counts = read_json(manifest)["counts"]
    counts["code"] = code
    return counts


def bench_tiny(n_demo: int, samples: Path | None, batch_size: int) -> None:
    """Part 2: both scripts with the tiny preset on a demo and on the BMD samples."""
    import shutil

    import extract_targets_blip
    import extract_targets_zeroscope
    from models import zoo
    from utils import layout
    from utils.synthetic import make_demo

    print("\n### tiny preset, end to end (CPU)\n")
    print("| data | extractor | stimuli | stimuli/s | decode s (threads) | waited s | model+write s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        make_demo(demo, n_subjects=1, n_train=n_demo - max(2, n_demo // 6), n_test=max(2, n_demo // 6), size=64, n_frames=24)
        runs = [("demo 64px", demo, "demo", [], zoo.ZEROSCOPE_FRAME_SIZE["tiny"])]
        if samples is not None and (samples / "mp4").is_dir():
            bmd = Path(tmp) / "bmd"
            (bmd / "stimuli_bmd").mkdir(parents=True)
            shutil.copytree(samples / "mp4", bmd / "stimuli_bmd" / "mp4")
            (bmd / "metadata_bmd").mkdir()
            shutil.copy(samples / "annotations.json", bmd / "metadata_bmd" / "annotations.json")
            stimuli = sorted(p.stem for p in (samples / "mp4").glob("*.mp4"))
            runs.append(("BMD samples", bmd, "bmd", ["--stimuli", *stimuli], zoo.ZEROSCOPE_FRAME_SIZE["default"]))
        for label, root, dataset, extra, size in runs:
            common = ["--data-root", str(root), "--dataset", dataset, "--preset", "tiny", "--no-progress", "--batch-size", str(batch_size), *extra]
            jobs = [
                (f"zeroscope ({size} px)", extract_targets_zeroscope.main, common + ["--size", str(size)], layout.targets_dir(root, dataset, "z_zeroscope")),
                ("blip+captions+clip", extract_targets_blip.main, common + ["--caption-beams", "3"], layout.targets_dir(root, dataset, "blip")),
            ]
            for name, main, args, out_dir in jobs:
                c = run_script(main, args, layout.manifest_path(out_dir))
                rate = c["written"] / c["wall_s"] if c["wall_s"] else float("nan")
                print(f"| {label} | {name} | {c['written']} | {rate:.2f} | {c['decode_s']:.2f} | {c['wait_s']:.2f} | {c['model_s']:.2f} | {c['wall_s']:.2f} |")


def bench_full(n_frames: int, device: str) -> None:
    """Part 3: full-size architectures with random weights, extrapolated to 15 frames."""
    import numpy as np
    import torch

    from models import targets, zoo
    from models.captioning import CaptionSettings, caption_embeddings

    print(f"\n### full-size architectures, random weights, fp32 on {device} ({n_frames} frames timed, x15/{n_frames} extrapolated)\n")
    print("| model | build s | s / frame | s / stimulus (15 frames) |\n|---|---|---|---|")
    rng = np.random.default_rng(0)

    def row(name: str, build_s: float, seconds: float) -> None:
        print(f"| {name} | {build_s:.1f} | {seconds / n_frames:.2f} | {15 * seconds / n_frames:.1f} |", flush=True)

    def build(name: str, size: int) -> tuple[torch.nn.Module, float, np.ndarray]:
        """(model on device, seconds to build it, random uint8 video (1, n_frames, size, size, 3))."""
        start = time.perf_counter()
        model = zoo.build_random(name).to(device)
        return model, time.perf_counter() - start, rng.integers(0, 255, (1, n_frames, size, size, 3), dtype=np.uint8)

    vae, build_s, video = build("vae", 268)
    start = time.perf_counter()
    latents = targets.vae_latents(vae, video, ["x"], "sample")
    row(f"Zeroscope VAE encoder, 268 px -> {tuple(latents.shape[2:])}", build_s, time.perf_counter() - start)
    del vae

    blip, build_s, video = build("blip", 240)
    start = time.perf_counter()
    states = targets.blip_embeddings(blip, video, zoo.BLIP_MEAN, zoo.BLIP_STD)
    row(f"BLIP ViT-B/16 vision, 240 px -> {tuple(states.shape[1:])}", build_s, time.perf_counter() - start)
    start = time.perf_counter()
    caption_embeddings(blip, _FakeProcessor(), torch.from_numpy(states), CaptionSettings())
    print(f"| BLIP caption of one (226, 768) embedding, beam 3, max 20 | - | - | {time.perf_counter() - start:.1f} |")
    del blip

    clip, build_s, video = build("clip", 224)
    start = time.perf_counter()
    features = targets.clip_image_embeddings(clip, video, zoo.BLIP_MEAN, zoo.BLIP_STD)
    row(f"CLIP ViT-L/14 image, 224 px -> {features.shape[-1]}", build_s, time.perf_counter() - start)


class _FakeProcessor:
    """Just enough of BlipProcessor for caption timing without the real vocabulary files:
    the prompt as fixed BERT ids ([CLS] a picture of [SEP])."""

    class _Tokenizer:
        def __call__(self, text: str, return_tensors: str = "pt"):
            import torch

            return type("Encoded", (), {"input_ids": torch.tensor([[101, 1037, 3861, 1997, 102]])})()

        def batch_decode(self, ids, skip_special_tokens: bool = True) -> list[str]:
            return [" ".join(str(int(i)) for i in row) for row in ids]

    tokenizer = _Tokenizer()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import platform

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    samples = Path(args.samples)
    videos = sorted((samples / "mp4").glob("*.mp4")) if (samples / "mp4").is_dir() else []
    print(f"machine: {platform.platform()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    if videos:
        bench_decode(videos)
    else:
        print(f"(no BMD samples in {samples}: decode part skipped)")
    bench_tiny(args.n_demo, samples if videos else None, args.batch_size)
    if args.full:
        bench_full(args.full_frames, args.device)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
