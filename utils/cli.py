"""The common command-line flags shared by every stage script.

``common_parser`` builds a flat ``argparse`` parser with the flags of ARCHITECTURE.md
section 1 so the runner and people can chain stages with one set of flags. Scripts add
their own flags to the returned parser.
"""
from __future__ import annotations

import argparse
import random

import numpy as np

from utils.datasets import DATASETS

DTYPES = ("auto", "float32", "float16", "bfloat16")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a float >= 0."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def common_parser(description: str | None, multi_dataset: bool = False, default_dataset: str = "demo") -> argparse.ArgumentParser:
    """A parser with the common flags.

    multi_dataset: ``--datasets`` (list) instead of ``--dataset`` (one); both spellings are
    accepted and land in ``args.datasets`` / ``args.dataset`` respectively.
    """
    parser = argparse.ArgumentParser(
        description=description, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", default="data", help="root of every artifact (default: %(default)s)")
    names = sorted(DATASETS)
    if multi_dataset:
        parser.add_argument(
            "--datasets", "--dataset", nargs="+", default=[default_dataset], choices=names, metavar="DS",
            help=f"datasets to use, any of {names} (default: %(default)s)",
        )
    else:
        parser.add_argument(
            "--dataset", "--datasets", default=default_dataset, choices=names,
            help="dataset to use (default: %(default)s)",
        )
    parser.add_argument(
        "--subjects", nargs="+", default=None, metavar="SUB",
        help="subjects as 1, sub01 or sub-01 (default: every subject of the dataset)",
    )
    parser.add_argument(
        "--preset", default="default", choices=("default", "tiny"),
        help="model preset: 'default' = the real models, 'tiny' = small random models built offline (default: %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1 ... (default: %(default)s)")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPES,
        help="compute dtype; auto = float16 on CUDA, float32 on CPU (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="items per batch (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="redo work whose outputs already exist")
    parser.add_argument(
        "--limit", type=positive_int, default=None,
        help="process at most this many items (stimuli, trials, batches), for quick tries (default: all)",
    )
    return parser


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (if installed)."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ModuleNotFoundError:
        return
    torch.manual_seed(seed)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other names pass through."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str):
    """Torch dtype from the flag: ``auto`` = float16 on CUDA, float32 elsewhere."""
    import torch

    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)
