"""The dual-system policy: goal refresh every N System 1 calls, or goals fed from outside."""
from dataclasses import replace

import numpy as np
import pytest
from release_layout import tiny_release_actor, tiny_release_planner, write_release

from openhelix_core.models.system1 import CALVIN_ACTION_POSITION_BOUNDS_ABC_D
from openhelix_core.runtime.controller import TrajectoryController
from openhelix_core.runtime.planner import GoalPlanner
from openhelix_core.runtime.policy import DualSystemPolicy, NoGoalError
from openhelix_core.types import CameraFrame, Goal, Observation


def observation(seed: int, stamp: float = 1.0) -> Observation:
    rng = np.random.default_rng(seed)
    intrinsics = np.array([[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]])
    frames = {name: CameraFrame(rgb=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                                depth=np.full((64, 64), 1.0, np.float32), intrinsics=intrinsics,
                                camera_to_base=np.eye(4)) for name in ("static", "gripper")}
    return Observation(cameras=frames, ee_position=np.array([0.1, -0.2, 0.5]),
                       ee_orientation=np.array([0.0, 0.0, 0.0, 1.0]), gripper_openness=1.0, stamp=stamp)


class CountingPlanner:
    """Wraps the real tiny System 2 and counts its calls."""

    def __init__(self):
        self.planner = GoalPlanner.load(preset="tiny", seed=0)
        self.model_id = self.planner.model_id
        self.calls = []

    def plan(self, image, instruction):
        self.calls.append(instruction)
        return self.planner.plan(image, instruction)


@pytest.fixture(scope="module")
def controller():
    return TrajectoryController.load(preset="tiny", seed=0)


@pytest.mark.parametrize("period, expected_calls", [(1, 6), (3, 2), (10, 1)])
def test_system2_runs_every_n_system1_calls(controller, period, expected_calls):
    planner = CountingPlanner()
    policy = DualSystemPolicy(controller, planner, goal_refresh_period=period)
    policy.reset("open the drawer")
    chunks = [policy.act(observation(i, stamp=1.0 + i / 30)) for i in range(6)]
    assert len(planner.calls) == expected_calls
    assert [c.goal_sequence for c in chunks] == [1 + i // period for i in range(6)]
    assert all(c.goal_instruction == "open the drawer" for c in chunks)
    assert chunks[-1].goal_age == pytest.approx(((6 - 1) % period) / 30)


def test_goal_depends_on_what_system2_sees(controller):
    policy = DualSystemPolicy(controller, CountingPlanner())
    first = policy.update_goal(observation(0).cameras["static"].rgb, "open the drawer")
    second = policy.update_goal(observation(1).cameras["static"].rgb, "open the drawer")
    assert (first.sequence, second.sequence) == (1, 2)
    assert not np.allclose(first.embedding, second.embedding)


def test_two_node_mode_uses_the_goals_it_is_fed(controller):
    policy = DualSystemPolicy(controller)
    policy.reset()
    with pytest.raises(NoGoalError):
        policy.act(observation(0))
    with pytest.raises(RuntimeError, match="no System 2 planner"):
        policy.update_goal(observation(0).cameras["static"].rgb, "x")
    policy.set_goal(Goal(embedding=np.ones(512, np.float32), sequence=17, instruction="push", stamp=0.5))
    chunk = policy.act(observation(0, stamp=0.75))
    assert chunk.goal_sequence == 17 and chunk.goal_age == pytest.approx(0.25)
    assert chunk.positions.shape[1] == 3 and np.all(np.isfinite(chunk.positions))


def test_bad_goals_and_settings_are_refused(controller):
    policy = DualSystemPolicy(controller)
    with pytest.raises(ValueError, match="expects"):
        policy.set_goal(Goal(embedding=np.ones(511, np.float32), sequence=1, instruction="x", stamp=0.0))
    with pytest.raises(ValueError, match="NaN"):
        policy.set_goal(Goal(embedding=np.full(512, np.nan, np.float32), sequence=1, instruction="x", stamp=0.0))
    with pytest.raises(ValueError, match="goal_refresh_period"):
        DualSystemPolicy(controller, goal_refresh_period=0)
    policy_without_instruction = DualSystemPolicy(controller, CountingPlanner())
    with pytest.raises(NoGoalError, match="no instruction"):
        policy_without_instruction.act(observation(0))


def test_reset_forgets_the_goal(controller):
    policy = DualSystemPolicy(controller)
    policy.set_goal(Goal(embedding=np.ones(512, np.float32), sequence=3, instruction="x", stamp=0.0))
    policy.reset()
    with pytest.raises(NoGoalError):
        policy.act(observation(0))


def test_committed_waypoints_are_kept_exactly_and_the_rest_is_still_sampled():
    """Real-time chunking: the prefix the arm executes during inference is inpainted, not replanned."""
    system1 = TrajectoryController.load(preset="tiny", seed=0)
    goal = Goal(embedding=np.ones(system1.goal_dim, np.float32), sequence=1, instruction="open the drawer", stamp=1.0)
    previous = system1.act(observation(0), goal)
    committed_count = 5
    committed = replace(previous, positions=previous.positions[:committed_count] + [0.05, 0.0, 0.0],
                        orientations=previous.orientations[:committed_count],
                        gripper_openness=np.zeros(committed_count),
                        time_from_start=previous.time_from_start[:committed_count])
    chunk = system1.act(observation(1), goal, committed=committed)
    np.testing.assert_allclose(chunk.positions[:committed_count], committed.positions, atol=1e-6)
    np.testing.assert_allclose(chunk.gripper_openness[:committed_count], 0.0)
    assert len(chunk) == len(previous) and np.all(np.isfinite(chunk.positions))
    free = TrajectoryController.load(preset="tiny", seed=0)
    free.act(observation(0), goal)
    unconstrained = free.act(observation(1), goal)
    assert not np.allclose(unconstrained.positions[:committed_count], committed.positions, atol=1e-3)
    with pytest.raises(ValueError, match="committed waypoints"):
        system1.act(observation(2), goal, committed=previous)  # all T waypoints: nothing left to plan


def test_warm_up_leaves_the_noise_stream_and_history_untouched():
    warmed, cold = TrajectoryController.load(preset="tiny", seed=0), TrajectoryController.load(preset="tiny", seed=0)
    goal = Goal(embedding=np.ones(warmed.goal_dim, np.float32), sequence=1, instruction="x", stamp=1.0)
    assert warmed.warm_up() > 0 and len(warmed.history) == 0
    np.testing.assert_array_equal(warmed.act(observation(0), goal).positions, cold.act(observation(0), goal).positions)


def test_planner_and_controller_each_load_their_system_of_a_release(tmp_path):
    root = write_release(tmp_path / "openhelix", tiny_release_planner(), tiny_release_actor(), with_tokenizer=True)
    planner = GoalPlanner.from_release(root, "prompt_tuning_aux", architecture="tiny")
    controller = TrajectoryController.from_release(root, "prompt_tuning_aux", architecture="tiny")
    assert planner.model_id == controller.model_id == f"openhelix/prompt_tuning_aux/{root}"
    assert set(planner.reports) == {"llava", "system2_heads"}
    assert all(report.complete for report in planner.reports.values()) and controller.load_report.complete
    assert planner.warm_up() > 0
    image = observation(0).cameras["static"].rgb
    goal = Goal(embedding=planner.plan(image, "open the drawer"), sequence=1, instruction="open the drawer", stamp=1.0,
                model_id=planner.model_id)
    assert goal.embedding.shape == (planner.goal_dim,) and np.all(np.isfinite(goal.embedding))
    chunk = controller.act(observation(0), goal)
    low, high = (np.array(bound) for bound in CALVIN_ACTION_POSITION_BOUNDS_ABC_D)
    assert np.all(chunk.positions >= low - 1e-6) and np.all(chunk.positions <= high + 1e-6)


def test_planner_question_choice():
    planner = GoalPlanner.load(preset="tiny")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    goals = {}
    for question in (0, 1):
        planner.ask(question)
        goals[question] = planner.plan(image, "open the drawer")
        np.testing.assert_array_equal(goals[question], planner.plan(image, "open the drawer"))
    assert np.abs(goals[0] - goals[1]).max() > 1e-6  # the question is part of what System 2 reads
    planner.ask("random")
    drawn = [planner.plan(image, "open the drawer") for _ in range(12)]
    matches = [next(q for q, goal in goals.items() if np.array_equal(goal, sample)) for sample in drawn]
    assert set(matches) == {0, 1}
    for bad in (2, "first", -1):
        with pytest.raises(ValueError, match="inference_question"):
            planner.ask(bad)


@pytest.mark.parametrize("device, message", [("cuda:0", "CUDA"), ("tpu", "not a torch device"),
                                             ("meta", "not supported")])
def test_unusable_devices_are_refused_before_loading(device, message):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    for load in (lambda: GoalPlanner.load(preset="tiny", device=device),
                 lambda: TrajectoryController.load(preset="tiny", device=device)):
        with pytest.raises(ValueError, match=message):
            load()
