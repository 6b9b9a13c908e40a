"""download_data.py end to end on a tiny demo, the download path with a fake network, and bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import download_data
from tests.test_download import BMD_PKL, FakeNetwork
from utils import download, layout
from utils.datasets import BMD, DEMO
from utils.indiv import read_indiv, subject_indiv_dir
from utils.prepare import load_prepared
from utils.rois import get_roi_set
from utils.safe_pickle import load_pickle

TINY = ["--n-train", "6", "--n-test", "2", "--size", "32", "--n-frames", "8"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """A tiny demo, made once through the CLI (tests copy it before changing it)."""
    root = tmp_path_factory.mktemp("demo")
    assert download_data.main(["--data-root", str(root), *TINY]) == 0
    return root


def _copy(demo_root, tmp_path):
    shutil.copytree(demo_root, tmp_path / "d")
    return tmp_path / "d"


def test_demo_prepare_indiv_and_back(demo_root, tmp_path, capsys):
    root = _copy(demo_root, tmp_path)
    assert download_data.main(["--data-root", str(root), "--prepare", "--write-indiv"]) == 0
    out = capsys.readouterr().out
    assert "demo sub01: prepared, shape (38, 13156)" in out and "0 NaN trial(s) -> policy 'drop'" in out
    assert "38 file(s) written" in out
    prepared = load_prepared(root, "demo", 1)
    indiv = subject_indiv_dir(root, "demo", 1)
    assert (indiv / "0007_rep9.npy").exists()  # test stimuli continue after the 6 train ones, 10 repeats
    betas, trials = read_indiv(indiv, "demo", data_root=root)
    np.testing.assert_array_equal(betas, prepared.betas)
    assert trials.stimulus == prepared.trials.stimulus
    original = np.array(prepared.betas)

    # A rerun skips finished subjects; --from-indiv rebuilds the prepared layout from the files.
    assert download_data.main(["--data-root", str(root), "--prepare"]) == 0
    assert "skipped (already prepared)" in capsys.readouterr().out
    for name in ("Group41.npy", "Group41_trials.csv", "Group41_prepared.json"):
        (layout.betas_dir(root, "demo", "sub01") / name).unlink()
    assert download_data.main(["--data-root", str(root), "--from-indiv", "--subjects", "1"]) == 0
    rebuilt = load_prepared(root, "demo", 1)
    np.testing.assert_array_equal(rebuilt.betas, original)
    assert list(rebuilt.trials.split) == list(prepared.trials.split)
    manifest = json.loads((root / "betas_cifti_demo" / "manifest.json").read_text())
    assert manifest["stage"] == "prepare" and manifest["counts"]["subjects_ok"] == 1


def test_one_bad_pickle_fails_clearly_and_the_rest_is_prepared(demo_root, tmp_path, capsys):
    root = _copy(demo_root, tmp_path)
    pkl = layout.pickle_path(root, "demo", "sub02", "Group41", DEMO.suffix)
    pkl.write_bytes(pkl.read_bytes()[:1000])  # truncated
    assert download_data.main(["--data-root", str(root), "--prepare"]) == 1
    captured = capsys.readouterr()
    assert "FAILED demo sub02" in captured.err and str(pkl) in captured.err
    assert "1 subject(s) done, 1 failed" in captured.out
    assert load_prepared(root, "demo", 1).betas.shape == (38, 13156)
    assert not layout.prepared_array_path(root, "demo", "sub02", "Group41").exists()


def test_missing_inputs_name_the_command(tmp_path, capsys):
    assert download_data.main(["--data-root", str(tmp_path), "--dataset", "bmd", "--subjects", "1", "--prepare"]) == 1
    root = f"--data-root {tmp_path}"  # the suggested commands act on the data root given, not on ./data
    assert f"python download_data.py --dataset bmd {root} --subjects 1" in capsys.readouterr().err
    assert download_data.main(["--data-root", str(tmp_path), "--dataset", "had", "--prepare"]) == 2
    assert f"run `python download_data.py --dataset had {root}` first" in capsys.readouterr().err
    assert download_data.main(["--data-root", str(tmp_path), "--write-indiv"]) == 2
    assert f"python download_data.py --dataset demo {root} --prepare" in capsys.readouterr().err


def test_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        download_data.main(["--dataset", "nsd"])
    assert exc.value.code == 2 and "invalid choice: 'nsd'" in capsys.readouterr().err
    assert download_data.main(["--data-root", str(tmp_path), "--dataset", "bmd", "--subjects", "12", "--prepare"]) == 2
    assert "Unknown subject(s) [12]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        download_data.main(["--prepare", "--from-indiv"])
    with pytest.raises(SystemExit):
        download_data.main(["--n-train", "0"])


def test_demo_subjects_outside_the_demo_are_refused_before_any_work(tmp_path, capsys):
    root = tmp_path / "d"
    for subjects, extra, message in (
        (["0"], [], "--subjects 0: the demo has subjects 1..2 (--n-subjects 2)"),
        (["9"], [], "--subjects 9: the demo has subjects 1..2 (--n-subjects 2)"),
        (["1", "4", "sub-05"], ["--n-subjects", "3"], "--subjects 4 sub-05: the demo has subjects 1..3 (--n-subjects 3)"),
        (["9"], ["--dry-run"], "--subjects 9: the demo has subjects 1..2 (--n-subjects 2)"),
    ):
        assert download_data.main(["--data-root", str(root), *TINY, *extra, "--subjects", *subjects]) == 2
        assert message in capsys.readouterr().err
        assert not root.exists()  # nothing was written
    assert download_data.main(["--data-root", str(root), *TINY, "--subjects", "2", "--dry-run"]) == 0
    assert "would write the demo (2 subjects" in capsys.readouterr().out


def test_download_bmd_with_fake_network(tmp_path, monkeypatch, capsys):
    folder = download.DRIVE_FOLDERS["pickles"]
    annotations = f"{download.OPENNEURO_S3}/{BMD.annotations_key}"
    net = FakeNetwork(
        folders={folder: [download.DriveEntry("p1", f"sub-01/{BMD_PKL}"), download.DriveEntry("p2", f"sub-02/{BMD_PKL}")]},
        drive={"p1": b"pickle one"}, http={annotations: b'{"0001": {}}'}, fail={"p1": 1},
    )
    monkeypatch.setattr(download, "Network", lambda **kw: net)
    argv = ["--data-root", str(tmp_path), "--dataset", "bmd", "--subjects", "1", "--backoff", "0"]

    assert download_data.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would-fetch" in out and BMD_PKL in out and "BY HAND" in out and "terms of use" in out
    assert list(tmp_path.iterdir()) == []

    assert download_data.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 downloaded" in out
    assert layout.pickle_path(tmp_path, "bmd", "sub01", "Group41", BMD.suffix).read_bytes() == b"pickle one"
    assert (tmp_path / "metadata_bmd" / "annotations.json").exists()
    assert set(json.loads(layout.downloads_manifest_path(tmp_path).read_text())["files"]) == {
        f"betas_cifti_bmd/sub01/prepared_allvoxel_pkl/{BMD_PKL}", "metadata_bmd/annotations.json",
    }
    assert download_data.main(argv) == 0
    assert "2 present" in capsys.readouterr().out

    assert download_data.main([*argv[:-3], "3", "--backoff", "0"]) == 1  # subject 3 is not in the folder
    assert "MISSING: bmd subject 3" in capsys.readouterr().err



def test_demo_prepare_another_roi_set_and_its_indiv_files(demo_root, tmp_path, capsys):
    root = _copy(demo_root, tmp_path)
    n = get_roi_set("V1+V2").size
    assert download_data.main(["--data-root", str(root), "--prepare", "--roi-set", "V1+V2", "--subjects", "1"]) == 0
    assert f"demo sub01: prepared, shape (38, {n})" in capsys.readouterr().out
    prepared = load_prepared(root, "demo", 1, "V1+V2")
    data = load_pickle(layout.pickle_path(root, "demo", "sub01", DEMO.pickle_roi_set, DEMO.suffix))
    columns = np.flatnonzero(np.isin(get_roi_set(DEMO.pickle_roi_set), get_roi_set("V1+V2")))
    np.testing.assert_array_equal(prepared.betas[:18], data["train_data_allvoxel"][..., columns].reshape(18, n))
    manifest = json.loads((root / "betas_cifti_demo" / "manifest.json").read_text())
    assert manifest["inputs"]["sub01"].endswith(f"{DEMO.pickle_roi_set}{DEMO.suffix}.pkl")

    # --from-indiv builds V1+V2 from the Group41 indiv files when V1+V2 has none of its own.
    assert download_data.main(["--data-root", str(root), "--prepare", "--write-indiv", "--subjects", "1"]) == 0
    capsys.readouterr()
    for path in layout.betas_dir(root, "demo", "sub01").glob("V1+V2*"):
        path.unlink()
    assert download_data.main(["--data-root", str(root), "--from-indiv", "--roi-set", "V1+V2", "--subjects", "1"]) == 0
    np.testing.assert_array_equal(load_prepared(root, "demo", 1, "V1+V2").betas, prepared.betas)

    assert download_data.main(["--data-root", str(root), "--prepare", "--roi-set", "V1+A1", "--subjects", "1"]) == 1
    err = capsys.readouterr().err
    assert "roi_set='V1+A1'" in err and "['A1']" in err
