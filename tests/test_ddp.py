"""Data-parallel training on PyTorch's engine (gloo, 2 processes): ranks stay identical, a 2-process
run equals a 1-process run where the maths is the same, the pipeline's stages run once, and a dead
or stopped rank ends the others with a clear error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors import safe_open

from featureflow.utils import load_safetensors

TESTS = Path(__file__).parent
WORKER = TESTS / "ddp_worker.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed/gloo unavailable"),
]


def _pythonpath() -> str:
    """The tests folder (for the worker's imports) before whatever PYTHONPATH the test run has."""
    return os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])


def _torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    pytest.importorskip("torch.distributed.run", reason="torchrun is unavailable")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _pythonpath(), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    # a session of its own: on a timeout the launcher and both workers are killed together
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as launcher:
        try:
            out, err = launcher.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
            raise
    assert launcher.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(cmd, launcher.returncode, out, err)


def _losses(path: Path) -> list[float]:
    with safe_open(str(path), "pt") as f:
        return [float(x) for x in f.metadata()["losses"].split(",")]


def test_two_gloo_ranks_train_like_one_process(tmp_path):
    _torchrun(str(WORKER), "train", str(tmp_path))
    a = load_safetensors(tmp_path / "rank0.safetensors")
    b = load_safetensors(tmp_path / "rank1.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # training moved the weights away from rank 0's initialisation, and the checkpoint holds them
    torch.manual_seed(100)
    from featureflow.forecast import Denoiser, FlowForecaster
    from featureflow.training.checkpoint import load_checkpoint

    init = FlowForecaster(Denoiser(latent_dim=4, width=16, depth=1, heads=2, max_context=2)).state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)
    ck = load_checkpoint(tmp_path / "ckpt")
    assert ck.step == 4 and all(torch.equal(ck.model[k], a[k]) for k in a)
    assert {"loss_generator", "loss_generator.1"} <= set(ck.rng)
    # only rank 0 logs: one record per step; the logged loss is the mean over ranks
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert _losses(tmp_path / "rank0.safetensors") == _losses(tmp_path / "rank1.safetensors")

    # 1 process with the global batch (4) == 2 processes with 2 each, for DDP and for FSDP2
    sys.path.insert(0, str(TESTS))
    try:
        import ddp_worker
    finally:
        sys.path.remove(str(TESTS))
    from featureflow.training.loop import fit

    lin = ddp_worker.linear_model()
    ref = fit(lin, ddp_worker.linear_loss, ddp_worker.linear_data(), batch_size=4, **ddp_worker.LINEAR_KW)
    for strategy in ("ddp", "fsdp"):
        got = load_safetensors(tmp_path / f"linear_{strategy}.safetensors")
        for k, v in lin.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=f"{strategy}: {k}")
            torch.testing.assert_close(got[f"ema.{k}"], ref.ema.state_dict()[k], rtol=1e-5, atol=1e-6)
        assert _losses(tmp_path / f"linear_{strategy}.safetensors") == pytest.approx(ref.losses, rel=1e-5)
        assert load_checkpoint(tmp_path / strategy).step == 6
        resumed = load_safetensors(tmp_path / f"linear_{strategy}_resumed.safetensors")
        assert all(torch.equal(resumed[k], got[k]) for k in resumed), f"{strategy}: resume is not exact"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["stop", "die"])
def test_a_stopped_or_dead_rank_ends_the_other_with_a_clear_error(tmp_path, how):
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _pythonpath(), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "FEATUREFLOW_DIST_TIMEOUT": "3"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), "stall", str(tmp_path), how], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    try:
        procs[0].wait(timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
    text = (tmp_path / "error0.txt").read_text() if (tmp_path / "error0.txt").is_file() else procs[0].stderr.read()[-2000:]
    assert text.startswith("RankTimeoutError: rank 0:"), text
    assert "another rank did not answer" in text and "FEATUREFLOW_DIST_TIMEOUT" in text
    # the configured 3 s, not the default 600 s (loose bound: the machine may be busy)
    waited = float((tmp_path / "error0_at.txt").read_text()) - float((tmp_path / "stalled_at.txt").read_text())
    assert 0 < waited < 60, waited


def test_pipeline_under_torchrun_runs_each_stage_once(tmp_path):
    from test_pipeline import tiny_config
    from featureflow.world import WorldModel

    cfg = tiny_config(tmp_path)
    cfg["forecaster"]["train"]["batch_size"] = 1  # per rank: a global batch of 2
    cfg["regression"]["train"].update(batch_size=1, strategy="fsdp")  # FSDP2 for one stage
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = _torchrun("-m", "featureflow.cli", "train", "--config", str(tmp_path / "cfg.json"), "--no-progress")
    assert proc.stdout.count("model written to") == 1  # rank 0 reports
    work = tmp_path / "work"
    wm = WorldModel.from_pretrained(cfg["output"])
    parts = {"encoder": wm.encoder, "compressor": wm.compressor, "flow": wm.forecaster,
             "regression": wm.baselines["regression"], **{f"probes/{k}": v for k, v in wm.probes.items()}}
    for name, module in parts.items():
        cached = load_safetensors(work / name / "component.safetensors")
        for k, v in module.state_dict().items():
            assert torch.equal(v, cached[k]), f"{name}.{k} differs from rank 0's cached stage"
    for log in ("encoder", "compressor", "flow", "regression"):
        steps = [json.loads(x)["step"] for x in (work / "logs" / f"{log}.jsonl").read_text().splitlines()]
        assert len(steps) == len(set(steps)), f"{log}.jsonl has records written twice"
    events = [json.loads(x) for x in (work / "logs" / "pipeline.jsonl").read_text().splitlines()]
    assert sum(e.get("event") == "start" and e["stage"] == "encoder" for e in events) == 1
