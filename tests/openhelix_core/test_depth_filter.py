"""Real-camera depth cleaning: crop box, flying pixels, outliers."""
import numpy as np
import pytest

from openhelix_core.pointcloud import DepthFilter

K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
# camera 1 m above the base origin looking straight down (optical z = base -z)
CAMERA_TO_BASE = np.array([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1.0], [0, 0, 0, 1]])


def table_depth():
    depth = np.full((48, 64), 1.0, np.float32)  # table at base z = 0
    depth[20:28, 30:38] = 0.9  # a block 10 cm tall
    return depth


def test_crop_box_rejects_points_outside():
    depth = table_depth()
    kept = DepthFilter(crop_min=(-1, -1, 0.05), crop_max=(1, 1, 1)).apply(depth, K, CAMERA_TO_BASE)
    assert np.all(kept[20:28, 30:38] == pytest.approx(0.9))
    assert np.count_nonzero(kept) == 64  # only the block is above 5 cm
    assert not DepthFilter().active and DepthFilter(crop_min=(0, 0, 0), crop_max=(1, 1, 1)).active


def test_flying_pixels_between_surfaces_are_removed():
    depth = table_depth()
    depth[19, 30:38] = 0.95  # a smeared edge row between block and table
    cleaned = DepthFilter(flying_pixel_threshold=0.03).apply(depth, K, CAMERA_TO_BASE)
    assert np.all(cleaned[19, 31:37] == 0)
    assert cleaned[5, 5] == pytest.approx(1.0) and cleaned[24, 34] == pytest.approx(0.9)


def test_isolated_points_are_outliers():
    depth = np.zeros((48, 64), np.float32)
    depth[10:30, 10:30] = 1.0
    depth[40, 60] = 0.3  # a lone speck 70 cm in front of the table
    cleaned = DepthFilter(outlier_radius=0.03, outlier_min_neighbors=4).apply(depth, K, CAMERA_TO_BASE)
    assert cleaned[40, 60] == 0 and np.count_nonzero(cleaned) == 400


def test_invalid_readings_and_bad_configuration():
    depth = table_depth()
    depth[0, 0], depth[0, 1] = np.nan, -1.0
    cleaned = DepthFilter(crop_min=(-5, -5, -5), crop_max=(5, 5, 5)).apply(depth, K, CAMERA_TO_BASE)
    assert cleaned[0, 0] == 0 and cleaned[0, 1] == 0
    with pytest.raises(ValueError, match="below crop_max"):
        DepthFilter(crop_min=(0, 0, 0), crop_max=(1, 1, 0))
