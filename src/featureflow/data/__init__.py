"""Data: the ToyWorld simulator and its datasets; readers for frame folders, videos and Kubric MOVi.

Example:
    >>> from featureflow.data import ToyWorld, CLASSES
    >>> CLASSES[2], ToyWorld.split_seeds("test")[0]
    ('sphere', 1010000)
"""

from featureflow.data.camera import PinholeCamera
from featureflow.data.datasets import MODALITIES, ToyWorldClips, ToyWorldWindows
from featureflow.data.dynamics import ToyState
from featureflow.data.frames import IMAGE_EXTENSIONS, read_frames, read_video, to_uint8, write_frames
from featureflow.data.kubric import KubricClip, read_kubric, read_png
from featureflow.data.toyworld import CLASSES, SPLITS, ToyClip, ToyWorld

__all__ = [
    "CLASSES",
    "SPLITS",
    "MODALITIES",
    "IMAGE_EXTENSIONS",
    "PinholeCamera",
    "ToyClip",
    "ToyState",
    "ToyWorld",
    "ToyWorldClips",
    "ToyWorldWindows",
    "KubricClip",
    "read_frames",
    "write_frames",
    "read_video",
    "read_kubric",
    "read_png",
    "to_uint8",
]
