"""Scoring against known ground truth: exact chunks score zero, known offsets score what they are."""
import math

import numpy as np
import pytest

from openhelix_core.evaluation.bag_scoring import (
    ChunkRecord,
    Episode,
    GoalRecord,
    PoseTrack,
    ScalarTrack,
    episodes_from,
    evaluate,
    score_chunk,
    segments_of,
)


def yaw_quaternion(angle):
    return np.stack([np.zeros_like(angle), np.zeros_like(angle), np.sin(angle / 2), np.cos(angle / 2)], axis=-1)


TIMES = np.arange(0.0, 10.0, 0.05)
TRACK = PoseTrack.from_samples(TIMES, np.stack([0.1 * TIMES, np.zeros_like(TIMES), 0.5 + 0 * TIMES], axis=1),
                               yaw_quaternion(0.1 * TIMES))
GRIPPER = ScalarTrack.from_samples(TIMES, (TIMES < 5).astype(float))   # open, then closed at t = 5


def chunk_from_truth(stamp, steps=10, period=0.033, offset=(0.0, 0.0, 0.0), yaw_offset=0.0, **extra):
    t = stamp + period * np.arange(steps)
    return ChunkRecord(stamp=stamp, sequence=1, goal_sequence=1, goal_age_s=0.2, time_from_start=period * np.arange(steps),
                       positions=np.stack([0.1 * t, 0 * t, 0.5 + 0 * t], axis=1) + np.asarray(offset),
                       quaternions=yaw_quaternion(0.1 * t + yaw_offset), gripper=(t < 5).astype(float), **extra)


def test_a_chunk_that_matches_the_recording_scores_zero():
    score = score_chunk(chunk_from_truth(1.01), TRACK, GRIPPER)
    assert len(score.position_errors) == 10
    np.testing.assert_allclose(score.position_errors, 0.0, atol=1e-9)   # linear motion: interpolation is exact
    np.testing.assert_allclose(score.rotation_errors, 0.0, atol=1e-4)   # slerp about one axis is exact
    assert score.gripper_agree.all()


def test_known_offsets_score_as_themselves():
    score = score_chunk(chunk_from_truth(2.0, offset=(0.03, 0.04, 0.0), yaw_offset=math.radians(10)), TRACK, GRIPPER)
    np.testing.assert_allclose(score.position_errors, 0.05, atol=1e-9)
    np.testing.assert_allclose(score.rotation_errors, 10.0, atol=1e-3)


def test_gripper_disagreement_and_waypoints_outside_the_recording():
    chunk = chunk_from_truth(4.9, steps=10)
    chunk.gripper[:] = 1.0                           # stays open while the recording closed at t = 5
    score = score_chunk(chunk, TRACK, GRIPPER)
    assert 0 < score.gripper_agree.mean() < 1
    late = score_chunk(chunk_from_truth(9.94, steps=10), TRACK, GRIPPER)
    assert len(late.position_errors) == 1            # 9.94 s is scored, later ones are past the recording
    gappy = PoseTrack.from_samples([0.0, 1.0], [[0, 0, 0], [1, 0, 0]], [[0, 0, 0, 1]] * 2)
    assert len(score_chunk(chunk_from_truth(0.2, steps=3), gappy, None, max_gap_s=0.5).position_errors) == 0


def test_rotation_error_is_sign_invariant():
    negated = chunk_from_truth(1.01)
    negated.quaternions = -negated.quaternions       # the same rotations
    np.testing.assert_allclose(score_chunk(negated, TRACK, GRIPPER).rotation_errors, 0.0, atol=1e-4)
    turned = score_chunk(chunk_from_truth(1.01, yaw_offset=math.pi), TRACK, GRIPPER)
    np.testing.assert_allclose(turned.rotation_errors, 180.0, atol=1e-4)


def test_episodes_segments_and_rates():
    pose_times = np.concatenate([np.arange(0, 4, 0.1), np.arange(10, 14, 0.1)])   # a pause: two episodes
    episodes = episodes_from([(0.0, "open the drawer"), (10.0, "lift the block")], pose_times, gap_s=2.0)
    assert [e.label for e in episodes] == ["1: open the drawer", "2: lift the block"]
    assert [s.label for s in segments_of(episodes, 2.0)] == ["1.1", "1.2", "2.1", "2.2"]
    chunks = [chunk_from_truth(t, received=t + 0.1, latency_s=0.1) for t in np.arange(1.0, 9.0, 0.5)]
    goals = [GoalRecord(i, t, received=t) for i, t in enumerate(np.arange(1.0, 9.0, 0.5))]
    report = evaluate(chunks, goals, TRACK, GRIPPER, [Episode("all", 0.0, 10.0)], segment_s=5.0)
    overall = report["overall"]
    assert overall["chunks"] == overall["chunks_scored"] == 16
    assert overall["position_error_m"]["max"] == pytest.approx(0.0, abs=1e-9)
    assert overall["gripper_agreement"] == 1.0
    assert overall["system2_rate_hz"] == pytest.approx(2.0)
    assert overall["latency_s"]["median"] == pytest.approx(0.1)
    assert [s["chunks"] for s in report["segments"]] == [8, 8]
    assert len(report["position_error_by_waypoint_m"]) == 10
