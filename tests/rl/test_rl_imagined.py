"""featureflow.rl: action-conditioned world models, planning over them, ImaginedEnv."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.rl import (
    AgentToyWorld,
    CEMPlanner,
    ImaginedEnv,
    LatentGoalCost,
    LatentPlanningModel,
    SegmentationGoalCost,
    pixel_world_model,
)
from featureflow.world import WorldModel


def tiny_model(seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    return pixel_world_model(2, width=16, depth=1, heads=2)


def toy_frames(world: AgentToyWorld):
    def initial(rng: np.random.Generator) -> torch.Tensor:
        return world.clip(int(rng.integers(0, 1000)), 2).rgb

    return initial


@pytest.mark.filterwarnings("ignore:.*environment not having a spec")
@pytest.mark.parametrize("observation", ["latent", "rgb"])
def test_imagined_env_passes_env_checker(observation):
    world = AgentToyWorld(resolution=8)
    cost = SegmentationGoalCost((0.0, 0.0), world.camera, source="rgb")

    def reward(latent, rgb, action):
        return -float(latent.pow(2).mean()) if rgb is None else -float(cost.agent_position({"rgb": rgb})[0].norm())

    env = ImaginedEnv(tiny_model(), toy_frames(world), reward, observation=observation, max_steps=4, render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    total = 0
    while True:
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        total += 1
        if term or trunc:
            break
    assert total == 4 and trunc and info["steps"] == 4


def test_imagined_env_rejects_bad_models_and_actions():
    with pytest.raises(TypeError, match="action-conditioned WorldModel"):
        ImaginedEnv(object(), lambda rng: torch.rand(2, 3, 8, 8), lambda *a: 0.0)
    plain = WorldModel(tiny_model().encoder, tiny_model().compressor,
                       FlowForecaster(Denoiser(latent_dim=12, width=16, depth=1, heads=2)), tiny_model().probes)
    with pytest.raises(ValueError, match="not action-conditioned"):
        ImaginedEnv(plain, lambda rng: torch.rand(2, 3, 8, 8), lambda *a: 0.0)
    env = ImaginedEnv(tiny_model(), lambda rng: torch.rand(2, 3, 8, 8), lambda *a: 0.0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        env.step(np.zeros(3))


def test_action_forecaster_shapes_and_batched_planning():
    wm = tiny_model()
    pm = LatentPlanningModel(wm, steps=1, generator=torch.Generator().manual_seed(0))
    pm.set_context(torch.rand(3, 3, 8, 8))
    pred = pm(torch.zeros(6, 4, 2), 3)
    assert pred["latents"].shape == (6, 3, 4, 4, 4, 12) and pred["rgb"].shape == (6, 3, 4, 3, 8, 8)
    # every candidate's K futures follow that candidate's actions: K=1 rows equal a direct rollout
    acts = torch.rand(3, 2, 2) * 2 - 1
    one = LatentPlanningModel(wm, steps=1, generator=torch.Generator().manual_seed(5))
    one.set_context(torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    pm.set_context(torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)))
    direct = wm.forecaster.rollout(pm.context, 2, 3, steps=1, generator=torch.Generator().manual_seed(5),
                                   actions=acts.unsqueeze(0)).latents[0]
    assert torch.allclose(one(acts, 1)["latents"][:, 0], direct, atol=1e-6)
    with pytest.raises(ValueError, match="actions: expected"):
        pm(torch.zeros(6, 4, 3), 2)
    with pytest.raises(ValueError, match="needs an action-conditioned"):
        LatentPlanningModel(WorldModel(wm.encoder, wm.compressor, FlowForecaster(Denoiser(latent_dim=12, width=16, depth=1, heads=2))))


def test_action_world_model_save_load_round_trip(tmp_path):
    wm = tiny_model()
    wm.compressor.set_feature_stats(torch.full((12,), 0.5), torch.full((12,), 0.2))
    wm.metadata = {"frame_skip": 3}
    wm.save_pretrained(tmp_path / "m")
    back = WorldModel.from_pretrained(tmp_path / "m")
    assert back.action_dim == 2 and back.metadata["frame_skip"] == 3 and back.forecaster.residual
    frames, a = torch.rand(1, 2, 3, 8, 8), torch.rand(1, 2, 2, 2)
    f1 = wm.forecast(frames, 2, 2, steps=2, generator=torch.Generator().manual_seed(1), actions=a)
    f2 = back.forecast(frames, 2, 2, steps=2, generator=torch.Generator().manual_seed(1), actions=a)
    assert torch.equal(f1.latents, f2.latents) and torch.equal(f1.decode("rgb"), f2.decode("rgb"))


def _point_world(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent clips of a point moved by its actions: z_{t+1} = z_t + 0.5 a_t (+ small noise)."""
    actions = torch.rand(n, 3, 2, generator=g) * 2 - 1
    z0 = torch.rand(n, 1, 2, generator=g) - 0.5
    steps = 0.5 * actions + 0.02 * torch.randn(n, 3, 2, generator=g)
    z = torch.cat([z0, z0 + steps.cumsum(1)], 1)  # (n, 4, 2)
    return z.view(n, 4, 1, 1, 2), actions


@pytest.fixture
def one_thread():
    """Tiny models train many times faster on one thread of a small shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_action_conditioning_moves_forecasts_in_commanded_direction(one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    den = Denoiser(latent_dim=2, width=16, depth=1, heads=2, max_context=2, cond_dim=2)
    fc = FlowForecaster(den, max_stride=1)
    opt = torch.optim.Adam(fc.parameters(), lr=1e-2)
    clips, actions = _point_world(512, g)
    for _ in range(100):
        idx = torch.randint(0, 512, (256,), generator=g)
        loss = fc.loss(clips[idx], g, actions[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    fc.eval()
    ctx = torch.zeros(1, 1, 1, 1, 2)
    commands = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]).view(1, 4, 1, 2)
    per_sample = commands.repeat_interleave(16, 1)  # (1, 64, 1, 2): 16 samples per command
    out = fc.rollout(ctx, 1, 64, steps=8, generator=torch.Generator().manual_seed(0), actions=per_sample).latents
    mean = out.view(4, 16, 2).mean(1)  # (4 commands, 2)
    expected = 0.5 * commands[0, :, 0]
    assert torch.allclose(mean, expected, atol=0.2), mean
    # and each forecast moves along the command, not the other axis
    assert bool(((mean * commands[0, :, 0]).sum(-1) > 0.3).all())


def test_cem_over_learned_model_runs_batched():
    wm = tiny_model()
    pm = LatentPlanningModel(wm, decode=(), steps=1)
    pm.set_context(torch.rand(2, 3, 8, 8))
    goal = torch.zeros(4, 4, 12)
    calls = []

    def dyn(actions, k):
        calls.append(actions.shape[0])
        return pm(actions, k)

    res = CEMPlanner(horizon=2, num_candidates=32, num_elites=4, iterations=2, num_samples=2).plan(dyn, LatentGoalCost(goal))
    assert calls == [32, 32] and res.actions.shape == (2, 2) and np.isfinite(res.cost)
