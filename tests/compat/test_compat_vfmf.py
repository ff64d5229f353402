"""convert_vfmf: synthetic released files (released key names, fixture sizes) -> WorldModel parity."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

from featureflow.compat.vfmf import (  # noqa: E402
    LeftoverKeysError,
    ReleasedRecipe,
    UnsafeCheckpointError,
    convert_vfmf,
    forecast_released,
    hf_to_hub_dinov2_state_dict,
    load_converted,
    read_recipe,
)
from featureflow.compat.vfmf import cli  # noqa: E402
from featureflow.compressors import FeatureVAE  # noqa: E402
from featureflow.forecast import Denoiser  # noqa: E402
from featureflow.forecast.vfmf_trunk import vfmf_key_map  # noqa: E402
from featureflow.probes import DPTHead  # noqa: E402

OFFICIAL = Path(__file__).parents[1] / "fixtures" / "vfmf_official"
TOL = 1e-5
#: The tiny DINOv2s have 4 blocks and 2 heads (the released one: blocks 2, 5, 8, 11 of 12; 12 heads).
TINY = {"dino_blocks": (0, 1, 2, 3), "dino_heads": 2}


def fixture(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(OFFICIAL / f"{name}.safetensors"))


def tiny_dino(hidden: int, seed: int) -> torch.nn.Module:
    cfg = transformers.Dinov2WithRegistersConfig(
        hidden_size=hidden, num_hidden_layers=4, num_attention_heads=2, patch_size=2, image_size=8,
        num_register_tokens=2,
    )
    model = transformers.Dinov2WithRegistersModel(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def released_trunk(latent_dim: int) -> dict[str, torch.Tensor]:
    """A random released-format trunk (via featureflow's own vfmf module and the key map)."""
    den = Denoiser("vfmf", latent_dim=latent_dim, width=24, depth=1, heads=2, grid=(4, 6), max_context=4)
    inverse = {v: k for k, v in vfmf_key_map(1).items()}
    return {inverse[k]: v.clone() for k, v in den.trunk.state_dict().items()}


def random_dpt(nclass: int, in_channels: int) -> dict[str, torch.Tensor]:
    head = DPTHead(nclass=nclass, in_channels=in_channels, features=16, out_channels=[8, 16, 32, 32])
    return {"head." + k: v.clone() for k, v in head.state_dict().items()}


def write_bundle(root: Path, trunk, vae, dino, feature_dim: int, latent_dim: int, heads: dict | None = None):
    """Write files in the released formats; returns their paths and the statistics used."""
    g = torch.Generator().manual_seed(1)
    ema = {"transformer." + k: v for k, v in trunk.items()}
    ema.update({"vae.vae." + k: v for k, v in vae.items()})
    ema.update({"vae.dino_v2." + k: v for k, v in hub_from(dino).items()})
    ema["latent_dist_mean"] = torch.randn(latent_dim, generator=g)
    ema["latent_dist_std"] = torch.rand(latent_dim, generator=g) + 0.5
    model_sd = {k: v + 1.0 if k.startswith("transformer.") else v for k, v in ema.items()}
    ckpt = {"model_state_dict": model_sd, "ema_state_dict": ema,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
            "scheduler_state_dict": {"last_epoch": 7}, "epoch": 2399, "step": 120000}
    root.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, root / "epoch=2399.pt")
    mean = np.random.default_rng(0).normal(size=feature_dim).astype(np.float32)
    std = np.random.default_rng(1).uniform(0.5, 2.0, size=feature_dim).astype(np.float32)
    np.savez(root / "dino.npz", mean=mean, std=std)
    for name, state in (heads or {}).items():
        path = root / "heads" / f"train_kubric_vae_224_l[2,_5,_8,_11]_{name}_batch_size=128" / "epoch=1-step=3.ckpt"
        path.parent.mkdir(parents=True)
        torch.save({"epoch": 1, "global_step": 3, "pytorch-lightning_version": "2.4.0", "state_dict": state}, path)
    return {"forecaster": root / "epoch=2399.pt", "stats": root / "dino.npz", "heads": root / "heads",
            "lmean": ema["latent_dist_mean"], "lstd": ema["latent_dist_std"],
            "mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}


def hub_from(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in hf_to_hub_dinov2_state_dict(model.state_dict()).items()}


@pytest.fixture(scope="module")
def bundle_d(tmp_path_factory):
    """Denoiser + DPT fixtures (latent 16, 4 blocks x 32 = 128 features), random VAE and DINOv2."""
    root = tmp_path_factory.mktemp("released_d")
    dino = tiny_dino(32, seed=0)
    vae = FeatureVAE(feature_dim=128, latent_dim=16, dim=16, depth=1).network_state_dict()
    heads = {"segm_head": {"head." + k: v for k, v in fixture("dpt_weights").items()},
             "depth_head": random_dpt(256, 32), "normals_head": random_dpt(3, 32)}
    files = write_bundle(root, fixture("denoiser_weights"), vae, dino, 128, 16, heads)
    out = root / "converted"
    model = convert_vfmf(files["forecaster"], feature_stats=files["stats"], heads_dir=files["heads"], out=out,
                         **TINY)
    return model, out, files, dino


@pytest.fixture(scope="module")
def bundle_v(tmp_path_factory):
    """VAE fixture (48 features -> 8 latents) with a random trunk and a 12-wide DINOv2 (4 x 12 = 48)."""
    root = tmp_path_factory.mktemp("released_v")
    dino = tiny_dino(12, seed=2)
    files = write_bundle(root, released_trunk(8), fixture("vae_weights"), dino, 48, 8)
    model = convert_vfmf(files["forecaster"], feature_stats=files["stats"], **TINY)
    return model, files, dino


@pytest.mark.parametrize("case", ["", "_t5"])
def test_denoiser_parity_after_conversion_and_reload(bundle_d, case):
    model, out, _, _ = bundle_d
    io = fixture("denoiser_io")
    x, t, ref = io[f"x{case}"], io[f"time{case}"], io[f"out{case}"]
    target = ref.reshape(x.shape)[:, -1]
    for m in (model, load_converted(out)):
        with torch.no_grad():
            v = m.forecaster.denoiser.velocity(x[:, :-1], x[:, -1], t)
        assert (v - target).abs().max() <= TOL


def test_dpt_parity_after_conversion_and_reload(bundle_d):
    model, out, _, _ = bundle_d
    io = fixture("dpt_io")
    feats = torch.cat([io[f"features_{i}"].reshape(2, 4, 6, 32) for i in range(4)], dim=-1)
    for m in (model, load_converted(out)):
        seg = m.probes["segmentation"]
        with torch.no_grad():
            raw = seg.head(feats)
            labels = seg.predict(feats, size=(32, 48))
        assert (raw - io["out"]).abs().max() <= TOL
        assert torch.equal(labels, io["out"].argmax(dim=1))
    assert m.probes["depth"].config["mode"] == "bins" and m.probes["depth"].num_bins == 256
    assert type(m.probes["normals"]).__name__ == "NormalsHead"


def test_vae_parity_with_released_statistics(bundle_v):
    model, files, _ = bundle_v
    io = fixture("vae_io")
    vae = model.compressor
    scale = files["std"] + 1e-8  # the released feature transform divides by std + 1e-8
    raw_features = io["features"] * scale + files["mean"]
    with torch.no_grad():
        z = vae.encode(raw_features)
        f = vae.decode((io["latents"] - files["lmean"]) / files["lstd"])
    assert (z - (io["latent_mean"] - files["lmean"]) / files["lstd"]).abs().max() <= TOL
    assert ((f - files["mean"]) / scale - io["decoded"]).abs().max() <= TOL


def test_dino_from_checkpoint_matches_reference_features(bundle_v):
    model, _, dino = bundle_v
    images = torch.rand(2, 3, 8, 12)
    with torch.no_grad():
        got = model.encoder(images)
        x = (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        hidden = dino(pixel_values=x, output_hidden_states=True).hidden_states
        ref = torch.cat([dino.layernorm(hidden[i + 1][:, 3:]) for i in range(4)], dim=-1).reshape(2, 4, 6, 48)
    assert got.shape == (2, 4, 6, 48)
    assert (got - ref).abs().max() <= TOL
    assert model.encoder.is_reference is False


def test_model_weights_and_ema_choice(bundle_v, tmp_path):
    _, files, _ = bundle_v
    ema = torch.load(files["forecaster"], weights_only=True)
    m = convert_vfmf(files["forecaster"], feature_stats=files["stats"], weights="model", **TINY)
    key = "transformer.fc_in.weight"
    got = m.forecaster.denoiser.trunk.state_dict()[vfmf_key_map(1)["fc_in.weight"]]
    assert torch.equal(got, ema["model_state_dict"][key])
    assert not torch.equal(got, ema["ema_state_dict"][key])


def test_saved_directory_records_recipe(bundle_d):
    _, out, files, _ = bundle_d
    config = json.loads((out / "config.json").read_text())
    assert config["vfmf_recipe"] == {"solver": "euler", "steps": 9, "max_context": 4, "reencode": True,
                                     "context_posterior": "sample"}
    assert config["converted_from"]["weights"] == "ema"
    assert sorted(config["converted_from"]["heads"]) == ["depth", "normals", "segmentation"]
    assert read_recipe(out) == ReleasedRecipe()
    assert config["components"]["encoder"]["weights"] == "included"


def test_released_recipe_rollout_matches_a_manual_released_loop(bundle_d):
    """Re-encode the feature window before every frame, Euler on linspace(0, 1, 10)."""
    model, _, _, _ = bundle_d
    frames = torch.rand(1, 2, 3, 8, 12)
    recipe = ReleasedRecipe(context_posterior="mean")
    fc = forecast_released(model, frames, horizon=2, num_samples=2, recipe=recipe,
                           generator=torch.Generator().manual_seed(3))
    assert fc.latents.shape == (1, 2, 2, 4, 6, 16) and fc.nfe == 9
    assert fc.decode("segmentation").shape == (1, 2, 2, 8, 12)
    assert fc.decode("depth").shape == (1, 2, 2, 8, 12)

    from featureflow.forecast.rollout import SampleStreams

    g = torch.Generator().manual_seed(3)
    den, vae = model.forecaster.denoiser, model.compressor
    with torch.no_grad():
        window = model.encoder(frames.flatten(0, 1)).reshape(1, 2, 4, 6, 128).repeat_interleave(2, dim=0)
        grid = torch.linspace(0.0, 1.0, 10)
        expected = []
        for _ in range(2):
            z_ctx = vae.encode(window)
            x = SampleStreams(g, 2, 1).randn((2, 4, 6, 16), torch.device("cpu"), torch.float32)  # a stream per row
            for i in range(9):
                x = x + (grid[i + 1] - grid[i]) * den.velocity(z_ctx, x, grid[i].expand(2))
            expected.append(x)
            window = torch.cat([window, vae.decode(x)[:, None]], dim=1)[:, -4:]
    expected = torch.stack(expected, dim=1).reshape(1, 2, 2, 4, 6, 16)
    assert (fc.latents - expected).abs().max() <= 1e-4


def test_released_recipe_samples_posterior_and_takes_faster_solvers(bundle_d):
    model, _, _, _ = bundle_d
    frames = torch.rand(1, 1, 3, 8, 12)
    a = forecast_released(model, frames, horizon=1, generator=torch.Generator().manual_seed(0))
    b = forecast_released(model, frames, horizon=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.latents, b.latents)  # reproducible given the generator
    fast = forecast_released(model, frames, horizon=1, solver="heun", steps=4,
                             generator=torch.Generator().manual_seed(0))
    assert fast.nfe == 4 and torch.isfinite(fast.latents).all()


def test_standalone_vae_is_cross_checked(bundle_v, tmp_path):
    model, files, dino = bundle_v
    solo = {"vae." + k: v for k, v in fixture("vae_weights").items()}
    solo.update({"dino_v2." + k: v for k, v in hub_from(dino).items()})
    torch.save({"model_state_dict": solo}, tmp_path / "best.pt")
    m = convert_vfmf(files["forecaster"], feature_stats=files["stats"], vae=tmp_path / "best.pt",
                     **TINY)
    assert torch.equal(m.compressor.out_proj.weight, model.compressor.out_proj.weight)
    solo["vae.out_proj.bias"] = solo["vae.out_proj.bias"] + 1
    torch.save({"model_state_dict": solo}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="different weights"):
        convert_vfmf(files["forecaster"], feature_stats=files["stats"], vae=tmp_path / "other.pt",
                     **TINY)


def test_dino_by_reference(bundle_v, tmp_path):
    _, files, dino = bundle_v
    dino.save_pretrained(tmp_path / "dinov2")
    out = tmp_path / "ref-model"
    m = convert_vfmf(files["forecaster"], feature_stats=files["stats"], dino="hub",
                     dino_model=str(tmp_path / "dinov2"), **TINY, out=out)
    assert m.encoder.is_reference
    weights = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("encoder.") for k in weights)
    reloaded = load_converted(out)
    images = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        assert torch.allclose(reloaded.encoder(images), m.encoder(images), atol=TOL)


class NotATensor:  # pickled by reference: torch.load(weights_only=True) must refuse it
    pass


def test_unsafe_pickle_is_refused_with_a_clear_error(bundle_v, tmp_path):
    _, files, _ = bundle_v
    ckpt = torch.load(files["forecaster"], weights_only=True)
    ckpt["scheduler_state_dict"] = NotATensor()
    bad = tmp_path / "unsafe.pt"
    torch.save(ckpt, bad)
    with pytest.raises(UnsafeCheckpointError, match=r"unsafe\.pt.*cannot be read safely.*NotATensor"):
        convert_vfmf(bad, feature_stats=files["stats"], **TINY)
    np.savez(tmp_path / "obj.npz", mean=np.array([{"a": 1}], dtype=object), std=np.ones(1))
    with pytest.raises(UnsafeCheckpointError, match="obj.npz"):
        convert_vfmf(files["forecaster"], feature_stats=tmp_path / "obj.npz", **TINY)


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.update({"vae.extra.weight": torch.zeros(2)}), r"not used.*'vae\.extra\.weight'"),
    (lambda sd: sd.pop("latent_dist_std"), "required key 'latent_dist_std' is missing"),
    (lambda sd: sd.pop("transformer.fc_out.linear.bias"), "fc_out.linear.bias"),
    (lambda sd: sd.pop("vae.dino_v2.blocks.1.ls1.gamma"), "block 1 lacks 'ls1.gamma'"),
])
def test_leftover_or_missing_keys_fail_and_write_nothing(bundle_v, tmp_path, change, message):
    _, files, _ = bundle_v
    ckpt = torch.load(files["forecaster"], weights_only=True)
    change(ckpt["ema_state_dict"])
    path = tmp_path / "f.pt"
    torch.save(ckpt, path)
    with pytest.raises(LeftoverKeysError, match=message):
        convert_vfmf(path, feature_stats=files["stats"], **TINY, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_files_and_heads(bundle_v, tmp_path):
    _, files, _ = bundle_v
    torch.save({"ema_state_dict": {}}, tmp_path / "noema.pt")
    with pytest.raises(ValueError, match="no 'model_state_dict'"):
        convert_vfmf(tmp_path / "noema.pt", feature_stats=files["stats"], weights="model")
    np.savez(tmp_path / "short.npz", mean=np.zeros(5, np.float32), std=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="5 channels, expected 48"):
        convert_vfmf(files["forecaster"], feature_stats=tmp_path / "short.npz", **TINY)
    heads = tmp_path / "heads"
    for name in ("a_depth_head", "b_depth_head"):
        (heads / name).mkdir(parents=True)
        torch.save({"state_dict": random_dpt(256, 12)}, heads / name / "e.ckpt")
    with pytest.raises(ValueError, match="more than one head checkpoint"):
        convert_vfmf(files["forecaster"], feature_stats=files["stats"], heads_dir=heads, **TINY)
    state = random_dpt(3, 12)
    state["backbone.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "normals.ckpt")
    with pytest.raises(ValueError, match="do not start with 'head.'"):
        convert_vfmf(files["forecaster"], feature_stats=files["stats"], heads={"normals": tmp_path / "normals.ckpt"},
                     **TINY)
    torch.save({"state_dict": random_dpt(3, 32)}, tmp_path / "wide.ckpt")
    with pytest.raises(ValueError, match="expects 128 feature channels, the model gives 48"):
        convert_vfmf(files["forecaster"], feature_stats=files["stats"], heads={"normals": tmp_path / "wide.ckpt"},
                     **TINY)


def test_cli_parses_and_converts(bundle_d, tmp_path, capsys):
    _, _, files, _ = bundle_d
    parser = argparse.ArgumentParser(prog="featureflow")
    cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli-out"
    args = parser.parse_args([
        "convert-vfmf", "--forecaster", str(files["forecaster"]), "--heads-dir", str(files["heads"]),
        "--feature-stats", str(files["stats"]), "--out", str(out), "--depth-range", "0.5", "80",
    ])
    assert args.weights == "ema" and args.dino == "checkpoint" and args.depth_range == [0.5, 80.0]
    with pytest.raises(ValueError, match="attention heads of a 32-wide DINOv2"):
        args.func(args)
    assert not out.exists()
    args = parser.parse_args(["convert-vfmf", "--forecaster", str(files["forecaster"]), "--heads-dir",
                              str(files["heads"]), "--feature-stats", str(files["stats"]), "--out", str(out),
                              "--depth-range", "0.5", "80", "--dino-blocks", "0", "1", "2", "3", "--dino-heads", "2"])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    m = load_converted(out)
    assert m.probes["depth"].min_depth == 0.5 and m.probes["depth"].max_depth == 80.0
    assert m.vfmf_recipe == ReleasedRecipe()
    with pytest.raises(SystemExit):
        parser.parse_args(["convert-vfmf", "--forecaster", "f.pt", "--out", "o"])  # --feature-stats is required
    assert "--feature-stats" in capsys.readouterr().err


def test_vae_with_convnext_layer_scale_round_trips():
    """`vae_from_released_state_dict` accepts ConvNeXt layer-scale (``*.gamma``) keys, e.g.
    from featureflow's own ``FeatureVAE(layer_scale_init_value=...)``, and reproduces it."""
    from featureflow.compat.vfmf.convert import vae_from_released_state_dict
    from featureflow.compressors import FeatureVAE

    torch.manual_seed(0)
    src = FeatureVAE(feature_dim=12, latent_dim=4, dim=8, depth=2, layer_scale_init_value=0.5).eval()
    with torch.no_grad():
        for name, p in src.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 2.0)  # trained values, not the init
    state = src.network_state_dict()
    assert sum(k.endswith(".gamma") for k in state) == 4  # 2 blocks in the encoder and in the decoder
    vae = vae_from_released_state_dict(state)
    assert all(torch.equal(vae.network_state_dict()[k], v) for k, v in state.items())
    x = torch.randn(2, 3, 3, 12)
    torch.testing.assert_close(vae.encode(x), src.encode(x), atol=0, rtol=0)
    torch.testing.assert_close(vae.decode(vae.encode(x)), src.decode(src.encode(x)), atol=0, rtol=0)
