"""How the simulated arm executes what the policy sends: trajectory chunks or a command stream.

Pure logic (no ROS). The sim bridge node and the in-process evaluation both execute chunks through
:class:`ChunkExecutor`, so the two score the same execution.

:class:`ChunkExecutor` runs on the simulator's tick clock: the arm reaches one waypoint per tick,
as in 3DDA's CALVIN evaluation, whatever the chunk's own waypoint period. A chunk is computed from
an observation published at some tick; by the time it arrives the simulator has moved on, so
execution starts at the waypoint due at the ticks already elapsed (latency compensation in
simulated time) and stops after ``execution_horizon`` waypoints, after which the arm holds its
last target. The timing is :class:`~openhelix_core.runtime.chunking.TimedChunk`'s, the controller's chunk
clock, with ticks for seconds. Unlike the controller's
:class:`~openhelix_core.runtime.chunking.CommandStream`, which samples chunks at wall-clock times and
interpolates, blends and limits between waypoints, the executor executes the waypoints
themselves: the robot's stream reaches the simulator through :class:`ServoFollower` instead.

By default a newer chunk replaces the one being executed (receding horizon, as on a robot).
With ``replan_after_horizon`` a chunk is executed to its horizon and the next one executed is
the first computed from an observation taken after that -- 3DDA's CALVIN evaluation, and the
in-process evaluation (:mod:`openhelix_sim.experiments.in_process`).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np

from openhelix_core.models.system1 import System1Processor
from openhelix_core.runtime.chunking import TimedChunk
from openhelix_core.types import TrajectoryChunk


def chunk_to_absolute_actions(chunk: TrajectoryChunk) -> np.ndarray:
    """``(T, 7)`` CALVIN absolute actions (xyz, Euler xyz, gripper +1 open / -1 close) of a chunk."""
    trajectory = np.column_stack([chunk.positions, chunk.orientations, chunk.gripper_openness])
    return System1Processor.trajectory_to_calvin_actions(trajectory)


def waypoint_to_absolute_action(position: np.ndarray, orientation: np.ndarray, openness: float) -> np.ndarray:
    """CALVIN absolute action ``(7,)`` of one pose and gripper openness."""
    trajectory = np.concatenate([position, orientation, [openness]])[None]
    return System1Processor.trajectory_to_calvin_actions(trajectory)[0]


def on_tick_clock(chunk: TrajectoryChunk, observed_tick: int, execution_horizon: int) -> TimedChunk:
    """``chunk`` on the simulator's tick clock: waypoint ``i`` is reached at tick ``observed_tick
    + i + 1``, i.e. it is the target of the step taken during tick ``observed_tick + i``."""
    ticks = np.arange(1, len(chunk) + 1, dtype=float)
    return TimedChunk.executed(dataclasses.replace(chunk, time_from_start=ticks), float(observed_tick),
                               execution_horizon)


class ChunkExecutor:
    """Turns received trajectory chunks into one absolute action per simulator tick (see the module doc)."""

    def __init__(self, execution_horizon: int, remembered_ticks: int = 600,
                 replan_after_horizon: bool = False) -> None:
        if execution_horizon < 1:
            raise ValueError("execution_horizon must be at least 1")
        self.execution_horizon = execution_horizon
        self.replan_after_horizon = replan_after_horizon
        self._done_tick = 0  # replan_after_horizon: chunks observed before this tick are stale
        self._cleared_tick = 0  # chunks observed before the last clear() belong to another episode
        self._tick_of_stamp: OrderedDict[float, int] = OrderedDict()
        self._remembered_ticks = remembered_ticks
        self._running: TimedChunk | None = None
        self._actions: np.ndarray | None = None  # the running chunk's waypoints as CALVIN actions
        self.goal_sequence = 0

    def observation_published(self, stamp: float, tick: int) -> None:
        self._tick_of_stamp[stamp] = tick
        while len(self._tick_of_stamp) > self._remembered_ticks:
            self._tick_of_stamp.popitem(last=False)

    def receive(self, chunk: TrajectoryChunk, observation_stamp: float, current_tick: int) -> bool:
        """Takes ``chunk`` (computed from the observation published with ``observation_stamp``);
        returns False when it is ignored: computed before the last :meth:`clear`, or
        (``replan_after_horizon``) while a chunk is still running or before the last one ended."""
        observed_tick = self._tick_of_stamp.get(observation_stamp, current_tick)
        if observed_tick < self._cleared_tick:
            return False
        if self.replan_after_horizon and (self._waypoint_index(current_tick) is not None
                                          or observed_tick < self._done_tick):
            return False
        self._running = on_tick_clock(chunk, observed_tick, self.execution_horizon)
        self._actions = chunk_to_absolute_actions(chunk)[:self._running.horizon]
        self._done_tick = max(int(self._running.end), current_tick)
        self.goal_sequence = chunk.goal_sequence
        return True

    def clear(self, current_tick: int = 0) -> None:
        """Drops the current chunk (the instruction changed, or a new episode starts at
        ``current_tick``): chunks computed from earlier observations are ignored from now on."""
        self._running = self._actions = None
        self._cleared_tick = self._done_tick = current_tick

    def next_action(self, tick: int) -> np.ndarray | None:
        """The action to execute during ``tick``, or None when the running chunk has none left."""
        index = self._waypoint_index(tick)
        return None if index is None else self._actions[index]

    def _waypoint_index(self, tick: int) -> int | None:
        """Index of the running chunk's waypoint to execute during ``tick`` (None: none left)."""
        if self._running is None:
            return None
        index = self._running.due_index(tick + 1)
        return index if index < self._running.horizon else None


class ServoFollower:
    """Turns the controller's limited command stream into one absolute action per simulator tick.

    What a Cartesian impedance or servo controller does on a real arm: each tick it drives the
    arm to the newest pose command with the newest gripper command. :meth:`next_action` says
    whether a new command arrived since the last tick (lockstep steps only then) and, with
    ``hold``, repeats the last command otherwise (a real-time world keeps moving).
    """

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
