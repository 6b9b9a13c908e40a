"""The individual-file layout: write, read back, every naming variant and the bad folders."""
from __future__ import annotations

import json

import numpy as np
import pytest

from utils.datasets import N_GROUP41
from utils.indiv import parse_indiv_name, read_indiv, scan_indiv, subject_indiv_dir, write_indiv, write_prepared_from_indiv
from utils.prepare import Trials, load_prepared, summary_text

V = 7  # vertices per vector in these tests


def _trials(rows: list[tuple[str, int, str]]) -> Trials:
    return Trials([r[0] for r in rows], np.asarray([r[1] for r in rows]), np.asarray([r[2] for r in rows]))


def _bmd_like() -> tuple[np.ndarray, Trials]:
    rows = [(f"{s:04d}", k, "train") for s in (1, 2) for k in range(3)]
    rows += [(f"{s:04d}", k, "test") for s in (1001, 1002) for k in range(2)]
    betas = np.random.default_rng(0).standard_normal((len(rows), V)).astype(np.float32)
    return betas, _trials(rows)


def test_round_trip_bmd_keeps_rows_and_values(tmp_path):
    betas, trials = _bmd_like()
    counts = write_indiv((betas, trials), tmp_path / "indiv", progress=False)
    assert counts == {"written": 10, "skipped": 0, "directory": str(tmp_path / "indiv")}
    assert sorted(p.name for p in (tmp_path / "indiv").iterdir())[:3] == ["0001_rep0.npy", "0001_rep1.npy", "0001_rep2.npy"]
    back, back_trials = read_indiv(tmp_path / "indiv", "bmd", n_vertices=V)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, betas)
    assert back_trials.stimulus == trials.stimulus
    np.testing.assert_array_equal(back_trials.repeat, trials.repeat)
    np.testing.assert_array_equal(back_trials.split, trials.split)


def test_rerun_keeps_complete_files_unless_overwrite(tmp_path):
    betas, trials = _bmd_like()
    write_indiv((betas, trials), tmp_path, progress=False)
    assert write_indiv((betas, trials), tmp_path, progress=False)["skipped"] == 10
    assert write_indiv((betas * 2, trials), tmp_path, overwrite=True, progress=False)["written"] == 10
    np.testing.assert_array_equal(np.load(tmp_path / "0001_rep0.npy"), betas[0] * 2)


def test_bmd_numbered_naming_is_read(tmp_path):
    for stim, k in (("0003", 0), ("0003", 1), ("1001", 0)):
        np.save(tmp_path / f"{stim}_{k}.npy", np.full(V, int(stim) + k, dtype=np.float64))
    betas, trials = read_indiv(tmp_path, "bmd", n_vertices=V)
    assert trials.stimulus == ["0003", "0003", "1001"]
    assert list(trials.repeat) == [0, 1, 0]
    assert list(trials.split) == ["train", "train", "test"]
    assert betas[:, 0].tolist() == [3, 4, 1001]


def test_names_are_matched_whole_never_by_substring():
    assert parse_indiv_name("bmd", "0001_rep2.npy") == ("0001", 2, "rep")
    assert parse_indiv_name("bmd", "0001_2.npy") == ("0001", 2, "number")
    assert parse_indiv_name("bmd", "10001_rep0.npy") is None  # contains 0001 but is not 0001
    assert parse_indiv_name("bmd", "x0001_rep0.npy") is None
    assert parse_indiv_name("bmd", "0001_rep0.npy.bak") is None
    assert parse_indiv_name("cc2017", "seg1_begin-2_end-4_3.npy") is None  # NNNN_<k> naming is BMD's only
    assert parse_indiv_name("cc2017", "seg1_begin-2_end-4_rep3.npy") == ("seg1_begin-002_end-004", 3, "rep")


def test_mixed_naming_is_refused(tmp_path):
    np.save(tmp_path / "0001_rep0.npy", np.zeros(V))
    np.save(tmp_path / "0002_0.npy", np.zeros(V))
    with pytest.raises(ValueError, match="mixes"):
        read_indiv(tmp_path, "bmd", n_vertices=V)


def test_unknown_files_are_named(tmp_path):
    np.save(tmp_path / "0001_rep0.npy", np.zeros(V))
    np.save(tmp_path / "notes.npy", np.zeros(V))
    with pytest.raises(ValueError, match="notes.npy"):
        read_indiv(tmp_path, "bmd", n_vertices=V)


def test_wrong_vector_shape_names_file_expected_and_found(tmp_path):
    np.save(tmp_path / "0001_rep0.npy", np.zeros(V))
    np.save(tmp_path / "0001_rep1.npy", np.zeros(V + 1))
    with pytest.raises(ValueError, match=r"0001_rep1\.npy: expected a vector of shape \(7,\), found \(8,\)"):
        read_indiv(tmp_path, "bmd", n_vertices=V)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="--write-indiv"):
        read_indiv(tmp_path / "absent", "bmd")
    with pytest.raises(FileNotFoundError, match="no trial files"):
        read_indiv(tmp_path, "bmd")


def test_cc2017_unpadded_names_are_padded_and_naturally_ordered(tmp_path):
    for name in ("seg10_begin-2_end-4", "seg2_begin-2_end-4", "test1_begin-002_end-004"):
        np.save(tmp_path / f"{name}_rep0.npy", np.zeros(V))
    _, trials = read_indiv(tmp_path, "cc2017", n_vertices=V)
    assert trials.stimulus == ["seg2_begin-002_end-004", "seg10_begin-002_end-004", "test1_begin-002_end-004"]
    assert list(trials.split) == ["train", "train", "test"]


def test_cc2017_padded_and_unpadded_copies_are_ambiguous(tmp_path):
    np.save(tmp_path / "seg1_begin-2_end-4_rep0.npy", np.zeros(V))
    np.save(tmp_path / "seg1_begin-002_end-004_rep0.npy", np.zeros(V))
    with pytest.raises(ValueError, match="stored twice"):
        scan_indiv(tmp_path, "cc2017")


def test_had_class_subfolders_with_spaces(tmp_path):
    names = ["Drum corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1", "Drum corps/v_Drum corps_id_a-b_c_start_2.0_label_1"]
    trials = _trials([(names[0], 0, "test"), (names[1], 0, "train")])
    betas = np.arange(2 * V, dtype=np.float32).reshape(2, V)
    write_indiv((betas, trials), tmp_path, progress=False)
    assert (tmp_path / "Drum corps" / "v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1_rep0.npy").exists()
    splits = {names[0]: "test", names[1]: "train"}
    back, back_trials = read_indiv(tmp_path, "had", n_vertices=V, splits=splits)
    assert back_trials.stimulus == [names[1], names[0]]  # train first
    np.testing.assert_array_equal(back, betas[::-1])


def test_had_class_folder_spelled_with_underscores():
    name = "Drum_corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1_rep0.npy"
    assert parse_indiv_name("had", name) == ("Drum corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1", 0, "rep")
    assert parse_indiv_name("had", "Laying tile/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1_rep0.npy") is None


def test_had_flat_files_and_missing_split(tmp_path):
    np.save(tmp_path / "v_Laying tile_id_aB5xErksFkI_start_11.0_label_1_rep0.npy", np.zeros(V))
    entries = scan_indiv(tmp_path, "had")
    assert entries[0][0] == "Laying tile/v_Laying tile_id_aB5xErksFkI_start_11.0_label_1"
    with pytest.raises(ValueError, match="per subject"):
        read_indiv(tmp_path, "had", n_vertices=V)
    with pytest.raises(ValueError, match="no train/test split"):
        read_indiv(tmp_path, "had", n_vertices=V, splits={})


def test_duplicate_trial_in_table_is_refused(tmp_path):
    trials = _trials([("0001", 0, "train"), ("0001", 0, "train")])
    with pytest.raises(ValueError, match="appears twice"):
        write_indiv((np.zeros((2, V), np.float32), trials), tmp_path, progress=False)


def test_had_splits_come_from_the_subject_split_lists(tmp_path):
    test_clip = "Drum corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1"
    train_clip = "Drum corps/v_Drum corps_id_a-b_c_start_2.0_label_1"
    meta = tmp_path / "metadata_had"
    meta.mkdir()
    (meta / "had_train_set_per_subject.json").write_text(json.dumps({"sub02": [train_clip]}))
    (meta / "had_test_set_per_subject.json").write_text(json.dumps({"sub02": [test_clip.replace("Drum corps", "Drum_corps", 1)]}))
    write_indiv((np.zeros((2, V), np.float32), _trials([(test_clip, 0, "test"), (train_clip, 0, "train")])), tmp_path / "i", progress=False)
    _, trials = read_indiv(tmp_path / "i", "had", n_vertices=V, data_root=tmp_path, subject=2)
    assert trials.stimulus == [train_clip, test_clip] and list(trials.split) == ["train", "test"]
    with pytest.raises(ValueError, match="no train/test split"):
        read_indiv(tmp_path / "i", "had", n_vertices=V, data_root=tmp_path, subject=3)


def test_from_indiv_drops_nan_trials_and_marks_completion_last(tmp_path):
    betas, trials = _bmd_like()
    betas = np.pad(betas, ((0, 0), (0, N_GROUP41 - V)))  # (10, 13156)
    betas[4, 3] = np.nan
    folder = subject_indiv_dir(tmp_path, "bmd", 1)
    write_indiv((betas, trials), folder, progress=False)
    summary = write_prepared_from_indiv(tmp_path, "bmd", 1)
    assert summary["nan_trials"] == 1 and summary["dropped_trials"] == 1 and summary["shape"] == [9, N_GROUP41]
    prepared = load_prepared(tmp_path, "bmd", 1)
    assert not np.isnan(prepared.betas).any()
    assert ("0002", 1) not in list(zip(prepared.trials.stimulus, prepared.trials.repeat, strict=True))
    assert write_prepared_from_indiv(tmp_path, "bmd", 1)["skipped"] is True


def test_from_indiv_skip_returns_the_summary(tmp_path):
    betas, trials = _bmd_like()
    betas = np.pad(betas, ((0, 0), (0, N_GROUP41 - V)))  # (10, 13156)
    write_indiv((betas, trials), subject_indiv_dir(tmp_path, "bmd", 1), progress=False)
    first = write_prepared_from_indiv(tmp_path, "bmd", 1)
    again = write_prepared_from_indiv(tmp_path, "bmd", 1)
    assert again["skipped"] is True and again["shape"] == first["shape"] == [10, N_GROUP41]
    assert "skipped (already prepared)" in summary_text(again)
