"""Dataset specs: subjects, naming, splits (checked against the real metadata in ../shared)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from utils import datasets as ds


def test_get_spec_and_unknown_dataset():
    assert ds.get_spec("bmd").suffix == "_betas-GLMsingle_type-typed_z=1"
    assert ds.get_spec("had").suffix == "_betas-GLMsingle_type-typeb_z=1"
    assert ds.get_spec("cc2017").suffix == "_estimates-TSTrialEstimates_z=1"
    with pytest.raises(ValueError, match="Unknown dataset='nsd'"):
        ds.get_spec("nsd")


@pytest.mark.parametrize("text", ["1", "01", "sub01", "sub-01", "sub1", 1])
def test_parse_subject_forms(text):
    assert ds.parse_subject(text) == 1


def test_bad_and_unknown_subjects():
    with pytest.raises(ValueError, match="Cannot read subject"):
        ds.parse_subject("subject_one")
    with pytest.raises(ValueError, match=r"Unknown subject\(s\) \[4\]"):
        ds.check_subjects(ds.CC2017, ["sub-04"])
    assert ds.check_subjects(ds.BMD, None) == list(range(1, 11))


def test_subject_folder_prefers_existing_dash_form(tmp_path):
    assert ds.find_subject_folder(tmp_path, "bmd", 3) == "sub03"
    (tmp_path / "betas_cifti_bmd" / "sub-03").mkdir(parents=True)
    assert ds.find_subject_folder(tmp_path, "bmd", 3) == "sub-03"


def test_bmd_rows_and_demo_test_numbering():
    train, test = ds.BMD.arrays
    assert ds.row_stimuli(ds.BMD, train, 1000, None)[-1] == "1000"
    assert ds.row_stimuli(ds.BMD, test, 102, None)[0] == "1001"
    assert ds.row_stimuli(ds.BMD, test, 102, None)[-1] == "1102"
    assert ds.row_stimuli(ds.DEMO, ds.DEMO.arrays[1], 2, None, n_train_rows=120) == ["0121", "0122"]


def test_cc2017_names_padding_and_counts():
    assert ds.pad_cc2017("seg1_begin-2_end-4") == "seg1_begin-002_end-004"
    assert ds.pad_cc2017("test2_begin-000_end-002") == "test2_begin-000_end-002"
    with pytest.raises(ValueError, match="Not a CC2017 clip name"):
        ds.pad_cc2017("seg1-2-4")
    train, test = ds.cc2017_clip_names("train"), ds.cc2017_clip_names("test")
    assert len(train) == 4302 and len(test) == 1199
    assert train[0] == "seg1_begin-002_end-004" and "test2_begin-000_end-002" in test


def test_cc2017_names_match_real_split_files(shared_data):
    meta = shared_data / "metadata" / "metadata_cc2017"
    for split in ("train", "test"):
        real = json.loads((meta / f"cc2017_{split}_set_video_paths.json").read_text())
        names = {p.rsplit("/", 1)[-1].removesuffix(".mp4") for p in real}
        assert names == set(ds.cc2017_clip_names(split))


def test_had_names_class_and_split_rule():
    name = "v_Drum corps_id_0Qo8-zN_J460_start_28.0_label_1"
    assert ds.had_class(name) == "Drum corps"
    assert ds.had_stimulus(name) == f"Drum corps/{name}"
    assert ds.match_key("had", name) == ds.match_key("had", name.replace("Drum corps", "Drum_corps"))
    order = ["v_A b_id_1", "v_A b_id_2", "v_C_id_3", "v_A b_id_4", "v_C_id_5"]
    assert ds.had_split(order) == ["test", "train", "test", "train", "train"]


def test_had_split_reproduces_real_per_subject_lists(shared_data):
    meta = shared_data / "metadata" / "metadata_had"
    train = json.loads((meta / "had_train_set_per_subject.json").read_text())
    test = json.loads((meta / "had_test_set_per_subject.json").read_text())
    for subject in list(train)[:3]:
        assert len(train[subject]) == 540 and len(test[subject]) == 180
        classes = {ds.had_class(n) for n in test[subject]}
        assert len(classes) == 180
        # a stim_order with each class's test clip first gives back exactly the real split
        order = test[subject] + train[subject]
        splits = ds.had_split(order)
        assert splits[:180] == ["test"] * 180 and set(splits[180:]) == {"train"}


def test_bmd_split_matches_real_lists(shared_data):
    meta = shared_data / "metadata" / "metadata_bmd"
    for split in ("train", "test"):
        real = json.loads((meta / f"bmd_{split}_set_video_paths.json").read_text())
        names = [str(p).rsplit("/", 1)[-1].removesuffix(".mp4") for p in real]
        assert sorted(names) == ds.list_stimuli(ds.BMD, split)


def test_stimulus_paths(tmp_path):
    assert ds.stimulus_path(tmp_path, ds.BMD, "0001") == tmp_path / "stimuli_bmd" / "mp4" / "0001.mp4"
    had = ds.stimulus_path(tmp_path, ds.HAD, "Drum corps/v_Drum corps_id_x_start_1.0_label_1")
    assert had == tmp_path / "stimuli_had" / "Drum corps" / "v_Drum corps_id_x_start_1.0_label_1.mp4"
    assert ds.stimulus_path(tmp_path, ds.CC2017, "seg1_begin-002_end-004").name == "seg1_begin-002_end-004.mp4"


def test_row_stimuli_checks_order_length():
    array = ds.CC2017.arrays[0]
    with pytest.raises(ValueError, match="has 2 names but 'train_data_allvoxel' has 3 rows"):
        ds.row_stimuli(ds.CC2017, array, 3, np.array(["seg1_begin-2_end-4"] * 2))


def test_dataset_rules_are_spec_fields():
    assert [s.name for s in ds.DATASETS.values() if s.has_annotations] == ["bmd", "demo"]
    assert [s.name for s in ds.DATASETS.values() if s.synthetic] == ["demo"]
    assert ds.has_annotations("bmd") and not ds.has_annotations("had")
    assert ds.download_command(ds.BMD, 4) == "python download_data.py --dataset bmd --subjects 4"
    assert ds.download_command(ds.DEMO, 4) == "python download_data.py --dataset demo"
    assert ds.expected_rows(ds.HAD, ds.HAD.arrays[0], 1) == 720
    assert ds.expected_rows(ds.CC2017, ds.CC2017.arrays[1], 3) == 11985
    assert ds.expected_rows(ds.DEMO, ds.DEMO.arrays[1], 1) is None
    assert ds.canonical_stimulus("cc2017", "seg1_begin-2_end-4") == "seg1_begin-002_end-004"
    with pytest.raises(ValueError, match="four digits"):
        ds.canonical_stimulus("bmd", "10001")
    assert ds.check_subjects(ds.DEMO, [5]) == [5]  # the demo's subject count is a flag


def test_one_split_rule_lists_and_classifies():
    for spec in (ds.BMD, ds.CC2017):
        lists = ds.split_lists(spec)
        names = lists["train"][:3] + lists["test"][-3:]
        assert ds.stimulus_splits(spec, names) == {n: "train" if n in lists["train"] else "test" for n in names}
        assert ds.list_stimuli(spec, "all") == lists["train"] + lists["test"]
    assert ds.stimulus_splits(ds.BMD, ["1103"]) == {"1103": ""}
    with pytest.raises(ValueError, match="per subject"):
        ds.stimulus_splits(ds.HAD, ["Drum corps/v_Drum corps_id_x_start_1.0_label_1"])


def test_had_split_lists_per_subject_and_union(tmp_path):
    meta = tmp_path / "metadata_had"
    meta.mkdir()
    a, b = "v_A b_id_1_start_1.0_label_1", "v_A b_id_2_start_1.0_label_1"
    (meta / "had_train_set_per_subject.json").write_text(json.dumps({"sub01": [a], "sub-02": [b]}))
    (meta / "had_test_set_per_subject.json").write_text(json.dumps({"sub01": [b], "sub-02": [a]}))
    assert ds.split_lists(ds.HAD, tmp_path, 2) == {"train": [f"A b/{b}"], "test": [f"A b/{a}"]}
    assert ds.list_stimuli(ds.HAD, "train", tmp_path) == [f"A b/{a}", f"A b/{b}"]
    assert ds.stimulus_splits(ds.HAD, [f"A_b/{a}"], tmp_path, 1) == {f"A_b/{a}": "train"}
    with pytest.raises(FileNotFoundError, match="per subject"):
        ds.list_stimuli(ds.HAD, "test", tmp_path / "absent")


def test_no_dataset_name_branches_outside_datasets_py():
    repo = Path(__file__).resolve().parents[1]
    branch = re.compile(r"""(==|!=) *["'](bmd|had|cc2017|demo)["']|(not )?in \(["'](bmd|had|cc2017|demo)["']""")
    files = [p for p in [*repo.glob("*.py"), *(repo / "utils").glob("*.py"), *(repo / "models").glob("*.py")]
             if p.name != "datasets.py"]
    found = [  # "demo" is also a model preset's name: branches on the preset are not dataset branches
        f"{p.name}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line) and "preset" not in line
    ]
    assert found == []
