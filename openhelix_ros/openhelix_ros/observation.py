"""Builds an ``openhelix_core`` Observation from synchronized ROS messages.

A camera's pose comes from parameters (hand-eye calibration) -- mounted on the robot base
(fixed ``camera_to_base``) or on the end effector (fixed ``camera_to_ee``, composed with the
current EE pose) -- or, mount ``tf``, from TF at its image's stamp (the caller looks it up).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState

from openhelix_core.geometry import pose_to_matrix
from openhelix_core.types import CameraFrame, Observation
from openhelix_ros.conversions import (
    InvalidMessageError,
    camera_info_to_intrinsics,
    image_to_depth,
    image_to_rgb,
    pose_to_arrays,
    stamp_to_seconds,
)

MOUNTS = ("base", "ee")
TF_MOUNT = "tf"
EXTRINSICS_LENGTH = 7  # x, y, z, qx, qy, qz, qw


@dataclass(frozen=True)
class CameraMount:
    """Where a camera is fixed and its optical frame's pose in that frame, or (mount ``tf``) the
    TF frame its pose is looked up for."""

    name: str
    mount: str
    optical_to_mount: np.ndarray | None  # (4, 4); None for mount "tf"
    frame: str = ""


def camera_frames_from_parameters(names: Sequence[str], frames: Sequence[str]) -> list[CameraMount]:
    """Cameras whose poses come from TF; raises ValueError naming the inconsistency."""
    if len(frames) != len(names):
        raise ValueError(f"camera_frames has {len(frames)} entries for {len(names)} camera_names")
    empty = [name for name, frame in zip(names, frames) if not frame.strip()]
    if empty:
        raise ValueError(f"camera_frames: cameras {empty} have an empty frame name")
    return [CameraMount(name, TF_MOUNT, None, frame.strip().lstrip("/")) for name, frame in zip(names, frames)]


def camera_mounts_from_parameters(names: Sequence[str], mounts: Sequence[str],
                                  extrinsics: Sequence[float]) -> list[CameraMount]:
    """Parses the flat parameter lists; raises ValueError naming the inconsistency."""
    if len(mounts) != len(names):
        raise ValueError(f"camera_mounts has {len(mounts)} entries for {len(names)} camera_names")
    if len(extrinsics) != EXTRINSICS_LENGTH * len(names):
        raise ValueError(f"camera_extrinsics needs {EXTRINSICS_LENGTH} values (x y z qx qy qz qw) per camera: "
                         f"{EXTRINSICS_LENGTH * len(names)} for {len(names)} cameras, got {len(extrinsics)}")
    result = []
    for index, (name, mount) in enumerate(zip(names, mounts)):
        if mount not in MOUNTS:
            raise ValueError(f"camera '{name}': mount must be one of {MOUNTS}, got '{mount}'")
        values = np.asarray(extrinsics[EXTRINSICS_LENGTH * index:EXTRINSICS_LENGTH * (index + 1)], dtype=np.float64)
        quaternion = values[3:]
        if abs(np.linalg.norm(quaternion) - 1.0) > 1e-3:
            raise ValueError(f"camera '{name}': extrinsics quaternion {quaternion.tolist()} is not unit length")
        result.append(CameraMount(name, mount, pose_to_matrix(values[:3], quaternion)))
    return result


def gripper_openness(joint_state: JointState, finger_joints: Sequence[str], max_width: float) -> float:
    """Openness in [0, 1] from the finger joint positions (their sum is the opening width)."""
    positions = dict(zip(joint_state.name, joint_state.position))
    missing = [name for name in finger_joints if name not in positions]
    if missing:
        raise InvalidMessageError(f"joint_states lacks the gripper joints {missing}")
    width = sum(positions[name] for name in finger_joints)
    if not np.isfinite(width):
        raise InvalidMessageError("gripper joint positions contain NaN or inf")
    return float(np.clip(width / max_width, 0.0, 1.0))


def build_observation(cameras: Sequence[CameraMount], colors: Sequence[Image], depths: Sequence[Image],
                      infos: Sequence[CameraInfo | None], ee_pose: PoseStamped, openness: float,
                      camera_poses: Mapping[str, np.ndarray] | None = None) -> Observation:
    """Assembles one Observation; raises InvalidMessageError naming the first bad input.

    ``camera_poses``: ``(4, 4)`` optical frame in the base frame of each ``tf``-mounted camera."""
    ee_position, ee_orientation = pose_to_arrays(ee_pose.pose)
    ee_to_base = pose_to_matrix(ee_position, ee_orientation)
    frames = {}
    for camera, color_msg, depth_msg, info in zip(cameras, colors, depths, infos):
        if info is None:
            raise InvalidMessageError(f"camera '{camera.name}': no camera_info received yet")
        try:
            rgb = image_to_rgb(color_msg)
            depth = image_to_depth(depth_msg)
            intrinsics = camera_info_to_intrinsics(info, rgb.shape[1], rgb.shape[0])
        except InvalidMessageError as error:
            raise InvalidMessageError(f"camera '{camera.name}': {error}") from error
        if rgb.shape[:2] != depth.shape:
            raise InvalidMessageError(
                f"camera '{camera.name}': depth {depth.shape} is not registered to color {rgb.shape[:2]}")
        if not np.any(depth > 0):
            raise InvalidMessageError(f"camera '{camera.name}': depth image has no valid pixels")
        if camera.mount == TF_MOUNT:
            if camera_poses is None or camera.name not in camera_poses:
                raise InvalidMessageError(f"camera '{camera.name}': no pose of frame '{camera.frame}' from TF")
            to_base = camera_poses[camera.name]
        elif camera.mount == "base":
            to_base = camera.optical_to_mount
        else:
            to_base = ee_to_base @ camera.optical_to_mount
        frames[camera.name] = CameraFrame(rgb=rgb, depth=depth, intrinsics=intrinsics, camera_to_base=to_base)
    return Observation(cameras=frames, ee_position=ee_position, ee_orientation=ee_orientation,
                       gripper_openness=openness, stamp=stamp_to_seconds(colors[0].header.stamp))
