"""arch="vfmf": parity with the released trunk and the released key mapping."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from featureflow.forecast.denoiser import Denoiser
from featureflow.forecast.vfmf_trunk import convert_released_state_dict, released_config, vfmf_key_map
from featureflow.typing import ShapeError


@pytest.fixture(scope="module")
def released():
    from pathlib import Path

    root = Path(__file__).parents[1] / "fixtures" / "vfmf_official"
    weights = load_file(str(root / "denoiser_weights.safetensors"))
    io = load_file(str(root / "denoiser_io.safetensors"))
    manifest = json.loads((root / "manifest.json").read_text())
    return weights, io, manifest


@pytest.fixture(scope="module")
def model(released):
    weights, _, manifest = released
    cfg = manifest["denoiser"]["config"]
    den = Denoiser(
        "vfmf", latent_dim=cfg["embedding_dim"], width=cfg["hidden_dim"], depth=cfg["depth"], heads=cfg["heads"],
        mlp_dim=cfg["mlp_dim"], max_context=cfg["shape"][0] - 1, grid=tuple(cfg["shape"][1:]),
    )  # fmt: skip
    den.load_released_state_dict(weights)
    return den.eval()


@pytest.mark.parametrize("case", ["", "_t5"])
def test_parity_full_output(model, released, case):
    _, io, _ = released
    x, time, out = io[f"x{case}"], io[f"time{case}"], io[f"out{case}"]
    with torch.no_grad():
        full = model.trunk(x, time)
    b, n, h, w, c = x.shape
    assert out.shape == (b, n * h * w, c)
    assert (full.reshape(b, n * h * w, c) - out).abs().max() < 1e-5


@pytest.mark.parametrize("case", ["", "_t5"])
def test_parity_uniform_interface(model, released, case):
    """The released model sees cat(context, x_t) on time; its target is the last frame."""
    _, io, _ = released
    x, time, out = io[f"x{case}"], io[f"time{case}"], io[f"out{case}"]
    b, n, h, w, c = x.shape
    target = out.reshape(b, n, h, w, c)[:, -1]
    with torch.no_grad():
        v = model.velocity(x[:, :-1], x[:, -1], time)
        state = model.prefill(x[:, :-1])
        v_step = model.step(state, x[:, -1], time)
    assert (v - target).abs().max() < 1e-5
    assert torch.equal(v, v_step)


def test_append_slides_raw_window(model, released):
    _, io, _ = released
    x = io["x_t5"]
    with torch.no_grad():
        s = model.prefill(x[:, :3])
        s = model.append(model.append(s, x[:, 3]), x[:, 4])
        assert s.num_frames == 4 and torch.equal(s.frames, x[:, 1:5])
        noisy = torch.randn_like(x[:, 0])
        assert torch.equal(model.step(s, noisy, torch.tensor(0.3)), model.velocity(x[:, 1:5], noisy, torch.tensor(0.3)))


def test_key_map_is_complete(released):
    weights, _, manifest = released
    converted = convert_released_state_dict(weights)
    den = Denoiser(**released_config(weights))
    assert set(converted) == set(den.state_dict())
    assert len(converted) == len(weights)
    cfg = manifest["denoiser"]["config"]
    inferred = released_config(weights)
    assert (inferred["width"], inferred["depth"], inferred["heads"], inferred["mlp_dim"]) == (
        cfg["hidden_dim"], cfg["depth"], cfg["heads"], cfg["mlp_dim"],
    )  # fmt: skip
    assert [inferred["max_context"] + 1, *inferred["grid"]] == cfg["shape"]


def test_from_released_state_dict_matches(released):
    weights, io, _ = released
    den = Denoiser.from_released_state_dict(weights).eval()
    with torch.no_grad():
        out = den.trunk(io["x"], io["time"]).reshape(io["out"].shape)
    assert (out - io["out"]).abs().max() < 1e-5


def test_key_map_rejects_unknown_and_missing(released):
    weights, _, _ = released
    extra = dict(weights, **{"transformer.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected keys.*transformer.extra"):
        convert_released_state_dict(extra)
    missing = {k: v for k, v in weights.items() if k != "fc_in.weight"}
    with pytest.raises(ValueError, match="missing keys.*fc_in.weight"):
        convert_released_state_dict(missing)
    with pytest.raises(ValueError, match="no 'transformer.layers"):
        convert_released_state_dict({"fc_in.weight": torch.zeros(1)})


@pytest.mark.parametrize("name", ["denoiser_kubric", "denoiser_cityscapes"])
def test_full_size_released_shapes_convert(name, fixtures_dir):
    """The released full-size key sets and shapes map 1:1 onto a Denoiser (built on meta)."""
    spec = json.loads((fixtures_dir / "vfmf_official" / "released_state_dict_shapes.json").read_text())[name]
    sd = {k: torch.empty(shape, device="meta") for k, shape in spec["state_dict_shapes"].items()}
    assert len(vfmf_key_map(spec["config"]["depth"])) == len(sd)
    with torch.device("meta"):
        den = Denoiser(**released_config(sd))
    converted = convert_released_state_dict(sd)
    ours = den.state_dict()
    assert set(converted) == set(ours)
    assert all(tuple(converted[k].shape) == tuple(ours[k].shape) for k in ours)


def test_vfmf_bad_input(model):
    with pytest.raises(ShapeError, match="4x6 patch grid"):
        model.velocity(None, torch.randn(1, 5, 5, 16), torch.rand(1))
    with pytest.raises(ShapeError, match="latent_dim=16"):
        model.velocity(None, torch.randn(1, 4, 6, 8), torch.rand(1))
    with pytest.raises(ValueError, match="max_context=4"):
        model.velocity(torch.randn(1, 5, 4, 6, 16), torch.randn(1, 4, 6, 16), torch.rand(1))
    with pytest.raises(ValueError, match="does not take cond"):
        model.velocity(None, torch.randn(1, 4, 6, 16), torch.rand(1), cond=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="pass grid"):
        Denoiser("vfmf", latent_dim=16, width=96, heads=4)
    with pytest.raises(ValueError, match="only into arch='vfmf'"):
        Denoiser(latent_dim=16, width=32, depth=1, heads=2).load_released_state_dict({})
