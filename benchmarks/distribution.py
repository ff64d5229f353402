"""Distribution scores: K sampled futures vs M true futures branched from the same state.

For each of N held-out test contexts (the model's max_context frames, its stride and
warm-up), `ToyWorld.branch` draws M true futures from the simulator state of the last
context frame (objects turn at random, so the futures differ). The model draws K futures.
Per forecast step (t+1 and t+3) we report:

* energy distance (2E‖X−Y‖ − E‖X−X′‖ − E‖Y−Y′‖, unbiased, ≥ 0 in expectation, 0 iff the
  distributions agree) in feature space (the encoder's features of the true futures after
  the compressor round trip vs the forecast features) and in decoded space (depth maps
  average-pooled 4×, in metres; the true futures' depth is decoded by the same probe from
  their round-tripped features, so probe and compressor errors do not count against the
  forecasters);
* coverage: the fraction of true futures with a sample within radius r (RMS distance),
  at r = ½·m and r = m, where m = the median (over contexts and futures) RMS distance
  between a true future and the last context frame, i.e. how far the scene typically
  moves by that step.

Rows: flow samples; regression (K copies of its single prediction); copy-last-frame
(K copies); and a second independent draw of K true futures (the noise floor of a finite
sample). Figures are means over contexts ± 1.96·SE.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, fmt, interval, load, md_table, setup, write_json  # noqa: E402

HORIZON = 3
STEPS = {"t+1": 0, "t+3": 2}


def _rms_pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RMS distances (n, m) between flattened rows of a (n, ...) and b (m, ...)."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    return torch.cdist(a, b) / a.shape[1] ** 0.5


def _round_trip(wm: Any, feats: torch.Tensor) -> torch.Tensor:
    """Features (n, k, h, w, D) → compressor latents → features."""
    return wm.compressor.decode(wm.compressor.encode(feats.flatten(0, 1))).reshape(feats.shape)


def run(args: Any) -> dict[str, Any]:
    from featureflow.demo_forecast import copy_last_forecast
    from featureflow.encoders import encode_frames
    from featureflow.metrics import energy_distance

    setup(args.threads)
    wm, world, data = load(args.model)
    n_ctx = args.contexts or (2 if args.quick else 24)
    K = args.samples or (3 if args.quick else 16)
    M = args.futures or (3 if args.quick else 16)
    c = wm.max_context
    stride, warmup = data["stride"], data["warmup"]
    seeds = world.split_seeds("test")
    t0 = time.perf_counter()
    # space -> step -> row -> list of (K or M, ...) tensors per context; truth sets kept aside
    sets: dict[str, dict[str, dict[str, list[torch.Tensor]]]] = {}

    def add(space: str, row: str, step: str, x: torch.Tensor) -> None:
        sets.setdefault(space, {}).setdefault(step, {}).setdefault(row, []).append(x)

    pool = args.pool
    for i in range(n_ctx):
        seed = seeds[i]
        clip = world.clip(seed, c, stride=stride, start=warmup)
        state = world.state_at(seed, warmup + (c - 1) * stride)
        truth = world.branch(state, M, HORIZON, seed=0, stride=stride)
        truth2 = world.branch(state, K, HORIZON, seed=1, stride=stride)
        ctx = clip.rgb[None]
        g = torch.Generator().manual_seed(args.seed + i)
        fcs = {"flow": wm.forecast(ctx, HORIZON, K, solver=args.solver, steps=args.steps, generator=g)}
        if "regression" in wm.baselines:
            fcs["regression"] = wm.forecast(ctx, HORIZON, 1, baseline="regression")
        fcs["copy last frame"] = copy_last_forecast(wm, ctx, HORIZON)
        with torch.no_grad():
            # true futures go through the compressor round trip, like every forecast's features, so
            # the compressor's own error is not counted against the forecasters
            true_feats = _round_trip(wm, encode_frames(wm.encoder, truth.rgb))  # (M, k, h, w, D)
            true2_feats = _round_trip(wm, encode_frames(wm.encoder, truth2.rgb))
            last_feats = _round_trip(wm, encode_frames(wm.encoder, clip.rgb[None, -1:]))[0]  # (1, h, w, D)
        far = world.far
        size = tuple(clip.rgb.shape[-2:])
        probe_depth = lambda f: wm.decode_features(f, "depth", size).float()  # noqa: E731
        down = lambda d: F.avg_pool2d(d.clamp(max=far).reshape(-1, 1, *d.shape[-2:]), pool).reshape(*d.shape[:-2], -1)  # noqa: E731
        for step, j in STEPS.items():
            add("features", "_truth", step, true_feats[:, j])
            add("features", "_last", step, last_feats)
            add("depth", "_last", step, down(probe_depth(last_feats)))
            add("depth", "_truth", step, down(probe_depth(true_feats[:, j])))
            add("features", "true futures (2nd draw)", step, true2_feats[:, j])
            add("depth", "true futures (2nd draw)", step, down(probe_depth(true2_feats[:, j])))
            for name, fc in fcs.items():
                feats = fc.features[0, :, j]
                depth = down(fc.decode("depth")[0, :, j].float())
                reps = K // feats.shape[0]
                add("features", name, step, feats.repeat_interleave(reps, 0))
                add("depth", name, step, depth.repeat_interleave(reps, 0))
        if (i + 1) % 4 == 0 or i + 1 == n_ctx:
            print(f"distribution: {i + 1}/{n_ctx} contexts ({time.perf_counter() - t0:.0f} s)", flush=True)
    results: dict[str, Any] = {}
    for space, steps in sets.items():
        for step, rows in steps.items():
            truth_sets = torch.stack(rows.pop("_truth"))  # (n, M, ...)
            last = rows.pop("_last")
            motion = torch.cat([_rms_pairwise(t, l).flatten() for t, l in zip(truth_sets, last)])
            radius = 0.5 * float(motion.median())
            out = results.setdefault(space, {}).setdefault(step, {"coverage_radius": radius, "rows": {}})
            for name, xs in rows.items():
                x = torch.stack(xs).float()
                ed = energy_distance(x, truth_sets.float(), reduction="none")
                nearest = torch.stack([_rms_pairwise(t, s).min(dim=1).values for s, t in zip(x, truth_sets)])
                cov = (nearest <= radius).double().mean(dim=1) * 100
                cov2 = (nearest <= 2 * radius).double().mean(dim=1) * 100
                out["rows"][name] = {"energy_distance": interval(ed), "coverage": interval(cov),
                                     "coverage_2r": interval(cov2)}
            flow = out["rows"]["flow"]["energy_distance"]["mean"]
            if "regression" in out["rows"] and flow > 0:
                out["regression_over_flow"] = out["rows"]["regression"]["energy_distance"]["mean"] / flow
    res = {"benchmark": "distribution", "model": str(args.model), "quick": bool(args.quick),
           "protocol": {"contexts": n_ctx, "samples_K": K, "true_futures_M": M, "context_frames": c,
                        "stride": stride, "warmup": warmup, "horizon": HORIZON, "depth_pool": pool,
                        "solver": args.solver, "steps": args.steps},
           "results": results, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(Path(args.out) / "distribution.json", res)
    print(markdown(res))
    return res


def markdown(res: dict[str, Any], img_prefix: str = "benchmarks/") -> str:
    p = res["protocol"]
    out = [f"N={p['contexts']} test contexts of {p['context_frames']} frames, M={p['true_futures_M']} true futures "
           f"(`ToyWorld.branch`) vs K={p['samples_K']} samples ({p['solver']}, {p['steps']} NFE); depth pooled "
           f"{p['depth_pool']}×. Energy distance ↓ (0 = same distribution), coverage ↑ = % of true futures "
           f"with a sample within r or 2r (RMS distance), r = half the typical distance the scene moves by "
           f"that step (median RMS distance of a true future from the last context frame).", ""]
    for space, steps in res["results"].items():
        label = ("feature space (encoder features, compressor round trip)" if space == "features"
                 else "decoded depth (metres; truth decoded by the same probe)")
        keys = {"energy_distance": "energy dist. ↓", "coverage": "coverage@r % ↑", "coverage_2r": "coverage@2r % ↑"}
        headers = ["row"] + [f"{s}: {k}" for s in steps for k in keys.values()]
        names = list(next(iter(steps.values()))["rows"])
        table = [[n] + [fmt(steps[s]["rows"][n].get(k), 3 if k == "energy_distance" else 1) for s in steps for k in keys]
                 for n in names]
        out += [f"**{label}** (coverage radius r: " + ", ".join(f"{s}: {v['coverage_radius']:.3g}"
                                                                   for s, v in steps.items()) + ")\n",
                md_table(headers, table), ""]
        ratios = {s: v.get("regression_over_flow") for s, v in steps.items() if v.get("regression_over_flow")}
        if ratios:
            out += ["Regression's energy distance is " + ", ".join(f"{r:.2f}× the flow's at {s}"
                                                                  for s, r in ratios.items()) + ".", ""]
    return "\n".join(out)


def parser() -> Any:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, default=None, help="test contexts (default 24; 2 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="K samples (default 16; 3 with --quick)")
    p.add_argument("--futures", type=int, default=None, help="M true futures (default 16; 3 with --quick)")
    p.add_argument("--pool", type=int, default=4, help="depth average-pool factor")
    p.add_argument("--solver", default="heun")
    p.add_argument("--steps", type=int, default=4)
    return p


if __name__ == "__main__":
    run(parser().parse_args())
