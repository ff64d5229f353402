"""Run by tests/test_ddp.py, under torchrun or as hand-started ranks.

Modes:
  train OUT      a few forecaster steps (ranks start from different weights: fit must sync
                 them) and a deterministic linear fit with DDP and with FSDP2; dumps this
                 rank's weights.
  stall OUT      rank 1 stops itself (SIGSTOP) or dies (exit) at the second step;
                 rank 0 writes the error it gets.
"""

import os
import signal
import sys
import time

import torch

from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.training import distributed
from featureflow.training.forecaster import train_forecaster
from featureflow.training.loop import fit
from featureflow.utils import save_safetensors


def linear_data() -> torch.Tensor:
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    return torch.cat([x, x @ torch.tensor([[1.0], [-2.0], [0.5]])], 1)


def linear_loss(m, batch, g):
    return torch.nn.functional.mse_loss(m(batch[:, :3]), batch[:, 3:])


def linear_model() -> torch.nn.Module:
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.ModuleList([torch.nn.Linear(8, 1)])[0])


LINEAR_KW = dict(steps=6, lr=0.05, warmup=1, grad_accum=2, ema_decay=0.9, progress=False, find_unused_parameters=False)


def train(out_dir: str) -> None:
    info = distributed.setup()
    torch.manual_seed(100 + info.rank)  # different initial weights per rank: fit must sync them
    model = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2))
    data = torch.randn(16, 3, 2, 2, 4, generator=torch.Generator().manual_seed(0))
    result = train_forecaster(model, data, steps=4, batch_size=2, warmup=1, lr=1e-2, progress=False,
                              log_path=f"{out_dir}/log.jsonl", ema_decay=None, ckpt_dir=f"{out_dir}/ckpt")
    save_safetensors(model.state_dict(), f"{out_dir}/rank{info.rank}.safetensors",
                     metadata={"losses": ",".join(f"{x:.8f}" for x in result.losses)})
    for strategy in ("ddp", "fsdp"):
        lin = linear_model()
        r = fit(lin, linear_loss, linear_data(), batch_size=2, strategy=strategy, ckpt_dir=f"{out_dir}/{strategy}",
                **LINEAR_KW)
        state = distributed.full_state_dict(lin.state_dict())
        ema = distributed.full_state_dict(r.ema.state_dict())
        if info.is_main:
            save_safetensors({**state, **{f"ema.{k}": v for k, v in ema.items()}},
                             f"{out_dir}/linear_{strategy}.safetensors",
                             metadata={"losses": ",".join(f"{x:.8f}" for x in r.losses)})
        # killed after step 3 and resumed in a fresh model: the same weights (sharded optimizer state restored)
        fit(linear_model(), linear_loss, linear_data(), batch_size=2, strategy=strategy, stop_at=3,
            ckpt_dir=f"{out_dir}/{strategy}_resume", **LINEAR_KW)
        again = linear_model()
        fit(again, linear_loss, linear_data(), batch_size=2, strategy=strategy, resume=True,
            ckpt_dir=f"{out_dir}/{strategy}_resume", **LINEAR_KW)
        resumed = distributed.full_state_dict(again.state_dict())
        if info.is_main:
            save_safetensors(resumed, f"{out_dir}/linear_{strategy}_resumed.safetensors")
    distributed.teardown()


def stall(out_dir: str, how: str) -> None:
    info = distributed.setup()

    def loss_fn(m, batch, g):
        if info.rank == 1 and getattr(loss_fn, "calls", 0) == 1:
            with open(f"{out_dir}/stalled_at.txt", "w") as f:
                f.write(repr(time.time()))
            if how == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)
            else:
                os._exit(3)
        loss_fn.calls = getattr(loss_fn, "calls", 0) + 1
        return linear_loss(m, batch, g)

    try:
        fit(linear_model(), loss_fn, linear_data(), steps=5, batch_size=2, progress=False)
    except distributed.RankTimeoutError as err:
        with open(f"{out_dir}/error{info.rank}.txt", "w") as f:
            f.write(f"{type(err).__name__}: {err}")
        with open(f"{out_dir}/error{info.rank}_at.txt", "w") as f:
            f.write(repr(time.time()))
        os._exit(0)  # the peer is gone: no clean teardown possible


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "train":
        train(sys.argv[2])
    else:
        stall(sys.argv[2], sys.argv[3])
