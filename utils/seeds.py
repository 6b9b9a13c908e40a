"""Seeding in one place: the process-wide seed and the per-stimulus seed.

``stimulus_seed`` makes every per-stimulus random draw (a sampled latent, a clip's noise,
an evaluation's n-way trials) depend only on the run seed and the stimulus name, never on
batching, ordering or sharding across processes.
"""
from __future__ import annotations

import random
import zlib

import numpy as np

SEED_MODULUS = 2**63 - 1


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (if installed)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ModuleNotFoundError:
        return
    torch.manual_seed(seed)


def stimulus_seed(seed: int, stimulus: str) -> int:
    """Per-stimulus seed: crc32 of the name mixed with the run ``seed`` (in [0, 2**63 - 1))."""
    return (zlib.crc32(stimulus.encode("utf-8")) + 1_000_003 * seed) % SEED_MODULUS
