"""Data exchanged between the policy and its callers (ROS nodes, simulators, bag replay).

Conventions, fixed across the suite:
- positions in metres, in the robot base frame;
- quaternions ``(x, y, z, w)`` as in ROS ``geometry_msgs``;
- images ``(H, W, 3)`` uint8 RGB; depth ``(H, W)`` float32 metres, 0 or non-finite = no reading;
- gripper openness in ``[0, 1]``: 1 fully open, 0 fully closed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraFrame:
    """One synchronized RGB-D frame of one camera.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 RGB image.
        depth: ``(H, W)`` float32 depth in metres, registered to ``rgb``.
        intrinsics: ``(3, 3)`` pinhole matrix K of the image.
        camera_to_base: ``(4, 4)`` homogeneous transform from the optical frame
            (x right, y down, z forward) to the robot base frame.
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray
    camera_to_base: np.ndarray


@dataclass(frozen=True)
class Observation:
    """What System 1 reads at one control step.

    Attributes:
        cameras: camera name (e.g. ``"static"``, ``"gripper"``) to its frame.
        ee_position: ``(3,)`` tool-centre-point position.
        ee_orientation: ``(4,)`` tool-centre-point quaternion ``(x, y, z, w)``.
        gripper_openness: scalar in ``[0, 1]``.
        stamp: observation time in seconds (camera header stamp).
    """

    cameras: dict[str, CameraFrame]
    ee_position: np.ndarray
    ee_orientation: np.ndarray
    gripper_openness: float
    stamp: float = 0.0


@dataclass(frozen=True)
class Goal:
    """A System 2 goal embedding and where it came from.

    Attributes:
        embedding: ``(D,)`` float32 goal vector (D = 512 for OpenHelix).
        sequence: planner's sequence number, 1 for its first goal.
        instruction: the instruction it was computed for.
        stamp: stamp (seconds) of the image it was computed from.
        model_id: identifies the System 2 model and checkpoint.
    """

    embedding: np.ndarray
    sequence: int
    instruction: str
    stamp: float
    model_id: str = ""


@dataclass(frozen=True)
class TrajectoryChunk:
    """End-effector waypoints predicted by System 1.

    Attributes:
        positions: ``(T, 3)`` absolute TCP positions in the base frame.
        orientations: ``(T, 4)`` absolute TCP quaternions ``(x, y, z, w)``.
        gripper_openness: ``(T,)`` in ``[0, 1]``.
        time_from_start: ``(T,)`` seconds after the observation stamp.
        goal_sequence: sequence of the goal the chunk was conditioned on (0 = none).
        goal_instruction: instruction of that goal.
        goal_age: observation stamp minus goal stamp, seconds.
    """

    positions: np.ndarray
    orientations: np.ndarray
    gripper_openness: np.ndarray
    time_from_start: np.ndarray
    goal_sequence: int = 0
    goal_instruction: str = ""
    goal_age: float = 0.0

    def __post_init__(self) -> None:
        steps = len(self.positions)
        expected = {"positions": (steps, 3), "orientations": (steps, 4),
                    "gripper_openness": (steps,), "time_from_start": (steps,)}
        for name, shape in expected.items():
            actual = np.shape(getattr(self, name))
            if actual != shape:
                raise ValueError(f"TrajectoryChunk.{name} has shape {actual}, expected {shape}")
        if steps == 0:
            raise ValueError("TrajectoryChunk needs at least one waypoint")

    def __len__(self) -> int:
        return len(self.positions)
