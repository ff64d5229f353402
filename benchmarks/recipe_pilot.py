"""Short training pilots that choose the forecaster recipe, scored on the ToyWorld **val** split.

Each pilot trains a flow or regression forecaster for a few hundred steps on fresh ToyWorld
clips, encoded by a *fixed* encoder and compressor (those of an existing model, so only
the forecaster differs), puts it into a copy of that model and runs
``benchmarks/quality.py --split val`` on it. The test split is never used here: the
recipe is chosen on val, and the test figures on docs/benchmarks.md are reported once.

Run (each variant trains the two forecasters; a variant may reuse another's regression)::

    python benchmarks/recipe_pilot.py train flow runs/pilot/A
    python benchmarks/recipe_pilot.py train regression runs/pilot/A
    python benchmarks/recipe_pilot.py train flow runs/pilot/C --kw '{"time_sampling": "uniform"}'
    python benchmarks/recipe_pilot.py score runs/pilot/A            # assemble + quality on val
    python benchmarks/recipe_pilot.py summary runs/pilot/A runs/pilot/C --write docs/benchmarks/recipe_pilots.json

``summary`` prints (and with ``--write`` stores) the figures the choice was made on:
object-class mIoU and the latent error on moving patches at |C| ∈ {1, 4}, t+1 and t+3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROWS = {"flow, mean of K": "flow_mean_of_k", "flow ensemble mean, k=8": "flow_ensemble_8",
        "regression": "regression", "copy last frame": "copy_last",
        "oracle (probe on true future features)": "oracle"}


def train(args: argparse.Namespace) -> None:
    """Train one forecaster of a pilot with the base model's encoder and compressor."""
    from featureflow.data import ToyWorldClips
    from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster
    from featureflow.training import train_forecaster
    from featureflow.training.forecaster import frames_to_latents
    from featureflow.world import WorldModel

    torch.set_num_threads(1)
    wm = WorldModel.from_pretrained(args.base)
    base = wm.forecaster if args.kind == "flow" else wm.baselines["regression"]
    den_cfg = dict(base.denoiser.config)
    torch.manual_seed(args.seed)
    den = Denoiser(**den_cfg)
    defaults: dict[str, Any] = {"max_stride": 1, "residual": True,
                                "residual_scale": wm.forecaster.config.get("residual_scale")}
    if args.kind == "flow":
        defaults["time_sampling"] = "logit_normal"
    kw = {**defaults, **json.loads(args.kw)}
    model = (FlowForecaster if args.kind == "flow" else RegressionForecaster)(den, **kw)
    data = wm.metadata.get("data", {})
    clips = ToyWorldClips("train", length=8, stride=int(data.get("stride", 3)),
                          resolution=int(data.get("resolution", 64)), warmup=int(data.get("warmup", 0)),
                          modalities=("rgb",))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"batch_size": 8, "lr": 5e-4, "warmup": 50, "ema_decay": 0.999, "ckpt_every": 100,
                **json.loads(args.train)}
    start = time.time()
    result = train_forecaster(model, clips, steps=args.steps, encode=frames_to_latents(wm.encoder, wm.compressor),
                              log_path=out / f"{args.kind}.jsonl", ckpt_dir=out / f"checkpoints_{args.kind}",
                              resume=True, progress=not args.no_progress, seed=args.seed, **settings)
    if result.ema is not None:
        result.ema.copy_to(model)
    model.eval()
    from featureflow.utils.component_io import save_component

    save_component(model, out / args.kind, "forecaster")
    (out / f"{args.kind}_run.json").write_text(json.dumps(
        {"config": kw, "train": settings, "steps": args.steps, "minutes": (time.time() - start) / 60,
         "final_loss_mean_last_50": sum(result.losses[-50:]) / max(1, len(result.losses[-50:]))}, indent=2))
    print(f"{args.kind}: {args.steps} steps in {(time.time() - start) / 60:.1f} min -> {out / args.kind}")


def score(args: argparse.Namespace) -> None:
    """Put the pilot's forecasters into a copy of the base model and run quality.py on val."""
    from featureflow.utils.component_io import load_component
    from featureflow.world import WorldModel

    wm = WorldModel.from_pretrained(args.base)
    run = Path(args.run)
    for kind in ("flow", "regression"):
        if (run / kind).is_dir():
            fc = load_component(run / kind, "forecaster").eval()
            if kind == "flow":
                wm.forecaster = fc
            else:
                wm.baselines["regression"] = fc
    wm.save_pretrained(run / "model")
    cmd = [sys.executable, str(HERE / "quality.py"), "--model", str(run / "model"), "--split", "val",
           "--clips", str(args.clips), "--out", str(run / "eval")]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _figures(path: Path) -> dict[str, Any]:
    res = json.loads(path.read_text())["results"]
    out: dict[str, Any] = {}
    for ckey in ("|C|=1", "|C|=4"):
        for step in ("t+1", "t+3"):
            cell = res[ckey][step]
            lm = cell["latent_mse"]
            out[f"{ckey} {step}"] = {
                "miou_obj": {ROWS[r]: round(v["miou_obj"]["mean"], 2) for r, v in cell["rows"].items() if r in ROWS},
                "moving_latent_mse": {"flow_per_sample": round(lm["flow, per sample"]["moving"]["mean"], 3),
                                      "flow_ensemble_mean": round(lm["flow ensemble mean"]["moving"]["mean"], 3),
                                      "regression": round(lm["regression"]["moving"]["mean"], 3)},
                "static_flow_over_regression": round(cell["latent_static_flow_over_regression"]["mean"], 2),
            }
    return out


def summary(args: argparse.Namespace) -> None:
    """Print (and optionally store) the figures of each scored pilot."""
    table: dict[str, Any] = {}
    for run in map(Path, args.runs):
        meta = {k: json.loads((run / f"{k}_run.json").read_text()) for k in ("flow", "regression")
                if (run / f"{k}_run.json").exists()}
        table[run.name] = {"recipe": {k: v["config"] for k, v in meta.items()},
                           "steps": {k: v["steps"] for k, v in meta.items()},
                           "val": _figures(run / "eval" / "quality.json")}
        shown = {k: {n: v for n, v in c.items() if n != "residual_scale"} for k, c in table[run.name]["recipe"].items()}
        print(f"== {run.name}: {json.dumps(shown)}")
        for cell, f in table[run.name]["val"].items():
            m, e = f["miou_obj"], f["moving_latent_mse"]
            print(f"  {cell}: mIoU obj flow(K) {m.get('flow_mean_of_k')} ens8 {m.get('flow_ensemble_8')} "
                  f"reg {m.get('regression')} copy {m.get('copy_last')} oracle {m.get('oracle')} | moving latent MSE "
                  f"flow {e['flow_per_sample']} ens {e['flow_ensemble_mean']} reg {e['regression']}")
    if args.write:
        Path(args.write).write_text(json.dumps({"split": "val", "runs": table}, indent=1) + "\n")
        print(f"wrote {args.write}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one forecaster of a pilot")
    t.add_argument("kind", choices=("flow", "regression"))
    t.add_argument("out", help="the pilot's directory")
    t.add_argument("--base", default="toyworld", help="model whose encoder/compressor are kept fixed")
    t.add_argument("--steps", type=int, default=400)
    t.add_argument("--kw", default="{}", help="forecaster keyword arguments (JSON)")
    t.add_argument("--train", default="{}", help="training settings (JSON) over the defaults")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=train)
    s = sub.add_parser("score", help="assemble the pilot's model and run quality.py on val")
    s.add_argument("run")
    s.add_argument("--base", default="toyworld")
    s.add_argument("--clips", type=int, default=32)
    s.set_defaults(func=score)
    m = sub.add_parser("summary", help="print / store the figures of scored pilots")
    m.add_argument("runs", nargs="+")
    m.add_argument("--write", default=None)
    m.set_defaults(func=summary)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.func(args)


if __name__ == "__main__":
    main()
