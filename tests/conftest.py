"""Shared fixtures: the real sample data in ../shared (tests skip when it is absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

# Spinning OpenMP threads make torch/himalaya many times slower on 2 shared cores; this must
# be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config) -> None:
    """One torch thread: tiny models run several times faster that way on 2 shared cores."""
    try:
        import torch
    except ModuleNotFoundError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (skips the test when it is absent)."""
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bmd_sample_videos(shared_data: Path) -> list[Path]:
    """The ten real BMD sample mp4s."""
    videos = sorted((shared_data / "bmd_samples" / "mp4").glob("*.mp4"))
    if not videos:
        pytest.skip("no BMD sample videos in ../shared/data/bmd_samples/mp4")
    return videos
