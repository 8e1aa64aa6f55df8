"""Guards between the policy and a real arm: which inputs allow motion, and how far a command may go.

Pure logic with explicit times (seconds), so it is tested without ROS or a clock. The
controller node feeds it message stamps and its own clock, and commands motion only while
:meth:`InputWatchdog.blocking_causes` is empty; every command then passes through
:class:`CommandLimiter`, and every published chunk through :func:`clip_chunk`. The e-stop
latch (:class:`EStopLatch`) lives outside the watchdog so that nothing which rebuilds the
watchdog (activation, a clock jump) can release it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from openhelix_core.geometry import quaternion_angle, quaternion_slerp
from openhelix_core.types import TrajectoryChunk


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

    def clip_position(self, position: np.ndarray) -> np.ndarray:
        """``(..., 3)`` positions moved to the nearest point of the workspace box."""
        return np.clip(position, self.workspace_min, self.workspace_max)

    def workspace_violation(self, position: np.ndarray, tolerance: float = 0.0) -> str | None:
        """Why a measured TCP position is unsafe to move from (outside the box by more than
        ``tolerance`` metres, or not finite), or None."""
        position = np.asarray(position, float)
        if not np.all(np.isfinite(position)):
            return f"TCP position {position.tolist()} is not finite"
        distance = float(np.linalg.norm(position - self.clip_position(position)))
        if distance > tolerance:
            return (f"measured TCP position {np.round(position, 3).tolist()} is {distance:.3f} m outside the "
                    f"workspace {list(self.workspace_min)}..{list(self.workspace_max)} (tolerance {tolerance} m)")
        return None


@dataclass(frozen=True)
class LimitedCommand:
    """A command after limiting, and which limits changed it."""

    position: np.ndarray
    orientation: np.ndarray
    gripper_openness: float
    clamped: frozenset[str]


class CommandLimiter:
    """Clamps a stream of TCP targets to the workspace, speed and acceleration limits.

    Starts from the measured pose (:meth:`reset`) so the first command cannot jump, and
    limits over the real time between two commands (``dt``), so that any two consecutive
    commands respect the limits by their stamps however irregularly they are sent. Every
    position it returns lies inside the workspace box.
    """

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self._position: np.ndarray | None = None
        self._orientation: np.ndarray | None = None
        self._velocity = np.zeros(3)

    def reset(self, position: np.ndarray, orientation: np.ndarray) -> None:
        """Anchors the limiter at the arm's measured pose, at rest (moved into the box if just outside)."""
        self._position = self.limits.clip_position(np.asarray(position, float))
        self._orientation = np.asarray(orientation, float) / np.linalg.norm(orientation)
        self._velocity = np.zeros(3)

    def release(self) -> None:
        """Forgets the anchor: the next command needs a fresh :meth:`reset` from a measured pose."""
        self._position = None
        self._orientation = None
        self._velocity = np.zeros(3)

    @property
    def anchored(self) -> bool:
        return self._position is not None

    def limit(self, position: np.ndarray, orientation: np.ndarray, gripper_openness: float,
              dt: float) -> LimitedCommand:
        """The command ``dt`` seconds after the previous one (or after :meth:`reset`)."""
        if not self.anchored:
            raise RuntimeError("CommandLimiter.reset() must anchor it at the measured pose first")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be positive, got {dt}")
        limits, clamped = self.limits, set()
        target = np.asarray(position, float)
        boxed = limits.clip_position(target)
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
        # Braking may carry the TCP past the face of the box: the box wins over the acceleration limit.
        new_position = limits.clip_position(self._position + velocity * dt)
        if not np.allclose(new_position, self._position + velocity * dt):
            clamped.add("workspace")
        self._velocity = (new_position - self._position) / dt
        self._position = new_position

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


def clip_chunk(chunk: TrajectoryChunk, limits: SafetyLimits) -> tuple[TrajectoryChunk, frozenset[str]]:
    """The chunk with every waypoint inside the workspace box and gripper range, and what was clipped.

    Raises ValueError for a chunk with non-finite values or a zero quaternion: no part of
    such a chunk may be executed.
    """
    values = (chunk.positions, chunk.orientations, chunk.gripper_openness, chunk.time_from_start)
    if not all(np.all(np.isfinite(v)) for v in values):
        raise ValueError("chunk contains NaN or inf")
    norms = np.linalg.norm(chunk.orientations, axis=-1, keepdims=True)
    if np.any(norms < 1e-6):
        raise ValueError("chunk contains a zero quaternion")
    positions = limits.clip_position(chunk.positions)
    gripper = np.clip(chunk.gripper_openness, limits.gripper_min, limits.gripper_max)
    clipped = set()
    if not np.array_equal(positions, chunk.positions):
        clipped.add("workspace")
    if not np.array_equal(gripper, chunk.gripper_openness):
        clipped.add("gripper")
    return replace(chunk, positions=positions, orientations=chunk.orientations / norms,
                   gripper_openness=gripper), frozenset(clipped)


@dataclass(frozen=True)
class StampRefusal:
    """Why one message's stamp is refused: ``kind`` is ``"future"`` or ``"out_of_order"``."""

    kind: str
    message: str


class InputWatchdog:
    """Tracks the freshness and order of each input, the deadman, and other unsafe conditions.

    ``max_age_s`` maps an input name (e.g. ``"goal"``, ``"observation"``) to how old its newest
    stamp may be before motion stops; ``heartbeat_timeout_s`` (0 = no deadman) is how long the
    deadman input may stay silent; a stamp more than ``future_tolerance_s`` ahead of the clock
    is invalid (it would look fresh for longer than it is). ``estop`` is consulted, never
    owned: forgetting the history does not release it.
    """

    def __init__(self, max_age_s: dict[str, float], heartbeat_timeout_s: float = 0.0,
                 future_tolerance_s: float = 0.1, estop: EStopLatch | None = None) -> None:
        for name, age in max_age_s.items():
            if not age > 0:
                raise ValueError(f"max age of '{name}' must be positive, got {age}")
        if heartbeat_timeout_s < 0:
            raise ValueError("heartbeat_timeout_s must be >= 0")
        if not future_tolerance_s >= 0:
            raise ValueError("future_tolerance_s must be >= 0")
        self.max_age_s = dict(max_age_s)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.future_tolerance_s = future_tolerance_s
        self.estop = estop if estop is not None else EStopLatch()
        self._last_stamp: dict[str, float] = {}
        self._last_heartbeat: float | None = None
        self._conditions: dict[str, str] = {}

    def check_stamp(self, name: str, stamp: float, now: float) -> StampRefusal | None:
        """Why a stamp of input ``name`` must be refused at time ``now``, without recording it."""
        if not math.isfinite(stamp):
            return StampRefusal("future", f"{name} stamp {stamp} is not a time")
        if stamp > now + self.future_tolerance_s:
            return StampRefusal("future", f"{name} stamp is {stamp - now:.3f} s ahead of this node's clock "
                                          f"(tolerance {self.future_tolerance_s} s)")
        last = self._last_stamp.get(name)
        if last is not None and stamp < last:
            return StampRefusal("out_of_order", f"{name} stamp {stamp:.3f} is older than the previous one "
                                                f"({last:.3f}): out of order")
        return None

    def observe(self, name: str, stamp: float, now: float) -> StampRefusal | None:
        """Records a message's stamp unless it must be refused; returns the refusal, if any.

        A refused stamp is not recorded, so it never blocks later valid data.
        """
        refusal = self.check_stamp(name, stamp, now)
        if refusal is None:
            self._last_stamp[name] = stamp
        return refusal

    def forget_history(self) -> None:
        """After a clock jump no stamp compares with the new time: every input must arrive afresh."""
        self._last_stamp.clear()
        self._last_heartbeat = None

    def heartbeat(self, now: float) -> None:
        self._last_heartbeat = now

    def release_deadman(self) -> None:
        """The deadman was let go: motion stops now, not after the timeout."""
        self._last_heartbeat = None

    def set_condition(self, cause: str, message: str | None) -> None:
        """Raises (``message``) or lifts (None) an unsafe condition that blocks motion while it holds."""
        if message is None:
            self._conditions.pop(cause, None)
        else:
            self._conditions[cause] = message

    def blocking_causes(self, now: float) -> dict[str, str]:
        """Each reason motion is not allowed now (cause -> message); empty when it is."""
        causes = {}
        if self.estop.engaged:
            causes["estop"] = f"e-stop engaged ({self.estop.reason}); clear it explicitly to resume"
        if self.heartbeat_timeout_s > 0:
            if self._last_heartbeat is None:
                causes["heartbeat"] = "no deadman heartbeat received yet"
            elif not 0 <= now - self._last_heartbeat <= self.heartbeat_timeout_s:
                causes["heartbeat"] = (f"deadman heartbeat lapsed ({now - self._last_heartbeat:.2f} s, limit "
                                       f"{self.heartbeat_timeout_s} s)")
        for name, max_age in self.max_age_s.items():
            stamp = self._last_stamp.get(name)
            if stamp is None:
                causes[f"stale_{name}"] = f"no {name} received yet"
            elif now - stamp > max_age:
                causes[f"stale_{name}"] = f"{name} is {now - stamp:.2f} s old (limit {max_age} s)"
            elif stamp - now > self.future_tolerance_s:
                causes[f"stale_{name}"] = f"{name} is stamped {stamp - now:.2f} s ahead of this node's clock"
        causes.update(self._conditions)
        return causes


class EStopLatch:
    """The e-stop: engaged by any source, released only by an explicit clear while no input asserts it."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.asserted_by: str | None = None

    @property
    def engaged(self) -> bool:
        return self.reason is not None

    def engage(self, reason: str) -> None:
        self.reason = self.reason or reason

    def input(self, asserted: bool, source: str) -> None:
        """The newest state of an e-stop input (a button topic): true engages and blocks clearing."""
        if asserted:
            self.asserted_by = source
            self.engage(f"{source} was set")
        else:
            self.asserted_by = None

    def clear(self) -> tuple[bool, str]:
        """Releases the latch unless an input still asserts it; returns (released, why)."""
        if self.asserted_by is not None:
            return False, f"e-stop input {self.asserted_by} still reads true: release it first"
        was, self.reason = self.reason, None
        return True, f"e-stop cleared (was: {was})" if was else "e-stop was not engaged"


class FrozenInputDetector:
    """Notices an input whose content stops changing while its stamps keep advancing.

    A hung camera driver may republish its last frame with new stamps; every frame of a real
    sensor differs at least by noise. The caller passes a cheap fingerprint of each message's
    content (e.g. a hash of a subsampled image).
    """

    def __init__(self, timeout_s: float) -> None:
        if not timeout_s >= 0:
            raise ValueError("timeout_s must be >= 0 (0 = off)")
        self.timeout_s = timeout_s
        self._seen: dict[str, tuple[object, float]] = {}

    def update(self, name: str, fingerprint: object, now: float) -> None:
        previous = self._seen.get(name)
        if previous is None or previous[0] != fingerprint:
            self._seen[name] = (fingerprint, now)

    def forget(self) -> None:
        self._seen.clear()

    def frozen(self, now: float) -> dict[str, float]:
        """Inputs whose content has not changed for longer than the timeout -> seconds unchanged."""
        if self.timeout_s == 0:
            return {}
        return {name: now - since for name, (_, since) in self._seen.items() if now - since > self.timeout_s}
