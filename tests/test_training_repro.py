"""Reproducible from the seed: two fresh `featureflow train` runs save bit-identical models;
a changed stage config retrains that stage and the ones after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from featureflow.cli import main
from featureflow.training import run_pipeline
from featureflow.training.pipeline import stage_seed

from test_pipeline import tiny_config


def _files(model_dir: Path) -> dict[str, tuple[dict, dict]]:
    """Every safetensors file under ``model_dir``: (metadata, tensors); bitwise comparable."""
    out = {}
    for p in sorted(model_dir.rglob("*.safetensors")):
        with safe_open(str(p), "pt") as f:
            out[p.relative_to(model_dir).as_posix()] = (f.metadata(), {k: f.get_tensor(k) for k in f.keys()})
    return out


@pytest.mark.slow
def test_two_fresh_runs_save_bit_identical_models(tmp_path, capsys):
    models = []
    for run in ("a", "b"):
        cfg = tiny_config(tmp_path / run)
        cfg["forecaster"]["train"]["ckpt_every"] = 1
        (tmp_path / f"{run}.json").write_text(json.dumps(cfg))
        assert main(["train", "--config", str(tmp_path / f"{run}.json"), "--no-progress", "--threads", "1"]) == 0
        models.append({**_files(Path(cfg["output"])), **_files(Path(cfg["workdir"]))})
    a, b = models
    assert a.keys() == b.keys() and "model.safetensors" in a and "flow/component.safetensors" in a
    for name in a:
        assert a[name][0] == b[name][0], name
        ta, tb = a[name][1], b[name][1]
        assert ta.keys() == tb.keys(), name
        for k in ta:  # bit-identical: same dtype, same bits
            assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k].view(-1).view(torch.uint8) if ta[k].numel() else ta[k],
                                                               tb[k].view(-1).view(torch.uint8) if tb[k].numel() else tb[k]), \
                f"{name}:{k} differs between two runs with the same seed"
    # each stage wrote its log once
    flow_log = [json.loads(x) for x in (tmp_path / "a" / "work" / "logs" / "flow.jsonl").read_text().splitlines()]
    assert [r["step"] for r in flow_log] == [1, 2]


@pytest.mark.slow
def test_changed_stage_config_retrains_it_and_the_stages_after(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.pop("probes")
    cfg.pop("regression")
    run_pipeline(cfg, progress=False, until="latents")
    work = tmp_path / "work"
    encoder = (work / "encoder" / "component.safetensors").read_bytes()
    features = (work / "features" / "shard_00000.safetensors").read_bytes()
    compressor = (work / "compressor" / "component.safetensors").read_bytes()
    cfg["compressor"]["train"]["steps"] = 3
    with pytest.warns(UserWarning, match=r"stage 'compressor' was built from another configuration .*steps: 2 -> 3"):
        run_pipeline(cfg, progress=False, until="latents")
    assert (work / "encoder" / "component.safetensors").read_bytes() == encoder  # earlier stages reused
    assert (work / "features" / "shard_00000.safetensors").read_bytes() == features
    assert (work / "compressor" / "component.safetensors").read_bytes() != compressor
    records = [json.loads(x) for x in (work / "logs" / "pipeline.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records if r.get("event") == "invalidated"] == ["compressor", "latents"]
    assert len((work / "logs" / "compressor.jsonl").read_text().splitlines()) == 3  # the old run's records went
    # the data settings recorded in the model are the ones it was trained with
    cfg["data"]["resolution"] = 32
    cfg["encoder"]["config"]["image_size"] = 32
    with pytest.warns(UserWarning, match=r"stage 'encoder' .*data\.resolution: 16 -> 32"):
        run_pipeline(cfg, progress=False, until="encoder")


def test_stage_seeds_differ_per_stage_and_seed():
    seeds = {stage_seed(s, n) for s in (0, 1) for n in ("encoder", "compressor", "flow", "regression")}
    assert len(seeds) == 8 and all(0 <= s < 2**31 for s in seeds)


@pytest.mark.slow
def test_a_stage_killed_mid_training_resumes_bit_identically(tmp_path, monkeypatch):
    from featureflow.training.vae import VAEObjective
    from featureflow.utils import load_safetensors

    configs = []
    for run in ("killed", "straight"):
        cfg = tiny_config(tmp_path / run)
        cfg["compressor"]["train"].update(steps=4, ckpt_every=1)
        configs.append(cfg)
    run_pipeline(configs[1], progress=False, until="compressor")
    real, calls = VAEObjective.loss, [0]

    def dying(self, batch, generator):
        calls[0] += 1
        if calls[0] == 3:  # killed during optimizer step 3 (steps 1 and 2 are checkpointed)
            raise KeyboardInterrupt
        return real(self, batch, generator)

    monkeypatch.setattr(VAEObjective, "loss", dying)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(configs[0], progress=False, until="compressor")
    monkeypatch.setattr(VAEObjective, "loss", real)
    run_pipeline(configs[0], progress=False, until="compressor")
    a, b = (load_safetensors(tmp_path / run / "work" / "compressor" / "component.safetensors")
            for run in ("killed", "straight"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = tmp_path / "killed" / "work" / "logs" / "compressor.jsonl"
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3, 4]


def test_changing_the_clips_keeps_the_encoder(tmp_path):
    cfg = tiny_config(tmp_path)
    run_pipeline(cfg, progress=False, until="features")
    encoder = (tmp_path / "work" / "encoder" / "component.safetensors").read_bytes()
    cfg["data"]["train_clips"] = 5
    with pytest.warns(UserWarning, match=r"stage 'features' .*data\.train_clips: 6 -> 5"):
        run_pipeline(cfg, progress=False, until="features")
    assert (tmp_path / "work" / "encoder" / "component.safetensors").read_bytes() == encoder
    assert sorted(p.name for p in (tmp_path / "work" / "features").glob("shard_*")) == ["shard_00000.safetensors",
                                                                                        "shard_00001.safetensors"]
