"""mIoU leaves an ignored class inside [0, K) out of the mean; ensemble CRPS per pixel."""

from __future__ import annotations

import itertools

import pytest
import torch

from featureflow import metrics
from featureflow.metrics import crps, miou, miou_from_confusion


def test_miou_leaves_an_ignored_class_inside_the_range_out_of_the_mean():
    target = torch.tensor([0, 1, 1, 2, 2, 2])
    pred = torch.tensor([1, 1, 0, 2, 2, 0])
    # target-0 pixel skipped; class 1: TP 1, FN 1 -> 1/2; class 2: TP 2, FN 1 -> 2/3;
    # class 0 (only predicted, twice) is ignored instead of counting with IoU 0
    assert miou(pred, target, num_classes=3, ignore_index=0) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # without ignoring, the target-0 pixel (predicted 1) counts: IoU 0, 1/3 (TP 1, FP 1, FN 1), 2/3
    assert miou(pred, target, num_classes=3) == pytest.approx((0 + 1 / 3 + 2 / 3) / 3)
    cm = metrics.confusion_matrix(pred, target, 3, ignore_index=0)
    assert miou_from_confusion(cm, ignore_index=0) == pytest.approx(7 / 12)
    assert miou(pred, target, num_classes=3, ignore_index=255) == miou(pred, target, num_classes=3)


def crps_by_hand(xs: list[float], y: float, fair: bool) -> float:
    k = len(xs)
    first = sum(abs(x - y) for x in xs) / k
    pairs = sum(abs(a - b) for a, b in itertools.product(xs, xs))
    return first - 0.5 * pairs / (k * (k - 1) if fair else k * k)


def test_crps_matches_hand_computation():
    # members 1, 2, 4 and truth 0: E|X-y| = 7/3, sum over ordered pairs = 12
    x = torch.tensor([[[1.0], [2.0], [4.0]]])
    y = torch.tensor([[0.0]])
    assert crps(x, y) == pytest.approx(7 / 3 - 0.5 * 12 / 9)  # 5/3
    assert crps(x, y, fair=True) == pytest.approx(7 / 3 - 0.5 * 12 / 6)  # 4/3
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(2, 5, 3, 4, generator=g)
    target = torch.randn(2, 3, 4, generator=g)
    per_pixel = crps(samples, target, reduction="pixel")
    assert per_pixel.shape == (2, 3, 4)
    for fair in (False, True):
        m = crps(samples, target, fair=fair, reduction="pixel")
        for b, i, j in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
            xs = samples[b, :, i, j].double().tolist()
            assert float(m[b, i, j]) == pytest.approx(crps_by_hand(xs, float(target[b, i, j]), fair), abs=1e-12)
    assert crps(samples, target) == pytest.approx(float(per_pixel.mean()))
    torch.testing.assert_close(crps(samples, target, reduction="none"), per_pixel.flatten(1).mean(1))


def test_crps_of_one_member_is_the_absolute_error_and_of_a_perfect_ensemble_zero():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 8, 8, generator=g) * 10
    y = torch.rand(3, 8, 8, generator=g) * 10
    torch.testing.assert_close(crps(x, y, reduction="pixel"), (x[:, 0] - y).abs().double())
    assert crps(y[:, None].expand(3, 4, 8, 8), y) == 0.0
    with pytest.raises(ValueError, match="fair CRPS needs at least 2 samples"):
        crps(x, y, fair=True)


def test_crps_valid_mask_skips_pixels_and_allows_infinite_truth_there():
    x = torch.tensor([[[1.0, 5.0], [3.0, 5.0]]])  # b=1, k=2, 2 pixels
    y = torch.tensor([[2.0, float("inf")]])
    valid = torch.isfinite(y) & (y > 0)
    assert crps(x, y, valid=valid) == pytest.approx(1.0 - 0.5 * 4 / 4)  # pixel 0 only: 0.5
    out = crps(x, y, valid=valid, reduction="pixel")
    assert out[0, 0] == pytest.approx(0.5) and bool(out[0, 1].isnan())
    with pytest.raises(ValueError, match="no valid elements"):
        crps(x, y, valid=torch.zeros_like(valid))
    with pytest.raises(ValueError, match="non-finite"):
        crps(x, y)
    assert "crps" in metrics.__all__
