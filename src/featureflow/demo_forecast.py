"""The forecasting half of ``featureflow demo``: pictures, GIFs and a metrics table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from featureflow.forecast import CopyLastForecaster
from featureflow.viz import heatmap
from featureflow.world import Forecast, WorldModel
from featureflow.world.checks import refuse_action_model
from featureflow.world.modalities import MODALITY_TABLE
from featureflow.world.pictures import (
    comparison_picture,
    context_labels,
    decoded_context,
    forecast_panels,
    forecast_picture,
    panel_rows,
    write_forecast_pictures,
)

__all__ = ["forecast_demo", "heatmap", "forecast_panels", "forecast_picture", "comparison_picture", "context_labels",
           "decoded_context", "write_forecast_pictures", "copy_last_forecast", "panel_rows"]


def copy_last_forecast(wm: WorldModel, frames: Tensor, horizon: int) -> Forecast:
    """The copy-last-frame baseline as a `Forecast` (`featureflow.forecast.CopyLastForecaster`
    on the model's latents of ``frames``).

    Example:
        >>> fc = copy_last_forecast(ff.WorldModel.from_pretrained("toyworld"), frames, 4)  # doctest: +SKIP
    """
    lat = wm.encode(frames[:, -1:])  # (b, 1, h, w, C)
    roll = CopyLastForecaster().rollout(lat, horizon)
    return Forecast(latents=roll.latents, nfe=roll.nfe, image_size=tuple(frames.shape[-2:]), model=wm)


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
            preds = {m: fc.decode(m) for m, entry in MODALITY_TABLE.items() if entry.metric and m in wm.probes}
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
