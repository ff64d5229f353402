"""`plot_training_curves`: the loss curves of a run's JSONL logs as one labelled PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from featureflow.utils import atomic_write

__all__ = ["read_log", "plot_training_curves"]


def read_log(path: str | os.PathLike, key: str = "loss") -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` in a JSONL training log (records without it are skipped;
    a line cut by a crash is ignored).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
        >>> _ = p.write_text('{"step": 1, "loss": 2.0}\\n{"step": 2, "loss": 1.5}\\n{"step": 3, "lo')
        >>> read_log(p)
        ([1.0, 2.0], [2.0, 1.5])
    """
    steps, values = [], []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and key in rec and "step" in rec:
            steps.append(float(rec["step"]))
            values.append(float(rec[key]))
    return steps, values


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_training_curves(
    logs: Sequence[str | os.PathLike], out: str | os.PathLike, *, title: str = "training loss", smooth: int = 25
) -> Path:
    """One panel per JSONL log (stage name from the file name): the loss per optimizer
    step and its running mean over ``smooth`` steps, log-scaled; panels stacked in one PNG.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "flow.jsonl").write_text("".join(f'{{"step": {i}, "loss": {1 / i}}}\\n' for i in range(1, 50)))
        >>> plot_training_curves([d / "flow.jsonl"], d / "curves.png").is_file()
        True
    """
    from PIL import Image

    from featureflow.viz import line_plot

    panels = []
    for log in logs:
        steps, values = read_log(log)
        if not steps:
            continue
        name = Path(log).stem
        panels.append(line_plot(
            [(f"{name} loss", steps, values), (f"running mean ({smooth} steps)", steps, _smooth(values, smooth))],
            xlabel="optimizer step", ylabel="loss", title=f"{title}: {name} (final {values[-1]:.4g})",
            logy=all(v > 0 for v in values), markers=False, size=(640, 300),
        ))
    if not panels:
        raise ValueError(f"no training records with a 'loss' in {[str(p) for p in logs]}")
    sheet = Image.new("RGB", (640, 300 * len(panels)), (255, 255, 255))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (0, 300 * i))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
