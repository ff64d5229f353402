"""Train the bundled ``toyworld`` model end to end and install it into the package.

    python examples/train_toyworld_bundle.py                 # ~80 min on a 2-core CPU
    python examples/train_toyworld_bundle.py --no-install    # train only

Runs every stage of ``configs/toyworld.json``: ToyEncoder → feature cache → FeatureVAE →
latents, then the FlowForecaster and the RegressionForecaster *at the same time* (two
processes of one thread each, ``featureflow train --only flow|regression``; each trains
on fresh procedural clips, every frame of a clip a target), then the probe heads for
segmentation, depth, normals and RGB, and saves the model. Every stage checkpoints:
running the script again resumes where it stopped. The saved model (bf16 weights) is
copied to ``src/featureflow/assets/models/toyworld/`` with its training logs
(``logs/*.jsonl``) and loss curves (``training_curves.png``), so that
``WorldModel.from_pretrained("toyworld")`` works offline after ``pip install``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from _bundle import install_bundle

from featureflow.training import load_config, plot_training_curves, run_pipeline

ROOT = Path(__file__).resolve().parent.parent


def train_forecasters(config: str, workdir: str | None, parallel: bool, progress: bool) -> None:
    """Train the flow and regression forecasters, as two one-thread processes when ``parallel``."""
    base = [sys.executable, "-m", "featureflow.cli", "train", "--config", config]
    if workdir:
        base += ["--workdir", workdir]
    if not progress:
        base.append("--no-progress")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = [base + ["--only", kind] for kind in ("flow", "regression")]
    if not parallel:
        for cmd in cmds:
            subprocess.run(cmd, check=True, env=env)
        return
    procs = [subprocess.Popen(cmd, env=env) for cmd in cmds]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"forecaster training failed (exit codes {codes}); run the script again to resume")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toyworld.json"))
    parser.add_argument("--workdir", default=None, help="override the config's workdir")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the sequential stages")
    parser.add_argument("--sequential", action="store_true", help="train the two forecasters one after the other")
    parser.add_argument("--name", default="toyworld", help="bundle name to install as")
    parser.add_argument("--no-install", action="store_true", help="do not copy the model into the package")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.workdir:
        cfg["workdir"] = args.workdir
        cfg["output"] = str(Path(args.workdir) / "model")
    start = time.time()
    progress = not args.no_progress
    run_pipeline(cfg, progress=progress, until="latents")
    train_forecasters(args.config, args.workdir, not args.sequential, progress)
    out = run_pipeline(cfg, progress=progress)
    print(f"trained in {(time.time() - start) / 60:.1f} min; model at {out}")
    if out is None:
        return
    # ship the training logs and their loss curves with the model
    work = Path(cfg.get("workdir", "runs/pipeline"))
    (out / "logs").mkdir(exist_ok=True)
    logs = sorted((work / "logs").glob("*.jsonl"))
    for log in logs:
        shutil.copy(log, out / "logs" / log.name)
    plot_training_curves([p for p in logs if p.stem != "pipeline"], out / "training_curves.png",
                         title=f"{args.name}: training loss per stage")
    if not args.no_install:
        install_bundle(out, args.name)


if __name__ == "__main__":
    main()
