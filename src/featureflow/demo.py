"""``featureflow demo``: the main job — forecast a ToyWorld clip with the bundled model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

__all__ = ["run_demo", "register", "toyworld_panels"]


def toyworld_panels(clip: "object", far: float | None = None) -> torch.Tensor:
    """Per-frame panels (t, 3, H, 4W): rgb | depth | normals | segmentation side by side.

    Args:
        clip: a :class:`featureflow.data.ToyClip` with a time axis.
        far: background depth to leave out of the depth colour range (``world.far``).

    Example:
        >>> from featureflow.data import ToyWorld
        >>> w = ToyWorld(resolution=8)
        >>> tuple(toyworld_panels(w.clip(0, 2), far=w.far).shape)
        (2, 3, 8, 32)
    """
    from featureflow import viz

    depth = clip.depth  # type: ignore[attr-defined]
    valid = depth[depth < far] if far is not None else depth
    vmin, vmax = (float(valid.min()), float(valid.max())) if valid.numel() else (None, None)
    parts = [
        clip.rgb,  # type: ignore[attr-defined]
        viz.colorize_depth(depth, vmin=vmin, vmax=vmax),
        viz.colorize_normals(clip.normals),  # type: ignore[attr-defined]
        viz.colorize_segmentation(clip.segmentation),  # type: ignore[attr-defined]
    ]
    return torch.cat(parts, dim=-1)


def run_demo(
    out: str | Path = "featureflow-demo",
    *,
    seed: int = 0,
    progress: bool = True,
    model: str = "toyworld",
    num_samples: int = 6,
    horizon: int = 4,
) -> Path:
    """The main job: forecast a fresh ToyWorld clip and write pictures and a table to ``out``.

    With the bundled model: simulates a held-out ToyWorld clip, forecasts
    ``num_samples`` futures ``horizon`` frames ahead from 1 and from 4 context frames,
    and writes ``forecast_ctx1.png`` / ``forecast_ctx4.png`` (rows rgb, segmentation,
    depth, normals; columns the last (up to 2) context frames | truth | samples | mean |
    uncertainty, at the last forecast step; labelled), ``forecast_ctx1.gif`` /
    ``forecast_ctx4.gif`` (the same over the steps), ``forecast_ctx1_vs_ctx4.png`` (the
    same clip and noise forecast from 1 and from 4 context frames side by side, one
    uncertainty colour scale), ``metrics.json``, and prints a table (mIoU, depth
    AbsRel, normal error for flow best-of-K and mean-of-K, regression, copy-last-frame).
    Without a bundled model it renders the ToyWorld clip only (``toyworld.gif`` /
    ``toyworld.png``).

    Example:
        >>> import tempfile
        >>> d = run_demo(tempfile.mkdtemp(), seed=1, progress=False, model="none")  # doctest: +ELLIPSIS
        Rendered ToyWorld clip ...
        >>> sorted(p.name for p in d.iterdir())
        ['toyworld.gif', 'toyworld.png']
    """
    from featureflow.world.serialization import bundled_models

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model in bundled_models() or Path(model).is_dir():
        from featureflow.demo_forecast import forecast_demo

        return forecast_demo(out_dir, model=model, seed=seed, progress=progress,
                             num_samples=num_samples, horizon=horizon)
    return _render_clip(out_dir, seed=seed, progress=progress)


def _render_clip(out_dir: Path, *, seed: int, progress: bool) -> Path:
    from featureflow import viz
    from featureflow.data import ToyWorld
    from featureflow.utils import progress_bar

    world = ToyWorld(resolution=64)
    length = 24
    with progress_bar(total=3, progress=progress, desc="ToyWorld demo") as bar:
        clip = world.clip(seed, length)
        panels = toyworld_panels(clip, far=world.far)
        bar.update()
        viz.save_gif(panels.repeat_interleave(2, -2).repeat_interleave(2, -1), out_dir / "toyworld.gif", fps=8)
        bar.update()
        viz.save_png(viz.make_grid([[p] for p in panels[::4]], pad=2, scale=2), out_dir / "toyworld.png")
        bar.update()
    print(f"Rendered ToyWorld clip (seed {seed}, {length} frames: rgb | depth | normals | segmentation) to {out_dir}/")
    print("No forecasting model is installed; only the ToyWorld clip was rendered.")
    return out_dir


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("demo", help="run the main demo (writes ./featureflow-demo/)",
                       description="Forecast a held-out ToyWorld clip with the bundled model from 1 and from 4 "
                                   "context frames; write labelled pictures, GIFs and a metrics table.")
    p.add_argument("--out", default="featureflow-demo", help="output directory (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="which ToyWorld test clip to forecast, and the sampling seed (default: %(default)s)")
    p.add_argument("--model", default="toyworld", help="bundled model name or model directory (default: %(default)s)")
    p.add_argument("--num-samples", "--samples", dest="num_samples", type=int, default=6, metavar="K",
                   help="sampled futures per context, as WorldModel.forecast(num_samples=); "
                        "--samples is an alias (default: %(default)s)")
    p.add_argument("--horizon", type=int, default=4, help="forecast frames (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=lambda a: run_demo(a.out, seed=a.seed, progress=not a.no_progress, model=a.model,
                                           num_samples=a.num_samples, horizon=a.horizon) and 0)
