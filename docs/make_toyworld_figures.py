"""Render the ToyWorld figures embedded in docs/toyworld.md into docs/assets/.

Usage:
    python docs/make_toyworld_figures.py

Writes (deterministically, from fixed seeds):
    docs/assets/toyworld_clip.gif    a clip: rgb | depth | normals | segmentation per frame
    docs/assets/toyworld_clip.png    every 4th frame of that clip, one row per frame
    docs/assets/toyworld_branch.png  four futures branched from one state (one row each)
"""

from __future__ import annotations

from pathlib import Path

import torch

from featureflow import viz
from featureflow.data import ToyWorld
from featureflow.demo import toyworld_panels

ASSETS = Path(__file__).resolve().parent / "assets"


def main() -> None:
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
    for p in sorted(ASSETS.glob("toyworld_*")):
        print(f"wrote {p} ({p.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
