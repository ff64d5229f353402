"""Pictures of a `Forecast`: labelled grids of context, truth, samples, mean and uncertainty.

Rows are the modalities the model decodes, in the order of
`featureflow.world.modalities.MODALITY_TABLE`; colours and uncertainty units come from
that table. Used by ``featureflow forecast`` (`write_forecast_pictures`) and the demo.

Example:
    >>> context_labels(2)
    ['t-1', 't']
"""

from __future__ import annotations

from pathlib import Path
import torch
from torch import Tensor

from featureflow import viz
from featureflow.typing import Float, UInt8, typechecked
from featureflow.world.forecast_result import Forecast
from featureflow.world.modalities import MODALITY_TABLE, colour
from featureflow.world.model import WorldModel

__all__ = ["forecast_panels", "panel_rows", "context_labels", "forecast_picture", "comparison_picture",
           "decoded_context", "write_forecast_pictures"]

#: A (low, high) value range of a colour map (the depth range).
ValueRange = tuple[float | int, float | int]


@typechecked
def forecast_panels(fc: Forecast, context: dict[str, Tensor], truth: dict[str, Tensor] | None, step: int,
                    depth_range: ValueRange, shown: int = 4,
                    spread_max: dict[str, float | int] | None = None) -> list[list[Tensor]]:
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
        row = [colour(m, frame, depth_range) for frame in context.get(m, ())]
        if truth is not None:
            row.append(colour(m, truth[m][step], depth_range))
        row += [colour(m, pred[i], depth_range) for i in range(min(shown, pred.shape[0]))]
        row += [colour(m, mean, depth_range), viz.heatmap(spread, (spread_max or {}).get(m))]
        rows.append(row)
    return rows


def panel_rows(fc: Forecast) -> list[str]:
    """The modalities a forecast picture has rows for, in order."""
    return [m for m in MODALITY_TABLE if m in fc.model.probes]


def context_labels(n: int) -> list[str]:
    """Column labels of the last ``n`` context frames: ``t-(n-1) … t-1 t``.

    Example:
        >>> context_labels(3)
        ['t-2', 't-1', 't']
    """
    return [f"t-{n - 1 - i}" if i < n - 1 else "t" for i in range(n)]


@typechecked
def forecast_picture(fc: Forecast, context: dict[str, Tensor], truth: dict[str, Tensor] | None, step: int,
                     depth_range: ValueRange, *, title: str, shown: int = 4,
                     spread_max: dict[str, float | int] | None = None, scale: int = 2) -> Tensor:
    """`forecast_panels` as one labelled image (3, H, W): modality names on the rows; the
    context frames (``t-1``, ``t``), ``truth``, ``sample i``, ``mean`` and ``uncertainty``
    on the columns, grouped under "context" and "forecast t+k"; ``title`` on top."""
    n_ctx = len(next(iter(context.values()))) if context else 0
    n_shown = min(shown, int(fc.latents.shape[1]))
    cols = context_labels(n_ctx) + (["truth"] if truth is not None else [])
    cols += [f"sample {i + 1}" for i in range(n_shown)] + ["mean", "uncertainty"]
    groups = [("context", 0, n_ctx)] if n_ctx else []
    groups.append((f"forecast t+{step + 1}", n_ctx, len(cols) - n_ctx))
    rows = forecast_panels(fc, context, truth, step, depth_range, shown, spread_max)
    return viz.make_labeled_grid(rows, panel_rows(fc), cols, col_groups=groups, title=title, scale=scale)


@typechecked
def comparison_picture(forecasts: dict[int, Forecast], context: dict[str, Tensor], truth: dict[str, Tensor], step: int,
                       depth_range: ValueRange, *, title: str, shown: int = 2,
                       spread_max: dict[str, float | int] | None = None, scale: int = 2) -> Tensor:
    """Forecasts of one clip from different numbers of context frames side by side.

    Columns: the last context frame and the truth, then for each ``|C|`` in
    ``forecasts`` (context length -> `Forecast`) ``shown`` samples, their mean and
    their uncertainty (one colour scale for all, ``spread_max``); rows: modalities.
    """
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


@typechecked
def decoded_context(wm: WorldModel, frames: Float[Tensor, "t 3 H W"] | UInt8[Tensor, "t 3 H W"]) -> dict[str, Tensor]:
    """What a forecast picture shows for context frames (t, 3, H, W) without ground truth:
    the frames themselves for ``rgb``, the probes' reading of them for the other modalities."""
    lat = wm.encode(frames[None])  # (1, t, h, w, C)
    fc = Forecast(latents=lat[:, None], nfe=0, image_size=tuple(frames.shape[-2:]), model=wm)
    return {m: (frames.float() if m == "rgb" else fc.decode(m)[0, 0]) for m in panel_rows(fc)}


@typechecked
def write_forecast_pictures(fc: Forecast, frames: Float[Tensor, "t 3 H W"] | UInt8[Tensor, "t 3 H W"], out_dir: Path, *, shown: int = 4) -> list[str]:
    """The labelled pictures of ``featureflow forecast`` (frames: the context, (t, 3, H, W)).

    ``forecast.png`` (last step) and ``forecast.gif`` (every step): rows rgb,
    segmentation, depth, normals; columns the last (up to 2) context frames, ``shown``
    samples, the sample mean and the uncertainty. Per modality: ``<m>_samples.png``
    (rows = samples, columns = the last context frame and the forecast steps),
    ``<m>_mean.gif`` and ``<m>_uncertainty.png`` (columns = steps). Context rows other
    than rgb are the probes' reading of the input frames. Returns the names written.
    """
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
        last = colour(m, context[m][-1], rng)
        rows = [[last] + [colour(m, pred[i, k], rng) for k in range(horizon)] for i in range(num)]
        viz.save_png(viz.make_labeled_grid(rows, [f"sample {i + 1}" for i in range(num)], ["t", *steps],
                                           col_groups=[("context", 0, 1), ("forecast", 1, horizon)],
                                           title=f"{m}: {num} sampled futures", scale=2),
                     out_dir / f"{m}_samples.png")
        unc = fc.uncertainty(m)
        viz.save_gif(torch.stack([colour(m, unc["mean"][0, k], rng) for k in range(horizon)]),
                     out_dir / f"{m}_mean.gif", fps=2)
        spread = unc["spread"][0]
        viz.save_png(viz.make_labeled_grid([[viz.heatmap(spread[k], spread_max[m]) for k in range(horizon)]],
                                           ["uncertainty"], steps,
                                           title=f"{m}: spread of the samples ({MODALITY_TABLE[m].spread_unit}), "
                                                 f"bright = {spread_max[m]:.3g}", scale=2),
                     out_dir / f"{m}_uncertainty.png")
        written += [f"{m}_samples.png", f"{m}_mean.gif", f"{m}_uncertainty.png"]
    return written
