"""train_vae: the loss falls on a tiny synthetic problem; logs, statistics, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from featureflow.compressors import FeatureVAE
from featureflow.training.vae import fit_compressor_statistics, train_vae


def _low_rank_features(n=64, d=12, rank=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(n, 3, 3, rank, generator=g)
    mix = torch.randn(rank, d, generator=g)
    return codes @ mix * 2.0 + torch.linspace(-3, 3, d)


def test_training_reduces_loss_and_writes_log(tmp_path):
    feats = _low_rank_features()
    vae = FeatureVAE(feature_dim=12, latent_dim=2, dim=16, depth=1, kl_weight=0.01)
    log = tmp_path / "logs" / "vae.jsonl"
    with torch.no_grad():
        fit_compressor_statistics(vae, feats, fit_latents=False)
        before = float(vae(feats, sample=False).loss)
    res = train_vae(vae, feats, steps=60, batch_size=16, lr=5e-3, progress=False, log_path=log, seed=0)
    with torch.no_grad():
        after = float(vae(feats, sample=False).loss)
    assert after < 0.5 * before
    assert sum(res.losses[-10:]) < sum(res.losses[:10])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 60 and records[-1]["step"] == 60  # optimizer steps, counted from 1 (as every stage)
    assert {"loss", "mse", "kl", "lr"} <= set(records[0])
    # latent statistics were fitted afterwards: standardised latents
    with torch.no_grad():
        z = vae.encode(feats).reshape(-1, 2)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-3)
    assert torch.allclose(z.std(0), torch.ones(2), atol=1e-3)
    assert not vae.training


def test_training_is_deterministic_and_streams_lists():
    feats = _low_rank_features(n=16)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        vae = FeatureVAE(feature_dim=12, latent_dim=2, dim=8, depth=1)
        runs.append(train_vae(vae, list(feats.split(5)), steps=6, batch_size=4, progress=False, seed=3).losses)
    assert runs[0] == runs[1]


def test_training_bad_inputs():
    vae = FeatureVAE(feature_dim=12, latent_dim=2, dim=8, depth=1)
    with pytest.raises(ValueError, match="re-iterable"):
        train_vae(vae, iter([torch.zeros(2, 2, 2, 12)]), steps=1, progress=False)
    with pytest.raises(ValueError, match="D=12"):
        train_vae(vae, torch.zeros(4, 2, 2, 11), steps=1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        train_vae(vae, torch.zeros(4, 2, 2, 12), steps=0, progress=False)


def test_train_vae_cli_writes_loadable_compressor(tmp_path, capsys):
    import argparse

    from featureflow.training import vae as vae_stage
    from featureflow.utils import build_component, load_safetensors, save_safetensors

    feats = _low_rank_features(n=8, d=10)
    save_safetensors({"features": feats}, tmp_path / "feats.safetensors")
    parser = argparse.ArgumentParser()
    vae_stage.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-vae", str(tmp_path / "feats.safetensors"), str(tmp_path / "out"),
                              "--latent-dim", "2", "--dim", "8", "--depth", "1", "--steps", "3",
                              "--batch-size", "4", "--no-progress"])
    assert args.func(args) == 0
    assert "final loss" in capsys.readouterr().out
    spec = json.loads((tmp_path / "out" / "compressor.json").read_text())
    assert spec["type"] == "FeatureVAE" and spec["config"]["feature_dim"] == 10
    vae = build_component(spec)
    vae.load_state_dict(load_safetensors(tmp_path / "out" / "compressor.safetensors"))
    assert vae.encode(feats).shape == (8, 3, 3, 2)
    assert len((tmp_path / "out" / "train_log.jsonl").read_text().splitlines()) == 3
    bad = argparse.Namespace(**{**vars(args), "features": str(tmp_path / "missing.txt")})
    with pytest.raises(ValueError, match="expected a feature-cache directory"):
        bad.func(bad)
