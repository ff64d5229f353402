"""Data-parallel training under torchrun (gloo, 2 processes): ranks stay identical."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from featureflow.utils import load_safetensors

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_safetensors(tmp_path / "rank0.safetensors")
    b = load_safetensors(tmp_path / "rank1.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # training moved the weights away from the (synchronised) initialisation
    torch.manual_seed(100)
    from featureflow.forecast import Denoiser, FlowForecaster

    init = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)).state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)
    # only rank 0 logs: one record per step
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    with safe_open(str(tmp_path / "rank0.safetensors"), "pt") as f:
        losses0 = f.metadata()["losses"]
    with safe_open(str(tmp_path / "rank1.safetensors"), "pt") as f:
        losses1 = f.metadata()["losses"]
    assert losses0 == losses1  # the logged loss is the mean over ranks
