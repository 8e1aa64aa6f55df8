"""URDF forward kinematics and the transform tree (openhelix_core.kinematics).

The Panda of the play-table (pybullet_data's Panda plus CALVIN's ``gripper_cam`` and ``tcp``
frames, written by ``openhelix_sim.envs.robot.write_panda_urdf``) is checked against pybullet's
own forward kinematics; a planar arm with a prismatic joint against closed-form values."""
from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from openhelix_core import geometry
from openhelix_core.kinematics import (
    KinematicChain,
    KinematicsError,
    TransformTree,
    invert,
    quaternion_to_matrix,
    rpy_to_matrix,
    transform,
)

# ----------------------------------------------------------------------------- Panda vs pybullet


@pytest.fixture(scope="module")
def panda(tmp_path_factory):
    """(URDF path, pybullet client, body id, base pose 4x4) of the play-table's Panda."""
    pybullet = pytest.importorskip("pybullet")
    from openhelix_sim.envs import robot

    path = robot.write_panda_urdf(str(tmp_path_factory.mktemp("panda")))
    client = pybullet.connect(pybullet.DIRECT)
    # A base pose with a rotation too, so that subtracting it is tested (the sim's has none).
    base_position, base_euler = (-0.34, -0.46, 0.24), (0.1, -0.2, 0.7)
    base_orientation = pybullet.getQuaternionFromEuler(base_euler)
    body = pybullet.loadURDF(path, basePosition=base_position, baseOrientation=base_orientation, useFixedBase=True,
                             physicsClientId=client)
    base = transform(quaternion_to_matrix(base_orientation), base_position)
    yield SimpleNamespace(path=path, p=pybullet, client=client, body=body, base=base, robot=robot)
    pybullet.disconnect(client)


def _link_ids(panda) -> dict:
    p = panda.p
    ids = {}
    for index in range(p.getNumJoints(panda.body, physicsClientId=panda.client)):
        info = p.getJointInfo(panda.body, index, physicsClientId=panda.client)
        ids[info[12].decode()] = index
        ids[info[1].decode()] = index  # joint name -> the same index
    return ids


def _pybullet_pose(panda, link_id: int) -> np.ndarray:
    state = panda.p.getLinkState(panda.body, link_id, computeForwardKinematics=True, physicsClientId=panda.client)
    return transform(quaternion_to_matrix(state[5]), state[4])


@pytest.mark.parametrize("tip", ["tcp", "gripper_cam", "panda_leftfinger"])
def test_panda_forward_kinematics_equals_pybullet(panda, tip):
    chain = KinematicChain.from_urdf(panda.path, "panda_link0", tip)
    expected_joints = list(panda.robot.ARM_JOINT_NAMES) + (["panda_finger_joint1"] if tip == "panda_leftfinger" else [])
    assert chain.joint_names == expected_joints
    ids = _link_ids(panda)
    assert ids["tcp"] == panda.robot.TCP_LINK_ID and ids["gripper_cam"] == panda.robot.GRIPPER_CAM_LINK_ID
    limits = chain.limits
    assert np.all(np.isfinite(limits)) and np.all(limits[:, 0] < limits[:, 1])
    rng = np.random.default_rng(7)
    configurations = rng.uniform(limits[:, 0], limits[:, 1], size=(20, len(chain.joint_names)))
    expected = []
    for q in configurations:
        for name, value in zip(chain.joint_names, q):
            panda.p.resetJointState(panda.body, ids[name], float(value), 0.0, physicsClientId=panda.client)
        expected.append(invert(panda.base) @ _pybullet_pose(panda, ids[tip]))
        np.testing.assert_allclose(chain.forward(q), expected[-1], atol=1e-6)
    # batched, and from a dict of arrays, give the same
    np.testing.assert_allclose(chain.forward(configurations), np.stack(expected), atol=1e-6)
    by_name = {name: configurations[:, k] for k, name in enumerate(chain.joint_names)}
    np.testing.assert_allclose(chain.forward(by_name), np.stack(expected), atol=1e-6)


def test_panda_forward_from_joint_state_picks_the_chain_joints(panda):
    chain = KinematicChain.from_urdf(Path(panda.path).read_text(), "panda_link0", "tcp")  # text, not path
    names = ["panda_finger_joint2", *reversed(panda.robot.ARM_JOINT_NAMES), "panda_finger_joint1"]
    q = np.array(panda.robot.INITIAL_JOINTS)
    positions = np.r_[0.04, q[::-1], 0.04]
    np.testing.assert_allclose(chain.forward_from_joint_state(names, positions), chain.forward(q), atol=1e-12)
    batch = np.stack([positions, positions])
    assert chain.forward_from_joint_state(names, batch).shape == (2, 4, 4)
    with pytest.raises(KinematicsError, match=r"lacks joints \['panda_joint3'\]"):
        chain.forward_from_joint_state([n for n in names if n != "panda_joint3"], np.r_[positions[:5], positions[6:]])


def test_panda_tcp_matches_the_play_table_at_its_start_pose():
    """FK of the sim's start joints, placed at the sim's base pose, is the TCP pose the env reports."""
    from openhelix_sim.envs import PlayTableEnv, robot

    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False)
    try:
        path = robot.write_panda_urdf(env._tmpdir)
        chain = KinematicChain.from_urdf(path, "panda_link0", "tcp")
        base = transform(quaternion_to_matrix(env.robot_base_pose()[1]), env.robot_base_pose()[0])
        tcp = base @ chain.forward_from_joint_state(env.joint_names(), env.joint_positions())
        position, orientation = env.tcp_pose()
        np.testing.assert_allclose(tcp[:3, 3], position, atol=1e-6)
        np.testing.assert_allclose(tcp[:3, :3], quaternion_to_matrix(orientation), atol=1e-6)
        # hand-eye: gripper camera link from FK, times the link->optical rotation, equals the env's
        cam_chain = KinematicChain.from_urdf(path, "tcp", "gripper_cam")  # up to panda_hand, down to the camera
        from openhelix_sim.envs.cameras import GRIPPER_LINK_TO_OPTICAL

        np.testing.assert_allclose(cam_chain.forward([]) @ GRIPPER_LINK_TO_OPTICAL, env.camera_to_tcp("gripper"),
                                   atol=1e-5)
    finally:
        env.close()


# --------------------------------------------------------------------------- analytic planar arm

PLANAR = """<?xml version="1.0"?>
<robot name="planar">
  <link name="world"/> <link name="base"/> <link name="upper"/> <link name="lower"/> <link name="slider"/>
  <link name="tool"/> <link name="elsewhere"/> <link name="side"/>
  <joint name="mount" type="fixed"><parent link="world"/><child link="base"/>
    <origin xyz="1 2 0.5" rpy="0 0 1.5707963267948966"/></joint>
  <joint name="shoulder" type="revolute"><parent link="base"/><child link="upper"/>
    <axis xyz="0 0 2"/><limit lower="-3" upper="3" effort="1" velocity="1"/></joint>
  <joint name="elbow" type="continuous"><parent link="upper"/><child link="lower"/>
    <origin xyz="0.7 0 0"/><axis xyz="0 0 1"/></joint>
  <joint name="extend" type="prismatic"><parent link="lower"/><child link="slider"/>
    <origin xyz="0.4 0 0"/><limit lower="0" upper="0.3" effort="1" velocity="1"/></joint>
  <joint name="flange" type="fixed"><parent link="slider"/><child link="tool"/><origin xyz="0.1 0 0"/></joint>
  <joint name="side_mount" type="revolute"><parent link="base"/><child link="side"/>
    <origin xyz="0 0 0.2"/><axis xyz="1 0 0"/></joint>
</robot>
"""


def _planar_tool(q1, q2, d):
    """Tool position in ``base``: links 0.7 and 0.4 m, a prismatic extension ``d`` along the
    lower link, and a 0.1 m flange."""
    reach = 0.4 + d + 0.1
    return np.array([0.7 * np.cos(q1) + reach * np.cos(q1 + q2), 0.7 * np.sin(q1) + reach * np.sin(q1 + q2), 0.0])


def test_planar_arm_with_prismatic_joint_matches_closed_form():
    chain = KinematicChain.from_urdf(PLANAR, "base", "tool")
    assert chain.joint_names == ["shoulder", "elbow", "extend"]
    np.testing.assert_allclose(chain.limits[[0, 2]], [[-3, 3], [0, 0.3]])
    assert chain.limits[1, 0] == -math.inf and chain.limits[1, 1] == math.inf
    rng = np.random.default_rng(0)
    q = np.c_[rng.uniform(-3, 3, 50), rng.uniform(-6, 6, 50), rng.uniform(0, 0.3, 50)]
    poses = chain.forward(q)
    assert poses.shape == (50, 4, 4)
    for pose, (q1, q2, d) in zip(poses, q):
        np.testing.assert_allclose(pose[:3, 3], _planar_tool(q1, q2, d), atol=1e-12)
        yaw = q1 + q2
        np.testing.assert_allclose(pose[:3, :3], [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0],
                                                  [0, 0, 1]], atol=1e-12)
    single = chain.forward({"shoulder": 0.3, "elbow": -0.2, "extend": 0.1, "ignored": 5.0})
    assert single.shape == (4, 4)
    np.testing.assert_allclose(single[:3, 3], _planar_tool(0.3, -0.2, 0.1), atol=1e-12)


def test_planar_chain_through_a_fixed_origin_rotation_and_backwards():
    # world -> tool includes the mount: 90 deg about z, then (1, 2, 0.5)
    chain = KinematicChain.from_urdf(PLANAR, "world", "tool")
    x, y, _ = _planar_tool(0.0, 0.0, 0.2)
    np.testing.assert_allclose(chain.forward([0.0, 0.0, 0.2])[:3, 3], [1 - y, 2 + x, 0.5], atol=1e-12)
    # tool -> base is the inverse of base -> tool
    forward, backward = KinematicChain.from_urdf(PLANAR, "base", "tool"), KinematicChain.from_urdf(PLANAR, "tool", "base")
    assert backward.joint_names == ["extend", "elbow", "shoulder"]
    q = [0.4, -1.1, 0.25]
    np.testing.assert_allclose(backward.forward(q[::-1]), invert(forward.forward(q)), atol=1e-12)
    # across branches: side -> tool goes up to base and down again
    across = KinematicChain.from_urdf(PLANAR, "side", "tool")
    assert across.joint_names == ["side_mount", "shoulder", "elbow", "extend"]
    side = KinematicChain.from_urdf(PLANAR, "base", "side").forward([0.3])
    np.testing.assert_allclose(across.forward([0.3, *q]), invert(side) @ forward.forward(q), atol=1e-12)


def test_an_all_fixed_chain_needs_no_positions():
    chain = KinematicChain.from_urdf(PLANAR, "slider", "tool")
    assert chain.joint_names == []
    np.testing.assert_allclose(chain.forward([]), transform(None, (0.1, 0, 0)))
    np.testing.assert_allclose(chain.forward({}), transform(None, (0.1, 0, 0)))


def test_rpy_and_quaternions_agree_with_geometry():
    rng = np.random.default_rng(1)
    for rpy in rng.uniform(-np.pi, np.pi, size=(20, 3)):
        np.testing.assert_allclose(rpy_to_matrix(rpy), geometry.euler_to_matrix(rpy, "xyz"), atol=1e-12)
        q = geometry.euler_to_quaternion(rpy, "xyz")
        np.testing.assert_allclose(quaternion_to_matrix(q), geometry.quaternion_to_matrix(q), atol=1e-12)


# ------------------------------------------------------------------------------------- refusals

def _robot(joints: str, links=("a", "b", "c")) -> str:
    return f'<robot name="r">{"".join(f"<link name={chr(34)}{n}{chr(34)}/>" for n in links)}{joints}</robot>'


@pytest.mark.parametrize("urdf, match", [
    ("<robot name='r'><link name='a'></robot>", "malformed XML"),
    ('<?xml version="1.0"?><!DOCTYPE robot [<!ENTITY x "0 0 1">]><robot name="r"/>', "DOCTYPE / ENTITY"),
    ("<notarobot/>", "expected <robot>"),
    (_robot('<joint name="j" type="revolute"><parent link="a"/><child link="b"/><origin xyz="0 nan 0"/></joint>'),
     r"joint 'j' <origin xyz>.*NaN or inf"),
    (_robot('<joint name="j" type="revolute"><parent link="a"/><child link="b"/><origin rpy="0 0 inf"/></joint>'),
     r"<origin rpy>.*NaN or inf"),
    (_robot('<joint name="j" type="revolute"><parent link="a"/><child link="b"/><origin xyz="0 0"/></joint>'),
     "expected 3 numbers"),
    (_robot('<joint name="j" type="revolute"><parent link="a"/><child link="b"/><axis xyz="0 0 0"/></joint>'),
     "zero vector"),
    (_robot('<joint name="j" type="hinge"><parent link="a"/><child link="b"/></joint>'), "type 'hinge'"),
    (_robot('<joint name="j" type="fixed"><parent link="a"/><child link="z"/></joint>'),
     r"child link 'z', which is not declared; links: \['a', 'b', 'c'\]"),
    (_robot('<joint name="j" type="fixed"><parent link="a"/><child link="b"/></joint>'
            '<joint name="k" type="fixed"><parent link="c"/><child link="b"/></joint>'), "child of two joints"),
    (_robot('<joint name="j" type="fixed"><parent link="a"/><child link="b"/></joint>'
            '<joint name="k" type="fixed"><parent link="b"/><child link="a"/></joint>'), "loop"),
    ("/nonexistent/robot.urdf", "cannot read URDF file"),
])
def test_bad_urdfs_are_refused_with_the_cause(urdf, match):
    with pytest.raises(KinematicsError, match=match):
        KinematicChain.from_urdf(urdf, "a", "b")


def test_entities_are_refused_not_expanded():
    billion_laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
                      '<robot name="&lol2;"><link name="a"/></robot>')
    with pytest.raises(KinematicsError, match="refused rather than expanded"):
        KinematicChain.from_urdf(billion_laughs, "a", "a")


@pytest.mark.parametrize("kind", ["floating", "planar"])
def test_floating_and_planar_joints_in_the_chain_are_refused(kind):
    urdf = _robot(f'<joint name="free" type="{kind}"><parent link="a"/><child link="b"/></joint>'
                  '<joint name="j" type="fixed"><parent link="a"/><child link="c"/></joint>')
    with pytest.raises(KinematicsError, match=f"joint 'free' between 'a' and 'b' is {kind}"):
        KinematicChain.from_urdf(urdf, "a", "b")
    assert KinematicChain.from_urdf(urdf, "a", "c").joint_names == []  # elsewhere in the tree: fine


def test_unconnected_and_unknown_links_are_named():
    urdf = _robot('<joint name="j" type="fixed"><parent link="a"/><child link="b"/></joint>')
    with pytest.raises(KinematicsError, match=r"links 'a' and 'c' are not connected.*links: \['a', 'b', 'c'\]"):
        KinematicChain.from_urdf(urdf, "a", "c")
    with pytest.raises(KinematicsError, match=r"tip_link 'tcp' is not a link of URDF 'r'; links: \['a', 'b', 'c'\]"):
        KinematicChain.from_urdf(urdf, "a", "tcp")


def test_bad_positions_are_refused():
    chain = KinematicChain.from_urdf(PLANAR, "base", "tool")
    with pytest.raises(KinematicsError, match=r"shape \(3,\) or \(N, 3\)"):
        chain.forward([0.0, 1.0])
    with pytest.raises(KinematicsError, match=r"\['elbow'\] are NaN or inf"):
        chain.forward([0.0, np.nan, 0.0])
    with pytest.raises(KinematicsError, match=r"lack joints \['extend'\]"):
        chain.forward({"shoulder": 0.0, "elbow": 0.0})
    with pytest.raises(KinematicsError, match="more than once"):
        chain.forward_from_joint_state(["shoulder", "elbow", "extend", "elbow"], [0, 0, 0, 0])
    with pytest.raises(KinematicsError, match="3 names but positions of shape"):
        chain.forward_from_joint_state(["shoulder", "elbow", "extend"], [0, 0])


# --------------------------------------------------------------------------------- transform tree

def _random_transform(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return transform(quaternion_to_matrix(q / np.linalg.norm(q)), rng.uniform(-1, 1, 3))


def test_transform_tree_walks_up_and_down():
    rng = np.random.default_rng(3)
    world_base, base_cam, world_table, table_tag = (_random_transform(rng) for _ in range(4))
    tree = TransformTree()
    tree.add("world", "base", world_base)
    tree.add("base", "camera", base_cam)
    tree.add("world", "table", world_table, static=False)
    tree.add("table", "tag", table_tag)
    assert tree.frames == ["world", "base", "camera", "table", "tag"]
    np.testing.assert_allclose(tree.lookup("world", "camera"), world_base @ base_cam, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("camera", "world"), invert(world_base @ base_cam), atol=1e-12)
    np.testing.assert_allclose(tree.lookup("camera", "tag"),
                               invert(world_base @ base_cam) @ world_table @ table_tag, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("tag", "tag"), np.eye(4))
    # a point given in camera coordinates, mapped to tag coordinates, is the same point in world
    point = np.r_[rng.normal(size=3), 1.0]
    np.testing.assert_allclose(world_table @ table_tag @ tree.lookup("tag", "camera") @ point,
                               world_base @ base_cam @ point, atol=1e-12)
    # replacing a transform (same parent) takes effect
    tree.add("world", "table", np.eye(4), static=False)
    np.testing.assert_allclose(tree.lookup("world", "tag"), table_tag, atol=1e-12)


def test_transform_tree_errors_name_the_frames():
    tree = TransformTree()
    tree.add("world", "base", np.eye(4))
    tree.add("map", "robot", np.eye(4))
    with pytest.raises(KinematicsError, match=r"'robot' in 'base': they are not connected.*"
                                              r"known frames: \['world', 'base', 'map', 'robot'\]"):
        tree.lookup("base", "robot")
    with pytest.raises(KinematicsError, match=r"unknown frame\(s\) \['nowhere'\]"):
        tree.lookup("nowhere", "base")
    with pytest.raises(KinematicsError, match="already has parent 'world'"):
        tree.add("map", "base", np.eye(4))
    with pytest.raises(KinematicsError, match="close a loop"):
        tree.add("base", "world", np.eye(4))
    with pytest.raises(KinematicsError, match="not a rotation"):
        tree.add("world", "scaled", np.diag([2.0, 1, 1, 1]))
    with pytest.raises(KinematicsError, match="NaN or inf"):
        tree.add("world", "bad", np.full((4, 4), np.nan))


def _transform_stamped(parent, child, xyz, xyzw):
    return SimpleNamespace(header=SimpleNamespace(frame_id=parent), child_frame_id=child,
                           transform=SimpleNamespace(translation=SimpleNamespace(x=xyz[0], y=xyz[1], z=xyz[2]),
                                                     rotation=SimpleNamespace(x=xyzw[0], y=xyzw[1], z=xyzw[2],
                                                                              w=xyzw[3])))


def test_transform_tree_from_tf_messages():
    s = math.sqrt(0.5)
    message = SimpleNamespace(transforms=[_transform_stamped("world", "base", (1, 0, 0), (0, 0, s, s)),
                                          _transform_stamped("base", "cam", (0, 1, 0), (0, 0, 0, 1))])
    tree = TransformTree.from_tf_messages([message, _transform_stamped("cam", "lens", (0, 0, 0.1), (0, 0, 0, 1))])
    assert tree.frames == ["world", "base", "cam", "lens"]
    # base is turned 90 deg about z: its y axis is world -x
    np.testing.assert_allclose(tree.lookup("world", "cam")[:3, 3], [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(tree.lookup("world", "lens")[:3, 3], [0, 0, 0.1], atol=1e-12)


@pytest.mark.parametrize("xyz, xyzw, match", [
    ((0, 0, 0), (0, 0, 0, 2), r"'world' -> 'cam': rotation quaternion .* has norm 2, not 1"),
    ((0, 0, 0), (0, 0, 0, 0), "has norm 0, not 1"),
    ((0, float("nan"), 0), (0, 0, 0, 1), r"'world' -> 'cam'.*NaN or inf"),
    ((0, 0, 0), (0, 0, float("inf"), 1), "NaN or inf"),
])
def test_bad_tf_messages_are_refused_with_the_frame_names(xyz, xyzw, match):
    with pytest.raises(KinematicsError, match=match):
        TransformTree().add_tf_message(SimpleNamespace(transforms=[_transform_stamped("world", "cam", xyz, xyzw)]))


def test_kinematics_imports_neither_ros_nor_torch():
    import openhelix_core.kinematics as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "math", "re", "xml", "dataclasses", "pathlib", "typing", "numpy"}, imported
