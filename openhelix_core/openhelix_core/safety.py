"""Guards between the policy and a real arm: which inputs allow motion, and how far a command may go.

Pure logic with explicit times (seconds), so it is tested without ROS or a clock. The
controller node feeds it message stamps and its own clock, and commands motion only while
:meth:`InputWatchdog.blocking_causes` is empty; every command then passes through
:class:`CommandLimiter`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openhelix_core.geometry import quaternion_angle, quaternion_slerp


@dataclass(frozen=True)
class SafetyLimits:
    """Limits applied to every command sent to the arm.

    Attributes:
        workspace_min: ``(3,)`` lower corner (m, base frame) of the box the TCP stays in.
        workspace_max: ``(3,)`` upper corner.
        max_linear_velocity: TCP speed limit (m/s).
        max_angular_velocity: TCP rotation speed limit (rad/s).
        max_linear_acceleration: TCP acceleration limit (m/s^2).
        gripper_min: lowest gripper openness command (0 = fully closed).
        gripper_max: highest gripper openness command (1 = fully open).
    """

    workspace_min: tuple[float, float, float] = (-0.8, -0.8, 0.0)
    workspace_max: tuple[float, float, float] = (0.8, 0.8, 1.0)
    max_linear_velocity: float = 0.25
    max_angular_velocity: float = 1.0
    max_linear_acceleration: float = 2.0
    gripper_min: float = 0.0
    gripper_max: float = 1.0

    def __post_init__(self) -> None:
        low, high = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if low.shape != (3,) or high.shape != (3,):
            raise ValueError("workspace_min and workspace_max need 3 values (x, y, z)")
        if not np.all(np.isfinite(low)) or not np.all(np.isfinite(high)) or np.any(low >= high):
            raise ValueError(f"workspace_min {low.tolist()} must be finite and below workspace_max {high.tolist()}")
        for name in ("max_linear_velocity", "max_angular_velocity", "max_linear_acceleration"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not 0.0 <= self.gripper_min < self.gripper_max <= 1.0:
            raise ValueError(f"need 0 <= gripper_min < gripper_max <= 1, got {self.gripper_min}, {self.gripper_max}")


@dataclass(frozen=True)
class LimitedCommand:
    """A command after limiting, and which limits changed it."""

    position: np.ndarray
    orientation: np.ndarray
    gripper_openness: float
    clamped: frozenset[str]


class CommandLimiter:
    """Clamps a stream of TCP targets to the workspace, speed and acceleration limits.

    Starts from the measured pose (:meth:`reset`) so the first command cannot jump.
    """

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self._position: np.ndarray | None = None
        self._orientation: np.ndarray | None = None
        self._velocity = np.zeros(3)

    def reset(self, position: np.ndarray, orientation: np.ndarray) -> None:
        """Anchors the limiter at the arm's measured pose, at rest."""
        self._position = np.asarray(position, float).copy()
        self._orientation = np.asarray(orientation, float) / np.linalg.norm(orientation)
        self._velocity = np.zeros(3)

    @property
    def anchored(self) -> bool:
        return self._position is not None

    def limit(self, position: np.ndarray, orientation: np.ndarray, gripper_openness: float,
              dt: float) -> LimitedCommand:
        if not self.anchored:
            raise RuntimeError("CommandLimiter.reset() must anchor it at the measured pose first")
        if not dt > 0:
            raise ValueError(f"dt must be positive, got {dt}")
        limits, clamped = self.limits, set()
        target = np.asarray(position, float)
        boxed = np.clip(target, limits.workspace_min, limits.workspace_max)
        if not np.allclose(boxed, target):
            clamped.add("workspace")
        velocity = (boxed - self._position) / dt
        speed = np.linalg.norm(velocity)
        if speed > limits.max_linear_velocity:
            velocity *= limits.max_linear_velocity / speed
            clamped.add("linear_velocity")
        change = velocity - self._velocity
        max_change = limits.max_linear_acceleration * dt
        if np.linalg.norm(change) > max_change:
            velocity = self._velocity + change * (max_change / np.linalg.norm(change))
            clamped.add("linear_acceleration")
        self._position = self._position + velocity * dt
        self._velocity = velocity

        target_orientation = np.asarray(orientation, float) / np.linalg.norm(orientation)
        angle = float(quaternion_angle(self._orientation, target_orientation))
        max_angle = limits.max_angular_velocity * dt
        if angle > max_angle:
            target_orientation = quaternion_slerp(self._orientation, target_orientation, max_angle / angle)
            clamped.add("angular_velocity")
        self._orientation = target_orientation

        gripper = float(np.clip(gripper_openness, limits.gripper_min, limits.gripper_max))
        if gripper != gripper_openness:
            clamped.add("gripper")
        return LimitedCommand(self._position.copy(), self._orientation.copy(), gripper, frozenset(clamped))


class InputWatchdog:
    """Tracks the freshness and order of each input, the heartbeat and the e-stop latch.

    ``max_age_s`` maps an input name (e.g. ``"goal"``, ``"static_camera"``) to how old its newest
    stamp may be before motion stops; ``heartbeat_timeout_s`` (0 = no deadman) is how long
    the deadman input may stay silent.
    """

    def __init__(self, max_age_s: dict[str, float], heartbeat_timeout_s: float = 0.0) -> None:
        for name, age in max_age_s.items():
            if not age > 0:
                raise ValueError(f"max age of '{name}' must be positive, got {age}")
        if heartbeat_timeout_s < 0:
            raise ValueError("heartbeat_timeout_s must be >= 0")
        self.max_age_s = dict(max_age_s)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._last_stamp: dict[str, float] = {}
        self._last_heartbeat: float | None = None
        self.estop_reason: str | None = None

    def observe(self, name: str, stamp: float) -> str | None:
        """Records a message's stamp; returns why it must be refused (older than the last one)."""
        last = self._last_stamp.get(name)
        if last is not None and stamp < last:
            return f"{name} stamp {stamp:.3f} is older than the previous one ({last:.3f}): out of order"
        self._last_stamp[name] = stamp
        return None

    def heartbeat(self, now: float) -> None:
        self._last_heartbeat = now

    def release_deadman(self) -> None:
        """The deadman was let go: motion stops now, not after the timeout."""
        self._last_heartbeat = None

    def engage_estop(self, reason: str) -> None:
        self.estop_reason = self.estop_reason or reason

    def clear_estop(self) -> None:
        self.estop_reason = None

    def blocking_causes(self, now: float) -> dict[str, str]:
        """Each reason motion is not allowed now (cause -> message); empty when it is."""
        causes = {}
        if self.estop_reason is not None:
            causes["estop"] = f"e-stop engaged ({self.estop_reason}); clear it explicitly to resume"
        if self.heartbeat_timeout_s > 0:
            if self._last_heartbeat is None:
                causes["heartbeat"] = "no deadman heartbeat received yet"
            elif now - self._last_heartbeat > self.heartbeat_timeout_s:
                causes["heartbeat"] = (f"deadman heartbeat lapsed ({now - self._last_heartbeat:.2f} s > "
                                       f"{self.heartbeat_timeout_s} s)")
        for name, max_age in self.max_age_s.items():
            stamp = self._last_stamp.get(name)
            if stamp is None:
                causes[f"stale_{name}"] = f"no {name} received yet"
            elif now - stamp > max_age:
                causes[f"stale_{name}"] = f"{name} is {now - stamp:.2f} s old (limit {max_age} s)"
        return causes
