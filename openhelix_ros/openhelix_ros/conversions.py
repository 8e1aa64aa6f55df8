"""Conversions between ROS messages and the numpy / ``openhelix_core`` types.

Written in numpy with explicit encodings so that cv_bridge is never needed. Every function
that reads a message validates it and raises :class:`InvalidMessageError` naming the cause;
callers refuse to act on such input. Nothing here needs ``rclpy.init``.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose, Quaternion
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from openhelix_core.types import Goal, TrajectoryChunk
from openhelix_msgs.msg import GoalEmbedding
from openhelix_msgs.msg import TrajectoryChunk as TrajectoryChunkMsg


class InvalidMessageError(ValueError):
    """A message that cannot be used; the text names the cause."""


# encoding -> (numpy dtype, channels)
_IMAGE_LAYOUTS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "16UC1": (np.uint16, 1),
    "mono16": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
MILLIMETRES_PER_METRE = 1000.0


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    whole = math.floor(seconds)
    nanosec = min(int(round((seconds - whole) * 1e9)), 999_999_999)
    return Time(sec=int(whole), nanosec=nanosec)


def seconds_to_duration(seconds: float) -> Duration:
    whole = math.floor(seconds)
    nanosec = min(int(round((seconds - whole) * 1e9)), 999_999_999)
    return Duration(sec=int(whole), nanosec=nanosec)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def _image_array(msg: Image, allowed: tuple[str, ...]) -> np.ndarray:
    """Returns the pixels as ``(H, W, C)`` in the encoding's dtype, honouring ``step`` padding."""
    if msg.encoding not in allowed:
        raise InvalidMessageError(
            f"image encoding '{msg.encoding}' is not supported here; expected one of {', '.join(allowed)}")
    dtype, channels = _IMAGE_LAYOUTS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    if msg.height == 0 or msg.width == 0:
        raise InvalidMessageError(f"image is empty ({msg.width}x{msg.height})")
    row_bytes = msg.width * channels * itemsize
    if msg.step < row_bytes:
        raise InvalidMessageError(
            f"image step {msg.step} is smaller than width*channels*bytes = {row_bytes} for '{msg.encoding}'")
    expected = msg.step * msg.height
    if len(msg.data) != expected:
        raise InvalidMessageError(
            f"image data has {len(msg.data)} bytes, expected step*height = {msg.step}*{msg.height} = {expected}")
    buffer = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)[:, :row_bytes]
    byte_order = ">" if msg.is_bigendian else "<"
    pixels = np.ascontiguousarray(buffer).view(np.dtype(dtype).newbyteorder(byte_order))
    return pixels.reshape(msg.height, msg.width, channels).astype(dtype, copy=False)


def image_to_rgb(msg: Image) -> np.ndarray:
    """Decodes a color image. Returns ``(H, W, 3)`` uint8 RGB."""
    pixels = _image_array(msg, COLOR_ENCODINGS)
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.ascontiguousarray(pixels[..., :3])


def image_to_depth(msg: Image) -> np.ndarray:
    """Decodes a depth image. Returns ``(H, W)`` float32 metres; 0 where there is no reading.

    16UC1 / mono16 hold millimetres (the REP 118 convention), 32FC1 holds metres.
    Non-finite and negative readings become 0.
    """
    pixels = _image_array(msg, DEPTH_ENCODINGS)[..., 0]
    if msg.encoding == "32FC1":
        depth = pixels.astype(np.float32)
    else:
        depth = pixels.astype(np.float32) / MILLIMETRES_PER_METRE
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


def rgb_to_image(rgb: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """Encodes ``(H, W, 3)`` uint8 RGB as rgb8 or bgr8."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"cannot encode RGB as '{encoding}'")
    pixels = rgb if encoding == "rgb8" else rgb[..., ::-1]
    height, width, _ = rgb.shape
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * 3, data=np.ascontiguousarray(pixels).tobytes())


def depth_to_image(depth_m: np.ndarray, header: Header, encoding: str = "32FC1") -> Image:
    """Encodes ``(H, W)`` metres as 32FC1 (metres) or 16UC1 (millimetres, rounded)."""
    if depth_m.ndim != 2:
        raise ValueError(f"expected (H, W) depth, got {depth_m.shape}")
    height, width = depth_m.shape
    if encoding == "32FC1":
        pixels = depth_m.astype("<f4")
    elif encoding == "16UC1":
        millimetres = np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * MILLIMETRES_PER_METRE
        pixels = np.clip(np.round(millimetres), 0, np.iinfo(np.uint16).max).astype("<u2")
    else:
        raise ValueError(f"cannot encode depth as '{encoding}'")
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * pixels.itemsize, data=pixels.tobytes())


# Plausible horizontal / vertical fields of view of a pinhole camera: a focal length outside
# them (1e-30 px, 1e9 px) would turn every depth pixel into a point far from the scene.
MIN_FIELD_OF_VIEW_DEG = 1.0
MAX_FIELD_OF_VIEW_DEG = 170.0
FINGERPRINT_SAMPLES = 16384


def check_image_size(msg: Image, max_width: int, max_height: int) -> None:
    """Refuses an image larger than the node accepts, from its header alone (before decoding)."""
    if msg.width > max_width or msg.height > max_height:
        raise InvalidMessageError(f"image is {msg.width}x{msg.height}, larger than the accepted "
                                  f"{max_width}x{max_height} (max_image_width / max_image_height)")


def image_fingerprint(msg: Image) -> bytes:
    """A cheap digest of an image's content (about 16k evenly spaced bytes): equal for a repeated frame."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    stride = max(1, len(data) // FINGERPRINT_SAMPLES)
    return hashlib.blake2b(data[::stride].tobytes(), digest_size=16).digest()


def camera_info_to_intrinsics(msg: CameraInfo, image_width: int | None = None,
                              image_height: int | None = None) -> np.ndarray:
    """Returns the ``(3, 3)`` pinhole matrix K, checked against the image it describes when given.

    With the image's size: the camera_info's size (when set) must equal it, the focal lengths
    must give a field of view between 1 and 170 degrees and the principal point must lie in the image.
    """
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise InvalidMessageError("camera_info has no valid intrinsics (K is zero or not finite)")
    if image_width is None or image_height is None:
        return k
    if (msg.width, msg.height) != (0, 0) and (msg.width, msg.height) != (image_width, image_height):
        raise InvalidMessageError(f"camera_info is for {msg.width}x{msg.height} images, the image is "
                                  f"{image_width}x{image_height}")
    for axis, focal, size in (("x", k[0, 0], image_width), ("y", k[1, 1], image_height)):
        field_of_view = math.degrees(2.0 * math.atan(size / (2.0 * focal)))
        if not MIN_FIELD_OF_VIEW_DEG <= field_of_view <= MAX_FIELD_OF_VIEW_DEG:
            raise InvalidMessageError(
                f"camera_info f{axis} = {focal:g} px gives a {field_of_view:.3g} deg field of view for "
                f"{size} px: not a plausible camera ({MIN_FIELD_OF_VIEW_DEG}-{MAX_FIELD_OF_VIEW_DEG} deg)")
    if not (0.0 <= k[0, 2] <= image_width and 0.0 <= k[1, 2] <= image_height):
        raise InvalidMessageError(f"camera_info principal point ({k[0, 2]:g}, {k[1, 2]:g}) lies outside the "
                                  f"{image_width}x{image_height} image")
    return k


def intrinsics_to_camera_info(intrinsics: np.ndarray, width: int, height: int, header: Header) -> CameraInfo:
    k = np.asarray(intrinsics, dtype=np.float64)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    return CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=k.ravel().tolist(), r=np.eye(3).ravel().tolist(),
                      p=projection.ravel().tolist())


def pose_to_arrays(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Returns position ``(3,)`` and a unit quaternion ``(4,)`` (x, y, z, w)."""
    position = np.array([pose.position.x, pose.position.y, pose.position.z])
    quaternion = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quaternion))):
        raise InvalidMessageError("pose contains NaN or inf")
    norm = np.linalg.norm(quaternion)
    if abs(norm - 1.0) > 1e-3:
        raise InvalidMessageError(f"pose orientation is not a unit quaternion (norm {norm:.4f})")
    return position, quaternion / norm


def arrays_to_pose(position: np.ndarray, quaternion: np.ndarray) -> Pose:
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in quaternion)
    return Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))


def goal_from_msg(msg: GoalEmbedding, expected_dim: int | None = None) -> Goal:
    embedding = np.asarray(msg.embedding, dtype=np.float32)
    if embedding.size == 0:
        raise InvalidMessageError("goal embedding is empty")
    if expected_dim is not None and embedding.size != expected_dim:
        raise InvalidMessageError(
            f"goal embedding has {embedding.size} values, the controller's model expects {expected_dim}")
    if not np.all(np.isfinite(embedding)):
        raise InvalidMessageError("goal embedding contains NaN or inf")
    return Goal(embedding=embedding, sequence=int(msg.sequence), instruction=msg.instruction,
                stamp=stamp_to_seconds(msg.header.stamp), model_id=msg.model_id)


def goal_to_msg(goal: Goal, frame_id: str = "") -> GoalEmbedding:
    return GoalEmbedding(header=Header(stamp=seconds_to_stamp(goal.stamp), frame_id=frame_id),
                         sequence=goal.sequence, instruction=goal.instruction,
                         embedding=np.asarray(goal.embedding, dtype=np.float32).ravel().tolist(),
                         model_id=goal.model_id)


def chunk_to_msg(chunk: TrajectoryChunk, header: Header, sequence: int) -> TrajectoryChunkMsg:
    return TrajectoryChunkMsg(
        header=header,
        sequence=sequence,
        poses=[arrays_to_pose(p, q) for p, q in zip(chunk.positions, chunk.orientations)],
        gripper_openness=np.asarray(chunk.gripper_openness, dtype=np.float32).tolist(),
        time_from_start=[seconds_to_duration(float(t)) for t in chunk.time_from_start],
        goal_sequence=chunk.goal_sequence,
        goal_instruction=chunk.goal_instruction,
        goal_age=seconds_to_duration(max(chunk.goal_age, 0.0)),
    )


def chunk_from_msg(msg: TrajectoryChunkMsg) -> TrajectoryChunk:
    steps = len(msg.poses)
    if steps == 0:
        raise InvalidMessageError("trajectory chunk has no waypoints")
    if len(msg.gripper_openness) != steps or len(msg.time_from_start) != steps:
        raise InvalidMessageError(
            f"trajectory chunk has {steps} poses but {len(msg.gripper_openness)} gripper values "
            f"and {len(msg.time_from_start)} times")
    poses = [pose_to_arrays(pose) for pose in msg.poses]
    openness = np.asarray(msg.gripper_openness, dtype=np.float64)
    if not np.all(np.isfinite(openness)):
        raise InvalidMessageError("trajectory chunk gripper openness contains NaN or inf")
    return TrajectoryChunk(
        positions=np.stack([p for p, _ in poses]),
        orientations=np.stack([q for _, q in poses]),
        gripper_openness=np.clip(openness, 0.0, 1.0),
        time_from_start=np.array([duration_to_seconds(t) for t in msg.time_from_start]),
        goal_sequence=int(msg.goal_sequence),
        goal_instruction=msg.goal_instruction,
        goal_age=duration_to_seconds(msg.goal_age),
    )


def points_to_pointcloud2(points: np.ndarray, colors: np.ndarray, header: Header) -> PointCloud2:
    """``(N, 3)`` metres and ``(N, 3)`` RGB in [0, 1] -> PointCloud2 with x, y, z, rgb (packed float)."""
    count = len(points)
    record = np.zeros(count, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    record["x"], record["y"], record["z"] = points[:, 0], points[:, 1], points[:, 2]
    rgb8 = np.clip(np.round(np.asarray(colors) * 255), 0, 255).astype(np.uint32)
    record["rgb"] = (rgb8[:, 0] << 16) | (rgb8[:, 1] << 8) | rgb8[:, 2]
    fields = [PointField(name=name, offset=4 * index, datatype=PointField.FLOAT32, count=1)
              for index, name in enumerate(("x", "y", "z", "rgb"))]
    return PointCloud2(header=header, height=1, width=count, fields=fields, is_bigendian=False,
                       point_step=16, row_step=16 * count, is_dense=True, data=record.tobytes())


def chunk_to_markers(chunk: TrajectoryChunk, header: Header, namespace: str = "openhelix") -> MarkerArray:
    """The planned TCP path as a line strip and the waypoints as spheres coloured by gripper openness."""
    points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in chunk.positions]
    path = Marker(header=header, ns=f"{namespace}/path", id=0, type=Marker.LINE_STRIP, action=Marker.ADD,
                  points=points, color=ColorRGBA(r=0.1, g=0.6, b=1.0, a=1.0))
    path.pose.orientation.w = 1.0
    path.scale.x = 0.005
    waypoints = Marker(header=header, ns=f"{namespace}/waypoints", id=1, type=Marker.SPHERE_LIST,
                       action=Marker.ADD, points=points,
                       colors=[ColorRGBA(r=1.0 - float(o), g=float(o), b=0.0, a=1.0) for o in chunk.gripper_openness])
    waypoints.pose.orientation.w = 1.0
    waypoints.scale.x = waypoints.scale.y = waypoints.scale.z = 0.012
    return MarkerArray(markers=[path, waypoints])
