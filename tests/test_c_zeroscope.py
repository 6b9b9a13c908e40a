"""The conditioning-embedding path end to end on a small demo (tiny preset): c_zeroscope targets,
regression to them like any target, reconstruction from the predicted prompt embeddings."""
from __future__ import annotations

import json

import numpy as np

import download_data
import extract_targets_zeroscope
import reconstruct_zeroscope
import regress
from utils import layout, provenance
from utils.synthetic import make_demo

RUN = "cz_ridge"


def test_c_zeroscope_targets_regression_and_reconstruction(tmp_path):
    make_demo(tmp_path, n_subjects=1, n_train=24, n_test=3, size=32, n_frames=8)
    assert download_data.main(["--data-root", str(tmp_path), "--dataset", "demo", "--prepare"]) == 0
    common = ["--data-root", str(tmp_path), "--dataset", "demo", "--preset", "tiny"]
    assert extract_targets_zeroscope.main([*common, "--targets", "z_zeroscope", "c_zeroscope", "--no-progress", "--workers", "0"]) == 0

    folder = layout.targets_dir(tmp_path, "demo", "c_zeroscope")
    assert provenance.read_settings(folder)["settings"]["recipe"] == "default"
    shapes = {np.load(p).shape for p in folder.glob("*.npy")}
    assert len(shapes) == 1 and next(iter(shapes))[0] == 77  # (77, D) per stimulus

    ridge = ["--alphas", "10", "1000", "100000", "--cv", "3"]
    assert regress.main(["--data-root", str(tmp_path), "--subjects", "1", "--targets", "c_zeroscope", "--run", RUN, *ridge]) == 0
    predicted = sorted(p.stem for p in layout.predictions_dir(tmp_path, RUN, "c_zeroscope").glob("*.npy"))
    assert len(predicted) == 3
    manifest = json.loads(layout.manifest_path(layout.predictions_run_dir(tmp_path, RUN)).read_text())
    assert manifest["target_recipes"] == {"c_zeroscope": {"demo": "default"}}

    fast = ["--steps", "4", "--strength", "0.5", "--batch-size", "3", "--device", "cpu"]
    assert reconstruct_zeroscope.main([*common, "--run", RUN, "--z-from", "gt", "--condition", "c_zeroscope", *fast]) == 0
    outputs = [d for d in layout.reconstructions_root(tmp_path).iterdir() if d.is_dir()]
    assert len(outputs) == 1 and "c_zeroscope" in outputs[0].name
    frames = [np.load(layout.reconstruction_frames_path(outputs[0], s)) for s in predicted]
    assert all(f.dtype == np.uint8 and f.ndim == 4 for f in frames)
    recorded = json.loads(layout.manifest_path(outputs[0]).read_text())
    assert recorded["inputs"]["condition"] == "c_zeroscope" and recorded["inputs"]["prompt_embeds"].endswith("c_zeroscope/<stim>.npy")
