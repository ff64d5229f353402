"""The forecasting half of ``featureflow demo``: pictures, GIFs and a metrics table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["forecast_demo", "heatmap", "forecast_panels", "copy_last_forecast"]

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


def forecast_panels(fc: Any, last: dict[str, Tensor], truth: dict[str, Tensor], step: int,
                    depth_range: tuple[float, float], shown: int = 4) -> list[list[Tensor]]:
    """Rows (rgb, segmentation, depth, normals) of images: last context | truth | samples | mean | spread."""
    rows = []
    for m in MODALITY_ROWS:
        if m not in fc.model.probes:
            continue
        pred = fc.decode(m)[0, :, step]  # (s, ...)
        unc = fc.uncertainty(m)
        mean = unc["mean"][0, step]
        spread = unc["spread"][0, step]
        row = [_colour(m, last[m], depth_range), _colour(m, truth[m][step], depth_range)]
        row += [_colour(m, pred[i], depth_range) for i in range(min(shown, pred.shape[0]))]
        row += [_colour(m, mean, depth_range), heatmap(spread)]
        rows.append(row)
    return rows


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
    from featureflow.utils import progress_bar
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
    bar = progress_bar(total=len(contexts) * 3, progress=progress, desc="featureflow demo")
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
        flow = forecasts["flow"]
        last = {"rgb": clip.rgb[ctx_max - 1], "segmentation": clip.segmentation[ctx_max - 1],
                "depth": clip.depth[ctx_max - 1], "normals": clip.normals[ctx_max - 1]}
        steps_imgs = [viz.make_grid(forecast_panels(flow, last, truth, k, depth_range), pad=2, scale=2)
                      for k in range(horizon)]
        viz.save_png(steps_imgs[-1], out_dir / f"forecast_ctx{c}.png")
        viz.save_gif(torch.stack(steps_imgs), out_dir / f"forecast_ctx{c}.gif", fps=2)
    bar.close()
    table = _table(results, horizon)
    with open(out_dir / "metrics.json", "w") as fh:
        json.dump({"seed": seed, "num_samples": num_samples, "horizon": horizon, "solver": solver, "steps": steps,
                   "nfe_per_frame": int(flow.nfe), "results": results}, fh, indent=2)
    (out_dir / "metrics.md").write_text(table + "\n")
    print(f"featureflow demo: ToyWorld test clip {seed}, {num_samples} samples, {horizon} steps ahead, "
          f"{solver} with {flow.nfe} network evaluations per frame")
    print(table)
    print("Columns of forecast_ctx*.png: last context | truth | samples | sample mean | uncertainty "
          "(rows: rgb, segmentation, depth, normals; last forecast step)")
    print(f"Wrote {', '.join(sorted(p.name for p in out_dir.iterdir()))} to {out_dir}/")
    return out_dir
