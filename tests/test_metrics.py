"""Known-answer tests of utils.metrics (vector, video and caption metrics)."""
from __future__ import annotations

import numpy as np
import pytest

from utils import metrics


def _old_n_way(pred, true, n_way, n_trials, seed):
    """The original loop of n_way_identification, kept here to pin its numbers."""
    n = len(pred)
    corr = metrics.correlation_matrix(pred, true)
    rng = np.random.default_rng(seed)
    correct = 0
    for i in range(n):
        others = np.delete(np.arange(n), i)
        for _ in range(n_trials):
            picks = rng.choice(others, size=n_way - 1, replace=False)
            correct += corr[i, i] > corr[i, picks].max()
    return correct / (n * n_trials)


def test_n_way_identification_unchanged_and_extremes():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(12, 30))
    noisy = true + rng.normal(scale=2.0, size=true.shape)
    for n_way in (2, 5):
        assert metrics.n_way_identification(noisy, true, n_way, 50, seed=3) == _old_n_way(noisy, true, n_way, 50, 3)
    assert metrics.n_way_identification(true, true, 2) == 1.0
    shuffled = metrics.n_way_identification(true[::-1], true, 2, 200)
    assert 0.2 < shuffled < 0.8
    with pytest.raises(ValueError, match="n_way=13"):
        metrics.n_way_identification(true, true, 13)


def test_n_way_from_scores_per_sample():
    scores = np.eye(6)
    scores[2] = -np.eye(6)[2]  # sample 2 always loses
    acc = metrics.n_way_from_scores(scores, n_way=3, n_trials=20)
    np.testing.assert_array_equal(acc, [1, 1, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="square"):
        metrics.n_way_from_scores(np.zeros((3, 4)))


def test_psnr_known_values():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    b[1] = 10  # mse 100 -> 10 log10(255^2/100)
    psnr = metrics.psnr_frames(b, a)
    assert psnr[0] == metrics.PSNR_CAP_DB
    assert psnr[1] == pytest.approx(10 * np.log10(255**2 / 100))
    assert np.isinf(metrics.psnr_frames(a, a, cap=None)).all()
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr_frames(a, a[:, :4])


def test_ssim_identical_constant_and_noise():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(metrics.ssim_frames(clip, clip), 1.0)
    np.testing.assert_allclose(metrics.ssim_frames(clip, clip, grayscale=False), 1.0)
    # Two constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly.
    a, b, c1 = 100.0, 150.0, (0.01 * 255) ** 2
    x = np.full((1, 20, 20), a)
    y = np.full((1, 20, 20), b)
    assert metrics.ssim_frames(x, y)[0] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    other = rng.integers(0, 256, size=clip.shape, dtype=np.uint8)
    noise = metrics.ssim_frames(clip, other)
    assert np.all(np.abs(noise) < 0.1)
    mild = np.clip(clip.astype(int) + rng.integers(-10, 11, clip.shape), 0, 255).astype(np.uint8)
    assert np.all(metrics.ssim_frames(mild, clip) > noise + 0.5)
    np.testing.assert_allclose(metrics.ssim_frames(mild, clip), metrics.ssim_frames(clip, mild))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        metrics.ssim_frames(clip[:, :8, :8], clip[:, :8, :8])


def test_match_frames_common_size_and_count():
    pred = np.zeros((15, 40, 40, 3), np.uint8)
    true = np.full((72, 64, 60, 3), 7, np.uint8)
    p, t = metrics.match_frames(pred, true)
    assert p.shape == t.shape == (15, 64, 60, 3)
    p, t = metrics.match_frames(pred, true, n_frames=5, size=32)
    assert p.shape == t.shape == (5, 32, 32, 3)
    assert (t == 7).all()


def test_n_way_classification_perfect_random_and_chance():
    rng = np.random.default_rng(0)
    n_clips, n_classes = 40, 60
    true = rng.dirichlet(np.ones(n_classes), size=n_clips)
    # Perfect: same probabilities -> the ground-truth class is always the top one.
    assert metrics.n_way_top1_classification(true, true, 50).min() == 1.0
    # Reconstruction that puts the least mass on the true class -> always wrong.
    worst = true.copy()
    top = true.argmax(axis=1)
    worst[np.arange(n_clips), top] = 0.0
    assert metrics.n_way_top1_classification(worst, true, 2).max() == 0.0
    # Unrelated predictions: mean near chance 1/n.
    random_pred = rng.dirichlet(np.ones(n_classes), size=n_clips)
    acc2 = metrics.n_way_top1_classification(random_pred, true, 2, n_trials=100).mean()
    acc50 = metrics.n_way_top1_classification(random_pred, true, 50, n_trials=100).mean()
    assert abs(acc2 - 0.5) < 0.1
    assert acc50 < 0.1
    # Seeded: same seed, same numbers; another seed, other draws.
    a = metrics.n_way_top1_classification(random_pred, true, 2, seed=5)
    np.testing.assert_array_equal(a, metrics.n_way_top1_classification(random_pred, true, 2, seed=5))
    assert not np.array_equal(a, metrics.n_way_top1_classification(random_pred, true, 2, seed=6))


def test_n_way_classification_top_k_and_errors():
    true = np.array([[0.5, 0.3, 0.2, 0.0, 0.0]])
    pred = np.array([[0.0, 0.0, 0.6, 0.2, 0.2]])  # best on the ground truth's 3rd class
    assert metrics.n_way_top1_classification(pred, true, 2, gt_top_k=1)[0] == 0.0
    assert metrics.n_way_top1_classification(pred, true, 2, gt_top_k=3)[0] == 1.0
    with pytest.raises(ValueError, match="needs at least 50 classes"):
        metrics.n_way_top1_classification(pred, true, 50)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        metrics.n_way_top1_classification(pred, true[:, :4], 2)


def test_clip_similarity_and_spatiotemporal():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert metrics.clip_frame_similarity(emb, emb) == pytest.approx(1.0)
    assert metrics.clip_frame_similarity(emb[:2], emb[1::-1]) == pytest.approx(0.0)
    still = np.tile([[0.3, 0.4]], (5, 1))
    assert metrics.spatiotemporal_score(still) == pytest.approx(1.0)
    assert metrics.spatiotemporal_score(emb[:2]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="at least 2 frames"):
        metrics.spatiotemporal_score(emb[:1])
    np.testing.assert_allclose(metrics.cosine_matrix(emb[:2], emb[:2]), np.eye(2), atol=1e-12)


def test_mean_sem():
    assert metrics.mean_sem(np.array([1.0, 3.0])) == (2.0, pytest.approx(1.0))
    assert metrics.mean_sem(np.array([4.0])) == (4.0, 0.0)
    with pytest.raises(ValueError):
        metrics.mean_sem(np.array([]))


def test_bleu_known_answers():
    refs = ["a dog runs on the grass", "a brown dog is running"]
    assert metrics.bleu("a dog runs on the grass", refs) == pytest.approx(1.0)
    assert metrics.bleu("quantum chromodynamics lecture", refs) == 0.0
    assert metrics.bleu("", refs) == 0.0
    partial = metrics.bleu("a dog runs in the park", refs)
    assert 0.0 < partial < 1.0
    # Unigram precision 2/2 with brevity penalty exp(1 - 5/2) for "a dog" (closest ref length 5).
    assert metrics.bleu("a dog", refs, max_n=1) == pytest.approx(np.exp(1 - 5 / 2))
    # Clipping: "dog dog dog" matches "dog" once per reference occurrence.
    assert metrics.bleu("dog dog dog", ["the dog"], max_n=1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="reference"):
        metrics.bleu("a", [])


def test_caption_text_similarity():
    human = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert metrics.caption_text_similarity(np.array([2.0, 0.0]), human) == pytest.approx(1.0)
    assert metrics.caption_text_similarity(np.array([0.0, 1.0]), human) == pytest.approx(0.0)


def test_classification_chance_matches_random_probabilities():
    rng = np.random.default_rng(0)
    pred, true = rng.random((400, 60)), rng.random((400, 60))
    for n_way, k in ((2, 1), (2, 3), (10, 3)):
        acc = metrics.n_way_top1_classification(pred, true, n_way, n_trials=50, gt_top_k=k, seed=1).mean()
        assert abs(acc - metrics.classification_chance(n_way, k)) < 0.03
