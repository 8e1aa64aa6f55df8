"""Evaluation on a simulator, without ROS: the protocols (CALVIN's long-horizon chains and
single-task episodes) and :func:`run`, which rolls a policy out through one of them.

Every closed-loop evaluation uses these protocol objects: :func:`run` in process (the policy
computes while the world waits), and the sim bridge node with the policy behind ROS topics
(the node is :func:`run`'s loop with messages in between). Both execute chunks through
:class:`~openhelix_sim.execution.ChunkExecutor`. Scoring recorded bags is open-loop and lives in
:mod:`openhelix_core.evaluation.bag_scoring`.

CALVIN (:class:`CalvinEvaluationRunner`), for each sequence: reset the scene to its initial state, then for each of its 5 subtasks give
the instruction (CALVIN's validation annotation) and check the subtask after every
environment step against the state at the subtask's start; a subtask not done within
``max_steps_per_subtask`` steps ends the sequence, as in CALVIN's ``evaluate_policy``.
The caller steps the environment (the sim bridge node does, with the actions the policy
sends over ROS) and calls :meth:`after_step`.

Single tasks (:class:`TaskEpisodeRunner`): every ``(task, seed)`` episode starts from the
randomised start state of :func:`openhelix_sim.start_states.initial_state` and is one subtask long; it is
the protocol of the training demo's learning table, so the ROS evaluation and the in-process
one score the same episodes.
"""
from __future__ import annotations

from enum import Enum
from typing import Callable, Protocol, Sequence

from openhelix_core.data.calvin_format import CALVIN_CONTROL_PERIOD_S
from openhelix_core.evaluation.metrics import SequenceResult
from openhelix_core.evaluation.sequences import STEPS_PER_SUBTASK, sequence_at
from openhelix_core.types import Observation, TrajectoryChunk

from .envs.annotations import validation_annotation
from .envs.tasks import SceneState, task_succeeded
from .execution import ChunkExecutor, hold_action
from .observation import observation_from_env
from .start_states import initial_state, reset_to_calvin_state
from .task_set import EPISODE_MAX_STEPS


class EmbeddedTaskOracle:
    """CALVIN's success checks on the embedded play-table (:mod:`openhelix_sim.envs.tasks`)."""

    def capture(self, env) -> SceneState:
        return SceneState.capture(env)

    def succeeded(self, task: str, start: SceneState, current: SceneState) -> bool:
        return task_succeeded(task, start, current)


class CalvinTaskOracle:
    """CALVIN's own task oracle, for the real calvin_env backend.

    Built exactly as CALVIN's ``evaluate_policy`` builds it: hydra instantiates the task
    configuration of the user's calvin checkout
    (``calvin_models/conf/callbacks/rollout/tasks/new_playtable_tasks.yaml``), and the oracle
    compares ``env.get_info()`` at the subtask's start with the current one.
    """

    def __init__(self, tasks_config_path: str) -> None:
        try:
            import hydra
            from omegaconf import OmegaConf
        except ImportError as error:
            raise ImportError("the calvin backend's task oracle needs hydra-core and omegaconf, which "
                              "calvin_env's installation provides") from error
        self.tasks = hydra.utils.instantiate(OmegaConf.load(tasks_config_path))

    def capture(self, env) -> dict:
        return env.calvin_info()

    def succeeded(self, task: str, start: dict, current: dict) -> bool:
        return task in self.tasks.get_task_info_for_set(start, current, {task})


def oracle_for(backend: str, tasks_config: str | None = None):
    """The success checks of ``backend``'s play-table: the embedded ones, or CALVIN's own oracle
    (``tasks_config``, default calvin_env's ``new_playtable_tasks.yaml``)."""
    if backend == "embedded":
        return EmbeddedTaskOracle()
    from .envs.calvin_backend import default_tasks_config

    return CalvinTaskOracle(tasks_config or str(default_tasks_config()))


class StepOutcome(Enum):
    RUNNING = "running"
    SUBTASK_SUCCEEDED = "subtask_succeeded"
    SEQUENCE_ENDED = "sequence_ended"


class Policy(Protocol):
    """What :func:`run` evaluates (e.g. :class:`~openhelix_core.runtime.policy.DualSystemPolicy`)."""

    def reset(self, instruction: str, seed: int | None = None) -> None: ...

    def act(self, observation: Observation) -> TrajectoryChunk: ...


def run(policy: Policy, env, protocol: CalvinEvaluationRunner, execution_horizon: int,
        on_sequence_end: Callable[[SequenceResult], None] | None = None) -> list[SequenceResult]:
    """Rolls ``policy`` out in ``env`` through every episode of ``protocol``; returns its results.

    Lockstep, as 3DDA's CALVIN evaluation: observe, ``policy.act``, execute the first
    ``execution_horizon`` waypoints of the chunk (a :class:`ChunkExecutor` with
    ``replan_after_horizon``), check the subtask after every step, repeat. The policy is reset
    with each subtask's instruction and with the protocol's :attr:`~CalvinEvaluationRunner.episode_seed`,
    so that policies compared on the same episodes draw the same diffusion noise.

    Args:
        env: the environment ``protocol`` was built on (embedded play-table).
        on_sequence_end: called with each sequence's result as it ends (progress, streaming).
    """
    return run_together([policy], [env], [protocol], execution_horizon, lambda policies, observations: [
        policy.act(observations[0])], on_sequence_end)


def run_together(policies: Sequence[Policy], envs: Sequence, protocols: Sequence[CalvinEvaluationRunner],
                 execution_horizon: int,
                 act: Callable[[Sequence[Policy], Sequence[Observation]], list[TrajectoryChunk]],
                 on_sequence_end: Callable[[SequenceResult], None] | None = None) -> list[SequenceResult]:
    """:func:`run` of ``N`` environments side by side, each with its own policy and protocol (a
    share of the episodes): whenever some of them need a chunk, ``act(policies, observations)``
    serves them all at once (one batched System 1 call,
    :func:`~openhelix_core.runtime.policy.act_together`). Each environment sees exactly what
    :func:`run` would show it. Returns the results of all protocols, in protocol order."""
    slots = [_Slot(policy, env, protocol, execution_horizon, on_sequence_end)
             for policy, env, protocol in zip(policies, envs, protocols)]
    while True:
        waiting = [slot for slot in slots if not slot.finished]
        if not waiting:
            break
        observations = [slot.observe() for slot in waiting]
        for slot, chunk in zip(waiting, act([slot.policy for slot in waiting], observations)):
            slot.execute(chunk)
    return [result for protocol in protocols for result in protocol.results]


class _Slot:
    """One environment of :func:`run_together`: its protocol's state between two chunks."""

    def __init__(self, policy: Policy, env, protocol: CalvinEvaluationRunner, execution_horizon: int,
                 on_sequence_end: Callable[[SequenceResult], None] | None) -> None:
        self.policy, self.env, self.protocol = policy, env, protocol
        self.on_sequence_end = on_sequence_end
        self.executor = ChunkExecutor(execution_horizon, replan_after_horizon=True)
        self.tick = 0
        self._begin(protocol.start_next_sequence())

    @property
    def finished(self) -> bool:
        return self.instruction is None

    def _begin(self, instruction: str | None) -> None:
        self.instruction = instruction
        if instruction is not None:
            self.policy.reset(instruction, seed=self.protocol.episode_seed)
            self.executor.clear(self.tick)

    def observe(self) -> Observation:
        stamp = self.tick * CALVIN_CONTROL_PERIOD_S
        self.executor.observation_published(stamp, self.tick)
        return observation_from_env(self.env, stamp=stamp)

    def execute(self, chunk: TrajectoryChunk) -> None:
        """Executes ``chunk`` up to its horizon, or until the subtask or sequence ends."""
        self.executor.receive(chunk, self.tick * CALVIN_CONTROL_PERIOD_S, self.tick)
        action = self.executor.next_action(self.tick)
        if action is None:  # a chunk with nothing to do now: the arm holds for a step
            action = hold_action(self.env)
        outcome = StepOutcome.RUNNING
        while outcome is StepOutcome.RUNNING and action is not None:
            self.env.step(action, action_type="absolute")
            self.tick += 1
            outcome = self.protocol.after_step()
            action = self.executor.next_action(self.tick)
        if outcome is StepOutcome.SUBTASK_SUCCEEDED:
            self._begin(self.protocol.instruction)
        elif outcome is StepOutcome.SEQUENCE_ENDED:
            if self.on_sequence_end is not None:
                self.on_sequence_end(self.protocol.results[-1])
            self._begin(self.protocol.start_next_sequence())


class CalvinEvaluationRunner:
    def __init__(self, env, sequence_indices: Sequence[int], num_sequences: int = 1000, seed: int = 0,
                 max_steps_per_subtask: int = STEPS_PER_SUBTASK, settle_steps: int = 1, oracle=None) -> None:
        if max_steps_per_subtask < 1:
            raise ValueError("max_steps_per_subtask must be at least 1")
        self.env = env
        self.sequence_indices = list(sequence_indices)
        self.num_sequences = num_sequences
        self.seed = seed
        self.max_steps_per_subtask = max_steps_per_subtask
        self.settle_steps = settle_steps
        self.oracle = oracle or EmbeddedTaskOracle()
        self.results: list[SequenceResult] = []
        self._position = -1
        self._initial_state: dict = {}
        self._tasks: tuple[str, ...] = ()
        self._subtask = 0
        self._steps = 0
        self._steps_per_subtask: list[int] = []
        self._start_state = None

    @property
    def finished(self) -> bool:
        return self._position >= len(self.sequence_indices)

    @property
    def sequence_index(self) -> int:
        return self.sequence_indices[self._position]

    @property
    def task(self) -> str:
        return self._tasks[self._subtask]

    @property
    def instruction(self) -> str:
        return validation_annotation(self.task)

    @property
    def episode_seed(self) -> int:
        """Seeds the policy's noise for the current sequence (its index in CALVIN's set)."""
        return self.sequence_index

    def start_next_sequence(self) -> str | None:
        """Resets the scene for the next sequence; returns its first instruction (None when done)."""
        self._position += 1
        if self.finished:
            return None
        self._initial_state, self._tasks = self._set_up_scene()
        self._subtask = 0
        self._steps_per_subtask = []
        self._begin_subtask()
        return self.instruction

    def _set_up_scene(self) -> tuple[dict, tuple[str, ...]]:
        """Puts the scene in the current sequence's initial state; returns it and the sequence's tasks."""
        state, tasks = sequence_at(self.sequence_index, self.num_sequences, self.seed)
        reset_to_calvin_state(self.env, state, self.settle_steps)
        return state, tasks

    def _begin_subtask(self) -> None:
        self._steps = 0
        self._start_state = self.oracle.capture(self.env)

    def after_step(self) -> StepOutcome:
        """Checks the current subtask after one environment step."""
        self._steps += 1
        if self.oracle.succeeded(self.task, self._start_state, self.oracle.capture(self.env)):
            self._steps_per_subtask.append(self._steps)
            self._subtask += 1
            if self._subtask == len(self._tasks):
                self._record()
                return StepOutcome.SEQUENCE_ENDED
            self._begin_subtask()
            return StepOutcome.SUBTASK_SUCCEEDED
        if self._steps >= self.max_steps_per_subtask:
            self._steps_per_subtask.append(self._steps)
            self._record()
            return StepOutcome.SEQUENCE_ENDED
        return StepOutcome.RUNNING

    def _record(self) -> None:
        self.results.append(SequenceResult(
            initial_state=self._initial_state, tasks=self._tasks, completed=self._subtask,
            info={"sequence_index": self.sequence_index, "steps_per_subtask": list(self._steps_per_subtask)}))


class TaskEpisodeRunner(CalvinEvaluationRunner):
    """Single-task episodes ``(task, seed)`` on the play-table (either backend), each recorded as a
    one-subtask :class:`SequenceResult` whose ``initial_state`` names the task and the seed."""

    def __init__(self, env, episodes: Sequence[tuple[str, int]], indices: Sequence[int] | None = None,
                 max_steps_per_subtask: int = EPISODE_MAX_STEPS, scene_variation: str = "task", oracle=None) -> None:
        self.episodes = [(str(task), int(seed)) for task, seed in episodes]
        self.scene_variation = scene_variation
        indices = range(len(self.episodes)) if indices is None else indices
        super().__init__(env, list(indices), max_steps_per_subtask=max_steps_per_subtask, oracle=oracle)

    @property
    def episode_seed(self) -> int:
        """The current episode's start-state seed, which also seeds the policy's noise."""
        return self.episodes[self.sequence_index][1]

    def _set_up_scene(self) -> tuple[dict, tuple[str, ...]]:
        task, seed = self.episodes[self.sequence_index]
        initial_state(self.env, task, seed, scene_variation=self.scene_variation, oracle=self.oracle)
        return {"task": task, "seed": seed, "scene_variation": self.scene_variation}, (task,)
