"""The demo BLIP fit step (models/demo/blip.py) on a small synthetic world, with tiny sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import targets, training, zoo
from models.captioning import caption_embeddings
from models.demo import blip
from models.demo.data import FACTORS, load_demo_data
from models.demo.fit import LOG_COLUMNS
from models.training import TrainSettings
from utils import layout
from utils.datasets import DEMO, stimulus_path
from utils.synthetic import make_demo

TINY = blip.BlipFitSettings(
    vision_width=16, vision_layers=1, text_width=16, text_layers=1, heads=2, examples=1,
    train=TrainSettings(epochs=8, lr=1e-2, warmup_epochs=0.5, betas=(0.9, 0.98), batch_size=6),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data root, DemoData): 20 train clips of 32 px, 16 frames (18 fit, 2 held out)."""
    root = tmp_path_factory.mktemp("blip_world")
    make_demo(root, n_subjects=1, n_train=20, n_test=2, size=32, n_frames=16)
    return root, load_demo_data(root)


def fit_tiny(world, run_dir):
    """A tiny step fitted for TINY's epochs into ``run_dir``; returns (step, last weights)."""
    root, data = world
    accelerator = training.start("cpu", "float32", 0)
    step = blip.blip_step(data, root, accelerator.device, settings=TINY)
    training.fit(step.model, training.param_groups(step.model, TINY.train.weight_decay), step.train_data, step.loss,
                 step.settings, accelerator, run_dir, {"test": 1}, {}, LOG_COLUMNS, validate=step.validate)
    return step, training.read_safetensors(layout.weights_path(run_dir, "last"))


def test_training_frames_are_the_extract_path(world):
    """The frames trained on are extract_targets_blip's (sampling, squash to 64 px), and the average
    with gradients equals targets.blip_embeddings (the stored target)."""
    root, data = world
    frames = blip.target_frames(data.held_out)  # (2, 15, 64, 64, 3)
    loader = targets.frame_loader(targets.N_FRAMES, {"blip": targets.squash_resize(blip.IMAGE_SIZE)})
    for i, stimulus in enumerate(data.held_out.stimuli):
        np.testing.assert_array_equal(frames[i], loader(stimulus_path(root, DEMO, stimulus)).views["blip"])
    step = blip.blip_step(data, root, torch.device("cpu"), settings=TINY)
    with torch.no_grad():
        ours = blip.averaged_states(step.model.blip, torch.from_numpy(frames)).numpy()
    stored = targets.blip_embeddings(step.model.blip, frames, zoo.BLIP_MEAN, zoo.BLIP_STD)
    assert ours.shape == (2, 1 + (64 // TINY.patch_size) ** 2, TINY.vision_width)
    np.testing.assert_allclose(ours, stored, rtol=0, atol=1e-6)


def test_caption_tokens(world):
    """Every caption is known words after BOS and the prompt; only caption tokens carry labels."""
    _, data = world
    tokenizer = blip.build_processor().tokenizer
    length = blip.caption_length(tokenizer, [data.fit])
    ids, mask, labels = blip.tokenize_captions(tokenizer, data.fit, length)
    assert ids.shape == (len(data.fit), 5, length)
    assert (ids[..., 0] == tokenizer.bos_token_id).all()
    assert not (ids == tokenizer.unk_token_id).any()
    n = blip.prompt_length(tokenizer)
    assert tokenizer.decode(ids[0, 0, 1:n]) == "a picture of"
    assert (labels[..., :n] == -100).all()
    assert ((labels != -100) == (mask.bool() & (torch.arange(length) >= n))).all()
    assert blip.caption_text("A Red circle moves up.") == "a picture of a red circle moves up"


def test_augment():
    """clean rows are the input; degraded rows are shrunk toward the batch mean plus noise."""
    states = torch.randn(4, 5, 8)
    clean = blip.augment(states, 3, blip.BlipFitSettings(clean_fraction=1.0))
    assert torch.equal(clean, states.repeat_interleave(3, dim=0))
    squash = blip.augment(states, 2, blip.BlipFitSettings(clean_fraction=0.0, shrink=(0.0, 0.0), noise=(0.0, 0.0)))
    assert torch.allclose(squash, states.mean(dim=0, keepdim=True).expand(8, 5, 8), atol=1e-6)
    noisy = blip.augment(states, 2, blip.BlipFitSettings(clean_fraction=0.0, shrink=(1.0, 1.0), noise=(1.0, 1.0)))
    rms = (states - states.mean(dim=0)).pow(2).mean().sqrt()
    assert abs(float((noisy - states.repeat_interleave(2, dim=0)).std()) - float(rms)) < 0.25 * float(rms)


def test_caption_scores_read_the_human_captions(world):
    """Each human caption template names exactly its clip's shape, colour, background and motion."""
    _, data = world
    clips = data.fit
    for k in range(5):
        scores = blip.caption_scores([c[k] for c in clips.captions], clips)
        assert all(v == 1.0 for v in scores.values()), (k, scores)
    found = blip.named("a red box slides from right to left over a pale blue sky")
    assert found == {"shape": {"square"}, "colour": {"red"}, "background": {"sky"}, "motion": {"left"}}
    assert blip.named("the white kite is rising against a striped backdrop")["motion"] == {"up"}
    labels = zip(clips.labels["colour"], clips.labels["shape"], strict=True)
    wrong = [f"a {FACTORS['colour'][(c + 1) % 6]} {FACTORS['shape'][(s + 1) % 4]}" for c, s in labels]
    assert blip.caption_scores(wrong, clips)["shape_or_colour"] == 0.0


def test_fit_is_deterministic_and_learns(world, tmp_path):
    """Two tiny fits give identical weights; the held-out LM loss falls below its value at init."""
    root, data = world
    initial = blip.blip_step(data, root, torch.device("cpu"), settings=TINY)
    before = initial.validate(initial.model)["val_loss"]
    step, first = fit_tiny(world, tmp_path / "a")
    _, second = fit_tiny(world, tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    training.load_state_strict(step.model, first, "last")
    assert step.validate(step.model)["val_loss"] < before - 0.5


def test_export_round_trip_and_metrics(world, tmp_path):
    """The exported folder loads with from_pretrained (model and processor) and decodes the same
    captions as the model in memory; metrics hold every score."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    root, data = world
    step, state = fit_tiny(world, tmp_path / "run")
    training.load_state_strict(step.model, state, "last")
    step.model.eval()
    step.export(step.model, tmp_path / "blip")
    model = BlipForConditionalGeneration.from_pretrained(tmp_path / "blip").eval()
    processor = BlipProcessor.from_pretrained(tmp_path / "blip")
    ours = blip.build_processor()
    assert processor.tokenizer.get_vocab() == ours.tokenizer.get_vocab()
    assert processor.tokenizer.bos_token == "[DEC]"
    image = processor.image_processor
    assert (image.size["height"], image.size["width"]) == (64, 64)
    assert tuple(image.image_mean) == zoo.BLIP_MEAN and tuple(image.image_std) == zoo.BLIP_STD
    frames = blip.target_frames(data.fit)[:4]
    emb = targets.blip_embeddings(step.model.blip, frames, zoo.BLIP_MEAN, zoo.BLIP_STD)
    loaded = targets.blip_embeddings(model, frames, image.image_mean, image.image_std)
    np.testing.assert_array_equal(emb, loaded)
    assert caption_embeddings(model, processor, loaded) == caption_embeddings(step.model.blip, ours, emb)
    with torch.inference_mode():
        metrics = step.metrics(step.model)
    for condition in ("true", "degraded"):
        for key in ("shape", "colour", "background", "motion_axis", "motion", "shape_and_colour", "shape_or_colour"):
            assert 0.0 <= metrics[f"{condition}_{key}"] <= 1.0
        assert len(metrics[f"{condition}_examples"]) == 1
    assert metrics["embedding_shape"] == [17, TINY.vision_width] and np.isfinite(metrics["val_loss"])
