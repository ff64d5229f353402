"""Reach a goal in ToyWorldEnv with CEM + MPC over a learned world model, and compare with random.

Policies, each run on the same fixed set of episodes (seeds 0..N-1):

* ``random``: uniform random actions.
* ``mpc-learned``: CEM/MPC that plans with the bundled action-conditioned world model
  ``toyworld-agent`` (pixel-patch features, residual flow forecaster conditioned on the
  action; see ``examples/train_toyworld_agent.py``). It sees **pixels only**: each step it
  encodes the last frames, samples K futures for every candidate action sequence
  (all N·K futures batched), decodes them to RGB and scores each by the distance of the
  red agent, found in the forecast pixels and back-projected onto the floor, to the goal.
  The env matches the model's training data (24 px; each action is held for 3
  simulation steps, ``frame_skip``).
* ``mpc-simulator`` (``--oracle``): the same planner with the simulator's own stochastic
  dynamics as the model and the true agent position as the cost: an *oracle* upper
  bound, not a learned world model.

Usage::

    python examples/mpc_toyworld.py                          # random vs learned MPC (about 5 min, 1 thread)
    python examples/mpc_toyworld.py --oracle                 # + the simulator-as-model upper bound
    python examples/mpc_toyworld.py --model-dir runs/toyworld-agent/model   # a model you trained

One line is printed per episode as it ends; success rates are printed as
``successes/episodes``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from featureflow.rl import (
    AgentDistanceCost,
    AgentToyWorld,
    CEMPlanner,
    LatentPlanningModel,
    MPCController,
    SegmentationGoalCost,
    SimulatorModel,
    ToyWorldEnv,
    pixels_to_floor,
    random_policy,
    run_episode,
)
from featureflow.utils import progress_bar
from featureflow.viz import save_gif
from featureflow.world import WorldModel


def simulator_mpc(env: ToyWorldEnv, planner: CEMPlanner, seed: int):
    model = SimulatorModel(env.world, seed=seed)

    def make():
        mpc = MPCController(planner, model, None, generator=torch.Generator().manual_seed(seed))

        def policy(obs, info):
            model.set_state(env.state)  # the oracle model reads the true state
            mpc.cost = AgentDistanceCost(info["goal"], final_weight=3.0)
            return mpc.act()

        return policy

    return make


def learned_mpc(env: ToyWorldEnv, planner: CEMPlanner, wm: WorldModel, seed: int, nfe: int):
    model = LatentPlanningModel(wm, decode=("rgb",), steps=nfe, generator=torch.Generator().manual_seed(seed))

    def make():
        mpc = MPCController(planner, model, None, generator=torch.Generator().manual_seed(seed))
        history: list[torch.Tensor] = []

        def policy(obs, info):
            history.append(torch.from_numpy(obs).permute(2, 0, 1))  # (3, H, W) uint8: pixels only
            model.set_context(torch.stack(history[-wm.max_context :]))
            mpc.cost = SegmentationGoalCost(info["goal"], env.world.camera, source="rgb", final_weight=3.0)
            return mpc.act()

        return policy

    return make


def goal_pixel(env: ToyWorldEnv, goal) -> tuple[int, int]:
    """The pixel (u, v) whose floor point is nearest to ``goal`` (metres)."""
    n = env.world.resolution
    v, u = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    floor = pixels_to_floor(env.world.camera, torch.stack([u, v], -1).double())
    i = int((floor - torch.as_tensor(goal, dtype=torch.float64)).norm(dim=-1).argmin())
    return i % n, i // n


def run_episodes(name: str, env: ToyWorldEnv, make_policy, seeds: list[int], progress: bool):
    """One episode per seed, each with a fresh policy; prints one line per episode as it ends."""
    results = []
    for i, seed in enumerate(progress_bar(seeds, progress=progress, desc=name)):
        t = time.time()
        r = run_episode(env, make_policy(), seed=seed)
        results.append(r)
        dist = "" if r.final_distance is None else f", final distance {r.final_distance:.2f} m"
        tqdm.write(f"  {name} episode {i + 1}/{len(seeds)} (seed {seed}): "
                   f"{'reached the goal' if r.success else 'missed the goal'} in {r.steps} steps{dist} "
                   f"({time.time() - t:.1f}s)")
        sys.stdout.flush()
    return results


def report(name: str, results, seconds: float) -> float:
    wins = sum(r.success for r in results)
    steps = np.mean([r.steps for r in results])
    print(f"{name:>14}: success {wins}/{len(results)} = {wins / len(results):.0%}  "
          f"(mean episode length {steps:.1f}, {seconds:.0f}s)", flush=True)
    return wins / len(results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20, help="episodes per policy, seeds 0..N-1")
    p.add_argument("--model", default="toyworld-agent", help="bundled model name or directory")
    p.add_argument("--model-dir", default=None, help="alias of --model for a directory")
    p.add_argument("--max-steps", type=int, default=15, help="env steps before an episode is truncated")
    p.add_argument("--goal-radius", type=float, default=0.25, help="success distance to the goal, metres")
    p.add_argument("--horizon", type=int, default=3, help="planning horizon, env steps")
    p.add_argument("--candidates", type=int, default=64, help="CEM candidate action sequences N")
    p.add_argument("--elites", type=int, default=8, help="CEM elites kept per iteration")
    p.add_argument("--iterations", type=int, default=2, help="CEM iterations per plan")
    p.add_argument("--num-samples", "--samples", dest="num_samples", type=int, default=2, metavar="K",
                   help="stochastic futures K per candidate (--samples is an alias)")
    p.add_argument("--nfe", type=int, default=1, help="network evaluations per predicted frame")
    p.add_argument("--risk", default="mean", choices=["mean", "cvar", "worst"],
                   help="how the K futures' costs are combined")
    p.add_argument("--oracle", action="store_true", help="also plan with the simulator as the model (upper bound)")
    p.add_argument("--gif", default=None, help="write the first learned-MPC episode as a GIF here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core CPU)")
    p.add_argument("--progress", action="store_true", help="also show a progress bar over the episodes")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = list(range(args.episodes))

    wm = WorldModel.from_pretrained(args.model_dir or args.model)
    meta = wm.metadata
    world = AgentToyWorld(int(meta.get("resolution", 24)))
    frame_skip = int(meta.get("frame_skip", 1))
    env = ToyWorldEnv(world=world, max_steps=args.max_steps, goal_radius=args.goal_radius, frame_skip=frame_skip)
    print(f"ToyWorldEnv: {world.resolution}px, frame_skip {frame_skip}, goal radius {env.goal_radius} m, "
          f"max {args.max_steps} steps, {args.episodes} episodes (seeds 0..{args.episodes - 1}); model {args.model_dir or args.model}")

    t = time.time()
    rnd = run_episodes("random", env, lambda: random_policy(env.action_space, seed=0), seeds, args.progress)
    r_rate = report("random", rnd, time.time() - t)

    planner = CEMPlanner(args.horizon, args.candidates, args.elites, args.iterations, args.num_samples, args.risk)
    t = time.time()
    lrn = run_episodes("mpc-learned", env, learned_mpc(env, planner, wm, 0, args.nfe), seeds, args.progress)
    l_rate = report("mpc-learned", lrn, time.time() - t)
    print(f"  ({planner}; model = learned action-conditioned flow world model, {args.nfe} NFE/frame, pixels only)")

    if args.oracle:
        t = time.time()
        sim = run_episodes("mpc-simulator", env, simulator_mpc(env, planner, 0), seeds, args.progress)
        report("mpc-simulator", sim, time.time() - t)
        print("  (model = the simulator itself with the true agent position: an oracle, not a learned world model)")

    if args.gif:
        frames = []
        policy = learned_mpc(env, planner, wm, 0, args.nfe)()
        obs, info = env.reset(seed=seeds[0])
        frames.append(obs)
        for _ in range(args.max_steps):
            obs, _, term, trunc, info = env.step(policy(obs, info))
            frames.append(obs)
            if term or trunc:
                break
        clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
        clip = clip.repeat_interleave(8, -1).repeat_interleave(8, -2)
        u, v = goal_pixel(env, info["goal"])
        clip[:, :, max(0, 8 * v - 6) : 8 * v + 10, 8 * u + 1 : 8 * u + 3] = 255  # a white cross marks the goal
        clip[:, :, 8 * v + 1 : 8 * v + 3, max(0, 8 * u - 6) : 8 * u + 10] = 255
        save_gif(clip, args.gif, fps=4)
        print(f"wrote {args.gif}")

    print(f"summary: random {r_rate:.0%} vs MPC over the learned world model {l_rate:.0%} over {args.episodes} episodes")


if __name__ == "__main__":
    main()
