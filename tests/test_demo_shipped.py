"""The demo models shipped in demo_models/ (issue 19): every file matches its manifest, they install into a demo
world of the same settings (and into no other), and their held-out metrics reproduce here within 0.01."""
from __future__ import annotations

import json
import shutil

import pytest

import fit_demo_models
from models.demo import shipped
from models.demo.fit import STEPS, step_record
from utils import layout
from utils.io import ArtifactError, sha256_file
from utils.synthetic import make_demo

TOLERANCE = 0.01


@pytest.fixture(scope="module")
def manifest() -> dict:
    found = shipped.read_manifest()
    if found is None:
        pytest.fail(f"{shipped.manifest_path()} is missing: the demo models must ship with the repository")
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory, manifest) -> str:
    """The default demo world (the settings the shipped models were fitted to) with the shipped models installed."""
    root = str(tmp_path_factory.mktemp("shipped") / "data")
    make_demo(root, **manifest["demo"])
    assert fit_demo_models.main(["--data-root", root, "--from-shipped"]) == 0
    return root


def test_shipped_files_match_their_manifest_and_size(manifest):
    files = shipped.model_files(shipped.SHIPPED_DIR)
    assert sorted(p.relative_to(shipped.SHIPPED_DIR).as_posix() for p in files) == sorted(manifest["files"])
    assert all(sha256_file(shipped.SHIPPED_DIR / rel) == digest for rel, digest in manifest["files"].items())
    assert sum(p.stat().st_size for p in files) < 40 * 2**20
    assert {f"fit_{step}.json" for step in STEPS} <= set(manifest["files"])
    assert manifest["budget"] == "full" and len(manifest["code_commit"]) == 40


def test_install_copies_every_file_and_fits_only_the_same_world(installed, manifest, tmp_path):
    target = layout.demo_models_root(installed)
    assert shipped.changed_files(manifest, target) == []
    assert all(step_record(installed, step) is not None for step in STEPS)
    assert shipped.is_installed(installed) == manifest
    assert fit_demo_models.main(["--data-root", installed, "--from-shipped"]) == 0  # a rerun keeps them (no fit, no refusal)
    assert shipped.changed_files(manifest, target) == []
    other = tmp_path / "other"
    make_demo(other, n_subjects=1, n_train=8, n_test=4, size=16, n_frames=4)
    assert shipped.install_shipped(other) is None  # another world: nothing installed, the runner fits instead
    assert not layout.demo_models_root(other).exists()


def test_a_changed_shipped_file_is_refused(manifest, tmp_path):
    copy = tmp_path / "demo_models"
    shutil.copytree(shipped.SHIPPED_DIR, copy)
    rel = next(r for r in manifest["files"] if r.endswith(".safetensors"))
    (copy / rel).write_bytes(b"not the weights")
    root = tmp_path / "data"
    root.mkdir()
    layout.demo_config_path(root, "demo").parent.mkdir(parents=True)
    layout.demo_config_path(root, "demo").write_text(json.dumps(manifest["demo"]))
    with pytest.raises(ArtifactError, match=rf"1 shipped file\(s\) differ .*{rel}.*git checkout -- demo_models"):
        shipped.install_shipped(root, copy)
    assert not layout.demo_models_root(root).exists()


@pytest.mark.parametrize("step", list(STEPS))
def test_shipped_models_reproduce_their_held_out_metrics(installed, step):
    record = step_record(installed, step)
    differences = shipped.metric_differences(record["held_out_metrics"], shipped.rescore(installed, step), TOLERANCE)
    assert differences == {}
