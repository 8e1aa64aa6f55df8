"""The embedded play table against CALVIN's own scene D (runs where calvin_env is installed).

Both environments are put in the same state (robot_obs and scene_obs of a CALVIN reset, with the
sliding door, drawer and switch moved); then the articulated links and the blocks must be where
CALVIN has them, the blocks must have CALVIN's sizes, masses and friction, and the static
camera's depth images must agree."""

import numpy as np
import pytest

p = pytest.importorskip("pybullet")

from openhelix_sim.envs import PlayTableEnv  # noqa: E402
from openhelix_sim.envs import calvin_backend as cb  # noqa: E402
from openhelix_sim.envs import scene as emb_scene  # noqa: E402

pytestmark = pytest.mark.skipif(not cb.calvin_env_available(), reason="calvin_env is not installed")

LINKS = ("slide_link", "drawer_link", "button_link", "switch_link")


@pytest.fixture(scope="module")
def envs():
    real = cb.CalvinPlayTableEnv(scene="D", render_gripper=False)
    emb = PlayTableEnv(render_gripper=False)
    yield real, emb
    real.close()
    emb.close()


def _table_link_positions(cid, uid):
    out = {}
    for i in range(p.getNumJoints(uid, physicsClientId=cid)):
        name = p.getJointInfo(uid, i, physicsClientId=cid)[12].decode()
        out[name] = np.array(p.getLinkState(uid, i, physicsClientId=cid)[4])
    return out


def _same_state(real, emb, seed):
    real.reset(seed=seed)
    robot_obs = real.get_obs()["robot_obs"]
    scene_obs = real.get_obs()["scene_obs"].copy()
    rng = np.random.default_rng(seed)
    scene_obs[:4] = [rng.uniform(0, 0.28), rng.uniform(0, 0.22), 0.0, rng.uniform(0, 0.088)]
    scene_obs[4] = float(scene_obs[3] > 0.044)  # the lightbulb as the switch says
    return real.reset(robot_obs=robot_obs, scene_obs=scene_obs), emb.reset(robot_obs=robot_obs, scene_obs=scene_obs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_state_same_poses_and_depth(envs, seed):
    real, emb = envs
    r, e = _same_state(real, emb, seed)
    np.testing.assert_allclose(e["scene_obs"][:6], r["scene_obs"][:6], atol=1e-6)
    for k in range(3):  # block centres, as read back from the simulation
        np.testing.assert_allclose(e["scene_obs"][6 + 6 * k: 9 + 6 * k], r["scene_obs"][6 + 6 * k: 9 + 6 * k], atol=0.005)
    real_links = _table_link_positions(real.cid, real.env.scene.fixed_objects[0].uid)
    emb_links = _table_link_positions(emb.cid, emb.scene.table_uid)
    for name in LINKS:
        assert np.linalg.norm(emb_links[name] - real_links[name]) < 0.005, (name, emb_links[name], real_links[name])
    np.testing.assert_allclose(e["robot_obs"][:6], r["robot_obs"][:6], atol=1e-4)
    diff = np.abs(e["depth_static"] - r["depth_static"])
    assert np.median(diff) <= 0.01, np.median(diff)
    assert np.mean(diff > 0.02) < 0.15, np.mean(diff > 0.02)


def test_blocks_have_calvin_sizes_masses_and_friction(envs):
    real, emb = envs
    real_blocks = {obj.name: obj.uid for obj in real.env.scene.movable_objects}
    for name, uid in emb.scene.block_uids.items():
        real_uid = real_blocks[name]
        real_size = np.array(p.getCollisionShapeData(real_uid, -1, physicsClientId=real.cid)[0][3])
        emb_size = np.array(p.getCollisionShapeData(uid, -1, physicsClientId=emb.cid)[0][3])
        np.testing.assert_allclose(emb_size, real_size, atol=1e-6)
        np.testing.assert_allclose(emb_size, emb_scene.BLOCKS[name][0], atol=1e-6)
        real_dyn = p.getDynamicsInfo(real_uid, -1, physicsClientId=real.cid)
        emb_dyn = p.getDynamicsInfo(uid, -1, physicsClientId=emb.cid)
        assert emb_dyn[0] == pytest.approx(real_dyn[0])  # mass
        assert emb_dyn[1] == pytest.approx(real_dyn[1])  # lateral friction
        assert emb_dyn[7] == pytest.approx(real_dyn[7])  # spinning friction
        np.testing.assert_allclose(emb_dyn[2], real_dyn[2], rtol=1e-6)  # inertia


def test_joint_limits_and_surfaces_match(envs):
    real, emb = envs
    table = real.env.scene.fixed_objects[0].uid
    for i in range(p.getNumJoints(table, physicsClientId=real.cid)):
        info = p.getJointInfo(table, i, physicsClientId=real.cid)
        name = info[1].decode()
        if name in emb.scene.limits:
            np.testing.assert_allclose(emb.scene.limits[name], info[8:10], atol=1e-9)
    for surface, box in real.env.scene.surfaces.items():
        np.testing.assert_allclose(emb_scene.SURFACES[surface], np.asarray(box), atol=1e-9)


def test_shelf_and_table_top_heights(envs):
    """A block resting on the table top and one on the shelf lie at CALVIN's z (0.46)."""
    real, emb = envs
    real.reset(seed=0)
    scene_obs = real.get_obs()["scene_obs"].copy()
    scene_obs[6:9] = [0.2, -0.1, 0.47]  # red on the table top, dropped from 1 cm
    scene_obs[12:15] = [-0.25, 0.09, 0.47]  # blue on the shelf behind the open left side
    scene_obs[18:21] = [0.1, -0.1, 0.47]
    for env in (real, emb):
        env.reset(scene_obs=scene_obs)
        hold = np.r_[env.get_obs()["robot_obs"][:6], 1.0]
        for _ in range(10):
            obs = env.step(hold)
        for k in range(3):
            assert obs["scene_obs"][8 + 6 * k] == pytest.approx(0.46, abs=0.002), (type(env).__name__, k)
