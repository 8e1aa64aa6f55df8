"""The OpenHelix :class:`~openhelix_core.runtime.policy.DualSystemPolicy` evaluated in process, without
ROS: :func:`openhelix_sim.evaluation_runner.run` through the same protocols as the sim bridge --
:class:`~openhelix_sim.evaluation_runner.TaskEpisodeRunner` (single-task episodes, the bridge's
``protocol: tasks``) and :class:`~openhelix_sim.evaluation_runner.CalvinEvaluationRunner`
(CALVIN's chains of five)."""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Sequence

import numpy as np

from openhelix_core.data.calvin_format import CALVIN_CONTROL_PERIOD_S
from openhelix_core.evaluation.metrics import EvaluationSummary, SequenceResult
from openhelix_core.evaluation.sequences import STEPS_PER_SUBTASK
from openhelix_core.runtime.policy import act_together

from ..envs import make_play_table
from ..evaluation_runner import CalvinEvaluationRunner, TaskEpisodeRunner, oracle_for, run, run_together
from ..task_set import DEMO_IMAGE_SIZES, EPISODE_MAX_STEPS, EXECUTION_HORIZON
from .variants import VARIANTS, variant_models, variants_to_run


def evaluate_in_process(policy_factory: Callable[[], object], tasks: Sequence[str], seeds: Sequence[int],
                        max_steps: int = EPISODE_MAX_STEPS, execute_steps: int = EXECUTION_HORIZON,
                        static_size: int = DEMO_IMAGE_SIZES["static"], gripper_size: int = DEMO_IMAGE_SIZES["gripper"],
                        progress: bool = False, scene_variation: str = "task",
                        backend: str = "embedded", environments: int = 1) -> Dict[str, List[bool]]:
    """Run a :class:`~openhelix_core.runtime.policy.DualSystemPolicy` in ``backend``'s play-table
    (``"calvin"``: calvin_env's scene D, episodes judged by CALVIN's own oracle).

    Every ``(task, seed)`` episode of :class:`~openhelix_sim.evaluation_runner.TaskEpisodeRunner`
    (start state :func:`~openhelix_sim.start_states.initial_state`, the task's CALVIN evaluation
    sentence, ``max_steps`` steps at most) is rolled out by
    :func:`~openhelix_sim.evaluation_runner.run`, with both cameras rendered at the given sizes
    and ``execute_steps`` waypoints executed per chunk. System 1's noise is re-seeded with the
    seed, so variants compared on the same seeds start from the same scene and draw the same
    diffusion noise.

    Args:
        policy_factory: returns the policy (called once per environment; reset before every episode).
        environments: play-tables stepped side by side, the episodes dealt out among them in
            turn; their policies must share one System 1, which then runs once per step for
            all (:func:`~openhelix_sim.evaluation_runner.run_together`). Every episode sees
            what it would with one environment.

    Returns:
        ``{task: [success per seed]}``.
    """
    results = task_episode_results(policy_factory, tasks, seeds, max_steps, execute_steps, static_size, gripper_size,
                                   progress, scene_variation, backend, environments)
    outcomes: Dict[str, List[bool]] = {task: [] for task in tasks}
    for result in results:
        outcomes[result.initial_state["task"]].append(result.completed == 1)
    return outcomes


def task_episode_results(policy_factory: Callable[[], object], tasks: Sequence[str], seeds: Sequence[int],
                         max_steps: int, execute_steps: int, static_size: int, gripper_size: int, progress: bool,
                         scene_variation: str, backend: str, environments: int) -> List[SequenceResult]:
    """:func:`evaluate_in_process`'s episodes as one :class:`SequenceResult` each (steps taken in
    ``info["steps_per_subtask"]``), in ``(task, seed)`` order."""
    episodes = [(task, seed) for task in tasks for seed in seeds]

    def protocol(env, indices):
        return TaskEpisodeRunner(env, episodes, indices, max_steps_per_subtask=max_steps,
                                 scene_variation=scene_variation, oracle=oracle_for(backend))

    return _roll_out(policy_factory, protocol, len(episodes), environments, execute_steps, "episode", progress,
                     backend, static_size, gripper_size)


def evaluate_chains_in_process(policy_factory: Callable[[], object], sequences: int,
                               max_steps: int = STEPS_PER_SUBTASK, execute_steps: int = EXECUTION_HORIZON,
                               static_size: int = DEMO_IMAGE_SIZES["static"],
                               gripper_size: int = DEMO_IMAGE_SIZES["gripper"], progress: bool = False,
                               backend: str = "embedded", environments: int = 1) -> List[SequenceResult]:
    """CALVIN's protocol on the first ``sequences`` of its 1000 evaluation sequences (reset
    state, five instructions, ``max_steps`` steps each, a failed subtask ends the chain), the
    policy rolled out by :func:`~openhelix_sim.evaluation_runner.run` as in
    :func:`evaluate_in_process` (``environments`` too); returns one result per sequence, in order."""
    def protocol(env, indices):
        return CalvinEvaluationRunner(env, indices, max_steps_per_subtask=max_steps, oracle=oracle_for(backend))

    return _roll_out(policy_factory, protocol, int(sequences), environments, execute_steps, "sequence", progress,
                     backend, static_size, gripper_size)


def _roll_out(policy_factory, make_protocol, total: int, environments: int, execute_steps: int, unit: str,
              progress: bool, backend: str, static_size: int, gripper_size: int) -> List[SequenceResult]:
    """Episodes ``0 .. total - 1`` dealt out to ``environments`` play-tables (episode ``i`` to
    ``i % environments``), rolled out by :func:`run` (one) or :func:`run_together` (several), with a
    progress bar; returns the results in episode order and closes the play-tables."""
    if environments < 1:
        raise ValueError(f"environments must be at least 1, got {environments}")
    environments = min(environments, max(total, 1))
    envs = [make_play_table(backend, image_size_static=static_size, image_size_gripper=gripper_size,
                            render_static=False, render_gripper=False) for _ in range(environments)]
    protocols = [make_protocol(env, list(range(index, total, environments))) for index, env in enumerate(envs)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="evaluating", unit=unit)

    def ended(result) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(first_task=result.tasks[0], completed=result.completed)

    try:
        if environments == 1:
            results = run(policy_factory(), envs[0], protocols[0], execute_steps, on_sequence_end=ended)
        else:
            results = run_together([policy_factory() for _ in envs], envs, protocols, execute_steps, act_together,
                                   on_sequence_end=ended)
        return sorted(results, key=lambda result: result.info["sequence_index"])
    finally:
        if bar is not None:
            bar.close()
        for env in envs:
            env.close()


def dual_system_policy(system1, system2, processor=None, goal_refresh_period: int = 1, model_id: str = "trained",
                       sampler=None):
    """A :class:`DualSystemPolicy` from loaded models (System 2 runs every ``goal_refresh_period`` calls);
    ``sampler`` (a :class:`~openhelix_core.models.system1.SamplerConfig`) is set on ``system1``."""
    from openhelix_core.models.system2 import processor_for
    from openhelix_core.runtime.controller import TrajectoryController
    from openhelix_core.runtime.planner import GoalPlanner
    from openhelix_core.runtime.policy import DualSystemPolicy

    if sampler is not None:
        system1.set_sampler(sampler)
    controller = TrajectoryController(system1.eval(), f"system1/{model_id}", waypoint_period_s=CALVIN_CONTROL_PERIOD_S)
    planner = GoalPlanner(system2.eval(), processor or processor_for(system2), f"system2/{model_id}")
    return DualSystemPolicy(controller=controller, planner=planner, goal_refresh_period=goal_refresh_period)


def evaluate_variants(checkpoint, tasks: Sequence[str], seeds: Sequence[int], max_steps: int, execute_steps: int,
                      static_size: int, gripper_size: int, progress: bool = True, variants: Sequence[str] = VARIANTS,
                      scene_variation: str = "task", backend: str = "embedded",
                      sampler=None, environments: int = 1) -> Dict[str, Dict[str, List[bool]]]:
    """In-process :func:`evaluate_in_process` of every :func:`~.variants.variant_models` of a checkpoint,
    System 1 sampling with ``sampler`` (default: the model's reference sampler) for ``environments``
    play-tables at once."""
    import torch

    from openhelix_core.training.trainer import load_models_from_checkpoint

    torch.set_num_threads(max(1, torch.get_num_threads()))
    system1, system2 = load_models_from_checkpoint(checkpoint)
    results = {}
    for variant in variants_to_run(system1, variants):
        start = time.perf_counter()
        models = variant_models(system1, system2, variant)

        def factory(models=models, name=variant):
            return dual_system_policy(*models, model_id=name, sampler=sampler)

        results[variant] = evaluate_in_process(factory, tasks, seeds, max_steps=max_steps, execute_steps=execute_steps,
                                               static_size=static_size, gripper_size=gripper_size, progress=progress,
                                               scene_variation=scene_variation, backend=backend,
                                               environments=environments)
        rate = np.mean([x for r in results[variant].values() for x in r])
        print(f"[evaluate] {variant}: {100 * rate:.0f} % in {time.perf_counter() - start:.0f} s", flush=True)
    return results


def evaluate_variant_chains(checkpoint, sequences: int, max_steps: int, execute_steps: int, static_size: int,
                            gripper_size: int, progress: bool = True, variants: Sequence[str] = VARIANTS,
                            backend: str = "embedded", sampler=None,
                            environments: int = 1) -> Dict[str, EvaluationSummary]:
    """In-process :func:`evaluate_chains_in_process` of every variant of a checkpoint (``sampler`` and
    ``environments`` as :func:`evaluate_variants`)."""
    from openhelix_core.training.trainer import load_models_from_checkpoint

    system1, system2 = load_models_from_checkpoint(checkpoint)
    summaries = {}
    for variant in variants_to_run(system1, variants):
        start = time.perf_counter()
        models = variant_models(system1, system2, variant)
        def factory(models=models, name=variant):
            return dual_system_policy(*models, model_id=name, sampler=sampler)

        results = evaluate_chains_in_process(factory, sequences, max_steps, execute_steps, static_size, gripper_size,
                                             progress, backend, environments)
        summaries[variant] = EvaluationSummary.from_results(results)
        print(f"[evaluate chains] {variant}: average length {summaries[variant].average_length:.2f} "
              f"in {time.perf_counter() - start:.0f} s", flush=True)
    return summaries
