"""Ensemble metrics (mean-of-K, best-of-K, energy score/distance, coverage) by hand."""

from __future__ import annotations

import math

import pytest
import torch

from featureflow import metrics as M


def test_sample_scores_mean_and_best_of_k():
    samples = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]], [[0.0, 0.0], [1.0, 1.0], [1.0, 3.0]]])
    target = torch.tensor([[2.0, 2.0], [1.0, 1.0]])
    scores = M.sample_scores(M.rmse, samples, target)
    # rmse of (1,1),(2,2),(4,4) vs (2,2): 1, 0, 2 ; of (0,0),(1,1),(1,3) vs (1,1): 1, 0, sqrt(2)
    expected = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 2**0.5]], dtype=torch.float64)
    assert torch.allclose(scores, expected)
    assert M.mean_of_k(scores) == pytest.approx(((1 + 0 + 2) / 3 + (1 + 0 + 2**0.5) / 3) / 2)
    assert M.best_of_k(scores, higher_is_better=False) == pytest.approx(0.0)
    assert M.best_of_k(scores, higher_is_better=True) == pytest.approx((2.0 + 2**0.5) / 2)
    per = M.best_of_k(scores, higher_is_better=True, reduction="none")
    assert per.tolist() == pytest.approx([2.0, 2**0.5])


def test_best_of_k_with_segmentation_metric():
    target = torch.tensor([[0, 1, 1, 0]])
    samples = torch.tensor([[[0, 0, 0, 0], [0, 1, 1, 0]]])
    scores = M.sample_scores(lambda p, t: M.miou(p, t, 2), samples, target)
    # sample 0: class 0 IoU 2/4, class 1 IoU 0/2 -> 0.25 ; sample 1 exact -> 1
    assert torch.allclose(scores, torch.tensor([[0.25, 1.0]], dtype=torch.float64))
    assert M.best_of_k(scores, higher_is_better=True) == 1.0


def test_energy_score_hand_computed():
    # one example, 3 samples in 2-d, target at the origin
    samples = torch.tensor([[[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]]])
    target = torch.zeros(1, 2)
    first = (5.0 + 0.0 + 1.0) / 3
    pair = 2 * (5.0 + math.sqrt(9 + 9) + 1.0) / (3 * 2)  # ordered distinct pairs
    assert M.energy_score(samples, target) == pytest.approx(first - 0.5 * pair)
    # extra dims are flattened; batching gives one value per example
    s = torch.stack([samples[0], samples[0] * 2]).reshape(2, 3, 1, 2)
    t = torch.zeros(2, 1, 2)
    per = M.energy_score(s, t, reduction="none")
    assert per.tolist() == pytest.approx([first - 0.5 * pair, 2 * (first - 0.5 * pair)])


def test_energy_score_is_proper_in_expectation():
    # samples from the true distribution score better than a shifted forecast
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(400, 3, generator=g)
    good = torch.randn(400, 8, 3, generator=g)
    bad = good + 1.0
    assert M.energy_score(good, truth) < M.energy_score(bad, truth)


def test_energy_distance_hand_computed():
    x = torch.tensor([[[0.0], [2.0], [4.0]]])
    y = torch.tensor([[[1.0], [5.0]]])
    cross = (1 + 5 + 1 + 3 + 3 + 1) / 6
    within_x = 2 * (2 + 4 + 2) / 6
    within_y = 2 * 4 / 2
    assert M.energy_distance(x, y) == pytest.approx(2 * cross - within_x - within_y)
    assert M.energy_distance(y, x) == pytest.approx(M.energy_distance(x, y))
    g = torch.Generator().manual_seed(0)
    same = M.energy_distance(torch.randn(1, 300, 2, generator=g), torch.randn(1, 300, 2, generator=g))
    far = M.energy_distance(torch.randn(1, 300, 2, generator=g), torch.randn(1, 300, 2, generator=g) + 3)
    assert abs(same) < 0.05 < far


def test_coverage_hand_computed():
    samples = torch.tensor([[[0.0, 0.0], [10.0, 10.0]], [[1.0, 1.0], [1.0, 1.0]]])
    futures = torch.tensor([[[0.0, 1.0], [5.0, 5.0]], [[1.0, 2.5], [3.0, 1.0]]])
    # example 0: distances to nearest sample: 1, sqrt(50) ; example 1: 1.5, 2
    assert M.coverage(samples, futures, radius=1.5, distance="l2") == pytest.approx((1 + 1) / 4)
    per = M.coverage(samples, futures, radius=2.0, distance="l2", reduction="none")
    assert per.tolist() == pytest.approx([0.5, 1.0])
    # rms divides by sqrt(numel) = sqrt(2)
    assert M.coverage(samples, futures, radius=1.0 / math.sqrt(2), distance="rms") == pytest.approx(1 / 4)


def test_ensemble_bad_inputs():
    with pytest.raises(ValueError, match="k >= 2"):
        M.energy_score(torch.zeros(1, 1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError):
        M.energy_score(torch.zeros(2, 3, 4), torch.zeros(2, 5))  # trailing shapes differ
    with pytest.raises(ValueError, match="radius"):
        M.coverage(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), radius=-1.0)
    bad = torch.zeros(1, 2, 3)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        M.energy_score(bad, torch.zeros(1, 3))
