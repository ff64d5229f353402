"""Forecast quality on held-out ToyWorld clips: flow vs regression vs copy-last vs the oracle.

Protocol (also written into docs/benchmarks.md): the first N clips of the ToyWorld test
split (``--split val`` for tuning), frames ``stride`` simulation steps apart (the model's
training stride), starting after the model's warm-up. Every clip has ``c_max + 3`` frames;
for each context length |C| ∈ {1, 2, 4} (those ≤ the model's max_context) the last |C| of
the first ``c_max`` frames are the context, and the following 3 frames are forecast
autoregressively; t+1 is the first forecast frame, t+3 the third.

Rows per |C| and step: the flow's K samples scored one by one (mean of K) and the best
sample per metric (best of K); the flow **ensemble mean** as the released VFMF evaluation
does it (the mean of the first k sampled *features*, decoded by the probes, k ∈ {1, 2, 4,
8}); regression; copy-last-frame; the oracle (the probes on the true future's features
after the compressor round trip). Skill over copy-last = (row − copy-last)/(oracle −
copy-last) of the object-class mIoU (ratio of the means over clips, bootstrap interval).
Latent error on moving vs static patches: per clip and step, moving = the top 10 % of
patches by ‖z(t+k) − z(last context)‖ (L2 over channels, true future latents), static =
the bottom 50 %; the latent MSE on each set of the flow (per sample, then the mean over
samples), of the flow's ensemble mean latent, of regression and of copy-last.

Every figure is a mean over clips ± 1.96 · standard error.

Run::

    python benchmarks/quality.py --model toyworld            # full, test split
    python benchmarks/quality.py --model /tmp/m --quick      # smoke run
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PROTOCOL_SOLVER, PROTOCOL_STEPS,
    METRICS, base_parser, bootstrap_ratio, dense_scores, fmt, interval, load, md_table, object_classes, setup,
    stack, test_clips, write_json,
)

FORMAT = 2
HORIZON = 3
STEPS = {"t+1": 0, "t+3": 2}
ENSEMBLE_K = (1, 2, 4, 8)
MOVING_TOP, STATIC_BOTTOM = 0.10, 0.50
FLOW, BEST, REG, COPY, ORACLE = ("flow, mean of K", "flow, best of K", "regression", "copy last frame",
                                 "oracle (probe on true future features)")
ENS = "flow ensemble mean, k={}"
#: Reference rows from the simulator (no model forecast; the model's encoder, compressor and
#: probes decode them), the ceilings of a forecaster of this world: the exact state rolled on
#: with no turns (the best deterministic guess of an oracle that knows positions and
#: velocities), and K true futures drawn with ``ToyWorld.branch`` from that state (what a
#: perfect sampler would draw), scored one by one and as a decoded feature average.
PHYS, TRUE_K, TRUE_ENS = ("simulator, no turns (exact state)", "true futures, mean of K (perfect sampler)",
                          "true futures, ensemble mean k={}")
REFERENCE_SEED = 2  # branch stream of the true-future rows (distribution.py uses 0 and 1)
HEADLINE = "miou_obj"
NOT_RUN = {
    "flow in PCA-16 latent": "a separate model (same encoder, data and forecaster, PCA-16 compressor): built by "
                             "benchmarks/pca16_model.py (its docstring has the commands) and compared in "
                             "\"Which latent space?\" below",
    "flow on raw features": "a separate model (same encoder, data and forecaster, no compression): built by "
                            "benchmarks/pca16_model.py with configs/toyworld_raw.json and compared in "
                            "\"Which latent space?\" below",
}


def _decode_features(wm: Any, feats: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Features (N, h, w, D) → {modality: (N, ...)} for every probe the model has."""
    return {m: torch.cat([wm.decode_features(part, m, size) for part in feats.split(64)])
            for m in ("segmentation", "depth", "normals", "rgb") if m in wm.probes}


def _scores(wm: Any, feats: torch.Tensor, targets: dict[str, torch.Tensor], size: tuple[int, int],
            ncls: int, objects: list[int]) -> dict[str, torch.Tensor]:
    """Features (b, s, k, h, w, D) vs targets (b, k, ...) → {metric: (b, s, k)}."""
    b, s, k = feats.shape[:3]
    preds = _decode_features(wm, feats.reshape(b * s * k, *feats.shape[3:]), size)
    tg = {n: v[:, None].expand(b, s, *v.shape[1:]).reshape(b * s * k, *v.shape[2:]) for n, v in targets.items()}
    return {m: v.reshape(b, s, k) for m, v in dense_scores(preds, tg, num_classes=ncls, objects=objects).items()}


def _set_mse(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared errors (b, s, k, h, w) averaged over the patches of mask (b, k, h, w) → (b, s, k)."""
    m = mask[:, None].double()
    return (err * m).flatten(3).sum(3) / m.flatten(3).sum(3)


def motion_masks(z_true: torch.Tensor, z_last: torch.Tensor) -> dict[str, torch.Tensor]:
    """Moving (top 10 %) and static (bottom 50 %) patches of each clip and step by
    ‖z_true − z_last‖ over channels; z_true (b, k, h, w, C), z_last (b, h, w, C)."""
    d = (z_true - z_last[:, None]).double().norm(dim=-1)  # (b, k, h, w)
    flat = d.flatten(2)
    n = flat.shape[-1]
    rank = flat.argsort(dim=-1).argsort(dim=-1)  # 0 = least motion
    moving = rank >= n - max(1, math.ceil(MOVING_TOP * n))
    static = rank < max(1, int(STATIC_BOTTOM * n))
    return {"moving": moving.reshape(d.shape), "static": static.reshape(d.shape), "all": torch.ones_like(d, dtype=bool)}


@torch.no_grad()
def reference_rows(wm: Any, world: Any, still: Any, seeds: Any, c_max: int, data: dict[str, int], K: int,
                   seed: int) -> dict[str, torch.Tensor]:
    """Latents of the simulator's reference forecasts of each clip (seeds of its first frame):
    ``"phys"`` (b, 1, HORIZON, h, w, C), the exact state at the last context frame rolled on by
    ``still`` (the same world with ``turn_prob=0``); ``"true"`` (b, K, HORIZON, h, w, C), K
    futures from that state drawn by ``world.branch``."""
    stride = data["stride"]
    phys, true = [], []
    for s in seeds:
        state = world.state_at(int(s), data["warmup"] + (c_max - 1) * stride)
        phys.append(still.rollout(state, HORIZON + 1, stride).rgb[1:][None])
        true.append(world.branch(state, K, HORIZON, seed=seed, stride=stride).rgb)
    true_frames = torch.stack(true)  # (b, K, HORIZON, 3, H, W)
    z_true = wm.encode(true_frames.flatten(0, 1))
    return {"phys": wm.encode(torch.cat(phys))[:, None], "true": z_true.reshape(len(seeds), K, *z_true.shape[1:])}


def run(args: Any) -> dict[str, Any]:
    from featureflow.demo_forecast import copy_last_forecast

    setup(args.threads)
    wm, world, data = load(args.model)
    n_clips = args.clips or (2 if args.quick else 64)
    K = args.samples or (2 if args.quick else 8)
    ens_k = [k for k in ENSEMBLE_K if k <= K]
    contexts = [c for c in (1, 2, 4) if c <= wm.max_context]
    c_max = max(contexts)
    ncls, objects = len(world.CLASSES), object_classes(world.CLASSES)
    has_reg = "regression" in wm.baselines
    t0 = time.perf_counter()
    clips = test_clips(world, n_clips, c_max + HORIZON, data["stride"], data["warmup"], args.split)
    # acc[ckey][row][metric] -> list of (b, k) per-clip values; lat[ckey][set][row] likewise
    acc: dict[str, dict[str, dict[str, list[torch.Tensor]]]] = {}
    lat: dict[str, dict[str, dict[str, list[torch.Tensor]]]] = {}

    def add(store: dict, ckey: str, row: str, vals: dict[str, torch.Tensor]) -> None:
        for m, v in vals.items():
            store.setdefault(ckey, {}).setdefault(row, {}).setdefault(m, []).append(v.double())

    seeds = world.split_seeds(args.split)
    still = type(world)(**{**world.config, "turn_prob": 0.0})
    for lo in range(0, n_clips, args.batch):
        part = clips[lo : lo + args.batch]
        frames = stack(part, "rgb", slice(0, c_max))
        size = tuple(frames.shape[-2:])
        fut = slice(c_max, c_max + HORIZON)
        targets = {m: stack(part, m, fut) for m in ("segmentation", "depth", "normals", "rgb")}
        with torch.no_grad():
            z_true = wm.encode(stack(part, "rgb", fut))  # (b, k, h, w, C)
            z_last = wm.encode(frames[:, -1:])[:, 0]
            oracle = _scores(wm, wm.compressor.decode(z_true)[:, None], targets, size, ncls, objects)
        masks = motion_masks(z_true, z_last)
        references: dict[str, dict[str, torch.Tensor]] = {}  # the same for every context length
        if not args.no_reference:
            refs = reference_rows(wm, world, still, seeds[lo : lo + len(part)], c_max, data, K, args.reference_seed)
            true_feats = wm.compressor.decode(refs["true"])
            references = {
                PHYS: {m: v[:, 0] for m, v in _scores(wm, wm.compressor.decode(refs["phys"]), targets, size, ncls,
                                                       objects).items()},
                TRUE_K: {m: v.mean(1) for m, v in _scores(wm, true_feats, targets, size, ncls, objects).items()},
                TRUE_ENS.format(K): {m: v[:, 0] for m, v in _scores(wm, true_feats.mean(1, keepdim=True), targets,
                                                                    size, ncls, objects).items()},
            }
        for c in contexts:
            ckey = f"|C|={c}"
            ctx = frames[:, c_max - c :]
            g = torch.Generator().manual_seed(args.seed + lo)
            fc = wm.forecast(ctx, HORIZON, K, solver=args.solver, steps=args.steps, generator=g)
            flow = _scores(wm, fc.features, targets, size, ncls, objects)
            add(acc, ckey, FLOW, {m: v.mean(1) for m, v in flow.items()})
            add(acc, ckey, BEST, {m: (v.max(1).values if METRICS[m][2] else v.min(1).values) for m, v in flow.items()})
            for k in ens_k:
                ens = _scores(wm, fc.features[:, :k].mean(1, keepdim=True), targets, size, ncls, objects)
                add(acc, ckey, ENS.format(k), {m: v[:, 0] for m, v in ens.items()})
            others = {COPY: copy_last_forecast(wm, ctx, HORIZON)}
            if has_reg:
                others = {REG: wm.forecast(ctx, HORIZON, 1, baseline="regression"), **others}
            for name, o in others.items():
                add(acc, ckey, name, {m: v[:, 0] for m, v in _scores(wm, o.features, targets, size, ncls,
                                                                     objects).items()})
            add(acc, ckey, ORACLE, {m: v[:, 0] for m, v in oracle.items()})
            for name, vals in references.items():
                add(acc, ckey, name, vals)
            # latent MSE on moving / static / all patches
            lat_rows = {"flow, per sample": fc.latents, "flow ensemble mean": fc.latents.mean(1, keepdim=True),
                        **{n: o.latents for n, o in others.items()}}
            for name, z in lat_rows.items():
                err = (z.double() - z_true[:, None].double()).pow(2).mean(-1)  # (b, s, k, h, w)
                add(lat, ckey, name, {s: _set_mse(err, m).mean(1) for s, m in masks.items()})
        print(f"quality: {min(lo + args.batch, n_clips)}/{n_clips} clips ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    results: dict[str, Any] = {}
    for ckey, rows in acc.items():
        for step, j in STEPS.items():
            cat = {r: {m: torch.cat(v)[:, j] for m, v in ms.items()} for r, ms in rows.items()}
            out = results.setdefault(ckey, {}).setdefault(step, {"rows": {}, "skill": {}, "gap_vs_regression": {}})
            for r, ms in cat.items():
                out["rows"][r] = {m: interval(v) for m, v in ms.items()}
            copy, orac = cat[COPY][HEADLINE], cat[ORACLE][HEADLINE]
            for r, ms in cat.items():
                if r not in (COPY, ORACLE):
                    out["skill"][r] = bootstrap_ratio(ms[HEADLINE] - copy, orac - copy, seed=args.seed)
            if has_reg:
                for r in [FLOW, BEST, ENS.format(max(ens_k))]:
                    out["gap_vs_regression"][r] = {m: interval(cat[r][m] - cat[REG][m]) for m in ("miou_obj", "miou")}
            lrows = {r: {s: torch.cat(v)[:, j] for s, v in ss.items()} for r, ss in lat[ckey].items()}
            out["latent_mse"] = {r: {s: interval(v) for s, v in ss.items()} for r, ss in lrows.items()}
            if has_reg:
                out["latent_static_flow_over_regression"] = bootstrap_ratio(
                    lrows["flow, per sample"]["static"], lrows[REG]["static"], seed=args.seed)
    gains = {}
    if len(contexts) > 1:
        first, last = f"|C|={contexts[0]}", f"|C|={contexts[-1]}"
        for r in [FLOW, ENS.format(max(ens_k))] + ([REG] if has_reg else []):
            for step, j in STEPS.items():
                a = torch.cat(acc[last][r][HEADLINE])[:, j] - torch.cat(acc[first][r][HEADLINE])[:, j]
                gains.setdefault(r, {})[step] = interval(a)
    res = {
        "benchmark": "quality", "format": FORMAT, "model": str(args.model), "quick": bool(args.quick),
        "protocol": {"clips": n_clips, "samples_K": K, "ensemble_k": ens_k, "contexts": contexts,
                     "horizon": HORIZON, "stride": data["stride"], "warmup": data["warmup"],
                     "resolution": world.resolution, "turn_prob": world.turn_prob, "solver": args.solver,
                     "steps": args.steps,
                     "split": args.split, "object_classes": [world.CLASSES[i] for i in objects],
                     "moving_top": MOVING_TOP, "static_bottom": STATIC_BOTTOM,
                     "interval": "mean ± 1.96·SE over clips"},
        "results": results, "context_gain": {"from": contexts[0], "to": contexts[-1], "rows": gains},
        "not_run": NOT_RUN, "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(Path(args.out) / "quality.json", res)
    print(markdown(res))
    return res


# ---------------------------------------------------------------- old / new JSON formats
def normalise(res: dict[str, Any]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """{|C|: {step: {row: {metric: interval}}}} of a quality JSON of either format
    (format 1: steps "short (t+1)" / "mid (t+3)", flow row "flow (VAE latent)" with "@best" metrics)."""
    if res.get("format", 1) >= 2:
        return {c: {s: v["rows"] for s, v in hs.items()} for c, hs in res["results"].items()}
    out: dict[str, Any] = {}
    for c, hs in res.get("results", {}).items():
        for s, rows in hs.items():
            step = "t+1" if "t+1" in s else "t+3" if "t+3" in s else s
            new = out.setdefault(c, {}).setdefault(step, {})
            for name, r in rows.items():
                if name.startswith("flow"):
                    new[FLOW] = {m: v for m, v in r.items() if isinstance(v, dict) and "@" not in m}
                    new[BEST] = {m[:-5]: v for m, v in r.items() if m.endswith("@best")}
                elif name.startswith("oracle"):
                    new[ORACLE] = {m: v for m, v in r.items() if isinstance(v, dict)}
                else:
                    new[name] = {m: v for m, v in r.items() if isinstance(v, dict)}
    return out


# ---------------------------------------------------------------- Markdown
COLUMNS = ["miou_obj", "miou", "abs_rel", "normal_err", "delta1", "psnr"]


#: A column is near-blind when the oracle removes less than this fraction of copy-last's error.
BLIND_GAIN = 0.2


def _error(m: str, v: float) -> float:
    """A metric's value as an error (lower is better, 0 = perfect)."""
    return {"delta1": 100.0 - v, "psnr": 10 ** (-v / 10), "miou": 100.0 - v, "miou_obj": 100.0 - v}.get(m, v)


def blind_metrics(res: dict[str, Any]) -> set[str]:
    """The metrics on which the oracle (probes on the true future's features) removes less than
    ``BLIND_GAIN`` of copy-last's error at t+1 and the longest context: a forecaster cannot show
    skill there, whatever it does (e.g. depth and normals under small probe heads on ToyWorld)."""
    rows = res["results"][list(res["results"])[-1]]["t+1"]["rows"]
    out = set()
    for m in METRICS:
        o, c = rows.get(ORACLE, {}).get(m), rows.get(COPY, {}).get(m)
        if o and c and math.isfinite(o["mean"]) and math.isfinite(c["mean"]):
            e_o, e_c = _error(m, o["mean"]), _error(m, c["mean"])
            if e_c > 0 and e_o > (1 - BLIND_GAIN) * e_c:
                out.add(m)
    return out


def _label(m: str, blind: set[str] = frozenset()) -> str:
    label = METRICS[m][1] + (" ↑" if METRICS[m][2] else " ↓")
    return label + " (near-blind)" if m in blind else label


def markdown(res: dict[str, Any], img_prefix: str = "benchmarks/") -> str:
    if res.get("format", 1) < 2:
        return ("The stored `quality.json` is from the previous protocol (no object-class mIoU, ensemble mean, "
                "skill or moving/static latent error): not run with this version of `benchmarks/quality.py`.\n")
    p = res["protocol"]
    blind = blind_metrics(res)
    out = [f"{p['split'].capitalize()} clips N={p['clips']}, K={p['samples_K']} samples, {p['resolution']}² frames, "
           f"stride {p['stride']}, warm-up {p['warmup']} steps, {p['solver']} with {p['steps']} NFE per frame; "
           f"{p['interval']}. Object classes: {', '.join(p['object_classes'])}. Skill = (row − copy-last) / "
           f"(oracle − copy-last) of the object-class mIoU (0 = no better than nothing moving, 1 = the oracle)."
           + (f" Columns marked near-blind ({', '.join(METRICS[m][1] for m in sorted(blind))}) barely separate the "
              f"rows: the oracle removes less than {100 * BLIND_GAIN:.0f} % of copy-last's error on them (|C| = "
              "the longest, t+1), so read them as a sanity check, not as forecasting skill." if blind else
              " Every column separates the oracle from copy-last (by at least "
              f"{100 * BLIND_GAIN:.0f} % of copy-last's error at t+1), so each can show forecasting skill."), ""]
    for ckey, hs in res["results"].items():
        for step, v in hs.items():
            rows = v["rows"]
            cols = [m for m in COLUMNS if any(m in r for r in rows.values())]
            table = [[name] + [fmt(r.get(m), 3 if m == "abs_rel" else 2) for m in cols]
                     + [fmt(v["skill"].get(name)) if name in v["skill"] else "—"] for name, r in rows.items()]
            out += [f"**{ckey}, {step}**\n", md_table(["row"] + [_label(m, blind) for m in cols] + ["skill ↑"], table), ""]
    # paired gaps to regression
    gap_rows = [[c, s, r, fmt(g["miou_obj"]), fmt(g["miou"])] for c, hs in res["results"].items()
                for s, v in hs.items() for r, g in v.get("gap_vs_regression", {}).items()]
    if gap_rows:
        out += ["Flow − regression mIoU (paired over clips, ± 95 % interval):", "",
                md_table(["context", "step", "flow row", "Δ mIoU objects", "Δ mIoU all"], gap_rows), ""]
    gains = res.get("context_gain", {})
    if gains.get("rows"):
        out += [f"Context gain, object-class mIoU(|C|={gains['to']}) − mIoU(|C|={gains['from']}) (paired):", "",
                md_table(["row", *STEPS], [[r, *(fmt(g[s]) for s in STEPS)] for r, g in gains["rows"].items()]), ""]
    # latent error on moving / static patches
    lat_rows = []
    for ckey, hs in res["results"].items():
        for step, v in hs.items():
            for r, sets in v.get("latent_mse", {}).items():
                lat_rows.append([ckey, step, r, fmt(sets["moving"], 3), fmt(sets["static"], 3), fmt(sets["all"], 3)])
    if lat_rows:
        out += [f"**Latent MSE on moving vs static patches** (moving = top {100 * p['moving_top']:.0f} % of "
                f"patches by true latent change since the last context frame, static = bottom "
                f"{100 * p['static_bottom']:.0f} %; per channel, ↓):", "",
                md_table(["context", "step", "row", "moving", "static", "all patches"], lat_rows), ""]
        ratios = [f"{c} {s}: {fmt(v['latent_static_flow_over_regression'])}" for c, hs in res["results"].items()
                  for s, v in hs.items() if "latent_static_flow_over_regression" in v]
        if ratios:
            out += ["Flow per-sample static-patch error / regression's (1 = as still as regression): "
                    + "; ".join(ratios) + ".", ""]
    out.append("Not run here:\n")
    out += [f"- *{k}*: {v}" for k, v in res["not_run"].items()]
    out += ["", f"**Claim check:** {verdict(res)}.", ""]
    return "\n".join(out)


def verdict(res: dict[str, Any]) -> str:
    """Plain-language check of the paper's claim (sampling beats regression, most at |C|=1), at t+1."""
    if res.get("format", 1) < 2:
        return "not run with the current protocol"
    parts, means = [], {}
    for ckey, hs in res["results"].items():
        g = hs["t+1"].get("gap_vs_regression", {}).get(FLOW)
        if g is None:
            return "regression baseline missing: the claim cannot be checked"
        means[ckey] = g["miou_obj"]
        parts.append(f"{ckey} {fmt(g['miou_obj'])}")
    text = "flow (mean of K) − regression, object-class mIoU at t+1: " + ", ".join(parts)
    c1 = next(iter(means))
    m = means[c1]
    if m["mean"] > 0 and (not math.isfinite(m["ci95"]) or m["mean"] > m["ci95"]):
        text += f" — the flow's average sample beats regression at {c1} (the paper's claim holds here)"
    elif m["mean"] > 0:
        text += f" — positive at {c1} but inside the 95 % interval: not established at this N"
    else:
        text += (f" — the paper's claim (mean of K beats regression at {c1}) is NOT reproduced: regression's "
                 "single prediction scores higher than the flow's average sample")
    return text


def parser() -> Any:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=None, help="clips (default 64; 2 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="K samples (default 8; 2 with --quick)")
    p.add_argument("--solver", default=PROTOCOL_SOLVER, help="sampler (default: the protocol's, chosen on val)")
    p.add_argument("--steps", type=int, default=PROTOCOL_STEPS, help="network evaluations per frame")
    p.add_argument("--batch", type=int, default=8, help="clips per forecast batch")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the simulator's reference rows (no turns; true futures)")
    p.add_argument("--reference-seed", type=int, default=REFERENCE_SEED, help="branch stream of the true futures")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
