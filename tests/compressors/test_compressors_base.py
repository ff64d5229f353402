"""Standardisation statistics, Identity, fit_statistics and the Compressor protocol."""

from __future__ import annotations

import pytest
import torch

from featureflow.compressors import (
    PCA,
    ChannelStandardizer,
    Compressor,
    FeatureVAE,
    Identity,
    RunningMoments,
    fit_statistics,
)
from featureflow.utils import COMPONENTS, build_component, load_safetensors, save_safetensors


def test_running_moments_match_full_data():
    x = torch.randn(97, 5, dtype=torch.float64) * torch.arange(1, 6) + 100.0
    m = RunningMoments()
    for chunk in x.split(10):
        m.update(chunk)
    assert m.count == 97
    assert torch.allclose(m.mean, x.mean(0), atol=1e-10)
    assert torch.allclose(m.var, x.var(0), atol=1e-9)
    with pytest.raises(ValueError, match="5"):
        m.update(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least 2"):
        RunningMoments(3).var  # noqa: B018


def test_channel_standardizer_validation():
    s = ChannelStandardizer(3)
    with pytest.raises(ValueError, match="positive"):
        s.set_stats(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        s.set_stats(torch.zeros(4), torch.ones(4))
    s.set_stats(torch.arange(3.0).reshape(1, 1, 1, 3), torch.ones(1, 3))  # checkpoint-style shapes
    assert s.mean.tolist() == [0.0, 1.0, 2.0]
    m = RunningMoments(3)
    m.update(torch.tensor([[1.0, 2.0, 3.0], [1.0, 4.0, 3.0]]))
    s.set_from_moments(m)  # constant channels get the min_std floor
    assert torch.allclose(s.std, torch.tensor([1e-6, 2**0.5, 1e-6]))


def test_identity_round_trip_and_stats():
    c = Identity(4)
    assert c.latent_dim == 4 and isinstance(c, Compressor)
    x = torch.randn(2, 3, 5, 5, 4) * 3 + 1
    fit_statistics(c, x)
    z = c.encode(x)
    flat = x.reshape(-1, 4)
    assert torch.allclose(z.reshape(-1, 4), (flat - flat.mean(0)) / flat.std(0), atol=1e-5)
    assert torch.allclose(c.decode(z), x, atol=1e-5)
    # latent statistics of standardised features are the identity
    assert torch.allclose(c.latent_norm.mean, torch.zeros(4), atol=1e-5)
    assert torch.allclose(c.latent_norm.std, torch.ones(4), atol=1e-5)


def test_fit_statistics_streams_iterables_and_dicts():
    x = torch.randn(12, 2, 3, 6) * 2 + 3
    vae = FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1)
    fit_statistics(vae, [{"features": b} for b in x.split(5)])
    flat = x.reshape(-1, 6).double()
    assert torch.allclose(vae.feature_norm.mean.double(), flat.mean(0), atol=1e-5)
    assert torch.allclose(vae.feature_norm.std.double(), flat.std(0), atol=1e-5)
    with torch.no_grad():
        z = vae.encode(x).reshape(-1, 2).double()
    assert torch.allclose(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(2, dtype=torch.float64), atol=1e-4)
    with pytest.raises(ValueError, match="re-iterable"):
        fit_statistics(vae, (b for b in x.split(5)))


@pytest.mark.parametrize(
    "make",
    [lambda: Identity(6), lambda: FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1),
     lambda: PCA(3).fit(torch.randn(50, 6))],
)
def test_save_load_state_dict_through_safetensors(tmp_path, make):
    c = make().eval()
    c.set_feature_stats(torch.linspace(-1, 1, 6), torch.linspace(0.5, 2, 6))
    c.set_latent_stats(torch.ones(c.latent_dim), torch.full((c.latent_dim,), 3.0))
    save_safetensors(c.state_dict(), tmp_path / "c.safetensors")
    clone = build_component(c.describe()).eval()
    clone.load_state_dict(load_safetensors(tmp_path / "c.safetensors"))
    x = torch.randn(2, 3, 3, 6)
    with torch.no_grad():
        assert torch.equal(clone.encode(x), c.encode(x))
        assert torch.equal(clone.decode(c.encode(x)), c.decode(c.encode(x)))


def test_registered_components():
    for name in ("FeatureVAE", "PCA", "Identity"):
        assert name in COMPONENTS


def test_identity_bad_inputs():
    c = Identity(3)
    with pytest.raises(ValueError, match="D=3"):
        c.encode(torch.zeros(1, 2, 2, 4))
    x = torch.zeros(1, 2, 2, 3)
    x[0, 1, 1, 2] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        c.encode(x)
    with pytest.raises(ValueError, match="feature_dim"):
        Identity(0)
