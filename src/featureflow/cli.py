"""The ``featureflow`` command line.

Sub-commands live in their own modules; each exposes ``register(subparsers)`` that adds
an ``argparse`` sub-parser whose ``func`` attribute runs it.

Every sub-command takes ``--threads N`` (torch CPU threads); without it the command
uses :func:`featureflow.utils.default_threads` (1 on a machine with 2 CPUs or fewer,
else the CPUs the load average leaves idle), unless ``OMP_NUM_THREADS`` is set.

Example:
    $ featureflow demo            # the main job, writes ./featureflow-demo/
    $ featureflow demo --threads 2
    $ featureflow --version
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from featureflow.version import __version__

__all__ = ["main", "build_parser", "apply_threads"]

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
    for command in sub.choices.values():
        command.add_argument(
            "--threads", type=_positive_int, default=None, metavar="N",
            help="torch CPU threads (default: 1 on a machine with <= 2 CPUs, else the CPUs left idle by the "
                 "load average; OMP_NUM_THREADS, when set, is kept)",
        )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def apply_threads(args: argparse.Namespace) -> int:
    """Set torch's thread count from parsed arguments (``--threads``, else the default); returns it.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> apply_threads(build_parser().parse_args(["demo", "--threads", "1"]))
        1
        >>> _ = torch.set_num_threads(before)
    """
    from featureflow.utils.threads import set_threads

    return set_threads(getattr(args, "threads", None))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featureflow`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    apply_threads(args)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"featureflow {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
