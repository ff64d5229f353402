"""Calibration where it is not blind: latent spread vs skill, and segmentation reliability.

On N held-out clips (the split's first seeds, the model's stride and warm-up) the model
draws K futures of 3 frames from the last |C| context frames, |C| ∈ {1, max_context}. Per
|C| and forecast step (t+1, t+3):

* **Latent spread–skill.** Per patch: spread = the samples' standard deviation over the K
  samples (unbiased, times √((K+1)/K), the finite-ensemble correction), RMS over channels;
  error = RMS over channels of (ensemble-mean latent − the true future's latent). For a
  calibrated ensemble the RMS spread equals the RMS error of its mean. Reported: the
  spread/skill ratio per clip (√mean spread² / √mean error², mean over clips ± 1.96·SE;
  1 = calibrated, > 1 over-dispersed, < 1 over-confident), the Pearson correlation of
  spread and error over patches, and a reliability plot: patches binned into deciles of
  spread, per bin RMS spread vs RMS error (calibrated = on the diagonal).
* **Segmentation reliability.** Per pixel and class, the predicted probability is the
  fraction of the K samples that decode to that class (levels 0, 1/K, …, 1), the outcome
  whether the true future shows the class. The true future's class map is the probe's
  decoding of the true future's latent (so probe errors do not count against the
  forecaster). Per level: mean predicted probability vs observed frequency (a reliability
  diagram; object classes only, where the forecast matters), and the expected calibration
  error ECE = Σ_levels (pixels in level / all pixels) · |predicted − observed| (in %, per
  clip, mean over clips ± 1.96·SE), for object classes and for all classes; the level 0
  (no sample predicts the class) holds most pixels and is easy, so the ECE over the
  levels 1/K … 1 only (the pixels where some sample predicts the class) is also given.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PROTOCOL_SOLVER, PROTOCOL_STEPS,
    base_parser, fmt, interval, line_plot, load, md_table, object_classes, setup, stack, test_clips, write_json,
)

FORMAT = 2
HORIZON = 3
STEPS = {"t+1": 0, "t+3": 2}
BINS = 10
PLOTS = {"latent": "calibration_latent_spread_skill.png", "segmentation": "calibration_segmentation_reliability.png"}


def latent_spread_error(z: torch.Tensor, z_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples (b, K, h, w, C) and truth (b, h, w, C) → per-patch spread, error (b, h·w)."""
    K = z.shape[1]
    var = z.double().var(dim=1, unbiased=True).mean(-1) * (K + 1) / K
    err = (z.double().mean(1) - z_true.double()).pow(2).mean(-1)
    return var.sqrt().flatten(1), err.sqrt().flatten(1)


def seg_levels(seg: torch.Tensor, truth: torch.Tensor, classes: list[int], K: int) -> torch.Tensor:
    """Samples (b, K, H, W), truth (b, H, W) → per clip and level i/K (i = 0..K): [pixels, Σ outcome] (b, K+1, 2)."""
    b = seg.shape[0]
    out = torch.zeros(b, K + 1, 2, dtype=torch.float64)
    for c in classes:
        count = (seg == c).sum(1).flatten(1)  # (b, H·W) samples voting for c
        hit = (truth == c).flatten(1).double()
        for i in range(b):
            out[i, :, 0] += torch.bincount(count[i], minlength=K + 1).double()
            out[i, :, 1] += torch.bincount(count[i], weights=hit[i], minlength=K + 1)
    return out


def _ece(levels: torch.Tensor, K: int, first: int = 0) -> torch.Tensor:
    """(…, K+1, 2) → ECE % (…) over the levels ``first/K`` … 1."""
    p = torch.arange(first, K + 1, dtype=torch.float64) / K
    n, hits = levels[..., first:, 0], levels[..., first:, 1]
    obs = hits / n.clamp_min(1)
    return 100 * (n * (p - obs).abs()).sum(-1) / n.sum(-1).clamp_min(1)


def run(args: Any) -> dict[str, Any]:
    setup(args.threads)
    wm, world, data = load(args.model)
    n_clips = args.clips or (2 if args.quick else 32)
    K = args.samples or (3 if args.quick else 8)
    c_max = wm.max_context
    contexts = sorted({1, c_max})
    objects = object_classes(world.CLASSES)
    every = list(range(len(world.CLASSES)))
    t0 = time.perf_counter()
    clips = test_clips(world, n_clips, c_max + HORIZON, data["stride"], data["warmup"], args.split)
    acc: dict[tuple[str, str], dict[str, list[torch.Tensor]]] = {}
    for lo in range(0, n_clips, args.batch):
        part = clips[lo : lo + args.batch]
        frames = stack(part, "rgb", slice(0, c_max))
        with torch.no_grad():
            z_true = wm.encode(stack(part, "rgb", slice(c_max, c_max + HORIZON)))
            s_true = wm.decode_latents(z_true, "segmentation", tuple(frames.shape[-2:]))
        for c in contexts:
            g = torch.Generator().manual_seed(args.seed + lo)
            fc = wm.forecast(frames[:, c_max - c :], HORIZON, K, solver=args.solver, steps=args.steps, generator=g)
            seg = fc.decode("segmentation")
            for step, j in STEPS.items():
                d = acc.setdefault((f"|C|={c}", step), {})
                sp, er = latent_spread_error(fc.latents[:, :, j], z_true[:, j])
                d.setdefault("spread", []).append(sp)
                d.setdefault("error", []).append(er)
                d.setdefault("seg_obj", []).append(seg_levels(seg[:, :, j], s_true[:, j], objects, K))
                d.setdefault("seg_all", []).append(seg_levels(seg[:, :, j], s_true[:, j], every, K))
        print(f"calibration: {min(lo + args.batch, n_clips)}/{n_clips} clips ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    results: dict[str, Any] = {}
    lat_series, seg_series = [], []
    for (ckey, step), d in acc.items():
        sp, er = torch.cat(d["spread"]), torch.cat(d["error"])  # (n, patches)
        per_clip = sp.pow(2).mean(1).sqrt() / er.pow(2).mean(1).sqrt().clamp_min(1e-12)
        fs, fe = sp.flatten(), er.flatten()
        corr = float(torch.corrcoef(torch.stack([fs, fe]))[0, 1]) if fs.numel() > 1 else float("nan")
        bins = [b for b in fs.argsort().tensor_split(BINS) if b.numel()]
        rel = [{"spread_rms": float(fs[b].pow(2).mean().sqrt()), "error_rms": float(fe[b].pow(2).mean().sqrt()),
                "patches": int(b.numel())} for b in bins]
        seg = {}
        for name, key in (("objects", "seg_obj"), ("all", "seg_all")):
            lv = torch.cat(d[key])  # (n, K+1, 2)
            pooled = lv.sum(0)
            seg[name] = {"ece": interval(_ece(lv, K)), "pooled_ece": float(_ece(pooled, K)),
                         "ece_predicted": interval(_ece(lv, K, 1)),
                         "levels": [{"predicted": i / K, "observed": float(pooled[i, 1] / pooled[i, 0])
                                     if pooled[i, 0] > 0 else None, "pixels": int(pooled[i, 0])}
                                    for i in range(K + 1)]}
        results.setdefault(ckey, {})[step] = {
            "latent": {"spread_skill": interval(per_clip),
                       "pooled_spread_skill": float(fs.pow(2).mean().sqrt() / fe.pow(2).mean().sqrt().clamp_min(1e-12)),
                       "pearson_spread_error": corr if corr == corr else None, "reliability": rel},
            "segmentation": seg}
        lat_series.append((f"{ckey} {step}", [r["spread_rms"] for r in rel], [r["error_rms"] for r in rel]))
        lv = [x for x in seg["objects"]["levels"] if x["observed"] is not None]
        seg_series.append((f"{ckey} {step}", [x["predicted"] for x in lv], [x["observed"] for x in lv]))
    out = Path(args.out)
    line_plot(out / PLOTS["latent"], lat_series, xlabel="predicted spread (RMS sample std over channels, binned)",
              ylabel="RMS error of the ensemble-mean latent", title="Latent spread vs skill (grey: calibrated)",
              diagonal=True)
    line_plot(out / PLOTS["segmentation"], seg_series, xlabel="predicted probability (fraction of K samples)",
              ylabel="observed frequency in the true future", title="Object-class reliability (grey: calibrated)",
              diagonal=True)
    res = {"benchmark": "calibration", "format": FORMAT, "model": str(args.model), "quick": bool(args.quick),
           "protocol": {"clips": n_clips, "samples_K": K, "context_lengths": contexts, "horizon": HORIZON,
                        "stride": data["stride"], "warmup": data["warmup"], "bins": BINS, "split": args.split,
                        "object_classes": [world.CLASSES[i] for i in objects],
                        "solver": args.solver, "steps": args.steps},
           "results": results, "plots": PLOTS, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "calibration.json", res)
    print(markdown(res))
    return res


def _word(q: float) -> str:
    return "over-confident" if q < 0.8 else "over-dispersed" if q > 1.25 else "roughly calibrated"


def markdown(res: dict[str, Any], img_prefix: str = "benchmarks/") -> str:
    if res.get("format", 1) < 2:
        return ("The stored `calibration.json` is from the previous protocol (spread of the decoded depth, which is "
                "blind on ToyWorld): not run with this version of `benchmarks/calibration.py`.\n")
    p = res["protocol"]
    rows = []
    for ckey, hs in res["results"].items():
        for step, r in hs.items():
            la, sg = r["latent"], r["segmentation"]
            corr = "n/a" if la["pearson_spread_error"] is None else f"{la['pearson_spread_error']:.2f}"
            rows.append([ckey, step, fmt(la["spread_skill"]), _word(la["spread_skill"]["mean"]), corr,
                         fmt(sg["objects"]["ece"], 1), fmt(sg["objects"].get("ece_predicted"), 1),
                         fmt(sg["all"]["ece"], 1)])
    return "\n".join([
        f"N={p['clips']} {p['split']} clips, K={p['samples_K']} samples ({p['solver']}, {p['steps']} NFE). Latent "
        "spread/skill: 1 = calibrated, > 1 over-dispersed, < 1 over-confident. Segmentation: predicted probability "
        "= fraction of samples per class vs the probe-decoded true future; ECE in % (0 = calibrated).", "",
        md_table(["context", "step", "latent spread/skill", "verdict", "corr(spread, error)",
                  "seg. ECE objects %", "seg. ECE objects, p > 0 %", "seg. ECE all %"], rows), "",
        f"![Latent spread vs skill]({img_prefix}{res['plots']['latent']}) "
        f"![Object-class segmentation reliability]({img_prefix}{res['plots']['segmentation']})", ""])


def parser() -> Any:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=None, help="clips (default 32; 2 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="K samples (default 8; 3 with --quick)")
    p.add_argument("--solver", default=PROTOCOL_SOLVER, help="sampler (default: the protocol's, chosen on val)")
    p.add_argument("--steps", type=int, default=PROTOCOL_STEPS, help="network evaluations per frame")
    p.add_argument("--batch", type=int, default=8)
    return p


if __name__ == "__main__":
    run(parser().parse_args())
