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

from openhelix_core.geometry import quaternion_slerp
from openhelix_core.types import TrajectoryChunk

MODES = ("ensemble", "replace", "rtc")


@dataclass(frozen=True)
class TimedChunk:
    start: float  # observation stamp the waypoint times count from (s)
    chunk: TrajectoryChunk
    horizon: int

    @property
    def end(self) -> float:
        return self.start + float(self.chunk.time_from_start[self.horizon - 1])

    def sample(self, time: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Pose and openness at ``time``, interpolated between waypoints (held before the first)."""
        times = self.start + self.chunk.time_from_start[:self.horizon]
        index = int(np.searchsorted(times, time))
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
        self._chunks.append(TimedChunk(start, chunk, min(self.execution_horizon, len(chunk))))
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
