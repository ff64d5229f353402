"""featureflow.rl: agent world, Gymnasium envs, CEM planner, costs, MPC."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from featureflow.rl import (
    AGENT_COLOUR,
    AgentDistanceCost,
    AgentToyWorld,
    CEMPlanner,
    LatentGoalCost,
    MPCController,
    SegmentationGoalCost,
    SimulatorModel,
    ToyWorldEnv,
    agent_mask_from_rgb,
    aggregate_risk,
    evaluate_policy,
    mask_centroid,
    pixels_to_floor,
    random_policy,
    run_episode,
)


# ----------------------------------------------------------------------------- agent world
def test_agent_follows_commanded_velocity_and_others_keep_moving():
    w = AgentToyWorld(resolution=16, max_speed=1.0)
    s = w.reset(5)
    assert torch.allclose(s.colours[0], torch.tensor(AGENT_COLOUR))
    assert float(s.velocities[0].norm()) == 0.0
    s2 = w.act(s, np.array([0.0, -1.0]))
    np.testing.assert_allclose((s2.positions[0] - s.positions[0]).numpy(), [0.0, -0.1], atol=1e-9)
    s3 = w.act(s, np.array([5.0, 0.5]))  # clipped to (1, 0.5)
    np.testing.assert_allclose((s3.positions[0] - s.positions[0]).numpy(), [0.1, 0.05], atol=1e-9)
    assert not torch.equal(s2.positions[1:], s.positions[1:])  # the others slide on
    assert s2.step == 1 and s.step == 0


def test_agent_clip_records_actions_and_is_deterministic():
    w = AgentToyWorld(resolution=16)
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    clip = w.clip(3, 4, actions=a)
    assert torch.equal(clip.actions, a)
    assert clip.rgb.shape == (4, 3, 16, 16) and clip.positions.shape[:2] == (4, clip.shapes.numel())
    np.testing.assert_allclose((clip.positions[-1, 0] - clip.positions[0, 0]).numpy(), [0.2, 0.1], atol=0.02)
    again = w.clip(3, 4, actions=a)
    assert torch.equal(again.rgb, clip.rgb)
    rnd = w.clip(3, 4)
    assert rnd.actions.shape == (3, 2) and bool((rnd.actions.abs() <= 1).all())
    with pytest.raises(ValueError, match="actions: expected shape"):
        w.clip(3, 4, actions=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="expected start=0"):
        w.clip(3, 4, start=2)


def test_agent_is_the_only_red_object():
    w = AgentToyWorld(resolution=32)
    for seed in range(6):
        clip = w.clip(seed, 1)
        mask = agent_mask_from_rgb(clip.rgb[0])
        inst = clip.instances[0]
        assert bool((inst[mask] == 1).all())
        if int((inst == 1).sum()) > 4:
            assert int(mask.sum()) >= 0.5 * int((inst == 1).sum())


# ----------------------------------------------------------------------------- envs
@pytest.mark.filterwarnings("ignore:.*environment not having a spec")
@pytest.mark.parametrize("include_position", [False, True])
def test_toyworld_env_passes_env_checker(include_position):
    env = ToyWorldEnv(resolution=16, max_steps=5, include_position=include_position, render_mode="rgb_array")
    check_env(env, skip_render_check=False)


def test_toyworld_env_reward_termination_truncation():
    env = ToyWorldEnv(resolution=16, max_steps=3, goal_radius=0.3)
    obs, info = env.reset(seed=1)
    goal = env.position + np.array([0.15, 0.0])
    obs, info = env.reset(seed=1, options={"goal": goal})
    assert info["distance"] == pytest.approx(0.15)
    obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.0], dtype=np.float32))
    assert terminated and not truncated and info["is_success"] and reward == -info["distance"]
    env.reset(seed=1, options={"goal": env.position + np.array([1.0, 0.0])})
    flags = [env.step(np.zeros(2, dtype=np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="inside the arena"):
        env.reset(seed=0, options={"goal": (5.0, 0.0)})


# ----------------------------------------------------------------------------- planner
def test_aggregate_risk_orders_and_values():
    c = torch.tensor([[0.0, 1.0, 2.0, 9.0], [3.0, 3.0, 3.0, 3.0]])
    assert aggregate_risk(c, "mean").tolist() == [3.0, 3.0]
    assert aggregate_risk(c, "cvar", 0.25).tolist() == [9.0, 3.0]
    assert aggregate_risk(c, "cvar", 0.5).tolist() == [5.5, 3.0]
    assert aggregate_risk(c, "worst").tolist() == [9.0, 3.0]
    with pytest.raises(ValueError, match="risk must be one of"):
        aggregate_risk(c, "median")


def test_cem_improves_cost_on_quadratic_and_batches_candidates():
    target = torch.tensor([[0.3, -0.7], [0.9, 0.1], [-0.5, 0.5], [0.0, 0.0], [0.2, 0.2]])
    calls = []

    def dyn(actions, k):
        calls.append(tuple(actions.shape))
        return actions.unsqueeze(1).expand(-1, k, -1, -1)

    def cost(pred, actions):
        return ((pred - target) ** 2).sum((-1, -2))

    planner = CEMPlanner(horizon=5, num_candidates=300, num_elites=30, iterations=5, num_samples=3)
    result = planner.plan(dyn, cost, generator=torch.Generator().manual_seed(0))
    assert calls == [(300, 5, 2)] * 5  # one batched call per iteration
    assert list(result.history) == sorted(result.history, reverse=True)
    initial = float(cost(planner.initial_mean().expand(1, 1, 5, 2), None))
    assert result.cost < 0.05 * initial
    assert torch.allclose(result.actions, target, atol=0.12)


def test_cem_finds_optimum_of_deterministic_dynamics_with_risk_variants():
    # x_{t+1} = x_t + 0.5 a_t from x_0 = 0; cost: squared distance of every step to a goal; the
    # optimum moves at full speed towards (1, -1) (reached after two steps).
    goal = torch.tensor([1.0, -1.0])

    def dyn(actions, k):
        noise = 0.01 * torch.randn(actions.shape[0], k, 1, 2, generator=torch.Generator().manual_seed(1))
        return (0.5 * actions).cumsum(1).unsqueeze(1) + noise

    def cost(pred, actions):
        return ((pred - goal) ** 2).sum(-1).sum(-1)

    for risk in ("mean", "cvar", "worst"):
        planner = CEMPlanner(horizon=4, num_candidates=200, num_elites=20, iterations=6, num_samples=4, risk=risk)
        res = planner.plan(dyn, cost, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(res.actions[0], torch.tensor([1.0, -1.0]), atol=0.1), risk
        # optimal cost: 2 * 0.5**2 (first step; the goal is reached on the second) = 0.5
        assert 0.45 < res.cost < 0.65, risk
        assert res.history[-1] < 0.5 * res.history[0] or res.history[0] < 0.65


def test_cem_rejects_bad_cost_shapes_and_arguments():
    planner = CEMPlanner(horizon=3, num_candidates=8, num_elites=2, iterations=1, num_samples=2)
    with pytest.raises(ValueError, match="\\(num_candidates, num_samples\\) = \\(8, 2\\)"):
        planner.plan(lambda a, k: a, lambda p, a: p.sum(-1))
    with pytest.raises(ValueError, match="num_elites"):
        CEMPlanner(horizon=2, num_candidates=4, num_elites=5)
    with pytest.raises(ValueError, match="risk must be one of"):
        CEMPlanner(horizon=2, risk="optimistic")


# ----------------------------------------------------------------------------- costs
def test_pixels_to_floor_inverts_projection():
    w = AgentToyWorld(resolution=64)
    cam = w.camera
    pts = torch.tensor([[0.5, -0.3, 0.0], [-1.0, 1.2, 0.0], [0.2, 0.4, 0.2]], dtype=torch.float64)
    pc = (pts - cam.position) @ cam.rotation.T
    uv = (pc[:, :2] / pc[:, 2:]) * cam.intrinsics[0, 0] + cam.intrinsics[0, 2]
    back = torch.stack([pixels_to_floor(cam, uv[i].float(), float(pts[i, 2])) for i in range(3)])
    assert torch.allclose(back.double(), pts[:, :2], atol=1e-4)


def test_segmentation_cost_locates_agent_from_instances_and_rgb():
    w = AgentToyWorld(resolution=48)
    clip = w.clip(2, 3, actions=torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    true = clip.positions[:, 0]  # (3, 2)
    for source, pred in (("instances", clip.instances), ("rgb", clip.rgb)):
        cost = SegmentationGoalCost((0.0, 0.0), w.camera, source=source)
        xy, visible = cost.agent_position({source: pred})
        assert bool(visible.all())
        assert float((xy.double() - true).norm(dim=-1).max()) < 0.15, source
        c = cost({source: pred.unsqueeze(0).unsqueeze(0)}, None)
        assert c.shape == (1, 1)
        assert float(c) == pytest.approx(float(true.norm(dim=-1).sum()), abs=0.3)
    empty = torch.zeros(1, 1, 2, 48, 48, dtype=torch.long)
    assert float(SegmentationGoalCost((0, 0), w.camera, missing_cost=3.0)({"instances": empty}, None)) == 6.0
    _, ok = mask_centroid(torch.zeros(2, 4, 4, dtype=torch.bool))
    assert ok.tolist() == [False, False]


def test_distance_and_latent_costs():
    pos = torch.zeros(1, 2, 3, 2, 2)
    pos[0, 1, :, 0] = torch.tensor([3.0, 4.0])
    c = AgentDistanceCost((0.0, 0.0), final_weight=2.0)({"positions": pos}, None)
    assert c.tolist() == [[0.0, 20.0]]
    lat = torch.zeros(2, 1, 2, 1, 1, 3)
    lat[1] = 2.0
    assert LatentGoalCost(torch.ones(1, 1, 3))({"latents": lat}, None).flatten().tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="goal_latent"):
        LatentGoalCost(torch.ones(3))


# ----------------------------------------------------------------------------- MPC with the simulator
def test_simulator_model_matches_env_for_deterministic_world():
    w = AgentToyWorld(resolution=16, turn_prob=0.0)
    model = SimulatorModel(w, render=True, render_resolution=16)
    s = w.reset(4)
    model.set_state(s)
    acts = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    pred = model(acts, 2)
    s1 = w.act(w.act(s, acts[0, 0]), acts[0, 1])
    assert torch.allclose(pred["positions"][0, 1, -1], s1.positions)
    assert torch.equal(pred["instances"][0, 0, -1], w.render(s1).instances)


def test_mpc_with_simulator_reaches_goal_and_beats_random():
    env = ToyWorldEnv(resolution=8, max_steps=25, goal_radius=0.25)
    model = SimulatorModel(env.world)
    planner = CEMPlanner(horizon=4, num_candidates=64, num_elites=8, iterations=2, num_samples=2)

    def make_mpc():
        mpc = MPCController(planner, model, None, generator=torch.Generator().manual_seed(0))

        def policy(obs, info):
            model.set_state(env.state)
            mpc.cost = AgentDistanceCost(info["goal"], final_weight=2.0)
            return mpc.act()

        return policy

    seeds = [0, 1, 2]
    mpc_results = evaluate_policy(env, make_mpc, seeds)
    rnd_results = evaluate_policy(env, lambda: random_policy(env.action_space, 0), seeds)
    assert all(r.success for r in mpc_results)
    assert sum(r.success for r in rnd_results) < len(seeds)
    r = run_episode(env, lambda o, i: np.zeros(2, dtype=np.float32), seed=0)
    assert r.steps == 25 and not r.success


def test_frame_skip_holds_the_action_in_env_clip_and_model():
    w = AgentToyWorld(resolution=8, turn_prob=0.0)
    env = ToyWorldEnv(world=w, frame_skip=3)
    env.reset(seed=2, options={"goal": (0.0, 0.0)})
    start = env.state
    env.step(np.array([0.0, 1.0], dtype=np.float32))
    assert env.state.step == 3
    model = SimulatorModel(w, frame_skip=3)
    model.set_state(start)
    pred = model(torch.tensor([[[0.0, 1.0]]]), 1)
    assert torch.allclose(pred["positions"][0, 0, 0], env.state.positions)
    clip = w.clip(2, 2, actions=torch.tensor([[0.0, 1.0]]), stride=3)
    assert torch.allclose(clip.positions[-1], w.act(w.reset(2), np.array([0.0, 1.0]), repeat=3).positions)
    np.testing.assert_allclose((clip.positions[1, 0] - clip.positions[0, 0]).numpy(), [0.0, 0.3], atol=1e-6)
    with pytest.raises(ValueError, match="frame_skip"):
        ToyWorldEnv(resolution=8, frame_skip=0)
