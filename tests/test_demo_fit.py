"""The demo preset: models fitted on train clips only, loaded exactly like real weights from a folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import fit_demo_models
from models import zoo
from models.demo import fit
from tests.conftest import SMALL_FIT_SCALE
from utils import layout
from utils.datasets import DEMO, list_stimuli, stimulus_path

pytestmark = pytest.mark.slow


def test_no_test_stimulus_reaches_any_fit(fitted_demo):
    root, opened = fitted_demo
    test_videos = {str(stimulus_path(root, DEMO, s)) for s in list_stimuli(DEMO, "test", root)}
    train_videos = {str(stimulus_path(root, DEMO, s)) for s in list_stimuli(DEMO, "train", root)}
    assert opened and set(opened) <= train_videos and not set(opened) & test_videos
    for step in fit.STEPS:
        record = json.loads(layout.demo_fit_manifest_path(root, step).read_text())
        assert set(record["held_out_stimuli"]) <= set(list_stimuli(DEMO, "train", root))
        assert record["fit_stimuli"] + len(record["held_out_stimuli"]) == len(train_videos)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_demo_models_load_through_the_model_path_loader(fitted_demo, monkeypatch):
    root, _ = fitted_demo
    calls: list[tuple[str, bool]] = []
    real = zoo._pretrained

    def spy(loader, source, local, what, flag="--model-path", **kwargs):
        calls.append((source, local))
        return real(loader, source, local, what, flag, **kwargs)

    monkeypatch.setattr(zoo, "_pretrained", spy)
    pairs = {
        "blip": zoo.load_blip, "clip": zoo.load_clip, "image_classifier": zoo.load_image_classifier,
        "video_classifier": zoo.load_video_classifier,
    }
    for folder, loader in pairs.items():
        demo_model, _ = loader("demo", data_root=root)
        path_model, _ = loader("default", model_path=layout.demo_model_dir(root, folder))
        assert type(demo_model) is type(path_model) and _same_weights(demo_model, path_model), folder
    demo = zoo.load_zeroscope("demo", data_root=root)
    real_path = zoo.load_zeroscope("default", model_path=layout.demo_model_dir(root, "zeroscope"))
    for part in ("vae", "unet", "text_encoder"):
        assert _same_weights(demo[part], real_path[part]), part
    assert demo["scheduler"].config == real_path["scheduler"].config
    assert type(demo["scheduler"]).__name__ == "DPMSolverMultistepScheduler"
    assert all(local and Path(source).is_dir() for source, local in calls)  # from_pretrained on local folders, every time
    assert {Path(source) for source, _ in calls} >= {layout.demo_model_dir(root, f) for f in (*pairs, "zeroscope")}


def test_rerun_keeps_the_fitted_models(fitted_demo, capfd):
    root, _ = fitted_demo
    before = {p: p.stat().st_mtime_ns for p in layout.demo_models_root(root).rglob("*.safetensors")}
    assert fit_demo_models.main(["--data-root", str(root), "--epoch-scale", str(SMALL_FIT_SCALE)]) == 0
    assert capfd.readouterr().out.count("fitted before") == len(fit.STEPS)  # printed by the worker processes (--jobs)
    assert before and before == {p: p.stat().st_mtime_ns for p in layout.demo_models_root(root).rglob("*.safetensors")}
    with pytest.raises(ValueError, match="other settings"):  # a longer fit than the recorded one is refused, not mixed in
        fit_demo_models.main(["--data-root", str(root), "--steps", "vae"])


def test_unfitted_demo_models_name_the_command(tmp_path: Path):
    with pytest.raises(zoo.ModelNotAvailableError, match="fit_demo_models.py --data-root"):
        zoo.load_blip("demo", data_root=tmp_path)
    with pytest.raises(zoo.ModelNotAvailableError, match=r"missing fit steps \['vae', 'zeroscope'\]"):
        zoo.load_zeroscope("demo", data_root=tmp_path, parts=("vae",))


def test_ready_steps_wait_for_the_steps_they_need():
    chosen = ["vae", "clip", "zeroscope", "blip"]
    assert fit.ready_steps(chosen, set(), chosen) == ["vae", "clip", "blip"]
    assert fit.ready_steps(["zeroscope", "blip"], {"vae"}, chosen) == ["blip"]
    assert fit.ready_steps(["zeroscope"], {"vae", "clip"}, chosen) == ["zeroscope"]
    assert fit.ready_steps(["zeroscope"], set(), ["zeroscope"]) == ["zeroscope"]  # needs fitted earlier: run_step checks them


def test_worker_processes_fit_the_same_models_and_report_a_failed_step(tmp_path: Path, capfd):
    from utils.synthetic import make_demo

    steps = ("clip", "image_classifier")
    one, two = tmp_path / "one", tmp_path / "two"
    make_demo(one, n_subjects=1, n_train=20, n_test=4)
    shutil.copytree(one, two)  # the same data, quicker than making it again
    fit.fit_all(one, steps=steps, epoch_scale=0.05)
    # zeroscope waits for clip, then fails (no vae fitted) while image_classifier goes on; the error comes after it ends
    with pytest.raises(FileNotFoundError, match="needs 'vae' first"):
        fit.fit_all(two, steps=("zeroscope", *steps), epoch_scale=0.05, jobs=2)
    out = capfd.readouterr().out
    assert out.index("clip: started") < out.index("zeroscope: started") and "zeroscope: failed" in out
    for step in steps:
        record_one, record_two = (json.loads(layout.demo_fit_manifest_path(r, step).read_text()) for r in (one, two))
        assert record_two["settings"] == record_one["settings"] and record_two["held_out_metrics"] == record_one["held_out_metrics"]
        folder = layout.DEMO_MODEL_FOLDERS[step]
        for weights in layout.demo_model_dir(one, folder).rglob("*.safetensors"):
            other = layout.demo_model_dir(two, folder) / weights.relative_to(layout.demo_model_dir(one, folder))
            assert other.read_bytes() == weights.read_bytes(), weights
    assert not layout.demo_fit_manifest_path(two, "zeroscope").exists()
    assert layout.demo_fit_log_path(two, "image_classifier").stat().st_size > 0  # its progress bars
