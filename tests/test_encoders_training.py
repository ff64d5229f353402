"""train_toy_encoder, its linear pixel heads and losses (tiny sizes)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from featureflow.data import ToyWorld
from featureflow.encoders import ToyEncoder
from featureflow.training.toy_encoder import PixelLinearHeads, pixel_losses, render_pool, train_toy_encoder


def tiny_encoder(seed: int = 0) -> ToyEncoder:
    torch.manual_seed(seed)
    return ToyEncoder(image_size=16, patch_size=4, width=16, depth=2, heads=2, blocks=(0, 1))


class FakeWorld:
    """Only what the documented API promises: CLASSES and clip(seed, length, stride)."""

    CLASSES = ("background", "floor", "sphere")

    def clip(self, seed: int, length: int, stride: int = 1):
        g = torch.Generator().manual_seed(seed)
        seg = torch.randint(0, 3, (length, 16, 16), generator=g)
        normals = torch.nn.functional.normalize(torch.randn(length, 3, 16, 16, generator=g), dim=1)
        rgb = seg.unsqueeze(1).expand(-1, 3, -1, -1).float() / 2  # colour tells the class
        return SimpleNamespace(rgb=rgb, depth=1.0 + seg.float(), normals=normals, segmentation=seg)


def test_pixel_heads_layout_is_a_per_patch_linear_map():
    heads = PixelLinearHeads(feature_dim=6, patch_size=2, num_classes=3)
    feats = torch.randn(1, 2, 3, 6)
    out = heads(feats)
    lin = heads.linear(feats)  # (1, 2, 3, c*p*p) with c = 3 + 1 + 3 + 3
    assert out["segmentation"].shape == (1, 3, 4, 6)
    for y, x, dy, dx in [(0, 0, 0, 0), (1, 2, 1, 0), (0, 1, 1, 1)]:
        base = lin[0, y, x].view(10, 2, 2)[:, dy, dx]  # channel-major, then the pixel inside the patch
        pix = (0, slice(None), 2 * y + dy, 2 * x + dx)
        torch.testing.assert_close(out["segmentation"][pix], base[:3])
        torch.testing.assert_close(out["log_depth"][0, 2 * y + dy, 2 * x + dx], base[3])
        torch.testing.assert_close(out["rgb"][pix], base[7:10])
    torch.testing.assert_close(out["depth"], out["log_depth"].exp())
    torch.testing.assert_close(out["normals"].norm(dim=1), torch.ones(1, 4, 6))


def test_pixel_losses_vanish_on_perfect_regression_targets():
    target = {
        "segmentation": torch.tensor([[[0, 1], [2, 1]]]),
        "depth": torch.tensor([[[1.0, 2.0], [4.0, 8.0]]]),
        "normals": torch.nn.functional.normalize(torch.randn(1, 3, 2, 2), dim=1),
        "rgb": torch.rand(1, 3, 2, 2),
    }
    logits = torch.nn.functional.one_hot(target["segmentation"], 3).permute(0, 3, 1, 2).float() * 50
    out = {"segmentation": logits, "log_depth": target["depth"].log(), "raw_normals": 3 * target["normals"],
           "rgb": target["rgb"].clone()}
    losses = pixel_losses(out, target, rgb_weight=0.5)
    for k in ("segmentation", "depth", "normals", "rgb", "loss"):
        assert float(losses[k]) == pytest.approx(0.0, abs=1e-5), k
    out["rgb"] = out["rgb"] + 0.2
    assert float(pixel_losses(out, target, rgb_weight=0.5)["loss"]) == pytest.approx(0.1, abs=1e-5)


def test_render_pool_uses_split_seeds():
    world = ToyWorld(resolution=16)
    pool = render_pool(world, num_clips=2, clip_length=2, stride=1, seed=1, split="val")
    first_val = world.split_seeds("val")[2]  # seed block 1 of 2 clips
    torch.testing.assert_close(pool["rgb"][:2], world.clip(first_val, 2).rgb)
    with pytest.raises(ValueError, match="runs past"):
        render_pool(world, num_clips=20_000, clip_length=1, stride=1, split="val")


def test_training_lowers_the_loss_logs_and_returns_eval_modules(tmp_path):
    enc = tiny_encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    log = tmp_path / "log.jsonl"
    res = train_toy_encoder(enc, ToyWorld(resolution=16), steps=40, batch_size=8, lr=3e-3, progress=False,
                            log_path=log, num_clips=4, clip_length=4, warmup=5, log_every=10)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert any(not torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert not enc.training and not res.heads.training and res.encoder is enc
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40]  # optimizer steps, counted from 1
    assert {"loss", "segmentation", "depth", "normals", "rgb", "lr"} <= set(records[0])
    out = res.heads(enc(torch.rand(2, 3, 16, 16)))
    assert out["segmentation"].shape == (2, 5, 16, 16)


def test_training_is_deterministic_and_works_on_a_fake_world():
    runs = [train_toy_encoder(tiny_encoder(), FakeWorld(), steps=3, batch_size=4, progress=False,
                              num_clips=2, clip_length=3, seed=7).history for _ in range(2)]
    assert runs[0] == runs[1]
    res = train_toy_encoder(tiny_encoder(), FakeWorld(), steps=30, batch_size=6, lr=3e-3, progress=False,
                            num_clips=2, clip_length=3, warmup=3)
    assert res.heads.num_classes == 3
    assert res.history[-1]["segmentation"] < res.history[0]["segmentation"]


def test_pool_refresh_renders_new_worlds():
    class Counting(FakeWorld):
        def __init__(self):
            self.seeds = []

        def clip(self, seed, length, stride=1):
            self.seeds.append(seed)
            return super().clip(seed, length, stride)

    world = Counting()
    train_toy_encoder(tiny_encoder(), world, steps=5, batch_size=2, progress=False, num_clips=2, clip_length=2,
                      refresh_every=2)
    assert len(world.seeds) == 2 + 2 * 2  # the first pool, then refreshes at steps 2 and 4
    assert world.seeds[:2] == [0, 1] and len(set(world.seeds[2:])) == 4  # new random worlds
    static = Counting()
    train_toy_encoder(tiny_encoder(), static, steps=5, batch_size=2, progress=False, num_clips=2, clip_length=2,
                      refresh_every=None)
    assert static.seeds == [0, 1]


def test_training_bad_arguments():
    with pytest.raises(ValueError, match="steps and batch_size"):
        train_toy_encoder(tiny_encoder(), FakeWorld(), steps=0)
    frozen = tiny_encoder().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_toy_encoder(frozen, FakeWorld(), steps=1)
    with pytest.raises(TypeError, match="patch_size"):
        train_toy_encoder(torch.nn.Linear(2, 2), FakeWorld(), steps=1)
