"""Benchmark: MBM pretraining throughput (steps/s, samples/s) and achieved FLOP rate.

Times full training steps (masked forward + backward + AdamW step) of ``MaskedBrainModel`` on
random inputs of the Group41 size (13156 vertices, wrap-padded to the preset's patch size),
for the ``tiny`` preset and, optionally, the published size (``default``: 1024/24/16, decoder
512 x 8). Data loading is not included. The analytic FLOPs per sample (matmuls and attention, forward x 3 for the backward) give
the achieved rate, and on a GPU the model FLOP utilisation against ``--peak-tflops``.

Examples:
  python bench/bench_mbm.py --presets tiny --threads 1 2
  python bench/bench_mbm.py --presets default --batch-size 2 --steps 2 --threads 2
  python bench/bench_mbm.py --presets default --device cuda --dtype bfloat16 --batch-size 64 --peak-tflops 989
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import zoo  # noqa: E402
from models.mbm import MaskedBrainModel, MBMConfig  # noqa: E402
from models.training import param_groups  # noqa: E402
from utils.brain_data import padded_length  # noqa: E402
from utils.datasets import N_GROUP41  # noqa: E402


def block_flops(tokens: int, dim: int, mlp_ratio: float) -> float:
    """Forward FLOPs of one transformer block over ``tokens`` tokens (one sample)."""
    linear = 2 * tokens * (4 * dim * dim + 2 * dim * int(dim * mlp_ratio))
    attention = 2 * 2 * tokens * tokens * dim
    return linear + attention


def step_flops(config: MBMConfig) -> float:
    """Training FLOPs per sample of one masked MBM step (forward x 3)."""
    length = config.num_patches
    kept = int(length * (1 - config.mask_ratio)) + 1
    forward = 2 * length * config.patch_size * config.embed_dim  # patch embedding
    forward += config.depth * block_flops(kept, config.embed_dim, config.mlp_ratio)
    forward += 2 * kept * config.embed_dim * config.decoder_embed_dim
    forward += config.decoder_depth * block_flops(length + 1, config.decoder_embed_dim, config.mlp_ratio)
    forward += 2 * (length + 1) * config.decoder_embed_dim * config.patch_size
    return 3.0 * forward


def bench(preset: str, batch_size: int, steps: int, warmup: int, device: str, dtype: str) -> dict:
    """Time ``steps`` training steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    num_voxels = padded_length(N_GROUP41, zoo.mbm_patch_size(preset))
    config = zoo.mbm_config(preset, num_voxels)
    model = MaskedBrainModel(config).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4)
    x = torch.randn(batch_size, 1, num_voxels, device=device)
    autocast = torch.autocast(device.split(":")[0], dtype=getattr(torch, dtype)) if dtype != "float32" else contextlib.nullcontext()

    def one_step() -> None:
        with autocast:
            loss, _, _ = model(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        one_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    flops = step_flops(config) * batch_size
    return {
        "preset": preset, "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "batch": batch_size,
        "s_per_step": seconds, "steps_per_s": 1 / seconds, "samples_per_s": batch_size / seconds,
        "gflop_per_sample": step_flops(config) / 1e9, "achieved_tflops": flops / seconds / 1e12,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny"], choices=tuple(zoo.MBM_SIZES), help="MBM sizes to time (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[0], help="torch CPU threads to try; 0 = torch's default (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="autocast dtype (default: %(default)s)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak TFLOP/s for the MFU column (default: none)")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    print("| preset | params (M) | threads | batch | s/step | steps/s | samples/s | GFLOP/sample | achieved TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for threads in args.threads:
            torch.set_num_threads(threads or default_threads)
            r = bench(preset, args.batch_size, args.steps, args.warmup, args.device, args.dtype)
            mfu = f"{r['achieved_tflops'] / args.peak_tflops:.1%}" if args.peak_tflops else "-"
            print(
                f"| {preset} | {r['params_M']:.1f} | {threads or default_threads} | {r['batch']} | {r['s_per_step']:.3f} | "
                f"{r['steps_per_s']:.2f} | {r['samples_per_s']:.1f} | {r['gflop_per_sample']:.2f} | {r['achieved_tflops']:.4f} | {mfu} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
