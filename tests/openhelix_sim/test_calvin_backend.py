"""calvin_env adapter (openhelix_sim.envs.calvin_backend): what can be checked without calvin_env.

The adapter's camera maths is compared with the embedded PlayTableEnv's for the same camera
parameters; building a real calvin_env environment is only exercised when calvin_env imports."""

import numpy as np
import pytest

from openhelix_core.geometry import quaternion_to_matrix

p = pytest.importorskip("pybullet")

from openhelix_core.evaluation.sequences import env_state_for_initial_state, initial_states  # noqa: E402
from openhelix_sim.envs import calvin_backend as cb  # noqa: E402
from openhelix_sim.envs import cameras as emb  # noqa: E402

RNG = np.random.default_rng(0)


def test_availability_and_error_message():
    available = cb.calvin_env_available()
    assert isinstance(available, bool)
    if available:
        pytest.skip("calvin_env is installed here")
    with pytest.raises(ImportError) as e:
        cb.require_calvin_env()
    msg = str(e.value)
    assert "git clone --recursive https://github.com/mees/calvin_env.git" in msg
    assert "pip install -e ." in msg and "tacto" in msg
    with pytest.raises(ImportError, match="calvin_env"):
        cb.CalvinPlayTableEnv(dataset_path="/nonexistent")
    with pytest.raises(ImportError):
        cb.load_calvin_config(conf_dir="/nonexistent")


@pytest.mark.parametrize("w,h,fov", [(200, 200, 10.0), (84, 84, 75.0), (400, 400, 10.0), (320, 240, 60.0)])
def test_intrinsics_match_embedded(w, h, fov):
    np.testing.assert_allclose(cb.intrinsics_from_fov(w, h, fov), emb.intrinsics(w, h, fov))


@pytest.mark.parametrize("w,h,fov,aspect", [(200, 200, 75.0, 1.0), (320, 240, 60.0, 320 / 240), (300, 200, 45.0, 1.0)])
def test_intrinsics_agree_with_pybullet_projection(w, h, fov, aspect):
    """Project optical-frame points with PyBullet's projection matrix (pixel centres at +0.5)
    and with K: same pixel coordinates, including when aspect != width / height."""
    P = np.asarray(p.computeProjectionMatrixFOV(fov=fov, aspect=aspect, nearVal=0.01, farVal=10.0)).reshape(4, 4).T
    K = cb.intrinsics_from_fov(w, h, fov, aspect)
    for _ in range(5):
        x_opt = np.array([RNG.uniform(-0.3, 0.3), RNG.uniform(-0.3, 0.3), RNG.uniform(0.5, 3.0)])
        eye = np.array([x_opt[0], -x_opt[1], -x_opt[2], 1.0])  # optical -> OpenGL eye frame
        clip = P @ eye
        ndc = clip[:3] / clip[3]
        u = (ndc[0] + 1) / 2 * w - 0.5
        v = (1 - ndc[1]) / 2 * h - 0.5
        uv = K @ (x_opt / x_opt[2])
        np.testing.assert_allclose(uv[:2], [u, v], atol=1e-9)


def test_look_at_matches_pybullet():
    for _ in range(10):
        eye, target = RNG.normal(size=3), RNG.normal(size=3)
        up = RNG.normal(size=3)
        np.testing.assert_allclose(cb.look_at_view_matrix(eye, target, up),
                                   p.computeViewMatrix(eye.tolist(), target.tolist(), up.tolist()), atol=1e-6)


def test_static_camera_pose_matches_embedded():
    vm = p.computeViewMatrix(emb.STATIC_EYE, emb.STATIC_TARGET, emb.STATIC_UP)
    T = cb.camera_pose_from_view_matrix(vm)
    np.testing.assert_allclose(T, emb.view_matrix_to_camera_pose(vm), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], emb.STATIC_EYE, atol=1e-5)
    look = np.asarray(emb.STATIC_TARGET) - np.asarray(emb.STATIC_EYE)
    np.testing.assert_allclose(T[:3, 2], look / np.linalg.norm(look), atol=1e-5)  # optical z looks at target


def test_gripper_camera_pose_matches_embedded_convention():
    for _ in range(5):
        pos = RNG.normal(size=3)
        quat = np.asarray(p.getQuaternionFromEuler(RNG.uniform(-3, 3, size=3).tolist()))
        R = np.asarray(p.getMatrixFromQuaternion(quat.tolist())).reshape(3, 3)
        np.testing.assert_allclose(quaternion_to_matrix(quat), R, atol=1e-12)
        ours = cb.gripper_camera_pose(pos, quat)
        vm = p.computeViewMatrix(pos.tolist(), (pos + R[:, 1]).tolist(), (-R[:, 2]).tolist())
        np.testing.assert_allclose(ours, emb.view_matrix_to_camera_pose(vm), atol=1e-6)
        link = np.eye(4)
        link[:3, :3], link[:3, 3] = R, pos
        np.testing.assert_allclose(ours, link @ emb.GRIPPER_LINK_TO_OPTICAL, atol=1e-6)


def test_gripper_camera_pose_in_embedded_env():
    from openhelix_sim.envs import PlayTableEnv

    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    try:
        cam = env.cameras["gripper"]
        ls = p.getLinkState(cam.robot_uid, cam.link_id, computeForwardKinematics=True, physicsClientId=env.cid)
        np.testing.assert_allclose(cb.gripper_camera_pose(ls[4], ls[5]), env.camera_to_base("gripper"), atol=1e-6)
        np.testing.assert_allclose(cb.intrinsics_from_fov(cam.width, cam.height, cam.fov), env.camera_intrinsics("gripper"))
        # CALVIN's evaluation reset values are accepted by the embedded env
        state = dict(initial_states()[0], lightbulb=1, led=1, drawer="open")
        robot_obs, scene_obs = env_state_for_initial_state(state)
        obs = env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
        assert obs["scene_obs"][4] == 1 and obs["scene_obs"][5] == 1
        assert obs["scene_obs"][1] == pytest.approx(0.22, abs=0.01)
        np.testing.assert_allclose(obs["robot_obs"][7:14], robot_obs[7:14], atol=1e-3)
    finally:
        env.close()


def test_flatten_obs_and_actions():
    obs = {"rgb_obs": {"rgb_static": np.zeros((4, 4, 4), np.uint8), "rgb_gripper": np.ones((2, 2, 3))},
           "depth_obs": {"depth_static": np.ones((4, 4)), "depth_gripper": np.ones((2, 2))},
           "robot_obs": list(range(15)), "scene_obs": np.zeros(24)}
    flat = cb.flatten_calvin_obs(obs)
    assert set(flat) == {"rgb_static", "rgb_gripper", "depth_static", "depth_gripper", "robot_obs", "scene_obs"}
    assert flat["rgb_static"].shape == (4, 4, 3) and flat["rgb_static"].dtype == np.uint8
    assert flat["depth_static"].dtype == np.float32 and flat["robot_obs"].dtype == np.float64
    a = np.array([0.1, 0.2, 0.5, 3.1, 0.0, 1.5, -0.3])
    pos, orn, g = cb.to_calvin_action(a, "absolute")
    np.testing.assert_array_equal(pos, a[:3])
    np.testing.assert_array_equal(orn, a[3:6])
    assert g == -1
    rel = cb.to_calvin_action([0.5, 0, 0, 0, 0, 0, 0.2], "relative")
    assert rel[6] == 1 and rel[0] == 0.5
    for bad in ([2, 0, 0, 0, 0, 0, 1], [0] * 6, [np.nan] * 7):
        with pytest.raises(ValueError):
            cb.to_calvin_action(bad, "relative")
    with pytest.raises(ValueError):
        cb.to_calvin_action(a, "delta")


def test_config_helpers(tmp_path):
    assert cb.scene_config_name("a") == "calvin_scene_A"
    assert cb.scene_config_name("calvin_scene_A_eval") == "calvin_scene_A_eval"
    with pytest.raises(ValueError):
        cb.scene_config_name("E")
    with pytest.raises(FileNotFoundError):
        cb.resolve_dataset_config(tmp_path)
    split = tmp_path / "task_D_D" / "validation" / ".hydra"
    split.mkdir(parents=True)
    (split / "merged_config.yaml").write_text("env: {}\n")
    assert cb.resolve_dataset_config(tmp_path / "task_D_D") == split / "merged_config.yaml"
    assert cb.resolve_dataset_config(tmp_path / "task_D_D" / "validation") == split / "merged_config.yaml"
    with pytest.raises(FileNotFoundError, match="config_data_collection.yaml"):
        cb.compose_rendering_config(tmp_path, scene="B")


needs_calvin_env = pytest.mark.skipif(not cb.calvin_env_available(),
                                      reason="calvin_env is not installed (scripts/setup installs it)")


@needs_calvin_env
@pytest.mark.parametrize("scene", cb.SCENES)
def test_rendering_config_without_dataset(scene):
    """The config CALVIN's rendering step composes: robot defaults resolved (``euler_obs`` comes
    from panda.yaml through panda_longer_finger's hydra defaults), the scene's own table, the
    evaluation cameras, data files that exist."""
    cfg = cb.load_calvin_config(scene=scene)
    assert cfg.robot_cfg.filename == "franka_panda/panda_longer_finger.urdf"
    assert cfg.robot_cfg.euler_obs is True and cfg.scene_cfg.euler_obs is True
    table = cfg.scene_cfg.objects.fixed_objects.table.file
    assert table == f"calvin_table_{scene}/urdf/calvin_table_{scene}.urdf"
    data = cb.calvin_env_source_dir() / "data"
    assert cfg.scene_cfg.data_path == str(data) and (data / table).is_file()
    assert sorted(cfg.cameras) == ["gripper", "static"]
    assert (cfg.cameras.static.width, cfg.cameras.gripper.width) == (200, 84)
    assert cfg.use_vr is False and cfg.show_gui is False and cfg.control_freq == 30
    with pytest.raises(FileNotFoundError, match="calvin_scene_E"):
        cb.compose_rendering_config(cb.calvin_env_source_dir() / "conf", scene="calvin_scene_E")


@needs_calvin_env
def test_dataset_config_keeps_its_env_and_finds_the_data(tmp_path):
    """With a dataset its merged_config.yaml is used as it is; a relative data_path (calvin_env
    reads it next to its package, which a non-editable install lacks) becomes the checkout's."""
    from omegaconf import OmegaConf

    root = cb.compose_rendering_config(cb.calvin_env_source_dir() / "conf", scene="D")
    root.data_path = "data"
    root.env.cameras.static.width = 123
    split = tmp_path / "validation" / ".hydra"
    split.mkdir(parents=True)
    OmegaConf.save(root, split / "merged_config.yaml")
    cfg = cb.load_calvin_config(dataset_path=tmp_path, scene="B")
    assert cfg.cameras.static.width == 123
    assert cfg.scene_cfg.objects.fixed_objects.table.file == "calvin_table_B/urdf/calvin_table_B.urdf"
    assert cfg.scene_cfg.data_path == str(cb.calvin_env_source_dir() / "data")


@pytest.fixture(scope="module")
def calvin_env_after_embedded():
    """A scene-D env built while an embedded PlayTableEnv owns pybullet's client 0."""
    from openhelix_sim.envs import PlayTableEnv

    embedded = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    env = cb.CalvinPlayTableEnv(scene="D")
    yield embedded, env
    env.close()
    embedded.close()


@needs_calvin_env
def test_real_calvin_env_smoke(calvin_env_after_embedded):
    _, env = calvin_env_after_embedded
    obs = env.get_obs()
    assert obs["robot_obs"].shape == (15,) and obs["scene_obs"].shape == (24,)
    assert obs["rgb_static"].shape == (200, 200, 3) and obs["rgb_gripper"].shape == (84, 84, 3)
    assert env.camera_intrinsics("static").shape == (3, 3)
    T = env.camera_to_tcp("gripper")
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
    before = env.tcp_pose()[0]
    obs = env.step(np.r_[before + [0.0, 0.0, 0.05], obs["robot_obs"][3:6], 1.0])
    assert obs["robot_obs"][2] > before[2] + 0.005  # the arm moved up towards the target
    assert len(env.joint_names()) == 9


@needs_calvin_env
def test_joint_targets_drive_calvins_arm_and_its_urdf_predicts_the_tcp(calvin_env_after_embedded):
    from openhelix_core.geometry import pose_to_matrix
    from openhelix_core.kinematics import KinematicChain
    from openhelix_sim.execution import hold_action

    _, env = calvin_env_after_embedded
    target = hold_action(env, "joints") + np.r_[np.full(7, 0.1), 0.0]
    for _ in range(40):
        env.step(target, action_type="joints")
    reached = np.asarray(env.joint_positions())[:7]
    np.testing.assert_allclose(reached, target[:7], atol=1e-3)
    # The URDF the bridge serves on /robot_description is the one calvin_env simulates.
    chain = KinematicChain.from_urdf(env.robot_urdf(), "panda_link0", "tcp")
    tcp = pose_to_matrix(*env.robot_base_pose()) @ chain.forward(reached)
    np.testing.assert_allclose(tcp[:3, 3], env.tcp_pose()[0], atol=1e-6)


@needs_calvin_env
def test_embedded_env_survives_a_calvin_env(calvin_env_after_embedded):
    """calvin_env's base cylinder would land in the embedded env's client and break its reset."""
    embedded, _ = calvin_env_after_embedded
    obs = embedded.reset(seed=3)
    assert obs["scene_obs"].shape == (24,)


@needs_calvin_env
def test_reset_seed_decides_the_block_poses(calvin_env_after_embedded):
    _, env = calvin_env_after_embedded
    first = env.reset(seed=3)["scene_obs"]
    other = env.reset(seed=4)["scene_obs"]
    again = env.reset(seed=3)["scene_obs"]
    np.testing.assert_allclose(again, first, atol=1e-3)  # one physics step after the reset
    assert np.abs(other[6:] - first[6:]).max() > 0.01


@needs_calvin_env
def test_close_leaves_nothing_for_del(monkeypatch):
    import gc
    import sys

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    env = cb.CalvinPlayTableEnv(scene="A", render_static=False, render_gripper=False)
    env.close()
    del env
    gc.collect()
    assert unraisable == []


@needs_calvin_env
def test_single_task_start_states_on_calvin(calvin_env_after_embedded):
    """The tasks protocol's start states drive the calvin env through the embedded env's API,
    and CALVIN's own oracle scores them: the task is not done at the start."""
    from openhelix_sim.evaluation_runner import CalvinTaskOracle, TaskEpisodeRunner
    from openhelix_sim.start_states import initial_state

    _, env = calvin_env_after_embedded
    obs = initial_state(env, "open_drawer", 100000)
    assert 0.0 <= obs["scene_obs"][1] <= 0.035  # drawer shut
    again = initial_state(env, "open_drawer", 100000)
    np.testing.assert_allclose(again["robot_obs"][:3], obs["robot_obs"][:3], atol=1e-3)
    obs = initial_state(env, "turn_off_led", 100000)
    assert obs["scene_obs"][5] == 1.0  # LED on
    runner = TaskEpisodeRunner(env, [("turn_off_led", 100000)], oracle=CalvinTaskOracle(str(cb.default_tasks_config())))
    assert runner.start_next_sequence() == runner.instruction
    assert not runner.oracle.succeeded("turn_off_led", runner._start_state, runner.oracle.capture(env))
    env.reset(scene_obs=np.r_[obs["scene_obs"][:5], 0.0, obs["scene_obs"][6:]])
    assert runner.oracle.succeeded("turn_off_led", runner._start_state, runner.oracle.capture(env))


@needs_calvin_env
def test_calvin_sequence_start_info_is_read_before_any_step(calvin_env_after_embedded):
    from openhelix_sim.evaluation_runner import CalvinEvaluationRunner, CalvinTaskOracle

    _, env = calvin_env_after_embedded
    steps = []

    class CountingEnv:
        def __getattr__(self, name):
            return getattr(env, name)

        def step(self, *args, **kwargs):
            steps.append(args)
            return env.step(*args, **kwargs)

    runner = CalvinEvaluationRunner(CountingEnv(), [0], settle_steps=0,
                                    oracle=CalvinTaskOracle(str(cb.default_tasks_config())))
    runner.start_next_sequence()
    assert steps == []
    assert set(runner._start_state) == {"robot_info", "scene_info"}
