"""Inverse kinematics of a URDF chain by damped least squares, in numpy.

Pure numpy like :mod:`openhelix_core.kinematics` (no rclpy, no torch): the controller solves one
TCP pose per command, 30 times a second, from the measured joint positions::

    ik = InverseKinematics(KinematicChain.from_urdf(urdf, "panda_link0", "tcp"))
    solution = ik.solve(target_pose_4x4, seed=measured_positions)
    if solution.converged:
        ...  # solution.positions, (J,), inside the URDF limits

The method is Levenberg-Marquardt on the pose error, with the damping of Sugihara (2011,
"Solvability-unconcerned inverse kinematics by the Levenberg-Marquardt method"): ``lambda = E +
damping``, ``E`` the squared weighted error, so that far from the target the steps shorten
towards gradient descent and near it they become Gauss-Newton steps, which converge in a few
iterations. A step that makes the error grow is taken back and retried with ten times the
damping (a shorter step); accepted steps bring the multiplier back towards one. A descent ends
when within tolerance, after ``max_iterations`` steps tried, or when it stalls in a local minimum
(an unreachable target, joints against their limits).

* Error: the position error (m) and the rotation vector of ``R_target @ R_current.T`` (rad), both
  in the base frame like the Jacobian's rows. The rotation is weighted by ``position_tolerance_m /
  orientation_tolerance_rad`` (m/rad), so that both tolerances weigh the same.
* Joint limits: each step is projected into the URDF limits; joints the step would push past a
  limit are stopped there and the step is solved again for the other joints (one active-set
  pass), so that a joint resting on its limit does not stall the others. Continuous joints have
  no limits and are not wrapped (the solve stays near the seed). A seed outside the limits is
  clamped into them first: measured positions can lie a hair past a limit.
* Restarts (``restarts``, default none): when a descent ends unconverged, further descents start
  from the seed plus a deterministic perturbation (up to ``restart_spread_rad`` per joint, metres
  for prismatic ones, the same sequence on every call); the best descent is returned. They can
  find a solution far from the seed in joint space, so a controller that must move smoothly
  leaves them off and refuses the command instead.

A solution is ``converged`` only when both errors are within their tolerances; otherwise the
best configuration found is returned with its errors, for the caller to refuse. Targets that are
not finite rigid transforms and seeds of the wrong shape or with NaN raise :class:`IkError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .kinematics import KinematicChain, KinematicsError, check_rigid_transform

#: Damping multiplier past which a descent is given up as stuck (each rejected step multiplies it by 10).
_MAX_DAMPING_FACTOR = 1e8
#: An accepted step that lowers the squared error by less than this fraction ends the descent: it has
#: settled in a local minimum (an unreachable target, a joint limit), where the remaining iterations
#: would only spend the command loop's time. Steps towards a reachable target gain far more.
_STALL_FRACTION = 1e-6


class IkError(KinematicsError):
    """An IK target, seed or setting that cannot be used, or (from callers) a pose with no solution."""


@dataclass(frozen=True)
class IkSolution:
    """The result of :meth:`InverseKinematics.solve`; ``positions`` is read-only."""

    positions: np.ndarray          # (J,) in the chain's joint order, inside the URDF limits
    converged: bool                # both errors within tolerance
    position_error_m: float        # |p_target - p_solution|
    orientation_error_rad: float   # angle of R_target @ R_solution.T
    iterations: int                # damped least-squares steps tried, over all descents


class InverseKinematics:
    """Damped least-squares IK of ``chain``'s tip pose in its base frame (see the module doc).

    ``damping`` (m^2) is the floor of the Levenberg-Marquardt damping: it bounds the joint steps
    near singular configurations, where it trades accuracy per step for stability.
    ``max_iterations`` bounds each descent; ``restarts`` descents more may follow an unconverged one.
    """

    def __init__(self, chain: KinematicChain, position_tolerance_m: float = 1e-3,
                 orientation_tolerance_rad: float = math.radians(0.5), max_iterations: int = 100,
                 damping: float = 1e-4, restarts: int = 0, restart_spread_rad: float = 1.0) -> None:
        if not isinstance(chain, KinematicChain):
            raise IkError(f"chain must be a KinematicChain, got {type(chain).__name__}")
        if not chain.joint_names:
            raise IkError(f"the chain {chain.base_link} -> {chain.tip_link} has no movable joints; nothing to solve")
        for name, value in (("position_tolerance_m", position_tolerance_m),
                            ("orientation_tolerance_rad", orientation_tolerance_rad), ("damping", damping),
                            ("restart_spread_rad", restart_spread_rad)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0.0:
                raise IkError(f"{name} must be a positive finite number, got {value!r}")
        for name, value, least in (("max_iterations", max_iterations, 1), ("restarts", restarts, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
                raise IkError(f"{name} must be an integer >= {least}, got {value!r}")
        self.chain = chain
        self.position_tolerance_m = float(position_tolerance_m)
        self.orientation_tolerance_rad = float(orientation_tolerance_rad)
        self.max_iterations = int(max_iterations)
        self.damping = float(damping)
        self.restarts = int(restarts)
        self.restart_spread_rad = float(restart_spread_rad)
        limits = chain.limits
        self._lower, self._upper = limits[:, 0].copy(), limits[:, 1].copy()
        self._weights = np.array([1.0, 1.0, 1.0, *[self.position_tolerance_m / self.orientation_tolerance_rad] * 3])

    @property
    def joint_names(self) -> list[str]:
        return self.chain.joint_names

    def solve(self, target: Any, seed: Any) -> IkSolution:
        """Joint positions ``(J,)`` that put the chain's tip at ``target`` (``(4, 4)`` pose in the
        base frame), starting from ``seed`` (``(J,)`` positions in :attr:`joint_names` order)."""
        try:
            target = check_rigid_transform(target, "IK target")
        except KinematicsError as error:
            raise IkError(str(error)) from None
        start = self._check_seed(seed)
        best = self._descend(target, start)
        iterations = best.iterations
        if not best.converged and self.restarts:
            perturbations = np.random.default_rng(0).uniform(-self.restart_spread_rad, self.restart_spread_rad,
                                                             size=(self.restarts, len(start)))
            for perturbation in perturbations:
                attempt = self._descend(target, np.clip(start + perturbation, self._lower, self._upper))
                iterations += attempt.iterations
                if self._relative_error(attempt) < self._relative_error(best):
                    best = attempt
                if best.converged:
                    break
        best.positions.flags.writeable = False
        return IkSolution(best.positions, best.converged, best.position_error_m, best.orientation_error_rad,
                          iterations)

    def _relative_error(self, solution: IkSolution) -> float:
        """The larger of a solution's two errors, each in units of its tolerance (to pick the best)."""
        return max(solution.position_error_m / self.position_tolerance_m,
                   solution.orientation_error_rad / self.orientation_tolerance_rad)

    def _check_seed(self, seed: Any) -> np.ndarray:
        """``(J,)`` float64 copy of the seed, clamped into the limits."""
        try:
            array = np.array(seed, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise IkError(f"IK seed is not numeric: {error}") from None
        names = self.chain.joint_names
        if array.shape != (len(names),):
            raise IkError(f"IK seed must have shape ({len(names)},) for joints {names}, got {array.shape}")
        bad = [name for name, value in zip(names, array) if not math.isfinite(value)]
        if bad:
            raise IkError(f"IK seed positions of {bad} are NaN or inf")
        return np.clip(array, self._lower, self._upper)

    def _pose_error(self, target: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Weighted ``(6,)`` error (position; rotation vector, both in the base frame) and the two
        unweighted error sizes."""
        position = target[:3, 3] - pose[:3, 3]
        rotation = rotation_vector(target[:3, :3] @ pose[:3, :3].T)
        error = np.concatenate([position, rotation]) * self._weights
        return error, float(math.sqrt(position @ position)), float(math.sqrt(rotation @ rotation))

    def _step(self, positions: np.ndarray, jacobian: np.ndarray, error: np.ndarray, damping: float) -> np.ndarray:
        """Damped least-squares step from ``positions``, projected into the limits: ``(J,)`` new positions."""
        weighted = jacobian * self._weights[:, None]
        step = weighted.T @ np.linalg.solve(weighted @ weighted.T + damping * np.eye(6), error)
        candidate = positions + step
        outside = (candidate < self._lower) | (candidate > self._upper)
        if not outside.any():
            return candidate
        # Stop the joints that would leave their limits at the limit and spend the error they leave on the others.
        candidate[outside] = np.clip(candidate[outside], self._lower[outside], self._upper[outside])
        free = ~outside
        if free.any():
            remaining = error - weighted[:, outside] @ (candidate[outside] - positions[outside])
            free_columns = weighted[:, free]
            candidate[free] = positions[free] + free_columns.T @ np.linalg.solve(
                free_columns @ free_columns.T + damping * np.eye(6), remaining)
        return np.clip(candidate, self._lower, self._upper)

    def _descend(self, target: np.ndarray, positions: np.ndarray) -> IkSolution:
        """One Levenberg-Marquardt descent from ``positions`` (already inside the limits)."""
        pose, jacobian = self.chain._pose_and_jacobian(positions)
        error, position_error, orientation_error = self._pose_error(target, pose)
        cost = float(error @ error)
        factor = 1.0
        iterations = 0
        while iterations < self.max_iterations and not (position_error <= self.position_tolerance_m
                                                         and orientation_error <= self.orientation_tolerance_rad):
            iterations += 1
            candidate = self._step(positions, jacobian, error, factor * (0.5 * cost + self.damping))
            candidate_pose, candidate_jacobian = self.chain._pose_and_jacobian(candidate)
            candidate_error, candidate_position_error, candidate_orientation_error = self._pose_error(
                target, candidate_pose)
            candidate_cost = float(candidate_error @ candidate_error)
            if candidate_cost < cost:
                stalled = cost - candidate_cost < _STALL_FRACTION * cost
                positions, jacobian, error, cost = candidate, candidate_jacobian, candidate_error, candidate_cost
                position_error, orientation_error = candidate_position_error, candidate_orientation_error
                factor = max(1.0, factor / 10.0)
                if stalled:
                    break
            else:
                factor *= 10.0
                if factor > _MAX_DAMPING_FACTOR:
                    break
        converged = position_error <= self.position_tolerance_m and orientation_error <= self.orientation_tolerance_rad
        return IkSolution(positions, converged, position_error, orientation_error, iterations)


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation -> ``(3,)`` rotation vector (axis times angle in [0, pi]), the log map."""
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = rotation.tolist()
    # 2 sin(angle) axis, from the skew-symmetric part
    x, y, z = r21 - r12, r02 - r20, r10 - r01
    sine = 0.5 * math.sqrt(x * x + y * y + z * z)
    cosine = 0.5 * (r00 + r11 + r22 - 1.0)
    angle = math.atan2(sine, cosine)
    if sine > 1e-6:
        scale = angle / (2.0 * sine)
        return np.array([x * scale, y * scale, z * scale])
    if cosine > 0.0:   # near identity: angle ~ sine, and the formula above would divide ~0 by ~0
        return np.array([0.5 * x, 0.5 * y, 0.5 * z])
    # Near a half turn the skew part vanishes; the axis comes from the symmetric part,
    # (R + R^T) / 2 = cos(angle) I + (1 - cos(angle)) a a^T, through its largest diagonal entry.
    diagonal = [r00, r11, r22]
    k = int(np.argmax(diagonal))
    axis = 0.5 * (rotation[k] + rotation[:, k])
    axis[k] = diagonal[k] - cosine
    axis /= np.linalg.norm(axis)
    if axis @ (x, y, z) < 0.0:   # a residual skew part still tells the sign
        axis = -axis
    return axis * angle


__all__ = ["IkError", "IkSolution", "InverseKinematics", "rotation_vector"]
