"""Reach a goal in ToyWorldEnv with CEM + MPC, and compare with a random policy.

Policies, each run on the same fixed set of episodes (seeds 0..N-1):

* ``random``: uniform random actions.
* ``mpc-simulator``: CEM/MPC that plans with the simulator's own stochastic dynamics as
  the model (an *oracle* model: it is NOT a learned world model; it shows what the
  planner does with a perfect model), cost = distance of the agent to the goal.
* ``mpc-learned`` (``--learned``): CEM/MPC that plans with an action-conditioned flow
  world model trained here on random-action clips (pixel-patch features, Identity
  compressor, causal denoiser with ``cond_dim=2``); its cost locates the red agent in
  the *decoded predicted frames* and back-projects it onto the floor. It sees pixels
  only. This variant runs in a 24 px env whose steps hold each action for 3 simulation
  steps (``frame_skip``), so one step moves the agent by a visible amount, and compares
  with a random policy in that same env. Status: at this CPU budget the learned model
  has not yet learned the action's effect (see docs/rl.md), so do not expect it to beat
  random; it is here to exercise the full learned pipeline.

Usage::

    python examples/mpc_toyworld.py                    # random vs oracle MPC (~1-2 min)
    python examples/mpc_toyworld.py --learned          # + learned model (trains it, several minutes)
    python examples/mpc_toyworld.py --learned --model-dir /tmp/agent-model   # reuse a trained model

Success rates are printed as ``successes/episodes``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from featureflow.rl import (
    ActionWorldModel,
    AgentDistanceCost,
    AgentToyWorld,
    CEMPlanner,
    LatentPlanningModel,
    MPCController,
    SegmentationGoalCost,
    SimulatorModel,
    ToyWorldEnv,
    evaluate_policy,
    random_policy,
    train_action_world_model,
)


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


def learned_mpc(env: ToyWorldEnv, planner: CEMPlanner, wm: ActionWorldModel, seed: int, nfe: int):
    model = LatentPlanningModel(wm, decode_rgb=True, steps=nfe, generator=torch.Generator().manual_seed(seed))

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


def report(name: str, results, seconds: float) -> float:
    wins = sum(r.success for r in results)
    steps = np.mean([r.steps for r in results])
    print(f"{name:>14}: success {wins}/{len(results)} = {wins / len(results):.0%}  "
          f"(mean episode length {steps:.1f}, {seconds:.0f}s)", flush=True)
    return wins / len(results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--candidates", type=int, default=300)
    p.add_argument("--elites", type=int, default=30)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--samples", type=int, default=4, help="stochastic futures K per candidate")
    p.add_argument("--risk", default="mean", choices=["mean", "cvar", "worst"])
    p.add_argument("--learned", action="store_true", help="also train and plan with a learned world model")
    p.add_argument("--model-dir", type=Path, default=None, help="load/save the learned model here")
    p.add_argument("--learned-resolution", type=int, default=24)
    p.add_argument("--learned-candidates", type=int, default=64)
    p.add_argument("--learned-samples", type=int, default=2)
    p.add_argument("--learned-horizon", type=int, default=3)
    p.add_argument("--learned-episodes", type=int, default=None, help="default: --episodes")
    p.add_argument("--learned-frame-skip", type=int, default=3, help="simulation steps per env step (action held)")
    p.add_argument("--learned-max-steps", type=int, default=15)
    p.add_argument("--nfe", type=int, default=1, help="network evaluations per predicted frame")
    p.add_argument("--train-steps", type=int, default=1000)
    p.add_argument("--train-clips", type=int, default=600)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core CPU)")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = list(range(args.episodes))

    env = ToyWorldEnv(resolution=args.resolution, max_steps=args.max_steps)
    print(f"ToyWorldEnv: {args.resolution}px, goal radius {env.goal_radius} m, max {args.max_steps} steps, "
          f"{args.episodes} episodes (seeds 0..{args.episodes - 1})")
    t = time.time()
    rnd = evaluate_policy(env, lambda: random_policy(env.action_space, seed=0), seeds, progress=args.progress)
    r_rate = report("random", rnd, time.time() - t)

    planner = CEMPlanner(args.horizon, args.candidates, args.elites, args.iterations, args.samples, args.risk)
    t = time.time()
    sim = evaluate_policy(env, simulator_mpc(env, planner, 0), seeds, progress=args.progress)
    s_rate = report("mpc-simulator", sim, time.time() - t)
    print(f"  ({planner}; model = the simulator itself, an oracle, not a learned world model)")

    if args.learned:
        world = AgentToyWorld(args.learned_resolution)
        if args.model_dir is not None and (args.model_dir / "config.json").is_file():
            wm = ActionWorldModel.from_pretrained(args.model_dir)
            print(f"loaded learned model from {args.model_dir}")
        else:
            t = time.time()
            wm = train_action_world_model(world, num_clips=args.train_clips, train_steps=args.train_steps,
                                          frame_skip=args.learned_frame_skip, width=64, depth=2, heads=4,
                                          batch_size=32, lr=2e-3, progress=args.progress)
            print(f"trained the action-conditioned world model in {time.time() - t:.0f}s")
            if args.model_dir is not None:
                wm.save_pretrained(args.model_dir)
        lenv = ToyWorldEnv(world=world, max_steps=args.learned_max_steps, frame_skip=args.learned_frame_skip)
        lseeds = list(range(args.learned_episodes or args.episodes))
        lplanner = CEMPlanner(args.learned_horizon, args.learned_candidates, max(4, args.learned_candidates // 10),
                              2, args.learned_samples, args.risk)
        t = time.time()
        lrnd = evaluate_policy(lenv, lambda: random_policy(lenv.action_space, seed=0), lseeds)
        report(f"random@{args.learned_resolution}px", lrnd, time.time() - t)
        t = time.time()
        lrn = evaluate_policy(lenv, learned_mpc(lenv, lplanner, wm, 0, args.nfe), lseeds, progress=args.progress)
        report("mpc-learned", lrn, time.time() - t)
        print(f"  ({lplanner}; model = learned action-conditioned flow forecaster, {args.nfe} NFE/frame)")

    print(f"summary: random {r_rate:.0%} vs MPC(simulator model) {s_rate:.0%} over {args.episodes} episodes")


if __name__ == "__main__":
    main()
