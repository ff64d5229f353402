"""``featureflow demo``: the main job (renders a ToyWorld clip until the bundled model lands)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["run_demo", "register"]


def run_demo(out: str | Path = "featureflow-demo", *, seed: int = 0, progress: bool = True) -> Path:
    """Render a ToyWorld clip to ``out`` and return the directory."""
    raise NotImplementedError("filled in by the ToyWorld work")


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("demo", help="run the main demo (writes ./featureflow-demo/)")
    p.add_argument("--out", default="featureflow-demo", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=lambda a: run_demo(a.out, seed=a.seed, progress=not a.no_progress) and 0)
