"""The MBM masked autoencoder: shapes, masking, loss, published-checkpoint loading, learning."""
from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

from models import zoo
from models.mbm import MaskedBrainModel, MBMConfig, PatchEmbed1D, load_mbm, sincos_pos_embed
from models.training import CheckpointMismatchError, cosine_warmup_factor, load_state_strict, save_checkpoint
from utils.brain_data import pad_vertices, padded_length
from utils.safe_pickle import UnsafePickleError

SMALL = dict(patch_size=16, embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlp_ratio=1.0)



def small_model(num_voxels: int = 256, seed: int = 0, **overrides) -> MaskedBrainModel:
    torch.manual_seed(seed)
    return MaskedBrainModel(MBMConfig(num_voxels=num_voxels, **{**SMALL, **overrides}))


def test_presets_and_published_padding():
    assert zoo.MBM_SIZES["default"]["embed_dim"] == 1024 and zoo.MBM_SIZES["default"]["depth"] == 24
    assert zoo.MBM_SIZES["default"]["num_heads"] == 16 and zoo.MBM_SIZES["default"]["patch_size"] == 16
    assert padded_length(13156, 16) == 13168
    x = np.arange(2 * 13156, dtype=np.float32).reshape(2, 13156)
    padded = pad_vertices(x, 16, "wrap")
    assert padded.shape == (2, 13168) and np.array_equal(padded[:, 13156:], x[:, :12])
    assert np.all(pad_vertices(x, 16, "zero")[:, 13156:] == 0)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MBMConfig(num_voxels=13156)
    with pytest.raises(ValueError, match="Unknown MBM preset"):
        zoo.mbm_config("huge", 13168)
    tiny = zoo.mbm_config("tiny", 1024)
    assert tiny.patch_size == zoo.mbm_patch_size("tiny") == 64 and tiny.mask_ratio == MBMConfig.mask_ratio  # one default
    assert zoo.mbm_config("tiny", 1024, mask_ratio=0.5, depth=None).mask_ratio == 0.5 and tiny.depth == 2


def test_patchify_patch_embed_and_positions():
    model = small_model()
    x = torch.randn(3, 1, 256)
    patches = model.patchify(x)
    assert patches.shape == (3, 16, 16) and torch.equal(model.unpatchify(patches), x)
    embed = PatchEmbed1D(16, 8)
    assert torch.allclose(embed(x), embed.proj(x).transpose(1, 2), atol=1e-5)  # same as the published Conv1d
    pos = sincos_pos_embed(32, 16)
    assert pos.shape == (17, 32) and np.all(pos[0] == 0) and np.allclose(pos[1, :16], 0) and np.allclose(pos[1, 16:], 1)
    assert model.pos_embed.shape == (1, 17, 32) and not model.pos_embed.requires_grad


def test_random_masking_is_per_sample_and_invertible():
    tokens = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 16, 1).expand(-1, -1, 4).contiguous()
    kept, mask, ids_restore = MaskedBrainModel.random_masking(tokens, 0.75, torch.Generator().manual_seed(0))
    assert kept.shape == (2, 4, 4) and mask.shape == (2, 16)
    assert torch.all(mask.sum(dim=1) == 12)
    assert not torch.equal(mask[0], mask[1])  # each sample its own mask
    for i in range(2):  # kept tokens are exactly the unmasked positions
        assert sorted(kept[i, :, 0].long().tolist()) == sorted((torch.nonzero(mask[i] == 0).flatten() + 16 * i).tolist())
        assert torch.equal(torch.argsort(ids_restore[i]).argsort(), ids_restore[i])


def test_forward_shapes_and_loss_on_masked_patches_only():
    model = small_model()
    x = torch.randn(4, 1, 256)
    loss, pred, mask = model(x, 0.75, generator=torch.Generator().manual_seed(1))
    assert pred.shape == (4, 16, 16) and mask.shape == (4, 16) and loss.ndim == 0 and torch.isfinite(loss)
    changed = pred.clone()
    changed[mask == 0] += 100.0  # visible patches must not count
    assert torch.allclose(model.forward_loss(x, changed, mask), loss)
    changed[mask == 1] += 1.0
    assert model.forward_loss(x, changed, mask) > loss
    latent = model.encode(x)
    assert latent.shape == (4, 17, 32) and model.pooled(x).shape == (4, 32)
    with pytest.raises(ValueError, match=r"\(N, 1, 256\)"):
        model(torch.randn(2, 1, 240))


def test_cosine_schedule():
    assert cosine_warmup_factor(0, 10, 100) == pytest.approx(0.1)
    assert cosine_warmup_factor(9, 10, 100) == pytest.approx(1.0)
    assert cosine_warmup_factor(55, 10, 100) == pytest.approx(0.5)
    assert cosine_warmup_factor(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)


def structured_batch(n: int, v: int, rng: np.random.Generator) -> torch.Tensor:
    """Trials = per-trial offset + per-trial amplitude x fixed smooth pattern + small noise."""
    pattern = np.sin(np.linspace(0, 6 * np.pi, v))
    x = rng.normal(0, 1.5, (n, 1)) + rng.normal(0, 1.0, (n, 1)) * pattern + rng.normal(0, 0.2, (n, v))
    return torch.from_numpy(((x - x.mean()) / x.std()).astype(np.float32))[:, None]


def test_masked_patch_loss_drops_with_training():
    model = small_model(num_voxels=256, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    held_out = structured_batch(64, 256, np.random.default_rng(99))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        initial = float(model(held_out, 0.75, generator=gen)[0])
    for _ in range(60):
        loss, _, _ = model(structured_batch(32, 256, rng), 0.75)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = float(model(held_out, 0.75, generator=torch.Generator().manual_seed(5))[0])
    assert final < 0.3 * initial, (initial, final)


class _PublishedConfig:
    """Stands in for the config class pickled inside the published sub-XX.pth files."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def write_published(path, model: MaskedBrainModel, extra: dict | None = None, embed_attr: str = "embed_dim", **config_overrides) -> None:
    """torch.save({'config': <object of a module that later disappears>, 'model': state}) like the releases."""
    module = types.ModuleType("config")
    cls = type("Config_MBM_fMRI", (_PublishedConfig,), {"__module__": "config"})
    module.Config_MBM_fMRI = cls
    c = model.config
    values = dict(
        num_voxels=c.num_voxels, patch_size=c.patch_size, num_heads=c.num_heads, decoder_embed_dim=c.decoder_embed_dim,
        decoder_num_heads=c.decoder_num_heads, mlp_ratio=c.mlp_ratio, mask_ratio=c.mask_ratio, subjects=["sub-01"],
        lr=2.5e-4, **{embed_attr: c.embed_dim}, depth=c.depth,
    )
    values.update(config_overrides)
    state = dict(model.state_dict())
    state.update(extra or {})
    sys.modules["config"] = module
    try:
        torch.save({"config": cls(**values), "model": state}, path)
    finally:
        del sys.modules["config"]


@pytest.mark.parametrize("embed_attr", ["embed_dim", "embedding_dim"])
def test_published_checkpoint_loads_strictly(tmp_path, embed_attr):
    model = small_model(num_voxels=256, seed=3).eval()
    path = tmp_path / "sub-01.pth"
    write_published(path, model, extra={"nature_img_decoder.weight": torch.zeros(2, 2)}, embed_attr=embed_attr)
    assert "config" not in sys.modules
    loaded, config = load_mbm(path)
    assert loaded.config == model.config  # decoder depth came from the keys
    assert config["data"] == {"pad": "wrap", "norm": "global", "n_vertices": None}
    x = torch.randn(2, 1, 256)
    torch.testing.assert_close(loaded.encode(x), model.encode(x))


def test_checkpoint_mismatch_names_keys_and_shapes(tmp_path):
    model = small_model(num_voxels=256)
    state = dict(model.state_dict())
    state.pop("blocks.1.mlp.fc2.bias")
    state["blocks.7.attn.qkv.weight"] = torch.zeros(3, 3)
    state["decoder_pred.weight"] = torch.zeros(8, 16)
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_strict(small_model(num_voxels=256), state, "ckpt.pth")
    text = str(info.value)
    assert "missing keys: blocks.1.mlp.fc2.bias" in text
    assert "unexpected keys: blocks.7.attn.qkv.weight" in text
    assert "decoder_pred.weight: checkpoint (8, 16) vs model (16, 16)" in text
    path = tmp_path / "sub-02.pth"
    write_published(path, model, num_heads=4, decoder_embed_dim=32)  # config disagrees with the weights
    with pytest.raises(CheckpointMismatchError, match=r"decoder_blocks.0.attn.proj.bias: checkpoint \(16,\) vs model \(32,\)"):
        load_mbm(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "sub-03.pth"
    torch.save({"config": _Evil(marker), "model": small_model().state_dict()}, path)
    with pytest.raises(UnsafePickleError, match="system"):
        load_mbm(path)
    assert not marker.exists()


def test_our_checkpoint_roundtrip_and_errors(tmp_path):
    from dataclasses import asdict

    model = small_model(num_voxels=256, seed=4).eval()
    save_checkpoint(tmp_path / "run", "best", model, {"model": asdict(model.config), "data": {"pad": "wrap", "norm": "global"}})
    loaded, config = load_mbm(tmp_path / "run")
    assert config["data"]["norm"] == "global"
    x = torch.randn(2, 1, 256)
    torch.testing.assert_close(loaded.encode(x), model.encode(x))
    (tmp_path / "run" / "best.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="truncated or not a safetensors"):
        load_mbm(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="train_mbm.py"):
        load_mbm(tmp_path / "nothing.pth")


def test_a_run_folder_without_best_is_named_never_replaced_by_last(tmp_path):
    from models.mbm import resolve_checkpoint

    run = tmp_path / "r"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"Missing .*best.safetensors.*only last.safetensors.*--resume.*train_mbm.py --run r --overwrite"):
        resolve_checkpoint(run)
    assert resolve_checkpoint(run / "last.safetensors")[0] == run / "last.safetensors"
    (run / "last.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="holds no best.safetensors"):
        resolve_checkpoint(run)
