"""models/zoo.py: tiny presets build offline and deterministically; absent real models fail clearly."""
from __future__ import annotations

import pytest
import torch

from models import zoo


@pytest.fixture(scope="module")
def tiny_zeroscope() -> dict:
    return zoo.load_zeroscope("tiny")


@pytest.fixture(scope="module")
def tiny_blip() -> tuple:
    return zoo.load_blip("tiny")


def test_zeroscope_tiny_shapes(tiny_zeroscope: dict) -> None:
    parts = tiny_zeroscope
    assert set(parts) == set(zoo.ZEROSCOPE_PARTS)
    assert type(parts["scheduler"]).__name__ == "DPMSolverMultistepScheduler"
    tokens = parts["tokenizer"](["a red circle moving left"], padding="max_length", max_length=77, return_tensors="pt")
    assert tokens.input_ids.shape == (1, 77)
    assert parts["tokenizer"].model_max_length == 77
    assert parts["tokenizer"].decode(tokens.input_ids[0], skip_special_tokens=True) == "a red circle moving left"
    with torch.no_grad():
        text = parts["text_encoder"](tokens.input_ids).last_hidden_state  # (1, 77, D)
        assert text.shape[-1] == parts["unet"].config.cross_attention_dim
        latents = parts["vae"].encode(torch.zeros(2, 3, 268, 268)).latent_dist.mean  # (2, 4, 33, 33)
        assert latents.shape == (2, 4, 33, 33) and zoo.latent_size(268) == 33
        noise = parts["unet"](torch.randn(1, 4, 3, 8, 8), 10, encoder_hidden_states=text).sample
        assert noise.shape == (1, 4, 3, 8, 8)
    assert parts["vae"].config.scaling_factor == pytest.approx(0.18215)


def test_zeroscope_parts_subset_and_bad_part() -> None:
    assert set(zoo.load_zeroscope("tiny", parts=("tokenizer", "scheduler"))) == {"tokenizer", "scheduler"}
    with pytest.raises(ValueError, match="Unknown Zeroscope parts"):
        zoo.load_zeroscope("tiny", parts=("vea",))
    with pytest.raises(ValueError, match="Unknown preset='huge'"):
        zoo.load_blip("huge")


def test_blip_tiny_vision_and_caption(tiny_blip: tuple) -> None:
    model, processor = tiny_blip
    size = zoo.blip_image_size("tiny")
    assert zoo.blip_image_size("default") == 240
    assert list(processor.image_processor.image_mean) == pytest.approx(zoo.BLIP_MEAN)
    with torch.no_grad():
        states = model.vision_model(pixel_values=torch.rand(2, 3, size, size), interpolate_pos_encoding=True).last_hidden_state
    assert states.shape == (2, zoo.blip_num_tokens(model, size), model.config.vision_config.hidden_size)
    prompt = processor.tokenizer("a picture of", return_tensors="pt").input_ids
    out = model.generate(pixel_values=torch.rand(1, 3, size, size), input_ids=prompt, max_length=12, min_length=4, num_beams=2)
    assert out[0, 0].item() == processor.tokenizer.bos_token_id == model.config.text_config.bos_token_id
    assert processor.decode(out[0], skip_special_tokens=True).startswith("a picture of")


def test_clip_and_classifiers_tiny() -> None:
    clip, processor = zoo.load_clip("tiny")
    size = zoo.clip_image_size("tiny")
    with torch.no_grad():
        image = clip.get_image_features(pixel_values=torch.rand(3, 3, size, size))
        image = getattr(image, "pooler_output", image)  # (3, projection_dim)
        tokens = processor.tokenizer(["a blue square"], padding=True, return_tensors="pt")
        text = clip.get_text_features(**tokens)
        text = getattr(text, "pooler_output", text)
    assert image.shape == (3, clip.config.projection_dim) and text.shape == (1, clip.config.projection_dim)
    vit, _ = zoo.load_image_classifier("tiny")
    video, _ = zoo.load_video_classifier("tiny")
    with torch.no_grad():
        assert vit(pixel_values=torch.rand(2, 3, 32, 32)).logits.shape == (2, 1000)
        frames = video.config.num_frames
        assert video(pixel_values=torch.rand(2, frames, 3, 32, 32)).logits.shape == (2, 400)


def test_tiny_builds_are_identical_and_leave_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    first, _ = zoo.load_blip("tiny")
    assert torch.equal(torch.rand(1), expected)  # the caller's RNG stream is untouched
    second, _ = zoo.load_blip("tiny")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    vae_a = zoo.load_zeroscope("tiny", parts=("vae",))["vae"].state_dict()
    vae_b = zoo.load_zeroscope("tiny", parts=("vae",))["vae"].state_dict()
    assert all(torch.equal(vae_a[k], vae_b[k]) for k in vae_a)


@pytest.mark.parametrize(
    ("loader", "model_id"),
    [
        (lambda: zoo.load_zeroscope("default", parts=("vae",)), zoo.ZEROSCOPE_ID),
        (lambda: zoo.load_blip("default"), zoo.BLIP_ID),
        (lambda: zoo.load_clip("default"), zoo.CLIP_ID),
        (lambda: zoo.load_image_classifier("default"), zoo.IMAGE_CLASSIFIER_ID),
        (lambda: zoo.load_video_classifier("default"), zoo.VIDEO_CLASSIFIER_ID),
    ],
)
def test_default_absent_offline_raises_clear_error(loader, model_id: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(zoo.ModelNotAvailableError) as info:
        loader()
    message = str(info.value)
    assert model_id in message and f"hf download {model_id}" in message and "--model-path" in message
    assert str(tmp_path) in message


def test_default_missing_model_path_names_it(tmp_path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(zoo.ModelNotAvailableError, match="no_such_model"):
        zoo.load_blip("default", model_path=missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(zoo.ModelNotAvailableError, match="local path .*empty"):
        zoo.load_zeroscope("default", model_path=tmp_path / "empty", parts=("vae",))


def test_model_source_for_manifests() -> None:
    assert zoo.model_source("default", None, zoo.BLIP_ID) == zoo.BLIP_ID
    assert zoo.model_source("tiny", None, zoo.BLIP_ID) == "tiny"
    assert zoo.model_source("default", "/models/blip", zoo.BLIP_ID) == "/models/blip"
    with pytest.raises(ValueError, match="Unknown preset='huge'"):
        zoo.model_source("huge", None, zoo.BLIP_ID)

