"""ToyWorld datasets: item shapes, determinism, windows and frame stride."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from featureflow.data import ToyWorld, ToyWorldClips, ToyWorldWindows


@pytest.fixture(scope="module")
def world() -> ToyWorld:
    return ToyWorld(resolution=16)


def test_clips_items_match_the_world(world):
    ds = ToyWorldClips("val", length=5, stride=2, size=3, world=world)
    assert len(ds) == 3
    item = ds[1]
    seed = ToyWorld.split_seeds("val")[1]
    assert int(item["seed"]) == seed
    clip = world.clip(seed, 5, stride=2)
    assert set(item) == {"rgb", "depth", "normals", "segmentation", "instances", "seed"}
    assert item["rgb"].shape == (5, 3, 16, 16) and item["segmentation"].shape == (5, 16, 16)
    assert torch.equal(item["rgb"], clip.rgb) and torch.equal(item["instances"], clip.instances)
    assert torch.equal(ds[1]["depth"], item["depth"])  # rendered again, bit-identical
    with pytest.raises(IndexError):
        ds[3]


def test_windows_shapes_and_stride(world):
    ds = ToyWorldWindows("train", context=3, horizon=2, stride=2, size=2, world=world)
    item = ds[0]
    assert item["context"].shape == (3, 3, 16, 16) and item["future"].shape == (2, 3, 16, 16)
    assert item["context_depth"].shape == (3, 16, 16) and item["future_normals"].shape == (2, 3, 16, 16)
    assert item["future_segmentation"].dtype == torch.int64
    # stride 2 picks every second frame of the stride-1 clip
    dense = world.clip(int(item["seed"]), 9, stride=1)
    assert torch.equal(item["context"], dense.rgb[0:6:2])
    assert torch.equal(item["future"], dense.rgb[6:10:2])
    assert torch.equal(item["future_instances"], dense.instances[6:10:2])


def test_windows_modalities_warmup_and_batching(world):
    ds = ToyWorldWindows("test", context=2, horizon=1, size=4, warmup=3, modalities=("rgb", "depth"), world=world)
    item = ds[2]
    assert set(item) == {"context", "future", "context_depth", "future_depth", "seed"}
    assert torch.equal(item["context"], world.clip(int(item["seed"]), 3, start=3).rgb[:2])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["context"].shape == (4, 2, 3, 16, 16) and batch["seed"].shape == (4,)


def test_dataset_argument_errors(world):
    with pytest.raises(ValueError, match="modalities"):
        ToyWorldClips("val", modalities=("depth",), world=world)
    with pytest.raises(ValueError, match="size"):
        ToyWorldClips("val", size=0, world=world)
    with pytest.raises(ValueError, match="context"):
        ToyWorldWindows("val", context=0, world=world)
    with pytest.raises(ValueError, match="either world"):
        ToyWorldClips("val", world=world, turn_prob=0.5)
    with pytest.raises(ValueError, match="unknown split"):
        ToyWorldClips("nope", world=world)
