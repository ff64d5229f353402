"""DINOv2Encoder against tiny random Hugging Face DINOv2 models saved to disk."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from featureflow.encoders import DINOv2Encoder, Encoder, MissingWeightsError, encode_frames  # noqa: E402
from featureflow.typing import ShapeError  # noqa: E402
from featureflow.utils import build_component  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
            patch_size=4, image_size=16, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("dinov2")
    transformers.Dinov2Model(transformers.Dinov2Config(**TINY)).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def reg_dir(tmp_path_factory):
    torch.manual_seed(2)
    d = tmp_path_factory.mktemp("dinov2reg")
    cfg = transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **TINY)
    transformers.Dinov2WithRegistersModel(cfg).save_pretrained(d)
    return d


def manual_features(directory, images, blocks, registers):
    """The reference computation: normalise, run HF, layernorm(hidden_states[i + 1]) minus prefix tokens."""
    model = transformers.AutoModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        out = model(pixel_values=(images - MEAN) / STD, output_hidden_states=True)
    prefix = 1 + registers
    h, w = images.shape[-2] // 4, images.shape[-1] // 4
    assert out.hidden_states[0].shape[1] == prefix + h * w
    feats = [model.layernorm(out.hidden_states[i + 1])[:, prefix:] for i in blocks]
    return torch.cat(feats, -1).reshape(images.shape[0], h, w, -1), out


@pytest.mark.parametrize("which,registers", [("plain", 0), ("reg", 4)])
def test_features_equal_manual_hidden_states(which, registers, plain_dir, reg_dir):
    directory = plain_dir if which == "plain" else reg_dir
    enc = DINOv2Encoder(directory, blocks=(0, 2, 3))
    assert isinstance(enc, Encoder)
    assert (enc.patch_size, enc.feature_dim, enc.num_register_tokens) == (4, 3 * 32, registers)
    images = torch.rand(2, 3, 16, 24)  # not the 16x16 pre-training size: positions are interpolated
    expected, out = manual_features(directory, images, (0, 2, 3), registers)
    got = enc(images)
    assert got.shape == (2, 4, 6, 96) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the last block equals HF's own normalised output with CLS (+ registers) dropped
    last = DINOv2Encoder(directory, blocks=(-1,))(images)
    torch.testing.assert_close(last, out.last_hidden_state[:, 1 + registers :].reshape(2, 4, 6, 32), atol=1e-5, rtol=1e-5)
    # uint8 frames are converted
    u8 = (images * 255).round().to(torch.uint8)
    torch.testing.assert_close(enc(u8), enc(u8.float() / 255))


def test_block_order_and_default_blocks(plain_dir):
    x = torch.rand(1, 3, 16, 16)
    both = DINOv2Encoder(plain_dir, blocks=(1, 3))(x)
    swapped = DINOv2Encoder(plain_dir, blocks=(3, 1))(x)
    torch.testing.assert_close(swapped, torch.cat([both[..., 32:], both[..., :32]], -1))
    with pytest.raises(ValueError, match=r"indices in \[-4, 4\) for this 4-block model"):
        DINOv2Encoder(plain_dir)  # default (2, 5, 8, 11) needs 12 blocks


def test_frozen_and_always_eval(reg_dir):
    enc = DINOv2Encoder(reg_dir, blocks=(1, 3))
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.model.training
    assert not any(m.training for m in enc.modules())
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(enc(x), enc(x))  # dropout 0.3 in the config stays off


def test_resize_policies(plain_dir):
    x = torch.rand(1, 3, 19, 14)
    enc = DINOv2Encoder(plain_dir, blocks=(3,))
    resized = F.interpolate(x, size=(20, 16), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(enc(x), enc(resized))
    crop = DINOv2Encoder(plain_dir, blocks=(3,), resize="crop")
    torch.testing.assert_close(crop(x), enc(x[:, :, 1:17, 1:13]))
    strict = DINOv2Encoder(plain_dir, blocks=(3,), resize="error")
    with pytest.raises(ShapeError, match="frame height 19 is not a multiple of the patch size 4"):
        strict(x)
    assert encode_frames(strict, torch.rand(1, 2, 3, 8, 12)).shape == (1, 2, 2, 3, 32)


def test_wrong_channel_count_is_shape_error(plain_dir):
    enc = DINOv2Encoder(plain_dir, blocks=(3,))
    with pytest.raises(ShapeError, match=r"images: expected float tensor of shape \(b, 3, H, W\)"):
        enc(torch.rand(2, 4, 16, 16))


def test_missing_weights_offline_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError, match=r"not available offline.*HF_HUB_OFFLINE=1"):
        DINOv2Encoder("featureflow-tests/no-such-dinov2")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(MissingWeightsError, match=r"not in the local Hugging Face cache.*local_files_only=True"):
        DINOv2Encoder("featureflow-tests/no-such-dinov2", local_files_only=True)
    assert issubclass(MissingWeightsError, FileNotFoundError)


def test_bad_sources(tmp_path, plain_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="has no config.json"):
        DINOv2Encoder(tmp_path / "empty")
    with pytest.raises(MissingWeightsError, match="not an existing directory"):
        DINOv2Encoder(str(tmp_path / "nope" / "deeper"))
    vit = tmp_path / "vit"
    transformers.ViTModel(transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=16, image_size=8, patch_size=4)).save_pretrained(vit)
    with pytest.raises(ValueError, match="is a 'vit' model; DINOv2Encoder expects"):
        DINOv2Encoder(vit, blocks=(0,))
    with pytest.raises(ValueError, match="dtype must be one of"):
        DINOv2Encoder(plain_dir, blocks=(0,), dtype="int8")


def test_missing_transformers_names_the_extra(monkeypatch, plain_dir):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"featureflow\[hf\]"):
        DINOv2Encoder(plain_dir, blocks=(0,))


def test_reference_config_round_trip(plain_dir):
    enc = DINOv2Encoder(plain_dir, blocks=(0, 3))
    assert enc.is_reference
    spec = json.loads(json.dumps(enc.describe()))
    assert spec["config"]["model"] == str(plain_dir) and "hf_config" not in spec["config"]
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(build_component(spec)(x), enc(x))


def test_self_contained_round_trip_needs_no_files(plain_dir, tmp_path):
    local = tmp_path / "copy"
    shutil.copytree(plain_dir, local)
    enc = DINOv2Encoder(local, blocks=(1, 3), reference=False)
    assert not enc.is_reference
    spec = json.loads(json.dumps(enc.describe()))
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    assert all(k.startswith("model.") for k in state)  # only the network's weights
    shutil.rmtree(local)  # the saved form must not need the original directory
    rebuilt = build_component(spec)
    rebuilt.load_state_dict(state)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(rebuilt(x), enc(x))


def test_bfloat16_compute_returns_float32(plain_dir):
    enc = DINOv2Encoder(plain_dir, blocks=(3,), dtype=torch.bfloat16)
    ref = DINOv2Encoder(plain_dir, blocks=(3,))
    x = torch.rand(1, 3, 16, 16)
    out = enc(x)
    assert out.dtype == torch.float32 and enc.config["dtype"] == "bfloat16"
    torch.testing.assert_close(out, ref(x), atol=0.15, rtol=0.05)


def test_loading_prints_no_weights_bar_unless_asked(plain_dir, capsys):
    capsys.readouterr()
    DINOv2Encoder(str(plain_dir), blocks=(0,))
    assert "Loading weights" not in capsys.readouterr().err
    assert getattr(transformers.utils.logging, "_tqdm_hook", None) is None  # the hook is restored
    DINOv2Encoder(str(plain_dir), blocks=(0,), progress=True)
    assert "Loading weights" in capsys.readouterr().err
