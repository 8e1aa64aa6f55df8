"""Depth back-projection into the base frame."""
import numpy as np
import pytest

from openhelix_core.pointcloud import depth_to_camera_points, depth_to_points

K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
# Camera 1.5 m above the base origin offset by x = 0.5, looking straight down:
# optical x -> base +x, optical y -> base -y, optical z -> base -z.
CAMERA_TO_BASE = np.array([
    [1.0, 0.0, 0.0, 0.5],
    [0.0, -1.0, 0.0, 0.0],
    [0.0, 0.0, -1.0, 1.5],
    [0.0, 0.0, 0.0, 1.0],
])


def test_plane_at_known_depth_lands_on_table():
    depth = np.full((48, 64), 1.5, dtype=np.float32)
    points, valid = depth_to_points(depth, K, CAMERA_TO_BASE)
    assert points.shape == (48, 64, 3) and points.dtype == np.float32
    assert valid.all()
    np.testing.assert_allclose(points[..., 2], 0.0, atol=1e-6)  # the table plane z = 0
    np.testing.assert_allclose(points[24, 32], [0.5, 0.0, 0.0], atol=1e-6)  # principal point
    np.testing.assert_allclose(points[24, 42], [0.5 + 10 * 1.5 / 100, 0.0, 0.0], atol=1e-6)  # 10 px right
    np.testing.assert_allclose(points[44, 32], [0.5, -20 * 1.5 / 100, 0.0], atol=1e-6)  # 20 px down


def test_camera_frame_points_and_skew():
    depth = np.full((4, 5), 2.0)
    pts = depth_to_camera_points(depth, K)
    np.testing.assert_allclose(pts[3, 4], [(4 - 32) * 2 / 100, (3 - 24) * 2 / 100, 2.0])
    k_skew = K.copy()
    k_skew[0, 1] = 5.0
    pts = depth_to_camera_points(depth, k_skew)
    # Re-projecting with the skewed K gives back the pixel.
    u = (k_skew @ (pts[3, 4] / pts[3, 4, 2]))
    np.testing.assert_allclose(u[:2], [4.0, 3.0], atol=1e-9)


def test_invalid_depth_is_marked():
    depth = np.full((6, 6), 1.0, dtype=np.float32)
    depth[0, 0] = 0.0
    depth[1, 1] = np.nan
    depth[2, 2] = np.inf
    depth[3, 3] = -1.0
    points, valid = depth_to_points(depth, K, CAMERA_TO_BASE)
    for r, c in [(0, 0), (1, 1), (2, 2), (3, 3)]:
        assert not valid[r, c]
        assert np.isnan(points[r, c]).all()
    assert valid.sum() == 32
    assert np.isfinite(points[valid]).all()


@pytest.mark.parametrize("depth, k, t, match", [
    (np.ones((4, 4, 1)), K, CAMERA_TO_BASE, "depth"),
    (np.ones((4, 4)), np.eye(4), CAMERA_TO_BASE, "intrinsics"),
    (np.ones((4, 4)), K, np.eye(3), "camera_to_base"),
    (np.ones((4, 4)), K, np.full((4, 4), np.nan), "camera_to_base"),
])
def test_bad_inputs_raise(depth, k, t, match):
    with pytest.raises(ValueError, match=match):
        depth_to_points(depth, k, t)
