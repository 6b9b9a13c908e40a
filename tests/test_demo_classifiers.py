"""The demo's image and video classifiers: factored head folded exactly, label-keeping augmentation,
seeded fits, and exported folders that the evaluation path loads."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from models import training, zoo
from models.demo import classifiers as cls
from models.demo.data import FACTORS, IMAGE_FACTORS, VIDEO_FACTORS, class_names, load_demo_data
from models.demo.fit import LOG_COLUMNS
from utils import layout, metrics
from utils.synthetic import make_demo
from utils.video import sample_indices

TINY = dict(patch_size=16, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2)
TINY_TRAIN = training.TrainSettings(epochs=1, lr=1e-3, warmup_epochs=0.0, betas=(0.9, 0.999), batch_size=16)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, object]:
    """A small demo (16 fit and 4 held-out train clips) and its DemoData."""
    root = tmp_path_factory.mktemp("demo_cls") / "data"
    make_demo(root, n_subjects=1, n_train=20, n_test=2)
    return root, load_demo_data(root, held_out_every=5)


def fit_step(builder, data, root: Path, run_dir: Path, **overrides) -> object:
    """Build a step under seed 0 and train it with ``models.training.fit`` into ``run_dir``."""
    accelerator = training.start("cpu", "float32", 0)
    built = builder(data, root, accelerator.device, **overrides)
    training.fit(
        built.model, training.param_groups(built.model, built.settings.weight_decay), built.train_data, built.loss,
        built.settings, accelerator, run_dir, {"test": True}, {}, LOG_COLUMNS, validate=built.validate,
    )
    return built


def factor_softmax_product(logits: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """The product of the factor softmaxes of factored logits (B, sum(sizes)) -> (B, prod(sizes)), first factor slowest."""
    joint = torch.ones(len(logits), 1, dtype=torch.float64)
    for part in logits.double().split(sizes, dim=1):
        joint = (joint[:, :, None] * part.softmax(dim=1)[:, None, :]).reshape(len(logits), -1)
    return joint


@pytest.mark.parametrize("factors", [IMAGE_FACTORS, VIDEO_FACTORS])
def test_folded_head_softmax_is_the_product_of_factor_softmaxes(factors):
    torch.manual_seed(0)
    sizes = cls.factor_sizes(factors)
    head = torch.nn.Linear(8, sum(sizes))
    folded = cls.fold_factored_head(head, sizes)
    x = torch.randn(5, 8)
    assert folded.out_features == len(class_names(factors))
    torch.testing.assert_close(folded(x).double().softmax(dim=1), factor_softmax_product(head(x), sizes), rtol=0, atol=1e-6)


def test_folded_class_order_is_class_names_order(demo):
    _, data = demo
    sizes = cls.factor_sizes(VIDEO_FACTORS)
    head = torch.nn.Linear(3, sum(sizes))
    with torch.no_grad():  # factor logits that single out each clip's own values
        head.weight.zero_()
        head.bias.zero_()
        for clip in range(3):
            offset = 0
            for factor, size in zip(VIDEO_FACTORS, sizes, strict=True):
                head.weight[offset + data.fit.labels[factor][clip], clip] = 1.0
                offset += size
    best = cls.fold_factored_head(head, sizes)(torch.eye(3)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(best, data.fit.class_ids(VIDEO_FACTORS)[:3])


def test_split_layers_reconstructs_the_frames(demo):
    _, data = demo
    layers = cls.split_layers(data.fit.frames, data.fit)
    rebuilt = cls.paste(layers.alpha, layers.colour, layers.background)  # (N, T, 3, H, W)
    error = (rebuilt - cls.unit_range(torch.from_numpy(data.fit.frames))).abs()
    assert float(error.mean()) < 0.01 and float((error > 0.05).float().mean()) < 0.02
    assert 0.01 < float(layers.alpha.mean()) < 0.2  # the shape covers a small part of each frame


def test_mirror_and_reversal_relabel_the_motion():
    motions = FACTORS["motion"]
    mirrored = cls.mirror_motion(motions, horizontal=True)
    reversed_ = cls.mirror_motion(motions, horizontal=False)
    assert [motions[i] for i in mirrored] == ["right", "left", "up", "down"]
    assert [motions[i] for i in reversed_] == ["right", "left", "down", "up"]
    x = torch.rand(64, 4, 3, 8, 8)
    labels = torch.tensor([[0, 0, 0, motions.index("up")]] * 64)
    torch.manual_seed(0)
    out, new, alpha = cls.flip_and_reverse(x, labels, torch.zeros(64, 4, 8, 8), 0.5, 3)
    reversed_clips = [bool(torch.equal(out[i], x[i].flip(0)) or torch.equal(out[i], x[i].flip(0).flip(-1))) for i in range(64)]
    assert all(new[i, 3] == motions.index("down" if r else "up") for i, r in enumerate(reversed_clips))
    assert 0 < sum(reversed_clips) < 64 and torch.equal(new[:, :3], labels[:, :3])


def test_augmentation_shifts_all_frames_of_a_clip_alike():
    torch.manual_seed(0)
    still = torch.rand(1, 1, 3, 16, 16).expand(2, 6, 3, 16, 16).contiguous()  # a clip without motion
    out, _ = cls.augment_clips(still, shift_px=3.0, blur_sigma=1.0, noise_std=0.0)
    assert torch.allclose(out[:, :1].expand_as(out), out)  # still no motion
    assert not torch.allclose(out, still)


def test_processors_see_what_the_training_sees(demo):
    _, data = demo
    frames = data.held_out.frames[0, :4]  # (4, 64, 64, 3)
    x = cls.unit_range(torch.from_numpy(frames))
    image = cls.image_processor()(images=list(frames), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(image, cls.normalized(x, cls.IMAGE_MEAN, cls.IMAGE_STD), rtol=0, atol=1e-5)
    video = cls.video_processor()([list(frames)], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(video, cls.normalized(x, zoo.IMAGENET_MEAN, zoo.IMAGENET_STD), rtol=0, atol=1e-5)


@pytest.mark.parametrize("step", ["image", "video"])
def test_fit_is_seeded_and_the_export_loads_for_evaluation(demo, tmp_path, step):
    root, data = demo
    builder = cls.image_step if step == "image" else cls.video_step
    base = cls.IMAGE_CONFIG if step == "image" else cls.VIDEO_CONFIG
    config = dataclasses.replace(base, **TINY, num_frames=4)
    first = fit_step(builder, data, root, tmp_path / "a", settings=TINY_TRAIN, config=config)
    second = fit_step(builder, data, root, tmp_path / "b", settings=TINY_TRAIN, config=config)
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    folder = layout.demo_model_dir(root, layout.DEMO_MODEL_FOLDERS[f"{step}_classifier"])
    first.model.eval()
    first.export(first.model, folder)
    loader = zoo.load_image_classifier if step == "image" else zoo.load_video_classifier
    model, processor = loader("default", model_path=folder)
    factors = IMAGE_FACTORS if step == "image" else VIDEO_FACTORS
    assert model.config.id2label == dict(enumerate(class_names(factors)))
    clips = data.held_out.target_frames()  # (M, 15, 64, 64, 3)
    sizes = cls.factor_sizes(factors)
    with torch.no_grad():
        if step == "image":
            probs = metrics.image_class_probs(model, processor, clips[0])  # (15, 96)
            pixels = processor(images=list(clips[0]), return_tensors="pt")["pixel_values"]
        else:
            probs = metrics.video_class_probs(model, processor, list(clips))  # (M, 384)
            picked = [list(c[sample_indices(len(c), model.config.num_frames)]) for c in clips]  # as video_class_probs
            pixels = processor(picked, return_tensors="pt")["pixel_values"]
        factored = first.model.model(pixel_values=pixels).logits  # the trained factored head
    np.testing.assert_allclose(probs, factor_softmax_product(factored, sizes).numpy(), atol=1e-5)
    scores = first.metrics(first.model)
    assert {f"top1_{f}" for f in factors} | {"top1_class", "top1_class_blurred"} <= set(scores)
    assert all(0.0 <= scores[k] <= 1.0 for k in scores if k.startswith("top1"))

