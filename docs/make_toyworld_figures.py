"""Render the ToyWorld figures embedded in docs/toyworld.md into docs/assets/.

Usage:
    python docs/make_toyworld_figures.py            # the ToyWorld figures
    python docs/make_toyworld_figures.py --demo     # also the demo pictures of the bundled model

Writes (deterministically, from fixed seeds):
    docs/assets/toyworld_clip.gif    a clip: rgb | depth | normals | segmentation per frame
    docs/assets/toyworld_clip.png    every 4th frame of that clip, one row per frame
    docs/assets/toyworld_branch.png  four futures branched from one state (one row each)

With ``--demo`` (``featureflow demo`` on ToyWorld test clip 0 with the bundled
``toyworld`` model, 6 samples, 4 steps; run it again after the model changes):
    docs/assets/demo_forecast_ctx1.png          forecast from 1 context frame (labelled)
    docs/assets/demo_forecast_ctx4.png          forecast from 4 context frames
    docs/assets/demo_forecast_ctx4.gif          the same at every forecast step
    docs/assets/demo_forecast_ctx1_vs_ctx4.png  both side by side
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from featureflow import viz
from featureflow.data import ToyWorld
from featureflow.demo import toyworld_panels

ASSETS = Path(__file__).resolve().parent / "assets"


DEMO_PICTURES = ("forecast_ctx1.png", "forecast_ctx4.png", "forecast_ctx4.gif", "forecast_ctx1_vs_ctx4.png")


def demo_pictures() -> None:
    """Run the demo with the bundled model and copy its pictures to ``docs/assets/demo_*``."""
    from featureflow.demo import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        run_demo(tmp, seed=0, progress=False, model="toyworld", num_samples=6, horizon=4)
        for name in DEMO_PICTURES:
            shutil.copyfile(Path(tmp) / name, ASSETS / f"demo_{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="also write the demo pictures of the bundled model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ASSETS.mkdir(parents=True, exist_ok=True)
    world = ToyWorld(resolution=128)
    clip = world.clip(seed=1, length=24)
    panels = toyworld_panels(clip, far=world.far)
    viz.save_gif(panels, ASSETS / "toyworld_clip.gif", fps=8)
    viz.save_png(viz.make_grid([[p] for p in panels[::4]], pad=2), ASSETS / "toyworld_clip.png")

    small = ToyWorld(resolution=96, turn_prob=0.2)
    state = small.state_at(seed=4, steps=6)
    start = small.render(state).rgb
    futures = small.branch(state, n=4, steps=12, seed=0, stride=1)
    rows = [[start] + [futures.rgb[i, j] for j in range(1, 12, 2)] for i in range(4)]
    viz.save_png(viz.make_grid(rows, pad=2), ASSETS / "toyworld_branch.png")
    if args.demo:
        demo_pictures()
    for p in sorted([*ASSETS.glob("toyworld_*"), *(ASSETS.glob("demo_*") if args.demo else [])]):
        print(f"wrote {p} ({p.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
