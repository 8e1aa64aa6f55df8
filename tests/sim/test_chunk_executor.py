"""How the sim bridge turns received chunks into per-tick absolute actions."""
import numpy as np
import pytest

from openhelix_core.types import TrajectoryChunk
from sim_bridge.chunk_executor import ChunkExecutor, waypoint_to_absolute_action

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def chunk(steps: int, openness: float = 1.0) -> TrajectoryChunk:
    return TrajectoryChunk(positions=np.stack([np.array([0.01 * i, 0.0, 0.5]) for i in range(steps)]),
                           orientations=np.tile(IDENTITY, (steps, 1)), gripper_openness=np.full(steps, openness),
                           time_from_start=np.arange(1, steps + 1) / 30.0, goal_sequence=3)


def drain(executor: ChunkExecutor) -> list[np.ndarray]:
    actions = []
    while (action := executor.next_action()) is not None:
        actions.append(action)
    return actions


def test_waypoint_becomes_calvin_absolute_action():
    half_turn_z = np.array([0.0, 0.0, 1.0, 0.0])
    action = waypoint_to_absolute_action(np.array([0.1, 0.2, 0.3]), half_turn_z, openness=0.2)
    np.testing.assert_allclose(action[:3], [0.1, 0.2, 0.3])
    assert abs(abs(action[5]) - np.pi) < 1e-6 and action[6] == -1.0
    assert waypoint_to_absolute_action(np.zeros(3), IDENTITY, openness=0.9)[6] == 1.0


def test_executes_up_to_the_horizon_then_holds():
    executor = ChunkExecutor(execution_horizon=5)
    executor.observation_published(stamp=10.0, tick=0)
    executor.receive(chunk(20), observation_stamp=10.0, current_tick=0)
    actions = drain(executor)
    assert len(actions) == 5
    np.testing.assert_allclose([a[0] for a in actions], [0.0, 0.01, 0.02, 0.03, 0.04])
    assert executor.goal_sequence == 3


def test_skips_the_waypoints_whose_time_passed_while_the_chunk_was_computed():
    executor = ChunkExecutor(execution_horizon=20)
    for tick in range(4):
        executor.observation_published(stamp=10.0 + tick / 30, tick=tick)
    executor.receive(chunk(20), observation_stamp=10.0 + 1 / 30, current_tick=3)
    actions = drain(executor)
    assert len(actions) == 18
    assert actions[0][0] == pytest.approx(0.02)


def test_newer_chunk_replaces_the_older_one():
    executor = ChunkExecutor(execution_horizon=20)
    executor.receive(chunk(20, openness=1.0), observation_stamp=1.0, current_tick=0)
    executor.next_action()
    executor.receive(chunk(3, openness=0.0), observation_stamp=2.0, current_tick=1)
    actions = drain(executor)
    assert len(actions) == 3 and all(a[6] == -1.0 for a in actions)
