"""Behavioural tests of the CALVIN-like PyBullet play table (openhelix_sim.envs.PlayTableEnv)."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pybullet")

from openhelix_sim.envs import PlayTableEnv  # noqa: E402

CALVIN_INITIAL_JOINTS = np.array([-1.21779206, 1.03987646, 2.11978261, -2.34205014, -0.87015947, 1.64119353, 0.55344866])
# Canonical CALVIN start state (calvin_agent evaluation utils): TCP xyz + Euler xyz.
CALVIN_INITIAL_TCP = np.array([0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585])
TABLE_Z = 0.46  # centre of a block resting on the table top (as in CALVIN)
TABLE_TOP = 0.44


def known_scene_obs(red=(0.2, -0.1), drawer=0.0, slide=0.0, button=0.0, switch=0.0):
    """scene_obs with the blocks at chosen places (red on the table, blue/pink in the cabinet)."""
    return np.array([
        slide, drawer, button, switch, 0.0, 0.0,
        red[0], red[1], TABLE_Z, 0.0, 0.0, 0.0,       # red (pose = box centre)
        -0.24, 0.09, TABLE_Z, 0.0, 0.0, 0.3,          # blue, slider_left
        0.07, 0.09, TABLE_Z, 0.0, 0.0, -0.2,          # pink, slider_right
    ])


@pytest.fixture(scope="module")
def env():
    """State-only env (no rendering), shared; every test resets it."""
    e = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    yield e
    e.close()


@pytest.fixture(scope="module")
def render_env():
    e = PlayTableEnv(seed=0)
    yield e
    e.close()


def hold(env, obs, n, gripper=1.0):
    """Absolute action that keeps the current target pose."""
    a = np.r_[env.robot.target_pos, env.robot.target_orn, gripper]
    for _ in range(n):
        obs = env.step(a)
    return obs


def move_to(env, xyz, euler, n, gripper=1.0):
    obs = None
    for _ in range(n):
        obs = env.step(np.r_[xyz, euler, gripper])
    return obs


# --------------------------------------------------------------------------- reset
def test_reset_is_deterministic_per_seed_and_varies_across_seeds(env):
    a = env.reset(seed=7)["scene_obs"]
    for _ in range(5):
        env.step(np.array([0.5, 0.3, -0.2, 0.0, 0.0, 0.1, -1.0]), "relative")
    b = env.reset(seed=7)["scene_obs"]
    np.testing.assert_allclose(a, b, atol=1e-9)

    other = PlayTableEnv(seed=7, render_static=False, render_gripper=False)
    try:
        np.testing.assert_allclose(other.get_obs()["scene_obs"], a, atol=1e-9)
    finally:
        other.close()

    blocks = [env.reset(seed=s)["scene_obs"][6:] for s in range(6)]
    for i in range(len(blocks)):
        for j in range(i + 1, len(blocks)):
            assert np.abs(blocks[i] - blocks[j]).max() > 0.01, (i, j)
    # unseeded resets keep drawing new layouts
    assert np.abs(env.reset()["scene_obs"][6:] - env.reset()["scene_obs"][6:]).max() > 0.01


def test_blocks_rest_on_the_sampling_surfaces(env):
    for s in range(4):
        obs = env.reset(seed=s)
        hold(env, obs, 5)
        sc = env.get_obs()["scene_obs"]
        for k in range(3):
            x, y, z, roll, pitch, _ = sc[6 + 6 * k: 12 + 6 * k]
            assert abs(z - TABLE_Z) < 0.004, (s, k, z)
            assert abs(roll) < 0.05 and abs(pitch) < 0.05
            on_table = 0.0 <= x <= 0.35 and -0.15 <= y <= -0.03
            in_cabinet = (-0.32 <= x <= 0.13) and (0.05 <= y <= 0.12)
            assert on_table or in_cabinet, (s, k, x, y)


def test_calvin_evaluation_start_state_is_stable(env):
    """A start state in CALVIN's own numbers (calvin_agent evaluation: blocks at z = 0.46, slider
    left, drawer open, lightbulb on) restores without the blocks jumping."""
    robot_obs = np.r_[CALVIN_INITIAL_TCP, 0.07999963, CALVIN_INITIAL_JOINTS, 1.0]
    scene_obs = np.zeros(24)
    scene_obs[[0, 1, 3, 4, 5]] = [0.28, 0.22, 0.088, 1.0, 1.0]
    scene_obs[6:9] = [0.05, -0.12, 0.45999]
    scene_obs[11] = np.pi / 2
    scene_obs[12:15] = [0.0703416, 0.0924045, 0.46099]
    scene_obs[17] = np.pi / 2 + 0.2
    scene_obs[18:21] = [0.23, -0.12, 0.45999]
    scene_obs[23] = np.pi / 2 - 0.2
    obs = env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
    obs = hold(env, obs, 15)
    np.testing.assert_allclose(obs["scene_obs"][:6], scene_obs[:6], atol=3e-3)
    for k in range(3):
        np.testing.assert_allclose(obs["scene_obs"][6 + 6 * k: 9 + 6 * k], scene_obs[6 + 6 * k: 9 + 6 * k], atol=4e-3)
    np.testing.assert_allclose(obs["robot_obs"][:6], CALVIN_INITIAL_TCP, atol=3e-3)


# --------------------------------------------------------------------- observations
def test_observation_keys_shapes_dtypes_and_calvin_start(render_env):
    obs = render_env.reset(seed=0)
    expected = {
        "rgb_static": ((200, 200, 3), np.uint8),
        "depth_static": ((200, 200), np.float32),
        "rgb_gripper": ((84, 84, 3), np.uint8),
        "depth_gripper": ((84, 84), np.float32),
        "robot_obs": ((15,), np.float64),
        "scene_obs": ((24,), np.float64),
    }
    assert set(obs) == set(expected)
    for k, (shape, dtype) in expected.items():
        assert obs[k].shape == shape and obs[k].dtype == dtype, k
    ro = obs["robot_obs"]
    np.testing.assert_allclose(ro[7:14], CALVIN_INITIAL_JOINTS, atol=1e-3)
    np.testing.assert_allclose(ro[:6], CALVIN_INITIAL_TCP, atol=2e-3)
    assert abs(ro[6] - 0.08) < 1e-3 and ro[14] == 1.0
    np.testing.assert_allclose(obs["scene_obs"][:6], 0.0, atol=1e-3)
    assert obs["rgb_static"].std() > 10 and obs["rgb_gripper"].std() > 10  # not blank
    assert np.all(obs["depth_static"] > 0.01) and np.all(obs["depth_static"] <= 10.0)
    assert np.all(obs["depth_gripper"] > 0.0) and np.all(obs["depth_gripper"] <= 2.0)

    pos, quat = render_env.robot_base_pose()
    np.testing.assert_allclose(pos, [-0.34, -0.46, 0.24], atol=1e-9)
    np.testing.assert_allclose(quat, [0, 0, 0, 1], atol=1e-9)
    assert render_env.joint_names() == [f"panda_joint{i}" for i in range(1, 8)] + [
        "panda_finger_joint1", "panda_finger_joint2"]
    assert render_env.joint_positions().shape == (9,) and render_env.joint_velocities().shape == (9,)
    assert abs(render_env.gripper_openness() - 1.0) < 0.01


def test_render_flags_skip_cameras():
    e = PlayTableEnv(seed=0, render_static=True, render_gripper=False, image_size_static=64)
    try:
        obs = e.get_obs()
        assert obs["rgb_static"].shape == (64, 64, 3) and "rgb_gripper" not in obs and "depth_gripper" not in obs
        np.testing.assert_allclose(e.camera_intrinsics("static")[0, 2], 31.5)
    finally:
        e.close()


# ---------------------------------------------------------------- camera geometry
def back_project(depth, K, T_world_cam, u, v):
    x = depth[v, u] * np.linalg.inv(K) @ np.array([u, v, 1.0])
    return (T_world_cam @ np.r_[x, 1.0])[:3]


def project(K, T_world_cam, point):
    pc = np.linalg.inv(T_world_cam) @ np.r_[point, 1.0]
    uvw = K @ pc[:3]
    return int(round(uvw[0] / uvw[2])), int(round(uvw[1] / uvw[2])), pc[2]


def test_static_depth_back_projects_onto_table_and_block(render_env):
    obs = render_env.reset(scene_obs=known_scene_obs(red=(0.2, -0.1)))
    obs = hold(render_env, obs, 2)
    K = render_env.camera_intrinsics("static")
    T = render_env.camera_to_base("static")
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(T[:3, 3], [2.871459, -2.166602, 2.555160], atol=1e-5)
    f = 200 / (2 * np.tan(np.radians(5.0)))
    np.testing.assert_allclose(K, [[f, 0, 99.5], [0, f, 99.5], [0, 0, 1]])
    depth = obs["depth_static"]

    # free table-top points: the back-projected pixel lands back on the table top
    for point in ([0.3, -0.15, TABLE_TOP], [0.05, -0.17, TABLE_TOP], [0.3, -0.03, TABLE_TOP], [-0.05, -0.08, TABLE_TOP]):
        u, v, z = project(K, T, np.array(point))
        assert 0 <= u < 200 and 0 <= v < 200
        assert abs(depth[v, u] - z) < 0.01, (point, depth[v, u], z)
        world = back_project(depth, K, T, u, v)
        assert abs(world[2] - TABLE_TOP) < 0.005, (point, world)
        assert np.linalg.norm(world[:2] - np.array(point[:2])) < 0.01, (point, world)

    # top face centre of the red block (0.04 m high): lands on the block, not the table
    red = obs["scene_obs"][6:9]
    top = red + np.array([0.0, 0.0, 0.02])
    u, v, _ = project(K, T, top)
    world = back_project(depth, K, T, u, v)
    assert np.linalg.norm(world - top) < 0.01, (world, top)
    assert obs["rgb_static"][v, u, 0] > 150 and obs["rgb_static"][v, u, 2] < 100  # red pixel


def test_gripper_camera_extrinsics_and_depth(render_env):
    obs = render_env.reset(scene_obs=known_scene_obs(red=(0.3, -0.05)))
    euler = obs["robot_obs"][3:6]
    obs = move_to(render_env, [0.05, -0.1, 0.62], euler, 25)
    T_tcp_cam = render_env.camera_to_tcp("gripper")
    T_world_cam = render_env.camera_to_base("gripper")
    pos, quat = render_env.tcp_pose()
    import pybullet as pb
    T_world_tcp = np.eye(4)
    T_world_tcp[:3, :3] = np.array(pb.getMatrixFromQuaternion(quat)).reshape(3, 3)
    T_world_tcp[:3, 3] = pos
    np.testing.assert_allclose(T_world_tcp @ T_tcp_cam, T_world_cam, atol=1e-6)
    # hand-eye transform is fixed (compare with the one at another arm pose)
    obs2 = move_to(render_env, [0.0, -0.15, 0.6], euler, 10)
    np.testing.assert_allclose(render_env.camera_to_tcp("gripper"), T_tcp_cam, atol=1e-6)
    # CALVIN offsets: camera 0.1 m behind the hand origin (-x of panda_hand), TCP 0.14 m ahead (+z)
    assert abs(np.linalg.norm(T_tcp_cam[:3, 3]) - np.hypot(0.1, 0.14)) < 1e-3

    # the camera looks down at the table: table points in view back-project onto the table
    K = render_env.camera_intrinsics("gripper")
    T = render_env.camera_to_base("gripper")
    depth = obs2["depth_gripper"]
    hits = 0
    for x in np.linspace(-0.15, 0.2, 8):
        for y in np.linspace(-0.2, -0.05, 6):
            u, v, z = project(K, T, np.array([x, y, TABLE_TOP]))
            if not (0 <= u < 84 and 0 <= v < 84) or z <= 0:
                continue
            world = back_project(depth, K, T, u, v)
            if np.linalg.norm(world - [x, y, TABLE_TOP]) < 0.01:
                hits += 1
    assert hits >= 10, hits


# -------------------------------------------------------------------------- control
def test_absolute_action_reaches_target(env):
    obs = env.reset(seed=1)
    start, euler = obs["robot_obs"][:3], obs["robot_obs"][3:6]
    target = start + np.array([0.10, 0.05, -0.05])
    obs = move_to(env, target, euler, 40)
    assert np.linalg.norm(obs["robot_obs"][:3] - target) < 0.01
    assert np.abs(obs["robot_obs"][3:6] - euler).max() < 0.02
    pos, _ = env.tcp_pose()
    np.testing.assert_allclose(pos, obs["robot_obs"][:3])


def test_relative_action_scaling(env):
    obs = env.reset(seed=1)
    start = obs["robot_obs"][:6].copy()
    for _ in range(5):  # 5 * 0.5 * 0.02 m = 5 cm along +x, 3 * 1.0 * 0.05 rad about z
        obs = env.step(np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), "relative")
    for _ in range(3):
        obs = env.step(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]), "relative")
    np.testing.assert_allclose(env.robot.target_pos - start[:3], [0.05, 0.0, 0.0], atol=1e-9)
    obs = hold(env, obs, 30)
    delta = obs["robot_obs"][:3] - start[:3]
    np.testing.assert_allclose(delta, [0.05, 0.0, 0.0], atol=0.004)
    dyaw = (obs["robot_obs"][5] - start[5] + np.pi) % (2 * np.pi) - np.pi
    assert abs(dyaw - 0.15) < 0.01, dyaw


def test_relative_action_after_absolute_adds_to_the_previous_relative_target(env):
    """calvin_env's Robot.apply_action: an absolute action leaves the running target of
    relative actions alone, so a relative action after it pulls the arm back there."""
    obs = env.reset(seed=1)
    start = obs["robot_obs"][:6].copy()
    obs = env.step(np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), "relative")
    relative_target = env.robot.target_pos.copy()
    obs = move_to(env, start[:3] + [0.0, 0.0, 0.08], start[3:6], 30)
    assert obs["robot_obs"][2] - start[2] > 0.07
    np.testing.assert_array_equal(env.robot.target_pos, relative_target)
    for _ in range(30):
        obs = env.step(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), "relative")
    np.testing.assert_allclose(obs["robot_obs"][:3], start[:3] + [0.01, 0.0, 0.0], atol=0.004)


def test_gripper_closes_and_opens(env):
    obs = env.reset(seed=1)
    assert env.gripper_openness() > 0.95
    a = np.r_[obs["robot_obs"][:6], -1.0]
    for _ in range(15):
        obs = env.step(a)
    assert env.gripper_openness() < 0.05 and obs["robot_obs"][6] < 0.004 and obs["robot_obs"][14] == -1.0
    a[6] = 1.0
    for _ in range(15):
        obs = env.step(a)
    assert env.gripper_openness() > 0.95 and obs["robot_obs"][14] == 1.0


# ---------------------------------------------------------------------------- scene
def test_drawer_and_slider_positions_show_in_scene_obs(env):
    import pybullet as pb

    link_y = lambda: pb.getLinkState(env.scene.table_uid, env.scene.link_ids["drawer_link"],  # noqa: E731
                                     physicsClientId=env.cid)[4]
    env.reset(scene_obs=known_scene_obs())
    closed = np.array(link_y())
    obs = env.reset(scene_obs=known_scene_obs(drawer=0.15, slide=0.2))
    obs = hold(env, obs, 10)
    assert abs(obs["scene_obs"][1] - 0.15) < 0.003 and abs(obs["scene_obs"][0] - 0.2) < 0.003
    np.testing.assert_allclose(np.array(link_y()) - closed, [0.0, -0.15, 0.0], atol=0.003)
    # the joint limits hold: asking for more than 0.22 m gives at most 0.22 m
    obs = env.reset(scene_obs=known_scene_obs(drawer=0.5))
    assert obs["scene_obs"][1] <= 0.2201


def test_robot_pushes_open_drawer_closed(env):
    obs = env.reset(scene_obs=known_scene_obs(drawer=0.2))
    assert abs(obs["scene_obs"][1] - 0.2) < 0.003
    euler = obs["robot_obs"][3:6]
    # the drawer's handle bar is at y = -0.44 .. -0.46 when open 0.2 m; come down in front of it,
    # then push +y
    move_to(env, [0.1, -0.48, 0.45], euler, 30, gripper=-1.0)
    move_to(env, [0.1, -0.48, 0.34], euler, 25, gripper=-1.0)
    obs = move_to(env, [0.1, -0.34, 0.34], euler, 40, gripper=-1.0)
    assert obs["scene_obs"][1] < 0.16, obs["scene_obs"][1]


def test_button_press_toggles_led_and_switch_drives_lightbulb(env):
    obs = env.reset(scene_obs=known_scene_obs())
    euler = obs["robot_obs"][3:6]
    above, pressed = [-0.12, -0.12, 0.58], [-0.12, -0.12, 0.47]
    assert obs["scene_obs"][5] == 0.0
    move_to(env, above, euler, 35, gripper=-1.0)
    obs = move_to(env, pressed, euler, 30, gripper=-1.0)
    assert obs["scene_obs"][2] > 0.01 and obs["scene_obs"][2] < 0.0215
    obs = move_to(env, above, euler, 30, gripper=-1.0)
    assert obs["scene_obs"][2] < 0.005 and obs["scene_obs"][5] == 1.0  # released, LED stays on
    move_to(env, pressed, euler, 30, gripper=-1.0)
    obs = move_to(env, above, euler, 30, gripper=-1.0)
    assert obs["scene_obs"][5] == 0.0  # second press toggles it off

    obs = env.reset(scene_obs=known_scene_obs(switch=0.08))
    assert obs["scene_obs"][4] == 1.0
    obs = env.reset(scene_obs=known_scene_obs(switch=0.02))
    assert obs["scene_obs"][4] == 0.0


def test_reset_restores_robot_obs(env):
    obs = env.reset(seed=2)
    for _ in range(10):
        obs = env.step(np.array([0.6, -0.4, 0.3, 0.2, 0.0, -0.3, -1.0]), "relative")
    saved_r, saved_s = obs["robot_obs"].copy(), obs["scene_obs"].copy()
    env.reset(seed=5)
    obs = env.reset(robot_obs=saved_r, scene_obs=saved_s)
    np.testing.assert_allclose(obs["robot_obs"][7:14], saved_r[7:14], atol=1e-3)
    np.testing.assert_allclose(obs["robot_obs"][:3], saved_r[:3], atol=2e-3)
    np.testing.assert_allclose(obs["scene_obs"][6:], saved_s[6:], atol=5e-3)
    assert obs["robot_obs"][14] == -1.0


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "action, action_type, match",
    [
        (np.zeros(6), "absolute", "shape"),
        (np.zeros((7, 1)), "relative", "shape"),
        (np.array([0.1, 0.0, np.nan, 0, 0, 0, 1]), "absolute", "NaN"),
        (np.array([0.1, 0.0, 0.5, 0, np.inf, 0, 1]), "absolute", "NaN or inf"),
        (np.array([0.0, 0.0, 1.5, 0, 0, 0, 1]), "relative", r"\[-1, 1\]"),
        (np.array([0.0, 0.0, 0.0, 0, 0, 0, -1.01]), "relative", r"\[-1, 1\]"),
        (["a"] * 7, "absolute", "numeric"),
        (np.zeros(7), "joint", "action_type"),
    ],
)
def test_bad_actions_raise_and_do_not_move(env, action, action_type, match):
    env.reset(seed=3)
    q0 = env.joint_positions().copy()
    s0 = env.get_obs()["scene_obs"].copy()
    target0 = env.robot.target_pos.copy()
    with pytest.raises(ValueError, match=match):
        env.step(action, action_type)
    np.testing.assert_array_equal(env.joint_positions(), q0)
    np.testing.assert_array_equal(env.get_obs()["scene_obs"], s0)
    np.testing.assert_array_equal(env.robot.target_pos, target0)


def test_bad_camera_name(env):
    with pytest.raises(ValueError):
        env.camera_intrinsics("left")
    with pytest.raises(ValueError):
        env.camera_to_tcp("static")


def test_no_openhelix_sim_module_imports_rclpy():
    code = ("import importlib, pkgutil, sys, openhelix_sim\n"
            "for module in pkgutil.walk_packages(openhelix_sim.__path__, 'openhelix_sim.'):\n"
            "    importlib.import_module(module.name)\n"
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
