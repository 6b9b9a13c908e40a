"""Contrastive alignment: the loss, the model, and finetune_contrastive.py on the synthetic demo."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import finetune_contrastive
import train_mbm
from models.contrastive import BrainCLIP, HeadConfig, clip_loss, load_brainclip
from models.mbm import MaskedBrainModel, MBMConfig
from utils import layout
from utils.prepare import load_prepared, prepare_subject
from utils.synthetic import make_demo

CLIP_DIM = 24



def tiny_encoder(num_voxels: int = 256) -> MaskedBrainModel:
    torch.manual_seed(0)
    return MaskedBrainModel(MBMConfig(num_voxels, 16, 32, 1, 4, 16, 1, 2, 1.0))


def test_clip_loss_prefers_aligned_pairs():
    torch.manual_seed(0)
    target = torch.randn(8, 16)
    scale = torch.tensor(np.log(1 / 0.07), dtype=torch.float32)
    aligned = clip_loss(target + 0.01 * torch.randn(8, 16), target, scale)
    shuffled = clip_loss(target[torch.randperm(8)], target, scale)
    assert aligned < 0.1 < shuffled
    assert clip_loss(target, target, scale + 1.0) < clip_loss(target, target, scale)  # sharper = surer when aligned
    assert torch.isclose(clip_loss(target, -target, scale), clip_loss(-target, target, scale))  # symmetric


def test_brainclip_shapes_and_freezing():
    for pool, feature_dim in (("mean", 32), ("tokens", 16 * 4)):
        model = BrainCLIP(tiny_encoder(), HeadConfig(out_dim=12, pool=pool, token_dim=4))
        x = torch.randn(3, 1, 256)
        emb, scale, recon = model(x)
        assert emb.shape == (3, 12) and recon is None and model.features(x).shape == (3, feature_dim)
        assert float(scale.detach()) == pytest.approx(np.log(1 / 0.07))
        _, _, recon = model(x, 0.5)
        assert recon.ndim == 0
    model.set_trainable(encoder=False)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("encoder."))
    model.set_trainable(encoder=True, decoder=False)
    assert model.encoder.blocks[0].attn.qkv.weight.requires_grad and not model.encoder.decoder_pred.weight.requires_grad
    with pytest.raises(ValueError, match="Unknown pool"):
        HeadConfig(out_dim=4, pool="max")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """The synthetic demo (one subject) prepared, with CLIP stand-in targets.

    The targets are a fixed random projection of the demo's known stimulus features (what
    extract_targets_blip.py's real CLIP would see is not available offline), so the
    alignment has a known answer.
    """
    root = tmp_path_factory.mktemp("demo")
    make_demo(root, n_subjects=1)
    prepare_subject(root, "demo", 1)
    model = np.load(layout.metadata_dir(root, "demo") / "encoding_model.npz")
    projection = np.random.default_rng(0).standard_normal((model["features"].shape[1], CLIP_DIM))
    for name, vector in zip(model["stimuli"], model["features"] @ projection, strict=True):
        path = layout.target_path(root, "demo", "clip", str(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vector.astype(np.float32))
    from utils import provenance

    provenance.write_settings(layout.targets_dir(root, "demo", "clip"), "test", {"recipe": "default"})
    return root


def common(root) -> list[str]:
    return ["--data-root", str(root), "--datasets", "demo", "--subjects", "1", "--preset", "tiny"]


def test_demo_mbm_then_contrastive_beats_chance(demo_root, capsys):
    assert train_mbm.main(common(demo_root) + ["--epochs", "1", "--limit", "64", "--lr", "1e-3", "--run", "tiny"]) == 0
    args = common(demo_root) + ["--mbm", "tiny", "--run", "clip_demo", "--epochs", "6", "--warmup-epochs", "0.5"]
    assert finetune_contrastive.main(args) == 0
    out_dir = demo_root / "embeddings" / "clip_demo"
    manifest = json.loads((out_dir / "manifest.json").read_text())
    test = manifest["metrics"]["demo/sub01"]["test"]
    assert test["n_stimuli"] == 24 and test["chance_top1"] == pytest.approx(1 / 24)
    assert test["top1"] >= 0.3, test  # chance 0.04
    assert test["two_way"] >= 0.85, test  # chance 0.5

    prepared = load_prepared(demo_root, "demo", 1)
    model, config = load_brainclip(layout.checkpoint_dir(demo_root, "contrastive", "clip_demo"))
    emb = np.load(layout.embeddings_path(demo_root, "clip_demo", "demo", "sub01"))
    assert emb.shape == (len(prepared.trials), model.feature_dim) and emb.dtype == np.float32
    table = out_dir / "demo" / "sub01_trials.csv"
    assert table.read_text() == layout.prepared_trials_path(demo_root, "demo", "sub01", "Group41").read_text()
    assert config["mbm"].endswith("tiny") and config["data"]["pad"] == "wrap"
    # Row i is trial i: re-embedding one test trial gives the same vector.
    from models.contrastive import embed
    from utils.brain_data import load_sources, single_trials

    source = load_sources(demo_root, ["demo"], ["1"], 64)[0]
    row = int(np.flatnonzero(prepared.trials.split == "test")[5])
    again = embed(model, single_trials(source), [row], 1, "cpu").numpy()[0]
    np.testing.assert_allclose(again, emb[row], rtol=1e-4, atol=1e-5)

    capsys.readouterr()
    assert finetune_contrastive.main(args) == 0  # rerun: nothing to train, embeddings complete
    text = capsys.readouterr().out
    assert "already trained" in text and "0 written, 1 already complete" in text


def test_bad_inputs(demo_root, tmp_path):
    from test_mbm import small_model, write_published

    base = common(demo_root) + ["--epochs", "1", "--run", "bad"]
    with pytest.raises(FileNotFoundError, match=f"train_mbm.py --data-root {demo_root} --preset tiny --run nope"):
        finetune_contrastive.main(base + ["--mbm", "nope"])
    wrong = tmp_path / "sub-01.pth"
    write_published(wrong, small_model(num_voxels=256))
    with pytest.raises(ValueError, match="num_voxels=256.*13156 vertices"):
        finetune_contrastive.main(base + ["--mbm", str(wrong)])
    with pytest.raises(FileNotFoundError, match="extract_targets_blip.py --dataset demo"):
        finetune_contrastive.main(base + ["--mbm", "none", "--targets", "clip_text"])
    assert not (layout.checkpoint_dir(demo_root, "contrastive", "bad") / "manifest.json").exists()
    shutil.rmtree(layout.checkpoint_dir(demo_root, "contrastive", "bad"), ignore_errors=True)


def test_resume_matches_an_uninterrupted_run(demo_root, capsys):
    from safetensors.torch import load_file

    from models.training import run_status

    assert train_mbm.main(common(demo_root) + ["--epochs", "1", "--limit", "64", "--lr", "1e-3", "--run", "tiny_r"]) == 0
    base = common(demo_root) + ["--mbm", "tiny_r", "--epochs", "3", "--warmup-epochs", "0.5", "--batch-size", "8"]  # 3 steps/epoch
    assert finetune_contrastive.main(base + ["--run", "whole"]) == 0
    split = base + ["--run", "split"]
    split_dir = layout.checkpoint_dir(demo_root, "contrastive", "split")
    assert finetune_contrastive.main(split + ["--stop-after-steps", "4"]) == 0  # stops inside epoch 2
    assert run_status(split_dir) == "interrupted" and not (demo_root / "embeddings" / "split").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        finetune_contrastive.main(split)
    with pytest.raises(ValueError, match="dropout: saved 0.1, given 0.2"):
        finetune_contrastive.main(split + ["--resume", "--dropout", "0.2"])
    assert finetune_contrastive.main(split + ["--resume", "--stop-after-steps", "2"]) == 0  # stops at the end of epoch 2
    assert run_status(split_dir) == "interrupted"
    assert finetune_contrastive.main(split + ["--resume"]) == 0
    assert run_status(split_dir) == "complete"
    whole_dir = layout.checkpoint_dir(demo_root, "contrastive", "whole")
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(str(whole_dir / name)), load_file(str(split_dir / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = [line.split(",")[:-2] for line in (whole_dir / "log.csv").read_text().splitlines()]  # without the timing columns
    assert rows == [line.split(",")[:-2] for line in (split_dir / "log.csv").read_text().splitlines()] and len(rows) == 4
    emb = [np.load(layout.embeddings_path(demo_root, run, "demo", "sub01")) for run in ("whole", "split")]
    assert np.array_equal(*emb)


def test_runs_trained_before_train_state_existed_count_as_trained(tmp_path):
    import finetune_contrastive
    from utils import layout
    from utils.io import write_json

    run_dir = tmp_path / "old_run"
    run_dir.mkdir()
    layout.weights_path(run_dir, "best").write_bytes(b"weights")
    assert not finetune_contrastive.already_trained(run_dir)  # weights without this stage's manifest
    write_json(layout.manifest_path(run_dir), {"stage": "finetune_contrastive"})
    assert finetune_contrastive.already_trained(run_dir)


def test_rerun_with_other_flags_is_refused_and_embeddings_are_never_mixed(demo_root, capsys):
    from safetensors.torch import load_file, save_file

    from utils.provenance import SettingsMismatchError

    assert train_mbm.main(common(demo_root) + ["--epochs", "1", "--limit", "64", "--lr", "1e-3", "--run", "tiny_p"]) == 0
    base = common(demo_root) + ["--mbm", "tiny_p", "--run", "prov", "--epochs", "1", "--warmup-epochs", "0.5"]
    assert finetune_contrastive.main(base) == 0
    ckpt_dir = layout.checkpoint_dir(demo_root, "contrastive", "prov")
    emb_dir = layout.embeddings_dir(demo_root, "prov")
    manifests = {d: layout.manifest_path(d).read_bytes() for d in (ckpt_dir, emb_dir)}
    assert json.loads(layout.settings_path(emb_dir).read_text())["settings"]["export"] == "features"

    assert finetune_contrastive.main(base) == 0  # the same flags: skipped, manifests untouched
    with pytest.raises(SettingsMismatchError, match=r"lr: recorded 0.001, asked 0.0005.*--overwrite.*another --run"):
        finetune_contrastive.main(base + ["--lr", "5e-4"])
    with pytest.raises(SettingsMismatchError, match=r"export: recorded 'features', asked 'projection'"):
        finetune_contrastive.main(base + ["--export", "projection"])  # same training, other embeddings
    assert {d: layout.manifest_path(d).read_bytes() for d in manifests} == manifests

    best = layout.weights_path(ckpt_dir, "best")
    state = load_file(str(best))
    save_file({k: v * 1.01 for k, v in state.items()}, str(best))  # other weights under the same run name
    with pytest.raises(SettingsMismatchError, match="checkpoint_sha256: recorded"):
        finetune_contrastive.main(base)
    best.unlink()
    with pytest.raises(FileNotFoundError, match=r"Missing .*best.safetensors.*finetune_contrastive.py --run prov --overwrite"):
        load_brainclip(ckpt_dir)
    assert finetune_contrastive.main(base + ["--overwrite"]) == 0  # the way on
    assert best.exists() and layout.manifest_path(emb_dir).read_bytes() != manifests[emb_dir]


def test_conflicting_flags_and_unavailable_requests_are_refused_before_work(demo_root):
    base = common(demo_root) + ["--mbm", "none", "--run", "refused", "--epochs", "1"]
    with pytest.raises(ValueError, match="--resume and --overwrite conflict"):
        finetune_contrastive.main(base + ["--resume", "--overwrite"])
    with pytest.raises(ValueError, match="fp16 mixed precision needs a CUDA GPU"):
        finetune_contrastive.main(base + ["--device", "cpu", "--dtype", "float16"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            finetune_contrastive.main(base + ["--device", "cuda"])
    assert not layout.checkpoint_dir(demo_root, "contrastive", "refused").exists()
