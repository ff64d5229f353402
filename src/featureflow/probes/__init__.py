"""Probe heads: decode VFM features (b, h, w, D) into segmentation, depth, normals and RGB.

Base heads map features to a raw map ``head(features, size=(H, W)) -> (b, c, H, W)``:
:class:`DPTHead` (the released VFMF head, loads its weights), :class:`LinearHead` (the
light linear probe) and :class:`ConvDecoderHead` (small conv decoder, for RGB). Task
heads wrap any base head and add ``predict(features, size)`` and ``loss(features,
target)``: :class:`SegmentationHead`, :class:`DepthHead`, :class:`NormalsHead`,
:class:`RGBHead`.

Example:
    >>> import torch
    >>> from featureflow.probes import LinearHead, SegmentationHead
    >>> seg = SegmentationHead(LinearHead(feature_dim=32, out_channels=5), num_classes=5)
    >>> seg.predict(torch.randn(1, 4, 4, 32), size=(32, 32)).shape
    torch.Size([1, 32, 32])
"""

from featureflow.probes.conv_decoder import ConvDecoderHead
from featureflow.probes.depth import DepthHead
from featureflow.probes.dpt import DPTHead, released_dpt_config, strip_prefix
from featureflow.probes.linear import LinearHead
from featureflow.probes.normals import NormalsHead
from featureflow.probes.protocols import Probe, ProbeHead
from featureflow.probes.rgb import PixelPatchRGBHead, RGBHead
from featureflow.probes.segmentation import SegmentationHead
from featureflow.probes.task import TaskHead

__all__ = [
    "DPTHead",
    "LinearHead",
    "ConvDecoderHead",
    "TaskHead",
    "Probe",
    "ProbeHead",
    "SegmentationHead",
    "DepthHead",
    "NormalsHead",
    "RGBHead",
    "PixelPatchRGBHead",
    "strip_prefix",
    "released_dpt_config",
]
