"""openhelix_sim.start_states and openhelix_sim.observation: the episodes' randomised start states
and what the policy observes of them."""
import numpy as np
import pytest

pytest.importorskip("pybullet")

from openhelix_core.evaluation.sequences import TASK_NAMES, env_state_for_initial_state, is_valid_chain  # noqa: E402
from openhelix_sim.envs import PlayTableEnv  # noqa: E402
from openhelix_sim.envs.tasks import SceneState, task_succeeded  # noqa: E402
from openhelix_sim.evaluation_runner import EmbeddedTaskOracle  # noqa: E402
from openhelix_sim.observation import observation_from_env  # noqa: E402
from openhelix_sim.start_states import calvin_setups, initial_state  # noqa: E402


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


def _contacts(state, name):
    return state.blocks[name].contacts


@pytest.mark.parametrize("seed", [0, 1])
def test_start_states_of_the_cabinet_stack_and_held_block_tasks_meet_calvins_preconditions(seed):
    """What CALVIN's oracle reads at a subtask's start: the block on the shelf / in the drawer /
    on another block / in the gripper alone; ``plan`` accepts every start state."""
    from openhelix_sim.envs.expert import Expert

    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    try:
        for color in ("red", "pink"):
            initial_state(env, f"lift_{color}_block_slider", seed, scene_variation="full")
            s = SceneState.capture(env)
            assert ("table", "plank_link") in _contacts(s, f"block_{color}")
            list(Expert().plan(f"lift_{color}_block_slider", env))  # not behind the door
            initial_state(env, f"lift_{color}_block_drawer", seed, scene_variation="full")
            s = SceneState.capture(env)
            assert _contacts(s, f"block_{color}") == {("table", "drawer_link")} and s.joints["base__drawer"] > 0.15
        for task, joint in (("place_in_drawer", "base__drawer"), ("place_in_slider", "base__slide")):
            initial_state(env, task, seed, scene_variation="full")
            s = SceneState.capture(env)
            (held,) = s.robot_bodies  # the robot touches one body, a block, that touches only the robot
            assert held in s.blocks and s.blocks[held].bodies == {"robot"}
            assert s.blocks[held].pos[2] > 0.5
            list(Expert().plan(task, env))
        initial_state(env, "unstack_block", seed, scene_variation="full")
        s = SceneState.capture(env)
        tops = [n for n, b in s.blocks.items() if b.bodies and b.bodies <= set(s.blocks)]
        assert len(tops) == 1 and s.blocks[tops[0]].pos[2] > 0.49
        initial_state(env, "push_into_drawer", seed, scene_variation="full")
        s = SceneState.capture(env)
        assert s.joints["base__drawer"] > 0.15
        assert any(b.contacts == {("table", "base_link")} and -0.15 < b.pos[1] < -0.08 and 0.05 < b.pos[0] < 0.31
                   for b in s.blocks.values())
    finally:
        env.close()


def test_a_pushed_blocks_lane_is_clear():
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    try:
        for task, direction in (("push_red_block_right", 1.0), ("push_pink_block_left", -1.0)):
            color = task.split("_")[1]
            k = ("red", "blue", "pink").index(color)
            for seed in range(4):
                scene = initial_state(env, task, seed, scene_variation="full")["scene_obs"]
                x, y = scene[6 + 6 * k: 8 + 6 * k]
                assert y <= -0.06 and (x <= 0.3 if direction < 0 else x <= 0.2)
                for j in range(3):
                    ox, oy = scene[6 + 6 * j: 8 + 6 * j]
                    if j != k:
                        assert not (abs(oy - y) < 0.09 and 0.0 < direction * (ox - x) < 0.25), (task, seed, j)
    finally:
        env.close()


def test_calvin_setups_reach_every_task_by_calvins_rules_with_the_shortest_prefix():
    for task in TASK_NAMES:
        setups = calvin_setups(task)
        assert setups and all(is_valid_chain(dict(state), prefix + (task,)) for state, prefix in setups)
        assert len({len(prefix) for _, prefix in setups}) == 1
    assert {prefix for _, prefix in calvin_setups("open_drawer")} == {()}
    assert {prefix[0].split("_")[0] for _, prefix in calvin_setups("place_in_drawer")} == {"lift"}
    assert {prefix[1] for _, prefix in calvin_setups("unstack_block")} == {"stack_block"}
    with pytest.raises(ValueError, match="not a CALVIN task"):
        calvin_setups("juggle")


def test_calvin_start_states_are_calvins_reset_states_after_the_experts_prefix():
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    oracle = EmbeddedTaskOracle()
    try:
        scene = initial_state(env, "open_drawer", 5, scene_variation="calvin", oracle=oracle)["scene_obs"]
        np.testing.assert_allclose(initial_state(env, "open_drawer", 5, scene_variation="calvin")["scene_obs"], scene)
        resets = [env_state_for_initial_state(dict(state))[1] for state, _ in calvin_setups("open_drawer")]
        # CALVIN's reset state (blocks settled by one physics step), and the drawer closed as the task needs
        assert min(np.abs(scene[:21] - reset[:21]).max() for reset in resets) < 0.01 and scene[1] < 0.01
        scene = initial_state(env, "place_in_drawer", 0, scene_variation="calvin", oracle=oracle)["scene_obs"]
        held = max(scene[8], scene[14], scene[20])
        assert scene[1] > 0.2 and held > 0.55  # the expert lifted a block; the drawer is open
        with pytest.raises(ValueError, match="oracle"):
            initial_state(env, "place_in_drawer", 0, scene_variation="calvin")
    finally:
        env.close()
