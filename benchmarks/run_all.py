"""Run every benchmark and write ``docs/benchmarks.md`` (tables + plots) and ``docs/benchmarks/*.json``.

Run::

    python benchmarks/run_all.py                  # full: the bundled "toyworld" model, ~10 min (1 thread)
    python benchmarks/run_all.py --quick --model DIR --out /tmp/b --md /tmp/b/benchmarks.md   # smoke run, < 2 min
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import calibration  # noqa: E402
import distribution  # noqa: E402
import quality  # noqa: E402
import speed  # noqa: E402
from _common import DOCS_OUT, REPO, base_parser, fmt, md_table  # noqa: E402

MODULES = {"quality": quality, "distribution": distribution, "calibration": calibration, "speed": speed}

INTRO = """# Benchmarks

Does sampling beat regression, are the sampled futures distributed like the true ones,
is the spread calibrated, and how fast is it? Every figure on this page is produced by the
scripts in `benchmarks/` (`python benchmarks/run_all.py`; `--quick` for a smoke run) and
stored as JSON next to the plots in `docs/benchmarks/`. Nothing here is a timed test.

## Protocol

- **Data**: ToyWorld held-out **test** seeds (`ToyWorld.split_seeds("test")`, never seen
  in training), rendered at the model's training resolution, frames `stride` simulation
  steps apart and starting after the model's warm-up (both read from the model's
  `metadata["data"]`).
- **Context lengths** |C| ∈ {1, 2, 4}, those ≤ the model's `max_context`. All context
  lengths forecast the same target frames (the context is the last |C| frames before them).
- **Horizons**: short = the next frame (t+1); mid = the third frame of a 3-step
  autoregressive rollout (t+3; each forecast frame is fed back as context).
- **Rows**: the flow forecaster in the VAE latent (K samples); the regression baseline
  (same trunk, one deterministic prediction); copy-last-frame (the last context frame's
  latents, decoded); the oracle *probe on true future features* (encode the true future
  frame, compressor round trip, decode — the ceiling of any forecaster in this latent).
- **Columns**: segmentation mIoU (classes absent from both maps ignored), depth AbsRel and
  δ<1.25, normals mean angular error (depth and normals on foreground pixels), RGB PSNR.
  Stochastic rows report the mean over the K samples of the per-sample metric and
  best-of-K (the oracle pick).
- **Intervals**: every figure is the mean over clips ± 1.96 × the standard error over
  clips (a 95 % normal interval).
- **Speed**: this machine's CPU, 1 torch thread unless stated; compare ratios within one
  run, not absolute numbers across machines.
"""


def _args(mod: Any, common: list[str], extra: list[str]) -> Any:
    return mod.parser().parse_args(common + extra)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--md", type=Path, default=REPO / "docs" / "benchmarks.md", help="Markdown page to write")
    p.add_argument("--only", nargs="*", choices=sorted(MODULES), default=None, help="run a subset")
    p.add_argument("--clips", type=int, default=None, help="override the clip/context counts of every script")
    p.add_argument("--render-only", action="store_true", help="only rebuild the page from the stored JSON files")
    p.add_argument("--skip-external", action="store_true", help="speed: skip the vfmf/causal and compile/bf16 scripts")
    args = p.parse_args(argv)
    common = ["--model", str(args.model), "--out", str(args.out), "--threads", str(args.threads),
              "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    extra: dict[str, list[str]] = {
        "quality": ["--clips", str(args.clips)] if args.clips else [],
        "distribution": ["--contexts", str(args.clips)] if args.clips else [],
        "calibration": ["--clips", str(args.clips)] if args.clips else [],
        "speed": ["--skip-external"] if args.skip_external else [],
    }
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    for name in [] if args.render_only else args.only or list(MODULES):
        t = time.perf_counter()
        results[name] = MODULES[name].run(_args(MODULES[name], common, extra[name]))
        print(f"run_all: {name} done in {time.perf_counter() - t:.0f} s", flush=True)
    total = time.perf_counter() - t0
    for name in MODULES:  # a partial run (--only) keeps the other sections from their stored JSON
        stored = Path(args.out) / f"{name}.json"
        if name not in results and stored.is_file():
            results[name] = json.loads(stored.read_text())
            if results[name].get("model") != str(args.model) or bool(results[name].get("quick")) != bool(args.quick):
                del results[name]
    rel = Path(args.out).resolve()
    md_path = Path(args.md).resolve()
    try:
        prefix = rel.relative_to(md_path.parent).as_posix() + "/"
    except ValueError:
        prefix = rel.as_posix() + "/"
    total = max(total, sum(float(r.get("seconds", 0)) for r in results.values()))
    page = render(results, prefix, args, total)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(page)
    print(f"run_all: wrote {md_path} ({total:.0f} s in all)")
    return results


SECTIONS = [("quality", "Quality: sampling vs regression vs copy-last vs oracle"),
            ("distribution", "Distribution: sampled futures vs true futures"),
            ("calibration", "Calibration: predicted spread vs actual error"),
            ("speed", "Speed and memory")]


def render(results: dict[str, Any], prefix: str, args: Any, total: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [INTRO, "## This run", "",
             f"Model `{args.model}`, {'quick smoke run' if args.quick else 'full run'}, {when}, "
             f"{platform.machine()} CPU ({platform.processor() or platform.system()}), torch {torch.__version__}, "
             f"{args.threads} thread(s); {total / 60:.1f} min in all.", ""]
    headline = _headline(results)
    if headline:
        lines += ["## Headline", "", *headline, ""]
    for key, title in SECTIONS:
        if key in results:
            lines += [f"## {title}", "", MODULES[key].markdown(results[key], prefix)]
        if key == "quality" and key in results:
            lines += latent_comparison(results[key], Path(args.out), prefix)
    return "\n".join(lines).rstrip() + "\n"


#: Other-latent quality runs (``benchmarks/quality.py --model <combined model>``, JSON
#: renamed to these files in ``--out``): the label of their flow row and how they were made.
LATENT_RUNS = {
    "quality_pca16.json": ("PCA-16", "`configs/toyworld_pca16.json`: PCA-16 compressor"),
    "quality_raw.json": ("raw features (384 ch, Identity)",
                         "`configs/toyworld_raw.json`: no compression (standardised Identity), the forecaster "
                         "works on all 384 feature channels"),
}


def latent_comparison(quality: dict[str, Any], out: Path, prefix: str) -> list[str]:
    """The "which latent space?" section: the bundled flow (FeatureVAE latent) against the
    same forecaster trained in other latent spaces, from the stored quality runs."""
    present = {name: spec for name, spec in LATENT_RUNS.items() if (out / name).is_file()}
    if not present:
        return []
    others = {label: json.loads((out / name).read_text()) for name, (label, _) in present.items()}
    flow_key = "flow (VAE latent)"
    variants = {"FeatureVAE (16 ch)": quality, **others}
    cols = [("miou", "mIoU % (mean of K)", 2), ("miou@best", "mIoU % best-of-K", 2), ("abs_rel", "depth AbsRel", 3),
            ("normal_err", "normal err °", 2), ("psnr", "PSNR dB", 2)]
    rows = []
    for ckey, hs in quality["results"].items():
        for hname in hs:
            for label, res in variants.items():
                r = res["results"].get(ckey, {}).get(hname, {}).get(flow_key)
                if r is not None:
                    rows.append([ckey, hname, label] + [fmt(r.get(m), d) for m, _, d in cols])
    how = "; ".join(h for _, h in present.values())
    files = ", ".join(f"`{prefix}{n}`" for n in present)
    lines = ["## Which latent space? FeatureVAE vs PCA-16 vs raw features", "",
             "The same encoder, data and forecaster settings as the bundled model, trained in another latent "
             f"space ({how}; `examples/train_toyworld_bundle.py --config ... --no-install`), combined with the "
             "bundled encoder and probe heads (`benchmarks/pca16_model.py --pca-run RUN/model`) and evaluated by "
             "`benchmarks/quality.py` on the same test clips and samples (raw JSON: " + files + "). "
             "Flow rows only, mean ± 1.96·SE over clips:", "",
             md_table(["context", "horizon", "latent", *[c[1] for c in cols]], rows), ""]
    # where each variant stands at the mid horizon, |C| = 1: computed, not written by hand
    c1 = next(iter(quality["results"]))
    mid = list(quality["results"][c1])[-1]
    summary = []
    for (m, name, d), higher in zip((cols[0], cols[2], cols[3]), (True, False, False)):
        vals = {label: res["results"][c1][mid][flow_key][m]["mean"] for label, res in variants.items()
                if m in res["results"].get(c1, {}).get(mid, {}).get(flow_key, {})}
        if vals:
            best = (max if higher else min)(vals, key=vals.get)
            summary.append(f"{name} " + ", ".join(f"{k} {v:.{d}f}" for k, v in vals.items()) + f" (best: {best})")
    if summary:
        lines += [f"At {c1}, {mid}: " + "; ".join(summary) + ".", ""]
    return lines


def _headline(results: dict[str, Any]) -> list[str]:
    out = []
    q = results.get("quality")
    if q:
        ckeys = list(q["results"])
        c1 = q["results"][ckeys[0]]["short (t+1)"]
        f, r = c1.get("flow (VAE latent)", {}), c1.get("regression", {})
        if "miou" in f and "miou" in r:
            out.append(f"- {ckeys[0]}, next frame: flow mIoU {f['miou']['mean']:.1f} ± {f['miou']['ci95']:.1f} "
                       f"(mean of K), {f['miou@best']['mean']:.1f} best-of-K; regression {r['miou']['mean']:.1f} "
                       f"± {r['miou']['ci95']:.1f}"
                       + "".join(f"; {n} {c1[n]['miou']['mean']:.1f} ± {c1[n]['miou']['ci95']:.1f}"
                                 for n in ("copy last frame", "oracle: probe on true future features") if n in c1)
                       + ".")
        out.append(f"- {quality.verdict(q['claim']['miou_gap_flow_minus_regression'])}.")
    d = results.get("distribution")
    if d:
        for space, label in (("features", "feature space"), ("depth", "decoded depth")):
            steps = d["results"].get(space, {})
            parts = []
            for step, v in steps.items():
                rows = v["rows"]
                if "regression" in rows:
                    parts.append(f"{step}: flow {rows['flow']['energy_distance']['mean']:.2f}, regression "
                                 f"{rows['regression']['energy_distance']['mean']:.2f} "
                                 f"({v.get('regression_over_flow', float('nan')):.2f}× the flow's)")
            if parts:
                out.append(f"- Energy distance to the true futures in {label} (↓): " + "; ".join(parts) + ".")
    c = results.get("calibration")
    if c:
        out.append("- Depth spread/skill: " + ", ".join(f"{s} {r['spread_skill_ratio']:.2f}"
                                                      for s, r in c["results"].items()) + " (1 = calibrated).")
    s = results.get("speed")
    if s:
        f = s["throughput"]
        out.append(f"- Denoiser at {f['denoiser_gflops']:.2f} GFLOP/s = {100 * f['fraction_of_peak']:.0f} % of this "
                   f"CPU's measured matmul rate; peak RSS growth from horizon {s['memory'][0]['horizon']} to "
                   f"{s['memory'][-1]['horizon']}: {s['memory'][-1]['growth_mb'] - s['memory'][0]['growth_mb']:.1f} MB.")
    return out


if __name__ == "__main__":
    main()
