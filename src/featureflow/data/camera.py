"""A static pinhole camera (OpenCV axes) and the per-pixel rays ToyWorld casts.

Camera frame: x right, y down, z forward (the viewing direction). Depth is the camera
z coordinate of the surface point, in metres. Pixel ``(u, v)`` (column, row) has its
centre at ``(u + 0.5, v + 0.5)`` in the intrinsics' coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PinholeCamera"]


@dataclass(frozen=True)
class PinholeCamera:
    """A static perspective camera looking at a target point.

    Attributes:
        position: (3,) float64 camera centre in world coordinates (metres).
        rotation: (3, 3) float64 world-to-camera rotation; its rows are the camera's
            right, down and forward axes written in world coordinates.
        intrinsics: (3, 3) float64 matrix ``K`` (focal length ``f``, principal point
            at the image centre).
        height: image height in pixels.
        width: image width in pixels.

    Example:
        >>> cam = PinholeCamera.look_at(resolution=4, distance=5.0, elevation_deg=60.0, fov_deg=50.0)
        >>> tuple(cam.rays().shape)
        (3, 16)
        >>> round(float(cam.position[2]), 3)
        4.33
    """

    position: Tensor
    rotation: Tensor
    intrinsics: Tensor
    height: int
    width: int

    @staticmethod
    def look_at(
        resolution: int,
        distance: float,
        elevation_deg: float,
        fov_deg: float,
        target: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> "PinholeCamera":
        """A camera south of ``target`` (at -y), raised by ``elevation_deg``, looking at it.

        The world's up axis is +z (the floor is the plane z = 0); ``fov_deg`` is the full
        field of view across the (square) image.
        """
        if not 0.0 < elevation_deg < 90.0:
            raise ValueError(f"elevation_deg must be in (0, 90) degrees, got {elevation_deg}")
        if not 0.0 < fov_deg < 180.0:
            raise ValueError(f"fov_deg must be in (0, 180) degrees, got {fov_deg}")
        if distance <= 0:
            raise ValueError(f"distance must be > 0 metres, got {distance}")
        el = math.radians(elevation_deg)
        tgt = torch.tensor(target, dtype=torch.float64)
        position = tgt + distance * torch.tensor([0.0, -math.cos(el), math.sin(el)], dtype=torch.float64)
        forward = torch.tensor([0.0, math.cos(el), -math.sin(el)], dtype=torch.float64)
        right = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        down = torch.linalg.cross(forward, right)
        rotation = torch.stack([right, down, forward])
        f = (resolution / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
        c = resolution / 2.0
        intrinsics = torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=torch.float64)
        return PinholeCamera(position, rotation, intrinsics, resolution, resolution)

    def rays(self) -> Tensor:
        """World-space ray directions, (3, H*W) float64, scaled so their camera z is 1.

        With this scaling the ray parameter ``t`` of a hit point ``position + t * ray``
        equals the point's depth (camera z).
        """
        f, cx, cy = float(self.intrinsics[0, 0]), float(self.intrinsics[0, 2]), float(self.intrinsics[1, 2])
        v, u = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float64),
            torch.arange(self.width, dtype=torch.float64),
            indexing="ij",
        )
        xc = ((u + 0.5 - cx) / f).reshape(-1)
        yc = ((v + 0.5 - cy) / f).reshape(-1)
        right, down, forward = self.rotation
        return right[:, None] * xc + down[:, None] * yc + forward[:, None]

    def to_camera(self, vectors: Tensor) -> Tensor:
        """Rotate world-frame direction vectors (..., 3) into the camera frame."""
        return vectors @ self.rotation.to(vectors.dtype).T
