"""Segmentation, depth, normals and PSNR metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from featureflow import metrics as M


def test_confusion_and_miou_hand_computed():
    # 2 images, 2x3 pixels, classes {0,1,2,3}, ignore 255.
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]], [[0, 1, 1], [2, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]], [[0, 1, 0], [2, 0, 3]]])
    cm = M.confusion_matrix(pred, target, num_classes=4, ignore_index=255)
    # target 0: preds 0,1,0 ; target 1: preds 1,1,1,0 ; target 2: preds 2,2,0
    assert cm.tolist() == [[2, 1, 0, 0], [1, 3, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    iou = M.iou_per_class(cm)
    # class 0: tp 2, fp 2, fn 1 -> 2/5 ; class 1: tp 3, fp 1, fn 1 -> 3/5 ; class 2: 2/3 ; class 3 absent
    assert iou[:3].tolist() == pytest.approx([2 / 5, 3 / 5, 2 / 3])
    assert math.isnan(iou[3])
    assert M.miou(pred, target, 4, ignore_index=255) == pytest.approx((2 / 5 + 3 / 5 + 2 / 3) / 3)
    assert M.pixel_accuracy(pred, target, ignore_index=255) == pytest.approx(7 / 10)
    # batches add up
    cm0 = M.confusion_matrix(pred[:1], target[:1], 4, 255)
    cm1 = M.confusion_matrix(pred[1:], target[1:], 4, 255)
    assert torch.equal(cm0 + cm1, cm)


def test_class_predicted_but_absent_in_target_counts():
    target = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 1, 1])
    # class 0: 2/4 ; class 1: 0/2 -> present in prediction, counts as 0
    assert M.miou(pred, target, num_classes=3) == pytest.approx(0.25)


def test_segmentation_bad_inputs():
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        M.miou(torch.tensor([0, 5]), torch.tensor([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="target has class ids"):
        M.miou(torch.tensor([0, 1]), torch.tensor([0, 7]), num_classes=3, ignore_index=255)
    with pytest.raises(ValueError):
        M.miou(torch.tensor([0, 1]), torch.tensor([0, 1, 1]), num_classes=3)
    with pytest.raises(ValueError, match="undefined"):
        M.pixel_accuracy(torch.tensor([0]), torch.tensor([255]), ignore_index=255)
    with pytest.raises(ValueError):
        M.miou(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), num_classes=2)  # float prediction


def test_depth_hand_computed():
    target = torch.tensor([[1.0, 2.0], [4.0, 0.0]])  # last pixel invalid
    pred = torch.tensor([[1.2, 1.0], [4.0, 100.0]])
    # valid pairs: (1.2,1), (1,2), (4,4)
    assert M.abs_rel(pred, target) == pytest.approx((0.2 / 1 + 1.0 / 2 + 0) / 3)
    assert M.rmse(pred, target) == pytest.approx(math.sqrt((0.04 + 1.0 + 0) / 3))
    # ratios 1.2, 2, 1 -> two within 1.25, 1.25^2 = 1.5625 and 1.25^3 = 1.953
    m = M.depth_metrics(pred, target)
    assert m["delta1"] == pytest.approx(2 / 3)
    assert m["delta3"] == pytest.approx(2 / 3)
    assert M.delta_accuracy(pred, target, threshold=2.01) == pytest.approx(1.0)
    mask = torch.tensor([[True, False], [True, True]])
    assert M.abs_rel(pred, target, valid=mask) == pytest.approx(0.1)


def test_depth_bad_inputs():
    with pytest.raises(ValueError, match="no valid depth"):
        M.abs_rel(torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        M.rmse(torch.tensor([float("nan"), 1.0]), torch.ones(2))
    with pytest.raises(ValueError):
        M.rmse(torch.ones(3), torch.ones(2))


def _vec(theta_deg):
    a = math.radians(theta_deg)
    return [math.sin(a), 0.0, math.cos(a)]


def test_normals_hand_computed():
    angles = [5.0, 15.0, 25.0, 40.0]  # against +z
    pred = torch.tensor([_vec(a) for a in angles]).T.reshape(1, 3, 2, 2) * 3.0  # unnormalised on purpose
    target = torch.tensor([0.0, 0.0, 1.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    err = M.angular_error(pred, target)
    assert err.flatten().tolist() == pytest.approx(angles, abs=1e-3)
    m = M.normal_metrics(pred, target)
    assert m["mean"] == pytest.approx(21.25, abs=1e-3)
    assert m["median"] == pytest.approx(20.0, abs=1e-3)
    assert m["within_11.25"] == pytest.approx(25.0)
    assert m["within_22.5"] == pytest.approx(50.0)
    assert m["within_30"] == pytest.approx(75.0)
    target[0, :, 1, 1] = 0.0  # a zero target normal is invalid -> drops the 40° pixel
    m = M.normal_metrics(pred, target)
    assert m["mean"] == pytest.approx(15.0, abs=1e-3) and m["median"] == pytest.approx(15.0, abs=1e-3)


def test_normals_bad_inputs():
    with pytest.raises(ValueError):
        M.normal_metrics(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2))  # 2 channels, expected 3
    with pytest.raises(ValueError, match="no valid normal"):
        M.normal_metrics(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))


def test_psnr_hand_computed():
    target = torch.zeros(2, 3, 2, 2)
    pred = torch.zeros(2, 3, 2, 2)
    pred[0] = 0.1  # mse 0.01 -> 20 dB
    pred[1, 0, 0, 0] = 1.0  # mse 1/12 -> 10 log10(12)
    per = M.psnr(pred, target, reduction="none")
    assert per.tolist() == pytest.approx([20.0, 10 * math.log10(12)], abs=1e-4)
    assert M.psnr(pred, target) == pytest.approx((20.0 + 10 * math.log10(12)) / 2, abs=1e-4)
    assert M.psnr(pred * 255, target, data_range=255.0) == pytest.approx(M.psnr(pred, target), abs=1e-3)
    assert M.psnr(target, target) == math.inf
    with pytest.raises(ValueError, match="data_range"):
        M.psnr(pred, target, data_range=0.0)
