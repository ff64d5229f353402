"""Run by tests/test_ddp.py under torchrun: a few forecaster steps, then dump this rank's weights."""

import sys

import torch

from featureflow.forecast import Denoiser, FlowForecaster
from featureflow.training import distributed
from featureflow.training.forecaster import train_forecaster
from featureflow.utils import save_safetensors


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    info = distributed.setup()
    torch.manual_seed(100 + info.rank)  # different initial weights per rank: fit must sync them
    model = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2))
    data = torch.randn(16, 3, 2, 2, 4, generator=torch.Generator().manual_seed(0))
    result = train_forecaster(model, data, steps=4, batch_size=2, warmup=1, lr=1e-2, progress=False,
                              log_path=f"{out_dir}/log.jsonl", ema_decay=None)
    save_safetensors(model.state_dict(), f"{out_dir}/rank{info.rank}.safetensors",
                     metadata={"losses": ",".join(f"{x:.8f}" for x in result.losses)})
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
