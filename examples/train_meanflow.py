"""Fine-tune a one/two-step `MeanFlowForecaster` from a trained world model's flow forecaster.

The flow forecaster of ``--model`` is the initialisation (``MeanFlowForecaster.from_flow``)
and the teacher: its velocity is MeanFlow's ``v`` (``--no-distill``: ``data - noise``);
training runs through `featureflow.training.fit` on the latent clips the model was
trained on, with a wall-clock budget: a short timing probe sets the number of optimizer
steps so that the run ends within ``--minutes``, and the run stops at the next checkpoint
once the budget is spent (the cosine schedule then ends early). The run checkpoints every
``--ckpt-every`` steps and resumes (``--resume``) exactly; metrics go to
``OUT/train_log.jsonl``. It writes two component directories:

* ``OUT/forecaster/`` the EMA weights (``forecaster.json`` + ``forecaster.safetensors``),
* ``OUT/forecaster_raw/`` the last optimizer step's weights,

loadable with ``featureflow.utils.component_io.load_component(dir, "forecaster")``.

Run::

    OMP_NUM_THREADS=1 python examples/train_meanflow.py --model /work/runs/tw3/model \\
        --latents /work/runs/tw3/latents.safetensors --out /work/runs/meanflow --minutes 25
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch


def main(argv: list[str] | None = None) -> int:
    from featureflow.forecast import MeanFlowForecaster
    from featureflow.training import fit, save_forecaster
    from featureflow.training.fingerprint import data_fingerprint, model_fingerprint
    from featureflow.training.forecaster import forecaster_config
    from featureflow.utils import load_safetensors
    from featureflow.utils.component_io import load_component
    from featureflow.world import WorldModel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="WorldModel (directory, bundled name or Hub id) with a FlowForecaster, "
                    "or a directory with a saved FlowForecaster component (forecaster.json or a stage's component.json)")
    ap.add_argument("--latents", required=True, help="safetensors file with 'latents' (N, T, h, w, C)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget of the optimisation")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: from the budget)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--flow-ratio", type=float, default=0.25, help="fraction of h = 0 targets")
    ap.add_argument("--grid-ratio", type=float, default=0.0,
                    help="fraction of the h > 0 targets on the 1-/2-step sampling jumps")
    ap.add_argument("--time-sampling", default="uniform", choices=("uniform", "logit_normal"))
    ap.add_argument("--norm-p", type=float, default=1.0)
    ap.add_argument("--no-distill", action="store_true", help="v = data - noise instead of the teacher's velocity")
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    saved = [n for n in ("forecaster", "component") if (Path(args.model) / f"{n}.json").is_file()]
    if saved:  # a saved forecaster component (save_forecaster, or a pipeline stage's component.json)
        flow = load_component(args.model, saved[0])
    else:
        flow = WorldModel.from_pretrained(args.model).forecaster
    if type(flow).__name__ != "FlowForecaster":
        raise ValueError(f"{args.model}: expected a FlowForecaster to fine-tune from, got {type(flow).__name__}")
    tensors = load_safetensors(args.latents)
    if "latents" not in tensors:
        raise ValueError(f"{args.latents} has no 'latents' tensor (expected (N, T, h, w, C)); found {sorted(tensors)}")
    latents = tensors["latents"].float()
    torch.manual_seed(args.seed)
    model = MeanFlowForecaster.from_flow(
        flow, distill=not args.no_distill, flow_ratio=args.flow_ratio, time_sampling=args.time_sampling,
        norm_p=args.norm_p, grid_ratio=args.grid_ratio,
    )
    settings = dict(batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, ema_decay=args.ema_decay,
                    ckpt_every=args.ckpt_every, seed=args.seed)
    plan_path = out / "plan.json"
    steps = args.steps
    if steps is None and args.resume and plan_path.is_file():
        steps = int(json.loads(plan_path.read_text())["steps"])  # a resumed run keeps its schedule
    probe_s = None
    if steps is None:  # time a few steps on a throw-away copy and fit the schedule to the budget
        probe = MeanFlowForecaster.from_flow(flow, distill=not args.no_distill, flow_ratio=args.flow_ratio,
                                             time_sampling=args.time_sampling, norm_p=args.norm_p,
                                             grid_ratio=args.grid_ratio)
        opt = torch.optim.AdamW(probe.parameters(), lr=args.lr)
        g = torch.Generator().manual_seed(args.seed)
        times = []
        for i in range(4):
            batch = latents[torch.randint(0, latents.shape[0], (args.batch_size,), generator=g)]
            t0 = time.perf_counter()
            probe.loss(batch, generator=g).backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t0)
        probe_s = sorted(times[1:])[1]  # the median of the warm steps
        steps = max(1, int(args.minutes * 60 * 0.92 / probe_s))
        del probe, opt
    plan = {"steps": steps, "probe_seconds_per_step": probe_s, "minutes": args.minutes, "model": str(args.model),
            "latents": str(args.latents), **settings, "flow_ratio": args.flow_ratio, "grid_ratio": args.grid_ratio,
            "time_sampling": args.time_sampling, "norm_p": args.norm_p, "distill": not args.no_distill}
    plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    print(f"meanflow: {steps} optimizer steps (timing probe {probe_s} s/step), batch {args.batch_size}", flush=True)

    def loss_fn(m: Any, batch: torch.Tensor, generator: torch.Generator) -> Any:
        terms = m.loss_terms(batch, generator=generator)
        return terms["loss"], {"mse": float(terms["mse"]), "h_mean": float(terms["h_mean"])}

    fingerprint = {"model": model_fingerprint(model), "data": data_fingerprint(latents),
                   "teacher": {"model": str(args.model), "distill": not args.no_distill}}
    # chunks of ckpt_every steps, each resuming the last (exact): the budget is a hard limit
    # even when the machine gets busier than the timing probe saw; the run stops early then
    t0 = time.perf_counter()
    done, resume = 0, args.resume
    while True:
        stop = min(steps, done + args.ckpt_every)
        result = fit(model, loss_fn, latents, forecaster_config(steps=steps, **settings),
                     log_path=out / "train_log.jsonl", ckpt_dir=out / "checkpoints", resume=resume,
                     progress=not args.no_progress, desc="meanflow", fingerprint=fingerprint, stop_at=stop)
        done, resume = result.step, True
        if done >= steps:
            break
        if time.perf_counter() - t0 > args.minutes * 60:
            print(f"meanflow: the {args.minutes} min budget is spent at step {done} of {steps}; stopping", flush=True)
            break
    seconds = time.perf_counter() - t0
    save_forecaster(model, out / "forecaster_raw")
    if result.ema is not None:
        result.ema.copy_to(model)
    save_forecaster(model, out / "forecaster")
    summary = {"steps": result.step, "planned_steps": steps, "seconds_this_call": round(seconds, 1),
               "final_loss": result.losses[-1],
               "forecaster": str(out / "forecaster"), "forecaster_raw": str(out / "forecaster_raw")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"meanflow: trained {result.step} steps in {seconds:.0f} s; wrote {out / 'forecaster'} (EMA) and "
          f"{out / 'forecaster_raw'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
