"""Command limiting, input watchdog and chunk blending (pure logic, explicit times)."""
import numpy as np
import pytest

from openhelix_core.chunking import TrajectoryBlender
from openhelix_core.geometry import quaternion_angle
from openhelix_core.safety import CommandLimiter, InputWatchdog, SafetyLimits
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
    watchdog = InputWatchdog({"goal": 1.0, "camera": 0.2}, heartbeat_timeout_s=0.5)
    assert set(watchdog.blocking_causes(0.0)) == {"heartbeat", "stale_goal", "stale_camera"}
    watchdog.heartbeat(10.0)
    assert watchdog.observe("goal", 9.5) is None and watchdog.observe("camera", 9.9) is None
    assert watchdog.blocking_causes(10.0) == {}
    assert "out of order" in watchdog.observe("camera", 9.8)
    assert set(watchdog.blocking_causes(10.3)) == {"stale_camera"}
    assert set(watchdog.blocking_causes(10.6)) == {"stale_camera", "stale_goal", "heartbeat"}
    watchdog.engage_estop("button")
    watchdog.heartbeat(11.0)
    watchdog.observe("camera", 11.0)
    watchdog.observe("goal", 11.0)
    assert set(watchdog.blocking_causes(11.0)) == {"estop"}
    watchdog.engage_estop("second press")
    assert "button" in watchdog.blocking_causes(11.0)["estop"]
    watchdog.clear_estop()
    assert watchdog.blocking_causes(11.0) == {}


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
            blender.add(chunk_from(now, bias=rng.normal(0.0, 0.01)), start=now)
        commands.append(blender.sample(now + DT)[0][0])
    return float(np.max(np.abs(np.diff(commands) - 0.1 * DT)))


def test_ensembling_shrinks_the_jump_at_chunk_boundaries():
    naive, blended = largest_jump("replace"), largest_jump("ensemble")
    print(f"largest boundary jump: replace {1000 * naive:.2f} mm, ensemble {1000 * blended:.2f} mm")
    assert naive > 0.005
    assert blended < 0.35 * naive


def test_blender_interpolates_holds_and_expires():
    blender = TrajectoryBlender(mode="ensemble", execution_horizon=5)
    blender.add(chunk_from(0.0, bias=0.0), start=0.0)
    position, orientation, openness = blender.sample(1.5 * DT)
    assert position[0] == pytest.approx(0.1 * 1.5 * DT)
    assert openness == 1.0 and np.allclose(orientation, IDENTITY)
    assert blender.sample(5 * DT + 1e-6) is None  # past the execution horizon: hold
    blender.add(chunk_from(1.0, bias=0.0), start=1.0)
    blender.add(chunk_from(0.5, bias=0.0), start=0.5)  # older observation than the newest: ignored
    assert blender.sample(1.0 + 2 * DT)[0][0] == pytest.approx(0.1 * (1.0 + 2 * DT))
    with pytest.raises(ValueError, match="mode"):
        TrajectoryBlender(mode="average")
