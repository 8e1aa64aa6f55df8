"""Depth images to point clouds in the robot base frame.

Pinhole model with the ROS optical-frame convention (x right, y down, z forward):
a pixel at column ``u`` and row ``v`` (0-based pixel indices) with depth ``d``
back-projects to ``((u - cx) d / fx, (v - cy) d / fy, d)`` in the camera frame,
then ``camera_to_base`` maps it to the base frame.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class DepthFilter:
    """Cleans a real camera's depth before System 1 sees it; rejected pixels become 0 (no reading).

    The same filter runs on the robot, on bags and in the simulator, so what is evaluated is
    what is deployed.

    Attributes:
        crop_min: ``(3,)`` lower corner (m, base frame) of the box kept; points outside are rejected.
        crop_max: ``(3,)`` upper corner.
        flying_pixel_threshold: reject pixels whose depth differs from a 4-neighbour by more than
            this fraction of their own depth (the smeared edges of time-of-flight / stereo
            cameras); 0 disables.
        outlier_radius: radius (m) of the neighbourhood counted by outlier removal; 0 disables.
        outlier_min_neighbors: points with fewer neighbours within ``outlier_radius`` are rejected.
    """

    crop_min: tuple[float, float, float] = (-np.inf, -np.inf, -np.inf)
    crop_max: tuple[float, float, float] = (np.inf, np.inf, np.inf)
    flying_pixel_threshold: float = 0.0
    outlier_radius: float = 0.0
    outlier_min_neighbors: int = 5

    def __post_init__(self) -> None:
        low, high = np.asarray(self.crop_min, float), np.asarray(self.crop_max, float)
        if low.shape != (3,) or high.shape != (3,) or np.any(low >= high):
            raise ValueError(f"crop_min {low.tolist()} must be 3 values below crop_max {high.tolist()}")
        if self.flying_pixel_threshold < 0 or self.outlier_radius < 0 or self.outlier_min_neighbors < 1:
            raise ValueError("flying_pixel_threshold and outlier_radius must be >= 0, outlier_min_neighbors >= 1")

    @property
    def active(self) -> bool:
        return bool(np.any(np.isfinite(self.crop_min)) or np.any(np.isfinite(self.crop_max))
                    or self.flying_pixel_threshold > 0 or self.outlier_radius > 0)

    def apply(self, depth: np.ndarray, intrinsics: np.ndarray, camera_to_base: np.ndarray) -> np.ndarray:
        """Returns a copy of ``(H, W)`` depth with rejected pixels set to 0."""
        depth = np.array(depth, dtype=np.float32)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        if self.flying_pixel_threshold > 0:
            depth[_flying_pixels(depth, self.flying_pixel_threshold)] = 0.0
        points, valid = depth_to_points(depth, intrinsics, camera_to_base)
        inside = valid & np.all((points >= self.crop_min) & (points <= self.crop_max), axis=-1)
        if self.outlier_radius > 0 and inside.any():
            kept = _radius_inliers(points[inside], self.outlier_radius, self.outlier_min_neighbors)
            rows, cols = np.nonzero(inside)
            inside[rows[~kept], cols[~kept]] = False
        depth[~inside] = 0.0
        return depth


def _flying_pixels(depth: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose depth jumps by more than ``threshold * depth`` to any valid 4-neighbour."""
    padded = np.pad(depth, 1, mode="edge")
    flying = np.zeros(depth.shape, dtype=bool)
    for d_row, d_col in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + d_row:1 + d_row + depth.shape[0], 1 + d_col:1 + d_col + depth.shape[1]]
        jump = np.abs(depth - neighbour) > threshold * depth
        flying |= jump & (neighbour > 0) & (depth > 0)
    return flying


def _radius_inliers(points: np.ndarray, radius: float, min_neighbors: int) -> np.ndarray:
    """Radius outlier removal: True for points with >= ``min_neighbors`` others within ``radius``.

    Uses open3d when it is installed; otherwise a voxel-hash count in numpy (neighbours are
    counted in the 27 voxels of side ``radius`` around each point, an over-approximation of
    the ball that keeps the test conservative).
    """
    try:
        import open3d
    except ImportError:
        open3d = None
    if open3d is not None:
        cloud = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(points.astype(np.float64)))
        _, kept_indices = cloud.remove_radius_outlier(nb_points=min_neighbors + 1, radius=radius)
        kept = np.zeros(len(points), dtype=bool)
        kept[np.asarray(kept_indices, dtype=int)] = True
        return kept
    voxels = np.floor(points / radius).astype(np.int64)
    unique, inverse, counts = np.unique(voxels, axis=0, return_inverse=True, return_counts=True)
    lookup = {tuple(v): c for v, c in zip(unique.tolist(), counts.tolist(), strict=True)}
    offsets = np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T
    neighbourhood = np.array([sum(lookup.get((v[0] + o[0], v[1] + o[1], v[2] + o[2]), 0) for o in offsets)
                              for v in unique.tolist()])
    return neighbourhood[inverse.ravel()] - 1 >= min_neighbors


__all__ = ["DepthFilter", "depth_to_camera_points", "depth_to_points"]
