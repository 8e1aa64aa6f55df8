"""Image, camera-info, pose, goal and chunk conversions, on messages built in memory."""
import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from openhelix_core.types import Goal, TrajectoryChunk
from openhelix_msgs.msg import GoalEmbedding
from openhelix_ros.conversions import (
    InvalidMessageError,
    arrays_to_pose,
    camera_info_to_intrinsics,
    chunk_from_msg,
    chunk_to_msg,
    depth_to_image,
    goal_from_msg,
    goal_to_msg,
    image_to_depth,
    image_to_rgb,
    intrinsics_to_camera_info,
    pose_to_arrays,
    rgb_to_image,
    seconds_to_stamp,
    stamp_to_seconds,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)


def raw_image(pixels: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False) -> Image:
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = pixels.astype(dtype).reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, padding), 7, np.uint8)], axis=1)
    return Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian),
                 step=padded.shape[1], data=padded.tobytes())


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, np.full((4, 5, 1), 255, np.uint8)], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], np.zeros((4, 5, 1), np.uint8)], axis=2)),
])
@pytest.mark.parametrize("padding", [0, 3])
def test_color_encodings_decode_to_the_same_rgb(encoding, pixels, padding):
    np.testing.assert_array_equal(image_to_rgb(raw_image(pixels, encoding, padding)), RGB)


def test_mono8_becomes_grey_rgb():
    grey = RGB[..., 0]
    rgb = image_to_rgb(raw_image(grey, "mono8"))
    assert rgb.shape == (4, 5, 3)
    np.testing.assert_array_equal(rgb[..., 1], grey)


def test_16uc1_depth_is_millimetres_and_32fc1_is_metres():
    millimetres = np.array([[1234, 0], [65535, 500]], dtype=np.uint16)
    depth = image_to_depth(raw_image(millimetres, "16UC1"))
    assert depth.dtype == np.float32
    assert depth[0, 0] == pytest.approx(1.234)
    assert depth[0, 1] == 0.0 and depth[1, 1] == pytest.approx(0.5)
    big_endian = image_to_depth(raw_image(millimetres, "16UC1", bigendian=True))
    np.testing.assert_array_equal(big_endian, depth)
    metres = np.array([[1.5, np.nan], [-1.0, np.inf]], dtype=np.float32)
    decoded = image_to_depth(raw_image(metres, "32FC1", padding=4))
    np.testing.assert_array_equal(decoded, [[1.5, 0.0], [0.0, 0.0]])


def test_encoders_round_trip():
    header = Header(frame_id="cam")
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(RGB, header, "bgr8")), RGB)
    depth = np.array([[0.25, 1.0], [2.5, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(image_to_depth(depth_to_image(depth, header)), depth)
    np.testing.assert_allclose(image_to_depth(depth_to_image(depth, header, "16UC1")), depth, atol=5e-4)


@pytest.mark.parametrize("mutate, cause", [
    (lambda m: setattr(m, "encoding", "yuv422"), "encoding 'yuv422'"),
    (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "bytes, expected"),
    (lambda m: setattr(m, "step", 2), "step 2 is smaller"),
    (lambda m: setattr(m, "height", 0), "empty"),
])
def test_bad_images_name_the_cause(mutate, cause):
    msg = raw_image(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(InvalidMessageError, match=cause):
        image_to_rgb(msg)


def test_depth_reader_refuses_color_and_color_reader_refuses_depth():
    with pytest.raises(InvalidMessageError, match="rgb8"):
        image_to_depth(raw_image(RGB, "rgb8"))
    with pytest.raises(InvalidMessageError, match="32FC1"):
        image_to_rgb(raw_image(np.ones((2, 2), np.float32), "32FC1"))


def test_camera_info_round_trip_and_invalid_k():
    k = np.array([[100.0, 0, 50], [0, 110.0, 40], [0, 0, 1]])
    info = intrinsics_to_camera_info(k, 100, 80, Header())
    np.testing.assert_array_equal(camera_info_to_intrinsics(info), k)
    info.k = [0.0] * 9
    with pytest.raises(InvalidMessageError, match="intrinsics"):
        camera_info_to_intrinsics(info)


def test_stamps_round_trip_without_overflowing_nanoseconds():
    for seconds in (0.0, 1.5, 1700000000.123456789, 2.9999999999):
        stamp = seconds_to_stamp(seconds)
        assert 0 <= stamp.nanosec < 1_000_000_000
        assert stamp_to_seconds(stamp) == pytest.approx(seconds, abs=1e-6)


def test_pose_validation():
    pose = arrays_to_pose(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.0, 1.0]))
    position, quaternion = pose_to_arrays(pose)
    np.testing.assert_array_equal(position, [1, 2, 3])
    pose.orientation.w = 0.5
    with pytest.raises(InvalidMessageError, match="unit quaternion"):
        pose_to_arrays(pose)
    pose.orientation.w = 1.0
    pose.position.x = float("nan")
    with pytest.raises(InvalidMessageError, match="NaN"):
        pose_to_arrays(pose)


def test_goal_round_trip_and_refusals():
    goal = Goal(embedding=np.arange(512, dtype=np.float32), sequence=7, instruction="open the drawer",
                stamp=12.25, model_id="tiny")
    decoded = goal_from_msg(goal_to_msg(goal), expected_dim=512)
    np.testing.assert_array_equal(decoded.embedding, goal.embedding)
    assert (decoded.sequence, decoded.instruction, decoded.stamp, decoded.model_id) == (7, "open the drawer", 12.25, "tiny")
    with pytest.raises(InvalidMessageError, match="expects 512"):
        goal_from_msg(GoalEmbedding(embedding=[0.0] * 511), expected_dim=512)
    with pytest.raises(InvalidMessageError, match="NaN"):
        goal_from_msg(GoalEmbedding(embedding=[float("nan")] * 512))
    with pytest.raises(InvalidMessageError, match="empty"):
        goal_from_msg(GoalEmbedding())


def make_chunk(steps: int = 3) -> TrajectoryChunk:
    return TrajectoryChunk(positions=np.arange(steps * 3, dtype=float).reshape(steps, 3),
                           orientations=np.tile([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)], (steps, 1)),
                           gripper_openness=np.linspace(0, 1, steps), time_from_start=np.arange(1, steps + 1) / 30,
                           goal_sequence=4, goal_instruction="push", goal_age=0.25)


def test_chunk_round_trip():
    chunk = make_chunk()
    msg = chunk_to_msg(chunk, Header(frame_id="world"), sequence=9)
    assert msg.sequence == 9 and msg.goal_sequence == 4
    decoded = chunk_from_msg(msg)
    np.testing.assert_allclose(decoded.positions, chunk.positions)
    np.testing.assert_allclose(decoded.orientations, chunk.orientations)
    np.testing.assert_allclose(decoded.gripper_openness, chunk.gripper_openness, atol=1e-6)
    np.testing.assert_allclose(decoded.time_from_start, chunk.time_from_start, atol=1e-9)
    assert decoded.goal_age == pytest.approx(0.25)


def test_inconsistent_chunk_is_refused():
    msg = chunk_to_msg(make_chunk(), Header(), sequence=1)
    msg.gripper_openness = msg.gripper_openness[:2]
    with pytest.raises(InvalidMessageError, match="3 poses but 2 gripper"):
        chunk_from_msg(msg)
    with pytest.raises(InvalidMessageError, match="no waypoints"):
        chunk_from_msg(chunk_to_msg(make_chunk(), Header(), 1).__class__())


def test_point_cloud_message_packs_xyz_and_rgb():
    from openhelix_ros.conversions import points_to_pointcloud2
    points = np.array([[0.1, 0.2, 0.3], [-1.0, 0.0, 2.0]])
    colors = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]])
    cloud = points_to_pointcloud2(points, colors, Header(frame_id="world"))
    assert (cloud.width, cloud.point_step, [f.name for f in cloud.fields]) == (2, 16, ["x", "y", "z", "rgb"])
    record = np.frombuffer(bytes(cloud.data), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    np.testing.assert_allclose(np.stack([record["x"], record["y"], record["z"]], axis=1), points, rtol=1e-6)
    assert record["rgb"][0] == 0xFF0000 and record["rgb"][1] == (128 << 8 | 255)


def test_planned_path_markers_follow_the_chunk():
    from visualization_msgs.msg import Marker

    from openhelix_ros.conversions import chunk_to_markers
    chunk = make_chunk(4)
    markers = chunk_to_markers(chunk, Header(frame_id="world")).markers
    assert [m.type for m in markers] == [Marker.LINE_STRIP, Marker.SPHERE_LIST]
    assert [p.x for p in markers[0].points] == pytest.approx(chunk.positions[:, 0].tolist())
    assert markers[1].colors[0].r == pytest.approx(1.0) and markers[1].colors[-1].g == pytest.approx(1.0)
