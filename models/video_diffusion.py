"""Zeroscope video-to-video from given latents: our own small denoising loop.

The diffusers video pipelines are deprecated (no fixes after 0.33.1) and no longer take
latents in place of frames, so this module owns the loop: a diffusers scheduler (DPM-Solver
multistep for Zeroscope), ``UNet3DConditionModel`` and the ``AutoencoderKL`` decoder.

Flow for a batch of clips (B clips, C latent channels, F frames, h x w latent pixels):

1. ``encode_prompts``: captions and the negative prompt -> text states (B, L, D); or the
   caller gives the conditional states itself (``prompt_embeds``, e.g. predicted
   ``c_zeroscope`` (77, 1024)) and only the negative prompt is encoded.
2. ``denoising_timesteps``: the last ``int(steps * strength)`` timesteps of a ``steps``-step
   schedule (strength 0 -> none, strength 1 -> all of them).
3. ``initial_latents``: the given latents (B, C, F, h, w) re-noised to the first of those
   timesteps with per-clip seeded noise; strength 1 starts from pure noise instead.
4. ``denoise``: classifier-free guidance, ``noise = uncond + g * (cond - uncond)``; the UNet
   runs one clip (both guidance branches) per forward.
5. ``decode_latents``: ``latents / scaling_factor`` through the VAE decoder, a few frames of
   one clip at a time, -> uint8 frames (B, F, H, W, 3).

Determinism: a clip depends only on its latents, condition, seed and the settings, never on
the other clips of its batch: on CPU float32 its frames are bit-identical for every batch
size (tested). Batched UNet forwards or VAE chunks spanning clips round differently per batch
size, and 20 guided steps grow that to grey levels (up to 11 were seen).

Latents on disk follow the targets' layout (F, C, h, w) (``z_zeroscope``: (15, 4, 33, 33),
already multiplied by ``vae.config.scaling_factor``); ``to_unet_layout`` turns a stack of
them into (B, C, F, h, w). Strength 0 returns exactly the VAE decoding of the input latents.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DiffusionSettings:
    """Sampling settings. Defaults follow the original reconstruction (DATA_FORMATS section 4).

    steps: length of the full schedule; strength in [0, 1]: fraction of it that is run;
    guidance_scale: classifier-free guidance weight (<= 1 disables the unconditional pass;
    15.0 is the default of the Zeroscope video-to-video pipeline the original used);
    negative_prompt: text of the unconditional branch; decode_chunk: frames per VAE call.
    """

    steps: int = 20
    strength: float = 0.8
    guidance_scale: float = 15.0
    negative_prompt: str = ""
    decode_chunk: int = 8

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got steps={self.steps}.")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got strength={self.strength}.")
        if self.decode_chunk < 1:
            raise ValueError(f"decode_chunk must be >= 1, got decode_chunk={self.decode_chunk}.")


# The original's second path, conditioned on predicted prompt embeddings (c_zeroscope):
# 50 steps, strength 0.3 (DATA_FORMATS section 4); guidance and the rest as above.
CONDITIONING_DEFAULTS = DiffusionSettings(steps=50, strength=0.3)


def to_unet_layout(latents: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Stack of target-layout latents (B, F, C, h, w) -> UNet layout (B, C, F, h, w) float32."""
    tensor = torch.as_tensor(np.asarray(latents) if isinstance(latents, np.ndarray) else latents)
    if tensor.ndim != 5:
        raise ValueError(f"Expected latents of shape (clips, frames, channels, h, w), found {tuple(tensor.shape)}.")
    return tensor.permute(0, 2, 1, 3, 4).contiguous().float()


def encode_prompts(text_encoder, tokenizer, prompts: Sequence[str], device: torch.device | str) -> torch.Tensor:
    """Texts -> last hidden states (B, L, D) of the CLIP text encoder, padded to the tokenizer's max length."""
    tokens = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        states = text_encoder(tokens.input_ids.to(device))[0]  # (B, L, D)
    return states


def fresh_scheduler(scheduler):
    """A new scheduler with the same config, so no state carries over between calls."""
    return type(scheduler).from_config(scheduler.config)


def denoising_timesteps(scheduler, steps: int, strength: float, device: torch.device | str) -> torch.Tensor:
    """Set a ``steps``-step schedule and return its last ``int(steps * strength)`` timesteps.

    Also tells the scheduler where it starts (``set_begin_index``) so that ``add_noise`` and
    the first ``step`` use the right sigma.
    """
    scheduler.set_timesteps(steps, device=device)
    n_run = min(int(steps * strength), steps)
    start = (steps - n_run) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def seeded_noise(shape: tuple[int, ...], seeds: Sequence[int]) -> torch.Tensor:
    """Gaussian noise (B, *shape), clip i drawn on the CPU from ``seeds[i]`` (same on every device)."""
    noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
    return torch.stack(noise)


def initial_latents(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, strength: float) -> torch.Tensor:
    """Starting point of the loop (B, C, F, h, w).

    strength 0: the latents themselves; strength 1: pure noise (the input is ignored);
    otherwise the latents re-noised to ``timesteps[0]``.
    """
    if len(timesteps) == 0:
        return latents
    if strength >= 1.0:
        return noise * scheduler.init_noise_sigma
    start = timesteps[:1].repeat(latents.shape[0])
    return scheduler.add_noise(latents, noise, start)


def guided_noise(unet, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
    """UNet noise prediction (B, C, F, h, w) float32, with classifier-free guidance when ``uncond`` is given.

    cond/uncond: text states (B, L, D). The UNet runs one clip per forward (its two guidance
    branches together): batched convolutions round differently for other batch sizes, and that
    grows over the steps to grey levels, so this keeps a clip the same whatever its batch.
    """
    return torch.cat([
        clip_noise(unet, latents[i : i + 1], t, cond[i : i + 1], None if uncond is None else uncond[i : i + 1], guidance_scale)
        for i in range(latents.shape[0])
    ])


def clip_noise(unet, latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
    """Noise prediction of one clip (1, C, F, h, w); with ``uncond`` both branches go through the UNet as a batch of 2."""
    dtype = unet.dtype
    if uncond is None:
        return unet(latents.to(dtype), t, encoder_hidden_states=cond.to(dtype)).sample.float()
    model_in = torch.cat([latents, latents]).to(dtype)  # (2, C, F, h, w)
    states = torch.cat([uncond, cond]).to(dtype)  # (2, L, D)
    noise_uncond, noise_cond = unet(model_in, t, encoder_hidden_states=states).sample.float().chunk(2)
    return noise_uncond + guidance_scale * (noise_cond - noise_uncond)


def denoise(
    unet,
    scheduler,
    latents: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    seeds: Sequence[int],
    settings: DiffusionSettings,
    progress=None,
) -> torch.Tensor:
    """Re-noise ``latents`` (B, C, F, h, w) by ``settings.strength`` and denoise them; returns (B, C, F, h, w) float32.

    ``scheduler`` is copied, never changed. ``uncond`` None (or guidance_scale <= 1) disables
    guidance. ``progress``: optional callable run after each step (e.g. a tqdm ``update``).
    """
    if len(seeds) != latents.shape[0]:
        raise ValueError(f"Need one seed per clip: {latents.shape[0]} clips, {len(seeds)} seeds.")
    device = latents.device
    scheduler = fresh_scheduler(scheduler)
    timesteps = denoising_timesteps(scheduler, settings.steps, settings.strength, device)
    latents = latents.float()
    noise = seeded_noise(tuple(latents.shape[1:]), seeds).to(device)
    x = initial_latents(scheduler, latents, noise, timesteps, settings.strength)
    use_cfg = uncond is not None and settings.guidance_scale > 1.0
    step_kwargs = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        # Stochastic schedulers draw their step noise per clip too.
        step_kwargs["generator"] = [torch.Generator("cpu").manual_seed(int(s) + 1) for s in seeds]
    with torch.inference_mode():
        for t in timesteps:
            model_in = scheduler.scale_model_input(x, t)
            noise_pred = guided_noise(unet, model_in, t, cond, uncond if use_cfg else None, settings.guidance_scale)
            x = scheduler.step(noise_pred, t, x, **step_kwargs).prev_sample.float()
            if progress is not None:
                progress()
    return x


def decode_latents(vae, latents: torch.Tensor, chunk: int = 8) -> np.ndarray:
    """Latents (B, C, F, h, w) -> uint8 frames (B, F, H, W, 3), ``chunk`` frames of one clip per VAE call.

    Chunks never mix clips, so a clip's frames do not depend on the other clips of its batch.
    """
    clips = [decode_clip(vae, clip, chunk) for clip in latents]  # each (F, H, W, 3)
    return torch.stack(clips).numpy()


def decode_clip(vae, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """One clip's latents (C, F, h, w) -> uint8 frames (F, H, W, 3) on the CPU, ``chunk`` frames per VAE call."""
    frames = latents.permute(1, 0, 2, 3) / vae.config.scaling_factor  # (F, C, h, w)
    pieces = []
    with torch.inference_mode():
        for i in range(0, frames.shape[0], chunk):
            image = vae.decode(frames[i : i + chunk].to(vae.dtype)).sample.float()  # (n, 3, H, W) in [-1, 1]
            pieces.append(frames_to_uint8(image).cpu())
    return torch.cat(pieces)


def frames_to_uint8(image: torch.Tensor) -> torch.Tensor:
    """VAE output (n, 3, H, W) in [-1, 1] -> uint8 (n, H, W, 3)."""
    return ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


class VideoDiffusion:
    """Zeroscope video-to-video from latents, a batch of clips, one clip per UNet forward.

    Components are the objects of ``models.zoo.load_zeroscope``: vae, unet, text_encoder,
    tokenizer, scheduler; they should already be on ``device`` in their compute dtype.
    ``forward_chunking`` runs the UNet feed-forward layers in chunks to lower peak memory.
    """

    def __init__(self, vae, unet, text_encoder, tokenizer, scheduler, forward_chunking: bool = False) -> None:
        self.vae = vae
        self.unet = unet
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        for module in (vae, unet, text_encoder):
            module.eval()
        if forward_chunking:
            unet.enable_forward_chunking(chunk_size=1, dim=1)

    @classmethod
    def from_components(cls, components: dict, forward_chunking: bool = False) -> VideoDiffusion:
        """Build from the dict returned by ``models.zoo.load_zeroscope``."""
        missing = [k for k in ("vae", "unet", "text_encoder", "tokenizer", "scheduler") if k not in components]
        if missing:
            raise ValueError(f"Zeroscope components {missing} are missing; load them with models.zoo.load_zeroscope.")
        return cls(**{k: components[k] for k in ("vae", "unet", "text_encoder", "tokenizer", "scheduler")}, forward_chunking=forward_chunking)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def prompt_embeds_shape(self) -> tuple[int, int]:
        """(tokens, dim) of one clip's text states: (tokenizer max length, text encoder hidden size), (77, 1024) for Zeroscope."""
        return int(self.tokenizer.model_max_length), int(self.text_encoder.config.hidden_size)

    @property
    def latent_channels(self) -> int:
        """Channels the UNet expects (4 for Zeroscope)."""
        return int(self.unet.config.in_channels)

    def check_latents(self, latents: torch.Tensor) -> None:
        """Raise when UNet-layout latents (B, C, F, h, w) do not fit this model."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"Latents must be (clips, {self.latent_channels}, frames, h, w) for this model "
                f"(UNet in_channels={self.latent_channels}); found {tuple(latents.shape)}."
            )
        if latents.shape[1] != self.vae.config.latent_channels:
            raise ValueError(
                f"VAE latent_channels={self.vae.config.latent_channels} differs from UNet in_channels={self.latent_channels}."
            )

    def check_prompt_embeds(self, prompt_embeds: torch.Tensor, clips: int) -> None:
        """Raise when ``prompt_embeds`` is not (clips, tokens, dim) = (clips, *prompt_embeds_shape)."""
        expected = (clips, *self.prompt_embeds_shape)
        if tuple(prompt_embeds.shape) != expected:
            raise ValueError(
                f"prompt_embeds must be (clips, tokens, dim) = {expected} for this model (tokenizer max length "
                f"{expected[1]}, text encoder hidden size {expected[2]}); found {tuple(prompt_embeds.shape)}."
            )

    def __call__(
        self,
        latents: torch.Tensor,
        prompts: Sequence[str] | None,
        seeds: Sequence[int],
        settings: DiffusionSettings,
        progress=None,
        prompt_embeds: torch.Tensor | np.ndarray | None = None,
    ) -> np.ndarray:
        """Reconstruct clips: latents (B, C, F, h, w) scaled like the targets -> uint8 frames (B, F, H, W, 3).

        The clips are conditioned on ``prompts`` (B texts, encoded here) or, when ``prompts`` is
        None, on ``prompt_embeds`` (B, L, D) given directly (e.g. predicted ``c_zeroscope``);
        either way guidance runs against the negative prompt's encoding.
        """
        self.check_latents(latents)
        clips = latents.shape[0]
        if (prompts is None) == (prompt_embeds is None):
            raise ValueError("Give exactly one of prompts (texts) and prompt_embeds (clips, tokens, dim).")
        if prompt_embeds is not None:
            prompt_embeds = torch.as_tensor(prompt_embeds)
            self.check_prompt_embeds(prompt_embeds, clips)
        elif len(prompts) != clips:
            raise ValueError(f"Need one prompt per clip: {clips} clips, {len(prompts)} prompts.")
        latents = latents.to(self.device)
        if settings.strength > 0:
            if prompt_embeds is None:
                cond = encode_prompts(self.text_encoder, self.tokenizer, prompts, self.device)
            else:
                cond = prompt_embeds.to(self.device, self.text_encoder.dtype)
            uncond = None
            if settings.guidance_scale > 1.0:
                uncond = encode_prompts(self.text_encoder, self.tokenizer, [settings.negative_prompt] * clips, self.device)
            latents = denoise(self.unet, self.scheduler, latents, cond, uncond, seeds, settings, progress)
        return decode_latents(self.vae, latents, settings.decode_chunk)
