"""CALVIN's protocol and the single-task protocol on the play-table, driven by the scripted expert
instead of a policy."""
import numpy as np

from openhelix_core.data.calvin_format import CALVIN_CONTROL_PERIOD_S
from openhelix_core.evaluation.sequences import sequence_at
from openhelix_core.geometry import euler_to_quaternion, quaternion_to_euler
from openhelix_core.types import TrajectoryChunk
from openhelix_sim.envs.annotations import validation_annotation
from openhelix_sim.envs.expert import Expert
from openhelix_sim.evaluation_runner import CalvinEvaluationRunner, StepOutcome, TaskEpisodeRunner, run
from openhelix_sim.start_states import initial_state

EXPERT_TASKS = {"open_drawer", "close_drawer", "move_slider_left", "move_slider_right", "turn_on_led", "turn_off_led",
                "turn_on_lightbulb", "turn_off_lightbulb"}


def hold_action(env) -> np.ndarray:
    position, orientation = env.tcp_pose()
    return np.concatenate([position, quaternion_to_euler(orientation), [1.0]])


def first_sequence_starting_with(tasks: set[str]) -> int:
    return next(i for i in range(1000) if sequence_at(i)[1][0] in tasks and sequence_at(i)[1][1] in tasks)


def test_expert_completes_subtasks_and_the_sequence_ends_at_the_first_failure(env):
    index = first_sequence_starting_with(EXPERT_TASKS)
    runner = CalvinEvaluationRunner(env, [index], max_steps_per_subtask=360)
    instruction = runner.start_next_sequence()
    tasks = sequence_at(index)[1]
    assert instruction == validation_annotation(tasks[0])
    expert = Expert()
    for subtask in range(2):
        outcome = StepOutcome.RUNNING
        for action in expert.plan(runner.task, env):
            env.step(action, action_type="absolute")
            outcome = runner.after_step()
            if outcome is not StepOutcome.RUNNING:
                break
        assert outcome is StepOutcome.SUBTASK_SUCCEEDED, f"expert failed subtask {subtask}: {tasks[subtask]}"
    hold, outcomes = hold_action(env), []
    for _ in range(runner.max_steps_per_subtask):
        env.step(hold, action_type="absolute")
        outcomes.append(runner.after_step())
    assert outcomes[-1] is StepOutcome.SEQUENCE_ENDED and outcomes.count(StepOutcome.SEQUENCE_ENDED) == 1
    result = runner.results[0]
    assert result.completed == 2 and result.tasks == tasks
    assert result.info["sequence_index"] == index and len(result.info["steps_per_subtask"]) == 3
    assert runner.start_next_sequence() is None and runner.finished


def test_doing_nothing_fails_after_the_step_budget(env):
    runner = CalvinEvaluationRunner(env, [0, 1], max_steps_per_subtask=5)
    for _ in range(2):
        runner.start_next_sequence()
        hold = hold_action(env)
        outcomes = []
        while not outcomes or outcomes[-1] is StepOutcome.RUNNING:
            env.step(hold, action_type="absolute")
            outcomes.append(runner.after_step())
        assert len(outcomes) == 5
    assert [r.completed for r in runner.results] == [0, 0]
    assert [r.info["sequence_index"] for r in runner.results] == [0, 1]


def test_task_episodes_start_from_the_demo_start_states_and_score_one_subtask(env):
    episodes = [("open_drawer", 100_000), ("turn_on_led", 100_001), ("move_slider_left", 100_002)]
    runner = TaskEpisodeRunner(env, episodes, indices=[0, 2], max_steps_per_subtask=400)
    # the expert solves episode 0 ...
    assert runner.start_next_sequence() == validation_annotation("open_drawer")
    start = env.scene.observation().copy()
    initial_state(env, "open_drawer", 100_000)  # the same start state, rebuilt independently
    np.testing.assert_allclose(env.scene.observation(), start, atol=1e-6)
    outcome = StepOutcome.RUNNING
    for action in Expert().plan("open_drawer", env):
        env.step(action, action_type="absolute")
        outcome = runner.after_step()
        if outcome is not StepOutcome.RUNNING:
            break
    assert outcome is StepOutcome.SEQUENCE_ENDED
    # ... and holding still fails episode 2 (episode 1 belongs to another worker)
    assert runner.start_next_sequence() == validation_annotation("move_slider_left")
    hold = hold_action(env)
    outcomes = [StepOutcome.RUNNING]
    while outcomes[-1] is StepOutcome.RUNNING:
        env.step(hold, action_type="absolute")
        outcomes.append(runner.after_step())
    assert len(outcomes) - 1 == 400
    assert runner.start_next_sequence() is None
    assert [(r.tasks, r.completed) for r in runner.results] == [(("open_drawer",), 1), (("move_slider_left",), 0)]
    assert [r.initial_state for r in runner.results] == [
        {"task": "open_drawer", "seed": 100_000, "scene_variation": "task"},
        {"task": "move_slider_left", "seed": 100_002, "scene_variation": "task"}]
    assert [r.info["sequence_index"] for r in runner.results] == [0, 2]


class ExpertByInstruction:
    """A policy that performs whatever subtask it is instructed to with the scripted expert,
    ten actions per chunk, and records how it was reset."""

    def __init__(self, env):
        self.env, self.plan, self.resets = env, None, []
        self.task_of = {validation_annotation(task): task for task in EXPERT_TASKS}

    def reset(self, instruction, seed=None):
        self.resets.append((instruction, seed))
        self.plan = Expert().plan(self.task_of[instruction], self.env) if instruction in self.task_of else iter(())

    def act(self, observation):
        actions = [a for _, a in zip(range(10), self.plan)] or [hold_action(self.env)]
        actions = np.array(actions)
        return TrajectoryChunk(positions=actions[:, :3], orientations=euler_to_quaternion(actions[:, 3:6], "xyz"),
                               gripper_openness=(actions[:, 6] > 0).astype(float),
                               time_from_start=np.arange(1, len(actions) + 1) * CALVIN_CONTROL_PERIOD_S)


def test_run_rolls_a_policy_through_calvin_chains(env):
    """The in-process runner: the policy is reset with each subtask's instruction and the
    sequence's seed, its chunks are executed step by step, and the chain ends at the first
    subtask it cannot do."""
    index = first_sequence_starting_with(EXPERT_TASKS)
    tasks = sequence_at(index)[1]
    policy = ExpertByInstruction(env)
    finished = []
    results = run(policy, env, CalvinEvaluationRunner(env, [index], max_steps_per_subtask=360), execution_horizon=10,
                  on_sequence_end=finished.append)
    assert results == finished and len(results) == 1
    done = results[0].completed
    assert done >= 2 and results[0].tasks == tasks
    assert policy.resets == [(validation_annotation(task), index) for task in tasks[:min(done + 1, 5)]]
    steps = results[0].info["steps_per_subtask"]
    assert len(steps) == min(done + 1, 5) and (done == 5 or steps[-1] == 360)
