"""One engine: the encoder, compressor and probe stages train through `fit` and resume exactly;
stage trainers are found by component type."""

from __future__ import annotations

import json

import pytest
import torch

from featureflow.compressors import FeatureVAE
from featureflow.data import ToyWorld
from featureflow.encoders import ToyEncoder
from featureflow.training import run_pipeline
from featureflow.training.loop import FitConfig, fit
from featureflow.training.registry import register_trainer, trainer_for
from featureflow.training.toy_encoder import PixelLinearHeads, ToyEncoderObjective, _PoolBatches, render_pool
from featureflow.training.vae import VAEObjective

from test_pipeline import tiny_config


def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _resume_equals_uninterrupted(make, data, cfg: FitConfig, tmp_path) -> None:
    full = make()
    r_full = fit(full, None, data, cfg, progress=False)
    part = make()
    fit(part, None, data, cfg, ckpt_dir=tmp_path, stop_at=2, progress=False)
    resumed = make()  # a fresh process: new module, state from the checkpoint
    torch.manual_seed(999)  # the global RNG is restored from the checkpoint too
    r = fit(resumed, None, data, cfg, ckpt_dir=tmp_path, resume=True, progress=False)
    assert r.losses == r_full.losses and r.step == cfg.steps
    for k, v in _state(full).items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_vae_objective_resumes_exactly(tmp_path):
    feats = torch.randn(12, 2, 2, 6, generator=torch.Generator().manual_seed(0))

    def make():
        torch.manual_seed(0)
        return VAEObjective(FeatureVAE(feature_dim=6, latent_dim=2, dim=8, depth=1))

    cfg = FitConfig(steps=4, batch_size=4, lr=1e-2, ema_decay=0.9, ckpt_every=1)
    _resume_equals_uninterrupted(make, feats, cfg, tmp_path)


def test_toy_encoder_objective_resumes_exactly_across_pool_refreshes(tmp_path):
    world = ToyWorld(resolution=16)
    pool = render_pool(world, 2, 2, 1, seed=0)
    data = _PoolBatches(world, 2, 2, 1, seed=0, batch_size=2, refresh_every=2, first_pool=pool)

    def make():
        torch.manual_seed(0)
        enc = ToyEncoder(image_size=16, patch_size=8, width=16, depth=1, heads=2, blocks=(0,))
        return ToyEncoderObjective(enc, PixelLinearHeads(16, 8, 5))

    cfg = FitConfig(steps=4, batch_size=2, lr=1e-3, ema_decay=None, warmup=1)
    _resume_equals_uninterrupted(make, data, cfg, tmp_path)


def test_stage_trainers_are_found_by_component_type(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["compressor"] = {"type": "PCA", "config": {"n_components": 4}}
    run_pipeline(cfg, progress=False, until="compressor")
    comp = json.loads((tmp_path / "work" / "compressor" / "component.json").read_text())
    assert comp["type"] == "PCA"
    cfg["compressor"] = {"type": "FeatureVAE", "config": {"latent_dim": 4, "dim": 16, "depth": 1},
                         "train": {"steps": 1, "batch_size": 4}}
    calls = []
    original = trainer_for("compressor", "FeatureVAE")

    @register_trainer("compressor", "FeatureVAE")
    def counting(comp, features, train, ctx):
        calls.append((features.shape, ctx.seed, ctx.log_path.name))
        original(comp, features, train, ctx)

    try:
        with pytest.warns(UserWarning, match="stage 'compressor' was built from another configuration"):
            run_pipeline(cfg, progress=False, until="compressor")
    finally:
        register_trainer("compressor", "FeatureVAE")(original)
    assert len(calls) == 1 and calls[0][0][1:] == (2, 2, 32) and calls[0][2] == "compressor.jsonl"
    cfg["compressor"]["type"] = "Identity"
    cfg["compressor"]["config"] = {}
    with pytest.raises(ValueError, match=r"compressor Identity takes no train settings"), pytest.warns(UserWarning):
        run_pipeline(cfg, progress=False, until="compressor")
    cfg["encoder"] = {"type": "PixelPatchEncoder", "config": {"patch_size": 8}, "train": {"steps": 1}}
    with pytest.raises(ValueError, match="encoder type .PixelPatchEncoder. has no registered trainer"), \
            pytest.warns(UserWarning):
        run_pipeline(cfg, progress=False, until="encoder")


def test_probe_heads_train_where_the_data_has_labels(tmp_path, capsys):
    """Own frames (no labels): the RGB head trains from the frames, a depth head is skipped with a
    warning; with no head at all the CLI says the model cannot decode pictures yet."""
    from featureflow.cli import main
    from featureflow.data import write_frames
    from featureflow.world import WorldModel

    world = ToyWorld(resolution=16)
    for i in range(3):
        write_frames(world.clip(seed=100 + i, length=4).rgb, tmp_path / "clips" / f"clip{i}")
    cfg = tiny_config(tmp_path)
    cfg["data"] = {"world": "frames", "root": str(tmp_path / "clips"), "clip_length": 4, "resolution": 16}
    cfg["encoder"].pop("train")
    cfg.pop("regression")
    cfg["probes"]["heads"] = {k: v for k, v in cfg["probes"]["heads"].items() if k in ("rgb", "depth")}
    with pytest.warns(UserWarning, match=r"probe heads \['depth'\] not trained: the dataset has no such labels"):
        out = run_pipeline(cfg, progress=False)
    assert sorted(WorldModel.from_pretrained(out).probes) == ["rgb"]
    cfg.pop("probes")
    cfg["output"] = str(tmp_path / "model2")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "--no-progress"]) == 0
    assert "the model has no probe heads" in capsys.readouterr().out


def test_the_pipeline_takes_a_frozen_dinov2_encoder(tmp_path):
    """Any registered encoder works in `featureflow train`: a (tiny, random, self-contained) DINOv2."""
    pytest.importorskip("transformers")
    from featureflow.world import WorldModel

    cfg = tiny_config(tmp_path)
    hf = {"model_type": "dinov2", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 32, "patch_size": 8, "image_size": 16}
    cfg["encoder"] = {"type": "DINOv2Encoder",
                      "config": {"model": "tiny-dinov2", "blocks": [0, 1], "reference": False, "hf_config": hf}}
    cfg.pop("regression")
    out = run_pipeline(cfg, progress=False)
    wm = WorldModel.from_pretrained(out)
    assert type(wm.encoder).__name__ == "DINOv2Encoder" and wm.encoder.feature_dim == 32
    assert sorted(wm.probes) == ["depth", "normals", "rgb", "segmentation"]
