"""Turns a stream of overlapping trajectory chunks into one smooth command per control tick.

Chunks arrive every few ticks and each covers the next ``T`` waypoints from its own
observation time; switching abruptly from one to the next makes the arm jump at the chunk
boundary. ``mode="ensemble"`` averages, at each time, every chunk still covering it (temporal
ensembling as in ACT, Zhao et al. 2023: weights ``exp(-decay * i)`` with ``i = 0`` for the
oldest chunk); ``mode="replace"`` follows the newest chunk only and is kept as the reference;
``mode="rtc"`` (real-time chunking, Black et al. 2025) also follows the newest chunk only, which
the caller has denoised with the waypoints executed during its inference held fixed, so that
it continues the plan it replaces instead of jumping.

Chunks are timed from their observation's stamp and reach the blender one inference later;
sampling at "now" starts each at the waypoint due now and never replays waypoints in the past.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from openhelix_core.data.calvin_format import CALVIN_CONTROL_PERIOD_S
from openhelix_core.geometry import quaternion_slerp
from openhelix_core.runtime.safety import CommandLimiter, LimitedCommand, SafetyLimits
from openhelix_core.types import TrajectoryChunk

MODES = ("ensemble", "replace", "rtc")


@dataclass(frozen=True)
class TimedChunk:
    """A chunk on the clock of whoever executes it: waypoint ``i`` is due at ``start +
    chunk.time_from_start[i]``, and only the first ``horizon`` waypoints are executed."""

    start: float  # observation stamp the waypoint times count from (s)
    chunk: TrajectoryChunk
    horizon: int

    @classmethod
    def executed(cls, chunk: TrajectoryChunk, start: float, execution_horizon: int) -> TimedChunk:
        """``chunk`` timed from ``start``, of which the first ``execution_horizon`` waypoints (all,
        if it has fewer) are executed."""
        return cls(start, chunk, min(execution_horizon, len(chunk)))

    @property
    def end(self) -> float:
        return self.start + float(self.chunk.time_from_start[self.horizon - 1])

    @property
    def times(self) -> np.ndarray:
        """When each executed waypoint is due."""
        return self.start + self.chunk.time_from_start[:self.horizon]

    def due_index(self, time: float) -> int:
        """Index of the first waypoint not due before ``time`` (``horizon`` once every executed
        waypoint is past): execution at ``time`` starts there and never replays the past."""
        return int(np.searchsorted(self.times, time))

    def sample(self, time: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Pose and openness at ``time``, interpolated between waypoints (held before the first)."""
        times = self.times
        index = self.due_index(time)
        if index == 0:
            return self.chunk.positions[0], self.chunk.orientations[0], float(self.chunk.gripper_openness[0])
        index = min(index, self.horizon - 1)
        span = times[index] - times[index - 1]
        fraction = float(np.clip((time - times[index - 1]) / span, 0.0, 1.0)) if span > 0 else 1.0
        c = self.chunk
        position = (1 - fraction) * c.positions[index - 1] + fraction * c.positions[index]
        orientation = quaternion_slerp(c.orientations[index - 1], c.orientations[index], fraction)
        openness = (1 - fraction) * c.gripper_openness[index - 1] + fraction * c.gripper_openness[index]
        return position, orientation, float(openness)


class TrajectoryBlender:
    def __init__(self, mode: str = "ensemble", execution_horizon: int = 20, decay: float = 0.01,
                 max_chunks: int = 32, future_tolerance_s: float = 0.1) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
        if execution_horizon < 1:
            raise ValueError("execution_horizon must be at least 1")
        if decay < 0:
            raise ValueError("decay must be >= 0")
        if not future_tolerance_s >= 0:
            raise ValueError("future_tolerance_s must be >= 0")
        self.future_tolerance_s = future_tolerance_s
        self.mode = mode
        self.execution_horizon = execution_horizon
        self.decay = decay
        self._chunks: deque[TimedChunk] = deque(maxlen=max_chunks)

    def clear(self) -> None:
        self._chunks.clear()

    @property
    def newest(self) -> TimedChunk | None:
        """The chunk added last (None when nothing is planned)."""
        return self._chunks[-1] if self._chunks else None

    def add(self, chunk: TrajectoryChunk, start: float, now: float) -> bool:
        """Adds a chunk whose waypoint times count from ``start`` (its observation stamp).

        Returns False, keeping nothing, for a chunk that starts more than ``future_tolerance_s``
        after ``now`` (it would be executed later from data that claims to be newer than it is)
        or earlier than the newest chunk (it can only add lag).
        """
        if start > now + self.future_tolerance_s:
            return False
        if self._chunks and start < self._chunks[-1].start:
            return False
        if self.mode in ("replace", "rtc"):
            self._chunks.clear()
        self._chunks.append(TimedChunk.executed(chunk, start, self.execution_horizon))
        return True

    def sample(self, time: float) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The command for ``time``, or None when no chunk covers it (the arm should hold)."""
        while self._chunks and self._chunks[0].end < time:
            self._chunks.popleft()
        covering = [c for c in self._chunks if c.start <= time <= c.end]
        if not covering:
            return None
        samples = [c.sample(time) for c in covering]
        if len(samples) == 1:
            return samples[0]
        weights = np.exp(-self.decay * np.arange(len(samples)))
        weights /= weights.sum()
        position = sum(w * s[0] for w, s in zip(weights, samples, strict=True))
        orientation, accumulated = samples[0][1], weights[0]
        for weight, sample in zip(weights[1:], samples[1:], strict=True):
            accumulated += weight
            orientation = quaternion_slerp(orientation, sample[1], weight / accumulated)
        openness = float(sum(w * s[2] for w, s in zip(weights, samples, strict=True)))
        return position, orientation, openness


class CommandStream:
    """Chunks in, one limited TCP command per tick out: everything between System 1 and an arm.

    The controller node and the in-process evaluations and benchmarks run this same object, so
    what they measure is what a robot gets. :meth:`command` samples the blended plan at "now"
    and limits it over the real time since the previous command (at most two command periods:
    a late tick does not allow a long jump); after :meth:`stop` the next command starts from
    the measured pose.
    """

    def __init__(self, limits: SafetyLimits, blend_mode: str = "ensemble", execution_horizon: int = 20,
                 decay: float = 0.01, command_period_s: float = CALVIN_CONTROL_PERIOD_S, future_tolerance_s: float = 0.1) -> None:
        if not command_period_s > 0:
            raise ValueError("command_period_s must be positive")
        self.blender = TrajectoryBlender(blend_mode, execution_horizon, decay, future_tolerance_s=future_tolerance_s)
        self.limiter = CommandLimiter(limits)
        self.command_period_s = command_period_s
        self._last_command_time: float | None = None

    @property
    def mode(self) -> str:
        return self.blender.mode

    def add(self, chunk: TrajectoryChunk, observation_stamp: float, now: float) -> bool:
        """Adds a chunk (see :meth:`TrajectoryBlender.add`); returns whether it was kept."""
        return self.blender.add(chunk, observation_stamp, now)

    def stop(self) -> None:
        """Drops everything planned; the next command starts from the measured pose."""
        self.blender.clear()
        self.limiter.release()
        self._last_command_time = None

    def committed(self, observation_stamp: float, arrival: float, waypoint_period_s: float,
                  max_waypoints: int) -> TrajectoryChunk | None:
        """For real-time chunking: the planned waypoints, on the time grid of a chunk computed from
        an observation at ``observation_stamp``, that the arm executes before that chunk arrives
        at ``arrival`` (at most ``max_waypoints``; None when nothing is planned)."""
        samples, times = [], []
        for index in range(max_waypoints):
            time_from_start = (index + 1) * waypoint_period_s
            if observation_stamp + time_from_start > arrival:
                break
            sample = self.blender.sample(observation_stamp + time_from_start)
            if sample is None:
                break
            samples.append(sample)
            times.append(time_from_start)
        if not samples:
            return None
        positions, orientations, openness = zip(*samples)
        return TrajectoryChunk(positions=np.array(positions), orientations=np.array(orientations),
                               gripper_openness=np.array(openness), time_from_start=np.array(times))

    def command(self, now: float, measured_position: np.ndarray,
                measured_orientation: np.ndarray) -> LimitedCommand | None:
        """The command for ``now``, or None when nothing is planned for now or no time passed."""
        target = self.blender.sample(now)
        if target is None:
            return None
        if not self.limiter.anchored:
            self.limiter.reset(measured_position, measured_orientation)
            self._last_command_time = None
        if self._last_command_time is None:
            dt = self.command_period_s
        else:
            dt = min(now - self._last_command_time, 2.0 * self.command_period_s)
        if dt <= 0:
            return None  # the clock has not advanced (a paused simulation): nothing new to command
        command = self.limiter.limit(*target, dt=dt)
        self._last_command_time = now
        return command
