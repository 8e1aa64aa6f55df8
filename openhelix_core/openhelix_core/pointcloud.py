"""Depth images to point clouds in the robot base frame.

Pinhole model with the ROS optical-frame convention (x right, y down, z forward):
a pixel at column ``u`` and row ``v`` (0-based pixel indices) with depth ``d``
back-projects to ``((u - cx) d / fx, (v - cy) d / fy, d)`` in the camera frame,
then ``camera_to_base`` maps it to the base frame.
"""
from __future__ import annotations

import numpy as np


def _validate(depth: np.ndarray, intrinsics: np.ndarray, camera_to_base: np.ndarray) -> None:
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if intrinsics.shape != (3, 3):
        raise ValueError(f"intrinsics must be (3, 3), got shape {intrinsics.shape}")
    if camera_to_base.shape != (4, 4):
        raise ValueError(f"camera_to_base must be (4, 4), got shape {camera_to_base.shape}")
    if not np.all(np.isfinite(intrinsics)):
        raise ValueError("intrinsics contain non-finite values")
    if not np.all(np.isfinite(camera_to_base)):
        raise ValueError("camera_to_base contains non-finite values")
    if intrinsics[0, 0] <= 0 or intrinsics[1, 1] <= 0:
        raise ValueError(f"intrinsics focal lengths must be positive, got fx={intrinsics[0, 0]}, "
                         f"fy={intrinsics[1, 1]}")


def depth_to_camera_points(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Back-project ``(H, W)`` depth (metres) to ``(H, W, 3)`` points in the optical frame.

    Invalid pixels (depth ``<= 0`` or non-finite) come out as NaN.
    """
    depth = np.asarray(depth, dtype=np.float64)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    _validate(depth, intrinsics, np.eye(4))
    height, width = depth.shape
    fx, fy = intrinsics[0, 0], intrinsics[1, 1]
    cx, cy = intrinsics[0, 2], intrinsics[1, 2]
    skew = intrinsics[0, 1]
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                       indexing="ij")
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, np.nan)
    y = (v - cy) * z / fy
    x = ((u - cx) - skew * (v - cy) / fy) * z / fx
    return np.stack([x, y, z], axis=-1)


def depth_to_points(depth: np.ndarray, intrinsics: np.ndarray,
                    camera_to_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a depth image into the robot base frame.

    Args:
        depth: ``(H, W)`` depth in metres along the optical axis; ``0`` or
            non-finite means "no reading".
        intrinsics: ``(3, 3)`` pinhole matrix ``K`` of the depth image.
        camera_to_base: ``(4, 4)`` transform from the optical frame to the base frame.

    Returns:
        ``(points, valid)``: ``points`` is ``(H, W, 3)`` float32 base-frame
        coordinates with NaN at invalid pixels, ``valid`` is the ``(H, W)`` bool mask.

    Raises:
        ValueError: wrong shapes or non-finite ``K`` / transform.
    """
    depth = np.asarray(depth, dtype=np.float64)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    camera_to_base = np.asarray(camera_to_base, dtype=np.float64)
    _validate(depth, intrinsics, camera_to_base)
    camera_points = depth_to_camera_points(depth, intrinsics)
    rotation, translation = camera_to_base[:3, :3], camera_to_base[:3, 3]
    points = camera_points @ rotation.T + translation
    valid = np.isfinite(depth) & (depth > 0)
    points[~valid] = np.nan
    return points.astype(np.float32), valid


__all__ = ["depth_to_camera_points", "depth_to_points"]
