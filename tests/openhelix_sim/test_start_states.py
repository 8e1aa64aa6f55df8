"""openhelix_sim.start_states and openhelix_sim.observation: the episodes' randomised start states
and what the policy observes of them."""
import numpy as np
import pytest

pytest.importorskip("pybullet")

from openhelix_sim.envs import PlayTableEnv  # noqa: E402
from openhelix_sim.envs.tasks import SceneState, task_succeeded  # noqa: E402
from openhelix_sim.observation import observation_from_env  # noqa: E402
from openhelix_sim.start_states import initial_state  # noqa: E402


def test_initial_states_enforce_the_task_precondition():
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    try:
        for seed in range(3):
            initial_state(env, "open_drawer", seed)
            assert env.scene.observation()[1] < 0.031
            initial_state(env, "close_drawer", seed)
            assert env.scene.observation()[1] > 0.14
            initial_state(env, "move_slider_right", seed)
            assert env.scene.observation()[0] > 0.17
            initial_state(env, "turn_on_led", seed)
            assert env.scene.observation()[5] == 0.0
        a = initial_state(env, "turn_on_lightbulb", 7)["robot_obs"]
        b = initial_state(env, "turn_on_lightbulb", 7)["robot_obs"]
        np.testing.assert_allclose(a, b)  # deterministic per (task, seed)
    finally:
        env.close()


@pytest.mark.parametrize("task, colors", [("push_red_block_left", ("red",)), ("lift_pink_block_table", ("pink",)),
                                          ("stack_block", ("red", "blue", "pink"))])
def test_block_tasks_start_with_their_blocks_free_on_the_table_top(task, colors):
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    try:
        for seed in range(3):
            scene = initial_state(env, task, seed, scene_variation="full")["scene_obs"]
            again = initial_state(env, task, seed, scene_variation="full")["scene_obs"]
            np.testing.assert_allclose(again, scene, atol=1e-9)  # deterministic per (task, seed)
            xy = {c: scene[6 + 6 * k: 8 + 6 * k] for k, c in enumerate(("red", "blue", "pink"))}
            for c in colors:
                k = ("red", "blue", "pink").index(c)
                assert 0.0 <= xy[c][0] <= 0.35 and -0.15 <= xy[c][1] <= -0.03, (task, seed, c, xy[c])
                assert abs(scene[8 + 6 * k] - 0.46) < 0.003  # resting on the table top
                for other, q in xy.items():
                    if other != c:
                        assert np.linalg.norm(xy[c] - q) > 0.1, (task, seed, c, other)
    finally:
        env.close()


def test_task_scene_variation_leaves_only_the_instruction_to_tell_tasks_apart():
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    try:
        led = initial_state(env, "turn_on_led", 1)
        led_scene = env.scene.observation().copy()
        bulb = initial_state(env, "turn_on_lightbulb", 2)
        np.testing.assert_allclose(env.scene.observation(), led_scene, atol=1e-3)  # same scene (settled) ...
        assert np.abs(led["robot_obs"][:3] - bulb["robot_obs"][:3]).max() > 1e-3  # ... the arm jittered
        same_seed = initial_state(env, "turn_on_lightbulb", 1)
        np.testing.assert_allclose(same_seed["robot_obs"], led["robot_obs"], atol=1e-9)  # one pose per seed
        assert led["robot_obs"][14] < 0  # the expert presses buttons with a closed gripper: it starts closed
        initial_state(env, "turn_on_led", 1, scene_variation="full")
        full_1 = env.scene.observation().copy()
        initial_state(env, "turn_on_led", 2, scene_variation="full")
        assert np.abs(env.scene.observation()[6:] - full_1[6:]).max() > 0.01  # blocks moved between seeds
        with pytest.raises(ValueError, match="scene_variation"):
            initial_state(env, "turn_on_led", 1, scene_variation="some")
    finally:
        env.close()


def test_observation_matches_the_env():
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False, image_size_static=32, image_size_gripper=32)
    try:
        initial_state(env, "turn_on_led", 1)
        start = SceneState.capture(env)
        obs = observation_from_env(env, stamp=1.5)
        assert obs.cameras["static"].rgb.shape == (32, 32, 3) and obs.stamp == 1.5
        np.testing.assert_allclose(obs.ee_position, env.tcp_pose()[0])
        assert not task_succeeded("turn_on_led", start, SceneState.capture(env))
    finally:
        env.close()
