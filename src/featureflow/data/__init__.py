"""Data: the ToyWorld simulator, datasets by name, and readers for frame folders, videos, Kubric MOVi and Cityscapes.

Example:
    >>> from featureflow.data import ToyWorld, CLASSES, available_datasets
    >>> CLASSES[2], ToyWorld.split_seeds("test")[0], "cityscapes" in available_datasets()
    ('sphere', 1010000, True)
"""

from featureflow.data.camera import PinholeCamera
from featureflow.data.cityscapes import CITYSCAPES_CLASSES, IGNORE_INDEX, CityscapesClips, label_ids_to_train_ids
from featureflow.data.clips import SequenceClips, clip_starts
from featureflow.data.datasets import MODALITIES, ToyWorldClips, ToyWorldWindows
from featureflow.data.dynamics import ToyState
from featureflow.data.folders import FrameFolderClips
from featureflow.data.frames import IMAGE_EXTENSIONS, read_frames, read_image, read_video, to_uint8, write_frames
from featureflow.data.kubric import KubricClip, read_kubric, read_png
from featureflow.data.kubric_clips import KUBRIC_LABELS, KubricClips
from featureflow.data.registry import (
    available_datasets,
    build_dataset,
    dataset_from_config,
    dataset_labels,
    register_dataset,
)
from featureflow.data.toyworld import CLASSES, SPLITS, ToyClip, ToyWorld
from featureflow.data.video import VIDEO_EXTENSIONS, VideoClips, count_video_frames, decode_video, write_video

__all__ = [
    "CLASSES",
    "SPLITS",
    "MODALITIES",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "KUBRIC_LABELS",
    "CITYSCAPES_CLASSES",
    "IGNORE_INDEX",
    "PinholeCamera",
    "ToyClip",
    "ToyState",
    "ToyWorld",
    "ToyWorldClips",
    "ToyWorldWindows",
    "SequenceClips",
    "FrameFolderClips",
    "VideoClips",
    "KubricClips",
    "CityscapesClips",
    "KubricClip",
    "build_dataset",
    "dataset_from_config",
    "register_dataset",
    "available_datasets",
    "dataset_labels",
    "clip_starts",
    "label_ids_to_train_ids",
    "read_frames",
    "read_image",
    "write_frames",
    "read_video",
    "decode_video",
    "count_video_frames",
    "write_video",
    "read_kubric",
    "read_png",
    "to_uint8",
]
