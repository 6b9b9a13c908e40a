"""The demo Zeroscope fit steps (models/demo/zeroscope.py) on a small synthetic world, with tiny sizes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import targets, zoo
from models.demo import fit
from models.demo import zeroscope as zs
from models.demo.data import load_demo_data
from models.training import TrainSettings
from models.video_diffusion import DiffusionSettings, VideoDiffusion, encode_prompts, to_unet_layout
from utils import layout
from utils.io import write_json
from utils.synthetic import make_demo

TINY_VAE = zs.VaeConfig(block_out_channels=(4, 4, 8, 8), norm_num_groups=2)
TINY_VAE_TRAIN = TrainSettings(epochs=1, lr=1e-3, warmup_epochs=0.0, betas=(0.9, 0.99), batch_size=16)
TINY_UNET = zs.UnetConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=2, val_timesteps=(100, 700), metric_clips=2)
TINY_UNET_TRAIN = TrainSettings(epochs=2, lr=1e-3, warmup_epochs=0.0, betas=(0.9, 0.99), batch_size=4)
BUILDERS = {
    "vae": lambda data, root, device: zs.vae_step(data, root, device, TINY_VAE_TRAIN, TINY_VAE),
    "zeroscope": lambda data, root, device: zs.unet_step(data, root, device, TINY_UNET_TRAIN, TINY_UNET),
}


def standin_clip(root: Path) -> None:
    """A random tiny CLIP (text width 16) in models_demo/clip with its tokenizer, and a completion record."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = zoo.clip_tokenizer(zoo.demo_words())
    text = {**zoo.tiny_clip_text_config(tokenizer, 16, 16), "num_hidden_layers": 1, "num_attention_heads": 2}
    vision = {"image_size": 32, "patch_size": 16, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "projection_dim": 16}
    folder = layout.demo_model_dir(root, "clip")
    with zoo.seeded(1):
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(layout.demo_fit_manifest_path(root, "clip"), {"step": "clip"})


def folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def weight_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every safetensors file under ``folder``."""
    return {k: v for k, v in folder_hashes(folder).items() if k.endswith(".safetensors")}


def run(step: str, root: Path, data, monkeypatch, overwrite: bool = False) -> dict:
    """``fit.run_step`` of ``step`` with the tiny builders."""
    monkeypatch.setattr(fit, "build_step", lambda name, data, data_root, device, epoch_scale=1.0: BUILDERS[name](data, data_root, device))
    return fit.run_step(step, data, root, "cpu", 0, overwrite)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data root, DemoData): 12 train clips of 32 px, 8 frames (9 fit, 3 held out), a stand-in CLIP, the VAE fitted."""
    root = tmp_path_factory.mktemp("zeroscope_world")
    make_demo(root, n_subjects=1, n_train=12, n_test=2, size=32, n_frames=8)
    data = load_demo_data(root, held_out_every=4)
    standin_clip(root)
    with pytest.MonkeyPatch.context() as patch:
        run("vae", root, data, patch)
    return root, data


def test_vae_fit_is_deterministic_with_unit_latents(world, monkeypatch):
    root, data = world
    folder = layout.demo_model_dir(root, "zeroscope/vae")
    first = weight_hashes(folder)
    record = run("vae", root, data, monkeypatch, overwrite=True)
    assert first and weight_hashes(folder) == first  # a second fit gives the same bytes
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder)
    latents = targets.vae_latents(vae, data.fit.target_frames(), data.fit.stimuli)  # what extract_targets_zeroscope stores
    assert latents.shape == (len(data.fit), 15, 4, 4, 4)
    assert abs(float(latents.std()) - 1.0) < 1e-3
    metrics = record["held_out_metrics"]
    assert {"psnr", "ssim", "moving_psnr", "latent_std"} <= set(metrics) and all(np.isfinite(list(metrics.values())))
    assert metrics["scaling_factor"] == pytest.approx(vae.config.scaling_factor)


def test_motion_weights_single_out_the_moving_pixels():
    frames = torch.zeros(2, 3, 8, 8)
    frames[1, :, 2:4, 2:4] = 1.0  # a "shape" in the second frame only
    weights = zs.motion_weights(frames, frames.mean(dim=0), 4.0)
    assert weights.shape == (2, 1, 8, 8)
    assert torch.allclose(weights[1, 0, 2:4, 2:4], torch.full((2, 2), 3.0))  # 1 + 4 * 0.5
    assert torch.all(weights[:, :, 5:, 5:] == 1.0)


def test_noised_matches_diffusers():
    from diffusers import DDPMScheduler

    config = zs.scheduler_config(zs.UnetConfig())
    reference = DDPMScheduler(**{k: v for k, v in config.items() if k != "steps_offset"})
    x0, noise = torch.randn(3, 4, 5, 2, 2), torch.randn(3, 4, 5, 2, 2)
    t = torch.tensor([0, 500, 999])
    alphas = reference.alphas_cumprod
    x_t, v = zs.noised(alphas, x0, noise, t, "v_prediction")
    torch.testing.assert_close(x_t, reference.add_noise(x0, noise, t))
    torch.testing.assert_close(v, reference.get_velocity(x0, noise, t))
    assert torch.equal(zs.noised(alphas, x0, noise, t, "epsilon")[1], noise)


def test_condition_rows():
    ids = torch.arange(2000) % 7
    torch.manual_seed(0)
    rows = zs.condition_rows(ids, 5, 35, 0.0)
    assert torch.equal(rows // 5, ids) and set((rows % 5).tolist()) == set(range(5))
    assert torch.equal(zs.condition_rows(ids, 5, 35, 1.0), torch.full_like(ids, 35))
    empty = (zs.condition_rows(ids, 5, 35, 0.15) == 35).float().mean()
    assert 0.12 < float(empty) < 0.18


def test_unet_step_trains_on_the_target_latents_and_prompt_states(world):
    root, data = world
    step = zs.unet_step(data, root, torch.device("cpu"), TINY_UNET_TRAIN, TINY_UNET)
    vae = zs.load_vae(root, torch.device("cpu"))
    stored = targets.vae_latents(vae, data.fit.target_frames(), data.fit.stimuli)  # (N, 15, 4, 4, 4)
    latents, ids = step.train_data[list(range(len(data.fit)))]
    torch.testing.assert_close(latents, to_unet_layout(stored), rtol=0, atol=1e-6)
    assert torch.equal(ids, torch.arange(len(data.fit)))
    encoder, tokenizer = zs.text_tower(layout.demo_model_dir(root, "clip"))
    states = zs.caption_states(encoder, tokenizer, data.fit, torch.device("cpu"))
    assert states.shape == (len(data.fit) * 5 + 1, 77, 16)
    torch.testing.assert_close(states[7], encode_prompts(encoder, tokenizer, [data.fit.captions[1][2]], "cpu")[0])
    torch.testing.assert_close(states[-1], encode_prompts(encoder, tokenizer, [""], "cpu")[0])
    torch.manual_seed(0)
    value = step.loss(step.model, step.train_data[[0, 1]])
    value.backward()
    assert torch.isfinite(value) and all(p.grad is not None for p in step.model.parameters() if p.requires_grad)


def test_unet_fit_exports_a_zeroscope_folder(world, monkeypatch):
    root, data = world
    folder = layout.demo_model_dir(root, "zeroscope")
    vae_before = folder_hashes(folder / "vae")
    record = run("zeroscope", root, data, monkeypatch)
    first = weight_hashes(folder / "unet")
    run("zeroscope", root, data, monkeypatch, overwrite=True)
    assert first and weight_hashes(folder / "unet") == first  # deterministic
    assert folder_hashes(folder / "vae") == vae_before  # the vae step's folder is left alone
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoSDPipeline" and index["unet"] == ["diffusers", "UNet3DConditionModel"]
    assert {"val_loss", "v2v_ssim", "v2v_ssim_mismatched"} <= set(record["held_out_metrics"])

    parts = zoo.load_zeroscope("default", model_path=folder)
    assert parts["scheduler"].config.prediction_type == TINY_UNET.prediction_type
    assert parts["unet"].config.cross_attention_dim == parts["text_encoder"].config.hidden_size == 16
    encoder, _ = zs.text_tower(layout.demo_model_dir(root, "clip"))
    exported = parts["text_encoder"].state_dict()
    assert all(torch.equal(v, exported[k]) for k, v in encoder.state_dict().items())
    pipe = VideoDiffusion.from_components(parts)
    latents = zs.clip_latents(parts["vae"], data.held_out)[:1]
    frames = pipe(latents, [data.held_out.captions[0][0]], [0], DiffusionSettings(steps=4))
    assert frames.shape == (1, 15, 32, 32, 3) and frames.dtype == np.uint8
