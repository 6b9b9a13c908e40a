"""The denoising loop (models/video_diffusion.py) and caption decoding (models/captioning.py), tiny preset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import zoo
from models.captioning import CaptionSettings, caption_embeddings, check_embedding, embedding_shape, prompt_ids, strip_prompt
from models.video_diffusion import (
    CONDITIONING_DEFAULTS,
    DiffusionSettings,
    VideoDiffusion,
    denoising_timesteps,
    encode_prompts,
    fresh_scheduler,
    to_unet_layout,
)
from utils.seeds import stimulus_seed

FRAMES, SIZE = 4, 8  # tiny latents (frames, 4, 8, 8) -> 64x64 frames
PROMPTS = ["a red ball", "a blue box"]



@pytest.fixture(scope="module")
def diffusion() -> VideoDiffusion:
    return VideoDiffusion.from_components(zoo.load_zeroscope("tiny"))


@pytest.fixture(scope="module")
def blip():
    return zoo.load_blip("tiny")


def latents(n: int = 2, seed: int = 0) -> torch.Tensor:
    """Target-layout latents (n, F, 4, h, w) -> UNet layout (n, 4, F, h, w)."""
    z = np.random.default_rng(seed).standard_normal((n, FRAMES, 4, SIZE, SIZE)).astype(np.float32)
    return to_unet_layout(z)


def test_layout_and_output_shapes(diffusion):
    z = latents()
    assert tuple(z.shape) == (2, 4, FRAMES, SIZE, SIZE)
    frames = diffusion(z, PROMPTS, [1, 2], DiffusionSettings(steps=4, strength=0.5))
    assert frames.shape == (2, FRAMES, 8 * SIZE, 8 * SIZE, 3) and frames.dtype == np.uint8
    assert frames.std() > 0


def test_strength_zero_returns_the_vae_decoding(diffusion):
    z = latents()
    frames = diffusion(z, PROMPTS, [1, 2], DiffusionSettings(steps=4, strength=0.0, decode_chunk=64))
    vae = diffusion.vae
    flat = z.permute(0, 2, 1, 3, 4).reshape(-1, 4, SIZE, SIZE) / vae.config.scaling_factor
    with torch.no_grad():
        image = vae.decode(flat).sample  # (2F, 3, H, W) in [-1, 1]
    expected = ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(frames, expected.reshape(2, FRAMES, 8 * SIZE, 8 * SIZE, 3).numpy())
    # decoding in chunks of 3 frames gives the same frames up to float rounding
    chunked = diffusion(z, PROMPTS, [1, 2], DiffusionSettings(strength=0.0, decode_chunk=3))
    assert np.abs(chunked.astype(int) - frames).max() <= 1


def test_same_seed_same_video_and_batching_does_not_matter(diffusion):
    z, settings = latents(), DiffusionSettings(steps=4, strength=0.5)
    first = diffusion(z, PROMPTS, [1, 2], settings)
    np.testing.assert_array_equal(first, diffusion(z, PROMPTS, [1, 2], settings))
    other = diffusion(z, PROMPTS, [3, 2], settings)
    assert np.abs(other[0].astype(int) - first[0]).mean() > 1.0  # new seed, new noise
    np.testing.assert_array_equal(other[1], first[1])  # the other clip keeps its own seed
    alone = diffusion(z[1:], PROMPTS[1:], [2], settings)
    assert np.abs(alone[0].astype(int) - first[1]).max() <= 1  # float rounding at most


def test_strength_one_starts_from_pure_noise(diffusion):
    settings = DiffusionSettings(steps=3, strength=1.0)
    a = diffusion(latents(1, seed=0), PROMPTS[:1], [5], settings)
    b = diffusion(latents(1, seed=1) * 3, PROMPTS[:1], [5], settings)
    np.testing.assert_array_equal(a, b)
    c = diffusion(latents(1, seed=1) * 3, PROMPTS[:1], [5], DiffusionSettings(steps=3, strength=0.7))
    assert np.abs(c.astype(int) - b).mean() > 1.0


def test_guidance_and_negative_prompt_change_the_result(diffusion):
    z = latents()
    base = diffusion(z, PROMPTS, [1, 2], DiffusionSettings(steps=4, strength=0.5))
    negative = diffusion(z, PROMPTS, [1, 2], DiffusionSettings(steps=4, strength=0.5, negative_prompt="dark"))
    unguided = diffusion(z, PROMPTS, [1, 2], DiffusionSettings(steps=4, strength=0.5, guidance_scale=1.0))
    assert np.abs(negative.astype(int) - base).mean() > 0.5
    assert np.abs(unguided.astype(int) - base).mean() > 0.5


@pytest.mark.parametrize(("strength", "count"), [(0.0, 0), (0.01, 0), (0.5, 10), (0.8, 16), (1.0, 20)])
def test_timesteps_follow_strength(diffusion, strength, count):
    scheduler = fresh_scheduler(diffusion.scheduler)
    steps = denoising_timesteps(scheduler, 20, strength, "cpu")
    assert len(steps) == count
    if count:
        assert torch.equal(steps, scheduler.timesteps[20 - count :])


def test_bad_inputs_are_refused(diffusion):
    with pytest.raises(ValueError, match="in_channels=4"):
        diffusion(torch.zeros(1, 3, FRAMES, SIZE, SIZE), PROMPTS[:1], [0], DiffusionSettings())
    with pytest.raises(ValueError, match="one prompt per clip"):
        diffusion(latents(), PROMPTS[:1], [0, 1], DiffusionSettings())
    with pytest.raises(ValueError, match="one seed per clip"):
        diffusion(latents(), PROMPTS, [0], DiffusionSettings(steps=2, strength=0.5))
    with pytest.raises(ValueError, match="strength"):
        DiffusionSettings(strength=1.5)
    with pytest.raises(ValueError, match=r"\(clips, frames, channels, h, w\)"):
        to_unet_layout(np.zeros((FRAMES, 4, SIZE, SIZE)))


def test_prompt_embeds_equal_their_prompts(diffusion):
    """The text encoder's own states of the prompts, fed as prompt_embeds, give the same clips (same noise)."""
    z = latents()
    embeds = encode_prompts(diffusion.text_encoder, diffusion.tokenizer, PROMPTS, diffusion.device)  # (2, 77, 32)
    assert tuple(embeds.shape) == (2, *diffusion.prompt_embeds_shape) == (2, 77, 32)
    for settings in (DiffusionSettings(steps=4, strength=0.5), DiffusionSettings(steps=4, strength=0.5, negative_prompt="dark")):
        from_text = diffusion(z, PROMPTS, [1, 2], settings)
        np.testing.assert_array_equal(diffusion(z, None, [1, 2], settings, prompt_embeds=embeds), from_text)
        np.testing.assert_array_equal(diffusion(z, None, [1, 2], settings, prompt_embeds=embeds.numpy()), from_text)
    swapped = diffusion(z, None, [1, 2], DiffusionSettings(steps=4, strength=0.5), prompt_embeds=embeds.flip(0))
    assert np.abs(swapped.astype(int) - from_text).mean() > 0.5  # the embeddings do condition the clips


def test_prompt_embeds_are_checked(diffusion):
    z, settings = latents(), DiffusionSettings(steps=2, strength=0.5)
    with pytest.raises(ValueError, match=r"\(2, 77, 32\).*hidden size 32.*found \(2, 77, 16\)"):
        diffusion(z, None, [0, 1], settings, prompt_embeds=torch.zeros(2, 77, 16))
    with pytest.raises(ValueError, match=r"tokenizer max length 77.*found \(2, 10, 32\)"):
        diffusion(z, None, [0, 1], settings, prompt_embeds=torch.zeros(2, 10, 32))
    with pytest.raises(ValueError, match=r"\(2, 77, 32\).*found \(1, 77, 32\)"):
        diffusion(z, None, [0, 1], settings, prompt_embeds=torch.zeros(1, 77, 32))
    with pytest.raises(ValueError, match="exactly one of prompts"):
        diffusion(z, PROMPTS, [0, 1], settings, prompt_embeds=torch.zeros(2, 77, 32))
    with pytest.raises(ValueError, match="exactly one of prompts"):
        diffusion(z, None, [0, 1], settings)


def test_conditioning_defaults_are_the_originals_second_path():
    assert (CONDITIONING_DEFAULTS.steps, CONDITIONING_DEFAULTS.strength) == (50, 0.3)
    assert CONDITIONING_DEFAULTS.guidance_scale == DiffusionSettings().guidance_scale
    assert CONDITIONING_DEFAULTS.negative_prompt == ""


def test_stimulus_seed_depends_on_seed_and_name_only():
    assert stimulus_seed(0, "0001") == stimulus_seed(0, "0001")
    assert len({stimulus_seed(0, "0001"), stimulus_seed(1, "0001"), stimulus_seed(0, "0002")}) == 3


def test_captions_from_embeddings_drop_the_prompt(blip):
    model, processor = blip
    shape = embedding_shape(model, zoo.blip_image_size("tiny"))
    assert shape == (17, 32)
    embeds = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    captions = caption_embeddings(model, processor, embeds, batch_size=2)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert not any(c.startswith("a picture of") for c in captions)
    # The decoder's raw output does start with the prompt, which is what gets cut.
    ids = prompt_ids(processor, model, "a picture of ")
    raw = model.text_decoder.generate(
        input_ids=ids, encoder_hidden_states=embeds[:1], eos_token_id=model.config.text_config.sep_token_id,
        pad_token_id=model.config.text_config.pad_token_id, **CaptionSettings().generate_kwargs(),
    )
    full = processor.tokenizer.decode(raw[0], skip_special_tokens=True)
    assert full.startswith("a picture of") and full.endswith(captions[0])
    assert caption_embeddings(model, processor, embeds.numpy(), batch_size=3) == captions  # batching/numpy input
    sampled = CaptionSettings(sample=True, seed=3)
    assert caption_embeddings(model, processor, embeds, sampled) == caption_embeddings(model, processor, embeds, sampled)


def test_caption_length_limits(blip):
    model, processor = blip
    embeds = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(1))
    short = caption_embeddings(model, processor, embeds, CaptionSettings(max_length=6, min_length=5))
    long = caption_embeddings(model, processor, embeds, CaptionSettings(max_length=14, min_length=14))
    for a, b in zip(short, long, strict=True):
        assert 1 <= len(a.split()) <= 2  # 6 tokens minus the 4 of "[DEC] a picture of"
        assert len(b) > len(a)


def test_embedding_checks_and_prompt_stripping():
    flat = np.arange(17 * 32, dtype=np.float64)
    assert check_embedding(flat, (17, 32)).shape == (17, 32)
    with pytest.raises(ValueError, match=r"expects \(17, 32\)"):
        check_embedding(np.zeros((16, 32)), (17, 32))
    assert strip_prompt("A picture of a dog running") == "a dog running"
    assert strip_prompt("a dog") == "a dog"
