"""Benchmark of the reconstruction loop (models/video_diffusion.py): clips per minute, peak memory.

Two loops are compared in the same run, on the same random latents and prompts:

- ``per-clip``: the straightforward loop: one clip per UNet call (guidance doubles it to 2),
  the classic attention processor (``AttnProcessor``, attention matrix materialised);
- ``batched``: ``--batch-size`` clips per UNet call with PyTorch's scaled-dot-product attention
  (``AttnProcessor2_0``, memory-efficient / flash kernels on GPU), the loop the stage uses.

Modes:
    tiny      the tiny preset on CPU (15 frames, 8x8 latents -> 64 px), full 20-step schedule.
    full-step one denoising step of the full-size Zeroscope UNet3D (random weights from the real
              config, zoo.build_random) at 15 x 33 x 33 latents, guidance on, on CPU: seconds only.
    gpu       full-size UNet3D + VAE with random weights, fp16, 15 frames at 268x268 (33x33
              latents) and 576x320 (40x72), 20 steps, strength 0.8, guidance on: clips per minute and
              peak GPU memory of both loops.

Usage:
    python bench/bench_reconstruct.py --mode tiny
    python bench/bench_reconstruct.py --mode full-step
    python bench/bench_reconstruct.py --mode gpu --batch-size 4
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import zoo  # noqa: E402
from models.video_diffusion import DiffusionSettings, VideoDiffusion, guided_noise  # noqa: E402

PROMPT = "a person riding a horse on a beach"


def set_attention(unet, processor: str) -> None:
    """``classic`` = AttnProcessor, ``sdpa`` = AttnProcessor2_0."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor() if processor == "classic" else AttnProcessor2_0())


def run_loop(model: VideoDiffusion, latents: torch.Tensor, batch: int, settings: DiffusionSettings) -> float:
    """Reconstruct all clips ``batch`` at a time; return seconds (synchronised on GPU)."""
    sync = torch.cuda.synchronize if latents.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(0, latents.shape[0], batch):
        chunk = latents[i : i + batch]
        model(chunk, [PROMPT] * chunk.shape[0], list(range(i, i + chunk.shape[0])), settings)
    sync()
    return time.perf_counter() - start


def compare(model: VideoDiffusion, latents: torch.Tensor, batch: int, settings: DiffusionSettings) -> list[dict]:
    """Time the per-clip loop and the batched loop on the same clips (after one warm-up clip each)."""
    rows = []
    for name, size, attention in (("per-clip", 1, "classic"), ("batched", batch, "sdpa")):
        set_attention(model.unet, attention)
        run_loop(model, latents[:1], 1, DiffusionSettings(steps=2, strength=1.0, guidance_scale=settings.guidance_scale))
        if latents.is_cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = run_loop(model, latents, size, settings)
        peak = torch.cuda.max_memory_allocated() / 2**30 if latents.is_cuda else None
        rows.append({"loop": name, "clips": latents.shape[0], "batch": size, "attention": attention, "seconds": seconds,
                     "s_per_clip": seconds / latents.shape[0], "clips_per_min": 60 * latents.shape[0] / seconds, "peak_gib": peak})
    return rows


def tiny(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = VideoDiffusion.from_components(zoo.load_zeroscope("tiny"))
    latents = torch.randn(args.clips, 4, 15, 8, 8, generator=torch.Generator().manual_seed(0))
    settings = DiffusionSettings(steps=args.steps, strength=args.strength)
    print_rows(compare(model, latents, args.batch_size, settings), "tiny preset, CPU, 15 frames, 8x8 latents (64x64 px)")
    from utils.video import write_gif, write_mp4

    frames = model(latents[:1], [PROMPT], [0], DiffusionSettings(strength=0.0))[0]
    start = time.perf_counter()
    write_mp4(Path(args.tmp) / "clip.mp4", frames, 5)
    write_gif(Path(args.tmp) / "clip.gif", frames, 5)
    print(f"\nwriting one clip (mp4 + gif, 15 frames 64x64): {time.perf_counter() - start:.3f} s")


def full_step(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    unet = zoo.build_random("unet")
    print(f"built full-size UNet3D ({sum(p.numel() for p in unet.parameters()) / 1e9:.2f} B parameters) in {time.perf_counter() - start:.1f} s")
    x = torch.randn(1, 4, 15, 33, 33)
    cond = torch.randn(1, 77, 1024)
    for attention in ("sdpa",):
        set_attention(unet, attention)
        with torch.inference_mode():
            start = time.perf_counter()
            out = guided_noise(unet, x, torch.tensor(800), cond, torch.zeros_like(cond), 15.0)
            seconds = time.perf_counter() - start
        print(f"one guided step (UNet batch 2 = cond + uncond), 15x33x33 latents, {attention}: {seconds:.1f} s; output {tuple(out.shape)}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


def gpu(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA device.")
    dtype = torch.float16
    components = {
        "vae": zoo.build_random("vae").to("cuda", dtype), "unet": zoo.build_random("unet").to("cuda", dtype),
        "text_encoder": zoo.build_random("text_encoder").to("cuda", dtype),
        "tokenizer": zoo.tiny_clip_tokenizer(), "scheduler": zoo.load_zeroscope("tiny", parts=("scheduler",))["scheduler"],
    }
    model = VideoDiffusion.from_components(components)
    settings = DiffusionSettings(steps=args.steps, strength=args.strength)
    for h, w in ((33, 33), (40, 72)):
        latents = torch.randn(args.clips, 4, 15, h, w, generator=torch.Generator().manual_seed(0)).to("cuda")
        print_rows(compare(model, latents, args.batch_size, settings), f"full size, fp16, {torch.cuda.get_device_name()}, 15 frames, {h}x{w} latents ({8 * h}x{8 * w} px)")


def print_rows(rows: list[dict], title: str) -> None:
    print(f"\n### {title}\n")
    print("| loop | clips | clips per UNet call | attention | s/clip | clips/min | peak GPU GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(f"| {r['loop']} | {r['clips']} | {r['batch']} | {r['attention']} | {r['s_per_clip']:.3f} | {r['clips_per_min']:.1f} | {peak} |")
    print(f"\nbatched / per-clip throughput: {rows[1]['clips_per_min'] / rows[0]['clips_per_min']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="tiny", choices=("tiny", "full-step", "gpu"), help="what to time (default: %(default)s)")
    parser.add_argument("--clips", type=int, default=8, help="clips per loop (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per UNet call in the batched loop (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="schedule length (default: %(default)s)")
    parser.add_argument("--strength", type=float, default=0.8, help="strength (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--tmp", default="/tmp", help="folder for the written test clip (default: %(default)s)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, threads {args.threads}, mode {args.mode}")
    {"tiny": tiny, "full-step": full_step, "gpu": gpu}[args.mode](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
