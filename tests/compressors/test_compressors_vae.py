"""FeatureVAE: parity with the released VFMF VAE, released key/shape manifest, standardisation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from featureflow.compressors import Compressor, FeatureVAE
from featureflow.utils import build_component


@pytest.fixture
def released(fixtures_dir):
    root = fixtures_dir / "vfmf_official"
    cfg = json.loads((root / "manifest.json").read_text())["vae"]["config"]
    vae = FeatureVAE.from_released_config(cfg).eval()
    vae.load_network_state_dict(load_file(str(root / "vae_weights.safetensors")))
    return vae, load_file(str(root / "vae_io.safetensors"))


def test_parity_with_released_vae(released):
    vae, io = released
    with torch.no_grad():
        q = vae.raw_encode(io["features"])
        decoded = vae.raw_decode(io["latents"])
    assert (q.mean - io["latent_mean"]).abs().max() <= 1e-5
    assert (q.logvar - io["latent_logvar"]).abs().max() <= 1e-5
    assert (decoded - io["decoded"]).abs().max() <= 1e-5


def test_identity_stats_make_encode_equal_raw_mean(released):
    vae, io = released
    with torch.no_grad():
        z = vae.encode(io["features"])
        x = vae.decode(io["latents"])
    assert (z - io["latent_mean"]).abs().max() <= 1e-5
    assert (x - io["decoded"]).abs().max() <= 1e-5


def test_standardisation_wraps_raw_network(released):
    vae, io = released
    g = torch.Generator().manual_seed(1)
    fmean, fstd = torch.randn(48, generator=g), torch.rand(48, generator=g) + 0.5
    lmean, lstd = torch.randn(8, generator=g), torch.rand(8, generator=g) + 0.5
    vae.set_feature_stats(fmean, fstd)
    vae.set_latent_stats(lmean, lstd)
    feats = io["features"] * fstd + fmean  # so that the standardised features are the fixture's
    with torch.no_grad():
        z = vae.encode(feats)
        x = vae.decode((io["latents"] - lmean) / lstd)
    assert torch.allclose(z, (io["latent_mean"] - lmean) / lstd, atol=1e-5)
    assert torch.allclose(x, io["decoded"] * fstd + fmean, atol=1e-4)


@pytest.mark.parametrize("name", ["vae_kubric_base", "vae_cityscapes_large"])
def test_full_size_keys_and_shapes_match_release(fixtures_dir, name):
    entry = json.loads((fixtures_dir / "vfmf_official" / "released_state_dict_shapes.json").read_text())[name]
    with torch.device("meta"):
        vae = FeatureVAE.from_released_config(entry["config"])
    ours = {k: list(v.shape) for k, v in vae.network_state_dict().items()}
    assert list(ours) == list(entry["state_dict_shapes"])  # same keys, same order
    for key, shape in entry["state_dict_shapes"].items():
        assert ours[key] == shape, key
    assert set(vae.state_dict()) - set(ours) == set(FeatureVAE.STAT_KEYS)


def test_load_network_state_dict_rejects_mismatch(released):
    vae, _ = released
    sd = vae.network_state_dict()
    small = FeatureVAE(feature_dim=48, latent_dim=4, dim=32, depth=2)
    with pytest.raises(ValueError, match="shape mismatch"):
        small.load_network_state_dict(sd)
    sd.pop("out_proj.bias")
    with pytest.raises(ValueError, match="out_proj.bias"):
        vae.load_network_state_dict(sd)


def test_encode_batched_and_sampled():
    vae = FeatureVAE(feature_dim=12, latent_dim=3, dim=8, depth=1).eval()
    x = torch.randn(2, 3, 4, 5, 12)
    z = vae.encode(x)
    assert z.shape == (2, 3, 4, 5, 3)
    flat = vae.encode(x.reshape(6, 4, 5, 12)).reshape(2, 3, 4, 5, 3)
    assert torch.allclose(z, flat, atol=1e-6)
    s1 = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    s2 = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and not torch.allclose(s1, z)
    assert vae.decode(z).shape == x.shape
    assert isinstance(vae, Compressor)


def test_elbo_terms():
    vae = FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1, kl_weight=0.5).eval()
    x = torch.randn(3, 2, 2, 6)
    out = vae(x, sample=False)
    q = vae.raw_encode(x)
    recon = vae.raw_decode(q.mean)
    mse = ((recon - x) ** 2).sum(dim=(1, 2, 3))
    kl = 0.5 * (q.mean**2 + q.logvar.exp() - 1 - q.logvar).sum(dim=(1, 2, 3))
    assert torch.allclose(out.mse, mse) and torch.allclose(out.kl, kl)
    assert torch.allclose(out.elbo, -mse - 0.5 * kl)
    assert torch.allclose(out.loss, (mse + 0.5 * kl).mean())


def test_logvar_clamped():
    vae = FeatureVAE(feature_dim=4, latent_dim=2, dim=8, depth=1)
    with torch.no_grad():
        vae.to_latents.bias[2:] = 1e4  # logvar half
        vae.to_latents.weight.zero_()
    q = vae.raw_encode(torch.randn(1, 2, 2, 4))
    assert torch.all(q.logvar == 20.0)


def test_state_dict_round_trip_keeps_stats():
    vae = FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1)
    vae.set_feature_stats(torch.arange(6.0), torch.full((6,), 2.0))
    vae.set_latent_stats(torch.tensor([1.0, -1.0]), torch.tensor([3.0, 4.0]))
    sd = vae.state_dict()
    for key in FeatureVAE.STAT_KEYS:
        assert key in sd
    clone = build_component(vae.describe())
    clone.load_state_dict(sd)
    assert torch.equal(clone.feature_norm.mean, torch.arange(6.0))
    assert torch.equal(clone.latent_norm.std, torch.tensor([3.0, 4.0]))
    x = torch.randn(1, 2, 3, 6)
    assert torch.equal(clone.eval().encode(x), vae.eval().encode(x))


def test_bad_inputs():
    vae = FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1)
    with pytest.raises(ValueError, match="D=6"):
        vae.encode(torch.randn(1, 2, 2, 5))
    with pytest.raises(ValueError, match="C=2"):
        vae.decode(torch.randn(1, 2, 2, 3))
    bad = torch.randn(1, 2, 2, 6)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        vae.encode(bad)
    with pytest.raises(ValueError, match="h, w"):
        vae.encode(torch.randn(2, 6))
    with pytest.raises(ValueError, match="kl_weight"):
        FeatureVAE(feature_dim=6, kl_weight=-1.0)
