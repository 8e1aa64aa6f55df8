"""Command limiting, input watchdog and chunk blending (pure logic, explicit times)."""
import numpy as np
import pytest

from openhelix_core.geometry import quaternion_angle
from openhelix_core.runtime.chunking import TrajectoryBlender
from openhelix_core.runtime.safety import (
    CommandLimiter,
    EStopLatch,
    FrozenInputDetector,
    InputWatchdog,
    SafetyLimits,
    clip_chunk,
)
from openhelix_core.types import TrajectoryChunk

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])
YAW_90 = np.array([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
DT = 1 / 30


def limiter(**overrides):
    result = CommandLimiter(SafetyLimits(**overrides))
    result.reset(np.zeros(3) + [0.0, 0.0, 0.5], IDENTITY)
    return result


def test_targets_outside_the_workspace_are_clamped_to_the_box():
    command = limiter(max_linear_velocity=100.0, max_linear_acceleration=1e6).limit(
        np.array([5.0, 0.0, 0.5]), IDENTITY, 1.0, DT)
    assert command.position[0] == pytest.approx(0.8) and "workspace" in command.clamped


def test_speed_and_acceleration_limits_hold_over_a_stream():
    active = limiter(max_linear_velocity=0.25, max_linear_acceleration=2.0)
    previous, previous_velocity = np.array([0.0, 0.0, 0.5]), np.zeros(3)
    for _ in range(60):
        command = active.limit(np.array([0.6, 0.0, 0.5]), IDENTITY, 1.0, DT)
        velocity = (command.position - previous) / DT
        assert np.linalg.norm(velocity) <= 0.25 + 1e-9
        assert np.linalg.norm(velocity - previous_velocity) <= 2.0 * DT + 1e-9
        previous, previous_velocity = command.position, velocity
    assert previous[0] == pytest.approx(0.25 * 60 * DT - 0.25 ** 2 / (2 * 2.0), abs=0.02)


def test_rotation_rate_and_gripper_limits():
    command = limiter(max_angular_velocity=1.0, gripper_min=0.1).limit(np.array([0, 0, 0.5]), YAW_90, -0.5, DT)
    assert quaternion_angle(command.orientation, IDENTITY) == pytest.approx(1.0 * DT, rel=1e-6)
    assert command.gripper_openness == 0.1 and {"angular_velocity", "gripper"} <= command.clamped


def test_limiter_must_be_anchored_and_limits_validate():
    with pytest.raises(RuntimeError, match="anchor"):
        CommandLimiter(SafetyLimits()).limit(np.zeros(3), IDENTITY, 1.0, DT)
    with pytest.raises(ValueError, match="below workspace_max"):
        SafetyLimits(workspace_min=(0, 0, 1), workspace_max=(1, 1, 0.5))
    with pytest.raises(ValueError, match="max_linear_velocity"):
        SafetyLimits(max_linear_velocity=0.0)


def test_watchdog_stale_out_of_order_heartbeat_and_latched_estop():
    estop = EStopLatch()
    watchdog = InputWatchdog({"goal": 1.0, "camera": 0.2}, heartbeat_timeout_s=0.5, estop=estop)
    assert set(watchdog.blocking_causes(0.0)) == {"heartbeat", "stale_goal", "stale_camera"}
    watchdog.heartbeat(10.0)
    assert watchdog.observe("goal", 9.5, now=10.0) is None and watchdog.observe("camera", 9.9, now=10.0) is None
    assert watchdog.blocking_causes(10.0) == {}
    refusal = watchdog.observe("camera", 9.8, now=10.0)
    assert refusal.kind == "out_of_order" and "out of order" in refusal.message
    assert set(watchdog.blocking_causes(10.3)) == {"stale_camera"}
    assert set(watchdog.blocking_causes(10.6)) == {"stale_camera", "stale_goal", "heartbeat"}
    estop.engage("button")
    watchdog.heartbeat(11.0)
    watchdog.observe("camera", 11.0, now=11.0)
    watchdog.observe("goal", 11.0, now=11.0)
    assert set(watchdog.blocking_causes(11.0)) == {"estop"}
    estop.engage("second press")
    assert "button" in watchdog.blocking_causes(11.0)["estop"]
    assert estop.clear() == (True, "e-stop cleared (was: button)")
    assert watchdog.blocking_causes(11.0) == {}


def test_future_stamps_are_refused_and_never_block_later_valid_data():
    watchdog = InputWatchdog({"joint_states": 0.5}, future_tolerance_s=0.1)
    refusal = watchdog.observe("joint_states", 20.0, now=10.0)
    assert refusal.kind == "future" and "10.000 s ahead" in refusal.message
    assert set(watchdog.blocking_causes(10.0)) == {"stale_joint_states"}  # the future stamp was not recorded
    assert watchdog.observe("joint_states", 10.05, now=10.0) is None  # within the tolerance
    assert watchdog.observe("joint_states", 10.1, now=10.1) is None  # later valid data: not out of order
    assert watchdog.blocking_causes(10.2) == {}
    assert watchdog.observe("joint_states", float("nan"), now=10.2).kind == "future"


def test_forgetting_history_after_a_clock_jump_keeps_the_estop():
    estop = EStopLatch()
    watchdog = InputWatchdog({"goal": 3.0}, heartbeat_timeout_s=0.5, estop=estop)
    watchdog.observe("goal", 100.0, now=100.0)
    watchdog.heartbeat(100.0)
    estop.engage("button")
    watchdog.forget_history()  # the clock jumped back to 95 s
    assert watchdog.observe("goal", 95.0, now=95.0) is None  # not "out of order" against 100 s
    assert set(watchdog.blocking_causes(95.0)) == {"estop", "heartbeat"}


def test_watchdog_blocks_a_recorded_stamp_that_the_clock_fell_behind():
    watchdog = InputWatchdog({"goal": 3.0}, future_tolerance_s=0.1)
    watchdog.observe("goal", 100.0, now=100.0)
    assert "ahead" in watchdog.blocking_causes(95.0)["stale_goal"]  # clock went back without a jump event


def test_estop_cannot_be_cleared_while_its_input_asserts_it():
    estop = EStopLatch()
    estop.input(True, "/openhelix/estop")
    released, why = estop.clear()
    assert not released and "still reads true" in why and estop.engaged
    estop.input(False, "/openhelix/estop")  # releasing the button does not clear the latch
    assert estop.engaged
    assert estop.clear()[0] and not estop.engaged


def test_conditions_block_until_lifted():
    watchdog = InputWatchdog({})
    watchdog.set_condition("ee_outside_workspace", "TCP 1.2 m outside")
    assert watchdog.blocking_causes(0.0) == {"ee_outside_workspace": "TCP 1.2 m outside"}
    watchdog.set_condition("ee_outside_workspace", None)
    assert watchdog.blocking_causes(0.0) == {}


def test_frozen_input_detector_flags_unchanged_content_only():
    detector = FrozenInputDetector(timeout_s=1.0)
    for tick in range(30):
        detector.update("static", b"same", now=0.1 * tick)
        detector.update("gripper", tick, now=0.1 * tick)
    assert set(detector.frozen(2.9)) == {"static"}
    detector.update("static", b"new", now=3.0)
    assert detector.frozen(3.0) == {}
    assert FrozenInputDetector(timeout_s=0.0).frozen(100.0) == {}


def test_workspace_violation_of_the_measured_pose():
    limits = SafetyLimits()
    assert limits.workspace_violation(np.array([0.3, 0.0, 0.4])) is None
    assert limits.workspace_violation(np.array([0.805, 0.0, 0.4]), tolerance=0.01) is None
    assert "outside the workspace" in limits.workspace_violation(np.array([2.0, 0.0, 0.4]), tolerance=0.01)
    assert "outside the workspace" in limits.workspace_violation(np.array([1e6, 0.0, 0.4]), tolerance=0.01)
    assert "not finite" in limits.workspace_violation(np.array([np.inf, 0.0, 0.4]))


def test_commands_stay_in_the_box_when_anchored_outside_and_when_braking():
    active = CommandLimiter(SafetyLimits(max_linear_velocity=1.0, max_linear_acceleration=1.0))
    active.reset(np.array([2.0, 0.0, 0.5]), IDENTITY)  # measured pose outside the box
    low, high = np.array(active.limits.workspace_min), np.array(active.limits.workspace_max)
    for _ in range(30):
        command = active.limit(np.array([0.79, 0.0, 0.5]), IDENTITY, 1.0, DT)
        assert np.all(command.position >= low) and np.all(command.position <= high)
    active.reset(np.array([0.7, 0.0, 0.5]), IDENTITY)
    for _ in range(30):  # accelerates towards the face, then the target flips: braking overshoots
        command = active.limit(np.array([0.8, 0.0, 0.5]), IDENTITY, 1.0, DT)
        assert command.position[0] <= 0.8
    with pytest.raises(ValueError, match="dt"):
        active.limit(np.zeros(3), IDENTITY, 1.0, 0.0)


def test_limits_hold_over_irregular_intervals():
    active = limiter(max_linear_velocity=0.25, max_linear_acceleration=2.0)
    previous, previous_velocity = np.array([0.0, 0.0, 0.5]), np.zeros(3)
    for dt in np.random.default_rng(0).uniform(0.001, 0.05, 200):
        command = active.limit(np.array([0.6, 0.3, 0.5]), YAW_90, 1.0, float(dt))
        velocity = (command.position - previous) / dt
        assert np.linalg.norm(velocity) <= 0.25 + 1e-9
        assert np.linalg.norm(velocity - previous_velocity) <= 2.0 * dt + 1e-9
        previous, previous_velocity = command.position, velocity


def test_clip_chunk_boxes_waypoints_and_gripper_and_refuses_non_finite():
    chunk = TrajectoryChunk(positions=np.array([[0.1, 0.0, 0.5], [19.6, 0.0, 0.5]]),
                            orientations=np.tile(2 * IDENTITY, (2, 1)), gripper_openness=np.array([0.5, 3.0]),
                            time_from_start=np.array([DT, 2 * DT]))
    clipped, what = clip_chunk(chunk, SafetyLimits())
    assert what == {"workspace", "gripper"}
    assert clipped.positions[1, 0] == pytest.approx(0.8) and clipped.gripper_openness[1] == 1.0
    assert np.allclose(clipped.orientations, IDENTITY)
    assert clip_chunk(clipped, SafetyLimits())[1] == frozenset()
    with pytest.raises(ValueError, match="NaN"):
        clip_chunk(TrajectoryChunk(positions=np.full((1, 3), np.nan), orientations=IDENTITY[None],
                                   gripper_openness=np.ones(1), time_from_start=np.ones(1)), SafetyLimits())


def chunk_from(start: float, bias: float, steps: int = 20) -> TrajectoryChunk:
    times = DT * np.arange(1, steps + 1)
    positions = np.stack([0.1 * (start + times) + bias, np.zeros(steps), np.full(steps, 0.5)], axis=1)
    return TrajectoryChunk(positions=positions, orientations=np.tile(IDENTITY, (steps, 1)),
                           gripper_openness=np.ones(steps), time_from_start=times)


def largest_jump(mode: str) -> float:
    """Largest deviation between consecutive commands and the true motion, new chunk every 4 ticks."""
    rng = np.random.default_rng(0)
    blender = TrajectoryBlender(mode=mode, execution_horizon=20)
    commands = []
    for tick in range(120):
        now = tick * DT
        if tick % 4 == 0:
            blender.add(chunk_from(now, bias=rng.normal(0.0, 0.01)), start=now, now=now)
        commands.append(blender.sample(now + DT)[0][0])
    return float(np.max(np.abs(np.diff(commands) - 0.1 * DT)))


def test_ensembling_shrinks_the_jump_at_chunk_boundaries():
    naive, blended = largest_jump("replace"), largest_jump("ensemble")
    print(f"largest boundary jump: replace {1000 * naive:.2f} mm, ensemble {1000 * blended:.2f} mm")
    assert naive > 0.005
    assert blended < 0.35 * naive


def test_blender_interpolates_holds_and_expires():
    blender = TrajectoryBlender(mode="ensemble", execution_horizon=5)
    assert blender.add(chunk_from(0.0, bias=0.0), start=0.0, now=0.0)
    position, orientation, openness = blender.sample(1.5 * DT)
    assert position[0] == pytest.approx(0.1 * 1.5 * DT)
    assert openness == 1.0 and np.allclose(orientation, IDENTITY)
    assert blender.sample(5 * DT + 1e-6) is None  # past the execution horizon: hold
    assert blender.add(chunk_from(1.0, bias=0.0), start=1.0, now=1.0)
    assert not blender.add(chunk_from(0.5, bias=0.0), start=0.5, now=1.0)  # older observation than the newest
    assert blender.sample(1.0 + 2 * DT)[0][0] == pytest.approx(0.1 * (1.0 + 2 * DT))
    with pytest.raises(ValueError, match="mode"):
        TrajectoryBlender(mode="average")


def test_blender_refuses_chunks_that_start_in_the_future():
    blender = TrajectoryBlender(mode="ensemble", execution_horizon=20, future_tolerance_s=0.1)
    assert not blender.add(chunk_from(10.0, bias=0.0), start=10.0, now=0.0)
    for tick in range(400):  # nothing from the refused chunk is executed when its time comes
        assert blender.sample(tick * DT) is None
    assert blender.add(chunk_from(0.05, bias=0.0), start=0.05, now=0.0)  # within the tolerance
