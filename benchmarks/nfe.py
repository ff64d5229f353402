"""Quality vs NFE: how forecast quality depends on the solver and its network evaluations.

On N held-out clips (|C| = the model's max_context, the model's stride and warm-up) the
flow draws K futures of 3 frames with Euler and Heun at a few NFE per forecast frame
(Heun at an odd budget ends with an Euler step, so Heun at 1 NFE is Euler and is left
out). Per setting and step (t+1, t+3): the object-class mIoU of the samples (mean of K) and
of the ensemble mean (the mean of the K sampled features, decoded), and the per-sample
latent MSE on static patches (the bottom 50 % of patches by the true latent change since
the last context frame; see ``quality.py``), beside regression and copy-last. Every figure
is a mean over clips ± 1.96·SE.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    base_parser, fmt, interval, line_plot, load, md_table, object_classes, setup, stack, test_clips, write_json,
)
from quality import _scores, _set_mse, motion_masks  # noqa: E402

FORMAT = 2
HORIZON = 3
STEPS = {"t+1": 0, "t+3": 2}
FULL = {"euler": [1, 2, 4, 8], "heun": [2, 4, 8]}
QUICK = {"euler": [1, 2], "heun": [2]}
PLOTS = ["nfe_miou_objects.png", "nfe_static_latent_error.png"]


def run(args: Any) -> dict[str, Any]:
    from featureflow.demo_forecast import copy_last_forecast

    setup(args.threads)
    wm, world, data = load(args.model)
    n_clips = args.clips or (2 if args.quick else 16)
    K = args.samples or (2 if args.quick else 8)
    c = wm.max_context
    ncls, objects = len(world.CLASSES), object_classes(world.CLASSES)
    sweep = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    clips = test_clips(world, n_clips, c + HORIZON, data["stride"], data["warmup"], args.split)
    acc: dict[str, dict[str, list[torch.Tensor]]] = {}

    def add(row: str, vals: dict[str, torch.Tensor]) -> None:
        for m, v in vals.items():
            acc.setdefault(row, {}).setdefault(m, []).append(v.double())

    nfe_of: dict[str, int] = {}
    for lo in range(0, n_clips, args.batch):
        part = clips[lo : lo + args.batch]
        frames = stack(part, "rgb", slice(0, c))
        size = tuple(frames.shape[-2:])
        fut = slice(c, c + HORIZON)
        targets = {m: stack(part, m, fut) for m in ("segmentation",)}
        with torch.no_grad():
            z_true = wm.encode(stack(part, "rgb", fut))
            z_last = wm.encode(frames[:, -1:])[:, 0]
        static = motion_masks(z_true, z_last)["static"]
        fcs = {}
        for solver, budgets in sweep.items():
            for n in budgets:
                g = torch.Generator().manual_seed(args.seed + lo)
                fcs[f"{solver} {n}"] = wm.forecast(frames, HORIZON, K, solver=solver, steps=n, generator=g)
                nfe_of[f"{solver} {n}"] = int(fcs[f"{solver} {n}"].nfe)
        if "regression" in wm.baselines:
            fcs["regression"] = wm.forecast(frames, HORIZON, 1, baseline="regression")
        fcs["copy last frame"] = copy_last_forecast(wm, frames, HORIZON)
        for name, fc in fcs.items():
            wm_seg = _SegOnly(wm)  # decode segmentation only
            s = _scores(wm_seg, fc.features, targets, size, ncls, objects)["miou_obj"]  # (b, s, k)
            vals = {"miou_obj": s.mean(1)}
            if fc.num_samples > 1:
                vals["miou_obj_ensemble"] = _scores(wm_seg, fc.features.mean(1, keepdim=True), targets, size, ncls,
                                                    objects)["miou_obj"][:, 0]
            err = (fc.latents.double() - z_true[:, None].double()).pow(2).mean(-1)
            vals["static_latent_mse"] = _set_mse(err, static).mean(1)
            add(name, vals)
        print(f"nfe: {min(lo + args.batch, n_clips)}/{n_clips} clips ({time.perf_counter() - t0:.0f} s)", flush=True)
    results = {name: {"nfe": nfe_of.get(name), **{step: {m: interval(torch.cat(v)[:, j]) for m, v in ms.items()}
                                                  for step, j in STEPS.items()}}
               for name, ms in acc.items()}
    out = Path(args.out)
    flows = {s: [n for n in results if n.startswith(s + " ")] for s in sweep}
    series_m, series_l = [], []
    for solver, names in flows.items():
        xs = [results[n]["nfe"] for n in names]
        series_m.append((f"{solver} mean of K", xs, [results[n]["t+1"]["miou_obj"]["mean"] for n in names]))
        series_m.append((f"{solver} ensemble mean", xs,
                         [results[n]["t+1"]["miou_obj_ensemble"]["mean"] for n in names]))
        series_l.append((solver, xs, [results[n]["t+1"]["static_latent_mse"]["mean"] for n in names]))
    xs = [min(results[n]["nfe"] for n in results if results[n]["nfe"]), max(r["nfe"] or 1 for r in results.values())]
    for ref in ("regression", "copy last frame"):
        if ref in results:
            series_m.append((ref, xs, [results[ref]["t+1"]["miou_obj"]["mean"]] * 2))
            series_l.append((ref, xs, [results[ref]["t+1"]["static_latent_mse"]["mean"]] * 2))
    line_plot(out / PLOTS[0], series_m, xlabel="NFE per forecast frame", ylabel="object-class mIoU % (t+1)",
              title=f"Quality vs NFE, |C|={c}", logx=True)
    line_plot(out / PLOTS[1], series_l, xlabel="NFE per forecast frame",
              ylabel="latent MSE on static patches (t+1, per sample)", title=f"Static-patch error vs NFE, |C|={c}",
              logx=True, logy=True)
    res = {"benchmark": "nfe", "format": FORMAT, "model": str(args.model), "quick": bool(args.quick),
           "protocol": {"clips": n_clips, "samples_K": K, "context_frames": c, "horizon": HORIZON,
                        "stride": data["stride"], "warmup": data["warmup"], "split": args.split, "sweep": sweep},
           "results": results, "plots": PLOTS, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "nfe.json", res)
    print(markdown(res))
    return res


class _SegOnly:
    """A view of a WorldModel whose probes are only the segmentation head (decode less)."""

    def __init__(self, wm: Any) -> None:
        self._wm = wm
        self.probes = {"segmentation": wm.probes["segmentation"]}

    def decode_features(self, *a: Any, **kw: Any) -> torch.Tensor:
        return self._wm.decode_features(*a, **kw)


def markdown(res: dict[str, Any], img_prefix: str = "benchmarks/") -> str:
    p = res["protocol"]
    rows = []
    for name, r in res["results"].items():
        for step in STEPS:
            v = r[step]
            rows.append([name, r["nfe"] if r["nfe"] is not None else "—", step, fmt(v["miou_obj"]),
                         fmt(v.get("miou_obj_ensemble")), fmt(v["static_latent_mse"], 3)])
    return "\n".join([
        f"N={p['clips']} {p['split']} clips, |C|={p['context_frames']}, K={p['samples_K']} samples; mean ± 1.96·SE "
        "over clips. Regression and copy-last do not integrate an ODE (NFE —).", "",
        md_table(["row", "NFE", "step", "mIoU objects %, mean of K ↑", "mIoU objects %, ensemble mean ↑",
                  "static-patch latent MSE ↓"], rows), "",
        f"![Object-class mIoU vs NFE]({img_prefix}{res['plots'][0]}) "
        f"![Static-patch latent error vs NFE]({img_prefix}{res['plots'][1]})", ""])


def parser() -> Any:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=None, help="clips (default 16; 2 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="K samples (default 8; 2 with --quick)")
    p.add_argument("--batch", type=int, default=8)
    return p


if __name__ == "__main__":
    run(parser().parse_args())
