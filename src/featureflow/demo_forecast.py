"""The forecasting half of ``featureflow demo``: pictures, GIFs and a metrics table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["forecast_demo", "heatmap", "forecast_panels", "forecast_picture", "comparison_picture", "context_labels",
           "decoded_context", "write_forecast_pictures", "copy_last_forecast"]

MODALITY_ROWS = ("rgb", "segmentation", "depth", "normals")
_HEAT = torch.tensor([[0.0, 0.0, 0.02], [0.32, 0.07, 0.45], [0.73, 0.2, 0.42], [0.98, 0.55, 0.25], [0.99, 0.99, 0.75]])


def heatmap(x: Tensor, vmax: float | None = None) -> Tensor:
    """Colour a non-negative map (..., H, W) dark → bright (..., 3, H, W) for uncertainty.

    Example:
        >>> import torch
        >>> heatmap(torch.tensor([[0.0, 1.0]])).shape
        torch.Size([3, 1, 2])
    """
    top = float(x.max()) if vmax is None else vmax
    u = (x / max(top, 1e-8)).clamp(0, 1) * (len(_HEAT) - 1)
    lo = u.floor().long().clamp(max=len(_HEAT) - 2)
    w = (u - lo).unsqueeze(-1)
    rgb = _HEAT[lo] * (1 - w) + _HEAT[lo + 1] * w
    return rgb.movedim(-1, -3)


def _colour(modality: str, x: Tensor, depth_range: tuple[float, float]) -> Tensor:
    from featureflow import viz

    if modality == "rgb":
        return x.clamp(0, 1)
    if modality == "segmentation":
        return viz.colorize_segmentation(x)
    if modality == "depth":
        return viz.colorize_depth(x.clamp(*depth_range), vmin=depth_range[0], vmax=depth_range[1])
    return viz.colorize_normals(x)


def copy_last_forecast(wm: Any, frames: Tensor, horizon: int) -> Any:
    """The copy-last-frame baseline as a `Forecast`: the last context frame's latents, repeated."""
    from featureflow.world import Forecast

    lat = wm.encode(frames[:, -1:])  # (b, 1, h, w, C)
    b = lat.shape[0]
    lat = lat[:, None].expand(b, 1, horizon, *lat.shape[2:]).contiguous()
    return Forecast(latents=lat, nfe=0, image_size=tuple(frames.shape[-2:]), model=wm)


def forecast_panels(fc: Any, context: dict[str, Tensor], truth: dict[str, Tensor] | None, step: int,
                    depth_range: tuple[float, float], shown: int = 4,
                    spread_max: dict[str, float] | None = None) -> list[list[Tensor]]:
    """Rows of images, one per modality the model decodes (rgb, segmentation, depth,
    normals): context frames | truth | samples | sample mean | uncertainty, at forecast
    step ``step``.

    Args:
        fc: a `Forecast` of batch 1.
        context: modality -> context frames to show (n, ...), oldest first (n may be 0).
        truth: modality -> true future frames (k, ...), or None when unknown.
        step: the forecast step shown (0-based).
        depth_range: (near, far) of the depth colour map.
        shown: samples shown (all are in the mean and uncertainty).
        spread_max: modality -> top of the uncertainty colour scale (default: per image).
    """
    rows = []
    for m in panel_rows(fc):
        pred = fc.decode(m)[0, :, step]  # (s, ...)
        unc = fc.uncertainty(m)
        mean = unc["mean"][0, step]
        spread = unc["spread"][0, step]
        row = [_colour(m, frame, depth_range) for frame in context.get(m, ())]
        if truth is not None:
            row.append(_colour(m, truth[m][step], depth_range))
        row += [_colour(m, pred[i], depth_range) for i in range(min(shown, pred.shape[0]))]
        row += [_colour(m, mean, depth_range), heatmap(spread, (spread_max or {}).get(m))]
        rows.append(row)
    return rows


def panel_rows(fc: Any) -> list[str]:
    """The modalities a forecast picture has rows for, in order."""
    return [m for m in MODALITY_ROWS if m in fc.model.probes]


def context_labels(n: int) -> list[str]:
    """Column labels of the last ``n`` context frames: ``t-(n-1) … t-1 t``.

    Example:
        >>> context_labels(3)
        ['t-2', 't-1', 't']
    """
    return [f"t-{n - 1 - i}" if i < n - 1 else "t" for i in range(n)]


def forecast_picture(fc: Any, context: dict[str, Tensor], truth: dict[str, Tensor] | None, step: int,
                     depth_range: tuple[float, float], *, title: str, shown: int = 4,
                     spread_max: dict[str, float] | None = None, scale: int = 2) -> Tensor:
    """`forecast_panels` as one labelled image (3, H, W): modality names on the rows; the
    context frames (``t-1``, ``t``), ``truth``, ``sample i``, ``mean`` and ``uncertainty``
    on the columns, grouped under "context" and "forecast t+k"; ``title`` on top."""
    from featureflow import viz

    n_ctx = len(next(iter(context.values()))) if context else 0
    n_shown = min(shown, int(fc.latents.shape[1]))
    cols = context_labels(n_ctx) + (["truth"] if truth is not None else [])
    cols += [f"sample {i + 1}" for i in range(n_shown)] + ["mean", "uncertainty"]
    groups = [("context", 0, n_ctx)] if n_ctx else []
    groups.append((f"forecast t+{step + 1}", n_ctx, len(cols) - n_ctx))
    rows = forecast_panels(fc, context, truth, step, depth_range, shown, spread_max)
    return viz.make_labeled_grid(rows, panel_rows(fc), cols, col_groups=groups, title=title, scale=scale)


def comparison_picture(forecasts: dict[int, Any], context: dict[str, Tensor], truth: dict[str, Tensor], step: int,
                       depth_range: tuple[float, float], *, title: str, shown: int = 2,
                       spread_max: dict[str, float] | None = None, scale: int = 2) -> Tensor:
    """Forecasts of one clip from different numbers of context frames side by side.

    Columns: the last context frame and the truth, then for each ``|C|`` in
    ``forecasts`` (context length -> `Forecast`) ``shown`` samples, their mean and
    their uncertainty (one colour scale for all, ``spread_max``); rows: modalities.
    """
    from featureflow import viz

    any_fc = next(iter(forecasts.values()))
    rows: list[list[Tensor]] = [[] for _ in panel_rows(any_fc)]
    cols, groups = ["t", "truth"], [("input", 0, 2)]
    last = {m: v[-1:] for m, v in context.items()}
    for i, row in enumerate(forecast_panels(any_fc, last, truth, step, depth_range, 0, spread_max)):
        rows[i] += row[:2]
    for c, fc in forecasts.items():
        n_shown = min(shown, int(fc.latents.shape[1]))
        for i, row in enumerate(forecast_panels(fc, {}, None, step, depth_range, shown, spread_max)):
            rows[i] += row
        groups.append((f"|C| = {c} context frame{'s' if c > 1 else ''}", len(cols), n_shown + 2))
        cols += [f"sample {j + 1}" for j in range(n_shown)] + ["mean", "uncertainty"]
    return viz.make_labeled_grid(rows, panel_rows(any_fc), cols, col_groups=groups, title=title, scale=scale)


_SPREAD_UNITS = {"rgb": "std. dev.", "segmentation": "entropy, nats", "depth": "std. dev., m",
                 "normals": "degrees from the mean"}


def decoded_context(wm: Any, frames: Tensor) -> dict[str, Tensor]:
    """What a forecast picture shows for context frames (t, 3, H, W) without ground truth:
    the frames themselves for ``rgb``, the probes' reading of them for the other modalities."""
    from featureflow.world import Forecast

    lat = wm.encode(frames[None])  # (1, t, h, w, C)
    fc = Forecast(latents=lat[:, None], nfe=0, image_size=tuple(frames.shape[-2:]), model=wm)
    return {m: (frames.float() if m == "rgb" else fc.decode(m)[0, 0]) for m in panel_rows(fc)}


def write_forecast_pictures(fc: Any, frames: Tensor, out_dir: Path, *, shown: int = 4) -> list[str]:
    """The labelled pictures of ``featureflow forecast`` (frames: the context, (t, 3, H, W)).

    ``forecast.png`` (last step) and ``forecast.gif`` (every step): rows rgb,
    segmentation, depth, normals; columns the last (up to 2) context frames, ``shown``
    samples, the sample mean and the uncertainty. Per modality: ``<m>_samples.png``
    (rows = samples, columns = the last context frame and the forecast steps),
    ``<m>_mean.gif`` and ``<m>_uncertainty.png`` (columns = steps). Context rows other
    than rgb are the probes' reading of the input frames. Returns the names written.
    """
    from featureflow import viz

    horizon, num = int(fc.latents.shape[2]), int(fc.latents.shape[1])
    context = decoded_context(fc.model, frames[-min(2, frames.shape[0]) :])
    depth_range = (0.0, 1.0)
    if "depth" in context:
        both = torch.cat([context["depth"].flatten(), fc.decode("depth").flatten()])
        depth_range = (float(both.min()), float(both.max()))
    spread_max = {m: float(fc.uncertainty(m)["spread"].max()) for m in panel_rows(fc)}
    title = (f"{frames.shape[0]} context frames, {num} samples ({min(shown, num)} shown), step {{k}} of {horizon}; "
             "context rows below rgb: the probes' reading of the input")
    pictures = [forecast_picture(fc, context, None, k, depth_range, title=title.format(k=k + 1), shown=shown,
                                 spread_max=spread_max) for k in range(horizon)]
    viz.save_png(pictures[-1], out_dir / "forecast.png")
    viz.save_gif(torch.stack(pictures), out_dir / "forecast.gif", fps=2)
    written = ["forecast.png", "forecast.gif"]
    steps = [f"t+{k + 1}" for k in range(horizon)]
    for m in panel_rows(fc):
        rng = depth_range if m == "depth" else (0.0, 1.0)
        pred = fc.decode(m)[0]  # (s, k, ...)
        last = _colour(m, context[m][-1], rng)
        rows = [[last] + [_colour(m, pred[i, k], rng) for k in range(horizon)] for i in range(num)]
        viz.save_png(viz.make_labeled_grid(rows, [f"sample {i + 1}" for i in range(num)], ["t", *steps],
                                           col_groups=[("context", 0, 1), ("forecast", 1, horizon)],
                                           title=f"{m}: {num} sampled futures", scale=2),
                     out_dir / f"{m}_samples.png")
        unc = fc.uncertainty(m)
        viz.save_gif(torch.stack([_colour(m, unc["mean"][0, k], rng) for k in range(horizon)]),
                     out_dir / f"{m}_mean.gif", fps=2)
        spread = unc["spread"][0]
        viz.save_png(viz.make_labeled_grid([[heatmap(spread[k], spread_max[m]) for k in range(horizon)]],
                                           ["uncertainty"], steps,
                                           title=f"{m}: spread of the samples ({_SPREAD_UNITS[m]}), "
                                                 f"bright = {spread_max[m]:.3g}", scale=2),
                     out_dir / f"{m}_uncertainty.png")
        written += [f"{m}_samples.png", f"{m}_mean.gif", f"{m}_uncertainty.png"]
    return written


def _table(results: dict[str, dict[str, Any]], horizon: int) -> str:
    lines = [
        f"| context | method | mIoU ↑ | depth AbsRel ↓ | normal err (°) ↓ |",
        "| --- | --- | --- | --- | --- |",
    ]
    for ctx, methods in results.items():
        for name, summ in methods.items():
            def cell(metric: str, kind: str) -> str:
                return f"{summ[metric][kind]:.3f}" if metric in summ else "–"
            kinds = [("flow best-of-K", "best"), ("flow mean-of-K", "mean")] if name == "flow" else [(name, "mean")]
            for label, kind in kinds:
                lines.append(f"| {ctx} | {label} | {cell('miou', kind)} | {cell('abs_rel', kind)} | {cell('normal_err', kind)} |")
    return "\n".join(lines) + f"\n(averaged over the {horizon} forecast steps; K samples per context)"


@torch.no_grad()
def forecast_demo(out_dir: Path, *, model: str, seed: int, progress: bool, num_samples: int, horizon: int,
                  solver: str = "heun", steps: int = 4) -> Path:
    """Run the forecasting demo (see `featureflow.demo.run_demo`)."""
    from featureflow import viz
    from featureflow.data import ToyWorld
    from featureflow.utils import atomic_write, progress_bar, save_json
    from featureflow.world import WorldModel
    from featureflow.world.cli import refuse_action_model
    from featureflow.world.evaluate import score_decoded, summarize_scores

    wm = WorldModel.from_pretrained(model)
    refuse_action_model(wm, model)
    data = wm.metadata.get("data", {})
    world = ToyWorld(resolution=int(data.get("resolution", 64)))
    stride = int(data.get("stride", 1))
    ctx_max = wm.max_context
    clip = world.clip(ToyWorld.split_seeds("test")[seed], ctx_max + horizon, stride=stride,
                      start=int(data.get("warmup", 0)))
    frames = clip.rgb[None]
    truth = {"rgb": clip.rgb[ctx_max:], "segmentation": clip.segmentation[ctx_max:],
             "depth": clip.depth[ctx_max:], "normals": clip.normals[ctx_max:]}
    num_classes = len(world.CLASSES)
    obj = clip.depth[clip.depth < world.far]
    depth_range = (float(obj.min()), float(obj.max())) if obj.numel() else (0.0, world.far)
    contexts = sorted({1, ctx_max})
    results: dict[str, dict[str, Any]] = {}
    flows: dict[int, Any] = {}
    bar = progress_bar(total=len(contexts) * 3 + 1, progress=progress, desc="featureflow demo")
    for c in contexts:
        ctx = frames[:, ctx_max - c : ctx_max]
        g = torch.Generator().manual_seed(seed)
        forecasts = {"flow": wm.forecast(ctx, horizon, num_samples, solver=solver, steps=steps, generator=g)}
        bar.update()
        if "regression" in wm.baselines:
            forecasts["regression"] = wm.forecast(ctx, horizon, 1, baseline="regression")
        bar.update()
        forecasts["copy-last"] = copy_last_forecast(wm, ctx, horizon)
        bar.update()
        targets = {k: v[None] for k, v in truth.items()}
        results[f"{c}"] = {}
        for name, fc in forecasts.items():
            preds = {m: fc.decode(m) for m in ("segmentation", "depth", "normals") if m in wm.probes}
            results[f"{c}"][name] = summarize_scores(score_decoded(preds, targets, num_classes=num_classes))
        flows[c] = forecasts["flow"]
    flow = flows[ctx_max]
    # one uncertainty colour scale per modality for every picture, so they compare
    spread_max = {m: max(float(fc.uncertainty(m)["spread"].max()) for fc in flows.values()) for m in panel_rows(flow)}
    frames_of = {"rgb": clip.rgb, "segmentation": clip.segmentation, "depth": clip.depth, "normals": clip.normals}
    shown = min(4, num_samples)
    for c, fc in flows.items():
        n_show = min(2, c)  # the last (at most 2) of the frames this forecast was given
        context = {m: v[ctx_max - n_show : ctx_max] for m, v in frames_of.items()}
        plural = "s" if c > 1 else ""
        title = (f"ToyWorld test clip {seed}: {c} context frame{plural}, {num_samples} samples "
                 f"({shown} shown), step {{k}} of {horizon}")
        pictures = [forecast_picture(fc, context, truth, k, depth_range, title=title.format(k=k + 1), shown=shown,
                                     spread_max=spread_max) for k in range(horizon)]
        viz.save_png(pictures[-1], out_dir / f"forecast_ctx{c}.png")
        viz.save_gif(torch.stack(pictures), out_dir / f"forecast_ctx{c}.gif", fps=2)
    if len(flows) > 1:
        context = {m: v[ctx_max - 1 : ctx_max] for m, v in frames_of.items()}
        names = " vs ".join(str(c) for c in flows)
        title = (f"ToyWorld test clip {seed}, forecast step {horizon} of {horizon}: the same clip and noise, "
                 f"from {names} context frames")
        picture = comparison_picture(flows, context, truth, horizon - 1, depth_range, title=title,
                                     shown=min(2, num_samples), spread_max=spread_max)
        viz.save_png(picture, out_dir / f"forecast_ctx{'_vs_ctx'.join(str(c) for c in flows)}.png")
    bar.update()
    bar.close()
    table = _table(results, horizon)
    save_json({"seed": seed, "num_samples": num_samples, "horizon": horizon, "solver": solver, "steps": steps,
               "nfe_per_frame": int(flow.nfe), "results": results}, out_dir / "metrics.json")
    with atomic_write(out_dir / "metrics.md") as tmp:
        tmp.write_text(table + "\n")
    print(f"featureflow demo: ToyWorld test clip {seed}, {num_samples} samples, {horizon} steps ahead, "
          f"{solver} with {flow.nfe} network evaluations per frame")
    print(table)
    print("forecast_ctx*.png: rows rgb, segmentation, depth, normals; columns the last context frames | truth | "
          "samples | sample mean | uncertainty, at the last forecast step (the .gif: every step); "
          f"forecast_ctx{'_vs_ctx'.join(str(c) for c in flows)}.png: the same clip forecast from "
          f"{' and '.join(str(c) for c in flows)} context frames side by side")
    print(f"Wrote {', '.join(sorted(p.name for p in out_dir.iterdir()))} to {out_dir}/")
    return out_dir
