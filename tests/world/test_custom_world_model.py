"""A hand-built WorldModel with a ModuleEncoder from a factory saves and loads with its values."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from featureflow.compressors import Identity
from featureflow.encoders import ModuleEncoder
from featureflow.encoders.module import resolve_factory
from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.probes import DepthHead, LinearHead
from featureflow.world import WorldModel

CONV = {"in_channels": 3, "out_channels": 8, "kernel_size": 8, "stride": 8}


def tiny_model(encoder: nn.Module) -> WorldModel:
    torch.manual_seed(0)
    forecaster = FlowForecaster(Denoiser(latent_dim=8, width=16, depth=1, heads=2, max_context=2))
    probes = {"depth": DepthHead(LinearHead(8, 1), min_depth=0.5, max_depth=20.0, mode="log")}
    return WorldModel(encoder, Identity(8), forecaster, probes).eval()


def test_factory_encoder_round_trip_keeps_weights_and_forecasts(tmp_path):
    torch.manual_seed(3)
    enc = ModuleEncoder.from_factory("torch.nn:Conv2d", CONV, patch_size=8, feature_dim=8, channels_last=False,
                                     normalize="imagenet")
    wm = tiny_model(enc)
    frames = torch.rand(1, 2, 3, 32, 32)
    before = wm.forecast(frames, horizon=2, num_samples=2, steps=2, generator=torch.Generator().manual_seed(1))
    wm.save_pretrained(tmp_path / "m")
    spec = json.loads((tmp_path / "m" / "config.json").read_text())["components"]["encoder"]
    assert spec["type"] == "ModuleEncoder" and spec["config"]["factory"] == "torch.nn:Conv2d"
    assert spec["config"]["kwargs"] == CONV and spec["weights"] == "included"

    loaded = WorldModel.from_pretrained(tmp_path / "m")
    assert isinstance(loaded.encoder, ModuleEncoder) and isinstance(loaded.encoder.module, nn.Conv2d)
    assert torch.equal(loaded.encoder.module.weight, enc.module.weight)  # the weights, not a fresh init
    assert loaded.encoder.normalize == "imagenet"
    after = loaded.forecast(frames, horizon=2, num_samples=2, steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(after.latents, before.latents)
    assert torch.equal(after.decode("depth"), before.decode("depth"))


def test_custom_normalisation_is_saved_as_json(tmp_path):
    enc = ModuleEncoder.from_factory("torch.nn:Conv2d", CONV, patch_size=8, feature_dim=8, channels_last=False,
                                     normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    tiny_model(enc).save_pretrained(tmp_path / "m")
    loaded = WorldModel.from_pretrained(tmp_path / "m").encoder
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x), enc(x))


def test_a_module_object_cannot_be_saved_and_the_error_says_what_to_do(tmp_path):
    wm = tiny_model(ModuleEncoder(nn.Conv2d(3, 8, 8, stride=8), patch_size=8, feature_dim=8, channels_last=False))
    with pytest.raises(TypeError, match=r"wraps a Conv2d object.*ModuleEncoder.from_factory\('package.module:function'"):
        wm.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "config.json").exists()


def test_factory_references_are_checked():
    for bad in ("torch.nn.Conv2d", "os:system; rm", "../x:y", "torch.nn:", ""):
        with pytest.raises(ValueError, match="must look like 'package.module:function'"):
            resolve_factory(bad)
    with pytest.raises(ImportError, match="cannot import the module 'no_such_package_xyz'"):
        resolve_factory("no_such_package_xyz:build")
    with pytest.raises(ValueError, match="has no attribute 'NoSuchLayer'"):
        resolve_factory("torch.nn:NoSuchLayer")
    with pytest.raises(ValueError, match="not a callable"):
        resolve_factory("torch:pi")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        ModuleEncoder.from_factory("torch.nn:Conv2d", {"in_channels": torch.tensor(3)}, patch_size=8, feature_dim=8)
