"""Planning throughput: one CEM plan over the learned ``toyworld-agent`` world model.

Each CEM iteration makes ONE dynamics call with all N candidate action sequences; the
model prefills the context once, expands its key/value cache to the N·K futures and
runs them as one batch per network evaluation, so an iteration costs ``horizon × NFE``
batched denoiser passes (plus decoding the N·K·H predicted frames to RGB for the cost).
This script counts those passes and times whole plans for several candidate counts N
and samples K (the issue's reference point: 300 candidates × horizon 5).

Run::

    python benchmarks/planning.py                       # N ∈ {50, 100, 300}, K ∈ {1, 4}, H=5
    python benchmarks/planning.py --quick               # N ∈ {16}, K ∈ {2}, H=2

Prints a table (seconds per plan, denoiser passes per plan, rows per pass, predicted
frames per second) and writes ``planning.json`` and ``planning.png`` to ``--out``.
"""

from __future__ import annotations

import time

import torch

from _common import base_parser, line_plot, md_table, setup, write_json


def main(argv: list[str] | None = None) -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(model="toyworld-agent")
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--nfe", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    setup(args.threads)
    from featureflow.rl import AgentToyWorld, CEMPlanner, LatentPlanningModel, SegmentationGoalCost
    from featureflow.world import WorldModel

    wm = WorldModel.from_pretrained(args.model)
    world = AgentToyWorld(int(wm.metadata.get("resolution", 24)))
    fs = int(wm.metadata.get("frame_skip", 1))
    horizon = 2 if args.quick else args.horizon
    cands = [16] if args.quick else [50, 100, 300]
    samples = [2] if args.quick else [1, 4]
    model = LatentPlanningModel(wm, decode=("rgb",), steps=args.nfe, generator=torch.Generator().manual_seed(args.seed))
    clip = world.clip(1_000_000, wm.max_context, stride=fs)
    model.set_context(clip.rgb)
    cost = SegmentationGoalCost((0.5, -0.5), world.camera, source="rgb")

    passes = {"n": 0}
    step = wm.forecaster.denoiser.step
    rows_seen: list[int] = []

    def counted_step(state, x, t, *a):  # count batched network evaluations and their rows
        passes["n"] += 1
        rows_seen.append(int(x.shape[0]))
        return step(state, x, t, *a)

    wm.forecaster.denoiser.step = counted_step  # type: ignore[method-assign]
    results, table = [], []
    for k in samples:
        for n in cands:
            planner = CEMPlanner(horizon, n, max(2, n // 10), args.iterations, k)
            times = []
            for r in range(args.repeats):
                passes["n"] = 0
                rows_seen.clear()
                t0 = time.perf_counter()
                planner.plan(model, cost, generator=torch.Generator().manual_seed(r))
                times.append(time.perf_counter() - t0)
            sec = min(times)
            frames = args.iterations * n * k * horizon
            row = {"candidates": n, "samples": k, "horizon": horizon, "iterations": args.iterations, "nfe": args.nfe,
                   "seconds_per_plan": sec, "denoiser_passes": passes["n"], "rows_per_pass": max(rows_seen),
                   "predicted_frames_per_second": frames / sec}
            results.append(row)
            table.append([n, k, horizon, f"{sec:.2f}", passes["n"], max(rows_seen), f"{frames / sec:,.0f}"])
            print(f"N={n:4d} K={k} H={horizon}: {sec:.2f} s/plan, {passes['n']} denoiser passes of {max(rows_seen)} rows, "
                  f"{frames / sec:,.0f} predicted frames/s", flush=True)
    print()
    print(md_table(["candidates N", "samples K", "horizon", "s / plan", "denoiser passes", "rows / pass", "frames / s"], table))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "planning.json", {"model": args.model, "threads": args.threads, "results": results})
    series = [(f"K={k}", [r["candidates"] for r in results if r["samples"] == k],
               [r["seconds_per_plan"] for r in results if r["samples"] == k]) for k in samples]
    line_plot(args.out / "planning.png", series, xlabel="candidates N", ylabel="seconds per CEM plan",
              title=f"CEM plan time, {args.model}, H={horizon}, {args.iterations} iterations")
    print(f"wrote {args.out / 'planning.json'} and {args.out / 'planning.png'}")


if __name__ == "__main__":
    main()
