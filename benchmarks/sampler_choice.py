"""Choose the protocol's sampler on the ToyWorld **val** split (never on test).

For each setting (solver and network evaluations per frame) runs ``quality.py`` and
``distribution.py`` on the val split into ``RUNS/<solver><steps>/`` and stores the
figures the choice is made on in ``docs/benchmarks/sampler_val.json``: object-class mIoU
of the flow (mean of K, ensemble mean of 8), its per-sample latent error on static
patches over regression's, and the spread ratio vs ``ToyWorld.branch`` futures, at
|C| = 4. ``run_all.py`` renders them as "How the sampler was chosen"; the chosen setting
is ``PROTOCOL_SOLVER``/``PROTOCOL_STEPS`` in ``_common.py``.

Run::

    python benchmarks/sampler_choice.py --runs runs/sampler_val                  # all settings
    python benchmarks/sampler_choice.py --runs runs/sampler_val --summarise-only # stored runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SETTINGS = (("euler", 2), ("euler", 3), ("euler", 4), ("euler", 8), ("heun", 4))


def _run(model: str, runs: Path, clips: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for solver, steps in SETTINGS:
        out = runs / f"{solver}{steps}"
        common = ["--model", model, "--split", "val", "--solver", solver, "--steps", str(steps), "--out", str(out)]
        if not (out / "quality.json").exists():
            subprocess.run([sys.executable, str(HERE / "quality.py"), *common, "--clips", str(clips)], check=True, env=env)
        if not (out / "distribution.json").exists():
            subprocess.run([sys.executable, str(HERE / "distribution.py"), *common], check=True, env=env)


def _figures(out: Path) -> dict[str, Any]:
    q = json.loads((out / "quality.json").read_text())["results"]["|C|=4"]
    d = json.loads((out / "distribution.json").read_text())["results"].get("|C|=4", {}) \
        if (out / "distribution.json").exists() else {}
    fig: dict[str, Any] = {}
    for step in ("t+1", "t+3"):
        rows = q[step]["rows"]
        fig[step] = {
            "miou_obj_mean_of_k": round(rows["flow, mean of K"]["miou_obj"]["mean"], 2),
            "miou_obj_ensemble_8": round(rows["flow ensemble mean, k=8"]["miou_obj"]["mean"], 2),
            "miou_obj_regression": round(rows["regression"]["miou_obj"]["mean"], 2),
            "static_flow_over_regression": round(q[step]["latent_static_flow_over_regression"]["mean"], 2),
            "spread_ratio": round(d[step]["spread"]["ratio"]["mean"], 2) if step in d else None,
        }
    return fig


def summarise(runs: Path, write: Path | None) -> dict[str, Any]:
    """Print the figures of every stored setting and optionally write them as JSON."""
    table = {f"{s} {n}": _figures(runs / f"{s}{n}") for s, n in SETTINGS if (runs / f"{s}{n}" / "quality.json").exists()}
    for name, fig in table.items():
        print(name, json.dumps(fig))
    if write is not None:
        write.write_text(json.dumps({"split": "val", "context": "|C|=4", "settings": table}, indent=1) + "\n")
        print(f"wrote {write}")
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toyworld")
    p.add_argument("--runs", type=Path, required=True, help="directory for the per-setting runs")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--summarise-only", action="store_true")
    p.add_argument("--write", type=Path, default=HERE.parent / "docs" / "benchmarks" / "sampler_val.json")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not a.summarise_only:
        _run(a.model, a.runs, a.clips)
    summarise(a.runs, a.write)


if __name__ == "__main__":
    main()
