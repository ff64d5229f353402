"""DPTHead: parity with the released VFMF head, released key layout, errors."""

import json

import pytest
import torch

from featureflow.probes import (
    DepthHead,
    DPTHead,
    NormalsHead,
    SegmentationHead,
    released_dpt_config,
    strip_prefix,
)
from featureflow.typing import ShapeError
from featureflow.utils import build_component, load_safetensors

OFFICIAL = "vfmf_official"


def _fixture_head(fixtures_dir):
    manifest = json.loads((fixtures_dir / OFFICIAL / "manifest.json").read_text())
    head = DPTHead(**manifest["dpt"]["config"])
    weights = load_safetensors(fixtures_dir / OFFICIAL / "dpt_weights.safetensors")
    head.load_state_dict(weights, strict=True)
    return head.eval(), weights


def _fixture_features(fixtures_dir):
    io = load_safetensors(fixtures_dir / OFFICIAL / "dpt_io.safetensors")
    # Each block: (b, h*w, C) tokens of a 4x6 grid, row-major -> (b, h, w, C); concat on channels.
    blocks = [io[f"features_{i}"].reshape(2, 4, 6, 32) for i in range(4)]
    return torch.cat(blocks, dim=-1), io["out"]


def test_parity_with_released_head(fixtures_dir):
    head, _ = _fixture_head(fixtures_dir)
    features, expected = _fixture_features(fixtures_dir)
    assert features.shape == (2, 4, 6, 128)
    with torch.no_grad():
        out = head(features)
    # The released head outputs 8x the patch grid before any resize.
    assert out.shape == expected.shape == (2, 5, 32, 48)
    assert (out - expected).abs().max().item() <= 1e-5


def test_parity_through_task_head_and_lightning_prefix(fixtures_dir):
    _, weights = _fixture_head(fixtures_dir)
    features, expected = _fixture_features(fixtures_dir)
    lightning = {"head." + k: v for k, v in weights.items()}
    seg = SegmentationHead(DPTHead(5, 32, features=16, use_bn=True, out_channels=[8, 16, 32, 32]), num_classes=5)
    seg.load_state_dict(lightning, strict=True)  # the task head has the checkpoint's `head.*` layout
    seg.eval()
    with torch.no_grad():
        assert (seg(features) - expected).abs().max().item() <= 1e-5
        assert torch.equal(seg.predict(features), expected.argmax(1))
    loaded = DPTHead.from_released(lightning)
    assert not loaded.training
    with torch.no_grad():
        assert (loaded(features) - expected).abs().max().item() <= 1e-5


def test_from_released_reads_safetensors_file(fixtures_dir):
    head = DPTHead.from_released(fixtures_dir / OFFICIAL / "dpt_weights.safetensors")
    assert head.config["out_channels"] == [8, 16, 32, 32] and head.config["use_bn"] is True
    features, expected = _fixture_features(fixtures_dir)
    with torch.no_grad():
        assert (head(features) - expected).abs().max().item() <= 1e-5


def test_resize_convention_is_bicubic_of_native(fixtures_dir):
    head, _ = _fixture_head(fixtures_dir)
    features, expected = _fixture_features(fixtures_dir)
    with torch.no_grad():
        out = head(features, size=(56, 84))
    ref = torch.nn.functional.interpolate(expected, size=(56, 84), mode="bicubic", align_corners=False)
    assert out.shape == (2, 5, 56, 84)
    assert (out - ref).abs().max().item() <= 1e-5
    head_bl = DPTHead.from_released(head.state_dict(), resize_mode="bilinear")
    with torch.no_grad():
        out_bl = head_bl(features, size=(56, 84))
    ref_bl = torch.nn.functional.interpolate(expected, size=(56, 84), mode="bilinear", align_corners=False)
    assert (out_bl - ref_bl).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "name", ["dpt_kubric_segmentation_fgbg", "dpt_cityscapes_segmentation", "dpt_depth_256_bins", "dpt_normals"]
)
def test_released_full_size_keys_and_shapes(fixtures_dir, name):
    manifest = json.loads((fixtures_dir / OFFICIAL / "released_state_dict_shapes.json").read_text())[name]
    expected = {k: list(v) for k, v in manifest["state_dict_shapes"].items()}
    # The manifest lists the head's own keys; the Lightning checkpoints add a `head.` prefix.
    assert not any(k.startswith("head.") for k in expected)
    with torch.device("meta"):
        head = DPTHead(**manifest["config"])
    got = {k: list(v.shape) for k, v in head.state_dict().items()}
    assert got == expected
    # The config can be read back from the released shapes alone (prefixed or not).
    fake = {"head." + k: torch.empty(v, device="meta") for k, v in expected.items()}
    assert released_dpt_config(strip_prefix(fake)) == manifest["config"]
    nclass = manifest["config"]["nclass"]
    with torch.device("meta"):
        if nclass == 3:
            task = NormalsHead(DPTHead(**manifest["config"]))
        elif nclass == 256:
            task = DepthHead(DPTHead(**manifest["config"]), min_depth=0.0, max_depth=1.0, mode="bins")
        else:
            task = SegmentationHead(DPTHead(**manifest["config"]), num_classes=nclass)
    assert {k: list(v.shape) for k, v in task.state_dict().items()} == {"head." + k: v for k, v in expected.items()}


def test_single_output_variant_is_non_negative():
    head = DPTHead(nclass=1, in_channels=8, features=8, use_bn=True, out_channels=[4, 4, 8, 8]).eval()
    with torch.no_grad():
        out = head(torch.randn(2, 2, 3, 32))
    assert out.shape == (2, 1, 16, 24)
    assert bool((out >= 0).all())
    assert "scratch.output_conv.2.running_mean" in head.state_dict()


def test_config_round_trip_and_state_dict(tmp_path):
    head = DPTHead(nclass=3, in_channels=8, features=8, out_channels=[4, 4, 8, 8]).eval()
    clone = build_component(json.loads(json.dumps(head.describe())))
    clone.load_state_dict(head.state_dict(), strict=True)
    clone.eval()
    x = torch.randn(1, 2, 2, 32)
    with torch.no_grad():
        assert torch.equal(head(x, size=(20, 20)), clone(x, size=(20, 20)))


def test_bad_inputs():
    head = DPTHead(nclass=2, in_channels=8, features=8, out_channels=[4, 4, 8, 8])
    with pytest.raises(ShapeError, match=r"\(b, h, w, 32\).*4 blocks x in_channels=8.*got shape \(1, 2, 2, 30\)"):
        head(torch.randn(1, 2, 2, 30))
    with pytest.raises(ShapeError, match="features"):
        head(torch.randn(2, 2, 32))  # missing batch / grid dim
    bad = torch.randn(1, 2, 2, 32)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        head(bad)
    with pytest.raises(ValueError, match="CLS token"):
        DPTHead(nclass=2, in_channels=8, use_clstoken=True)
    with pytest.raises(ValueError, match="exactly 4 out_channels"):
        DPTHead(nclass=2, in_channels=8, out_channels=[4, 4, 8])
    with pytest.raises(ValueError, match="resize_mode"):
        DPTHead(nclass=2, in_channels=8, resize_mode="area")
    with pytest.raises(ValueError, match="not a released DPT head"):
        DPTHead.from_released({"encoder.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        DPTHead.from_released("/nonexistent/head.ckpt")


def test_from_released_reads_lightning_style_checkpoint(tmp_path, fixtures_dir):
    weights = load_safetensors(fixtures_dir / OFFICIAL / "dpt_weights.safetensors")
    ckpt = {"state_dict": {"head." + k: v for k, v in weights.items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "head.ckpt")
    head = DPTHead.from_released(tmp_path / "head.ckpt")
    features, expected = _fixture_features(fixtures_dir)
    with torch.no_grad():
        assert (head(features) - expected).abs().max().item() <= 1e-5
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights_only=True"):
        DPTHead.from_released(tmp_path / "bad.ckpt")
