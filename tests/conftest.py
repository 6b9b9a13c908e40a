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


# Under pytest-xdist (the README's test command: ``-n 2 --dist loadfile --no-loadscope-reorder``) each test file is
# one work unit, so its module fixtures are built once. The files that share the fitted small demo (session
# fixtures ``fitted_demo`` and ``finished_demo_run``) form one unit, so it is fitted once. The longest units run first.
FITTED_DEMO_FILES = ("tests/test_demo_fit.py", "tests/test_explore_notebook.py", "tests/test_pipeline_e2e.py")
LONGEST_FIRST = (*FITTED_DEMO_FILES, "tests/test_fault_injection.py", "tests/test_demo_shipped.py")
FITTED_DEMO_FIXTURES = {"fitted_demo", "finished_demo_run"}


def file_of(nodeid: str) -> str:
    """``tests/test_x.py`` of a test's node id."""
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the files of LONGEST_FIRST first; refuse a fitted-demo test outside FITTED_DEMO_FILES (it would fit again)."""
    strays = [item.nodeid for item in items
              if FITTED_DEMO_FIXTURES & set(getattr(item, "fixturenames", ())) and file_of(item.nodeid) not in FITTED_DEMO_FILES]
    if strays:
        raise pytest.UsageError(f"tests/conftest.py: {strays} use the fitted small demo: add their files to FITTED_DEMO_FILES")
    rank = {file: i for i, file in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(file_of(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the FITTED_DEMO_FILES as one work unit (other modes: xdist's own scheduler)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FittedDemoTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = file_of(nodeid)
            return "fitted_demo" if file in FITTED_DEMO_FILES else file

    return FittedDemoTogether(config, log)


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


# The small demo the demo-preset tests fit to: one subject, 40 train and 8 test clips at the demo's 64 px.
SMALL_DEMO = {"n_subjects": 1, "n_train": 40, "n_test": 8}
SMALL_FIT_SCALE = 0.5  # fit_demo_models.py --epoch-scale of those tests


@pytest.fixture(scope="session")
def fitted_demo(tmp_path_factory) -> tuple[Path, list[str]]:
    """A small demo with its demo models fitted (shorter fits), and every file a fit opened with PyAV.

    Returns (data root, opened paths): the paths are what the no-test-stimulus test checks.
    """
    import av

    from models.demo.fit import fit_all
    from utils.synthetic import make_demo

    root = tmp_path_factory.mktemp("fitted_demo") / "data"
    make_demo(root, **SMALL_DEMO)
    opened: list[str] = []
    real_open = av.open

    def recording_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(av, "open", recording_open)
        fit_all(root, epoch_scale=SMALL_FIT_SCALE)
    return root, opened


# The runner's flags of the demo-preset end-to-end run on the fitted small demo (one subject, short fits).
SMALL_RUN = [
    "--preset", "demo", "--run", "e2e", "--subjects", "1",
    "--stage-args", "download_data=--n-subjects 1 --n-train 40 --n-test 8", f"fit_demo_models=--epoch-scale {SMALL_FIT_SCALE}",
]


@pytest.fixture(scope="session")
def finished_demo_run(fitted_demo) -> tuple[Path, str]:
    """The whole pipeline (``run_pipeline.py --preset demo``, oracles included) on the fitted small demo, made once
    per session: (data root, run name)."""
    import run_pipeline

    root, _ = fitted_demo
    assert run_pipeline.main(["--data-root", str(root), *SMALL_RUN]) == 0
    return root, "e2e"
