"""``featureflow forecast``: forecast a user's own frames (folder or video) and write pictures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from featureflow.world.checks import fit_frames, refuse_action_model

__all__ = ["forecast_files", "register", "refuse_action_model"]


def _load_input(path: Path) -> torch.Tensor:
    from featureflow.data import read_frames, read_video

    if path.is_dir():
        return read_frames(path)
    if path.is_file():
        return read_video(path)
    raise FileNotFoundError(f"--input {path} is neither a folder of frames nor a video file")


def forecast_files(
    model: str,
    input_path: str | Path,
    out: str | Path,
    *,
    horizon: int = 4,
    num_samples: int = 8,
    solver: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    size: int | None = None,
    progress: bool = True,
) -> Path:
    """Forecast from the last frames of ``input_path`` and write the decoded futures to ``out``.

    Frames are resized to ``size`` x ``size`` (default: the model's training resolution,
    if it records one), saying so when they are, and the last ``max_context`` of them are
    the context. Writes, per
    modality the model decodes: ``<modality>_samples.png`` (rows = samples, columns =
    the last context frame and the forecast steps), ``<modality>_mean.gif`` and
    ``<modality>_uncertainty.png``; ``forecast.png`` / ``forecast.gif`` (rows =
    modalities, columns = the last context frames | samples | mean | uncertainty, at the
    last / every step; see `featureflow.world.pictures.write_forecast_pictures`); all
    pictures labelled; plus ``latents.safetensors`` and ``forecast.json``.

    Example:
        >>> forecast_files("toyworld", "my_frames/", "out/")  # doctest: +SKIP
    """
    from featureflow.world.pictures import write_forecast_pictures
    from featureflow.utils import save_json, save_safetensors
    from featureflow.world import WorldModel

    wm = WorldModel.from_pretrained(model)
    refuse_action_model(wm, model)
    frames = _load_input(Path(input_path))
    target = (size, size) if size else wm.trained_size
    if target is not None and tuple(frames.shape[-2:]) != tuple(target):
        why = "--size" if size else "the resolution the model was trained at; --size to choose another"
        print(f"resizing the input frames from {frames.shape[-1]}x{frames.shape[-2]} to {target[1]}x{target[0]} "
              f"({why})")
        frames = fit_frames(frames[None], (int(target[0]), int(target[1])), "silent")[0]
    ctx = frames[-wm.max_context :][None]
    g = torch.Generator().manual_seed(seed)
    fc = wm.forecast(ctx, horizon, num_samples, solver=solver, steps=steps, generator=g, progress=progress,
                     resize="none")  # sized above, and said so
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_forecast_pictures(fc, ctx[0], out_dir)
    save_safetensors({"latents": fc.latents}, out_dir / "latents.safetensors")
    info: dict[str, Any] = {"model": model, "input": str(input_path), "context_frames": int(ctx.shape[1]),
                            "horizon": horizon, "num_samples": num_samples, "nfe_per_frame": fc.nfe,
                            "latents_shape": list(fc.latents.shape)}
    save_json(info, out_dir / "forecast.json")
    print(f"forecast {num_samples} samples x {horizon} frames from {ctx.shape[1]} context frames "
          f"({fc.nfe} network evaluations per frame); wrote {len(written) + 2} files to {out_dir}/")
    return out_dir


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``featureflow forecast``."""
    p = sub.add_parser("forecast", help="forecast your own frames (a folder of images or a video)",
                       description="Forecast the future of your own frames and write labelled pictures of the "
                                   "sampled futures, their mean and their uncertainty.")
    p.add_argument("--model", default="toyworld",
                   help="bundled name, model directory or Hub repo id (default: %(default)s)")
    p.add_argument("--input", required=True, help="folder of frames or a video/animated image")
    p.add_argument("--horizon", type=int, default=4, help="forecast frames (default: %(default)s)")
    p.add_argument("--num-samples", "--samples", dest="num_samples", type=int, default=8, metavar="K",
                   help="sampled futures, as WorldModel.forecast(num_samples=); --samples is an alias "
                        "(default: %(default)s)")
    p.add_argument("--solver", default=None,
                   help="euler | heun | midpoint | rk4 | dopri5 (default: the model's sampling recipe, else euler)")
    p.add_argument("--steps", type=int, default=None,
                   help="network evaluations per forecast frame (default: the model's sampling recipe, else the "
                        "solver's default, 8 for the fixed-step solvers)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default: %(default)s)")
    p.add_argument("--size", type=int, default=None,
                   help="resize frames to SIZExSIZE first (default: the model's training resolution)")
    p.add_argument("--out", default="featureflow-forecast", help="output directory (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=lambda a: forecast_files(
        a.model, a.input, a.out, horizon=a.horizon, num_samples=a.num_samples, solver=a.solver, steps=a.steps,
        seed=a.seed, size=a.size, progress=not a.no_progress) and 0)
