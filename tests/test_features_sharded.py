"""Feature extraction: sharded over torchrun ranks (gloo), equal to one process, atomic and resumable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featureflow.encoders import ModuleEncoder
from featureflow.training.features import FeatureShards, extract_features

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from features_worker import tiny_setup  # noqa: E402


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.slow
def test_two_gloo_ranks_write_their_shards_and_equal_one_process(tmp_path):
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not available")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "features_worker.py"), str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 5 clips in shards of 2: rank 0 encodes shards 0 and 2 (clips 0, 1, 4), rank 1 shard 1 (clips 2, 3)
    assert json.loads((tmp_path / "two" / "rank0.json").read_text()) == [0, 1, 4]
    assert json.loads((tmp_path / "two" / "rank1.json").read_text()) == [2, 3]

    encoder, clips = tiny_setup()
    one = extract_features(encoder, clips, tmp_path / "one", shard_size=2, batch_size=2, keep=("segmentation",),
                           fingerprint="tiny", progress=False)
    two = tmp_path / "two" / "features"
    assert _files(two) == _files(one)  # the same files, byte for byte
    assert sorted(_files(one)) == ["index.json", "shard_00000.safetensors", "shard_00001.safetensors",
                                   "shard_00002.safetensors"]
    feats = FeatureShards(two).tensor()
    assert feats.shape == (5, 2, 2, 2, 16) and FeatureShards(two)[4]["segmentation"].shape == (2, 16, 16)


def _counting_encoder(calls: list[int], fail_at: int | None = None) -> ModuleEncoder:
    def fn(x):
        calls.append(x.shape[0])
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("killed")
        return x.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)).permute(0, 2, 3, 1)

    return ModuleEncoder(fn, patch_size=4, feature_dim=3)


def _clips(n=5):
    g = torch.Generator().manual_seed(1)
    return [{"rgb": torch.rand(2, 3, 8, 8, generator=g), "depth": torch.full((2, 8, 8), float(i))} for i in range(n)]


def test_interrupted_extraction_leaves_no_partial_files_and_resumes(tmp_path):
    clips = _clips()
    calls: list[int] = []
    with pytest.raises(RuntimeError, match="killed"):
        extract_features(_counting_encoder(calls, fail_at=3), clips, tmp_path / "f", shard_size=2, batch_size=1,
                         keep=("depth",), progress=False)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["shard_00000.safetensors"]  # no index, no tmp
    (tmp_path / "f" / ".shard_00001.safetensors.abc.tmp").write_bytes(b"half")  # a killed writer's leftover
    calls.clear()
    extract_features(_counting_encoder(calls), clips, tmp_path / "f", shard_size=2, batch_size=1, keep=("depth",),
                     progress=False)
    assert len(calls) == 3  # shard 0 kept; clips 2, 3, 4 encoded
    fresh = extract_features(_counting_encoder([]), clips, tmp_path / "g", shard_size=2, batch_size=1,
                             keep=("depth",), progress=False)
    assert _files(tmp_path / "f") == _files(fresh)
    calls.clear()
    extract_features(_counting_encoder(calls), clips, tmp_path / "f", shard_size=2, batch_size=1, keep=("depth",),
                     progress=False)
    assert calls == []  # complete: nothing to do
    extract_features(_counting_encoder(calls), clips, tmp_path / "f", shard_size=2, batch_size=1, keep=("depth",),
                     fingerprint="other encoder", progress=False)
    assert len(calls) == 5  # another fingerprint: every shard redone
    assert json.loads((tmp_path / "f" / "index.json").read_text())["fingerprint"] == "other encoder"
    extract_features(_counting_encoder([]), clips[:2], tmp_path / "f", shard_size=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["index.json", "shard_00000.safetensors"]
    assert len(FeatureShards(tmp_path / "f")) == 2 and set(FeatureShards(tmp_path / "f")[1]) == {"features"}


def test_explicit_partition_and_bad_input(tmp_path):
    clips = _clips()
    extract_features(_counting_encoder([]), clips, tmp_path / "p", shard_size=2, rank=1, world_size=2, progress=False)
    assert not (tmp_path / "p" / "index.json").exists()  # rank 0's shards are not there yet
    extract_features(_counting_encoder([]), clips, tmp_path / "p", shard_size=2, rank=0, world_size=2, progress=False)
    one = extract_features(_counting_encoder([]), clips, tmp_path / "one", shard_size=2, progress=False)
    assert _files(tmp_path / "p") == _files(one)
    workers = extract_features(_counting_encoder([]), clips, tmp_path / "w", shard_size=2, num_workers=1,
                               progress=False)  # clips read in a DataLoader worker process
    assert _files(workers) == _files(one)
    with pytest.raises(ValueError, match="rank must be in"):
        extract_features(_counting_encoder([]), clips, tmp_path / "x", rank=2, world_size=2)
    with pytest.raises(ValueError, match="pass both rank and world_size"):
        extract_features(_counting_encoder([]), clips, tmp_path / "x", rank=0)
    mixed = [torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)]
    with pytest.raises(ValueError, match=r"clips 0..1 have frame shapes .*expected one \(t, 3, H, W\) shape"):
        extract_features(_counting_encoder([]), mixed, tmp_path / "m", batch_size=2, progress=False)
    with pytest.raises(KeyError, match="key 'normals' is not in clip 0"):
        extract_features(_counting_encoder([]), clips, tmp_path / "k", keep=("normals",), progress=False)
    assert not (tmp_path / "k" / "index.json").exists()
