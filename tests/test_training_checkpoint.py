"""Checkpoints survive a writer killed at any moment; resume refuses another run, naming the difference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from featureflow.forecast import Denoiser, FlowForecaster, RegressionForecaster
from featureflow.training import checkpoint as ckpt_mod
from featureflow.training.checkpoint import load_checkpoint, save_checkpoint
from featureflow.training.forecaster import train_forecaster
from featureflow.training.loop import FitConfig, fit

KW = dict(batch_size=2, warmup=1, progress=False)


def _flow(width: int = 16, **kw) -> FlowForecaster:
    torch.manual_seed(0)
    return FlowForecaster(Denoiser(latent_dim=3, width=width, depth=1, heads=2, max_context=2), **kw)


def _clips(seed: int = 1) -> torch.Tensor:
    return torch.randn(6, 3, 2, 2, 3, generator=torch.Generator().manual_seed(seed))


def test_stale_temporaries_are_pruned(tmp_path: Path):
    (tmp_path / ".step-00000005.abc").mkdir(parents=True)
    (tmp_path / ".step-00000005.abc" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".old-step-00000001.xyz").mkdir()
    (tmp_path / ".latest.123.tmp").write_text("step-")
    save_checkpoint(tmp_path, 1, model={"w": torch.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001"]


def test_resave_killed_mid_swap_falls_back_to_older_intact(tmp_path: Path, monkeypatch):
    save_checkpoint(tmp_path, 1, model={"w": torch.full((1,), 1.0)}, keep=3)
    save_checkpoint(tmp_path, 2, model={"w": torch.full((1,), 2.0)}, keep=3)
    real = ckpt_mod.os.replace
    calls = []

    def dying_replace(src, dst):
        if Path(dst) == tmp_path / "step-00000002":  # the old step-2 was moved aside: die before the swap
            calls.append(dst)
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, model={"w": torch.full((1,), 3.0)}, keep=3)
    monkeypatch.setattr(ckpt_mod.os, "replace", real)
    assert (tmp_path / "latest").read_text().strip() == "step-00000002"
    assert calls and not (tmp_path / "step-00000002").exists()
    with pytest.warns(UserWarning, match="missing or incomplete; resuming from step-00000001"):
        ck = load_checkpoint(tmp_path)
    assert ck.step == 1 and ck.model["w"].item() == 1.0
    save_checkpoint(tmp_path, 2, model={"w": torch.full((1,), 4.0)}, keep=3)  # the next save cleans up
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert load_checkpoint(tmp_path).model["w"].item() == 4.0


def test_resave_of_latest_step_replaces_it(tmp_path: Path):
    save_checkpoint(tmp_path, 3, model={"w": torch.zeros(1)})
    save_checkpoint(tmp_path, 3, model={"w": torch.ones(1)})
    assert load_checkpoint(tmp_path).model["w"].item() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000003"]


def test_resume_refuses_another_objective_architecture_data_or_precision(tmp_path: Path):
    train_forecaster(_flow(), _clips(), steps=3, stop_at=1, ckpt_dir=tmp_path, **KW)
    torch.manual_seed(0)
    reg = RegressionForecaster(Denoiser(latent_dim=3, width=16, depth=1, heads=2, max_context=2))
    with pytest.raises(ValueError, match=r"trained something else.*model\.type: 'FlowForecaster' -> 'RegressionForecaster'"):
        train_forecaster(reg, _clips(), steps=3, ckpt_dir=tmp_path, resume=True, **KW)
    with pytest.raises(ValueError, match=r"model\.config\.denoiser.*width"):
        train_forecaster(_flow(width=32), _clips(), steps=3, ckpt_dir=tmp_path, resume=True, **KW)
    with pytest.raises(ValueError, match=r"model\.config.*time_sampling"):
        train_forecaster(_flow(time_sampling="logit_normal"), _clips(), steps=3, ckpt_dir=tmp_path, resume=True, **KW)
    with pytest.raises(ValueError, match=r"data\.sha256"):
        train_forecaster(_flow(), _clips(seed=2), steps=3, ckpt_dir=tmp_path, resume=True, **KW)
    with pytest.raises(ValueError, match=r"settings differ.*precision"):
        train_forecaster(_flow(), _clips(), steps=3, ckpt_dir=tmp_path, resume=True, bf16=True, **KW)
    r = train_forecaster(_flow(), _clips(), steps=3, ckpt_dir=tmp_path, resume=True, **KW)  # the same run resumes
    assert r.step == 3 and len(r.losses) == 3


def test_resume_without_fingerprint_names_shape_mismatch(tmp_path: Path):
    def loss_fn(m, batch, g):
        return m(batch).square().mean()

    fit(torch.nn.Linear(2, 2), loss_fn, torch.randn(8, 2), steps=2, stop_at=1, ckpt_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"architecture differs.*weight: checkpoint \(2, 2\) vs model \(3, 2\)"):
        fit(torch.nn.Linear(2, 3), loss_fn, torch.randn(8, 2), steps=2, ckpt_dir=tmp_path, resume=True, progress=False)


def test_fit_config_round_trip_and_errors():
    cfg = FitConfig.from_dict({"steps": 5, "bf16": True, "betas": [0.9, 0.95]})
    assert cfg.precision == "bf16" and cfg.betas == (0.9, 0.95)
    assert FitConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['stepz'\]"):
        FitConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="precision must be one of"):
        FitConfig(precision="fp8")
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['lrr'\]"):
        fit(torch.nn.Linear(1, 1), None, torch.zeros(2, 1), lrr=1.0)
    with pytest.raises(ValueError, match="fp16.*needs CUDA"):
        fit(torch.nn.Linear(1, 1), lambda m, b, g: m(b).sum(), torch.zeros(2, 1), steps=1, precision="fp16",
            progress=False)
