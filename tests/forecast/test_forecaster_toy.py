"""End to end on ToyWorld latents: both forecasters train, loss falls; flow samples vary, regression doesn't."""

from __future__ import annotations

import math

import pytest
import torch

from featureflow.data import ToyWorld
from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster
from featureflow.training.forecaster import train_forecaster

C = 4


def toy_latents(n: int, length: int, resolution: int = 16, patch: int = 4) -> torch.Tensor:
    """ToyWorld clips -> (n, T, h, w, C): a fixed random projection of pixel patches, standardised."""
    world = ToyWorld(resolution=resolution)
    seeds = ToyWorld.split_seeds("train")[:n]
    rgb = torch.stack([world.clip(seed=s, length=length).rgb for s in seeds])  # (n, T, 3, H, W)
    g = resolution // patch
    patches = rgb.reshape(n, length, 3, g, patch, g, patch).permute(0, 1, 3, 5, 2, 4, 6).reshape(n, length, g, g, -1)
    proj = torch.randn(patches.shape[-1], C, generator=torch.Generator().manual_seed(0)) / math.sqrt(patches.shape[-1])
    z = patches @ proj
    return (z - z.mean((0, 1, 2, 3))) / z.std((0, 1, 2, 3))


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    return toy_latents(16, 6)


def _denoiser() -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(arch="causal", latent_dim=C, width=32, depth=2, heads=2, max_context=3)


def _fell(losses: list[float], factor: float) -> bool:
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    return last < factor * first


def test_flow_and_regression_train_on_toyworld(latents: torch.Tensor):
    kw = dict(steps=40, batch_size=8, lr=3e-3, warmup=5, progress=False, seed=0)
    flow = FlowForecaster(_denoiser(), max_stride=2)
    r_flow = train_forecaster(flow, latents, **kw)
    reg = RegressionForecaster(_denoiser(), max_stride=2)
    r_reg = train_forecaster(reg, latents, **kw)
    assert _fell(r_flow.losses, 0.8), r_flow.losses
    assert _fell(r_reg.losses, 0.6), r_reg.losses
    r_flow.ema.copy_to(flow)

    flow.eval(), reg.eval()
    ctx = latents[:2, :3]
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = flow.rollout(ctx, 2, num_samples=3, solver="heun", steps=4, generator=gen(0))
    b = flow.rollout(ctx, 2, num_samples=3, solver="heun", steps=4, generator=gen(1))
    again = flow.rollout(ctx, 2, num_samples=3, solver="heun", steps=4, generator=gen(0))
    assert a.nfe == 4 and a.latents.shape == (2, 3, 2, 4, 4, C)
    assert torch.equal(a.latents, again.latents)
    assert (a.latents - b.latents).abs().mean() > 0.05  # different seeds, different futures
    assert (a.latents[:, 0] - a.latents[:, 1]).abs().mean() > 0.05  # and samples of one seed differ
    assert bool(torch.isfinite(a.latents).all())

    ra = reg.rollout(ctx, 2, num_samples=3, generator=gen(0))
    rb = reg.rollout(ctx, 2, num_samples=3, generator=gen(1))
    assert ra.nfe == 1 and torch.equal(ra.latents, rb.latents)
    assert torch.equal(ra.latents[:, 1], ra.latents[:, 0])
    # The trained regressor beats the untrained trunk on the next frame.
    truth = latents[:2, 3]
    untrained = RegressionForecaster(_denoiser()).eval()
    err = (ra.latents[:, 0, 0] - truth).pow(2).mean()
    assert err < 0.5 * (untrained.sample(ctx)[:, 0] - truth).pow(2).mean()
