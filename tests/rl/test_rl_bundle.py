"""The bundled action-conditioned `toyworld-agent` model: it loads, its forecasts move the
agent in the commanded direction, and a planner over it heads for the goal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featureflow.rl import (
    AgentToyWorld,
    CEMPlanner,
    LatentPlanningModel,
    SegmentationGoalCost,
    ToyWorldEnv,
    action_response,
)
from featureflow.world import WorldModel, bundled_models

HELD_OUT = range(2_000_100, 2_000_108)  # scenes outside the training seeds (0..1499)


@pytest.fixture(scope="module")
def agent_model() -> WorldModel:
    assert "toyworld-agent" in bundled_models()
    return WorldModel.from_pretrained("toyworld-agent")


def test_bundle_loads_with_its_training_settings(agent_model):
    wm = agent_model
    assert wm.action_dim == 2 and wm.max_context == 2 and "rgb" in wm.probes
    assert wm.metadata["resolution"] == 24 and wm.metadata["frame_skip"] == 3
    assert wm.metadata["world"]["type"] == "AgentToyWorld"
    frames = AgentToyWorld(24).clip(HELD_OUT[0], 2, stride=3).rgb[None]
    # the pixel-patch encoder + identity compressor + exact probe reproduce the input frames
    assert torch.allclose(wm.decode_latents(wm.encode(frames), "rgb"), frames, atol=1e-5)


def test_forecasts_move_the_agent_in_the_commanded_direction(agent_model):
    world = AgentToyWorld(24)
    r = action_response(agent_model, world, HELD_OUT, frame_skip=3, num_samples=2, steps=2)
    assert int(r.visible.sum()) >= 24
    # most forecasts move the agent at least 0.1 m along the command (the true move is 0.3 m)...
    assert r.fraction_moved(0.1) >= 0.7, r.summary()
    # ... on average by a good part of the true move, and never on average against it
    along = r.along()[r.visible]
    assert float(along.mean()) >= 0.12, r.summary()
    # opposite commands separate the predicted agent: +x vs -x and +y vs -y
    ok = r.visible[:, 0] & r.visible[:, 1]
    assert float((r.predicted[ok, 0, 0] - r.predicted[ok, 1, 0]).mean()) >= 0.25
    ok = r.visible[:, 2] & r.visible[:, 3]
    assert float((r.predicted[ok, 2, 1] - r.predicted[ok, 3, 1]).mean()) >= 0.25


def test_planning_over_the_learned_model_heads_for_the_goal(agent_model):
    wm = agent_model
    env = ToyWorldEnv(world=AgentToyWorld(24), max_steps=15, frame_skip=3)
    planner = CEMPlanner(horizon=3, num_candidates=64, num_elites=8, iterations=2, num_samples=2)
    cosines = []
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        model = LatentPlanningModel(wm, decode=("rgb",), steps=1, generator=torch.Generator().manual_seed(seed))
        model.set_context(torch.from_numpy(obs).permute(2, 0, 1)[None])  # pixels only
        cost = SegmentationGoalCost(info["goal"], env.world.camera, source="rgb", final_weight=3.0)
        plan = planner.plan(model, cost, generator=torch.Generator().manual_seed(seed))
        to_goal = np.asarray(info["goal"]) - env.state.positions[0].numpy()
        a = plan.actions[0].numpy()
        cosines.append(float(a @ to_goal / (np.linalg.norm(a) * np.linalg.norm(to_goal) + 1e-9)))
    # the first planned action points towards the goal (cosine > 0.7, i.e. within 45°)
    assert sum(c > 0.7 for c in cosines) >= 4, cosines


@pytest.mark.filterwarnings("ignore:.*environment not having a spec")
def test_imagined_env_over_the_bundle_passes_the_env_checker(agent_model):
    from gymnasium.utils.env_checker import check_env

    from featureflow.rl import ImaginedEnv

    world = AgentToyWorld(24)
    locate = SegmentationGoalCost((0.0, 0.0), world.camera, source="rgb")

    def initial(rng):
        return world.clip(int(rng.integers(2_000_000, 3_000_000)), 2, stride=3).rgb

    def reward(latent, rgb, action):
        xy, visible = locate.agent_position({"rgb": rgb})
        return -float(xy.norm()) if bool(visible) else -3.0

    env = ImaginedEnv(agent_model, initial, reward, observation="rgb", max_steps=3, steps=1, render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (24, 24, 3) and obs.dtype == np.uint8
    # imagined episodes are reproducible from the seed
    a = np.array([1.0, 0.0], dtype=np.float32)
    first = env.step(a)[0]
    env.reset(seed=1)
    assert np.array_equal(env.step(a)[0], first)
