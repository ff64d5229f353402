"""Calibration of the sampled depth: per-pixel predicted spread vs actual error.

On N held-out test clips (max_context frames of context, the model's stride and warm-up),
the model draws K futures of 3 frames. Per foreground pixel (truth segmentation ≠
background) and forecast step: spread = the samples' depth standard deviation (unbiased,
times √((K+1)/K), the finite-ensemble correction), error = |sample mean − truth|.

* spread/skill ratio = √mean(spread²) / √mean(error²): 1 is calibrated, < 1 over-confident,
  > 1 under-confident;
* reliability: pixels binned into deciles of spread; per bin the RMS spread vs the RMS
  error (a calibrated model lies on the diagonal); also the Pearson
  correlation of spread and error across pixels.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, line_plot, load, md_table, setup, stack, test_clips, write_json  # noqa: E402

HORIZON = 3
STEPS = {"t+1": 0, "t+3": 2}
BINS = 10


def run(args: Any) -> dict[str, Any]:
    setup(args.threads)
    wm, world, data = load(args.model)
    n_clips = args.clips or (2 if args.quick else 32)
    K = args.samples or (3 if args.quick else 8)
    c = wm.max_context
    t0 = time.perf_counter()
    clips = test_clips(world, n_clips, c + HORIZON, data["stride"], data["warmup"])
    spreads: dict[str, list[torch.Tensor]] = {s: [] for s in STEPS}
    errors: dict[str, list[torch.Tensor]] = {s: [] for s in STEPS}
    for lo in range(0, n_clips, args.batch):
        part = clips[lo : lo + args.batch]
        g = torch.Generator().manual_seed(args.seed + lo)
        fc = wm.forecast(stack(part, "rgb", slice(0, c)), HORIZON, K, solver=args.solver, steps=args.steps,
                         generator=g)
        depth = fc.decode("depth").float()  # (b, K, k, H, W)
        std = depth.std(dim=1, unbiased=True) * ((K + 1) / K) ** 0.5
        err = (depth.mean(dim=1) - stack(part, "depth", slice(c, c + HORIZON))).abs()
        fg = stack(part, "segmentation", slice(c, c + HORIZON)) != 0
        for s, j in STEPS.items():
            spreads[s].append(std[:, j][fg[:, j]].double())
            errors[s].append(err[:, j][fg[:, j]].double())
    results: dict[str, Any] = {}
    series = []
    for s in STEPS:
        sp, er = torch.cat(spreads[s]), torch.cat(errors[s])
        ratio = float(sp.pow(2).mean().sqrt() / er.pow(2).mean().sqrt().clamp_min(1e-12))
        # undefined (None) when the spread or the error is constant, e.g. for an untrained model
        corr = float(torch.corrcoef(torch.stack([sp, er]))[0, 1]) if sp.numel() > 1 else float("nan")
        corr = corr if math.isfinite(corr) else None
        order = sp.argsort()
        bins = [b for b in order.tensor_split(BINS) if b.numel()]
        rel = [{"spread_rms": float(sp[b].pow(2).mean().sqrt()), "error_rms": float(er[b].pow(2).mean().sqrt()),
                "pixels": int(b.numel())} for b in bins]
        results[s] = {"spread_skill_ratio": ratio, "pearson_spread_error": corr, "pixels": int(sp.numel()),
                      "mean_spread_m": float(sp.mean()), "mean_abs_error_m": float(er.mean()), "reliability": rel}
        series.append((f"depth {s}", [r["spread_rms"] for r in rel], [r["error_rms"] for r in rel]))
    out = Path(args.out)
    line_plot(out / "calibration_reliability.png", series, xlabel="binned predicted spread (m, RMS)",
              ylabel="actual error of the sample mean (m, RMS)", title="Depth reliability (grey: calibrated)",
              diagonal=True)
    res = {"benchmark": "calibration", "model": str(args.model), "quick": bool(args.quick),
           "protocol": {"clips": n_clips, "samples_K": K, "context_frames": c, "horizon": HORIZON,
                        "stride": data["stride"], "warmup": data["warmup"], "bins": BINS,
                        "solver": args.solver, "steps": args.steps},
           "results": results, "plot": "calibration_reliability.png", "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "calibration.json", res)
    print(markdown(res))
    return res


def markdown(res: dict[str, Any], img_prefix: str = "benchmarks/") -> str:
    p = res["protocol"]
    rows = [[s, f"{r['spread_skill_ratio']:.2f}", ("n/a" if r["pearson_spread_error"] is None else f"{r['pearson_spread_error']:.2f}"), f"{r['mean_spread_m']:.3f}",
             f"{r['mean_abs_error_m']:.3f}", r["pixels"]] for s, r in res["results"].items()]
    verdicts = []
    for s, r in res["results"].items():
        q = r["spread_skill_ratio"]
        word = ("over-confident (spread too small)" if q < 0.8
                else "under-confident (spread too large)" if q > 1.25 else "roughly calibrated")
        verdicts.append(f"{s}: {word}")
    return "\n".join([
        f"N={p['clips']} test clips, K={p['samples_K']} samples, {p['context_frames']} context frames, "
        f"foreground pixels only. Spread/skill 1 = calibrated.", "",
        md_table(["step", "spread/skill", "corr(spread, error)", "mean spread (m)", "mean abs error (m)", "pixels"], rows),
        "", "Verdict: " + "; ".join(verdicts) + ".", "",
        f"![Depth reliability: binned spread vs binned error]({img_prefix}{res['plot']})", ""])


def parser() -> Any:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=None, help="test clips (default 32; 2 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="K samples (default 8; 3 with --quick)")
    p.add_argument("--solver", default="heun")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    return p


if __name__ == "__main__":
    run(parser().parse_args())
