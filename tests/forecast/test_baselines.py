"""CopyLastForecaster: the copy-last-frame baseline as a registered forecaster."""

from __future__ import annotations

import pytest
import torch

from featureflow.demo_forecast import copy_last_forecast
from featureflow.forecast import CopyLastForecaster, Forecaster
from featureflow.utils import build_component


def test_copy_last_repeats_the_last_context_frame():
    ctx = torch.randn(2, 3, 2, 2, 4)
    roll = CopyLastForecaster().rollout(ctx, horizon=3, num_samples=2)
    assert roll.latents.shape == (2, 2, 3, 2, 2, 4) and roll.nfe_per_frame == (0, 0, 0) and roll.nfe == 0
    assert torch.equal(roll.latents, ctx[:, -1, None, None].expand(2, 2, 3, 2, 2, 4))
    assert torch.equal(CopyLastForecaster().sample(ctx, 2), ctx[:, -1, None].expand(2, 2, 2, 2, 4))
    assert isinstance(CopyLastForecaster(), Forecaster)


def test_copy_last_refuses_what_it_cannot_use():
    ctx = torch.randn(1, 1, 2, 2, 4)
    fc = CopyLastForecaster()
    with pytest.raises(ValueError, match=r"solver='heun', steps=4 do not apply"):
        fc.rollout(ctx, 1, solver="heun", steps=4)
    with pytest.raises(ValueError, match=r"guidance=2.0 does not apply"):
        fc.rollout(ctx, 1, guidance=2.0)
    with pytest.raises(ValueError, match="not action-conditioned"):
        fc.rollout(ctx, 1, actions=torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="positive ints"):
        fc.rollout(ctx, 0)
    with pytest.raises(ValueError, match="max_context must be a positive int"):
        CopyLastForecaster(0)


def test_copy_last_is_a_saveable_component():
    fc = build_component(CopyLastForecaster(2).describe())
    assert isinstance(fc, CopyLastForecaster) and fc.max_context == 2


def test_world_model_has_copy_last_built_in_and_the_old_helper_agrees(make_tiny_world_model):
    wm = make_tiny_world_model()
    frames = torch.rand(1, 3, 3, 16, 16)
    fc = wm.forecast(frames, 2, 3, baseline="copy-last")
    assert fc.nfe == 0 and fc.latents.shape == (1, 3, 2, 2, 2, 32)
    last = wm.encode(frames[:, -1:])[:, 0]
    assert torch.equal(fc.latents[0, 1, 1], last[0])
    old = copy_last_forecast(wm, frames, 2)
    assert old.nfe == 0 and torch.equal(old.latents[:, 0], fc.latents[:, 0])
    with pytest.raises(ValueError, match="steps=4 does not apply"):
        wm.forecast(frames, 1, baseline="copy-last", steps=4)
    with pytest.raises(ValueError, match=r"unknown baseline 'nope'; this model has \['copy-last', 'regression'\]"):
        wm.forecast(frames, 1, baseline="nope")
