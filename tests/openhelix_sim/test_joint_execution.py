"""Joint-target execution: the play-table's ``joints`` action and the bridge's JointServoFollower."""
import numpy as np
import pytest

from openhelix_core.geometry import pose_to_matrix
from openhelix_core.kinematics import KinematicChain
from openhelix_sim.execution import PANDA_ARM_JOINTS, JointServoFollower, hold_action

ARM = tuple(f"panda_joint{i}" for i in range(1, 8))


def test_joints_action_drives_the_arm_to_the_targets_and_the_urdf_predicts_the_tcp(env):
    env.reset(seed=0)
    start = np.asarray(env.joint_positions())[:PANDA_ARM_JOINTS]
    target = start + np.array([0.15, -0.1, 0.1, 0.15, -0.1, 0.1, 0.2])
    for _ in range(60):
        env.step(np.append(target, 1.0), action_type="joints")
    reached = np.asarray(env.joint_positions())[:PANDA_ARM_JOINTS]
    np.testing.assert_allclose(reached, target, atol=5e-3)
    # The URDF the bridge serves on /robot_description places the TCP where the simulator has it.
    chain = KinematicChain.from_urdf(env.robot_urdf(), "panda_link0", "tcp")
    base = pose_to_matrix(*env.robot_base_pose())
    tcp_position, _ = env.tcp_pose()
    np.testing.assert_allclose((base @ chain.forward(reached))[:3, 3], tcp_position, atol=1e-4)


def test_joints_action_of_the_wrong_size_or_with_nan_is_refused(env):
    with pytest.raises(ValueError):
        env.step(np.zeros(7), action_type="joints")
    with pytest.raises(ValueError):
        env.step(np.r_[np.full(7, np.nan), 1.0], action_type="joints")


def test_hold_action_keeps_the_joints_where_they_are(env):
    env.reset(seed=0)
    hold = hold_action(env, "joints")
    assert hold.shape == (8,) and hold[-1] == 1.0
    np.testing.assert_allclose(hold[:7], np.asarray(env.joint_positions())[:7])


def test_follower_maps_targets_by_name_and_keeps_the_last_valid_one():
    follower = JointServoFollower(gripper_openness=1.0, arm_joint_names=ARM)
    assert follower.next_action(hold=True) is None  # nothing commanded yet
    reversed_names = list(reversed(ARM))
    follower.joint_command([*reversed_names, "panda_finger_joint1"], [*range(7, 0, -1), 0.04])
    follower.gripper_command(0.2)
    np.testing.assert_array_equal(follower.next_action(hold=False), [1, 2, 3, 4, 5, 6, 7, -1.0])
    assert follower.next_action(hold=False) is None  # lockstep: no new target, no step
    np.testing.assert_array_equal(follower.next_action(hold=True)[:7], np.arange(1, 8))
    for names, positions, cause in [(ARM[:6], range(6), "lacks the arm joints"),
                                    ([*ARM, ARM[0]], range(8), "appear twice"),
                                    (ARM, [np.nan] * 7, "NaN"),
                                    (ARM, range(6), "7 joint names but 6 positions")]:
        with pytest.raises(ValueError, match=cause):
            follower.joint_command(names, list(positions))
    np.testing.assert_array_equal(follower.next_action(hold=True)[:7], np.arange(1, 8))
    follower.clear(gripper_openness=1.0)
    assert follower.next_action(hold=True) is None
