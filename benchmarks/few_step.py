"""Few-step sampling: a MeanFlow forecaster at 1 and 2 NFE vs its teacher flow at Euler 9 NFE.

Protocol: the first N clips of the ToyWorld split (``--split val`` to choose settings,
``test`` to report), frames ``stride`` simulation steps apart after the model's warm-up
(as in `benchmarks/quality.py`); the context is the first ``max_context`` frames, and 3
frames are forecast autoregressively, K samples per clip, every row from the same
generator seed. Per row and step (t+1, t+3):

* **ensemble-mean object mIoU**: the mean of the K sampled *features* decoded by the
  segmentation probe, mIoU over the object classes vs the true segmentation (the clip's
  own future);
* **mean-of-K object mIoU**: each sample scored, then averaged;
* **spread ratio** vs ``ToyWorld.branch``: mean pairwise latent distance of the K samples
  ÷ that of M true futures branched from the last context frame's simulator state (a
  ratio of means over clips, bootstrap interval; see `benchmarks/distribution.py`);
* **energy distance** between the K samples and the M true futures, in latent space and
  in decoded segmentation (one-hot, pooled; the true futures decoded by the same probe);
* **seconds per forecast frame**: wall time of the forecaster's rollouts (K samples per
  clip, ``--batch`` clips per call, cached context, after an untimed warm-up call)
  divided by clips × horizon: the cost of one clip's K-sample forecast frame.

Rows: the teacher flow (the model's forecaster) at Euler 9, 2 and 1 NFE; each MeanFlow
forecaster at 1 and 2 NFE; copy-last-frame and the oracle for the mIoU scale.
Figures are means over clips ± 1.96·SE. Writes ``few_step.json`` (``few_step_val.json``
for the val split), ``few_step.png`` (ensemble-mean object mIoU vs NFE) and
``few_step_energy.png`` (latent energy distance vs NFE).

``--equal-quality``: instead of those rows, the fixed candidate settings of
`benchmarks/equal_quality.py` (the model's flow at Euler 9 fp32 = the official recipe's
sampler, Euler 3 and Heun 4 in fp32 and bf16, the bundled ``meanflow`` baseline at 1 and 2
NFE), judged by its equal-quality rule; writes ``equal_quality.json`` and, with
``--write-docs``, the ``equal_quality`` section of docs/speed.md.

Run::

    python benchmarks/few_step.py --equal-quality --split test --write-docs   # bundled toyworld

    python benchmarks/few_step.py --model /work/runs/tw3/model \\
        --meanflow ema=/work/runs/meanflow/forecaster --split test
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    base_parser, bootstrap_ratio, fmt, interval, line_plot, load, md_table, object_classes, seg_scores, setup,
    stack, test_clips, write_json,
)
from distribution import mean_pairwise, seg_blocks  # noqa: E402

import equal_quality  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FORMAT = 1
HORIZON = 3
STEPS = {"t+1": 0, "t+3": 2}
COPY, ORACLE = "copy last frame", "oracle (probe on true future features)"


def _rows(args: Any, wm: Any) -> dict[str, tuple[Any, str, int, dict[str, Any] | None]]:
    """{label: (forecaster, solver, steps, setting)} of every sampled row; ``setting`` names
    (forecaster, solver, steps, precision) for the ``--equal-quality`` candidates."""
    from featureflow.utils.component_io import load_component
    from featureflow.world.sampling_speed import sampling_forecaster

    if args.equal_quality:
        rows: dict[str, tuple[Any, str, int, dict[str, Any] | None]] = {}
        for which, solver, n, precision in equal_quality.CANDIDATES:
            base = wm.forecaster if which == "flow" else wm.baselines[which]
            rows[equal_quality.label(which, solver, n, precision, base.noise_scale)] = (
                sampling_forecaster(base, precision), solver, n,
                {"forecaster": which, "solver": solver, "steps": n, "precision": precision,
                 "noise_scale": base.noise_scale})
        return rows
    rows = {f"teacher flow, Euler {n}": (wm.forecaster, "euler", n, None) for n in args.teacher_steps}
    for spec in args.meanflow:
        label, _, path = spec.rpartition("=")
        if path.startswith("baseline:"):  # the model's own baseline of that name, e.g. baseline:meanflow
            mf = wm.baselines[path.split(":", 1)[1]]
        else:
            mf = load_component(path, "forecaster")
        if type(mf).__name__ != "MeanFlowForecaster":
            raise ValueError(f"{path} holds a {type(mf).__name__}, expected a MeanFlowForecaster component")
        for scale in args.noise_scales or [mf.noise_scale]:
            scaled = mf
            if scale != mf.noise_scale:  # a copy at this sampling temperature
                scaled = copy.deepcopy(mf)
                scaled.set_noise_scale(scale)
            tag = f", noise {scale:g}" if args.noise_scales else ""
            for n in args.mf_steps:
                rows[f"MeanFlow{' ' + label if label else ''}, {n} NFE{tag}"] = (scaled, "euler", n, None)
    return rows


def _seg(wm: Any, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Features (..., h, w, D) → class maps (..., H, W)."""
    lead = feats.shape[:-3]
    flat = feats.reshape(-1, *feats.shape[-3:])
    seg = torch.cat([wm.decode_features(p, "segmentation", size) for p in flat.split(128)])
    return seg.reshape(*lead, *seg.shape[-2:])


def run(args: Any) -> dict[str, Any]:
    setup(args.threads)
    wm, world, data = load(args.model)
    rows = _rows(args, wm)
    n_clips = args.clips or (2 if args.quick else 32)
    K = args.samples or (3 if args.quick else 8)
    M = args.futures or (3 if args.quick else 16)
    c = wm.max_context
    ncls, objects = len(world.CLASSES), object_classes(world.CLASSES)
    stride, warmup = data["stride"], data["warmup"]
    seeds = world.split_seeds(args.split)
    from featureflow.metrics import energy_distance

    t_all = time.perf_counter()
    clips = test_clips(world, n_clips, c + HORIZON, stride, warmup, args.split)
    acc: dict[str, dict[str, list[torch.Tensor]]] = {}  # row -> metric -> per-clip (b, k) values
    seconds: dict[str, float] = {name: 0.0 for name in rows}
    nfe: dict[str, int] = {}

    def add(row: str, metric: str, v: torch.Tensor) -> None:
        acc.setdefault(row, {}).setdefault(metric, []).append(v.double())

    for lo in range(0, n_clips, args.batch):
        part = clips[lo : lo + args.batch]
        ids = range(lo, lo + len(part))
        frames = stack(part, "rgb", slice(0, c))
        size = tuple(frames.shape[-2:])
        seg_true = stack(part, "segmentation", slice(c, c + HORIZON))  # (b, k, H, W)
        b = frames.shape[0]
        branches = [world.branch(world.state_at(seeds[i], warmup + (c - 1) * stride), M, HORIZON, seed=0,
                                 stride=stride).rgb for i in ids]
        with torch.no_grad():
            z_ctx = wm.encode(frames)
            z_true = wm.encode(stack(part, "rgb", slice(c, c + HORIZON)))
            z_br = torch.stack([wm.encode(x) for x in branches])  # (b, M, k, h, w, C)
            br_blocks = seg_blocks(_seg(wm, wm.compressor.decode(z_br), size), ncls, args.pool)
            refs = {COPY: z_ctx[:, -1:].expand(b, HORIZON, *z_ctx.shape[2:]), ORACLE: z_true}
            for name, z in refs.items():
                s = _seg(wm, wm.compressor.decode(z), size)  # (b, k, H, W)
                add(name, "ens_miou_obj", seg_scores(s.flatten(0, 1), seg_true.flatten(0, 1), ncls,
                                                     objects)["miou_obj"].view(b, HORIZON))
        for name, (fc, solver, steps, _) in rows.items():
            if lo == 0:  # untimed warm-up: first-call costs are not per-frame costs
                fc.rollout(z_ctx[:1], 1, 1, solver=solver, steps=steps, generator=torch.Generator().manual_seed(0))
            g = torch.Generator().manual_seed(args.seed + lo)
            t0 = time.perf_counter()
            roll = fc.rollout(z_ctx, HORIZON, K, solver=solver, steps=steps, generator=g)
            seconds[name] += time.perf_counter() - t0
            nfe[name] = roll.nfe
            lat = roll.latents  # (b, K, k, h, w, C)
            with torch.no_grad():
                feats = wm.compressor.decode(lat)
                seg_s = _seg(wm, feats, size)  # (b, K, k, H, W)
                seg_e = _seg(wm, feats.mean(1), size)  # (b, k, H, W)
            per = seg_scores(seg_s.flatten(0, 2), seg_true[:, None].expand_as(seg_s).flatten(0, 2), ncls, objects)
            add(name, "mean_k_miou_obj", per["miou_obj"].view(b, K, HORIZON).nanmean(1))
            ens = seg_scores(seg_e.flatten(0, 1), seg_true.flatten(0, 1), ncls, objects)
            add(name, "ens_miou_obj", ens["miou_obj"].view(b, HORIZON))
            blocks = seg_blocks(seg_s, ncls, args.pool)  # (b, K, k, F)
            for j in range(HORIZON):
                add(name, f"spread_samples@{j}", mean_pairwise(lat[:, :, j]).view(b, 1))
                add(name, f"spread_truth@{j}", mean_pairwise(z_br[:, :, j]).view(b, 1))
                add(name, f"energy_latent@{j}", energy_distance(lat[:, :, j].float(), z_br[:, :, j].float(),
                                                                reduction="none").view(b, 1))
                add(name, f"energy_seg@{j}", energy_distance(blocks[:, :, j].float(), br_blocks[:, :, j].float(),
                                                             reduction="none").view(b, 1))
        print(f"few_step: {lo + len(part)}/{n_clips} clips ({time.perf_counter() - t_all:.0f} s)", flush=True)

    results: dict[str, Any] = {}
    for name, ms in acc.items():
        cat = {m: torch.cat(v) for m, v in ms.items()}
        out: dict[str, Any] = {}
        for step, j in STEPS.items():
            r: dict[str, Any] = {"ens_miou_obj": interval(cat["ens_miou_obj"][:, j])}
            if name in rows:
                r["mean_k_miou_obj"] = interval(cat["mean_k_miou_obj"][:, j])
                s, t = cat[f"spread_samples@{j}"][:, 0], cat[f"spread_truth@{j}"][:, 0]
                r["spread_ratio"] = bootstrap_ratio(s, t, seed=args.seed)
                r["energy_latent"] = interval(cat[f"energy_latent@{j}"][:, 0])
                r["energy_seg"] = interval(cat[f"energy_seg@{j}"][:, 0])
            out[step] = r
        if name in rows:
            if rows[name][3] is not None:
                out["setting"] = rows[name][3]
            out["nfe"] = nfe[name]
            out["seconds_per_frame"] = seconds[name] / (n_clips * HORIZON)
        results[name] = out
    res = {"benchmark": "few_step", "format": FORMAT, "model": str(args.model), "meanflow": list(args.meanflow),
           "quick": bool(args.quick),
           "protocol": {"split": args.split, "clips": n_clips, "samples_K": K, "true_futures_M": M, "context": c,
                        "horizon": HORIZON, "stride": stride, "warmup": warmup, "seg_pool": args.pool,
                        "threads": args.threads, "batch": args.batch,
                        "object_classes": [world.CLASSES[i] for i in objects],
                        "interval": "mean ± 1.96·SE over clips; spread ratio: ratio of means, bootstrap"},
           "results": results, "seconds": round(time.perf_counter() - t_all, 1)}
    stem = "equal_quality" if args.equal_quality else "few_step"
    if args.equal_quality:
        res["format"] = equal_quality.FORMAT
        res["equal_quality"] = {"rule": equal_quality.RULE, "reference": equal_quality.REFERENCE,
                                "verdicts": equal_quality.verdicts(results, list(rows))}
    name = f"{stem}.json" if args.split == "test" else f"{stem}_{args.split}.json"
    write_json(Path(args.out) / name, res)
    if not args.equal_quality:  # the candidates are not an NFE sweep
        _plot(res, Path(args.out) / name.replace(".json", ".png"))
    print(markdown(res))
    return res


def _plot(res: dict[str, Any], path: Path) -> None:
    """Against NFE, one line per sampler and step: ensemble-mean object mIoU (``path``) and
    the latent energy distance to the branched true futures (``path`` with ``_energy``)."""
    p = res["protocol"]
    labels = {"ens_miou_obj": f"ensemble-mean object mIoU % (k={p['samples_K']})",
              "energy_latent": "energy distance to true futures, latent (lower = closer)"}
    for metric, ylabel in labels.items():
        series: dict[str, list[tuple[float, float]]] = {}
        for name, r in res["results"].items():
            if "nfe" not in r:
                continue
            family = name.rsplit(",", 1)[0]
            for step in STEPS:
                series.setdefault(f"{family} ({step})", []).append((r["nfe"], r[step][metric]["mean"]))
        lines = [(label, [x for x, _ in sorted(pts)], [y for _, y in sorted(pts)]) for label, pts in series.items()]
        out = path if metric == "ens_miou_obj" else path.with_name(path.stem + "_energy.png")
        line_plot(out, lines, xlabel="network evaluations per forecast frame (NFE)", ylabel=ylabel, logx=True,
                  title=f"Few-step sampling, ToyWorld {p['split']} N={p['clips']}")


def markdown(res: dict[str, Any]) -> str:
    p = res["protocol"]
    out = [f"ToyWorld **{p['split']}** split, first N={p['clips']} clips, context {p['context']} frames, "
           f"K={p['samples_K']} samples, M={p['true_futures_M']} branched true futures, {p['threads']} thread(s); "
           f"{p['interval']}.", ""]
    for step in STEPS:
        table = []
        for name, r in res["results"].items():
            v = r[step]
            table.append([name, r.get("nfe", "—"), fmt(v["ens_miou_obj"]), fmt(v.get("mean_k_miou_obj")),
                          fmt(v.get("spread_ratio")), fmt(v.get("energy_latent"), 3), fmt(v.get("energy_seg"), 3),
                          f"{r['seconds_per_frame'] * 1000:.0f}" if "seconds_per_frame" in r else "—"])
        out += [f"**{step}**", "", md_table(["row", "NFE", "ens-mean obj mIoU ↑", "mean-of-K obj mIoU ↑",
                                             "spread ratio (1 = calibrated)", "energy dist. latent ↓",
                                             "energy dist. seg ↓", "ms / forecast frame"], table), ""]
    return "\n".join(out)


#: issue 15's few-step targets: (label, abs/rel gap, tolerance, side). "worse" counts only a
#: gap in the worse direction (mIoU lower, energy distance higher: doing better than the
#: reference is not a mismatch); "both" counts either (a spread is a calibration: too narrow
#: is as wrong as too wide)
TARGETS = {"ens_miou_obj": ("ensemble-mean object mIoU", "abs", 1.0, "lower"),
           "spread_ratio": ("spread ratio", "rel", 0.10, "both"),
           "energy_latent": ("energy distance (latent)", "rel", 0.10, "higher"),
           "energy_seg": ("energy distance (segmentation)", "rel", 0.10, "higher")}


def verdict(res: dict[str, Any], row: str, reference: str) -> tuple[bool, list[str]]:
    """Does ``row`` match ``reference`` within issue 15's targets (mIoU at most 1 point
    lower, energy distances at most 10 % higher, spread ratio within 10 % either way) at t+1
    and t+3? (ok, one line per figure)."""
    ok, lines = True, []
    for step in STEPS:
        a, b = res["results"][row][step], res["results"][reference][step]
        for key, (label, kind, tol, side) in TARGETS.items():
            x, y = a[key]["mean"], b[key]["mean"]
            gap = x - y if kind == "abs" else (x - y) / abs(y) if y else float("inf")
            worse = {"lower": -gap, "higher": gap, "both": abs(gap)}[side]
            hit = worse <= tol
            ok &= hit
            shown = f"{gap:+.2f} points" if kind == "abs" else f"{100 * gap:+.0f} %"
            bound = f"{tol:g} point" if kind == "abs" else f"{100 * tol:.0f} %"
            target = {"lower": f"at most {bound} lower", "higher": f"at most {bound} higher",
                      "both": f"within {bound}"}[side]
            lines.append(f"{step} {label}: {x:.3f} vs {y:.3f} ({shown}; target {target}): "
                         f"{'met' if hit else 'NOT met'}")
    return ok, lines


def docs_section(res: dict[str, Any], rows: list[str], reference: str, note: str = "") -> str:
    """The docs/speed.md section: the measured rows at t+1 and t+3 and the plain verdicts."""
    p = res["protocol"]
    ref_s = res["results"][reference]["seconds_per_frame"]
    head = ["row", "NFE", "ens-mean obj mIoU ↑", "mean-of-K obj mIoU ↑", "spread ratio", "energy latent ↓",
            "energy seg ↓", "ms / frame", f"speed-up vs {reference.split(', ')[-1]}"]
    out = [SECTION_BEGIN, "## Few-step sampling (MeanFlow)", "",
           f"Generated by `benchmarks/few_step.py --write-docs` from `docs/benchmarks/few_step.json`: ToyWorld "
           f"**{p['split']}** split, first N={p['clips']} clips (settings chosen on the val split), model "
           f"`{res['model']}`, context {p['context']} frames, horizon {p['horizon']}, K={p['samples_K']} samples, "
           f"M={p['true_futures_M']} true futures from `ToyWorld.branch`, {p['threads']} thread; "
           f"{p['interval']}. ms / frame: one clip's K-sample forecast frame, cached context.", ""]
    if note:
        out += [note, ""]
    summary = []
    for name in rows:
        if name.startswith("MeanFlow"):
            ok, lines = verdict(res, name, reference)
            missed = [ln.split(":")[0] for ln in lines if ln.endswith("NOT met")]
            summary.append(f"{name}: {len(lines) - len(missed)} of {len(lines)} targets met"
                           + (f" (not met: {', '.join(missed)})" if missed else " — it matches"))
    if summary:
        out += [f"**In short, against {reference}:** " + "; ".join(summary) + ".", ""]
    for step in STEPS:
        table = []
        for name in rows:
            r = res["results"][name]
            v = r[step]
            table.append([name, r["nfe"], fmt(v["ens_miou_obj"]), fmt(v["mean_k_miou_obj"]), fmt(v["spread_ratio"]),
                          fmt(v["energy_latent"], 2), fmt(v["energy_seg"], 3), f"{r['seconds_per_frame'] * 1000:.0f}",
                          f"{ref_s / r['seconds_per_frame']:.1f}x"])
        out += [f"**{step}**", "", md_table(head, table), ""]
    for name in rows:
        if name.startswith("MeanFlow"):
            ok, lines = verdict(res, name, reference)
            out += [f"**{name} vs {reference}: {'matches' if ok else 'does NOT match'} its quality** "
                    "(issue 15's targets, on the point estimates; the intervals are in the tables):", ""] + [f"- {ln}" for ln in lines] + [""]
    out += ["![Latent energy distance to the true futures vs NFE](benchmarks/few_step_energy.png)", "",
            "![Ensemble-mean object mIoU vs NFE](benchmarks/few_step.png)", "", SECTION_END]
    return "\n".join(out)


SECTION_BEGIN, SECTION_END = "<!-- few_step:begin -->", "<!-- few_step:end -->"


def write_docs(section: str, path: Path) -> None:
    """Replace the section of ``path`` (docs/speed.md) between the markers that ``section``
    starts and ends with, or append it; the rest is kept."""
    text = path.read_text()
    begin, end = section.splitlines()[0], section.splitlines()[-1]
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        text = pre + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def parser() -> Any:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--meanflow", action="append", default=[],
                   help="[label=]directory of a saved MeanFlowForecaster component, or baseline:NAME for the "
                        "model's own baseline (repeatable)")
    p.add_argument("--teacher-steps", type=int, nargs="+", default=[9, 2, 1])
    p.add_argument("--mf-steps", type=int, nargs="+", default=[1, 2])
    p.add_argument("--noise-scales", type=float, nargs="+", default=None,
                   help="sample each --meanflow forecaster at these noise scales (sampling temperatures; "
                        "default: its own noise_scale); choose on --split val")
    p.add_argument("--clips", type=int, default=None, help="clips (default 32; 2 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="K samples (default 8; 3 with --quick)")
    p.add_argument("--futures", type=int, default=None, help="M true futures (default 16; 3 with --quick)")
    p.add_argument("--pool", type=int, default=4, help="segmentation average-pool factor")
    p.add_argument("--batch", type=int, default=8, help="clips per forecast batch")
    p.add_argument("--write-docs", action="store_true",
                   help="append (or replace) the few-step section of docs/speed.md from this run")
    p.add_argument("--docs-rows", nargs="+", default=None, help="rows shown in docs/speed.md (default: all sampled)")
    p.add_argument("--docs-note", default="", help="a sentence added to the docs section (e.g. the training run)")
    p.add_argument("--equal-quality", action="store_true",
                   help="sample the fixed equal-quality candidates of benchmarks/equal_quality.py (the model's flow "
                        "and its 'meanflow' baseline) instead of --teacher-steps/--meanflow; writes "
                        "equal_quality.json and, with --write-docs, the equal_quality section of docs/speed.md")
    return p


if __name__ == "__main__":
    a = parser().parse_args()
    result = run(a)
    if a.write_docs and a.equal_quality:
        write_docs(equal_quality.docs_section(result), ROOT / "docs" / "speed.md")
        print("wrote the equal-quality section of docs/speed.md")
    elif a.write_docs:
        sampled = [n for n, r in result["results"].items() if "nfe" in r]
        reference = next(n for n in sampled if n.startswith("teacher") and result["results"][n]["nfe"] == max(
            result["results"][m]["nfe"] for m in sampled))
        write_docs(docs_section(result, a.docs_rows or sampled, reference, a.docs_note), ROOT / "docs" / "speed.md")
        print("wrote the few-step section of docs/speed.md")
