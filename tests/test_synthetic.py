"""utils.synthetic: the offline demo dataset in BMD formats, from a known encoding model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from utils import layout
from utils.datasets import DEMO, annotations_path, list_stimuli, stimulus_path, subject_folder
from utils.metrics import n_way_identification
from utils.rois import get_roi_set
from utils.safe_pickle import load_pickle
from utils.synthetic import FEATURE_GROUPS, encoding_weights, make_demo, roi_slices
from utils.video import read_video, video_info

SMALL = {"n_subjects": 2, "n_train": 10, "n_test": 4, "size": 16, "n_frames": 6, "fps": 8}
BMD_FIELDS = {
    "set", "text_descriptions", "objects", "scenes", "actions", "spoken_transcription", "memorability_score",
    "memorability_decay", "MiT_filename", "MiT_url", "bmd_matrixfilename",
}


def pickle_file(root: Path, subject: int) -> Path:
    return layout.pickle_path(root, "demo", subject_folder(subject), "Group41", DEMO.suffix)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo_small")
    return root, make_demo(root, seed=3, **SMALL)


def test_pickles_have_bmd_keys_shapes_and_dtypes(small_demo):
    root, summary = small_demo
    assert summary["pickles"] == [str(pickle_file(root, 1)), str(pickle_file(root, 2))]
    for subject in (1, 2):
        data = load_pickle(pickle_file(root, subject))
        assert set(data) == {"train_data_allvoxel", "test_data_allvoxel", "roi_indices_hcp"}
        assert data["train_data_allvoxel"].shape == (10, 3, 13156)
        assert data["test_data_allvoxel"].shape == (4, 10, 13156)
        assert data["train_data_allvoxel"].dtype == np.float32 and data["test_data_allvoxel"].dtype == np.float32
        np.testing.assert_array_equal(data["roi_indices_hcp"], get_roi_set("Group41"))
        train = data["train_data_allvoxel"].reshape(-1, 13156)
        np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(train.std(axis=0, ddof=1), 1, atol=1e-3)
        assert np.isfinite(data["test_data_allvoxel"]).all()
    one, two = (load_pickle(pickle_file(root, s))["train_data_allvoxel"] for s in (1, 2))
    assert not np.array_equal(one, two), "subjects must differ"


def test_videos_decode_with_requested_frames(small_demo):
    root, summary = small_demo
    videos = sorted(Path(summary["stimuli_dir"]).glob("*.mp4"))
    assert [v.stem for v in videos] == [f"{i:04d}" for i in range(1, 15)]
    frames = read_video(stimulus_path(root, DEMO, "0014"))
    assert frames.shape == (6, 16, 16, 3)
    assert frames.std() > 10, "a textured background with a shape, not a flat image"
    assert video_info(videos[0])["fps"] == 8


def test_annotations_in_bmd_format(small_demo):
    root, _ = small_demo
    notes = json.loads(annotations_path(root, "demo").read_text())
    assert list(notes) == [f"{i:04d}" for i in range(1, 15)]
    for name, entry in notes.items():
        assert set(entry) == BMD_FIELDS
        assert entry["set"] == ("train" if int(name) <= 10 else "test")
        for key in ("text_descriptions", "objects", "scenes", "actions"):
            assert len(entry[key]) == 5 and all(isinstance(x, str) and x for x in entry[key]), (name, key)
        assert len(set(entry["text_descriptions"])) == 5
    assert list_stimuli(DEMO, "test", root) == ["0011", "0012", "0013", "0014"]
    captions = {n["text_descriptions"][0] for n in notes.values()}
    assert len(captions) > 5, "captions should describe different content"


def test_ground_truth_and_readme(small_demo):
    root, summary = small_demo
    with np.load(summary["encoding_model"]) as model:
        assert model["features"].shape == (14, len(model["feature_names"])) and model["features"].shape[1] > 100
        assert float(model["snr"]) == 1.0 and int(model["seed"]) == 3
        assert set(model["feature_groups"]) == set(FEATURE_GROUPS)
        assert list(model["split"]) == ["train"] * 10 + ["test"] * 4
    text = Path(summary["readme"]).read_text()
    assert "SYNTHETIC" in text and "seed 3" in text


def test_same_seed_same_bytes_other_seed_differs(small_demo, tmp_path):
    root, _ = small_demo
    make_demo(tmp_path / "same", seed=3, **SMALL)
    make_demo(tmp_path / "other", seed=4, **SMALL)
    for subject in (1, 2):
        assert pickle_file(tmp_path / "same", subject).read_bytes() == pickle_file(root, subject).read_bytes()
        assert pickle_file(tmp_path / "other", subject).read_bytes() != pickle_file(root, subject).read_bytes()
    notes = annotations_path(root, "demo").read_bytes()
    assert annotations_path(tmp_path / "same", "demo").read_bytes() == notes
    assert annotations_path(tmp_path / "other", "demo").read_bytes() != notes


def test_resume_skips_and_settings_change_needs_overwrite(tmp_path):
    settings = {**SMALL, "n_subjects": 2, "n_train": 4, "n_test": 2}
    first = make_demo(tmp_path, **settings)
    assert (first["videos_written"], first["pickles_written"]) == (6, 2)
    stamp = pickle_file(tmp_path, 1).stat().st_mtime_ns
    again = make_demo(tmp_path, **settings)
    assert (again["videos_written"], again["pickles_written"], again["videos_skipped"]) == (0, 0, 6)
    assert pickle_file(tmp_path, 1).stat().st_mtime_ns == stamp
    smaller = {**settings, "n_subjects": 1, "n_train": 3}
    with pytest.raises(ValueError, match="overwrite"):
        make_demo(tmp_path, **smaller)
    redone = make_demo(tmp_path, overwrite=True, **smaller)
    assert redone["pickles_written"] == 1 and len(redone["stale_removed"]) == 2
    assert not pickle_file(tmp_path, 2).exists()
    assert sorted(p.stem for p in stimulus_path(tmp_path, DEMO, "0001").parent.glob("*.mp4")) == ["0001", "0002", "0003", "0004", "0005"]
    assert load_pickle(pickle_file(tmp_path, 1))["train_data_allvoxel"].shape == (3, 3, 13156)
    assert [p.name for p in pickle_file(tmp_path, 1).parent.iterdir()] == [pickle_file(tmp_path, 1).name]


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [("n_train", 1, "n_train=1"), ("snr", 0.0, "snr=0.0"), ("size", 4, "size=4"), ("fps", -1, "fps=-1")],
)
def test_bad_arguments_name_the_parameter(tmp_path, name, value, match):
    with pytest.raises(ValueError, match=match):
        make_demo(tmp_path, **{**SMALL, name: value})
    assert not any(tmp_path.iterdir())


def ridge_identification(root: Path, subject: int, n_train: int, alpha: float = 10.0) -> float:
    """2-way identification of averaged test betas from ridge predictions on the true features."""
    with np.load(layout.encoding_model_path(root, "demo")) as model:
        features = model["features"].astype(np.float64)
    data = load_pickle(pickle_file(root, subject))
    y_train = data["train_data_allvoxel"].mean(axis=1)  # (n_train, V)
    y_test = data["test_data_allvoxel"].mean(axis=1)  # (n_test, V)
    x_train, x_test = features[:n_train], features[n_train:]
    weights = np.linalg.solve(x_train.T @ x_train + alpha * np.eye(x_train.shape[1]), x_train.T @ y_train)
    return n_way_identification(x_test @ weights, y_test, n_way=2)


def test_known_model_carries_information(tmp_path):
    make_demo(tmp_path / "signal", n_subjects=1, size=16, n_frames=4)  # default 120 train / 24 test, snr 1
    assert ridge_identification(tmp_path / "signal", 1, 120) > 0.8
    make_demo(tmp_path / "faint", n_subjects=1, n_train=40, n_test=12, size=16, n_frames=4, snr=1e-4)
    assert ridge_identification(tmp_path / "faint", 1, 40) < 0.75, "at almost no signal, identification is near chance"


def test_weights_are_smooth_within_rois_and_tuned_by_roi():
    groups = ["category"] * 14 + ["motion"] * 6 + ["pixel"] * 96
    weights = encoding_weights(0, groups, subject=1)  # (F, V)
    assert weights.shape == (116, 13156) and weights.dtype == np.float32
    slices = dict(roi_slices())
    v1 = weights[:, slices["V1"]]
    neighbours = np.mean([np.corrcoef(v1[:, i], v1[:, i + 1])[0, 1] for i in range(0, 1500, 50)])
    distant = np.mean([np.corrcoef(v1[:, i], v1[:, i + 700])[0, 1] for i in range(0, 800, 50)])
    assert neighbours > 0.9 and abs(distant) < 0.3

    def rms(roi: str, group: str) -> float:
        rows = np.asarray(groups) == group
        return float(np.sqrt((weights[rows][:, slices[roi]] ** 2).mean()))

    assert rms("V1", "pixel") > 2 * rms("V1", "category")
    assert rms("MT", "motion") > 2 * rms("MT", "pixel")
    assert rms("FFC", "category") > 2 * rms("FFC", "motion")
    other = encoding_weights(0, groups, subject=2)
    shared = np.corrcoef(weights.ravel(), other.ravel())[0, 1]
    assert 0.5 < shared < 0.9, "subjects share most of their tuning but not all"
