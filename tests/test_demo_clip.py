"""The demo's CLIP: class-aware contrastive targets, seeded fits, the training's view of a frame equal to the
evaluation path's, and an exported folder that CLIPModel / CLIPProcessor and the Zeroscope prompt encoder load."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import training, zoo
from models.demo import clip
from models.demo.classifiers import normalized, unit_range
from models.demo.data import load_demo_data
from models.demo.fit import LOG_COLUMNS
from models.video_diffusion import encode_prompts
from utils import layout, metrics
from utils.synthetic import make_demo

TINY = clip.ClipConfig(patch_size=16, hidden_size=16, intermediate_size=32, vision_layers=1, text_layers=1, num_heads=2, projection_dim=8)
TINY_TRAIN = training.TrainSettings(epochs=2, lr=1e-3, warmup_epochs=0.0, betas=(0.9, 0.98), batch_size=8)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, object]:
    """A small demo (16 fit and 4 held-out train clips) and its DemoData."""
    root = tmp_path_factory.mktemp("demo_clip") / "data"
    make_demo(root, n_subjects=1, n_train=20, n_test=2)
    return root, load_demo_data(root, held_out_every=5)


def fit_clip(data, root: Path, run_dir: Path, config: clip.ClipConfig = TINY) -> object:
    """Build the CLIP step under seed 0 and train it with ``models.training.fit`` into ``run_dir``."""
    accelerator = training.start("cpu", "float32", 0)
    built = clip.clip_step(data, root, accelerator.device, settings=TINY_TRAIN, config=config)
    training.fit(
        built.model, training.param_groups(built.model, built.settings.weight_decay), built.train_data, built.loss,
        built.settings, accelerator, run_dir, {"test": True}, {}, LOG_COLUMNS, validate=built.validate,
    )
    return built


def test_class_aware_targets_spread_over_the_same_class():
    classes = torch.tensor([3, 5, 3, 7])
    targets = clip.same_class_targets(classes, class_aware=True)
    expected = torch.tensor([[0.5, 0, 0.5, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 1]])
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(clip.same_class_targets(classes, class_aware=False), torch.eye(4))
    # Items 0 and 2 share a class: class-aware targets do not push their match down, identity targets do.
    for target, sign in ((targets, -1.0), (torch.eye(4), 1.0)):
        logits = torch.tensor([[5.0, 0.0, 5.0, 0.0], [0.0, 5.0, 0.0, 0.0], [5.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 5.0]], requires_grad=True)
        clip.soft_info_nce(logits, target).backward()
        assert sign * float(logits.grad[0, 2]) > 0


def test_fit_is_seeded_and_changes_the_weights(demo, tmp_path):
    root, data = demo
    first = fit_clip(data, root, tmp_path / "a")
    second = fit_clip(data, root, tmp_path / "b")
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    fresh = clip.clip_step(data, root, torch.device("cpu"), settings=TINY_TRAIN, config=TINY).model.state_dict()
    assert not all(torch.equal(a[k], fresh[k]) for k in a)


def test_export_loads_and_matches_the_evaluation_path(demo, tmp_path):
    from transformers import CLIPModel, CLIPProcessor, CLIPTextModel

    root, data = demo
    built = fit_clip(data, root, tmp_path / "run")
    built.model.eval()
    folder = layout.demo_model_dir(root, layout.DEMO_MODEL_FOLDERS["clip"])
    built.export(built.model, folder)
    model, processor = zoo.load_clip("default", model_path=folder)
    assert isinstance(model, CLIPModel) and isinstance(processor, CLIPProcessor)
    assert processor.image_processor.crop_size == {"height": 64, "width": 64}
    frames = data.held_out.target_frames()[0]  # (15, 64, 64, 3)
    evaluated = metrics.clip_image_embeddings(model, processor, frames)  # (15, D), the evaluation path
    with torch.no_grad():
        trained = clip.image_features(built.model, normalized(unit_range(torch.from_numpy(frames)), zoo.BLIP_MEAN, zoo.BLIP_STD))
    np.testing.assert_allclose(evaluated / np.linalg.norm(evaluated, axis=1, keepdims=True), trained.numpy(), atol=1e-5)
    # No caption piece is unknown (the unknown token is the end of text too), and the text tower serves as a Zeroscope text encoder.
    caption = data.fit.captions[0][0]
    ids = processor.tokenizer(caption)["input_ids"]
    assert ids.count(processor.tokenizer.eos_token_id) == 1 and ids[-1] == processor.tokenizer.eos_token_id
    text_encoder = CLIPTextModel.from_pretrained(folder)
    prompts = [caption, data.fit.captions[1][0]]
    states = encode_prompts(text_encoder, processor.tokenizer, prompts, "cpu")
    assert states.shape == (2, 77, TINY.hidden_size)
    torch.testing.assert_close(states, encode_prompts(built.model.text_model, processor.tokenizer, prompts, "cpu"))
    scores = built.metrics(built.model)
    assert {"retrieval_top1_clip", "frames_2way_identification", "text_state_top1_motion"} <= set(scores)
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_default_sizes_fit_the_zeroscope_text_encoder():
    config = clip.clip_config(zoo.clip_tokenizer(zoo.demo_words()), clip.ClipConfig())
    assert config.vision_config.image_size == zoo.CLIP_IMAGE_SIZE["demo"]
    assert config.text_config.max_position_embeddings == 77 and config.text_config.hidden_size == 64
