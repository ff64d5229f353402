"""Encoder protocol, sizing policy, encode_frames, ModuleEncoder and ToyEncoder."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featureflow.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    ModuleEncoder,
    ToyEncoder,
    encode_frames,
    grid_size,
    prepare_images,
)
from featureflow.typing import ShapeError
from featureflow.utils import build_component, load_safetensors, save_safetensors


def tiny_toy(**kw) -> ToyEncoder:
    cfg = dict(image_size=16, patch_size=4, width=16, depth=3, heads=2, blocks=(0, 1, 2))
    cfg.update(kw)
    return ToyEncoder(**cfg)


def patch_mean(x: torch.Tensor, p: int = 4) -> torch.Tensor:
    """(b, 3, H, W) -> (b, H/p, W/p, 3): the mean colour of each patch."""
    return F.avg_pool2d(x, p).permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------- sizing


def test_grid_size_policies():
    assert grid_size(64, 64, 8) == (8, 8)
    assert grid_size(19, 13, 4, "resize") == (5, 3)  # 19/4=4.75 -> 5, 13/4=3.25 -> 3
    assert grid_size(19, 13, 4, "crop") == (4, 3)
    assert grid_size(2, 9, 4, "resize") == (1, 2)  # never less than one patch
    with pytest.raises(ShapeError, match="not a multiple of the patch size 4"):
        grid_size(19, 16, 4, "error")
    with pytest.raises(ShapeError, match="smaller than one patch"):
        grid_size(3, 16, 4, "crop")
    with pytest.raises(ValueError, match="resize must be one of"):
        grid_size(16, 16, 4, "pad")


def test_prepare_images_resize_crop_error_and_uint8():
    x = torch.rand(2, 3, 19, 13)
    resized = prepare_images(x, 4, "resize")
    expected = F.interpolate(x, size=(20, 12), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(resized, expected)
    cropped = prepare_images(x, 4, "crop")
    assert torch.equal(cropped, x[:, :, 1:17, 0:12])  # centred: (19-16)//2 = 1, (13-12)//2 = 0
    fits = torch.rand(1, 3, 8, 12)
    assert prepare_images(fits, 4, "error") is fits
    with pytest.raises(ShapeError, match="resize policy is 'error'"):
        prepare_images(x, 4, "error")
    u8 = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(prepare_images(u8, 4), u8.float() / 255)


def test_non_finite_images_are_rejected():
    x = torch.rand(1, 3, 8, 8)
    x[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="images contains 1 non-finite values"):
        prepare_images(x, 4)
    frames = torch.rand(1, 2, 3, 16, 16)
    frames[0, 1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        encode_frames(tiny_toy(), frames)


def test_prepare_images_wrong_channels_is_shape_error():
    with pytest.raises(ShapeError, match=r"expected .*\(b, 3, H, W\)"):
        prepare_images(torch.rand(2, 4, 8, 8), 4)


# ----------------------------------------------------------------------------- ModuleEncoder


def test_module_encoder_callable_channels_last():
    enc = ModuleEncoder(patch_mean, patch_size=4, feature_dim=3)
    x = torch.rand(2, 3, 8, 12)
    torch.testing.assert_close(enc(x), patch_mean(x))
    assert isinstance(enc, Encoder)
    assert (enc.patch_size, enc.feature_dim, enc.resize) == (4, 3, "resize")


def test_module_encoder_channels_first_module_normalize_and_state_dict():
    conv = nn.Conv2d(3, 5, 4, stride=4)
    enc = ModuleEncoder(conv, patch_size=4, feature_dim=5, channels_last=False, normalize="imagenet")
    x = torch.rand(2, 3, 8, 8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = conv((x - mean) / std).permute(0, 2, 3, 1)
    torch.testing.assert_close(enc(x), expected)
    assert set(enc.state_dict()) == {"module.weight", "module.bias"}  # statistics are not weights
    custom = ModuleEncoder(lambda im: patch_mean(im), 4, 3, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    torch.testing.assert_close(custom(x), patch_mean((x - 0.5) / 0.25))


def test_module_encoder_checks_output_shape():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ShapeError, match=r"expected \(b, h, w, D\) = \(2, 2, 2, 3\)"):
        ModuleEncoder(lambda im: patch_mean(im, 2), patch_size=4, feature_dim=3)(x)  # 4x4 grid
    with pytest.raises(ShapeError, match=r"expected \(b, h, w, D\) = \(2, 2, 2, 7\)"):
        ModuleEncoder(patch_mean, patch_size=4, feature_dim=7)(x)
    with pytest.raises(ShapeError, match="expected a tensor"):
        ModuleEncoder(lambda im: [im], patch_size=4, feature_dim=3)(x)
    with pytest.raises(ShapeError, match="channels_last=False"):
        ModuleEncoder(lambda im: im.mean(1), patch_size=4, feature_dim=3, channels_last=False)(x)
    with pytest.raises(ShapeError):
        ModuleEncoder(patch_mean, patch_size=4, feature_dim=3)(torch.rand(2, 1, 8, 8))


def test_module_encoder_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module or a callable"):
        ModuleEncoder(3, patch_size=4, feature_dim=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patch_size"):
        ModuleEncoder(patch_mean, patch_size=0, feature_dim=3)
    with pytest.raises(ValueError, match="normalize"):
        ModuleEncoder(patch_mean, patch_size=4, feature_dim=3, normalize="cifar")
    with pytest.raises(ValueError, match="resize must be one of"):
        ModuleEncoder(patch_mean, patch_size=4, feature_dim=3, resize="stretch")


# ----------------------------------------------------------------------------- encode_frames


def test_encode_frames_matches_per_frame_calls_and_batches():
    enc = tiny_toy().eval()
    frames = torch.rand(2, 3, 3, 16, 16)
    out = encode_frames(enc, frames)
    assert out.shape == (2, 3, 4, 4, enc.feature_dim)
    assert not out.requires_grad
    for b in range(2):
        torch.testing.assert_close(out[b], enc(frames[b]).detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encode_frames(enc, frames, batch_size=4, progress=False), out, atol=1e-5, rtol=1e-5)
    u8 = (frames * 255).round().to(torch.uint8)
    torch.testing.assert_close(encode_frames(enc, u8), encode_frames(enc, u8.float() / 255))


def test_encode_frames_applies_the_encoder_policy():
    enc = ModuleEncoder(patch_mean, patch_size=4, feature_dim=3, resize="crop")
    assert encode_frames(enc, torch.rand(1, 2, 3, 10, 9)).shape == (1, 2, 2, 2, 3)
    strict = ModuleEncoder(patch_mean, patch_size=4, feature_dim=3, resize="error")
    with pytest.raises(ShapeError, match="not a multiple"):
        encode_frames(strict, torch.rand(1, 2, 3, 10, 8))


def test_encode_frames_bad_input():
    enc = ModuleEncoder(patch_mean, patch_size=4, feature_dim=3)
    with pytest.raises(ShapeError, match=r"\(b, t, 3, H, W\)"):
        encode_frames(enc, torch.rand(2, 3, 8, 8))  # missing time axis
    with pytest.raises(ShapeError):
        encode_frames(enc, torch.rand(1, 2, 4, 8, 8))  # 4 channels
    with pytest.raises(TypeError, match="expected an Encoder"):
        encode_frames(patch_mean, torch.rand(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="batch_size"):
        encode_frames(enc, torch.rand(1, 2, 3, 8, 8), batch_size=0)

    class Liar:  # declares D=3 but returns 4 channels
        patch_size, feature_dim, resize = 4, 3, "resize"

        def __call__(self, images):
            return torch.zeros(images.shape[0], 2, 2, 4)

    with pytest.raises(ShapeError, match="Liar returned features of shape"):
        encode_frames(Liar(), torch.rand(1, 2, 3, 8, 8))


# ----------------------------------------------------------------------------- ToyEncoder


def test_toy_encoder_defaults_are_small_and_fit_toyworld():
    enc = ToyEncoder()
    assert (enc.patch_size, enc.feature_dim, enc.resize) == (8, 384, "resize")
    assert enc.num_parameters() * 4 < 4_000_000  # a few MB in float32
    out = enc(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 8, 8, 384)
    assert isinstance(enc, Encoder)


def test_toy_encoder_blocks_are_layernormed_and_ordered():
    enc = tiny_toy(blocks=(0, 1, 2)).eval()
    x = torch.rand(2, 3, 16, 16)
    out = enc(x)
    w = 16
    chunks = out.split(w, dim=-1)
    for chunk in chunks:  # final LayerNorm with its initial affine (1, 0): zero mean, unit variance
        torch.testing.assert_close(chunk.mean(-1), torch.zeros(2, 4, 4), atol=1e-5, rtol=0)
        torch.testing.assert_close(chunk.var(-1, unbiased=False), torch.ones(2, 4, 4), atol=1e-3, rtol=0)
    other = tiny_toy(blocks=(-1, 0))  # same weights, another selection and order
    other.load_state_dict(enc.state_dict())
    torch.testing.assert_close(other(x), torch.cat([chunks[2], chunks[0]], dim=-1))
    assert other.blocks == [2, 0] and other.config["blocks"] == [-1, 0]


def test_toy_encoder_round_trip_through_config_and_safetensors(tmp_path):
    enc = tiny_toy()
    with torch.no_grad():
        enc.norm.weight.uniform_(0.5, 1.5)
    spec = json.loads(json.dumps(enc.describe()))
    save_safetensors(enc.state_dict(), tmp_path / "w.safetensors")
    rebuilt = build_component(spec)
    rebuilt.load_state_dict(load_safetensors(tmp_path / "w.safetensors"))
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(rebuilt(x), enc(x))


def test_toy_encoder_other_sizes_policies_and_gradients():
    enc = tiny_toy()
    assert enc(torch.rand(1, 3, 12, 24)).shape == (1, 3, 6, 48)  # interpolated positions
    assert enc(torch.rand(1, 3, 17, 15)).shape == (1, 4, 4, 48)  # resized to 16x16
    with pytest.raises(ShapeError, match="not a multiple"):
        tiny_toy(resize="error")(torch.rand(1, 3, 17, 16))
    with pytest.raises(ShapeError):
        enc(torch.rand(1, 1, 16, 16))
    enc(torch.rand(2, 3, 16, 16)).square().mean().backward()
    assert enc.patch_embed.weight.grad is not None and enc.patch_embed.weight.grad.abs().sum() > 0


def test_toy_encoder_bad_config():
    with pytest.raises(ValueError, match="heads"):
        ToyEncoder(width=30, heads=4)
    with pytest.raises(ValueError, match="blocks"):
        ToyEncoder(depth=2, blocks=(2,))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ToyEncoder(image_size=60, patch_size=8)


def test_pixel_patch_encoder_is_exactly_invertible_and_checks_sizes():
    from featureflow.encoders import Encoder, PixelPatchEncoder, unpatchify
    from featureflow.probes import PixelPatchRGBHead
    from featureflow.utils import build_component

    enc = PixelPatchEncoder(3)
    x = torch.rand(2, 3, 9, 12)
    f = enc(x)
    assert isinstance(enc, Encoder) and f.shape == (2, 3, 4, 27) and enc.resize == "error"
    assert torch.equal(f[0, 1, 2].view(3, 3, 3), x[0, :, 3:6, 6:9])  # patch (1, 2) holds exactly its pixels
    assert torch.equal(unpatchify(f, 3), x) and torch.equal(PixelPatchRGBHead(3).predict(f), x)
    assert PixelPatchRGBHead(3).predict(f, size=(18, 24)).shape == (2, 3, 18, 24)
    assert build_component(enc.describe()).patch_size == 3
    with pytest.raises(ValueError, match="divisible by patch_size=3"):
        enc(torch.rand(1, 3, 10, 12))
    with pytest.raises(ValueError, match="27 channels"):
        unpatchify(torch.rand(1, 2, 2, 12), 3)
    with pytest.raises(ValueError, match="positive int"):
        PixelPatchEncoder(0)
