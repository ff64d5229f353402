"""Datasets by name: ``build_dataset("video", root=..., length=8)``; ``register_dataset`` plugs in your own.

Built-in names and their classes:

=============  ==========================================  =====================================
name           class                                       labels
=============  ==========================================  =====================================
toyworld       `featureflow.data.ToyWorldClips`            rgb, depth, normals, segmentation, instances
frames         `featureflow.data.FrameFolderClips`         none
video          `featureflow.data.VideoClips` (PyAV)        none
kubric         `featureflow.data.KubricClips`              depth, normals, segmentation (export layout)
cityscapes     `featureflow.data.CityscapesClips`          segmentation + labeled (20th frame of a snippet)
=============  ==========================================  =====================================

Every built-in takes ``length`` (frames per clip) and ``split``; the file-backed ones
also ``root``, ``stride``, ``hop``, ``resolution`` and ``max_clips``. Items are dicts
with ``rgb`` (t, 3, H, W) float32 in [0, 1] and the dataset's labels.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch.utils.data import Dataset

from featureflow.data.cityscapes import CityscapesClips
from featureflow.data.datasets import ToyWorldClips
from featureflow.data.folders import FrameFolderClips
from featureflow.data.kubric_clips import KubricClips
from featureflow.data.video import VideoClips

__all__ = ["build_dataset", "dataset_from_config", "register_dataset", "available_datasets", "dataset_labels"]

_REGISTRY: dict[str, Callable[..., Dataset]] = {
    "toyworld": ToyWorldClips,
    "frames": FrameFolderClips,
    "video": VideoClips,
    "kubric": KubricClips,
    "cityscapes": CityscapesClips,
}


def register_dataset(name: str, factory: Callable[..., Dataset], *, overwrite: bool = False) -> None:
    """Make ``build_dataset(name, **kw)`` return ``factory(**kw)``.

    ``factory`` is usually a map-style ``Dataset`` class whose items are dicts with an
    ``rgb`` (t, 3, H, W) tensor in [0, 1].

    Example:
        >>> import torch
        >>> class Noise(torch.utils.data.Dataset):
        ...     def __init__(self, length=2): self.length = length
        ...     def __len__(self): return 3
        ...     def __getitem__(self, i): return {"rgb": torch.rand(self.length, 3, 8, 8)}
        >>> register_dataset("noise", Noise, overwrite=True)
        >>> item = build_dataset("noise", length=4)[0]
        >>> tuple(item["rgb"].shape)
        (4, 3, 8, 8)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"dataset factory for {name!r} must be callable (a Dataset class or function), got {factory!r}")
    key = name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not factory and not overwrite:
        raise ValueError(f"dataset {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = factory


def available_datasets() -> list[str]:
    """Registered dataset names.

    Example:
        >>> {"toyworld", "frames", "video", "kubric", "cityscapes"} <= set(available_datasets())
        True
    """
    return sorted(_REGISTRY)


def build_dataset(name: str, **config: Any) -> Dataset:
    """Build a registered dataset by name; ``config`` goes to its constructor.

    Unknown names and unknown keyword arguments get an error that lists the choices.

    Example:
        >>> ds = build_dataset("toyworld", split="val", length=3, resolution=16, size=2)
        >>> item = ds[0]
        >>> len(ds), tuple(item["rgb"].shape)
        (2, (3, 3, 16, 16))
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; expected one of {available_datasets()}")
    factory = _REGISTRY[key]
    try:
        return factory(**config)
    except TypeError as err:
        if "unexpected keyword argument" in str(err) or "missing" in str(err) and "required" in str(err):
            raise TypeError(f"dataset {name!r} ({getattr(factory, '__name__', factory)}): {err}") from None
        raise


def dataset_from_config(data: Mapping[str, Any], *, split: str | None = None, size: int | None = None) -> Dataset:
    """The dataset described by a training config's ``data`` section.

    ``data["dataset"]`` (or the older ``data["world"]``; default ``"toyworld"``) names
    the dataset; ``clip_length`` becomes ``length`` (default 8); ``train_clips`` (or
    ``size``) caps the number of clips (ToyWorld's ``size``, the others' ``max_clips``);
    ToyWorld's ``resolution`` defaults to 64. Every other key goes to the dataset's
    constructor unchanged (``root``, ``stride``, ``hop``, ``resolution``, ``suite``,
    ``label_position``, ...), so an unknown key is an error that names the dataset.

    Args:
        data: the ``data`` section.
        split: the split to read (default: the dataset's own default, ``"train"`` for
            ToyWorld, Kubric and Cityscapes, ``root`` itself for frames and video).
        size: overrides ``train_clips``.

    Example:
        >>> ds = dataset_from_config({"world": "toyworld", "resolution": 16, "train_clips": 3, "clip_length": 2})
        >>> item = ds[0]
        >>> len(ds), tuple(item["rgb"].shape)
        (3, (2, 3, 16, 16))
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"the data section must be a JSON object, got {type(data).__name__}")
    config = dict(data)
    if "dataset" in config and "world" in config and config["dataset"] != config["world"]:
        raise ValueError(f"data names two datasets: dataset={config['dataset']!r}, world={config['world']!r}")
    name = str(config.pop("dataset", config.pop("world", "toyworld")))
    config.pop("world", None)
    config["length"] = int(config.pop("clip_length", config.get("length", 8)))
    cap = config.pop("size", config.pop("train_clips", None))
    cap = size if size is not None else cap
    if name.lower() == "toyworld":
        config.setdefault("resolution", 64)
        if cap is not None:
            config["size"] = int(cap)
    elif cap is not None:
        config["max_clips"] = int(cap)
    if split is not None:
        config["split"] = split
    return build_dataset(name, **config)


def dataset_labels(dataset: Dataset) -> tuple[str, ...]:
    """The label fields (item keys other than ``rgb``) of a dataset, read from its first item.

    Example:
        >>> dataset_labels(build_dataset("toyworld", length=1, resolution=8, size=1, modalities=("rgb", "depth")))
        ('depth',)
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("the dataset is empty; expected at least one clip")
    item = dataset[0]
    if not isinstance(item, dict) or "rgb" not in item:
        raise TypeError(f"dataset items must be dicts with an 'rgb' tensor, got {type(item).__name__}")
    return tuple(k for k, v in item.items() if k != "rgb" and hasattr(v, "shape") and k != "seed")
