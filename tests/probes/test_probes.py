"""Task heads and light heads: shapes, value invariants, losses, round trips, errors."""

import json
import math

import pytest
import torch

from featureflow.probes import (
    ConvDecoderHead,
    DepthHead,
    DPTHead,
    LinearHead,
    NormalsHead,
    RGBHead,
    SegmentationHead,
)
from featureflow.typing import ShapeError
from featureflow.utils import build_component, load_safetensors, save_json, save_safetensors

D = 16


def feats(b=2, h=3, w=4, d=D):
    return torch.randn(b, h, w, d)


# ---------------------------------------------------------------- base heads


def test_linear_head_is_per_patch_linear_then_bilinear():
    head = LinearHead(D, 5, batch_norm=False)
    x = feats()
    native = head(x)
    expected = torch.einsum("bhwd,cd->bchw", x, head.linear.weight[:, :, 0, 0]) + head.linear.bias[None, :, None, None]
    assert native.shape == (2, 5, 3, 4)
    assert torch.allclose(native, expected, atol=1e-5)
    up = head(x, size=(12, 16))
    ref = torch.nn.functional.interpolate(native, size=(12, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(up, ref, atol=1e-6)


def test_linear_head_batch_norm_normalises_features():
    head = LinearHead(D, 2, batch_norm=True).train()
    x = feats(4) * 10 + 3
    head(x)  # updates running stats
    assert head.norm.running_mean.abs().sum() > 0
    assert "norm.running_var" in head.state_dict()


def test_conv_decoder_native_resolution():
    head = ConvDecoderHead(D, out_channels=3, hidden_dim=16, num_upsamples=3)
    assert head.upsample_factor == 8
    assert head(feats()).shape == (2, 3, 24, 32)
    assert head(feats(), size=(20, 30)).shape == (2, 3, 20, 30)
    assert head(feats(), size=[20, 30]).shape == (2, 3, 20, 30)  # a size read back from JSON
    with pytest.raises(ValueError, match="size must be"):
        head(feats(), size=[20, 30, 1])


# ---------------------------------------------------------------- segmentation


def test_segmentation_predict_and_probabilities():
    seg = SegmentationHead(LinearHead(D, 4), num_classes=4).eval()
    x = feats()
    pred = seg.predict(x, size=(9, 12))
    assert pred.dtype == torch.int64 and pred.shape == (2, 9, 12)
    assert int(pred.min()) >= 0 and int(pred.max()) < 4
    probs = seg.probabilities(x, size=(9, 12))
    assert torch.allclose(probs.sum(1), torch.ones(2, 9, 12), atol=1e-5)
    assert torch.equal(probs.argmax(1), pred)


def test_segmentation_loss_matches_cross_entropy_with_ignore():
    seg = SegmentationHead(LinearHead(D, 3), num_classes=3, ignore_index=255).eval()
    x = feats()
    target = torch.randint(0, 3, (2, 6, 8))
    target[0, :2] = 255
    logits = seg(x, size=(6, 8))
    keep = target != 255
    manual = -logits.log_softmax(1).gather(1, target.clamp(max=2)[:, None])[:, 0][keep].mean()
    assert torch.allclose(seg.loss(x, target), manual, atol=1e-6)
    all_ignored = torch.full((2, 6, 8), 255)
    assert seg.loss(x, all_ignored).item() == 0.0


def test_segmentation_bad_labels():
    seg = SegmentationHead(LinearHead(D, 3), num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 3\).*found 7"):
        seg.loss(feats(), torch.full((2, 6, 8), 7))
    with pytest.raises(ShapeError):
        seg.loss(feats(), torch.zeros(2, 6, 8))  # float labels
    with pytest.raises(ValueError, match="3 output channels"):
        SegmentationHead(LinearHead(D, 4), num_classes=3)


# ---------------------------------------------------------------- depth


def test_depth_bins_decoding_exact_for_one_hot_and_in_range():
    for rule in ("argmax", "expectation"):
        head = DepthHead(LinearHead(D, 256), min_depth=2.0, max_depth=50.0, mode="bins", bin_prediction=rule)
        values = head.bin_values
        assert values.shape == (256,) and values[0] == 2.0 and values[-1] == 50.0
        raw = torch.zeros(1, 256, 2, 3)
        bins = torch.tensor([[0, 17, 128], [200, 254, 255]])
        raw.scatter_(1, bins[None, None], 1e4)  # one-hot logits
        assert torch.equal(head.decode(raw), values[bins][None])
        d = head.predict(feats(), size=(6, 8))
        assert bool(((d >= 2.0) & (d <= 50.0)).all())


def test_depth_bins_follow_released_quantisation():
    head = DepthHead(LinearHead(D, 256), min_depth=5.0, max_depth=10.0, mode="bins")
    depth = torch.tensor([4.0, 5.0, 7.5, 9.99, 10.0, 12.0])
    # released: uint8(clip((d - min) / (max - min), 0, 1) * 255)
    expected = [0, 0, math.floor(0.5 * 255), math.floor(4.99 / 5 * 255), 255, 255]
    assert head.depth_to_bins(depth).tolist() == expected
    assert head.predict_bins(feats(), size=(4, 4)).dtype == torch.int64


def test_depth_continuous_modes():
    for mode in ("log", "range"):
        head = DepthHead(LinearHead(D, 1), min_depth=0.5, max_depth=20.0, mode=mode)
        d = head.predict(feats() * 10, size=(6, 8))
        assert d.shape == (2, 6, 8)
        assert bool(((d >= 0.5) & (d <= 20.0)).all())
    log_head = DepthHead(LinearHead(D, 1), min_depth=0.5, max_depth=20.0, mode="log")
    raw = torch.log(torch.tensor([1.0, 4.0, 8.0]) / 0.5).view(1, 1, 1, 3)
    assert torch.allclose(log_head.decode(raw), torch.tensor([[[1.0, 4.0, 8.0]]]), atol=1e-5)


def test_depth_loss_ignores_invalid_pixels():
    head = DepthHead(LinearHead(D, 1), min_depth=0.5, max_depth=20.0, mode="log").eval()
    x = feats()
    target = torch.full((2, 6, 8), 3.0)
    raw = head(x, size=(6, 8))[:, 0]
    manual = (raw - math.log(3.0 / 0.5)).abs()
    target[0, 0, 0] = float("nan")
    target[1, 2, 3] = 0.0
    keep = torch.ones(2, 6, 8, dtype=torch.bool)
    keep[0, 0, 0] = keep[1, 2, 3] = False
    assert torch.allclose(head.loss(x, target), manual[keep].mean(), atol=1e-6)
    bins = DepthHead(LinearHead(D, 8), min_depth=0.0, max_depth=1.0, mode="bins", num_bins=8)
    assert torch.isfinite(bins.loss(x, torch.rand(2, 6, 8)))
    assert bins.loss(x, torch.zeros(2, 6, 8)).item() == 0.0  # nothing valid


def test_depth_bad_config():
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        DepthHead(LinearHead(D, 1), min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match="mode"):
        DepthHead(LinearHead(D, 1), min_depth=1.0, max_depth=5.0, mode="metric")
    with pytest.raises(ValueError, match="256 output channels"):
        DepthHead(LinearHead(D, 1), min_depth=1.0, max_depth=5.0, mode="bins")
    with pytest.raises(ValueError, match="needs mode='bins'"):
        DepthHead(LinearHead(D, 1), min_depth=1.0, max_depth=5.0).predict_bins(feats())


# ---------------------------------------------------------------- normals


def test_normals_unit_length_and_angular_loss():
    head = NormalsHead(LinearHead(D, 3)).eval()
    x = feats()
    n = head.predict(x, size=(6, 8))
    assert n.shape == (2, 3, 6, 8)
    assert torch.allclose(n.norm(dim=1), torch.ones(2, 6, 8), atol=1e-5)
    # Loss against its own prediction is ~0; against the opposite it is ~pi.
    assert head.loss(x, n.detach()).item() < 1e-2
    assert abs(head.loss(x, -n.detach()).item() - math.pi) < 1e-2
    # decode keeps unit vectors unchanged and maps a zero vector to +z.
    raw = torch.zeros(1, 3, 2, 2)
    raw[:, 0] = 1.0
    assert torch.equal(head.decode(raw), raw)
    assert torch.equal(head.decode(torch.zeros(1, 3, 1, 1))[0, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    target = n.detach().clone()
    target[:, :, 0, 0] = 0.0  # no normal there -> ignored
    assert head.loss(x, target).item() < 1e-2


# ---------------------------------------------------------------- rgb


def test_rgb_in_unit_range_and_l1_loss():
    head = RGBHead(ConvDecoderHead(D, hidden_dim=16, num_upsamples=2)).eval()
    x = feats() * 100
    img = head.predict(x, size=(12, 16))
    assert img.shape == (2, 3, 12, 16)
    assert bool(((img >= 0) & (img <= 1)).all())
    target = torch.rand(2, 3, 12, 16)
    assert torch.allclose(head.loss(x, target), (img - target).abs().mean(), atol=1e-6)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        head.loss(x, target * 255)
    with pytest.raises(ValueError, match="3 output channels"):
        RGBHead(LinearHead(D, 4))


# ---------------------------------------------------------------- contract


def _all_heads():
    return [
        SegmentationHead(LinearHead(D, 4), num_classes=4, ignore_index=-1),
        DepthHead(LinearHead(D, 1, batch_norm=False), min_depth=0.1, max_depth=10.0, mode="range"),
        DepthHead(
            DPTHead(8, 4, features=8, out_channels=[4, 4, 8, 8]), min_depth=1.0, max_depth=9.0, mode="bins",
            num_bins=8, bin_prediction="expectation",
        ),
        NormalsHead(LinearHead(D, 3)),
        RGBHead(ConvDecoderHead(D, hidden_dim=16, num_upsamples=1), loss="mse"),
    ]


@pytest.mark.parametrize("index", range(5))
def test_state_dict_and_config_round_trip(tmp_path, index):
    head = _all_heads()[index].eval()
    save_safetensors(head.state_dict(), tmp_path / "w.safetensors")
    save_json(head.describe(), tmp_path / "c.json")
    clone = build_component(json.loads((tmp_path / "c.json").read_text()))
    assert type(clone) is type(head) and clone.config == head.config
    clone.load_state_dict(load_safetensors(tmp_path / "w.safetensors"), strict=True)
    clone.eval()
    x = feats()
    assert all(k.startswith("head.") for k in head.state_dict())
    with torch.no_grad():
        assert torch.equal(head.predict(x, size=(8, 8)), clone.predict(x, size=(8, 8)))


@pytest.mark.parametrize("index", range(5))
def test_wrong_feature_dim_and_nan_are_clear_errors(index):
    head = _all_heads()[index]
    with pytest.raises(ShapeError, match=rf"\(b, h, w, {D}\).*got shape \(2, 3, 4, 7\)"):
        head.predict(torch.randn(2, 3, 4, 7), size=(8, 8))
    bad = feats()
    bad[1, 2, 3, 4] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        head.predict(bad, size=(8, 8))
    with pytest.raises(ShapeError):
        head.predict(torch.randn(3, 4, D), size=(8, 8))


def test_target_batch_mismatch():
    head = NormalsHead(LinearHead(D, 3))
    with pytest.raises(ShapeError):
        head.loss(feats(2), torch.rand(3, 3, 6, 8))


def test_task_head_rejects_non_probe_module():
    with pytest.raises(TypeError, match="probe head"):
        NormalsHead(torch.nn.Linear(3, 3))
