"""Train the bundled ``toyworld-agent`` model (action-conditioned) and install it into the package.

    python examples/train_toyworld_agent.py                 # ~15-25 min on a 2-core CPU
    python examples/train_toyworld_agent.py --no-install    # train only (to --out)

ToyWorld with an agent (:class:`featureflow.rl.AgentToyWorld`) at 24 px; each action is
held for 3 simulation steps (0.3 s: a full command moves the agent 0.3 m). The model is
:func:`featureflow.rl.pixel_world_model`: pixel-patch features (4 px patches, exactly
invertible, so the ``"rgb"`` probe needs no training), a standardised Identity
compressor and a residual flow forecaster whose causal denoiser takes the action as
conditioning. After training it prints how far one-step forecasts move the agent under
four commands against the simulator (:func:`featureflow.rl.action_response`), then
copies the model to ``src/featureflow/assets/models/toyworld-agent/`` so that
``WorldModel.from_pretrained("toyworld-agent")`` works offline.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _bundle import install_bundle

from featureflow.rl import UNIT_COMMANDS, AgentToyWorld, action_response, resting_start, train_action_world_model
from featureflow.viz import make_grid, save_png
from featureflow.world import WorldModel

ROOT = Path(__file__).resolve().parent.parent


def action_figure(wm: WorldModel, world: AgentToyWorld, seeds: list[int], frame_skip: int, path: Path) -> None:
    """PNG: per scene, the last context frame, then for +x, −x, +y, −y the true next frame
    beside two sampled forecasts (scenes held out from training)."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for seed in seeds:
        clip, state = resting_start(world, seed, wm.max_context, frame_skip)
        fc = wm.forecast(clip.rgb[None], 1, 8, steps=2, generator=g, actions=UNIT_COMMANDS.repeat_interleave(2, 0).view(1, 8, 1, 2))
        pred = fc.decode("rgb")[0, :, 0]
        row = [clip.rgb[-1]]
        for i, c in enumerate(UNIT_COMMANDS):
            row += [world.render(world.act(state, c, frame_skip)).rgb, pred[2 * i], pred[2 * i + 1]]
        rows.append(row)
    save_png(make_grid(rows, pad=2, scale=4), path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "toyworld-agent")
    p.add_argument("--resolution", type=int, default=24)
    p.add_argument("--frame-skip", type=int, default=3)
    p.add_argument("--clips", type=int, default=1500)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 is faster on a busy machine)")
    p.add_argument("--figure", type=Path, default=ROOT / "docs" / "assets" / "rl_action_response.png",
                   help="where to write the action-response picture")
    p.add_argument("--no-install", action="store_true", help="do not copy the model into the package")
    p.add_argument("--eval-only", action="store_true", help="skip training: evaluate (and install) OUT/model")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    world = AgentToyWorld(args.resolution)
    if not args.eval_only:
        start = time.time()
        args.out.mkdir(parents=True, exist_ok=True)
        wm = train_action_world_model(
            world, num_clips=args.clips, train_steps=args.steps, frame_skip=args.frame_skip, width=args.width,
            depth=args.depth, heads=4, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            log_path=args.out / "train.jsonl", progress=not args.no_progress,
        )
        print(f"trained in {(time.time() - start) / 60:.1f} min")
        wm.save_pretrained(args.out / "model")
    wm = WorldModel.from_pretrained(args.out / "model")
    resp = action_response(wm, world, range(2_000_000, 2_000_032), frame_skip=args.frame_skip)
    print(resp.summary())
    action_figure(wm, world, [2_000_000 + i for i in range(4)], args.frame_skip, args.figure)
    print(f"wrote {args.figure}")
    if not args.no_install:
        install_bundle(args.out / "model", "toyworld-agent")


if __name__ == "__main__":
    main()
