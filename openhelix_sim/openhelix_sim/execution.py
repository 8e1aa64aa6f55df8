"""How the simulated arm executes what the policy sends: trajectory chunks or a command stream.

Pure logic (no ROS). The sim bridge node and the in-process evaluation both execute chunks through
:class:`ChunkExecutor`, so the two score the same execution.

:class:`ChunkExecutor` is the controller's chunk timing
(:class:`~openhelix_core.runtime.chunking.TrajectoryBlender`, the object a robot's command stream
samples) run on the simulator's tick clock: a chunk computed from the observation published at
tick ``k`` asks for waypoint ``i`` at tick ``k + time_from_start[i] / tick_period_s``, and the
arm's target during tick ``t`` is the plan sampled at ``t + 1`` (the end of the step). With the
controller's waypoint period equal to the simulator's (1/30 s: CALVIN, and 3DDA's evaluation
that executes one waypoint per step), every tick reaches exactly one waypoint; a chunk timed
otherwise is interpolated as on a robot. Waypoints due while the chunk was being computed are
skipped (latency compensation in simulated time); after ``execution_horizon`` waypoints the arm
holds its last target. Unlike the robot's
:class:`~openhelix_core.runtime.chunking.CommandStream`, nothing is blended across chunks or
rate-limited: the arm follows the newest chunk (receding horizon), and the robot's limited stream
reaches the simulator through :class:`ServoFollower` instead.

With ``replan_after_horizon`` a chunk is executed to its horizon and the next one executed is
the first computed from an observation taken after that -- 3DDA's CALVIN evaluation, and the
in-process evaluation (:func:`openhelix_sim.evaluation_runner.run`).
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import numpy as np

from openhelix_core.data.calvin_format import CALVIN_CONTROL_PERIOD_S
from openhelix_core.models.system1 import System1Processor
from openhelix_core.models.system1.processor_system1 import calvin_gripper_action
from openhelix_core.runtime.chunking import TrajectoryBlender
from openhelix_core.types import TrajectoryChunk

#: Waypoint times closer than this (in ticks) to a whole tick are on it: the float error of
#: ``k / 30``, and periods written with a few digits (``waypoint_period_s: 0.0333333`` is 20
#: waypoints 2e-5 ticks short of tick 20).
_TICK_SNAP = 1e-3
#: Both play-table backends simulate a Panda and list its arm joints first, then the fingers.
PANDA_ARM_JOINTS = 7


def waypoint_to_absolute_action(position: np.ndarray, orientation: np.ndarray, openness: float) -> np.ndarray:
    """CALVIN absolute action ``(7,)`` (xyz, Euler xyz, gripper +1 open / -1 close) of one pose and
    gripper openness."""
    trajectory = np.concatenate([position, orientation, [openness]])[None]
    return System1Processor.trajectory_to_calvin_actions(trajectory)[0]


def hold_action(env, action_type: str = "absolute") -> np.ndarray:
    """The action of ``action_type`` (``absolute``: CALVIN's TCP pose; ``joints``: arm joint
    positions) that keeps ``env``'s arm where it is, gripper as it is."""
    if action_type == "joints":
        arm_joints = np.asarray(env.joint_positions(), dtype=float)[:PANDA_ARM_JOINTS]
        return np.append(arm_joints, calvin_gripper_action(env.gripper_openness()))
    return waypoint_to_absolute_action(*env.tcp_pose(), env.gripper_openness())


def on_tick_clock(chunk: TrajectoryChunk, tick_period_s: float) -> TrajectoryChunk:
    """``chunk`` with its waypoint times in ticks of ``tick_period_s`` (snapped to whole ticks
    within :data:`_TICK_SNAP`, so that a waypoint due at a tick is reached exactly at it)."""
    ticks = np.asarray(chunk.time_from_start, dtype=float) / tick_period_s
    whole = np.round(ticks)
    ticks = np.where(np.abs(ticks - whole) < _TICK_SNAP, whole, ticks)
    return dataclasses.replace(chunk, time_from_start=ticks)


class ChunkExecutor:
    """Turns received trajectory chunks into one absolute action per simulator tick (see the module doc)."""

    def __init__(self, execution_horizon: int, tick_period_s: float = CALVIN_CONTROL_PERIOD_S,
                 remembered_ticks: int = 600, replan_after_horizon: bool = False) -> None:
        if execution_horizon < 1:
            raise ValueError("execution_horizon must be at least 1")
        if not tick_period_s > 0:
            raise ValueError("tick_period_s must be positive")
        self.tick_period_s = tick_period_s
        self.replan_after_horizon = replan_after_horizon
        self._plan = TrajectoryBlender("replace", execution_horizon, future_tolerance_s=0.0)
        self._done_tick = 0  # replan_after_horizon: chunks observed before this tick are stale
        self._cleared_tick = 0  # chunks observed before the last clear() belong to another episode
        self._tick_of_stamp: OrderedDict[float, int] = OrderedDict()
        self._remembered_ticks = remembered_ticks
        self.goal_sequence = 0

    @property
    def execution_horizon(self) -> int:
        return self._plan.execution_horizon

    def observation_published(self, stamp: float, tick: int) -> None:
        self._tick_of_stamp[stamp] = tick
        while len(self._tick_of_stamp) > self._remembered_ticks:
            self._tick_of_stamp.popitem(last=False)

    def receive(self, chunk: TrajectoryChunk, observation_stamp: float, current_tick: int) -> bool:
        """Takes ``chunk`` (computed from the observation published with ``observation_stamp``);
        returns False when it is ignored: computed before the last :meth:`clear` or from an
        observation older than the running chunk's, or (``replan_after_horizon``) while a chunk is
        still running or before the last one ended."""
        observed_tick = self._tick_of_stamp.get(observation_stamp, current_tick)
        if observed_tick < self._cleared_tick:
            return False
        if self.replan_after_horizon and (self._running(current_tick) or observed_tick < self._done_tick):
            return False
        if not self._plan.add(on_tick_clock(chunk, self.tick_period_s), float(observed_tick), float(current_tick)):
            return False
        self._done_tick = max(math.ceil(self._plan.newest.end), current_tick)
        self.goal_sequence = chunk.goal_sequence
        return True

    def clear(self, current_tick: int = 0) -> None:
        """Drops the current chunk (the instruction changed, or a new episode starts at
        ``current_tick``): chunks computed from earlier observations are ignored from now on."""
        self._plan.clear()
        self._cleared_tick = self._done_tick = current_tick

    def next_action(self, tick: int) -> np.ndarray | None:
        """The action to execute during ``tick``, or None when the running chunk has none left.

        A chunk whose last waypoint falls between ticks ends on the tick after it, aiming at
        that waypoint, so every chunk ends on its last waypoint, at ``ceil(end)``."""
        if not self._running(tick):
            return None
        target = self._plan.sample(min(float(tick + 1), self._plan.newest.end))
        return None if target is None else waypoint_to_absolute_action(*target)

    def _running(self, tick: int) -> bool:
        newest = self._plan.newest
        return newest is not None and tick < newest.end


class ServoFollower:
    """Turns the controller's limited command stream into one absolute action per simulator tick.

    What a Cartesian impedance or servo controller does on a real arm: each tick it drives the
    arm to the newest pose command with the newest gripper command. :meth:`next_action` says
    whether a new command arrived since the last tick (lockstep steps only then) and, with
    ``hold``, repeats the last command otherwise (a real-time world keeps moving).
    """

    action_type = "absolute"

    def __init__(self, gripper_openness: float) -> None:
        self._pose: tuple[np.ndarray, np.ndarray] | None = None
        self._gripper = float(gripper_openness)
        self._fresh = False

    def pose_command(self, position: np.ndarray, orientation: np.ndarray) -> None:
        self._pose = (np.asarray(position, float), np.asarray(orientation, float))
        self._fresh = True

    def gripper_command(self, openness: float) -> None:
        self._gripper = float(np.clip(openness, 0.0, 1.0))

    def clear(self, gripper_openness: float) -> None:
        """A new episode: nothing commanded before it is executed in it."""
        self._pose, self._fresh, self._gripper = None, False, float(gripper_openness)

    def next_action(self, hold: bool) -> np.ndarray | None:
        """The CALVIN absolute action for this tick: the newest command if it is new (or ``hold``),
        else None."""
        if self._pose is None or not (self._fresh or hold):
            return None
        self._fresh = False
        return waypoint_to_absolute_action(*self._pose, self._gripper)


class JointServoFollower(ServoFollower):
    """:class:`ServoFollower` for a joint trajectory controller: each tick drives the arm joints to
    the newest ``JointTrajectory`` target (the ``joints`` action of the play-table)."""

    action_type = "joints"

    def __init__(self, gripper_openness: float, arm_joint_names) -> None:
        super().__init__(gripper_openness)
        self.arm_joint_names = tuple(arm_joint_names)
        self._joints: np.ndarray | None = None

    def joint_command(self, names, positions) -> None:
        """Takes a target by joint name; raises ValueError (keeping the previous target) when an arm
        joint is missing, named twice or not finite."""
        names = [str(name) for name in names]
        if len(names) != len(positions):
            raise ValueError(f"{len(names)} joint names but {len(positions)} positions")
        if len(set(names)) != len(names):
            raise ValueError(f"joint names {sorted({n for n in names if names.count(n) > 1})} appear twice")
        missing = [name for name in self.arm_joint_names if name not in names]
        if missing:
            raise ValueError(f"the target lacks the arm joints {missing}")
        target = np.array([positions[names.index(name)] for name in self.arm_joint_names], dtype=float)
        if not np.all(np.isfinite(target)):
            raise ValueError("joint target contains NaN or inf")
        self._joints, self._fresh = target, True

    def clear(self, gripper_openness: float) -> None:
        super().clear(gripper_openness)
        self._joints = None

    def next_action(self, hold: bool) -> np.ndarray | None:
        """The ``joints`` action for this tick: the newest target if it is new (or ``hold``), else None."""
        if self._joints is None or not (self._fresh or hold):
            return None
        self._fresh = False
        return np.append(self._joints, calvin_gripper_action(self._gripper))
