"""Train the bundled ``toyworld`` model end to end and install it into the package.

    python examples/train_toyworld_bundle.py                 # ~45-60 min on a 2-core CPU
    python examples/train_toyworld_bundle.py --no-install    # train only

Runs every stage of ``configs/toyworld.json`` (ToyEncoder → feature cache → FeatureVAE →
latents → FlowForecaster + RegressionForecaster → probe heads for segmentation, depth,
normals and RGB), resumable by running it again, then copies the saved model (bf16
weights) to ``src/featureflow/assets/models/toyworld/`` so that
``WorldModel.from_pretrained("toyworld")`` works offline after ``pip install``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _bundle import install_bundle

from featureflow.training import load_config, run_pipeline

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "toyworld.json"))
    parser.add_argument("--workdir", default=None, help="override the config's workdir")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-install", action="store_true", help="do not copy the model into the package")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.workdir:
        cfg["workdir"] = args.workdir
        cfg["output"] = str(Path(args.workdir) / "model")
    start = time.time()
    out = run_pipeline(cfg, progress=not args.no_progress)
    print(f"trained in {(time.time() - start) / 60:.1f} min; model at {out}")
    if not args.no_install and out is not None:
        install_bundle(out, "toyworld")


if __name__ == "__main__":
    main()
