"""Distribution scores: K sampled futures vs M true futures branched from the same state.

For each of N held-out contexts (the first N seeds of the split; the model's stride and
warm-up), `ToyWorld.branch` draws M true futures of 3 frames from the simulator state of
the last context frame (objects turn at random, so the futures differ); they are encoded
by the model's encoder + compressor (``WorldModel.encode``). The model draws K futures
from the last |C| context frames, |C| ∈ {1, max_context}. Per |C| and forecast step (t+1,
t+3):

* **spread ratio** = mean over contexts of the mean pairwise L2 distance between the K
  sampled latent frames (h·w·C values) ÷ mean over contexts of the mean pairwise distance
  between the M true futures' latents (a ratio of means, because at t+1 the true futures of
  a context often do not differ at all); 1 = as spread as the truth, > 1 over-dispersed,
  < 1 under-dispersed; bootstrap interval over contexts;
* **energy distance** 2E‖X−Y‖ − E‖X−X′‖ − E‖Y−Y′‖ (within-set terms over distinct pairs, 0
  in expectation iff the distributions agree) between the forecast set and the true set,
  (a) in latent space (L2 over the latent frame) and (b) in decoded segmentation: each
  class map one-hot encoded and average-pooled ``pool``×``pool`` (the class fractions of
  each block, L2 over classes × blocks); the true futures' segmentation is decoded by the
  same probe from their latents, so probe errors do not count against the forecasters.

Rows: flow samples; regression (K copies of its single prediction); copy-last-frame (K
copies); a second independent draw of K true futures (the noise floor of finite sets).
Figures are means over contexts ± 1.96·SE.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PROTOCOL_SOLVER, PROTOCOL_STEPS, base_parser, bootstrap_ratio, fmt, interval, load, md_table, setup, write_json,
)

FORMAT = 2
HORIZON = 3
STEPS = {"t+1": 0, "t+3": 2}
FLOW, REG, COPY, TRUTH2 = "flow", "regression", "copy last frame", "true futures (2nd draw)"


def mean_pairwise(x: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance over distinct pairs of x (b, n, ...) → (b,)."""
    f = x.flatten(2).double()
    n = f.shape[1]
    return torch.cdist(f, f).sum((1, 2)) / (n * (n - 1))


def seg_blocks(seg: torch.Tensor, num_classes: int, pool: int) -> torch.Tensor:
    """Class maps (..., H, W) → one-hot average-pooled class fractions (..., classes·H/pool·W/pool)."""
    lead = seg.shape[:-2]
    oh = F.one_hot(seg.reshape(-1, *seg.shape[-2:]).long(), num_classes).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(oh, pool).reshape(*lead, -1)


def run(args: Any) -> dict[str, Any]:
    from featureflow.demo_forecast import copy_last_forecast
    from featureflow.metrics import energy_distance

    setup(args.threads)
    wm, world, data = load(args.model)
    n_ctx = args.contexts or (2 if args.quick else 32)
    K = args.samples or (3 if args.quick else 8)
    M = args.futures or (3 if args.quick else 16)
    c_max = wm.max_context
    contexts = sorted({1, c_max})
    stride, warmup = data["stride"], data["warmup"]
    ncls = len(world.CLASSES)
    seeds = world.split_seeds(args.split)
    has_reg = "regression" in wm.baselines
    t0 = time.perf_counter()
    # acc[ckey][space][row] -> list of per-context (b, k) values
    ed: dict[str, dict[str, dict[str, list[torch.Tensor]]]] = {}
    spread: dict[str, dict[str, list[torch.Tensor]]] = {}

    def add(store: dict, keys: tuple[str, ...], v: torch.Tensor) -> None:
        for k in keys[:-1]:
            store = store.setdefault(k, {})
        store.setdefault(keys[-1], []).append(v.double())

    for lo in range(0, n_ctx, args.batch):
        ids = range(lo, min(lo + args.batch, n_ctx))
        frames, truth, truth2 = [], [], []
        for i in ids:
            frames.append(world.clip(seeds[i], c_max, stride=stride, start=warmup).rgb)
            state = world.state_at(seeds[i], warmup + (c_max - 1) * stride)
            truth.append(world.branch(state, M, HORIZON, seed=0, stride=stride).rgb)
            truth2.append(world.branch(state, K, HORIZON, seed=1, stride=stride).rgb)
        frames = torch.stack(frames)
        size = tuple(frames.shape[-2:])
        with torch.no_grad():
            z_t = torch.stack([wm.encode(t) for t in truth])  # (b, M, k, h, w, C)
            z_t2 = torch.stack([wm.encode(t) for t in truth2])
            s_t = wm.decode_latents(z_t, "segmentation", size)  # (b, M, k, H, W)
            s_t2 = wm.decode_latents(z_t2, "segmentation", size)
        truth_sets = {"latent": z_t, "segmentation": seg_blocks(s_t, ncls, args.pool)}
        for c in contexts:
            ckey = f"|C|={c}"
            ctx = frames[:, c_max - c :]
            g = torch.Generator().manual_seed(args.seed + lo)
            fcs = {FLOW: wm.forecast(ctx, HORIZON, K, solver=args.solver, steps=args.steps, generator=g)}
            if has_reg:
                fcs[REG] = wm.forecast(ctx, HORIZON, 1, baseline="regression")
            fcs[COPY] = copy_last_forecast(wm, ctx, HORIZON)
            sets = {name: {"latent": fc.latents.expand(-1, K, *fc.latents.shape[2:]),
                           "segmentation": seg_blocks(fc.decode("segmentation"), ncls, args.pool)
                           .expand(-1, K, -1, -1)} for name, fc in fcs.items()}
            sets[TRUTH2] = {"latent": z_t2, "segmentation": seg_blocks(s_t2, ncls, args.pool)}
            for step, j in STEPS.items():
                add(spread, (ckey, step, "samples"), mean_pairwise(fcs[FLOW].latents[:, :, j]))
                add(spread, (ckey, step, "truth"), mean_pairwise(z_t[:, :, j]))
                for name, sp in sets.items():
                    for space, x in sp.items():
                        y = truth_sets[space][:, :, j]
                        add(ed, (ckey, step, space, name),
                            energy_distance(x[:, :, j].float(), y.float(), reduction="none"))
        print(f"distribution: {min(lo + args.batch, n_ctx)}/{n_ctx} contexts ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    results: dict[str, Any] = {}
    for ckey, steps in ed.items():
        for step, spaces in steps.items():
            s, t = torch.cat(spread[ckey][step]["samples"]), torch.cat(spread[ckey][step]["truth"])
            out = results.setdefault(ckey, {}).setdefault(step, {})
            out["spread"] = {"samples": interval(s), "truth": interval(t),
                             "ratio": bootstrap_ratio(s, t, seed=args.seed)}
            out["energy_distance"] = {space: {name: interval(torch.cat(v)) for name, v in rows.items()}
                                      for space, rows in spaces.items()}
            if has_reg:
                out["energy_gap_regression_minus_flow"] = {
                    space: interval(torch.cat(rows[REG]) - torch.cat(rows[FLOW])) for space, rows in spaces.items()}
    res = {"benchmark": "distribution", "format": FORMAT, "model": str(args.model), "quick": bool(args.quick),
           "protocol": {"contexts": n_ctx, "samples_K": K, "true_futures_M": M, "context_lengths": contexts,
                        "stride": stride, "warmup": warmup, "horizon": HORIZON, "seg_pool": args.pool,
                        "solver": args.solver, "steps": args.steps, "split": args.split},
           "results": results, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(Path(args.out) / "distribution.json", res)
    print(markdown(res))
    return res


def markdown(res: dict[str, Any], img_prefix: str = "benchmarks/") -> str:
    if res.get("format", 1) < 2:
        return ("The stored `distribution.json` is from the previous protocol (energy distance in decoded depth, "
                "no spread ratio): not run with this version of `benchmarks/distribution.py`.\n")
    p = res["protocol"]
    out = [f"N={p['contexts']} {p['split']} contexts, M={p['true_futures_M']} true futures (`ToyWorld.branch` from "
           f"the last context frame's state) vs K={p['samples_K']} samples ({p['solver']}, {p['steps']} NFE); "
           f"segmentation one-hot, pooled {p['seg_pool']}×{p['seg_pool']}.", ""]
    sp = [[c, s, fmt(v["spread"]["samples"]), fmt(v["spread"]["truth"]), fmt(v["spread"]["ratio"])]
          for c, hs in res["results"].items() for s, v in hs.items()]
    out += ["**Spread of the samples vs the true futures** (mean pairwise L2 distance between latent frames; "
            "ratio 1 = calibrated spread, > 1 over-dispersed):", "",
            md_table(["context", "step", "samples", "true futures", "ratio"], sp), ""]
    for space, label in (("latent", "latent space"), ("segmentation", "decoded segmentation")):
        rows, names = [], []
        for hs in res["results"].values():
            for v in hs.values():
                names = list(v["energy_distance"][space])
        for name in names:
            rows.append([name] + [fmt(v["energy_distance"][space][name], 3) for hs in res["results"].values()
                                  for v in hs.values()])
        heads = [f"{c} {s}" for c, hs in res["results"].items() for s in hs]
        out += [f"**Energy distance to the true futures, {label}** (↓, 0 = same distribution):", "",
                md_table(["row", *heads], rows), ""]
    gaps = [f"{c} {s}: latent {fmt(v['energy_gap_regression_minus_flow']['latent'], 3)}, segmentation "
            f"{fmt(v['energy_gap_regression_minus_flow']['segmentation'], 3)}"
            for c, hs in res["results"].items() for s, v in hs.items() if "energy_gap_regression_minus_flow" in v]
    if gaps:
        out += ["Regression − flow energy distance (paired; > 0 = the flow's set is closer to the true futures): "
                + "; ".join(gaps) + ".", ""]
    return "\n".join(out)


def parser() -> Any:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, default=None, help="contexts (default 32; 2 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="K samples (default 8; 3 with --quick)")
    p.add_argument("--futures", type=int, default=None, help="M true futures (default 16; 3 with --quick)")
    p.add_argument("--pool", type=int, default=4, help="segmentation average-pool factor")
    p.add_argument("--solver", default=PROTOCOL_SOLVER, help="sampler (default: the protocol's, chosen on val)")
    p.add_argument("--steps", type=int, default=PROTOCOL_STEPS, help="network evaluations per frame")
    p.add_argument("--batch", type=int, default=8, help="contexts per forecast batch")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
