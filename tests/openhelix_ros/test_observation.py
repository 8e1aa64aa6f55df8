"""Assembling an Observation from synchronized messages, built in memory."""
import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Header

from openhelix_ros.conversions import (
    InvalidMessageError,
    arrays_to_pose,
    depth_to_image,
    intrinsics_to_camera_info,
    rgb_to_image,
    seconds_to_stamp,
)
from openhelix_ros.observation import build_observation, camera_mounts_from_parameters, gripper_openness

K = np.array([[50.0, 0, 4], [0, 50.0, 3], [0, 0, 1]])
QUARTER_TURN_Z = [0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)]


def camera_messages(depth_value: float = 1.0, stamp: float = 5.0):
    header = Header(stamp=seconds_to_stamp(stamp), frame_id="cam")
    rgb = np.full((6, 8, 3), 100, np.uint8)
    return (rgb_to_image(rgb, header), depth_to_image(np.full((6, 8), depth_value, np.float32), header),
            intrinsics_to_camera_info(K, 8, 6, header))


def ee_pose(position=(0.5, 0.0, 0.3), quaternion=QUARTER_TURN_Z):
    return PoseStamped(header=Header(stamp=seconds_to_stamp(5.0)),
                       pose=arrays_to_pose(np.array(position), np.array(quaternion)))


CAMERAS = camera_mounts_from_parameters(
    ["static", "wrist"], ["base", "ee"], [1.0, 2.0, 3.0, 0, 0, 0, 1, 0.1, 0.0, 0.0, 0, 0, 0, 1])


def test_base_and_ee_mounted_cameras_get_their_transforms():
    color, depth, info = camera_messages()
    observation = build_observation(CAMERAS, [color, color], [depth, depth], [info, info], ee_pose(), 0.25)
    static, wrist = observation.cameras["static"], observation.cameras["wrist"]
    np.testing.assert_allclose(static.camera_to_base[:3, 3], [1, 2, 3])
    # the wrist camera sits 0.1 m along the hand's x, which the quarter turn about z maps to base +y
    np.testing.assert_allclose(wrist.camera_to_base[:3, 3], [0.5, 0.1, 0.3], atol=1e-9)
    np.testing.assert_allclose(wrist.camera_to_base[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-9)
    assert observation.stamp == pytest.approx(5.0)
    assert observation.gripper_openness == 0.25
    np.testing.assert_allclose(static.intrinsics, K)


@pytest.mark.parametrize("case, cause", [
    ("no_info", "no camera_info"),
    ("no_depth", "no valid pixels"),
    ("unregistered", "not registered"),
])
def test_bad_camera_input_names_camera_and_cause(case, cause):
    color, depth, info = camera_messages()
    if case == "no_info":
        info = None
    elif case == "no_depth":
        _, depth, _ = camera_messages(depth_value=0.0)
    else:
        depth = depth_to_image(np.ones((3, 3), np.float32), Header())
    with pytest.raises(InvalidMessageError, match=f"camera 'static'.*{cause}|{cause}"):
        build_observation(CAMERAS[:1], [color], [depth], [info], ee_pose(), 1.0)


def test_camera_parameter_lists_must_agree():
    with pytest.raises(ValueError, match="2 entries for 1 camera_names"):
        camera_mounts_from_parameters(["a"], ["base", "ee"], [0.0] * 7)
    with pytest.raises(ValueError, match="needs 7 values"):
        camera_mounts_from_parameters(["a"], ["base"], [0.0] * 6)
    with pytest.raises(ValueError, match="mount must be one of"):
        camera_mounts_from_parameters(["a"], ["table"], [0, 0, 0, 0, 0, 0, 1.0])
    with pytest.raises(ValueError, match="not unit length"):
        camera_mounts_from_parameters(["a"], ["base"], [0, 0, 0, 0, 0, 0, 2.0])


def test_gripper_openness_from_finger_joints():
    state = JointState(name=["j1", "f1", "f2"], position=[0.3, 0.02, 0.02])
    assert gripper_openness(state, ["f1", "f2"], 0.08) == pytest.approx(0.5)
    assert gripper_openness(JointState(name=["f1", "f2"], position=[0.05, 0.05]), ["f1", "f2"], 0.08) == 1.0
    with pytest.raises(InvalidMessageError, match="lacks the gripper joints"):
        gripper_openness(state, ["finger_left"], 0.08)
