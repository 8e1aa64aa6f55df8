"""Multi-rate alignment on known signals: exact values where the rules say, nothing where they don't."""
import math

import numpy as np
import pytest

from openhelix_core.data.alignment import (
    check_times,
    hold_last,
    integrate_twists,
    interpolate_linear,
    interpolate_poses,
    nearest_sample,
    still_mask,
    true_runs,
    uniform_ticks,
)
from openhelix_core.geometry import quaternion_angle


def yaw_quaternion(angle):
    return np.stack([np.zeros_like(angle), np.zeros_like(angle), np.sin(angle / 2), np.cos(angle / 2)], axis=-1)


def test_a_100hz_pose_ramp_read_at_15hz_frames_is_exact():
    times = 10.0 + np.arange(301) / 100.0
    positions = np.stack([0.3 * (times - 10.0), np.full_like(times, 0.2), 0.5 - 0.1 * (times - 10.0)], axis=1)
    quaternions = yaw_quaternion(0.7 * (times - 10.0))   # constant turn rate: slerp is exact
    frames = 10.0 + 0.004 + np.arange(45) / 15.0
    position, quaternion, valid = interpolate_poses(times, positions, quaternions, frames, max_gap=0.02)
    assert valid.all()
    np.testing.assert_allclose(position[:, 0], 0.3 * (frames - 10.0), atol=1e-12)
    np.testing.assert_allclose(position[:, 2], 0.5 - 0.1 * (frames - 10.0), atol=1e-12)
    np.testing.assert_allclose(quaternion_angle(quaternion, yaw_quaternion(0.7 * (frames - 10.0))), 0.0, atol=1e-7)


def test_nothing_is_extrapolated_and_gaps_are_not_bridged():
    times = np.array([1.0, 1.01, 1.02, 1.5, 1.51])
    values = np.arange(5.0)[:, None]
    out, valid = interpolate_linear(times, values, [0.99, 1.0, 1.015, 1.2, 1.505, 1.51, 1.52], max_gap=0.05)
    assert valid.tolist() == [False, True, True, False, True, True, False]
    np.testing.assert_allclose(out[[1, 2, 4, 5], 0], [0.0, 1.5, 3.5, 4.0])


def test_nearest_frame_within_tolerance_only():
    frames = np.array([0.0, 1 / 15, 2 / 15])
    index, valid = nearest_sample(frames, [0.03, 0.04, 0.15, 0.3], tolerance=0.05)
    assert index[:3].tolist() == [0, 1, 2] and valid.tolist() == [True, True, True, False]


def test_commands_hold_their_last_value_and_age_out():
    values, valid = hold_last([1.0, 2.0], [[0.0], [1.0]], [0.5, 1.0, 1.9, 2.0, 2.4], max_age=0.3)
    assert valid.tolist() == [False, True, False, True, False]
    assert values[[1, 3], 0].tolist() == [0.0, 1.0]


def test_base_and_body_twists_integrate_to_known_poses():
    times = np.arange(101) / 100.0
    linear = np.tile([0.1, 0.0, 0.0], (101, 1))
    angular = np.tile([0.0, 0.0, math.pi / 2], (101, 1))
    positions, quaternions = integrate_twists(times, linear, angular, [0, 0, 0], [0, 0, 0, 1], body_frame=False,
                                              max_gap=0.05)
    np.testing.assert_allclose(positions[-1], [0.1, 0.0, 0.0], atol=1e-12)
    assert quaternion_angle(quaternions[-1], yaw_quaternion(np.array(math.pi / 2))) < 1e-9
    # a body twist turning while moving forward goes round an arc (exact for the held-velocity steps)
    positions, _ = integrate_twists(times, linear, angular, [0, 0, 0], [0, 0, 0, 1], body_frame=True, max_gap=0.05)
    radius, step = 0.1 / (math.pi / 2), math.pi / 2 / 100
    chord = sum(0.001 * np.array([math.cos(k * step), math.sin(k * step)]) for k in range(100))
    np.testing.assert_allclose(positions[-1, :2], chord, atol=1e-12)
    assert np.linalg.norm(positions[-1, :2] - [radius, radius]) < 2e-3
    with pytest.raises(ValueError, match="cannot be integrated across"):
        integrate_twists([0.0, 1.0], linear[:2], angular[:2], [0, 0, 0], [0, 0, 0, 1], False, max_gap=0.5)


def test_pauses_runs_ticks_and_time_checks():
    times = np.arange(50) / 10.0
    positions = np.zeros((50, 3))
    positions[:10, 0] = np.arange(10) * 0.01
    positions[10:30, 0] = 0.09            # still for 2 s
    positions[30:, 0] = 0.09 + np.arange(1, 21) * 0.01
    still = still_mask(positions, np.tile([0, 0, 0, 1.0], (50, 1)), np.ones(50), times, min_duration=1.0)
    assert true_runs(still) == [(9, 29)]
    assert true_runs(~still) == [(0, 8), (30, 49)]
    np.testing.assert_allclose(uniform_ticks(1.0, 1.3, 10.0), [1.0, 1.1, 1.2, 1.3])
    with pytest.raises(ValueError, match="do not increase"):
        check_times([0.0, 0.1, 0.1], "joint_states")
