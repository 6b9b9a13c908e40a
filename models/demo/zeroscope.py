"""The demo's Zeroscope: a small AutoencoderKL and a caption-conditioned UNet3D fitted to the synthetic world.

Two fit steps of ``models.demo.fit`` (``STEPS``), the same classes and ``save_pretrained`` layout
as the real Zeroscope v2 576w:

- ``vae`` (:func:`vae_step`): ``AutoencoderKL`` with 4 latent channels and 8x downsampling
  (64 px frames -> 8 x 8 latents), fitted on the 15 target frames of the fit clips in [-1, 1] by a
  reconstruction loss (MSE of the decoding of a posterior sample) and a light KL term. Its
  ``scaling_factor`` is set at export to 1 / std of the posterior means of the fit clips'
  target frames, so the scaled latents ``models.targets.vae_latents`` stores have unit std.
  Written to ``models_demo/zeroscope/vae/``.
- ``zeroscope`` (:func:`unet_step`): ``UNet3DConditionModel`` trained as a denoiser of the
  target latents of the fit clips (what ``vae_latents`` makes with the fitted VAE: 15 frames,
  posterior mean x scaling factor, UNet layout (B, 4, 15, 8, 8)), noised with Zeroscope's
  scaled-linear betas, conditioned on the last hidden states (77 tokens, as
  ``models.video_diffusion.encode_prompts``) of one of the clip's 5 captions, or of the empty
  prompt for ``uncond_prob`` of the samples (classifier-free guidance). The text encoder is the
  fitted CLIP's text tower (``models_demo/clip``), frozen. Written to ``models_demo/zeroscope/``
  (unet/, text_encoder/, tokenizer/, scheduler/, model_index.json; vae/ is the vae step's).

Prediction type: ``v_prediction`` (:class:`UnetConfig`). Video-to-video at the default strength
0.8 starts at t = 799, where the latents keep only 0.19 of their amplitude: an epsilon model's
clean-latent estimate divides its error by that factor, while ``v`` keeps the target at unit
scale at every noise level, and its loss weights the x0 error by SNR + 1 instead of SNR, so the
high-noise steps that decide the layout and class get their share of a short training.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models import zoo
from models.demo.data import ClipSet, DemoData, FitStep, IndexedTensors, in_eval_mode
from models.training import TrainSettings
from models.video_diffusion import encode_prompts, to_unet_layout
from utils import layout
from utils.io import write_json
from utils.metrics import psnr_frames, ssim_frames

PREDICTION_TYPES = ("epsilon", "v_prediction")
MOVING_LEVEL = 25.0  # grey levels from a pixel's clip mean above which it counts as moving (the shape) in the VAE metrics
# The pipeline the exported folder is laid out for (diffusers' text-to-video pipeline of Zeroscope).
PIPELINE_CLASSES = {
    "scheduler": ("diffusers", "DPMSolverMultistepScheduler"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "unet": ("diffusers", "UNet3DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
}


@dataclass(frozen=True)
class VaeConfig:
    """Size and loss of the demo VAE (everything but the optimisation settings).

    block_out_channels: widths of the 4 encoder/decoder levels (3 downsamplings: 8x);
    kl_weight: weight of the KL term (mean over latent elements) next to the pixel MSE;
    sample_posterior: decode a posterior sample in training (a decoder robust to latent noise);
    motion_weight: the squared error of a pixel is weighted by 1 + motion_weight x its distance to
    its clip's mean frame (:func:`motion_weights`), so the small moving shape is not drowned by
    the static background it covers.
    """

    block_out_channels: tuple[int, ...] = (8, 16, 32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 4
    kl_weight: float = 1e-4
    sample_posterior: bool = True
    motion_weight: float = 3.0


@dataclass(frozen=True)
class UnetConfig:
    """Size and diffusion training of the demo UNet3D (everything but the optimisation settings).

    attention_head_dim: what diffusers' UNet3D passes as the number of attention heads;
    prediction_type: the scheduler's (and the loss target's), see the module docstring;
    uncond_prob: fraction of samples conditioned on the empty prompt (classifier-free guidance);
    max_timestep: training timesteps are drawn uniformly from [0, max_timestep);
    motion_weight: the squared error of a latent element is weighted by 1 + motion_weight x its
    distance to its clip's mean latent (channel mean), so the moving shape, a few latent pixels,
    weighs against the static background;
    train_frames: each training clip is a random window of this many of its 15 frames (None: all).
    The UNet3D is translation-equivariant in time (temporal convolutions, temporal attention
    without position embeddings), so windows teach the same model at a fraction of the cost.
    """

    block_out_channels: tuple[int, ...] = (32, 64)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D", "DownBlock3D")
    up_block_types: tuple[str, ...] = ("UpBlock3D", "CrossAttnUpBlock3D")
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 8
    prediction_type: str = "v_prediction"
    uncond_prob: float = 0.15
    max_timestep: int = 1000
    motion_weight: float = 1.0
    train_frames: int | None = 8
    val_timesteps: tuple[int, ...] = (100, 300, 500, 700, 800)
    metric_clips: int = 6

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {self.prediction_type!r}.")


VAE_TRAIN = TrainSettings(epochs=2, lr=3e-3, warmup_epochs=0.1, betas=(0.9, 0.99), min_lr_ratio=0.05, weight_decay=0.0, batch_size=8)
UNET_TRAIN = TrainSettings(epochs=20, lr=2e-3, warmup_epochs=0.5, betas=(0.9, 0.99), min_lr_ratio=0.05, weight_decay=0.0, batch_size=8,
                           val_every=10)


# ---------------------------------------------------------------- shared helpers


def signed_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) on any device -> float (N, 3, H, W) in [-1, 1] (what the VAE takes)."""
    return frames.float().div(127.5).sub(1.0).movedim(-1, -3)


# ---------------------------------------------------------------- VAE


def vae_config(config: VaeConfig) -> dict[str, Any]:
    """AutoencoderKL kwargs: 4 latent channels, 8x downsampling (4 levels), 64 px samples."""
    levels = len(config.block_out_channels)
    if levels != 4:
        raise ValueError(f"The demo VAE needs 4 levels (8x downsampling like Zeroscope's), got {config.block_out_channels}.")
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": list(config.block_out_channels), "layers_per_block": config.layers_per_block,
        "norm_num_groups": config.norm_num_groups, "sample_size": zoo.ZEROSCOPE_FRAME_SIZE["demo"], "scaling_factor": 1.0,
    }


def motion_weights(x: torch.Tensor, clip_mean: torch.Tensor, weight: float) -> torch.Tensor:
    """Pixel weights (N, 1, H, W): 1 + ``weight`` x the channel-mean |x - clip_mean| of frames x (N, 3, H, W) in [-1, 1]."""
    return 1.0 + weight * (x - clip_mean).abs().mean(dim=1, keepdim=True)


def vae_loss(model: nn.Module, x: torch.Tensor, kl_weight: float, sample: bool, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) pixel MSE of the decoding of x (N, 3, H, W) in [-1, 1] plus ``kl_weight`` x the KL per latent element."""
    dist = model.encode(x).latent_dist
    z = dist.sample() if sample else dist.mean  # (N, 4, H/8, W/8)
    error = (model.decode(z).sample - x).pow(2)  # (N, 3, H, W)
    kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
    return (error if weights is None else error * weights).mean() + kl_weight * kl


def posterior_means(model: nn.Module, frames: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """Unscaled posterior means of uint8 frames (N, H, W, 3) -> float32 (N, 4, H/8, W/8) on the CPU."""
    device = next(model.parameters()).device
    out = [model.encode(signed_frames(torch.from_numpy(frames[i : i + chunk]).to(device))).latent_dist.mean.float().cpu()
           for i in range(0, len(frames), chunk)]
    return torch.cat(out)


def round_trip(model: nn.Module, frames: np.ndarray, chunk: int = 64) -> np.ndarray:
    """uint8 frames (N, H, W, 3) -> encode (posterior mean) -> decode -> uint8 (N, H, W, 3)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(frames), chunk):
        x = signed_frames(torch.from_numpy(frames[i : i + chunk]).to(device))
        y = model.decode(model.encode(x).latent_dist.mean).sample.float()
        out.append(((y / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).movedim(1, -1).cpu().numpy())
    return np.concatenate(out)


def latent_scaling_factor(model: nn.Module, clips: ClipSet) -> float:
    """1 / std of the posterior means of the clips' target frames: scaled latents get unit std."""
    frames = clips.target_frames()
    with torch.no_grad():
        means = posterior_means(model, frames.reshape(-1, *frames.shape[2:]))
    return float(1.0 / means.double().std())


def vae_metrics(model: nn.Module, held_out: ClipSet) -> dict[str, Any]:
    """Held-out round trips (PSNR dB, grayscale Gaussian SSIM over every frame; PSNR over the moving pixels,
    mostly the shape) and the scaled latent statistics."""
    frames = held_out.frames.reshape(-1, *held_out.frames.shape[2:])  # (M*T, H, W, 3)
    recon = round_trip(model, frames)
    clip_means = np.repeat(held_out.frames.astype(np.float64).mean(axis=1), held_out.frames.shape[1], axis=0)  # (M*T, H, W, 3)
    moving = np.abs(frames - clip_means).mean(axis=-1) > MOVING_LEVEL  # (M*T, H, W): mostly the shape
    moving_mse = ((recon.astype(np.float64) - frames)[moving] ** 2).mean()
    target = held_out.target_frames()
    scale = float(model.config.scaling_factor)
    latents = posterior_means(model, target.reshape(-1, *target.shape[2:])) * scale
    return {
        "psnr": float(psnr_frames(recon, frames).mean()), "ssim": float(ssim_frames(recon, frames).mean()),
        "moving_psnr": float(10 * np.log10(255.0**2 / moving_mse)),
        "scaling_factor": scale, "latent_std": float(latents.std()), "latent_mean": float(latents.mean()),
    }


def vae_step(
    data: DemoData, data_root: str | Path | None, device: torch.device,
    settings: TrainSettings = VAE_TRAIN, config: VaeConfig = VaeConfig(),
) -> FitStep:
    """The VAE's FitStep: batches of single frames drawn from the target frames of every fit clip (the
    15 frames per clip that ``extract_targets_zeroscope`` encodes and reconstructions decode)."""
    from diffusers import AutoencoderKL

    clips = data.fit.target_frames()  # (N, 15, H, W, 3) uint8
    n, t = clips.shape[:2]
    frames = torch.from_numpy(clips.reshape(n * t, *clips.shape[2:]))  # (N*15, H, W, 3)
    clip_of_frame = torch.arange(n).repeat_interleave(t)  # (N*15,)
    clip_means = signed_frames(torch.from_numpy(data.fit.frames)).mean(dim=1).to(device)  # (N, 3, H, W)
    held = torch.from_numpy(data.held_out.frames.reshape(-1, *data.held_out.frames.shape[2:]))

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = signed_frames(batch[0])  # (B, 3, H, W)
        weights = motion_weights(x, clip_means[batch[1]], config.motion_weight)
        return vae_loss(model, x, config.kl_weight, config.sample_posterior, weights)

    def validate(model: nn.Module) -> dict[str, float]:
        def run() -> float:
            total = sum(float(vae_loss(model, signed_frames(held[i : i + 64].to(device)), config.kl_weight, False)) * len(held[i : i + 64])
                        for i in range(0, len(held), 64))
            return total / len(held)
        return {"val_loss": in_eval_mode(model, run)}

    def export(model: nn.Module, directory: Path) -> None:
        model.register_to_config(scaling_factor=latent_scaling_factor(model, data.fit))
        model.save_pretrained(directory)

    model = AutoencoderKL(**vae_config(config)).to(device)
    return FitStep(model, IndexedTensors(frames, clip_of_frame), loss, validate, export,
                   lambda model: vae_metrics(model, data.held_out), settings, asdict(config),
                   load=lambda directory: AutoencoderKL.from_pretrained(directory).to(device).eval())


# ---------------------------------------------------------------- text encoder


def text_tower(clip_dir: str | Path) -> tuple[nn.Module, Any]:
    """(CLIPTextModel with the fitted CLIP's text tower, frozen in eval mode; its CLIPTokenizer) from ``clip_dir``."""
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    clip = CLIPModel.from_pretrained(clip_dir)
    encoder = CLIPTextModel(clip.config.text_config)
    tower = getattr(encoder, "text_model", encoder)  # transformers < 5 wraps the tower, 5 is the tower
    tower.load_state_dict(clip.text_model.state_dict(), strict=True)
    encoder.requires_grad_(False)
    return encoder.eval(), CLIPTokenizer.from_pretrained(clip_dir)


def caption_states(encoder: nn.Module, tokenizer: Any, clips: ClipSet, device: torch.device) -> torch.Tensor:
    """Text states of every caption, clip by clip, then the empty prompt's: (N * captions + 1, 77, D) on ``device``.

    Row ``i * captions + j`` is caption j of clip i, the last row the empty prompt (guidance).
    """
    flat = [caption for group in clips.captions for caption in group] + [""]
    states = [encode_prompts(encoder, tokenizer, flat[i : i + 64], device) for i in range(0, len(flat), 64)]
    return torch.cat(states).float().clone()  # clone: a normal tensor, not an inference one


# ---------------------------------------------------------------- diffusion


def unet_config(config: UnetConfig, cross_attention_dim: int) -> dict[str, Any]:
    """UNet3DConditionModel kwargs: 4 channels in and out, 8 x 8 latents, cross-attention on the text states."""
    return {
        "sample_size": zoo.latent_size(zoo.ZEROSCOPE_FRAME_SIZE["demo"]), "in_channels": 4, "out_channels": 4,
        "down_block_types": list(config.down_block_types), "up_block_types": list(config.up_block_types),
        "block_out_channels": list(config.block_out_channels), "layers_per_block": config.layers_per_block,
        "norm_num_groups": config.norm_num_groups, "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": config.attention_head_dim,
    }


def scheduler_config(config: UnetConfig) -> dict[str, Any]:
    """DPMSolverMultistepScheduler kwargs: Zeroscope's betas (``zoo.tiny_scheduler_config``) and our prediction type."""
    return {**zoo.tiny_scheduler_config(), "prediction_type": config.prediction_type}


def noised(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, the model's target) for clean latents x0 (B, C, F, h, w), noise like x0 and timesteps t (B,).

    x_t = sqrt(a) x0 + sqrt(1 - a) noise with a = alphas_cumprod[t]; the target is the noise
    (epsilon) or v = sqrt(a) noise - sqrt(1 - a) x0 (v_prediction).
    """
    a = alphas_cumprod.to(x0.device)[t].view(-1, *([1] * (x0.ndim - 1)))
    signal, sigma = a.sqrt(), (1 - a).sqrt()
    x_t = signal * x0 + sigma * noise
    target = noise if prediction_type == "epsilon" else signal * noise - sigma * x0
    return x_t, target


def denoising_loss(
    model: nn.Module, x0: torch.Tensor, states: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
    alphas_cumprod: torch.Tensor, prediction_type: str, motion_weight: float = 0.0,
) -> torch.Tensor:
    """(Motion-weighted) MSE of the UNet's prediction on x0 (B, 4, F, h, w) noised to t (B,) with ``noise``,
    given text states (B, L, D); the weights (1 + ``motion_weight`` x |x0 - its clip's mean over frames|) are normalised to mean 1."""
    x_t, target = noised(alphas_cumprod, x0, noise, t, prediction_type)
    error = (model(x_t, t, encoder_hidden_states=states).sample.float() - target).pow(2)  # (B, 4, F, h, w)
    if motion_weight == 0:
        return error.mean()
    weights = 1.0 + motion_weight * (x0 - x0.mean(dim=2, keepdim=True)).abs().mean(dim=1, keepdim=True)  # (B, 1, F, h, w)
    return (error * weights).mean() / weights.mean()


def frame_windows(x: torch.Tensor, length: int | None) -> torch.Tensor:
    """A random window of ``length`` consecutive frames of each clip (B, C, F, h, w) -> (B, C, length, h, w) (global RNG)."""
    frames = x.shape[2]
    if length is None or length >= frames:
        return x
    start = torch.randint(frames - length + 1, (x.shape[0],), device=x.device)
    index = start[:, None] + torch.arange(length, device=x.device)  # (B, length)
    rows = torch.arange(x.shape[0], device=x.device)[:, None]
    return x.transpose(1, 2)[rows, index].transpose(1, 2)


def condition_rows(ids: torch.Tensor, n_captions: int, empty_row: int, uncond_prob: float) -> torch.Tensor:
    """Rows of :func:`caption_states` for clips ``ids`` (B,): a random caption of each clip, the empty
    prompt's row instead with probability ``uncond_prob`` (drawn from the global RNG)."""
    caption = torch.randint(n_captions, ids.shape, device=ids.device)
    empty = torch.rand(ids.shape, device=ids.device) < uncond_prob
    return torch.where(empty, torch.full_like(ids, empty_row), ids * n_captions + caption)


def clip_latents(vae: nn.Module, clips: ClipSet) -> torch.Tensor:
    """What ``models.targets.vae_latents`` stores for the clips' target frames, in UNet layout (N, 4, 15, h, w)."""
    from models.targets import vae_latents

    return to_unet_layout(vae_latents(vae, clips.target_frames(), clips.stimuli, mode="mean"))


def model_index() -> dict[str, Any]:
    """``model_index.json`` naming the parts like diffusers' ``TextToVideoSDPipeline`` (Zeroscope's)."""
    import diffusers

    return {"_class_name": "TextToVideoSDPipeline", "_diffusers_version": diffusers.__version__,
            **{part: list(pair) for part, pair in PIPELINE_CLASSES.items()}}


def load_vae(data_root: str | Path | None, device: torch.device) -> nn.Module:
    """The fitted demo VAE (``models_demo/zeroscope/vae``), in eval mode on ``device``."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(layout.demo_model_dir(data_root, layout.DEMO_MODEL_FOLDERS["vae"]))
    return vae.to(device).eval()


def sample_metrics(unet: nn.Module, vae: nn.Module, encoder: nn.Module, tokenizer: Any, scheduler: Any,
                   latents: torch.Tensor, clips: ClipSet, n_clips: int) -> dict[str, float]:
    """Video-to-video at the default settings from the true latents and first captions of ``n_clips`` held-out clips:
    mean SSIM / PSNR of the reconstructions against their own target frames and against the next clip's."""
    from models.video_diffusion import DiffusionSettings, VideoDiffusion

    n = min(n_clips, len(clips))
    if n < 2:
        return {}
    pipe = VideoDiffusion(vae, unet, encoder, tokenizer, scheduler)
    frames = pipe(latents[:n].to(unet.device), [c[0] for c in clips.captions[:n]], list(range(n)), DiffusionSettings())
    target = clips.target_frames()[:n]
    other = np.roll(target, -1, axis=0)
    return {
        "v2v_ssim": float(np.mean([ssim_frames(f, t).mean() for f, t in zip(frames, target, strict=True)])),
        "v2v_ssim_mismatched": float(np.mean([ssim_frames(f, t).mean() for f, t in zip(frames, other, strict=True)])),
        "v2v_psnr": float(np.mean([psnr_frames(f, t).mean() for f, t in zip(frames, target, strict=True)])),
        "v2v_psnr_mismatched": float(np.mean([psnr_frames(f, t).mean() for f, t in zip(frames, other, strict=True)])),
    }


def unet_step(
    data: DemoData, data_root: str | Path | None, device: torch.device,
    settings: TrainSettings = UNET_TRAIN, config: UnetConfig = UnetConfig(),
) -> FitStep:
    """The UNet's FitStep: each batch item a fit clip's latents, a random caption (or the empty one), a timestep and noise."""
    from diffusers import DPMSolverMultistepScheduler, UNet3DConditionModel

    vae = load_vae(data_root, device)
    encoder, tokenizer = text_tower(layout.demo_model_dir(data_root, layout.DEMO_MODEL_FOLDERS["clip"]))
    encoder = encoder.to(device)
    latents = clip_latents(vae, data.fit)  # (N, 4, 15, h, w)
    held_latents = clip_latents(vae, data.held_out)
    states = caption_states(encoder, tokenizer, data.fit, device)  # (N * 5 + 1, 77, D)
    held_states = caption_states(encoder, tokenizer, data.held_out, device)
    n_captions = len(data.fit.captions[0])
    scheduler = DPMSolverMultistepScheduler(**scheduler_config(config))
    alphas_cumprod = scheduler.alphas_cumprod.float()

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x0, ids = batch  # (B, 4, F, h, w), (B,) clip index
        x0 = frame_windows(x0, config.train_frames)
        b, dev = len(x0), x0.device
        rows = condition_rows(ids, n_captions, len(states) - 1, config.uncond_prob)
        t = torch.randint(config.max_timestep, (b,), device=dev)
        noise = torch.randn(x0.shape, device=dev)
        return denoising_loss(model, x0, states[rows], t, noise, alphas_cumprod, config.prediction_type, config.motion_weight)

    def validate(model: nn.Module) -> dict[str, float]:
        def run() -> float:
            generator = torch.Generator().manual_seed(settings.seed)
            noise = torch.randn((len(config.val_timesteps), *held_latents.shape), generator=generator).to(device)
            rows = torch.arange(len(held_latents), device=device) * n_captions  # the first caption of each clip
            values = [
                float(denoising_loss(model, held_latents.to(device), held_states[rows], torch.full((len(rows),), t, device=device),
                                     noise[k], alphas_cumprod, config.prediction_type))
                for k, t in enumerate(config.val_timesteps)
            ]
            return float(np.mean(values))
        return {"val_loss": in_eval_mode(model, run)}

    def export(model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory / "unet")
        encoder.save_pretrained(directory / "text_encoder")
        tokenizer.save_pretrained(directory / "tokenizer")
        scheduler.save_pretrained(directory / "scheduler")
        write_json(directory / "model_index.json", model_index())

    def metrics(model: nn.Module) -> dict[str, Any]:
        return {**validate(model), **sample_metrics(model, vae, encoder, tokenizer, scheduler, held_latents, data.held_out, config.metric_clips)}

    model = UNet3DConditionModel(**unet_config(config, int(encoder.config.hidden_size))).to(device)
    train = IndexedTensors(latents, torch.arange(len(latents)))
    return FitStep(model, train, loss, validate, export, metrics, settings, asdict(config),
                   load=lambda directory: UNet3DConditionModel.from_pretrained(directory / "unet").to(device).eval())
