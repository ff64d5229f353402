"""``AgentToyWorld.clip``: ``stride`` is the one name for simulation steps between frames."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gymnasium")

from featureflow.rl import AgentToyWorld  # noqa: E402

ACTIONS = torch.tensor([[0.0, 1.0], [1.0, 0.0]])


def test_stride_holds_each_action_for_stride_steps():
    w = AgentToyWorld(resolution=8)
    clip = w.clip(2, 3, stride=3, actions=ACTIONS)
    state = w.act(w.act(w.reset(2), ACTIONS[0], 3), ACTIONS[1], 3)
    assert torch.equal(clip.positions[-1], state.positions)
    assert state.step == 6


def test_frame_skip_is_a_deprecated_alias_of_stride():
    w = AgentToyWorld(resolution=8)
    with pytest.warns(DeprecationWarning, match=r"frame_skip=\.\.\.\) is deprecated; use stride"):
        old = w.clip(2, 3, actions=ACTIONS, frame_skip=3)
    new = w.clip(2, 3, actions=ACTIONS, stride=3)
    assert torch.equal(old.positions, new.positions) and torch.equal(old.rgb, new.rgb)


def test_disagreeing_stride_and_frame_skip_and_bad_start_are_refused():
    w = AgentToyWorld(resolution=8)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="stride=2 and its deprecated alias frame_skip=3 disagree"):
        w.clip(2, 3, stride=2, frame_skip=3)
    with pytest.raises(ValueError, match="expected start=0, got 1"):
        w.clip(2, 3, start=1)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        w.clip(2, 3, stride=0)
