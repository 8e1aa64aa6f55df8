"""Scores trajectory chunks against what a bag recorded afterwards (numpy and the core's geometry, no ROS).

A chunk computed from the observation stamped ``t`` asks for waypoint ``i`` at
``t + time_from_start[i]``. The reference is the end-effector pose (and gripper openness) the
bag recorded at that time — achieved (``/ee_pose``, ``/joint_states``) or commanded (the
controller's command stream) — interpolated linearly (positions, openness) and by slerp
(orientations) between the two recorded samples around it. Waypoints outside the recording,
or in a gap longer than ``max_gap_s``, are not scored.

Per chunk, episode, segment and overall: position error (m), rotation error (deg, the angle of
the relative rotation), gripper agreement (both open or both closed at ``gripper_threshold``);
and the timing figures: latency (observation published -> chunk received, wall clock, and on
the nodes' sim clock), the goal age the chunk reports, and the System 1 / System 2 rates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from openhelix_core.geometry import quaternion_angle, quaternion_slerp

GRIPPER_THRESHOLD = 0.5


@dataclass
class PoseTrack:
    """Poses sampled over time: ``times`` (N,) s, ``positions`` (N, 3), ``quaternions`` (N, 4) x y z w."""

    times: np.ndarray
    positions: np.ndarray
    quaternions: np.ndarray

    @classmethod
    def from_samples(cls, times: Sequence[float], positions, quaternions) -> PoseTrack:
        times = np.asarray(times, dtype=np.float64)
        order = np.argsort(times, kind="stable")
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)[order]
        quaternions = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)[order]
        norms = np.linalg.norm(quaternions, axis=1, keepdims=True)
        quaternions = quaternions / np.where(norms > 0, norms, 1.0)
        return cls(times[order], positions, quaternions)

    def __len__(self) -> int:
        return len(self.times)

    def sample(self, times: np.ndarray, max_gap_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Interpolated positions, orientations and a validity mask at ``times``."""
        index, alpha, valid = _bracket(self.times, np.asarray(times, dtype=np.float64), max_gap_s)
        p0, p1 = self.positions[index], self.positions[np.minimum(index + 1, len(self) - 1)]
        q0, q1 = self.quaternions[index], self.quaternions[np.minimum(index + 1, len(self) - 1)]
        return p0 + alpha[:, None] * (p1 - p0), quaternion_slerp(q0, q1, alpha), valid


@dataclass
class ScalarTrack:
    times: np.ndarray
    values: np.ndarray

    @classmethod
    def from_samples(cls, times: Sequence[float], values: Sequence[float]) -> ScalarTrack:
        times = np.asarray(times, dtype=np.float64)
        order = np.argsort(times, kind="stable")
        return cls(times[order], np.asarray(values, dtype=np.float64)[order])

    def __len__(self) -> int:
        return len(self.times)

    def sample(self, times: np.ndarray, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
        index, alpha, valid = _bracket(self.times, np.asarray(times, dtype=np.float64), max_gap_s)
        v0, v1 = self.values[index], self.values[np.minimum(index + 1, len(self) - 1)]
        return v0 + alpha * (v1 - v0), valid


def _bracket(track: np.ndarray, times: np.ndarray, max_gap_s: float):
    if len(track) == 0:
        zeros = np.zeros(len(times), dtype=int)
        return zeros, np.zeros(len(times)), np.zeros(len(times), dtype=bool)
    index = np.clip(np.searchsorted(track, times, side="right") - 1, 0, len(track) - 1)
    upper = np.minimum(index + 1, len(track) - 1)
    span = track[upper] - track[index]
    alpha = np.where(span > 0, (times - track[index]) / np.where(span > 0, span, 1.0), 0.0)
    inside = (times >= track[0]) & (times <= track[-1])
    valid = inside & (span <= max_gap_s)
    return index, np.clip(alpha, 0.0, 1.0), valid


@dataclass
class ChunkRecord:
    """One trajectory chunk as produced during replay. Times in seconds on the bag's clock."""

    stamp: float
    sequence: int
    goal_sequence: int
    goal_age_s: float
    time_from_start: np.ndarray
    positions: np.ndarray
    quaternions: np.ndarray
    gripper: np.ndarray
    received: float = math.nan          # bag (sim) time when received
    latency_s: float = math.nan         # wall: observation published -> chunk received
    latency_sim_s: float = math.nan     # sim: chunk received - observation stamp


@dataclass
class GoalRecord:
    sequence: int
    stamp: float
    received: float = math.nan
    received_wall: float = math.nan


@dataclass
class Episode:
    label: str
    start: float
    end: float


@dataclass
class ChunkScore:
    chunk: ChunkRecord
    position_errors: np.ndarray      # per scored waypoint (m)
    rotation_errors: np.ndarray      # deg
    gripper_agree: np.ndarray        # bool, per waypoint with a gripper reference
    step_index: np.ndarray           # waypoint index of each scored waypoint

    @property
    def scored(self) -> bool:
        return len(self.position_errors) > 0


def score_chunk(chunk: ChunkRecord, poses: PoseTrack, gripper: ScalarTrack | None, horizon: int = 0,
                max_gap_s: float = 0.5, gripper_threshold: float = GRIPPER_THRESHOLD) -> ChunkScore:
    steps = len(chunk.time_from_start) if horizon <= 0 else min(horizon, len(chunk.time_from_start))
    times = chunk.stamp + np.asarray(chunk.time_from_start[:steps], dtype=np.float64)
    positions, quaternions, valid = poses.sample(times, max_gap_s)
    index = np.nonzero(valid)[0]
    position_errors = np.linalg.norm(chunk.positions[:steps][index] - positions[index], axis=1)
    rotation_errors = np.degrees(quaternion_angle(chunk.quaternions[:steps][index], quaternions[index]))
    agree = np.zeros(0, dtype=bool)
    if gripper is not None and len(gripper):
        openness, gripper_valid = gripper.sample(times, max_gap_s)
        both = valid & gripper_valid
        agree = (chunk.gripper[:steps][both] >= gripper_threshold) == (openness[both] >= gripper_threshold)
    return ChunkScore(chunk, position_errors, rotation_errors, agree, index)


def stats(values: Sequence[float], scale: float = 1.0) -> dict:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64) * scale
    if values.size == 0:
        return {"count": 0, "mean": None, "median": None, "p95": None, "max": None}
    return {"count": int(values.size), "mean": float(values.mean()), "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def rate_hz(times: Sequence[float]) -> float | None:
    times = sorted(t for t in times if np.isfinite(t))
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def summarize(scores: Sequence[ChunkScore], goals: Sequence[GoalRecord] = ()) -> dict:
    """Accuracy and timing figures of a set of scored chunks (and the goals of the same span)."""
    scored = [s for s in scores if s.scored]
    position = np.concatenate([s.position_errors for s in scored]) if scored else np.zeros(0)
    rotation = np.concatenate([s.rotation_errors for s in scored]) if scored else np.zeros(0)
    agree = np.concatenate([s.gripper_agree for s in scores]) if scores else np.zeros(0, dtype=bool)
    chunks = [s.chunk for s in scores]
    goal_sequences = sorted({c.goal_sequence for c in chunks if c.goal_sequence > 0})
    summary = {
        "chunks": len(scores),
        "chunks_scored": len(scored),
        "waypoints_scored": int(position.size),
        "position_error_m": stats(position),
        "rotation_error_deg": stats(rotation),
        "gripper_agreement": float(agree.mean()) if agree.size else None,
        "gripper_waypoints": int(agree.size),
        "latency_s": stats([c.latency_s for c in chunks]),
        "latency_sim_s": stats([c.latency_sim_s for c in chunks]),
        "goal_age_s": stats([c.goal_age_s for c in chunks if c.goal_sequence > 0]),
        "system1_rate_hz": rate_hz([c.received if np.isfinite(c.received) else c.stamp for c in chunks]),
        "goals": len(goals),
        "system2_rate_hz": rate_hz([g.received if np.isfinite(g.received) else g.stamp for g in goals]),
        "goal_sequences_used": len(goal_sequences),
        "chunks_without_goal": sum(1 for c in chunks if c.goal_sequence == 0),
    }
    summary["system1_steps_per_system2_update"] = (len(chunks) / len(goal_sequences)) if goal_sequences else None
    return summary


def episodes_from(instructions: Sequence[tuple[float, str]], pose_times: Sequence[float],
                  gap_s: float = 2.0) -> list[Episode]:
    """Episodes of a recording: a new one starts when the instruction changes or when the EE pose
    stream pauses for more than ``gap_s``."""
    pose_times = np.sort(np.asarray(pose_times, dtype=np.float64))
    if pose_times.size == 0:
        return []
    boundaries = {float(pose_times[0])}
    boundaries.update(float(t) for t in pose_times[1:][np.diff(pose_times) > gap_s])
    labels: list[tuple[float, str]] = []
    previous = None
    for t, text in sorted(instructions):
        if text != previous:
            labels.append((t, text))
            previous = text
            if pose_times[0] < t < pose_times[-1]:
                boundaries.add(float(t))
    starts = sorted(boundaries)
    episodes = []
    for index, start in enumerate(starts):
        if index + 1 < len(starts):   # up to the next start, or to the last pose before a pause
            before = pose_times[pose_times < starts[index + 1]]
            end = starts[index + 1] if starts[index + 1] - before[-1] <= gap_s else float(before[-1])
        else:
            end = float(pose_times[-1])
        text = next((label for t, label in reversed(labels) if t <= start + 1e-9), labels[0][1] if labels else "")
        episodes.append(Episode(f"{index + 1}: {text}" if text else f"{index + 1}", start, end))
    return episodes


def segments_of(episodes: Sequence[Episode], segment_s: float) -> list[Episode]:
    segments = []
    for episode in episodes:
        count = max(1, math.ceil((episode.end - episode.start) / segment_s - 1e-9))
        for k in range(count):
            start = episode.start + k * segment_s
            segments.append(Episode(f"{episode.label.split(':')[0]}.{k + 1}", start,
                                    min(start + segment_s, episode.end)))
    return segments


def _within(t: float, span: Episode, last: bool) -> bool:
    return span.start <= t < span.end or (last and t == span.end)


def evaluate(chunks: Sequence[ChunkRecord], goals: Sequence[GoalRecord], poses: PoseTrack,
             gripper: ScalarTrack | None, episodes: Sequence[Episode], segment_s: float = 5.0,
             horizon: int = 0, max_gap_s: float = 0.5, time_origin: float | None = None) -> dict:
    """The whole report body: overall, per episode, per segment, per waypoint index, per chunk."""
    if time_origin is None:
        time_origin = float(poses.times[0]) if len(poses) else 0.0
    scores = [score_chunk(c, poses, gripper, horizon, max_gap_s) for c in chunks]
    segments = segments_of(episodes, segment_s)

    def group(spans: Sequence[Episode]) -> list[dict]:
        rows = []
        for index, span in enumerate(spans):
            last = index == len(spans) - 1
            members = [s for s in scores if _within(s.chunk.stamp, span, last)]
            span_goals = [g for g in goals if _within(g.stamp, span, last)]
            rows.append({"label": span.label, "start_s": span.start - time_origin, "end_s": span.end - time_origin,
                         **summarize(members, span_goals)})
        return rows

    steps = max((len(c.time_from_start) for c in chunks), default=0)
    per_step = []
    for step in range(steps):
        errors = [s.position_errors[s.step_index == step] for s in scores if s.scored]
        values = np.concatenate(errors) if errors else np.zeros(0)
        per_step.append(float(values.mean()) if values.size else None)
    return {
        "overall": summarize(scores, goals),
        "episodes": group(episodes),
        "segments": group(segments),
        "position_error_by_waypoint_m": per_step,
        "chunks": [{"sequence": s.chunk.sequence, "t_s": s.chunk.stamp - time_origin,
                    "goal_sequence": s.chunk.goal_sequence, "goal_age_s": s.chunk.goal_age_s,
                    "waypoints_scored": int(len(s.position_errors)),
                    "position_error_m": float(s.position_errors.mean()) if s.scored else None,
                    "rotation_error_deg": float(s.rotation_errors.mean()) if s.scored else None,
                    "gripper_agreement": float(s.gripper_agree.mean()) if s.gripper_agree.size else None,
                    "latency_s": _finite(s.chunk.latency_s), "latency_sim_s": _finite(s.chunk.latency_sim_s)}
                   for s in scores],
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass
class Reference:
    """The ground truth a bag holds, on the bag's clock (header stamps where there are any)."""

    poses: PoseTrack
    gripper: ScalarTrack | None
    instructions: list[tuple[float, str]] = field(default_factory=list)
    source: str = "achieved"
