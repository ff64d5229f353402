"""The ``featureflow`` command line.

Sub-commands live in their own modules; each exposes ``register(subparsers)`` that adds
an ``argparse`` sub-parser whose ``func`` attribute runs it.

Example:
    $ featureflow demo            # the main job, writes ./featureflow-demo/
    $ featureflow --version
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from featureflow.version import __version__

__all__ = ["main", "build_parser"]

#: Modules that contribute sub-commands (each has ``register(subparsers)``).
COMMAND_MODULES: tuple[str, ...] = (
    "featureflow.demo",
    "featureflow.training.vae",
    "featureflow.training.forecaster",
    "featureflow.training.pipeline",
    "featureflow.world.cli",
    "featureflow.compat.vfmf.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="featureflow",
        description="Stochastic world modelling in vision-foundation-model feature space.",
    )
    parser.add_argument("--version", action="version", version=f"featureflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featureflow`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"featureflow {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
