"""Run by tests/test_features_sharded.py under torchrun: sharded feature extraction on a tiny encoder."""

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from featureflow.data import ToyWorldClips
from featureflow.encoders import ToyEncoder
from featureflow.training.features import extract_features


class Recording(torch.utils.data.Dataset):
    """Remembers which clips this process read."""

    def __init__(self, base):
        self.base, self.read = base, []

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.read.append(int(i))
        return self.base[i]


def tiny_setup():
    torch.manual_seed(0)
    encoder = ToyEncoder(image_size=16, patch_size=8, width=16, depth=1, heads=2, blocks=(0,)).eval()
    clips = ToyWorldClips("val", length=2, size=5, resolution=16, modalities=("rgb", "segmentation"))
    return encoder, clips


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    encoder, clips = tiny_setup()
    data = Recording(clips)
    extract_features(encoder, data, Path(out_dir) / "features", shard_size=2, batch_size=2,
                     keep=("segmentation",), fingerprint="tiny", progress=False)
    # every rank sees the finished cache when extract_features returns
    assert (Path(out_dir) / "features" / "index.json").is_file()
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(sorted(data.read)))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
