"""Shared helpers of the forecast tests."""

from __future__ import annotations

import pytest
import torch


class ZeroVelocity(torch.nn.Module):
    """Wraps a denoiser so that its cached step returns zero velocity: a sample is then its
    source noise exactly (absolute targets), and a forecaster's spread is proportional to
    its noise scale."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def step(self, state, x, t, *args, **kwargs):
        return torch.zeros_like(x)


@pytest.fixture
def zero_velocity():
    """The `ZeroVelocity` wrapper class."""
    return ZeroVelocity
