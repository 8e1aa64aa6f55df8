"""How the simulated arm (sim bridge and in-process evaluation) turns received chunks into per-tick absolute actions."""
import numpy as np
import pytest

from openhelix_core.types import TrajectoryChunk
from openhelix_sim.execution import ChunkExecutor, ServoFollower, waypoint_to_absolute_action

IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def chunk(steps: int, openness: float = 1.0) -> TrajectoryChunk:
    return TrajectoryChunk(positions=np.stack([np.array([0.01 * i, 0.0, 0.5]) for i in range(steps)]),
                           orientations=np.tile(IDENTITY, (steps, 1)), gripper_openness=np.full(steps, openness),
                           time_from_start=np.arange(1, steps + 1) / 30.0, goal_sequence=3)


def drain(executor: ChunkExecutor, tick: int) -> list[np.ndarray]:
    """The actions of ticks ``tick``, ``tick + 1``, ... until the executor has none left."""
    actions = []
    while (action := executor.next_action(tick)) is not None:
        actions.append(action)
        tick += 1
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
    actions = drain(executor, tick=0)
    assert len(actions) == 5
    np.testing.assert_allclose([a[0] for a in actions], [0.0, 0.01, 0.02, 0.03, 0.04])
    assert executor.goal_sequence == 3


def test_a_chunk_is_executed_on_its_own_clock():
    """The simulated arm samples a chunk at its waypoint times, as a robot's command stream does:
    at 30 Hz one waypoint per tick (3DDA's CALVIN evaluation), at 10 Hz three ticks per waypoint,
    interpolated between them, ending on the last waypoint."""
    slow = chunk(6)
    slow = TrajectoryChunk(positions=slow.positions, orientations=slow.orientations,
                           gripper_openness=slow.gripper_openness, time_from_start=np.arange(1, 7) / 10.0)
    executor = ChunkExecutor(execution_horizon=20)
    executor.observation_published(stamp=10.0, tick=4)
    executor.receive(slow, observation_stamp=10.0, current_tick=6)
    x = [a[0] for a in drain(executor, tick=6)]
    # waypoint i is due at tick 4 + 3 (i + 1); the action of tick t reaches its target at t + 1
    assert len(x) == 4 + 18 - 6
    np.testing.assert_allclose(x[0::3], slow.positions[:, 0], atol=1e-12)
    np.testing.assert_allclose(x[1:3], [0.01 / 3, 0.02 / 3], atol=1e-12)


def test_skips_the_waypoints_whose_time_passed_while_the_chunk_was_computed():
    executor = ChunkExecutor(execution_horizon=20)
    for tick in range(4):
        executor.observation_published(stamp=10.0 + tick / 30, tick=tick)
    executor.receive(chunk(20), observation_stamp=10.0 + 1 / 30, current_tick=3)
    actions = drain(executor, tick=3)
    assert len(actions) == 18
    assert actions[0][0] == pytest.approx(0.02)


def test_newer_chunk_replaces_the_older_one():
    executor = ChunkExecutor(execution_horizon=20)
    executor.receive(chunk(20, openness=1.0), observation_stamp=1.0, current_tick=0)
    executor.next_action(tick=0)
    executor.receive(chunk(3, openness=0.0), observation_stamp=2.0, current_tick=1)
    actions = drain(executor, tick=1)
    assert len(actions) == 3 and all(a[6] == -1.0 for a in actions)


def test_replan_after_horizon_finishes_a_chunk_and_ignores_stale_ones():
    executor = ChunkExecutor(execution_horizon=3, replan_after_horizon=True)
    for tick in range(10):
        executor.observation_published(float(tick), tick)
    assert executor.receive(chunk(5), observation_stamp=2.0, current_tick=2)
    first = executor.next_action(tick=2)
    assert not executor.receive(chunk(5, openness=0.0), observation_stamp=3.0, current_tick=3)  # still running
    rest = drain(executor, tick=3)
    assert len([first, *rest]) == 3 and all(a[6] == 1.0 for a in rest)
    # the chunk ended at tick 5: one computed from tick 4 is stale, one from tick 5 is taken
    assert not executor.receive(chunk(5, openness=0.0), observation_stamp=4.0, current_tick=5)
    assert executor.receive(chunk(5, openness=0.0), observation_stamp=5.0, current_tick=5)
    assert [a[6] for a in drain(executor, tick=5)] == [-1.0, -1.0, -1.0]


def test_clear_drops_chunks_computed_before_it():
    executor = ChunkExecutor(execution_horizon=3)
    for tick in range(10):
        executor.observation_published(float(tick), tick)
    executor.clear(current_tick=6)  # a new episode starts at tick 6
    assert not executor.receive(chunk(5), observation_stamp=5.0, current_tick=6)
    assert executor.next_action(tick=6) is None
    assert executor.receive(chunk(5), observation_stamp=6.0, current_tick=6)
    assert len(drain(executor, tick=6)) == 3


def test_clear_in_the_middle_of_a_chunk_lets_the_next_episode_start():
    executor = ChunkExecutor(execution_horizon=5, replan_after_horizon=True)
    for tick in range(10):
        executor.observation_published(float(tick), tick)
    assert executor.receive(chunk(5), observation_stamp=1.0, current_tick=1)
    executor.next_action(tick=1)  # the episode succeeds after one step: the rest of the chunk is dropped
    executor.clear(current_tick=2)
    assert executor.receive(chunk(5), observation_stamp=2.0, current_tick=2)
    assert len(drain(executor, tick=2)) == 5


def test_servo_follower_drives_the_play_table_arm_to_a_commanded_pose(env):
    env.reset(seed=3)
    start, orientation = env.tcp_pose()
    target = start + np.array([0.05, -0.04, 0.03])
    follower = ServoFollower(env.gripper_openness())
    assert follower.next_action(hold=True) is None  # nothing commanded yet
    follower.pose_command(target, orientation)
    follower.gripper_command(0.0)
    assert follower.next_action(hold=False) is not None
    assert follower.next_action(hold=False) is None  # lockstep: no new command, no step
    for _ in range(40):  # a real-time world holds the last command
        env.step(follower.next_action(hold=True), action_type="absolute")
    reached, _ = env.tcp_pose()
    assert np.linalg.norm(reached - target) < 0.01, reached - target
    assert env.gripper_openness() < 0.5
    follower.clear(env.gripper_openness())
    assert follower.next_action(hold=True) is None


def test_a_period_written_with_few_digits_executes_whole_chunks_and_takes_the_next():
    """``waypoint_period_s: 0.0333333`` (as a YAML file writes 1/30) puts waypoint 20 a hair
    before tick 20: it is still reached at tick 20, and with ``replan_after_horizon`` a chunk
    computed from the observation at the tick the last one ended is taken (not refused as stale,
    which would leave a lockstep simulation waiting forever)."""
    rounded = chunk(20)
    rounded = TrajectoryChunk(positions=rounded.positions, orientations=rounded.orientations,
                              gripper_openness=rounded.gripper_openness, time_from_start=np.arange(1, 21) * 0.0333333)
    executor = ChunkExecutor(execution_horizon=20, replan_after_horizon=True)
    for tick in range(40):
        executor.observation_published(float(tick), tick)
    assert executor.receive(rounded, observation_stamp=0.0, current_tick=0)
    actions = drain(executor, tick=0)
    assert len(actions) == 20
    np.testing.assert_allclose([a[0] for a in actions], rounded.positions[:, 0], atol=1e-12)
    assert executor.receive(rounded, observation_stamp=20.0, current_tick=20)
    assert len(drain(executor, tick=20)) == 20


def test_a_chunk_ending_between_ticks_ends_on_its_last_waypoint():
    uneven = chunk(3)
    uneven = TrajectoryChunk(positions=uneven.positions, orientations=uneven.orientations,
                             gripper_openness=uneven.gripper_openness, time_from_start=np.array([1, 2, 2.5]) / 30)
    executor = ChunkExecutor(execution_horizon=20, replan_after_horizon=True)
    for tick in range(5):
        executor.observation_published(float(tick), tick)
    assert executor.receive(uneven, observation_stamp=0.0, current_tick=0)
    x = [a[0] for a in drain(executor, tick=0)]
    np.testing.assert_allclose(x, uneven.positions[:, 0], atol=1e-12)
    assert executor.receive(uneven, observation_stamp=3.0, current_tick=3)
