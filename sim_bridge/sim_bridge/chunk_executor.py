"""Turns received trajectory chunks into one absolute action per simulator tick.

Pure logic (no ROS). A chunk is computed from an observation published at some tick; by the
time it arrives the simulator has moved on, so execution starts at the waypoint that
corresponds to the ticks already elapsed (latency compensation in simulated time) and stops
after ``execution_horizon`` waypoints, after which the arm holds its last target.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from openhelix_core.models.system1 import System1Processor
from openhelix_core.types import TrajectoryChunk


def chunk_to_absolute_actions(chunk: TrajectoryChunk) -> np.ndarray:
    """``(T, 7)`` CALVIN absolute actions (xyz, Euler xyz, gripper +1 open / -1 close) of a chunk."""
    trajectory = np.column_stack([chunk.positions, chunk.orientations, chunk.gripper_openness])
    return System1Processor.trajectory_to_calvin_actions(trajectory)


def waypoint_to_absolute_action(position: np.ndarray, orientation: np.ndarray, openness: float) -> np.ndarray:
    """CALVIN absolute action ``(7,)`` of one pose and gripper openness."""
    trajectory = np.concatenate([position, orientation, [openness]])[None]
    return System1Processor.trajectory_to_calvin_actions(trajectory)[0]


class ChunkExecutor:
    def __init__(self, execution_horizon: int, remembered_ticks: int = 600) -> None:
        if execution_horizon < 1:
            raise ValueError("execution_horizon must be at least 1")
        self.execution_horizon = execution_horizon
        self._tick_of_stamp: OrderedDict[float, int] = OrderedDict()
        self._remembered_ticks = remembered_ticks
        self._actions: np.ndarray | None = None
        self._next_index = 0
        self.goal_sequence = 0

    def observation_published(self, stamp: float, tick: int) -> None:
        self._tick_of_stamp[stamp] = tick
        while len(self._tick_of_stamp) > self._remembered_ticks:
            self._tick_of_stamp.popitem(last=False)

    def receive(self, chunk: TrajectoryChunk, observation_stamp: float, current_tick: int) -> None:
        elapsed = current_tick - self._tick_of_stamp.get(observation_stamp, current_tick)
        self._actions = chunk_to_absolute_actions(chunk)[:self.execution_horizon]
        self._next_index = elapsed
        self.goal_sequence = chunk.goal_sequence

    def clear(self) -> None:
        """Drops the current chunk (e.g. when the instruction changes)."""
        self._actions = None

    def next_action(self) -> np.ndarray | None:
        """The action for this tick, or None when there is nothing left to execute."""
        if self._actions is None or self._next_index >= len(self._actions):
            return None
        self._next_index += 1
        return self._actions[self._next_index - 1]
