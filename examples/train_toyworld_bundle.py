"""Train the bundled ``toyworld`` model end to end and install it into the package.

    python examples/train_toyworld_bundle.py                 # ~86 min on a 2-core CPU
    python examples/train_toyworld_bundle.py --no-install    # train only

Runs every stage of ``configs/toyworld.json``: ToyEncoder → feature cache → FeatureVAE →
latents, then the FlowForecaster and the RegressionForecaster *at the same time* (two
processes of one thread each, ``featureflow train --only flow|regression``; each trains
on fresh procedural clips, every frame of a clip a target), then the probe heads for
segmentation, depth, normals and RGB, and saves the model. While the probe heads train,
``examples/train_meanflow.py`` fine-tunes the one/two-step ``MeanFlowForecaster`` from the
flow forecaster in a second process (``--meanflow-minutes``, 0 to skip); it joins the model
as the ``"meanflow"`` baseline (``forecast(..., baseline="meanflow", steps=1)``), its sampling
noise scale calibrated so that its samples spread like the flow's on val clips
(``logs/meanflow_noise_scale.json``). Every stage
checkpoints: running the script again resumes where it stopped (a finished MeanFlow run is
reused as it is). The saved model (bf16 weights) is
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
from typing import Any

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


#: The MeanFlow fine-tune of the bundle (``examples/train_meanflow.py`` options), chosen on
#: the val split with ``benchmarks/few_step.py`` (``--grid-ratio`` 0.75 over 0.5 in two
#: 18-minute runs: docs/benchmarks/few_step_val_meanflow_choice.json); ``--meanflow-weights``
#: picks the EMA or the last step's weights (the val choice: the last step's).
MEANFLOW_ARGS = {"--batch-size": 4, "--lr": 3e-4, "--warmup": 20, "--ema-decay": 0.995, "--flow-ratio": 0.25,
                 "--grid-ratio": 0.75, "--time-sampling": "uniform", "--norm-p": 1.0, "--ckpt-every": 25}


def start_meanflow(work: Path, minutes: float, progress: bool) -> subprocess.Popen | None:
    """Start the MeanFlow fine-tune of ``work``'s flow forecaster (one thread) unless a
    finished run is in ``work/meanflow``; returns the process, or None when there is nothing to do."""
    out = work / "meanflow"
    if (out / "forecaster_raw" / "forecaster.json").is_file():
        return None
    cmd = [sys.executable, str(ROOT / "examples" / "train_meanflow.py"), "--model", str(work / "flow"),
           "--latents", str(work / "latents.safetensors"), "--out", str(out), "--minutes", str(minutes),
           "--resume", *(str(x) for kv in MEANFLOW_ARGS.items() for x in kv)]
    if not progress:
        cmd.append("--no-progress")
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})


#: ToyWorld val clips on which the MeanFlow baseline's sampling noise is calibrated
CALIBRATION_CLIPS = 64


@torch.no_grad()
def calibrate_meanflow(wm: Any, clips: int = CALIBRATION_CLIPS, progress: bool = False) -> dict[str, Any]:
    """Set the ``"meanflow"`` baseline's noise scale so that its samples (1 and 2 NFE) spread
    like the flow forecaster's (Euler 9) on the first ``clips`` ToyWorld **val** clips
    (`featureflow.forecast.calibrate_noise_scale`); returns its report."""
    from featureflow.data import ToyWorld
    from featureflow.forecast import calibrate_noise_scale

    data = wm.metadata.get("data", {})
    world = ToyWorld(resolution=int(data.get("resolution", 64)))
    seeds = world.split_seeds("val")
    stride, warmup = int(data.get("stride", 1)), int(data.get("warmup", 0))
    frames = torch.stack([torch.as_tensor(world.clip(seeds[i], wm.max_context, stride=stride, start=warmup).rgb)
                          for i in range(min(clips, len(seeds)))])
    report = calibrate_noise_scale(wm.baselines["meanflow"], wm.forecaster, wm.encode(frames), progress=progress)
    print(f"meanflow: sampling noise scale {report['noise_scale']:g} (spread matched to the flow's on "
          f"{frames.shape[0]} val clips)", flush=True)
    return report


def add_meanflow(model_dir: Path, work: Path, weights: str, store_bf16: bool, progress: bool = False) -> None:
    """Put the fine-tuned MeanFlow forecaster into the saved model as its ``"meanflow"``
    baseline, its noise scale calibrated on val clips (report in ``work/logs``)."""
    from featureflow.utils.component_io import load_component
    from featureflow.utils.io import save_json
    from featureflow.world import WorldModel

    sub = {"raw": "forecaster_raw", "ema": "forecaster"}[weights]
    wm = WorldModel.from_pretrained(model_dir)
    wm.baselines["meanflow"] = load_component(work / "meanflow" / sub, "forecaster")
    report = calibrate_meanflow(wm, progress=progress)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    save_json(report, work / "logs" / "meanflow_noise_scale.json")
    wm.save_pretrained(model_dir, dtype=torch.bfloat16 if store_bf16 else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toyworld.json"))
    parser.add_argument("--workdir", default=None, help="override the config's workdir")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the sequential stages")
    parser.add_argument("--sequential", action="store_true", help="train the two forecasters one after the other")
    parser.add_argument("--name", default="toyworld", help="bundle name to install as")
    parser.add_argument("--no-install", action="store_true", help="do not copy the model into the package")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--meanflow-minutes", type=float, default=18.0,
                        help="budget of the MeanFlow fine-tune, run beside the probe heads (0: no MeanFlow baseline)")
    parser.add_argument("--meanflow-weights", choices=("raw", "ema"), default="raw",
                        help="which MeanFlow weights to ship: the last step's (raw) or the EMA")
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
    work = Path(cfg.get("workdir", "runs/pipeline"))
    meanflow = start_meanflow(work, args.meanflow_minutes, progress) if args.meanflow_minutes > 0 else None
    out = run_pipeline(cfg, progress=progress)
    if meanflow is not None and meanflow.wait():
        raise SystemExit(f"the MeanFlow fine-tune failed (exit code {meanflow.returncode}); run the script again "
                         "to resume")
    if out is not None and args.meanflow_minutes > 0:
        add_meanflow(out, work, args.meanflow_weights, bool(cfg.get("store_bf16", False)), progress)
    print(f"trained in {(time.time() - start) / 60:.1f} min; model at {out}")
    if out is None:
        return
    # ship the training logs and their loss curves with the model
    (out / "logs").mkdir(exist_ok=True)
    if args.meanflow_minutes > 0:
        shutil.copy(work / "meanflow" / "train_log.jsonl", work / "logs" / "meanflow.jsonl")
    logs = sorted((work / "logs").glob("*.jsonl"))
    for log in logs + sorted((work / "logs").glob("*.json")):
        shutil.copy(log, out / "logs" / log.name)
    plot_training_curves([p for p in logs if p.stem != "pipeline"], out / "training_curves.png",
                         title=f"{args.name}: training loss per stage")
    if not args.no_install:
        install_bundle(out, args.name)


if __name__ == "__main__":
    main()
