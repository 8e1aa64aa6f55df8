"""Joint-space commands from Cartesian TCP commands: what a ros2_control arm is sent.

ros2_control's ``joint_trajectory_controller`` takes ``trajectory_msgs/JointTrajectory`` points,
not poses. :class:`JointCommandPlanner` turns one TCP pose command (after blending and limits)
into one such point, free of ROS: IK from the arm's URDF seeded with the measured joint
positions (``/joint_states``), positions inside the URDF limits, and a ``time_from_start`` long
enough that the controller's interpolation from the measured positions stays within the URDF
velocity limits. When IK does not converge within tolerance it raises rather than sending a
point that misses the pose::

    planner = JointCommandPlanner.from_urdf(urdf_text, "panda_link0", "tcp", min_duration_s=1 / 30)
    command = planner.plan(position, quaternion_xyzw, joint_state.name, joint_state.position)
    # command.joint_names, command.positions, command.time_from_start_s -> a JointTrajectoryPoint

Every refusal is an :class:`~openhelix_core.inverse_kinematics.IkError` (a ``ValueError``) naming
the cause: a missing or non-finite joint, a bad pose, or the residual errors of an unconverged
solve (:class:`IkNotConvergedError`, which carries the solution).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..inverse_kinematics import IkError, IkSolution, InverseKinematics
from ..kinematics import (
    QUATERNION_NORM_TOLERANCE,
    KinematicChain,
    KinematicsError,
    quaternion_to_matrix,
    transform,
)


class IkNotConvergedError(IkError):
    """IK found no joint positions within tolerance of the commanded pose; ``solution`` is its best try."""

    def __init__(self, message: str, solution: IkSolution) -> None:
        super().__init__(message)
        self.solution = solution


@dataclass(frozen=True)
class JointCommand:
    """One joint trajectory point; ``positions`` is read-only."""

    joint_names: tuple[str, ...]   # the chain's movable joints, base to tip
    positions: np.ndarray          # (J,) rad / m, inside the URDF position limits
    time_from_start_s: float       # when the positions are to be reached, from now
    solution: IkSolution


class JointCommandPlanner:
    """TCP pose + measured joint state -> :class:`JointCommand` (see the module doc).

    ``min_duration_s`` is the shortest ``time_from_start``, typically the command period: a
    point due sooner than the next command would make the arm stop and go.
    """

    def __init__(self, chain: KinematicChain, ik: InverseKinematics, min_duration_s: float) -> None:
        if not isinstance(ik, InverseKinematics):
            raise IkError(f"ik must be an InverseKinematics, got {type(ik).__name__}")
        if ik.chain is not chain:
            raise IkError(f"ik solves the chain {ik.chain.base_link} -> {ik.chain.tip_link}, not the planner's "
                          f"{chain.base_link} -> {chain.tip_link}")
        if not isinstance(min_duration_s, (int, float)) or not math.isfinite(min_duration_s) or min_duration_s <= 0.0:
            raise IkError(f"min_duration_s must be a positive finite number of seconds, got {min_duration_s!r}")
        self.chain = chain
        self.ik = ik
        self.min_duration_s = float(min_duration_s)
        self.joint_names: tuple[str, ...] = tuple(chain.joint_names)
        self._velocity_limits = chain.velocity_limits

    @classmethod
    def from_urdf(cls, urdf: str | Path, base_link: str, tip_link: str, *, position_tolerance_m: float = 1e-3,
                  orientation_tolerance_rad: float = math.radians(0.5), max_iterations: int = 100,
                  min_duration_s: float) -> "JointCommandPlanner":
        """``urdf``: XML text or a file path. IK without restarts: a command is refused rather than
        answered with joint positions far from the measured ones."""
        chain = KinematicChain.from_urdf(urdf, base_link, tip_link)
        ik = InverseKinematics(chain, position_tolerance_m=position_tolerance_m,
                               orientation_tolerance_rad=orientation_tolerance_rad, max_iterations=max_iterations)
        return cls(chain, ik, min_duration_s)

    def measured_positions(self, joint_state_names: Sequence[str], joint_state_positions: Sequence[float]) -> np.ndarray:
        """``(J,)`` positions of the chain's joints, picked by name from one JointState-like name
        list and positions (other joints ignored)."""
        if np.ndim(joint_state_positions) != 1:
            raise IkError(f"joint state has {len(joint_state_names)} names but positions of shape "
                          f"{np.shape(joint_state_positions)}")
        try:
            return self.chain.joint_state_positions(joint_state_names, joint_state_positions)
        except KinematicsError as error:
            raise IkError(str(error)) from None

    def plan(self, position: Any, orientation: Any, joint_state_names: Sequence[str],
             joint_state_positions: Sequence[float]) -> JointCommand:
        """The joint trajectory point that puts the TCP at ``position`` ``(3,)`` (m) with
        ``orientation`` ``(4,)`` (quaternion x, y, z, w), both in the chain's base frame, from the
        measured joint state."""
        target = self._target(position, orientation)
        measured = self.measured_positions(joint_state_names, joint_state_positions)
        solution = self.ik.solve(target, measured)
        if not solution.converged:
            raise IkNotConvergedError(
                f"IK did not converge for the TCP target at {np.round(target[:3, 3], 4).tolist()} m in "
                f"'{self.chain.base_link}': residual position error {solution.position_error_m:.4g} m "
                f"(tolerance {self.ik.position_tolerance_m:.4g} m), orientation error "
                f"{math.degrees(solution.orientation_error_rad):.4g} deg (tolerance "
                f"{math.degrees(self.ik.orientation_tolerance_rad):.4g} deg) after {solution.iterations} iterations",
                solution)
        # The controller interpolates from where the joints are; the slowest joint sets the pace.
        motion_s = np.abs(solution.positions - measured) / self._velocity_limits
        time_from_start_s = max(self.min_duration_s, float(motion_s.max()))
        return JointCommand(self.joint_names, solution.positions, time_from_start_s, solution)

    def _target(self, position: Any, orientation: Any) -> np.ndarray:
        """``(4, 4)`` pose from the commanded position and quaternion, refused when not finite or
        when the quaternion is not a unit one."""
        try:
            position = np.asarray(position, dtype=np.float64)
            orientation = np.asarray(orientation, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise IkError(f"TCP target is not numeric: {error}") from None
        if position.shape != (3,) or orientation.shape != (4,):
            raise IkError(f"TCP target needs a position of shape (3,) and a quaternion (x, y, z, w) of shape (4,), "
                          f"got {position.shape} and {orientation.shape}")
        if not (np.isfinite(position).all() and np.isfinite(orientation).all()):
            raise IkError(f"TCP target position {position.tolist()} / orientation {orientation.tolist()} "
                          "contains NaN or inf")
        norm = float(np.linalg.norm(orientation))
        if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            raise IkError(f"TCP target quaternion {orientation.tolist()} has norm {norm:.6g}, not 1")
        return transform(quaternion_to_matrix(orientation), position)


__all__ = ["IkNotConvergedError", "JointCommand", "JointCommandPlanner"]
