"""The small policy shipped in sim_bridge/checkpoints/play_table_demo (README: "A policy that
learns on this machine"): it loads, it follows the instruction, and it solves a held-out episode
that it fails with System 2 ablated. That the documented command trained it is checked in
tests/openhelix_bringup/test_learning_table.py, beside the command."""
from pathlib import Path

import numpy as np
import pytest
import torch

from openhelix_core.models.system1 import SamplerConfig
from openhelix_core.runtime.controller import TrajectoryController
from openhelix_core.training.trainer import load_models_from_checkpoint
from openhelix_sim.envs import PlayTableEnv
from openhelix_sim.envs.annotations import validation_annotation
from openhelix_sim.experiments.in_process import dual_system_policy, evaluate_in_process
from openhelix_sim.experiments.variants import variant_models
from openhelix_sim.observation import observation_from_env
from openhelix_sim.start_states import initial_state
from openhelix_sim.task_set import EVAL_SEED_OFFSET

CHECKPOINT = Path(__file__).resolve().parents[2] / "sim_bridge" / "checkpoints" / "play_table_demo"


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return load_models_from_checkpoint(CHECKPOINT)


def test_the_instruction_decides_where_the_arm_goes(models):
    """turn_on_led and turn_on_lightbulb start from the very same observation: only System 2's
    goal differs, and the first trajectory heads for the LED button (left, -x) or the light
    switch (right, +x)."""
    policy = dual_system_policy(*models)
    env = PlayTableEnv(seed=0, image_size_static=64, image_size_gripper=48)
    try:
        initial_state(env, "turn_on_led", EVAL_SEED_OFFSET)
        observation = observation_from_env(env)
    finally:
        env.close()
    ends = {}
    for task in ("turn_on_led", "turn_on_lightbulb"):
        policy.reset(validation_annotation(task))
        policy.controller.generator.manual_seed(0)
        ends[task] = policy.act(observation).positions[-1]
    start = observation.ee_position
    assert ends["turn_on_led"][0] < start[0] - 0.1 and ends["turn_on_lightbulb"][0] > start[0] + 0.1
    assert np.linalg.norm(ends["turn_on_led"] - ends["turn_on_lightbulb"]) > 0.3


def test_the_policy_solves_a_held_out_episode_that_it_fails_without_system_2(models):
    outcomes = {variant: evaluate_in_process(lambda: dual_system_policy(*variant_models(*models, variant)),
                                             ["open_drawer"], [EVAL_SEED_OFFSET], max_steps=240)
                for variant in ("trained", "goal zeroed")}
    assert outcomes == {"trained": {"open_drawer": [True]}, "goal zeroed": {"open_drawer": [False]}}



@pytest.mark.parametrize("sampler", [None, SamplerConfig("ddim", 3, fast=True)])
def test_environments_side_by_side_see_what_one_environment_sees(models, sampler, monkeypatch):
    """Three play-tables, one batched System 1 call per step: every episode gets the chunks and
    the outcome that the one-environment evaluation gives it."""
    tasks, seeds = ["open_drawer", "turn_on_led"], [EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + 1]
    batched = TrajectoryController.act_together
    runs = {}
    for environments in (1, 3):
        episode_of, chunks, batch_sizes = {}, {}, []

        def factory():
            policy = dual_system_policy(*models, sampler=sampler)
            reset = policy.reset

            def remembering_reset(instruction=None, seed=None, policy=policy, reset=reset):
                reset(instruction, seed=seed)
                episode_of[id(policy.controller)] = (instruction, seed)

            policy.reset = remembering_reset
            return policy

        def recording(controllers, observations, goals, committed=None):
            batch_sizes.append(len(controllers))
            out = batched(controllers, observations, goals, committed)
            for controller, chunk in zip(controllers, out):
                chunks.setdefault(episode_of[id(controller)], []).append(chunk.positions)
            return out

        monkeypatch.setattr(TrajectoryController, "act_together", staticmethod(recording))
        outcomes = evaluate_in_process(factory, tasks, seeds, max_steps=45, environments=environments)
        runs[environments] = outcomes, chunks, batch_sizes
    (one_outcomes, one_chunks, one_sizes), (three_outcomes, three_chunks, three_sizes) = runs[1], runs[3]
    assert three_outcomes == one_outcomes and list(three_outcomes) == tasks
    assert set(three_chunks) == set(one_chunks) and len(one_chunks) == 4
    for episode, positions in one_chunks.items():
        assert len(three_chunks[episode]) == len(positions)
        np.testing.assert_allclose(np.stack(three_chunks[episode]), np.stack(positions), atol=1e-4)
    assert max(one_sizes) == 1 and max(three_sizes) == 3  # one call served three environments
