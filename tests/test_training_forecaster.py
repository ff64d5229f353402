"""Training loop: accumulation, schedule, checkpoints without pickle, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster
from featureflow.training.checkpoint import load_checkpoint
from featureflow.training.data import BatchStream
from featureflow.training.forecaster import train_forecaster
from featureflow.training.loop import fit
from featureflow.training.schedule import cosine_with_warmup

C = 3


def make_flow(seed: int = 0) -> FlowForecaster:
    torch.manual_seed(seed)
    return FlowForecaster(Denoiser(latent_dim=C, width=16, depth=1, heads=2, max_context=2), history_dropout=0.2)


def clips(n: int = 10) -> torch.Tensor:
    return torch.randn(n, 4, 2, 2, C, generator=torch.Generator().manual_seed(123))


def linear_problem():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    data = torch.cat([x, y], 1)

    def loss_fn(m, batch, g):
        return F.mse_loss(m(batch[:, :3]), batch[:, 3:])

    return data, loss_fn


def test_grad_accumulation_equals_big_batch():
    data, loss_fn = linear_problem()
    models = []
    for bs, accum in ((8, 1), (4, 2), (2, 4)):
        torch.manual_seed(0)
        m = torch.nn.Linear(3, 1)
        fit(m, loss_fn, data, steps=4, batch_size=bs, grad_accum=accum, lr=0.1, warmup=1, ema_decay=None,
            clip_grad=None, progress=False)
        models.append(m)
    for m in models[1:]:
        torch.testing.assert_close(m.weight, models[0].weight, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(m.bias, models[0].bias, rtol=1e-6, atol=1e-6)


def test_schedule_counts_optimizer_steps(tmp_path: Path):
    data, loss_fn = linear_problem()
    log = tmp_path / "log.jsonl"
    fit(torch.nn.Linear(3, 1), loss_fn, data, steps=6, batch_size=4, grad_accum=3, lr=1.0, warmup=2,
        log_path=log, progress=False)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in records] == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.25, 0.0])
    assert all("grad_norm" in r and "loss" in r for r in records)
    assert cosine_with_warmup(9, total_steps=10, warmup=0, min_ratio=0.1) == pytest.approx(0.1)


def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


KW = dict(batch_size=4, lr=3e-3, warmup=2, grad_accum=2, ema_decay=0.9, clip_grad=0.5, progress=False, seed=3)


def test_exact_resume_after_stop(tmp_path: Path):
    full = make_flow()
    r_full = train_forecaster(full, clips(), steps=6, ckpt_dir=tmp_path / "a", log_path=tmp_path / "a.jsonl", **KW)

    first = make_flow()
    r1 = train_forecaster(first, clips(), steps=6, ckpt_dir=tmp_path / "b", log_path=tmp_path / "b.jsonl",
                          stop_at=3, **KW)
    assert r1.step == 3 and len(r1.losses) == 3
    torch.manual_seed(999)  # a different process state; the checkpoint restores everything
    second = make_flow(seed=1)  # different initial weights: they are overwritten
    r2 = train_forecaster(second, clips(), steps=6, ckpt_dir=tmp_path / "b", log_path=tmp_path / "b.jsonl",
                          resume=True, **KW)
    assert r2.losses == r_full.losses and len(r2.losses) == 6
    _assert_same(_state(second), _state(full))
    _assert_same(r2.ema.state_dict(), r_full.ema.state_dict())
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "time"} for x in p.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "b.jsonl") == strip(tmp_path / "a.jsonl")


def test_exact_resume_after_crash_mid_accumulation(tmp_path: Path):
    full = make_flow()
    r_full = train_forecaster(full, clips(), steps=5, **KW)

    model = make_flow()
    calls = {"n": 0}
    orig = model.loss

    def crashing(clip, generator=None):
        calls["n"] += 1
        if calls["n"] == 8:  # inside optimizer step 4 (2 micro-batches per step)
            raise KeyboardInterrupt
        return orig(clip, generator=generator)

    model.loss = crashing
    with pytest.raises(KeyboardInterrupt):
        train_forecaster(model, clips(), steps=5, ckpt_dir=tmp_path, ckpt_every=2, **KW)
    assert load_checkpoint(tmp_path).step == 2
    resumed = make_flow(seed=5)
    r = train_forecaster(resumed, clips(), steps=5, ckpt_dir=tmp_path, resume=True, **KW)
    assert r.losses == r_full.losses
    _assert_same(_state(resumed), _state(full))


def test_checkpoint_files_are_safetensors_and_json(tmp_path: Path):
    train_forecaster(make_flow(), clips(), steps=4, ckpt_dir=tmp_path, ckpt_every=1, **KW)
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert dirs == ["latest", "step-00000003", "step-00000004"]  # keep=2
    names = {p.name for p in (tmp_path / "step-00000004").iterdir()}
    assert names == {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"}
    ck = load_checkpoint(tmp_path)
    assert ck.step == 4 and len(ck.state["losses"]) == 4
    assert set(ck.optimizer["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def test_resume_with_other_settings_fails(tmp_path: Path):
    train_forecaster(make_flow(), clips(), steps=2, ckpt_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="settings differ.*batch_size"):
        train_forecaster(make_flow(), clips(), steps=4, ckpt_dir=tmp_path, resume=True, **{**KW, "batch_size": 2})


class _ClipSet(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


class _Batches:
    """An iterable (no __len__/__getitem__) of ready-made batches."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)


def test_dataset_matches_tensor_and_iterable_resumes(tmp_path: Path):
    a, b = make_flow(), make_flow()
    ra = train_forecaster(a, clips(), steps=3, **KW)
    rb = train_forecaster(b, _ClipSet(clips()), steps=3, **KW)
    assert ra.losses == rb.losses

    batches = _Batches([clips()[i : i + 4] for i in (0, 4)])  # ready batches, re-iterated when exhausted
    full = make_flow()
    r_full = train_forecaster(full, batches, steps=4, **KW)
    part = make_flow()
    train_forecaster(part, batches, steps=4, ckpt_dir=tmp_path, stop_at=1, **KW)
    r = train_forecaster(part, batches, steps=4, ckpt_dir=tmp_path, resume=True, **KW)
    assert r.losses == r_full.losses


def test_batch_stream_epochs():
    s = BatchStream(torch.arange(6), batch_size=4, seed=1)
    seen = torch.cat([s.batch(m) for m in range(3)])  # 12 = two epochs, batches straddle the boundary
    assert sorted(seen[:6].tolist()) == list(range(6)) and sorted(seen[6:].tolist()) == list(range(6))
    assert torch.equal(BatchStream(torch.arange(6), 4, seed=1).batch(2), s.batch(2))  # random access
    with pytest.raises(TypeError, match="training data must be"):
        BatchStream(42, 2)


@pytest.mark.filterwarnings("ignore:Mismatch dtype")
def test_bf16_and_bad_data():
    fc = RegressionForecaster(Denoiser(latent_dim=C, width=16, depth=1, heads=2, max_context=2))
    r = train_forecaster(fc, clips(), steps=2, bf16=True, **{k: v for k, v in KW.items()})
    assert all(torch.isfinite(torch.tensor(r.losses)))
    with pytest.raises(ValueError, match=r"latent clips \(N, T, h, w, C\)"):
        train_forecaster(fc, torch.randn(4, 2, 2, C), steps=1, progress=False)
    with pytest.raises(ValueError, match="C=5 latent channels"):
        train_forecaster(fc, torch.randn(4, 3, 2, 2, 5), steps=1, progress=False)
    with pytest.raises(TypeError, match="loss"):
        train_forecaster(torch.nn.Linear(2, 2), clips(), steps=1, progress=False)


def test_cli_train_forecaster(tmp_path: Path):
    import argparse

    from featureflow.training.forecaster import register
    from featureflow.utils import build_component, load_safetensors, save_safetensors

    save_safetensors({"latents": clips(6)}, tmp_path / "lat.safetensors")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train-forecaster", str(tmp_path / "lat.safetensors"), str(tmp_path / "out"), "--width", "16", "--depth", "1",
                              "--heads", "2", "--max-context", "2", "--steps", "2", "--warmup", "1", "--no-progress"])
    assert args.func(args) == 0
    spec = json.loads((tmp_path / "out" / "forecaster.json").read_text())
    model = build_component(spec)
    model.load_state_dict(load_safetensors(tmp_path / "out" / "forecaster.safetensors"))
    assert isinstance(model, FlowForecaster) and model.max_context == 2
    assert len((tmp_path / "out" / "train_log.jsonl").read_text().splitlines()) == 2
    save_safetensors({"x": clips(2)}, tmp_path / "bad.safetensors")
    bad = parser.parse_args(["train-forecaster", str(tmp_path / "bad.safetensors"), str(tmp_path / "o2")])
    with pytest.raises(ValueError, match="no 'latents' tensor"):
        bad.func(bad)


def test_ema_warmup_forgets_the_initialisation():
    from featureflow.training import EMA

    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    warm, cold = EMA(m, decay=0.999), EMA(m, decay=0.999, warmup=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    for _ in range(1000):
        warm.update(m)
        cold.update(m)
    # fixed decay keeps 0.999**1000 = 37 % of the initial weight; with warm-up under 1 %
    assert abs(cold.state_dict()["weight"].item() - (1 - 0.999 ** 1000)) < 1e-4
    assert warm.state_dict()["weight"].item() > 0.99
    assert warm.current_decay() == 1001 / 1010 and cold.num_updates == warm.num_updates == 1000
