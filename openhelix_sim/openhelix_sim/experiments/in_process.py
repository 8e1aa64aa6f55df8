"""The OpenHelix :class:`~openhelix_core.runtime.policy.DualSystemPolicy` evaluated in process on the
single-task episodes, without ROS: the same start states, success checks and chunk execution as
the sim bridge's ``protocol: tasks``."""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Sequence

import numpy as np

from ..envs import PlayTableEnv
from ..envs.annotations import validation_annotation
from ..envs.tasks import SceneState, task_succeeded
from ..execution import ChunkExecutor
from ..observation import observation_from_env
from ..start_states import initial_state
from .variants import VARIANTS, variant_models, variants_to_run

CONTROL_RATE_HZ = 30.0  # the play table's steps per second


def evaluate_in_process(policy_factory: Callable[[], object], tasks: Sequence[str], seeds: Sequence[int],
                        max_steps: int = 240, execute_steps: int = 19, static_size: int = 64,
                        gripper_size: int = 48, progress: bool = False,
                        scene_variation: str = "task") -> Dict[str, List[bool]]:
    """Run a :class:`~openhelix_core.runtime.policy.DualSystemPolicy` in :class:`PlayTableEnv`.

    For every task and seed the table is put in :func:`initial_state` ``(task, seed)``, the
    policy is reset with the task's CALVIN evaluation sentence, and then, until the task's
    success check passes or ``max_steps`` 30 Hz steps have run: observe (both cameras rendered
    with the given sizes), ``policy.act`` (System 2 runs when its goal is due), execute the
    first ``execute_steps`` waypoints of the chunk through a
    :class:`~openhelix_sim.execution.ChunkExecutor`, as the sim bridge does with
    ``replan_after_horizon`` (the policy computes while the world waits: no latency). The
    controller's noise generator is re-seeded with the seed, so variants compared on the same
    seeds start from the same scene and draw the same diffusion noise.

    Args:
        policy_factory: returns the policy (called once; reset before every episode).

    Returns:
        ``{task: [success per seed]}``.
    """
    policy = policy_factory()
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False,
                       image_size_static=static_size, image_size_gripper=gripper_size)
    results: Dict[str, List[bool]] = {task: [] for task in tasks}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks) * len(seeds), desc="evaluating", unit="episode")
    try:
        for task in tasks:
            instruction = validation_annotation(task)
            for seed in seeds:
                initial_state(env, task, seed, scene_variation=scene_variation)
                start = SceneState.capture(env)
                policy.reset(instruction)
                controller = getattr(policy, "controller", None)
                if controller is not None and hasattr(controller, "generator"):
                    controller.generator.manual_seed(int(seed))
                executor = ChunkExecutor(execute_steps, replan_after_horizon=True)
                steps, success = 0, False
                while steps < max_steps and not success:
                    stamp = steps / CONTROL_RATE_HZ
                    executor.observation_published(stamp, steps)
                    executor.receive(policy.act(observation_from_env(env, stamp=stamp)), stamp, steps)
                    while (action := executor.next_action(steps)) is not None:
                        env.step(action)
                        steps += 1
                        if task_succeeded(task, start, SceneState.capture(env)):
                            success = True
                            break
                        if steps >= max_steps:
                            break
                results[task].append(success)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(task=task, ok=success)
    finally:
        if bar is not None:
            bar.close()
        env.close()
    return results


def dual_system_policy(system1, system2, processor=None, goal_refresh_period: int = 1, model_id: str = "trained"):
    """A :class:`DualSystemPolicy` from loaded models (System 2 runs every ``goal_refresh_period`` calls)."""
    from openhelix_core.models.system2 import processor_for
    from openhelix_core.runtime.controller import TrajectoryController
    from openhelix_core.runtime.planner import GoalPlanner
    from openhelix_core.runtime.policy import DualSystemPolicy

    controller = TrajectoryController(system1.eval(), f"system1/{model_id}", waypoint_period_s=1.0 / CONTROL_RATE_HZ)
    planner = GoalPlanner(system2.eval(), processor or processor_for(system2), f"system2/{model_id}")
    return DualSystemPolicy(controller=controller, planner=planner, goal_refresh_period=goal_refresh_period)


def evaluate_variants(checkpoint, tasks: Sequence[str], seeds: Sequence[int], max_steps: int, execute_steps: int,
                      static_size: int, gripper_size: int, progress: bool = True, variants: Sequence[str] = VARIANTS,
                      scene_variation: str = "task") -> Dict[str, Dict[str, List[bool]]]:
    """In-process :func:`evaluate_in_process` of every :func:`~.variants.variant_models` of a checkpoint."""
    import torch

    from openhelix_core.training.trainer import load_models_from_checkpoint

    torch.set_num_threads(max(1, torch.get_num_threads()))
    system1, system2 = load_models_from_checkpoint(checkpoint)
    results = {}
    for variant in variants_to_run(system1, variants):
        start = time.perf_counter()
        models = variant_models(system1, system2, variant)

        def factory(models=models, name=variant):
            return dual_system_policy(*models, model_id=name)

        results[variant] = evaluate_in_process(factory, tasks, seeds, max_steps=max_steps, execute_steps=execute_steps,
                                               static_size=static_size, gripper_size=gripper_size, progress=progress,
                                               scene_variation=scene_variation)
        rate = np.mean([x for r in results[variant].values() for x in r])
        print(f"[evaluate] {variant}: {100 * rate:.0f} % in {time.perf_counter() - start:.0f} s", flush=True)
    return results
