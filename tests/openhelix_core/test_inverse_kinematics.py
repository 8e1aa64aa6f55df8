"""Jacobian, inverse kinematics and joint commands (openhelix_core.kinematics, .inverse_kinematics,
.runtime.joint_commands).

The Jacobian is checked against finite differences of the forward kinematics; IK solutions on
pybullet_data's Panda (base ``panda_link0``, TCP-like tip ``panda_grasptarget``, 10.5 cm past the
hand) against pybullet's own forward kinematics."""
from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from openhelix_core.inverse_kinematics import IkError, InverseKinematics, rotation_vector
from openhelix_core.kinematics import KinematicChain, KinematicsError, UrdfModel, quaternion_to_matrix, transform
from openhelix_core.runtime.joint_commands import IkNotConvergedError, JointCommand, JointCommandPlanner

pybullet_data = pytest.importorskip("pybullet_data")

PANDA_URDF = Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf"
PANDA_BASE, PANDA_TIP = "panda_link0", "panda_grasptarget"
PANDA_HOME = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
PANDA_VELOCITY_LIMITS = [2.175] * 4 + [2.61] * 3
POSITION_TOLERANCE_M, ORIENTATION_TOLERANCE_RAD = 1e-3, math.radians(0.5)

# A planar arm (revolute, continuous, prismatic) with a side branch, to go up and down a tree.
PLANAR = """<?xml version="1.0"?>
<robot name="planar">
  <link name="world"/> <link name="base"/> <link name="upper"/> <link name="lower"/> <link name="slider"/>
  <link name="tool"/> <link name="side"/>
  <joint name="mount" type="fixed"><parent link="world"/><child link="base"/>
    <origin xyz="1 2 0.5" rpy="0 0 1.5707963267948966"/></joint>
  <joint name="shoulder" type="revolute"><parent link="base"/><child link="upper"/>
    <axis xyz="0 0 2"/><limit lower="-3" upper="3" effort="1" velocity="1.5"/></joint>
  <joint name="elbow" type="continuous"><parent link="upper"/><child link="lower"/>
    <origin xyz="0.7 0 0"/><axis xyz="0 0 1"/></joint>
  <joint name="extend" type="prismatic"><parent link="lower"/><child link="slider"/>
    <origin xyz="0.4 0 0" rpy="0.3 0 0"/><limit lower="0" upper="0.3" effort="1" velocity="0.25"/></joint>
  <joint name="flange" type="fixed"><parent link="slider"/><child link="tool"/><origin xyz="0.1 0 0.05"/></joint>
  <joint name="side_mount" type="revolute"><parent link="base"/><child link="side"/>
    <origin xyz="0 0.1 0.2" rpy="0 0.4 0"/><axis xyz="1 0 1"/><limit lower="-2" upper="2" velocity="3"/></joint>
</robot>
"""


@pytest.fixture(scope="module")
def panda_chain() -> KinematicChain:
    return KinematicChain.from_urdf(PANDA_URDF, PANDA_BASE, PANDA_TIP)


@pytest.fixture(scope="module")
def pybullet_panda():
    """``pose(q) -> (4, 4)``: pybullet's pose of the tip in the base for arm positions ``q``."""
    pybullet = pytest.importorskip("pybullet")
    client = pybullet.connect(pybullet.DIRECT)
    body = pybullet.loadURDF(str(PANDA_URDF), useFixedBase=True, physicsClientId=client)
    ids = {}
    for index in range(pybullet.getNumJoints(body, physicsClientId=client)):
        info = pybullet.getJointInfo(body, index, physicsClientId=client)
        ids[info[1].decode()] = ids[info[12].decode()] = index

    def pose(positions) -> np.ndarray:
        for k, value in enumerate(positions):
            pybullet.resetJointState(body, ids[f"panda_joint{k + 1}"], float(value), 0.0, physicsClientId=client)
        state = pybullet.getLinkState(body, ids[PANDA_TIP], computeForwardKinematics=True, physicsClientId=client)
        rotation = np.array(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
        return transform(rotation, state[4])

    yield SimpleNamespace(pose=pose)
    pybullet.disconnect(client)


def _random_configurations(chain: KinematicChain, count: int, seed: int) -> np.ndarray:
    """``(count, J)`` positions drawn inside the limits (continuous joints within +-pi)."""
    limits = np.clip(chain.limits, -math.pi, math.pi)
    return np.random.default_rng(seed).uniform(limits[:, 0], limits[:, 1], size=(count, len(chain.joint_names)))


def _pose_errors(target: np.ndarray, pose: np.ndarray) -> tuple[float, float]:
    """(position error m, orientation error rad) between two 4x4 poses, computed independently of the IK."""
    cosine = np.clip((np.trace(target[:3, :3].T @ pose[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.linalg.norm(target[:3, 3] - pose[:3, 3])), float(np.arccos(cosine))


# ------------------------------------------------------------------------------ velocity limits

def test_velocity_limits_come_from_the_urdf_and_default_to_infinity(panda_chain):
    np.testing.assert_array_equal(panda_chain.velocity_limits, PANDA_VELOCITY_LIMITS)
    chain = KinematicChain.from_urdf(PLANAR, "side", "tool")
    assert chain.joint_names == ["side_mount", "shoulder", "elbow", "extend"]
    np.testing.assert_array_equal(chain.velocity_limits, [3.0, 1.5, math.inf, 0.25])   # elbow has no <limit>
    assert UrdfModel.parse(PLANAR).joints["tool"].velocity == math.inf                   # fixed joint
    assert KinematicChain.from_urdf(PLANAR, "slider", "tool").velocity_limits.shape == (0,)


@pytest.mark.parametrize("velocity, match", [
    ("0", ": <limit velocity> must be positive, got '0'"),
    ("-1.5", ": <limit velocity> must be positive, got '-1.5'"),
    ("nan", " <limit velocity>.*NaN or inf"),
    ("inf", " <limit velocity>.*NaN or inf"),
    ("fast", " <limit velocity>: 'fast' is not 1 numbers"),
])
def test_bad_velocity_limits_are_refused(velocity, match):
    urdf = ('<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="continuous">'
            f'<parent link="a"/><child link="b"/><limit effort="1" velocity="{velocity}"/></joint></robot>')
    with pytest.raises(KinematicsError, match=f"joint 'j'{match}"):
        UrdfModel.parse(urdf)


# ------------------------------------------------------------------------------------- Jacobian

def _finite_difference_jacobian(chain: KinematicChain, positions: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """``(6, J)`` central differences: d(position)/dq and the angular velocity from dR/dq @ R^T."""
    rotation = chain.forward(positions)[:3, :3]
    columns = []
    for k in range(len(positions)):
        offset = np.zeros(len(positions))
        offset[k] = step
        ahead, behind = chain.forward(positions + offset), chain.forward(positions - offset)
        velocity = (ahead[:3, 3] - behind[:3, 3]) / (2 * step)
        spin = (ahead[:3, :3] - behind[:3, :3]) / (2 * step) @ rotation.T   # skew-symmetric
        columns.append(np.r_[velocity, spin[2, 1], spin[0, 2], spin[1, 0]])
    return np.array(columns).T


@pytest.mark.parametrize("urdf, base, tip", [
    (PANDA_URDF, PANDA_BASE, PANDA_TIP),
    (PANDA_URDF, PANDA_TIP, PANDA_BASE),                       # inverted: every joint on the way up
    (PANDA_URDF, "panda_leftfinger", "panda_rightfinger"),     # prismatic, up then down
    (PLANAR, "world", "tool"),
    (PLANAR, "side", "tool"),                                  # revolute up, then revolute/prismatic down
    (PLANAR, "tool", "side"),
])
def test_jacobian_matches_finite_differences(urdf, base, tip):
    chain = KinematicChain.from_urdf(urdf, base, tip)
    for positions in _random_configurations(chain, 5, seed=3):
        pose, jacobian = chain.pose_and_jacobian(positions)
        assert jacobian.shape == (6, len(chain.joint_names))
        np.testing.assert_allclose(pose, chain.forward(positions), atol=1e-12)
        np.testing.assert_allclose(jacobian, _finite_difference_jacobian(chain, positions), atol=1e-7)
        np.testing.assert_array_equal(chain.jacobian(positions), jacobian)


def test_jacobian_takes_one_configuration(panda_chain):
    np.testing.assert_array_equal(panda_chain.jacobian(dict(zip(panda_chain.joint_names, PANDA_HOME))),
                                  panda_chain.jacobian(PANDA_HOME))
    with pytest.raises(KinematicsError, match="one configuration of shape \\(7,\\), got a batch of 2"):
        panda_chain.jacobian(np.stack([PANDA_HOME, PANDA_HOME]))
    with pytest.raises(KinematicsError, match=r"\['panda_joint2'\] are NaN or inf"):
        panda_chain.jacobian(np.r_[0.0, np.nan, PANDA_HOME[2:]])
    assert KinematicChain.from_urdf(PLANAR, "slider", "tool").jacobian([]).shape == (6, 0)


def test_rotation_vector_recovers_axis_and_angle_up_to_a_half_turn():
    rng = np.random.default_rng(5)
    angles = [0.0, 1e-9, 1e-4, 0.3, 2.0, math.pi - 1e-4, math.pi - 1e-9, math.pi]
    for angle in angles:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        skew = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
        rotation = np.eye(3) + math.sin(angle) * skew + (1.0 - math.cos(angle)) * skew @ skew
        vector = rotation_vector(rotation)
        if angle > math.pi - 1e-6:   # a half turn about a and about -a are the same rotation
            vector *= np.sign(vector @ axis)
        np.testing.assert_allclose(vector, angle * axis, atol=1e-7)


# ------------------------------------------------------------------------------ IK on the Panda

@pytest.fixture(scope="module")
def panda_targets(panda_chain):
    """(configurations (N, 7), their tip poses (N, 4, 4)): reachable targets."""
    configurations = _random_configurations(panda_chain, 60, seed=11)
    return configurations, panda_chain.forward(configurations)


def _check_solutions(chain, solutions, targets, pybullet_panda=None):
    limits = chain.limits
    for solution, target in zip(solutions, targets):
        if not solution.converged:
            continue
        assert solution.positions.shape == (len(chain.joint_names),)
        assert np.all(solution.positions >= limits[:, 0]) and np.all(solution.positions <= limits[:, 1])
        pose = pybullet_panda.pose(solution.positions) if pybullet_panda else chain.forward(solution.positions)
        position_error, orientation_error = _pose_errors(target, pose)
        assert position_error <= POSITION_TOLERANCE_M + 1e-6 and orientation_error <= ORIENTATION_TOLERANCE_RAD + 1e-6
        assert solution.position_error_m == pytest.approx(position_error, abs=1e-6)
        assert solution.orientation_error_rad == pytest.approx(orientation_error, abs=1e-6)


def test_ik_from_a_neighbouring_configuration_always_converges(panda_chain, panda_targets, pybullet_panda):
    configurations, targets = panda_targets
    limits = panda_chain.limits
    ik = InverseKinematics(panda_chain)
    seeds = np.clip(configurations + np.random.default_rng(2).uniform(-0.1, 0.1, configurations.shape),
                    limits[:, 0], limits[:, 1])
    solutions = [ik.solve(target, seed) for target, seed in zip(targets, seeds)]
    assert all(solution.converged for solution in solutions)
    assert max(solution.iterations for solution in solutions) <= 10
    _check_solutions(panda_chain, solutions, targets, pybullet_panda)


def test_ik_from_home_converges_mostly_and_restarts_recover_the_rest(panda_chain, panda_targets, pybullet_panda):
    """From the home pose, random targets anywhere in the workspace are a hard case (a local descent
    can end against a joint limit); restarts from perturbed seeds find nearly all of them."""
    _, targets = panda_targets
    plain = [InverseKinematics(panda_chain).solve(target, PANDA_HOME) for target in targets]
    assert sum(solution.converged for solution in plain) >= 0.75 * len(targets)
    _check_solutions(panda_chain, plain, targets, pybullet_panda)
    with_restarts = InverseKinematics(panda_chain, restarts=5, restart_spread_rad=2.0)
    retried = [with_restarts.solve(target, PANDA_HOME) if not solution.converged else solution
               for solution, target in zip(plain, targets)]
    assert sum(solution.converged for solution in retried) >= 0.95 * len(targets)
    _check_solutions(panda_chain, retried, targets, pybullet_panda)


def test_ik_is_deterministic_and_leaves_a_converged_seed_alone(panda_chain, panda_targets):
    configurations, targets = panda_targets
    ik = InverseKinematics(panda_chain, restarts=3)
    first, second = ik.solve(targets[0], PANDA_HOME), ik.solve(targets[0], PANDA_HOME)
    np.testing.assert_array_equal(first.positions, second.positions)
    assert first.iterations == second.iterations
    exact = ik.solve(targets[1], configurations[1])
    assert exact.converged and exact.iterations == 0
    np.testing.assert_array_equal(exact.positions, configurations[1])
    with pytest.raises(ValueError):
        exact.positions[0] = 1.0   # read-only: a solution is not changed behind the caller's back


def test_an_unreachable_target_is_not_converged(panda_chain):
    target = panda_chain.forward(PANDA_HOME)
    target[:3, 3] += (2.0, 0.0, 0.0)
    solution = InverseKinematics(panda_chain).solve(target, PANDA_HOME)
    assert not solution.converged
    assert solution.position_error_m > 1.0
    limits = panda_chain.limits
    assert np.all(solution.positions >= limits[:, 0]) and np.all(solution.positions <= limits[:, 1])
    assert solution.iterations < 100   # it stops once the descent stalls, not after every iteration


def test_ik_on_inverted_and_rank_deficient_chains():
    # Up then down a tree: the inverse of the arm, and a planar arm (rank 3) reached from a side branch.
    for base, tip in (("tool", "base"), ("side", "tool")):
        chain = KinematicChain.from_urdf(PLANAR, base, tip)
        ik = InverseKinematics(chain)
        configurations = _random_configurations(chain, 20, seed=4)
        seeds = configurations + np.random.default_rng(6).uniform(-0.05, 0.05, configurations.shape)
        solutions = [ik.solve(chain.forward(q), seed) for q, seed in zip(configurations, seeds)]
        assert all(solution.converged for solution in solutions), (base, tip)
        _check_solutions(chain, solutions, chain.forward(configurations))


def test_a_seed_outside_the_limits_is_clamped_into_them(panda_chain):
    seed = PANDA_HOME.copy()
    seed[3] = 0.01   # joint 4's upper limit is 0: measured positions can overshoot a little
    solution = InverseKinematics(panda_chain).solve(panda_chain.forward(PANDA_HOME), seed)
    assert solution.converged and solution.positions[3] <= 0.0


@pytest.mark.parametrize("target, match", [
    (np.full((4, 4), np.nan), "IK target: contains NaN or inf"),
    (np.diag([2.0, 1.0, 1.0, 1.0]), "IK target: the 3x3 block is not a rotation"),
    (np.diag([-1.0, 1.0, 1.0, 1.0]), "IK target: the 3x3 block is not a rotation"),
    (np.eye(3), r"IK target: expected a 4x4 matrix, got shape \(3, 3\)"),
    ([[0, 0, 0, 1]] * 4, "IK target: .* not a rotation|last row"),
])
def test_bad_targets_are_refused(panda_chain, target, match):
    with pytest.raises(IkError, match=match):
        InverseKinematics(panda_chain).solve(target, PANDA_HOME)


@pytest.mark.parametrize("seed, match", [
    (np.zeros(6), r"IK seed must have shape \(7,\) for joints \['panda_joint1'"),
    (np.zeros((1, 7)), r"shape \(7,\)"),
    (np.r_[PANDA_HOME[:4], np.nan, PANDA_HOME[5:]], r"IK seed positions of \['panda_joint5'\] are NaN or inf"),
    (["a"] * 7, "IK seed is not numeric"),
])
def test_bad_seeds_are_refused(panda_chain, seed, match):
    with pytest.raises(IkError, match=match):
        InverseKinematics(panda_chain).solve(np.eye(4), seed)


@pytest.mark.parametrize("arguments, match", [
    ({"position_tolerance_m": 0.0}, "position_tolerance_m must be a positive finite number"),
    ({"orientation_tolerance_rad": math.nan}, "orientation_tolerance_rad must be a positive finite number"),
    ({"damping": -1.0}, "damping must be a positive finite number"),
    ({"max_iterations": 0}, "max_iterations must be an integer >= 1"),
    ({"max_iterations": 10.5}, "max_iterations must be an integer >= 1"),
    ({"restarts": -1}, "restarts must be an integer >= 0"),
])
def test_bad_ik_settings_are_refused(panda_chain, arguments, match):
    with pytest.raises(IkError, match=match):
        InverseKinematics(panda_chain, **arguments)


def test_a_chain_without_movable_joints_is_refused():
    with pytest.raises(IkError, match="slider -> tool has no movable joints"):
        InverseKinematics(KinematicChain.from_urdf(PLANAR, "slider", "tool"))


# --------------------------------------------------------------------------------- joint commands

def _quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a rotation matrix, from its largest of 1 + trace and 1 + 2 R_kk - trace
    (the Panda's TCP points down: a half turn, where the trace alone would divide by ~0)."""
    trace = np.trace(rotation)
    k = int(np.argmax(np.diag(rotation)))
    if trace >= rotation[k, k]:
        w = math.sqrt(1.0 + trace) / 2.0
        return np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0],
                         rotation[1, 0] - rotation[0, 1], 4 * w * w]) / (4 * w)
    i, j = (k + 1) % 3, (k + 2) % 3
    quaternion = np.zeros(4)
    quaternion[k] = math.sqrt(1.0 + 2 * rotation[k, k] - trace) / 2.0
    quaternion[i] = (rotation[i, k] + rotation[k, i]) / (4 * quaternion[k])
    quaternion[j] = (rotation[j, k] + rotation[k, j]) / (4 * quaternion[k])
    quaternion[3] = (rotation[j, i] - rotation[i, j]) / (4 * quaternion[k])
    return quaternion


def test_quaternion_helper_round_trips(panda_chain):
    configurations = np.r_[[PANDA_HOME], _random_configurations(panda_chain, 20, seed=9)]
    for rotation in panda_chain.forward(configurations)[:, :3, :3]:
        np.testing.assert_allclose(quaternion_to_matrix(_quaternion_xyzw(rotation)), rotation, atol=1e-12)


@pytest.fixture(scope="module")
def planner() -> JointCommandPlanner:
    return JointCommandPlanner.from_urdf(PANDA_URDF.read_text(), PANDA_BASE, PANDA_TIP, min_duration_s=1 / 30)


def _joint_state(positions: np.ndarray) -> tuple[list[str], list[float]]:
    """A JointState-like (names, positions): the fingers too, the arm joints in reverse order."""
    return (["panda_finger_joint1", *(f"panda_joint{k}" for k in range(7, 0, -1)), "panda_finger_joint2"],
            [0.04, *positions[::-1], 0.04])


def test_planner_reaches_the_pose_within_the_velocity_limits(planner, pybullet_panda):
    rng = np.random.default_rng(8)
    for _ in range(10):
        goal = PANDA_HOME + rng.uniform(-0.4, 0.4, 7)
        target = planner.chain.forward(goal)
        measured = PANDA_HOME + rng.uniform(-0.05, 0.05, 7)
        command = planner.plan(target[:3, 3], _quaternion_xyzw(target[:3, :3]), *_joint_state(measured))
        assert isinstance(command, JointCommand) and command.solution.converged
        assert command.joint_names == tuple(f"panda_joint{k}" for k in range(1, 8))
        position_error, orientation_error = _pose_errors(target, pybullet_panda.pose(command.positions))
        assert position_error <= POSITION_TOLERANCE_M and orientation_error <= ORIENTATION_TOLERANCE_RAD
        speeds = np.abs(command.positions - measured) / command.time_from_start_s
        assert np.all(speeds <= np.array(PANDA_VELOCITY_LIMITS) * (1 + 1e-9))
        assert np.isclose(speeds / PANDA_VELOCITY_LIMITS, 1.0).any()   # the slowest joint sets the pace
        assert not command.positions.flags.writeable


def test_planner_holds_a_small_move_for_the_minimum_duration(planner):
    target = planner.chain.forward(PANDA_HOME)
    command = planner.plan(target[:3, 3] + (0.001, 0.0, 0.0), _quaternion_xyzw(target[:3, :3]),
                           *_joint_state(PANDA_HOME))
    assert command.time_from_start_s == pytest.approx(1 / 30)


def test_planner_keeps_positions_inside_the_limits(planner):
    measured = PANDA_HOME.copy()
    measured[3] = 0.002   # past joint 4's upper limit (0), as a measurement can be
    target = planner.chain.forward(np.clip(measured, *planner.chain.limits.T))
    command = planner.plan(target[:3, 3], _quaternion_xyzw(target[:3, :3]), *_joint_state(measured))
    limits = planner.chain.limits
    assert np.all(command.positions >= limits[:, 0]) and np.all(command.positions <= limits[:, 1])


def test_planner_refuses_an_unreachable_pose_naming_the_residual(planner):
    target = planner.chain.forward(PANDA_HOME)
    with pytest.raises(IkNotConvergedError, match=r"residual position error .* m \(tolerance 0.001 m\), "
                                                  r"orientation error .* deg \(tolerance 0.5 deg\)") as raised:
        planner.plan(target[:3, 3] + (2.0, 0.0, 0.0), _quaternion_xyzw(target[:3, :3]), *_joint_state(PANDA_HOME))
    assert isinstance(raised.value, IkError) and raised.value.solution.position_error_m > 1.0


def test_planner_refuses_missing_and_non_finite_joints(planner):
    names, positions = _joint_state(PANDA_HOME)
    target = planner.chain.forward(PANDA_HOME)
    pose = (target[:3, 3], _quaternion_xyzw(target[:3, :3]))
    without = [k for k, name in enumerate(names) if name != "panda_joint3"]
    with pytest.raises(IkError, match=r"joint state lacks joints \['panda_joint3'\] of the chain"):
        planner.plan(*pose, [names[k] for k in without], [positions[k] for k in without])
    with pytest.raises(IkError, match=r"positions of \['panda_joint6'\] are NaN or inf"):
        planner.plan(*pose, names, [math.nan if name == "panda_joint6" else p for name, p in zip(names, positions)])
    with pytest.raises(IkError, match="names 'panda_joint1' more than once"):
        planner.plan(*pose, [*names, "panda_joint1"], [*positions, 0.0])
    with pytest.raises(IkError, match="9 names but positions of shape"):
        planner.plan(*pose, names, positions[:-1])
    # a non-finite joint outside the chain does not matter
    finger_nan = [math.nan, *positions[1:]]
    assert planner.plan(*pose, names, finger_nan).solution.converged


@pytest.mark.parametrize("position, orientation, match", [
    ((0.3, math.nan, 0.5), (0, 0, 0, 1), "contains NaN or inf"),
    ((0.3, 0.0, 0.5), (0, 0, 0, 2), r"quaternion \[0.0, 0.0, 0.0, 2.0\] has norm 2, not 1"),
    ((0.3, 0.0), (0, 0, 0, 1), r"shape \(3,\).*got \(2,\)"),
])
def test_planner_refuses_bad_poses(planner, position, orientation, match):
    with pytest.raises(IkError, match=match):
        planner.plan(position, orientation, *_joint_state(PANDA_HOME))


def test_planner_settings_are_checked(panda_chain):
    ik = InverseKinematics(panda_chain)
    with pytest.raises(IkError, match="min_duration_s must be a positive finite number"):
        JointCommandPlanner(panda_chain, ik, 0.0)
    other = KinematicChain.from_urdf(PANDA_URDF, PANDA_BASE, "panda_hand")
    with pytest.raises(IkError, match="ik solves the chain panda_link0 -> panda_grasptarget, not the planner's "
                                      "panda_link0 -> panda_hand"):
        JointCommandPlanner(other, ik, 0.1)


def test_ik_modules_import_neither_ros_nor_torch():
    import openhelix_core.inverse_kinematics as ik_module
    import openhelix_core.runtime.joint_commands as commands_module

    for module in (ik_module, commands_module):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported <= {"__future__", "math", "dataclasses", "pathlib", "typing", "numpy", "", "kinematics",
                            "inverse_kinematics"}, (module.__name__, imported)
