"""Names are not paths, errors are one line (issue 20): every name that becomes a path is checked, nothing
is written or deleted outside its stage folder, bad inputs are refused before work in one line, and failed
runs leave no half state. Each traversal test puts a sentinel outside the data root and checks it is untouched."""
from __future__ import annotations

import csv
import errno
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evaluate
import extract_targets_zeroscope
import reconstruct_zeroscope
import run_pipeline
import train_mbm
from tests.test_reconstruct import FAST, LATENT, RUN, write_predictions
from utils import cli, datasets, layout, locks, provenance
from utils.io import ArtifactError, save_npy
from utils.prepare import load_prepared, prepare_subject
from utils.synthetic import make_demo

REPO = Path(__file__).resolve().parents[1]
HOSTILE = [
    "..", ".", "", "../x", "a/../../b", "/etc/passwd", "/", "a/b", "a\\b", "a\x00b", "x" * 300, ".hidden", "run name",
    "ünïcode", "run\n", "-flag", "a:b", "~", "$HOME", "*", "a;rm -rf", "\u202e", "١٢٣٤",
]


@pytest.fixture()
def world(tmp_path):
    """A small prepared demo under tmp/data, and a sentinel file outside it."""
    root = tmp_path / "data"
    make_demo(root, n_subjects=1, n_train=8, n_test=4, size=16, n_frames=4)
    prepare_subject(root, "demo", 1)
    sentinel = tmp_path / "elsewhere" / "0121.npy"
    sentinel.parent.mkdir()
    sentinel.write_bytes(b"sentinel")
    return root, sentinel


def in_subprocess(script: str, *argv: str) -> subprocess.CompletedProcess:
    """Run a stage script as a user would, from the repository."""
    return subprocess.run([sys.executable, script, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- names checked in one place


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_run_names_are_refused(name):
    with pytest.raises(ValueError, match="expected one folder name"):
        layout.check_name(name)
    with pytest.raises(ValueError):
        layout.predictions_run_dir("data", name)


def test_random_names_never_leave_their_folder(tmp_path):
    """Property: for random names over a hostile alphabet, every check either refuses the name or the path it
    builds lies inside its stage folder (and the dataset rule accepts only canonical names)."""
    alphabet = list("ab0_-. /\\:\x00\n\t~$*") + ["..", "ü", "\u202e", "١"]
    rng = random.Random(0)
    root = tmp_path / "data"
    accepted = 0
    for _ in range(3000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for build, folder in (
            (lambda n: layout.reconstructions_dir(root, n), layout.reconstructions_root(root)),
            (lambda n: layout.prediction_path(root, "run", "blip", n), layout.predictions_dir(root, "run", "blip")),
            (lambda n: layout.target_path(root, "had", "z_zeroscope", n), layout.targets_dir(root, "had", "z_zeroscope")),
        ):
            try:
                path = build(name)
            except ValueError:
                continue
            accepted += 1
            resolved, outer = Path(*Path(path).parts).resolve(), folder.resolve()
            assert outer in resolved.parents, (name, path)
    assert accepted > 100  # the property was exercised on accepted names too
    for dataset in ("bmd", "demo", "cc2017", "had"):
        for name in HOSTILE:
            with pytest.raises(ValueError):
                datasets.check_stimulus(datasets.get_spec(dataset), name, "test")


def test_dataset_naming_rules_accept_the_real_names_and_refuse_near_misses(shared_data):
    for split in ("train", "test"):
        had = json.loads((shared_data / "metadata" / "metadata_had" / f"had_{split}_set_per_subject.json").read_text())
        names = sorted({n for listed in had.values() for n in listed})
        assert datasets.check_stimuli(datasets.HAD, names, "split list") == names
        cc = json.loads((shared_data / "metadata" / "metadata_cc2017" / f"cc2017_{split}_set_video_paths.json").read_text())
        assert datasets.check_stimuli(datasets.CC2017, cc, "split list") == cc
    for bad in ("Drum corps/../../evil", "../v_Drum corps_id_x_start_1.0_label_1", "Drum corps/v_Other_id_x_start_1.0_label_1"):
        with pytest.raises(ValueError, match="HAD clip name|stimulus name"):
            datasets.check_stimulus(datasets.HAD, bad, "annotations.json")
    with pytest.raises(ValueError, match="four digits"):
        datasets.check_stimulus(datasets.BMD, "01211", "trials.csv")


def test_long_subject_lists_keep_the_default_run_name_short():
    name = run_pipeline.default_run("had", "default", [str(s) for s in range(1, 31)])
    assert len(name) <= layout.MAX_NAME_LENGTH and name.startswith("had_default_30subjects-")
    assert layout.check_name(name) == name
    assert run_pipeline.default_run("bmd", "default", ["1", "2"]) == "bmd_default_sub01-sub02"


# ----------------------------------------------------------------------------- traversal through data files and flags


def test_trials_table_name_outside_the_root_is_refused(world):
    root, sentinel = world
    trials = layout.prepared_trials_path(root, "demo", "sub01", "Group41")
    rows = list(csv.DictReader(trials.open()))
    rows[0]["stimulus"] = "../../../../elsewhere/0121"
    with trials.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match=r"_trials\.csv \(column 'stimulus'\).*'\.\./\.\./\.\./\.\./elsewhere/0121'"):
        load_prepared(root, "demo", 1)
    done = in_subprocess("regress.py", "--data-root", str(root), "--targets", "blip", "--run", "r")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "_trials.csv" in done.stderr
    assert sentinel.read_bytes() == b"sentinel"


def test_annotation_key_outside_the_root_is_refused(world):
    root, sentinel = world
    path = layout.annotations_path(root, "demo")
    notes = json.loads(path.read_text())
    notes["../../elsewhere/evil"] = next(iter(notes.values()))
    path.write_text(json.dumps(notes))
    with pytest.raises(ValueError, match=r"annotations\.json \(keys\)"):
        extract_targets_zeroscope.main(["--data-root", str(root), "--preset", "tiny", "--device", "cpu"])
    assert not list(sentinel.parent.parent.rglob("evil*"))
    assert sentinel.read_bytes() == b"sentinel"


@pytest.mark.parametrize("value", ["[1, 2]", '{"0001": 3}', '"text"'])
def test_ill_typed_annotations_are_named(world, value):
    root, _ = world
    path = layout.annotations_path(root, "demo")
    path.write_text(value)
    with pytest.raises(ValueError, match=r"annotations\.json: expected"):
        datasets.load_annotations(root, "demo")


def test_output_run_onto_another_stage_is_refused_and_nothing_deleted(tmp_path):
    write_predictions(tmp_path, ["0121"])
    videos = layout.stimuli_dir(tmp_path, "demo") / "mp4"
    videos.mkdir(parents=True)
    (videos / "0001.mp4").write_bytes(b"a stimulus")
    done = in_subprocess("reconstruct_zeroscope.py", "--data-root", str(tmp_path), *FAST, "--run", RUN,
                         "--output-run", "../stimuli_demo", "--overwrite")
    assert done.returncode == 2 and "--output-run" in done.stderr and "expected one folder name" in done.stderr
    assert (videos / "0001.mp4").read_bytes() == b"a stimulus"


@pytest.mark.parametrize(("script", "flags"), [
    ("regress.py", ["--run", "../../ESC"]),
    ("evaluate.py", ["--videos", ".", "--method", "../../X"]),
    ("evaluate.py", ["--reconstructions", "/tmp/x"]),
    ("train_mbm.py", ["--run", "x" * 300]),
    ("run_pipeline.py", ["--run", "a/b"]),
])
def test_run_names_from_flags_are_one_safe_folder_name(tmp_path, script, flags):
    done = in_subprocess(script, "--data-root", str(tmp_path / "data"), *flags)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "expected one folder name" in done.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "ESC").exists() and not (tmp_path / "X").exists()


def test_overwrite_never_deletes_a_folder_the_stage_did_not_make(tmp_path):
    write_predictions(tmp_path, ["0121"])
    foreign = layout.reconstructions_dir(tmp_path, "mine")
    (foreign / "mp4").mkdir(parents=True)
    (foreign / "mp4" / "keep.mp4").write_bytes(b"mine")
    argv = ["--data-root", str(tmp_path), *FAST, "--run", RUN, "--output-run", "mine", "--overwrite"]
    with pytest.raises(ValueError, match="no reconstruction recorded as its own.*nothing there is deleted"):
        reconstruct_zeroscope.main(argv)
    assert (foreign / "mp4" / "keep.mp4").read_bytes() == b"mine"
    provenance.write_settings(foreign, "another_stage", {"x": 1})
    with pytest.raises(ValueError, match="nothing there is deleted"):
        reconstruct_zeroscope.main(argv)
    assert (foreign / "mp4" / "keep.mp4").read_bytes() == b"mine"


# ----------------------------------------------------------------------------- inputs refused before any work


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_predicted_latent_is_refused_before_the_models_load(tmp_path, monkeypatch, bad):
    write_predictions(tmp_path, ["0121", "0122"])
    latent = np.zeros(LATENT, dtype=np.float32)
    latent[0, 0, 0, 0] = bad
    path = layout.prediction_path(tmp_path, RUN, "z_zeroscope", "0122")
    np.save(path, latent)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(reconstruct_zeroscope.zoo, "load_zeroscope", no_model)
    monkeypatch.setattr(reconstruct_zeroscope.zoo, "load_blip", no_model)
    with pytest.raises(ArtifactError, match=r"0122\.npy holds 1 non-finite value"):
        reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN])
    assert not list(layout.reconstructions_dir(tmp_path, RUN).rglob("*.npy"))


def test_wrong_shaped_latent_is_refused_before_the_models_load(tmp_path, monkeypatch):
    write_predictions(tmp_path, ["0121", "0122"])
    target = layout.target_path(tmp_path, "demo", "z_zeroscope", "0121")
    save_npy(target, np.zeros(LATENT, dtype=np.float32))
    provenance.write_settings(target.parent, "extract_targets_zeroscope", {"recipe": "default", "preset": "tiny"})
    np.save(layout.prediction_path(tmp_path, RUN, "z_zeroscope", "0122"), np.zeros((15, 4, 9, 9), dtype=np.float32))
    monkeypatch.setattr(reconstruct_zeroscope.zoo, "load_zeroscope", lambda *a, **k: pytest.fail("model loaded first"))
    monkeypatch.setattr(reconstruct_zeroscope.zoo, "load_blip", lambda *a, **k: pytest.fail("model loaded first"))
    with pytest.raises(ValueError, match=r"0122\.npy"):
        reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN])


@pytest.mark.parametrize(("content", "found"), [("[1, 2, 3]", "a list of 3 items"), ('{"0121": 5}', "the number 5 under key '0121'")])
def test_ground_truth_captions_must_be_a_mapping_of_strings(tmp_path, content, found):
    write_predictions(tmp_path, ["0121"])
    target = layout.target_path(tmp_path, "demo", "z_zeroscope", "0121")
    save_npy(target, np.zeros(LATENT, dtype=np.float32))
    provenance.write_settings(target.parent, "extract_targets_zeroscope", {"recipe": "default", "preset": "tiny"})
    layout.captions_path(tmp_path, "demo").write_text(content)
    with pytest.raises(ArtifactError, match=rf"captions\.json: expected .*found {found}"):
        reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN, "--caption-from", "gt"])


def test_non_finite_row_in_prepared_betas_names_file_row_and_policy(world):
    root, _ = world
    path = layout.prepared_array_path(root, "demo", "sub01", "Group41")
    betas = np.load(path)
    betas[3, 5] = np.nan
    np.save(path, betas)
    stimulus = load_prepared.__globals__["read_trials_csv"](layout.prepared_trials_path(root, "demo", "sub01", "Group41")).stimulus[3]
    with pytest.raises(ArtifactError, match=rf"Group41\.npy: row 3 \(demo sub01, stimulus '{stimulus}'.*--nan-policy drop.*--data-root"):
        load_prepared(root, "demo", 1)


def test_data_root_that_is_a_file_is_named(tmp_path):
    file = tmp_path / "root.txt"
    file.write_text("not a folder")
    done = in_subprocess("extract_targets_zeroscope.py", "--data-root", str(file), "--preset", "tiny")
    assert done.returncode == 1 and done.stderr.strip() == f"error: --data-root {file} is a file: expected the folder that holds (or will hold) every artifact."


def test_unsafe_init_checkpoint_is_named_with_its_flag(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    path = tmp_path / "sub-01.pth"
    path.write_bytes(pickle.dumps({"model": {}, "config": Evil()}))
    with pytest.raises(Exception, match=r"--init-from .*sub-01\.pth.*refusing to load global builtins\.print.*could run code"):
        train_mbm.main(["--data-root", str(tmp_path), "--init-from", str(path)])


# ----------------------------------------------------------------------------- one line for expected errors


def test_expected_errors_are_one_line_and_bugs_keep_their_traceback(capsys, monkeypatch):
    def bad_input():
        raise ValueError("--thing 3: expected 1 or 2.")

    monkeypatch.setattr(sys, "argv", ["stage.py"])
    assert cli.run_main(bad_input) == 1
    assert capsys.readouterr().err == "error: --thing 3: expected 1 or 2.\n"

    def library_bug():
        return np.zeros(2) + np.zeros(3)  # numpy's ValueError: a bug here, not a user error

    with pytest.raises(ValueError, match="broadcast"):
        cli.run_main(library_bug)

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on the device while writing /x/y.npy")

    assert cli.run_main(disk_full) == 1
    assert capsys.readouterr().err.startswith("error: [Errno 28] No space left on the device while writing /x/y.npy")
    assert cli.run_main(lambda: (_ for _ in ()).throw(locks.RunLockedError("held"))) == 1
    monkeypatch.setattr(sys, "argv", ["stage.py", "--debug"])
    with pytest.raises(ValueError, match="--thing"):
        cli.run_main(bad_input)


def test_a_stage_error_is_one_line_in_a_real_process(tmp_path):
    done = in_subprocess("reconstruct_zeroscope.py", "--data-root", str(tmp_path), "--preset", "tiny", "--run", "nothing")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Missing predictions") and f"--data-root {tmp_path}" in last
    debug = in_subprocess("reconstruct_zeroscope.py", "--data-root", str(tmp_path), "--preset", "tiny", "--run", "nothing", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_suggested_commands_carry_the_data_root(tmp_path):
    assert layout.root_flag(None) == layout.root_flag("data") == ""
    assert layout.root_flag(tmp_path / "my root") == f" --data-root '{tmp_path / 'my root'}'"
    with pytest.raises(FileNotFoundError, match=rf"python download_data.py --dataset bmd --data-root {tmp_path} --subjects 2 --prepare"):
        load_prepared(tmp_path, "bmd", 2)
    with pytest.raises(FileNotFoundError, match=rf"python download_data.py --dataset bmd --data-root {tmp_path}`"):
        datasets.load_annotations(tmp_path, "bmd")


# ----------------------------------------------------------------------------- no half state after a failure


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path):
    write_predictions(tmp_path, ["0121"])
    np.save(layout.prediction_path(tmp_path, RUN, "z_zeroscope", "0121"), np.full(LATENT, np.nan, dtype=np.float32))
    with pytest.raises(ArtifactError):
        reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN])
    assert not layout.reconstructions_dir(tmp_path, RUN).exists()
    assert not layout.reconstructions_root(tmp_path).exists()


def test_read_only_root_skips_finished_work_and_evaluates_elsewhere(tmp_path, monkeypatch, capsys):
    make_demo(tmp_path, n_subjects=1, n_train=4, n_test=2)
    write_predictions(tmp_path, ["0005", "0006"])
    extract = ["--data-root", str(tmp_path), "--preset", "tiny", "--device", "cpu"]
    assert extract_targets_zeroscope.main(extract) == 0
    assert reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN]) == 0
    out = layout.reconstructions_dir(tmp_path, RUN)
    targets = layout.targets_dir(tmp_path, "demo", "z_zeroscope")
    before = {p: p.stat().st_mtime_ns for folder in (out, targets) for p in folder.rglob("*") if p.is_file()}

    def read_only(path, record):  # the file system refuses new files (EROFS): what a read-only mount does
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(locks, "_try_create", read_only)
    capsys.readouterr()
    assert reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN]) == 0
    assert extract_targets_zeroscope.main(extract) == 0
    assert "is not writable: no run lock taken" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for folder in (out, targets) for p in folder.rglob("*") if p.is_file()} == before
    evaluate_here = ["--data-root", str(tmp_path), "--preset", "tiny", "--device", "cpu", "--reconstructions", RUN, "--no-semantic"]
    monkeypatch.setattr(evaluate, "evaluate_run", lambda *a, **k: pytest.fail("scored although nothing could be written"))
    with pytest.raises(ValueError, match=r"refuses new files .*pass --output-root DIR"):
        evaluate.main(evaluate_here)
    monkeypatch.undo()
    elsewhere = tmp_path / "writable"
    argv = ["--data-root", str(tmp_path), "--preset", "tiny", "--device", "cpu", "--reconstructions", RUN, "--output-root", str(elsewhere),
            "--no-semantic"]
    assert evaluate.main(argv) == 0
    assert layout.metrics_path(layout.evaluation_dir(elsewhere, RUN)).exists()
    assert not layout.evaluation_dir(tmp_path, RUN).exists()


def test_disk_full_names_the_file(tmp_path):
    """A real full file system (a 1 MiB tmpfs; skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(OSError, match=rf"No space left on the device while writing {mount}/z\.npy") as caught:
            save_npy(mount / "z.npy", np.zeros((1000, 1000), dtype=np.float32))
        assert caught.value.errno == errno.ENOSPC
        assert not [p for p in mount.iterdir()]  # the temp file is gone
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ----------------------------------------------------------------------------- the runner


def test_keep_going_survives_a_bad_stage_flag(tmp_path, capsys):
    argv = ["--data-root", str(tmp_path), "--preset", "tiny", "--stages", "download_data", "prepare", "--keep-going",
            "--stage-args", "download_data=--no-such-flag"]
    assert run_pipeline.main(argv) == 1
    captured = capsys.readouterr()
    assert "download_data.py: error: unrecognized arguments: --no-such-flag" in captured.err
    assert "run_pipeline.py: error" not in captured.err
    summary = captured.out.split("[pipeline] summary", 1)[1]
    assert "download_data               failed" in summary and "exit status 2" in summary
    assert "prepare                     failed" in summary  # it ran (and found no demo), it was not skipped


# ----------------------------------------------------------------------------- cases found by the battery of bad inputs


def test_a_link_inside_a_stage_folder_that_leads_outside_is_refused(tmp_path):
    write_predictions(tmp_path, ["0121"])
    assert reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN]) == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0121.mp4").write_bytes(b"mine")
    mp4 = layout.reconstruction_mp4_dir(layout.reconstructions_dir(tmp_path, RUN))
    for path in mp4.iterdir():
        path.unlink()
    mp4.rmdir()
    mp4.symlink_to(outside)
    with pytest.raises(ValueError, match=r"mp4 leads outside .*a stage writes only inside its folder"):
        reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN, "--steps", "3", "--overwrite"])
    assert [p.name for p in outside.iterdir()] == ["0121.mp4"] and (outside / "0121.mp4").read_bytes() == b"mine"


def test_targets_of_integers_are_refused(world):
    root, _ = world
    from utils.targets import load_targets

    target = layout.target_path(root, "demo", "clip", "0001")
    save_npy(target, np.arange(16, dtype=np.int64))
    provenance.write_settings(target.parent, "test", {"recipe": "default"})
    with pytest.raises(ValueError, match=r"0001\.npy holds int64 values, expected floating-point .*--data-root"):
        load_targets(root, "demo", "clip", ["0001"])


def test_ill_typed_files_are_named(world):
    root, _ = world
    from utils import evaluation_data

    manifest = layout.manifest_path(layout.reconstructions_dir(root, "r"))
    manifest.parent.mkdir(parents=True)
    manifest.write_text('"just a string"')
    with pytest.raises(ArtifactError, match=r"manifest\.json: expected a stage manifest .*found the string"):
        evaluation_data.run_subject(root, "r")
    notes_path = layout.annotations_path(root, "demo")
    notes = json.loads(notes_path.read_text())
    del notes["0003"]["set"]
    notes_path.write_text(json.dumps(notes))
    with pytest.raises(ValueError, match=r"annotations\.json: expected a 'set' of \['train', 'test'\] .*None under '0003'"):
        datasets.load_annotations(root, "demo")
    lists = layout.metadata_dir(root, "had")
    lists.mkdir(parents=True)
    layout.split_list_path(root, "had", "train").write_text('["x"]')
    layout.split_list_path(root, "had", "test").write_text("{}")
    with pytest.raises(ValueError, match=r"had_train_set_per_subject\.json: expected an object \{subject: \[stimulus names\]\}"):
        datasets.list_stimuli(datasets.HAD, "train", root)
    layout.split_list_path(root, "had", "train").write_text('{"sub01": ["../../../evil/x"]}')
    with pytest.raises(ValueError, match=r"had_train_set_per_subject\.json: Not a HAD clip name"):
        datasets.list_stimuli(datasets.HAD, "train", root)


def test_a_garbage_lock_file_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    layout.lock_path(folder).write_bytes(b"\x00\xffgarbage")
    with locks.run_lock(folder, "test") as path:
        assert json.loads(path.read_text())["stage"] == "test"
    assert not layout.lock_path(folder).exists()


def test_bad_patterns_roi_sets_roots_and_subjects_are_one_line(world, tmp_path):
    root, sentinel = world
    from utils import evaluation_data

    with pytest.raises(ValueError, match=r"--name-pattern .* is not a valid regular expression \(missing \)"):
        evaluation_data.find_folder_clips(tmp_path, r"test(?P<stim>\d+\.gif", None, datasets.BMD.canonical)
    with pytest.raises(ValueError, match=r"--roi-set '\.\./\.\./x': expected one folder name"):
        layout.prepared_array_path(root, "demo", "sub01", "../../x")
    done = in_subprocess("download_data.py", "--dataset", "demo", "--data-root", "")
    assert done.returncode == 1 and done.stderr.strip() == "error: --data-root is empty: expected a folder (the default data root is ./data)."
    done = in_subprocess("reconstruct_zeroscope.py", "--data-root", str(root), "--preset", "tiny", "--subjects", "0", "--run", "x")
    assert done.returncode == 1 and done.stderr.strip().startswith("error: Cannot read subject '0'")
    from utils.targets import target_command

    assert "which no script here makes" in target_command("nosuch", "demo")
    assert sentinel.read_bytes() == b"sentinel"


def test_ill_typed_run_files_are_named_before_any_clip_is_scored(tmp_path, monkeypatch):
    make_demo(tmp_path, n_subjects=1, n_train=4, n_test=2)
    write_predictions(tmp_path, ["0005", "0006"])
    assert reconstruct_zeroscope.main(["--data-root", str(tmp_path), *FAST, "--run", RUN]) == 0
    layout.manifest_path(layout.reconstructions_dir(tmp_path, RUN)).write_text('"just a string"')
    monkeypatch.setattr(evaluate, "evaluate_run", lambda *a, **k: pytest.fail("a clip was scored before the inputs were checked"))
    with pytest.raises(ArtifactError, match=r"manifest\.json: expected a stage manifest"):
        evaluate.main(["--data-root", str(tmp_path), "--preset", "tiny", "--device", "cpu", "--reconstructions", RUN, "--no-semantic"])


def test_a_bad_split_in_the_trials_table_says_what_was_expected_and_found(world):
    root, _ = world
    trials = layout.prepared_trials_path(root, "demo", "sub01", "Group41")
    lines = trials.read_text().splitlines()
    lines[1] = ",".join([*lines[1].split(",")[:3], "evil"])
    trials.write_text("\n".join(lines) + "\n")
    with pytest.raises(ArtifactError, match=r"malformed at line 2 \(expected .* a split of \['train', 'test'\]; found .*'split': 'evil'"):
        load_prepared(root, "demo", 1)
