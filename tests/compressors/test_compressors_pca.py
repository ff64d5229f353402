"""PCA: streaming fit vs direct eigen-decomposition, variance, whitening, exact inverse."""

from __future__ import annotations

import pytest
import torch

from featureflow.compressors import PCA, fit_statistics
from featureflow.utils import build_component


def _data(n=300, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    scale = torch.linspace(3.0, 0.2, d, dtype=torch.float64)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * scale) @ mix + 5.0
    return x.reshape(n // 3, 3, 1, d)  # (b, h, w, D) with h=3, w=1


def _direct(x2d, k):
    cov = torch.cov(x2d.T)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[:k]
    return evals[order], evecs[:, order].T, cov


def test_streaming_fit_equals_direct_eigendecomposition_raw():
    x = _data()
    x2d = x.reshape(-1, 6)
    pca = PCA(4, feature_dim=6)
    for chunk in x.float().split(7):  # uneven batches
        pca.partial_fit(chunk)
    pca.finalize(fit_feature_stats=False)
    evals, vecs, cov = _direct(x2d, 4)
    assert torch.allclose(pca.explained_variance.double(), evals, rtol=1e-4)
    # same subspace/axes up to sign
    assert torch.allclose((pca.components.double() @ vecs.T).abs(), torch.eye(4, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(pca.mean.double(), x2d.mean(0), atol=1e-4)
    ratio = evals / cov.diagonal().sum()
    assert torch.allclose(pca.explained_variance_ratio.double(), ratio, atol=1e-5)


def test_streaming_fit_with_feature_stats_is_correlation_pca():
    x = _data()
    x2d = x.reshape(-1, 6)
    pca = PCA(3).fit(list(x.float().split(11)))
    assert pca.feature_dim == 6 and pca.config["feature_dim"] == 6
    assert torch.allclose(pca.feature_norm.mean.double(), x2d.mean(0), atol=1e-4)
    assert torch.allclose(pca.feature_norm.std.double(), x2d.std(0), rtol=1e-4)
    evals, vecs, _ = _direct((x2d - x2d.mean(0)) / x2d.std(0), 3)
    assert torch.allclose(pca.explained_variance.double(), evals, rtol=1e-4)
    assert torch.allclose((pca.components.double() @ vecs.T).abs(), torch.eye(3, dtype=torch.float64), atol=1e-4)


def test_explained_variance_sums():
    x = _data().float()
    full = PCA(6).fit(x)
    assert full.explained_variance_ratio.sum().item() == pytest.approx(1.0, abs=1e-5)
    part = PCA(2).fit(x)
    r = part.report()
    assert r["total_ratio"] == pytest.approx(sum(r["explained_variance_ratio"]))
    assert r["cumulative_ratio"][-1] == pytest.approx(r["total_ratio"])
    assert 0 < r["total_ratio"] < 1
    assert torch.all(part.explained_variance[:-1] >= part.explained_variance[1:])


@pytest.mark.parametrize("whiten", [True, False])
def test_unit_variance_latents(whiten):
    x = _data().float()
    pca = PCA(4, whiten=whiten).fit(x, fit_latent_stats=not whiten)
    if whiten:
        assert torch.equal(pca.latent_norm.std, torch.ones(4))  # whitening alone does it
    z = pca.encode(x).reshape(-1, 4).double()
    assert torch.allclose(z.var(0), torch.ones(4, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(z.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-3)
    cov = torch.cov(z.T)
    assert torch.allclose(cov, torch.eye(4, dtype=torch.float64), atol=1e-3)  # decorrelated too


@pytest.mark.parametrize("whiten", [True, False])
def test_exact_inverse_on_subspace(whiten):
    x = _data().float()
    pca = PCA(3, whiten=whiten).fit(x)
    y = torch.randn(5, 2, 2, 6) * 3 + 5  # new data, off the subspace
    rec = pca.decode(pca.encode(y))
    # in standardised space decode∘encode is the orthogonal projection m + VᵀV(x - m)
    mu, sd = pca.feature_norm.mean, pca.feature_norm.std
    yn = (y - mu) / sd
    v, m = pca.components, pca.mean
    proj = m + (yn - m) @ v.T @ v
    assert torch.allclose((rec - mu) / sd, proj, atol=1e-4)
    # projecting twice changes nothing
    assert torch.allclose(pca.decode(pca.encode(rec)), rec, atol=1e-4)


def test_round_trip_with_all_components():
    x = _data().float()
    for whiten in (False, True):
        pca = PCA(6, whiten=whiten).fit(x)
        y = torch.randn(2, 3, 4, 6)
        assert torch.allclose(pca.decode(pca.encode(y)), y, atol=1e-4)


def test_state_dict_round_trip_and_lazy_feature_dim():
    x = _data().float()
    pca = PCA(2, whiten=True).fit(x)
    spec = pca.describe()
    assert spec["config"] == {"n_components": 2, "whiten": True, "feature_dim": 6}
    clone = build_component(spec)
    clone.load_state_dict(pca.state_dict())
    assert torch.equal(clone.encode(x), pca.encode(x))
    lazy = PCA(2, whiten=True)  # feature_dim learnt from the state dict
    lazy.load_state_dict(pca.state_dict())
    assert torch.equal(lazy.encode(x), pca.encode(x))
    for key in ("feature_norm.mean", "feature_norm.std", "latent_norm.mean", "latent_norm.std", "components"):
        assert key in pca.state_dict()


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_components"):
        PCA(0)
    with pytest.raises(ValueError, match="<= feature_dim"):
        PCA(5, feature_dim=3)
    pca = PCA(2, feature_dim=4)
    with pytest.raises(ValueError, match="at least 2"):
        pca.finalize()
    with pytest.raises(ValueError, match="4 channels"):
        pca.partial_fit(torch.randn(3, 5))
    bad = torch.randn(3, 4)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        pca.partial_fit(bad)
    pca.fit(torch.randn(20, 4))
    with pytest.raises(ValueError, match="D=4"):
        pca.encode(torch.randn(1, 2, 2, 3))
    with pytest.raises(ValueError, match="refit"):
        fit_statistics(pca, torch.randn(4, 2, 2, 4))
