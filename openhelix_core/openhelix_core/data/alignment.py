"""Putting signals recorded at different rates on one clock (pure numpy).

A robot's bag holds cameras at 15-30 Hz, joint states at 100-1000 Hz and poses at any rate,
each stamped by its own driver. Training frames need all of them at the same instants
("ticks"). The rules, the same for every signal kind:

* **Never extrapolate.** A tick before a signal's first sample or after its last one has no
  value (``valid`` is False); so has a tick whose two bracketing samples are further apart than
  ``max_gap`` -- the signal was lost there, and a straight line across the hole would be
  invented data.
* **Continuous signals interpolate** between the bracketing samples: positions and joint
  angles linearly, orientations by slerp (quaternions, shorter arc).
* **Images take the nearest frame** within ``tolerance`` seconds of the tick (an image cannot be
  interpolated); no frame that close, no value.
* **Commands hold** their last value (a gripper command is a step function), for at most
  ``max_age`` seconds, and never before the first command.

Times are float seconds, ascending (:func:`check_times` says why a series is unusable).
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ..geometry import quaternion_slerp
from ..kinematics import quaternion_to_matrix


def check_times(times, name: str) -> np.ndarray:
    """``(N,)`` float seconds, finite and strictly increasing; ValueError naming ``name`` otherwise."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.size == 0:
        raise ValueError(f"{name}: no samples")
    if not np.all(np.isfinite(times)):
        raise ValueError(f"{name}: timestamps are not finite")
    steps = np.diff(times)
    if np.any(steps <= 0):
        first = int(np.flatnonzero(steps <= 0)[0])
        raise ValueError(f"{name}: timestamps do not increase (sample {first + 1} at {times[first + 1]:.6f} s "
                         f"follows {times[first]:.6f} s)")
    return times


def uniform_ticks(start: float, end: float, rate_hz: float) -> np.ndarray:
    """``start, start + 1/rate, ...`` up to ``end`` (inclusive up to rounding)."""
    if not (np.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate must be a positive number of Hz, got {rate_hz}")
    count = int(np.floor((end - start) * rate_hz + 1e-9)) + 1
    return start + np.arange(max(count, 0)) / rate_hz


def _bracket(times: np.ndarray, query: np.ndarray, max_gap: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the sample at or before each query, the fraction towards the next, and validity."""
    query = np.asarray(query, dtype=np.float64)
    right = np.searchsorted(times, query, side="left")
    exact = (right < len(times)) & (times[np.minimum(right, len(times) - 1)] == query)
    left = np.where(exact, right, right - 1)
    inside = (left >= 0) & ((left < len(times) - 1) | exact)
    left = np.clip(left, 0, len(times) - 1)
    upper = np.minimum(left + 1, len(times) - 1)
    span = times[upper] - times[left]
    fraction = np.where(span > 0, (query - times[left]) / np.where(span > 0, span, 1.0), 0.0)
    fraction = np.where(exact, 0.0, fraction)
    valid = inside & (exact | (span <= max_gap))
    return left, np.clip(fraction, 0.0, 1.0), valid


def interpolate_linear(times, values, query, max_gap: float) -> Tuple[np.ndarray, np.ndarray]:
    """Values ``(N, D)`` sampled at ``times`` -> ``(Q, D)`` at ``query`` and ``valid (Q,)``."""
    times = check_times(times, "signal")
    values = np.asarray(values, dtype=np.float64).reshape(len(times), -1)
    left, fraction, valid = _bracket(times, query, max_gap)
    upper = np.minimum(left + 1, len(times) - 1)
    out = values[left] + fraction[:, None] * (values[upper] - values[left])
    return out, valid


def interpolate_poses(times, positions, quaternions, query, max_gap: float
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses (``positions (N, 3)``, xyzw ``quaternions (N, 4)``) -> ``(Q, 3)``, ``(Q, 4)``, ``valid (Q,)``:
    positions linearly, orientations by slerp."""
    times = check_times(times, "pose")
    positions = np.asarray(positions, dtype=np.float64).reshape(len(times), 3)
    quaternions = np.asarray(quaternions, dtype=np.float64).reshape(len(times), 4)
    left, fraction, valid = _bracket(times, query, max_gap)
    upper = np.minimum(left + 1, len(times) - 1)
    position = positions[left] + fraction[:, None] * (positions[upper] - positions[left])
    quaternion = quaternion_slerp(quaternions[left], quaternions[upper], fraction)
    return position, quaternion, valid


def nearest_sample(times, query, tolerance: float) -> Tuple[np.ndarray, np.ndarray]:
    """Index of the sample nearest each query (``(Q,)``) and whether it lies within ``tolerance`` s."""
    times = check_times(times, "frames")
    query = np.asarray(query, dtype=np.float64)
    right = np.clip(np.searchsorted(times, query), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    pick = np.where(np.abs(times[left] - query) <= np.abs(times[right] - query), left, right)
    return pick, np.abs(times[pick] - query) <= tolerance


def hold_last(times, values, query, max_age: float = np.inf) -> Tuple[np.ndarray, np.ndarray]:
    """The last value at or before each query (``(Q, D)``), valid when one exists and is at most
    ``max_age`` s old."""
    times = check_times(times, "command")
    values = np.asarray(values, dtype=np.float64).reshape(len(times), -1)
    index = np.searchsorted(times, np.asarray(query, dtype=np.float64), side="right") - 1
    valid = index >= 0
    index = np.clip(index, 0, len(times) - 1)
    valid &= (np.asarray(query) - times[index]) <= max_age
    return values[index], valid


def _rotation_vector_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(rotation, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half)/angle -> 1/2 as the angle -> 0
    scale = np.where(angle > 1e-12, np.sin(half) / np.where(angle > 1e-12, angle, 1.0), 0.5)
    return np.concatenate([rotation * scale, np.cos(half)], axis=-1)


def integrate_twists(times, linear, angular, initial_position, initial_quaternion, body_frame: bool,
                     max_gap: float) -> Tuple[np.ndarray, np.ndarray]:
    """Poses at ``times`` from velocities (``linear (N, 3)`` m/s, ``angular (N, 3)`` rad/s), each
    held until the next sample, starting from the given pose at ``times[0]``.

    ``body_frame``: the velocities are expressed in the moving frame itself (a twist stamped in the
    end-effector frame); otherwise in the fixed base frame. A gap longer than ``max_gap`` cannot be
    integrated across (the velocity during it is unknown): ValueError naming it.
    """
    times = check_times(times, "twist")
    linear = np.asarray(linear, dtype=np.float64).reshape(len(times), 3)
    angular = np.asarray(angular, dtype=np.float64).reshape(len(times), 3)
    steps = np.diff(times)
    if np.any(steps > max_gap):
        first = int(np.flatnonzero(steps > max_gap)[0])
        raise ValueError(f"twist: {steps[first]:.3f} s without a sample after {times[first]:.3f} s (more than "
                         f"{max_gap} s); velocities cannot be integrated across it")
    positions = np.empty((len(times), 3))
    quaternions = np.empty((len(times), 4))
    positions[0] = np.asarray(initial_position, dtype=np.float64)
    quaternions[0] = np.asarray(initial_quaternion, dtype=np.float64) / np.linalg.norm(initial_quaternion)
    for k, dt in enumerate(steps):
        q = quaternions[k]
        delta = _rotation_vector_to_quaternion(angular[k] * dt)
        if body_frame:
            rotation = quaternion_to_matrix(q)
            positions[k + 1] = positions[k] + rotation @ linear[k] * dt
            quaternions[k + 1] = _hamilton(q, delta)
        else:
            positions[k + 1] = positions[k] + linear[k] * dt
            quaternions[k + 1] = _hamilton(delta, q)
        quaternions[k + 1] /= np.linalg.norm(quaternions[k + 1])
    return positions, quaternions


def _hamilton(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """xyzw product ``a * b`` (rotation ``R_a @ R_b``); numpy, for the per-sample loop."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz])


def true_runs(mask) -> List[Tuple[int, int]]:
    """Inclusive ``(first, last)`` index ranges of the consecutive True entries of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def still_mask(positions, quaternions, openness, times, min_duration: float, motion_m: float = 0.002,
               rotation_rad: float = 0.02, openness_change: float = 0.05) -> np.ndarray:
    """``(N,)`` True on samples inside a pause: a stretch of at least ``min_duration`` s over which
    the arm stays within ``motion_m`` and ``rotation_rad`` of where the stretch began and the
    gripper openness within ``openness_change``."""
    positions = np.asarray(positions, dtype=np.float64)
    quaternions = np.asarray(quaternions, dtype=np.float64)
    openness = np.asarray(openness, dtype=np.float64).reshape(-1)
    times = np.asarray(times, dtype=np.float64)
    still = np.zeros(len(times), dtype=bool)
    start = 0
    for k in range(1, len(times) + 1):
        moved = k == len(times)
        if not moved:
            turn = 2 * np.arccos(np.clip(abs(float(np.dot(quaternions[start], quaternions[k]))), 0.0, 1.0))
            moved = (np.linalg.norm(positions[k] - positions[start]) > motion_m or turn > rotation_rad
                     or abs(openness[k] - openness[start]) > openness_change)
        if moved:
            if times[k - 1] - times[start] >= min_duration:
                still[start:k] = True
            start = k
    return still


__all__ = ["check_times", "hold_last", "integrate_twists", "interpolate_linear", "interpolate_poses",
           "nearest_sample", "still_mask", "true_runs", "uniform_ticks"]
