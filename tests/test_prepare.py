"""The prepare step: pickle -> contiguous float32 array + trials table."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from utils import datasets as ds
from utils import layout, prepare
from utils.rois import get_roi_set

V = 13156


def _write_pickle(root, dataset, subject, data, folder=None):
    spec = ds.get_spec(dataset)
    path = layout.pickle_path(root, dataset, folder or ds.subject_folder(subject), "Group41", spec.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


def _demo_data(n_train=5, n_test=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_data_allvoxel": rng.standard_normal((n_train, 3, V)),
        "test_data_allvoxel": rng.standard_normal((n_test, 10, V)),
        "roi_indices_hcp": get_roi_set("Group41").copy(),
    }


def test_prepare_demo_layout_and_values(tmp_path):
    data = _demo_data()
    _write_pickle(tmp_path, "demo", 1, data)
    summary = prepare.prepare_subject(tmp_path, "demo", 1)
    assert summary["shape"] == [5 * 3 + 2 * 10, V] and not summary["skipped"]
    assert summary["trials"] == {"train": 15, "test": 20} and summary["stimuli"] == {"train": 5, "test": 2}
    p = prepare.load_prepared(tmp_path, "demo", 1)
    assert isinstance(p.betas, np.memmap) and p.betas.dtype == np.float32
    assert p.trials.stimulus[:4] == ["0001", "0001", "0001", "0002"]
    assert p.trials.repeat[:4].tolist() == [0, 1, 2, 0]
    assert p.trials.stimulus[15] == "0006" and p.trials.split[15] == "test"
    np.testing.assert_allclose(p.betas[4], data["train_data_allvoxel"][1, 1].astype(np.float32))
    np.testing.assert_allclose(p.betas[15 + 13], data["test_data_allvoxel"][1, 3].astype(np.float32))
    stimuli, x = prepare.average_repeats(p, "test")
    assert stimuli == ["0006", "0007"]
    np.testing.assert_allclose(x[1], data["test_data_allvoxel"][1].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_rerun_skips_and_overwrite_redoes(tmp_path):
    _write_pickle(tmp_path, "demo", 2, _demo_data(), folder="sub-02")
    assert not prepare.prepare_subject(tmp_path, "demo", 2)["skipped"]
    assert (tmp_path / "betas_cifti_demo" / "sub-02" / "Group41.npy").exists()
    assert prepare.prepare_subject(tmp_path, "demo", 2)["skipped"]
    _write_pickle(tmp_path, "demo", 2, _demo_data(n_train=4, seed=1), folder="sub-02")
    redone = prepare.prepare_subject(tmp_path, "demo", 2, overwrite=True)
    assert not redone["skipped"] and redone["shape"][0] == 4 * 3 + 20


def test_nan_policy_drop_and_zero(tmp_path):
    data = _demo_data()
    data["train_data_allvoxel"][1, 2, :] = np.nan
    data["test_data_allvoxel"][0, 0, 7] = np.nan
    _write_pickle(tmp_path, "demo", 1, data)
    dropped = prepare.prepare_subject(tmp_path, "demo", 1)
    assert dropped["nan_trials"] == 2 and dropped["dropped_trials"] == 2
    assert dropped["nan_trials_by_split"] == {"train": 1, "test": 1}
    p = prepare.load_prepared(tmp_path, "demo", 1)
    assert len(p.trials) == 33 and not np.isnan(p.betas).any()
    assert [r for s, r in zip(p.trials.stimulus, p.trials.repeat, strict=True) if s == "0002"] == [0, 1]
    zero = prepare.prepare_subject(tmp_path, "demo", 1, overwrite=True, nan_policy="zero")
    assert zero["dropped_trials"] == 0 and zero["shape"][0] == 35
    assert prepare.load_prepared(tmp_path, "demo", 1).betas[15, 7] == 0
    with pytest.raises(ValueError, match="nan_policy='mean'"):
        prepare.prepare_subject(tmp_path, "demo", 1, nan_policy="mean")


def test_had_real_size_pickle_split_and_names(tmp_path):
    rng = np.random.default_rng(0)
    order = []
    for c in range(180):
        order += [f"v_Class {c}_id_yt{c}-{k}_start_{k}.0_label_1" for k in range(4)]
    order = order[::-1]
    data = {"data_allvoxel": rng.standard_normal((720, 1, V)).astype(np.float32), "stim_order": order,
            "roi_indices_hcp": get_roi_set("Group41").copy()}
    _write_pickle(tmp_path, "had", 7, data)
    summary = prepare.prepare_subject(tmp_path, "had", 7)
    assert summary["trials"] == {"train": 540, "test": 180}
    p = prepare.load_prepared(tmp_path, "had", 7)
    assert p.trials.stimulus[0] == f"Class 179/{order[0]}" and p.trials.split[0] == "test"
    assert p.trials.split[1] == "train"


def test_cc2017_trial_table_repeats_and_padding():
    names = ["seg1_begin-2_end-4", "seg1_begin-4_end-6", "seg1_begin-2_end-4", "seg1_begin-4_end-6"]
    data = {"train_data_allvoxel": np.zeros((4, 3)), "train_stim_order": names,
            "test_data_allvoxel": np.zeros((2, 3)), "test_stim_order": ["test2_begin-0_end-2"] * 2}
    blocks, trials = prepare.trial_table(data, ds.CC2017)
    assert blocks == [("train_data_allvoxel", 0, 4), ("test_data_allvoxel", 4, 2)]
    assert trials.stimulus[:2] == ["seg1_begin-002_end-004", "seg1_begin-004_end-006"]
    assert trials.repeat.tolist() == [0, 0, 1, 1, 0, 1]
    assert trials.split.tolist() == ["train"] * 4 + ["test"] * 2


def test_cc2017_expected_rows_short_run():
    test_array = ds.CC2017.arrays[1]
    assert prepare.expected_rows(ds.CC2017, test_array, 1) == 11990
    assert prepare.expected_rows(ds.CC2017, test_array, 3) == 11985
    assert prepare.expected_rows(ds.CC2017, ds.CC2017.arrays[0], 3) == 8604


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("test_data_allvoxel"), r"missing key\(s\) \['test_data_allvoxel'\]"),
        (lambda d: d.update(train_data_allvoxel=np.zeros((5, 3, 100))), r"V=13156, found shape \(5, 3, 100\)"),
        (lambda d: d.update(train_data_allvoxel=np.zeros((5, 2, V))), "3 repeats, found 2"),
        (lambda d: d.update(roi_indices_hcp=np.arange(V)), "disagrees with the Group41 rule"),
    ],
)
def test_bad_pickles_are_named_and_nothing_is_written(tmp_path, mutate, message):
    data = _demo_data()
    mutate(data)
    path = _write_pickle(tmp_path, "demo", 1, data)
    with pytest.raises((KeyError, ValueError), match=message) as info:
        prepare.prepare_subject(tmp_path, "demo", 1)
    assert str(path) in str(info.value)
    assert not list(path.parent.parent.glob("Group41*"))


def test_bmd_row_count_is_checked(tmp_path):
    data = _demo_data()
    path = _write_pickle(tmp_path, "bmd", 1, data)
    with pytest.raises(ValueError, match="should have 1000 rows for bmd subject 1, found 5") as info:
        prepare.prepare_subject(tmp_path, "bmd", 1)
    assert str(path) in str(info.value)


def test_missing_pickle_names_download_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"download_data.py --dataset bmd --data-root {tmp_path} --subjects 4"):
        prepare.prepare_subject(tmp_path, "bmd", 4)
    with pytest.raises(FileNotFoundError, match=r"--prepare"):
        prepare.load_prepared(tmp_path, "bmd", 4)


def test_interrupted_prepare_is_not_taken_as_complete(tmp_path, monkeypatch):
    _write_pickle(tmp_path, "demo", 1, _demo_data())

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_subject(tmp_path, "demo", 1)
    assert not prepare.is_prepared(tmp_path, "demo", 1)
    folder = tmp_path / "betas_cifti_demo" / "sub01"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    assert not prepare.prepare_subject(tmp_path, "demo", 1)["skipped"]
    assert prepare.is_prepared(tmp_path, "demo", 1)


def test_truncated_array_is_detected(tmp_path):
    _write_pickle(tmp_path, "demo", 1, _demo_data())
    prepare.prepare_subject(tmp_path, "demo", 1)
    array = tmp_path / "betas_cifti_demo" / "sub01" / "Group41.npy"
    array.write_bytes(array.read_bytes()[:1000])
    assert not prepare.is_prepared(tmp_path, "demo", 1)
    assert not prepare.prepare_subject(tmp_path, "demo", 1)["skipped"]


def test_interrupted_overwrite_with_same_shape_is_not_taken_as_complete(tmp_path, monkeypatch):
    _write_pickle(tmp_path, "demo", 1, _demo_data(seed=0))
    prepare.prepare_subject(tmp_path, "demo", 1)
    _write_pickle(tmp_path, "demo", 1, _demo_data(seed=1))  # same shape, new values

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_subject(tmp_path, "demo", 1, overwrite=True)
    assert not prepare.is_prepared(tmp_path, "demo", 1)  # the old summary no longer marks it complete
    monkeypatch.undo()
    assert not prepare.prepare_subject(tmp_path, "demo", 1)["skipped"]


def test_prepare_another_roi_set_selects_its_vertices_in_rule_order(tmp_path):
    data = _demo_data()
    data["train_data_allvoxel"][0, 0, -1] = np.nan  # a NaN outside V1+V2 (last Group41 vertex, VVC) drops nothing
    _write_pickle(tmp_path, "demo", 1, data)
    summary = prepare.prepare_subject(tmp_path, "demo", 1, roi_set="V1+V2")
    n = get_roi_set("V1+V2").size
    assert summary["roi_set"] == "V1+V2" and summary["shape"] == [35, n] and summary["nan_trials"] == 0
    group41 = get_roi_set("Group41")
    columns = np.flatnonzero(np.isin(group41, get_roi_set("V1+V2")))  # V1 then V2 in Group41, as in the rule
    np.testing.assert_array_equal(group41[columns], get_roi_set("V1+V2"))
    p = prepare.load_prepared(tmp_path, "demo", 1, "V1+V2")
    assert p.roi_set == "V1+V2" and p.betas.shape == (35, n)
    np.testing.assert_array_equal(p.betas[:15], data["train_data_allvoxel"][..., columns].reshape(15, n).astype(np.float32))
    np.testing.assert_array_equal(p.betas[15:], data["test_data_allvoxel"][..., columns].reshape(20, n).astype(np.float32))
    folder = tmp_path / "betas_cifti_demo" / "sub01"
    assert {f.name for f in folder.iterdir()} >= {"V1+V2.npy", "V1+V2_trials.csv", "V1+V2_prepared.json"}
    assert not (folder / "Group41.npy").exists() and not prepare.is_prepared(tmp_path, "demo", 1)
    # The order of the names is the order of the columns.
    prepare.prepare_subject(tmp_path, "demo", 1, roi_set="V2+V1")
    v2 = prepare.load_prepared(tmp_path, "demo", 1, "V2+V1").betas
    np.testing.assert_array_equal(v2[:, : get_roi_set("V2").size], p.betas[:, get_roi_set("V1").size :])


def test_roi_set_outside_the_pickle_is_refused_naming_it(tmp_path):
    path = _write_pickle(tmp_path, "demo", 1, _demo_data())
    with pytest.raises(ValueError, match=r"roi_set='V1\+A1'.*lacks ROI\(s\) \['A1'\]") as info:
        prepare.prepare_subject(tmp_path, "demo", 1, roi_set="V1+A1")
    assert str(path) in str(info.value)
    assert not list(path.parent.parent.glob("V1*"))
    with pytest.raises(ValueError, match="Unknown roi_set='NOPE'"):
        prepare.prepare_subject(tmp_path, "demo", 1, roi_set="NOPE")
