"""bag-to-dataset on bags built in memory with known signals (no rclpy.init).

The synthetic robot: two cameras at 15 Hz (each frame's pixels encode its index), the TCP pose
at 100 Hz moving along a straight line while turning about z at a constant rate, finger and arm
joints at 100 Hz, instructions as std_msgs/String. The recorder's clock runs 5 ms behind the
stamps. Every expected value is computed from the analytic signals.
"""
import json
import math

import numpy as np
import pytest
import yaml
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, TwistStamped
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Header, String

from openhelix_core.data.calvin_format import CalvinDataset
from openhelix_core.geometry import quaternion_to_euler
from openhelix_core.models.system1 import System1Config
from openhelix_core.training.dataset import CameraCalibration, OpenHelixCalvinDataset
from openhelix_ros.bags.io import BagWriter, default_typestore
from openhelix_ros.bags.to_dataset import CONVERSION_REPORT, ConversionError, ConversionOptions, convert_bags

T0 = 100.0
RECORD_DELAY = 0.005
CAMERA_RATE, STATE_RATE = 15.0, 100.0
CAMERA_OFFSET = 0.003
VELOCITY = np.array([0.05, -0.02, 0.01])
START = np.array([0.1, 0.2, 0.5])
YAW_RATE = 0.4
ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
K = np.array([[7.0, 0.0, 3.5], [0.0, 7.0, 2.5], [0.0, 0.0, 1.0]])
H, W = 6, 8


def position(t):
    return START + VELOCITY * (t - T0)


def quaternion(t):
    half = 0.5 * (math.pi + YAW_RATE * (t - T0))   # pointing down (roll pi), turning about base z
    roll = np.array([1.0, 0.0, 0.0, 0.0])
    yaw = np.array([0.0, 0.0, math.sin(half - math.pi / 2), math.cos(half - math.pi / 2)])
    x1, y1, z1, w1 = yaw
    x2, y2, z2, w2 = roll
    return np.array([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2])


def width(t):
    return 0.08 - 0.01 * (t - T0)


def stamp(t):
    sec = int(math.floor(t))
    return Time(sec=sec, nanosec=int(round((t - sec) * 1e9)))


def pose_msg(t, frame="world", scale=1.0):
    pose = Pose()
    p, q = position(t) * scale, quaternion(t)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in p)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return PoseStamped(header=Header(stamp=stamp(t), frame_id=frame), pose=pose)


def image_msg(t, index, kind, frame):
    if kind == "color":
        pixels = np.full((H, W, 3), index % 256, np.uint8)
        pixels[0, 0] = [index // 256, 7, 9]
        encoding, data = "rgb8", pixels.tobytes()
        step = W * 3
    else:
        pixels = np.full((H, W), 0.5 + 0.001 * index, np.float32)
        encoding, data, step = "32FC1", pixels.tobytes(), W * 4
    return Image(header=Header(stamp=stamp(t), frame_id=frame), height=H, width=W, encoding=encoding,
                 is_bigendian=0, step=step, data=data)


def info_msg(t, frame):
    return CameraInfo(header=Header(stamp=stamp(t), frame_id=frame), width=W, height=H, k=K.ravel().tolist(),
                      distortion_model="plumb_bob", d=[0.0] * 5)


class RobotBag:
    """Messages of the synthetic robot over ``duration`` s; tweak, then ``write``."""

    def __init__(self, duration=4.0, instructions=((0.0, "open the drawer"), (2.0, "close the drawer")),
                 cameras=("static", "gripper")):
        self.messages = []   # (receive time s, topic, type, message or raw bytes)
        for k in range(int(duration * CAMERA_RATE) + 1):
            t = T0 + CAMERA_OFFSET + k / CAMERA_RATE
            for camera in cameras:
                prefix = f"/cameras/{camera}"
                frame = f"{camera}_optical"
                self.add(t, f"{prefix}/color/image_raw", "sensor_msgs/msg/Image", image_msg(t, k, "color", frame))
                self.add(t, f"{prefix}/depth/image_raw", "sensor_msgs/msg/Image", image_msg(t, k, "depth", frame))
                self.add(t, f"{prefix}/color/camera_info", "sensor_msgs/msg/CameraInfo", info_msg(t, frame))
        for k in range(int(duration * STATE_RATE) + 1):
            t = T0 + k / STATE_RATE
            self.add(t, "/ee_pose", "geometry_msgs/msg/PoseStamped", pose_msg(t))
            positions = [0.1 * i + 0.01 * (t - T0) for i in range(7)] + [width(t) / 2] * 2
            self.add(t, "/joint_states", "sensor_msgs/msg/JointState",
                     JointState(header=Header(stamp=stamp(t)), name=ARM + FINGERS, position=positions))
        for t, text in instructions:
            self.add(T0 + t, "/instruction", "std_msgs/msg/String", String(data=text))

    def add(self, t, topic, msgtype, message):
        self.messages.append((t + RECORD_DELAY, topic, msgtype, message))

    def drop(self, topic, start=-math.inf, end=math.inf):
        self.messages = [m for m in self.messages if not (m[1] == topic and start <= m[0] - RECORD_DELAY - T0 <= end)]

    def write(self, path, storage="sqlite3"):
        with BagWriter(path, storage) as writer:
            for receive, topic, msgtype, message in sorted(self.messages, key=lambda m: m[0]):
                writer.add_topic(topic, msgtype)
                raw = message if isinstance(message, bytes) else serialize_message(message)
                writer.write(topic, int(round(receive * 1e9)), raw)
        return path


def controller_config(path, static_pose=(0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), gripper_pose=(0.0, 0.05, 0.0, 0.0, 0.0,
                                                                                            0.0, 1.0)):
    config = {"controller": {"ros__parameters": {"camera_names": ["static", "gripper"], "camera_mounts": ["base", "ee"],
                                                 "camera_extrinsics": list(static_pose) + list(gripper_pose)}}}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def options(tmp_path, **changes):
    values = {"controller_config": controller_config(tmp_path / "controller.yaml")}
    values.update(changes)
    return ConversionOptions(**values)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_multirate_signals_are_interpolated_exactly_at_camera_frames(tmp_path, storage):
    bag = RobotBag().write(tmp_path / "bag", storage)
    report = convert_bags([bag], tmp_path / "data", options(tmp_path))
    data = CalvinDataset(tmp_path / "data")
    assert report.state_source == "pose (/ee_pose)" and report.split == "instruction"
    checked = 0
    for start, end in data.episodes():
        for index in range(start, end + 1):
            frame = data.load_frame(index)
            k = int(frame["rgb_static"][0, 1, 0]) + 256 * int(frame["rgb_static"][0, 0, 0])
            t = T0 + CAMERA_OFFSET + k / CAMERA_RATE
            np.testing.assert_allclose(frame["robot_obs"][:3], position(t), atol=1e-9)
            euler = np.asarray(quaternion_to_euler(quaternion(t), "xyz"))
            np.testing.assert_allclose(np.cos(frame["robot_obs"][3:6] - euler), 1.0, atol=1e-9)
            np.testing.assert_allclose(frame["robot_obs"][6], width(t), atol=1e-9)
            np.testing.assert_allclose(frame["robot_obs"][7:14], [0.1 * i + 0.01 * (t - T0) for i in range(7)],
                                       atol=1e-9)
            assert frame["robot_obs"][14] == (1.0 if width(t) >= 0.9 * 0.08 else -1.0)
            np.testing.assert_array_equal(frame["rgb_gripper"][1:], np.full((H - 1, W, 3), k % 256, np.uint8))
            np.testing.assert_allclose(frame["depth_static"], 0.5 + 0.001 * k, rtol=1e-6)
            if index < end:   # no command recorded: the action is the next frame's pose
                np.testing.assert_allclose(frame["actions"][:3], position(t + 1 / CAMERA_RATE), atol=1e-9)
            checked += 1
    assert checked == report.frames > 50


def test_uniform_rate_ticks_and_no_extrapolation(tmp_path):
    robot = RobotBag(duration=3.0, instructions=((0.0, "push the button"),))
    robot.drop("/ee_pose", start=2.5)     # the pose stops before the cameras do
    robot.drop("/joint_states", start=2.5)
    bag = robot.write(tmp_path / "bag")
    report = convert_bags([bag], tmp_path / "data", options(tmp_path, rate_hz=10.0, image_tolerance=0.04))
    data = CalvinDataset(tmp_path / "data")
    (start, end), = data.episodes()
    poses = np.stack([data.load_frame(i)["robot_obs"][:3] for i in range(start, end + 1)])
    ticks = T0 + CAMERA_OFFSET + np.arange(len(poses)) / 10.0
    np.testing.assert_allclose(poses, np.stack([position(t) for t in ticks]), atol=1e-9)
    assert ticks[-1] <= T0 + 2.5 and report.ticks_without_data > 0


def test_pose_gap_splits_the_episode_and_is_reported(tmp_path):
    robot = RobotBag(duration=3.0, instructions=((0.0, "lift the red block"),))
    robot.drop("/ee_pose", start=1.0, end=1.5)
    bag = robot.write(tmp_path / "bag")
    report = convert_bags([bag], tmp_path / "data", options(tmp_path))
    assert len(CalvinDataset(tmp_path / "data").episodes()) == 2
    assert [e["instruction"] for e in report.episodes] == ["lift the red block"] * 2
    assert any("gaps in its data" in w for w in report.warnings)
    segments = CalvinDataset(tmp_path / "data").annotated_segments()
    assert [s[2:] for s in segments] == [("lift_the_red_block", "lift the red block")] * 2


def test_episodes_follow_the_instruction_topic_on_the_stamp_clock(tmp_path):
    bag = RobotBag().write(tmp_path / "bag")
    report = convert_bags([bag], tmp_path / "data", options(tmp_path))
    first, second = report.episodes
    assert (first["instruction"], second["instruction"]) == ("open the drawer", "close the drawer")
    # the marker at T0 + 2 s (received 5 ms later) starts the second episode at the first frame after T0 + 2 s
    assert second["start_s"] == pytest.approx(T0 + CAMERA_OFFSET + 30 / CAMERA_RATE)
    assert first["end_s"] == pytest.approx(T0 + CAMERA_OFFSET + 29 / CAMERA_RATE)


def test_pauses_split_episodes_and_are_trimmed(tmp_path):
    robot = RobotBag(duration=6.0, instructions=((0.0, "stack the blocks"),))
    robot.drop("/ee_pose", start=2.0, end=4.0)
    for k in range(int(2.0 * STATE_RATE) + 1):   # holds still from 2 s to 4 s
        t = T0 + 2.0 + k / STATE_RATE
        message = pose_msg(T0 + 2.0)
        message.header.stamp = stamp(t)
        robot.add(t, "/ee_pose", "geometry_msgs/msg/PoseStamped", message)
    robot.drop("/joint_states")
    robot.add(T0, "/openhelix/command/gripper", "std_msgs/msg/Float64", Float64(data=1.0))
    bag = robot.write(tmp_path / "bag")
    report = convert_bags([bag], tmp_path / "data", options(tmp_path, split="pause", pause_s=1.0))
    assert report.split == "pause" and len(report.episodes) == 2
    assert report.episodes[0]["end_s"] <= T0 + 2.0 + 1 / CAMERA_RATE
    assert report.episodes[1]["start_s"] >= T0 + 4.0 - 1 / CAMERA_RATE
    assert "command /openhelix/command/gripper" in report.gripper_source
    frame = CalvinDataset(tmp_path / "data").load_frame(0)
    assert frame["robot_obs"][6] == pytest.approx(0.08) and frame["robot_obs"][14] == 1.0


def test_episode_marker_topic_starts_and_ends_episodes(tmp_path):
    robot = RobotBag(duration=4.0, instructions=())
    robot.add(T0 + 0.5, "/episode", "std_msgs/msg/String", String(data="start"))
    robot.add(T0 + 1.5, "/episode", "std_msgs/msg/String", String(data="end"))
    robot.add(T0 + 2.0, "/episode", "std_msgs/msg/String", String(data="open the drawer"))
    bag = robot.write(tmp_path / "bag")
    report = convert_bags([bag], tmp_path / "data", options(tmp_path, split="topic", instruction="turn on the led"))
    assert [(e["instruction"], round(e["start_s"] - T0, 1)) for e in report.episodes] == [
        ("turn on the led", 0.5), ("open the drawer", 2.0)]
    assert report.episodes[0]["end_s"] < T0 + 1.5


def test_missing_and_misframed_topics_are_refused_with_the_reason(tmp_path):
    robot = RobotBag(duration=1.0)
    robot.drop("/cameras/gripper/depth/image_raw")
    with pytest.raises(ConversionError, match="/cameras/gripper/depth/image_raw.*not found"):
        convert_bags([robot.write(tmp_path / "a")], tmp_path / "out_a", options(tmp_path))

    robot = RobotBag(duration=1.0)
    robot.drop("/ee_pose")
    robot.drop("/joint_states")
    with pytest.raises(ConversionError, match="no TCP pose in the bag"):
        convert_bags([robot.write(tmp_path / "b")], tmp_path / "out_b", options(tmp_path))

    with pytest.raises(ConversionError, match="frame 'world', the base frame is 'base_link'"):
        convert_bags([RobotBag(duration=1.0).write(tmp_path / "c")], tmp_path / "out_c",
                     options(tmp_path, base_frame="base_link"))

    robot = RobotBag(duration=1.0)
    robot.drop("/ee_pose", start=0.5)
    for k in range(50, 101):
        t = T0 + k / STATE_RATE
        robot.add(t, "/ee_pose", "geometry_msgs/msg/PoseStamped", pose_msg(t, frame="tool0"))
    with pytest.raises(ConversionError, match="several frames"):
        convert_bags([robot.write(tmp_path / "d")], tmp_path / "out_d", options(tmp_path))

    robot = RobotBag(duration=1.0)
    robot.drop("/ee_pose")
    for k in range(101):
        t = T0 + k / STATE_RATE
        robot.add(t, "/ee_pose", "geometry_msgs/msg/PoseStamped", pose_msg(t, scale=1000.0))
    with pytest.raises(ConversionError, match="millimetres"):
        convert_bags([robot.write(tmp_path / "e")], tmp_path / "out_e", options(tmp_path))

    robot = RobotBag(duration=1.0, instructions=())
    with pytest.raises(ConversionError, match="no instruction"):
        convert_bags([robot.write(tmp_path / "f")], tmp_path / "out_f", options(tmp_path))
    assert not (tmp_path / "out_f").exists() and not list(tmp_path.glob(".out_f.partial-*"))


def test_corrupt_messages_are_skipped_and_counted(tmp_path):
    robot = RobotBag(duration=2.0, instructions=((0.0, "open the drawer"),))
    robot.drop("/cameras/static/color/image_raw", start=1.0 + CAMERA_OFFSET - 1e-6, end=1.0 + CAMERA_OFFSET + 1e-6)
    robot.add(T0 + 1.0 + CAMERA_OFFSET, "/cameras/static/color/image_raw", "sensor_msgs/msg/Image", b"\x00\x01garbage")
    truncated = image_msg(T0 + 1.2, 0, "color", "static_optical")
    truncated.data = truncated.data[:-5]
    robot.drop("/cameras/static/color/image_raw", start=1.2 + CAMERA_OFFSET - 1e-6, end=1.2 + CAMERA_OFFSET + 1e-6)
    robot.add(T0 + 1.2 + CAMERA_OFFSET, "/cameras/static/color/image_raw", "sensor_msgs/msg/Image", truncated)
    robot.add(T0 + 0.505, "/ee_pose", "geometry_msgs/msg/PoseStamped", b"\x00\x01\x00\x00\x01")
    bag = robot.write(tmp_path / "bag")
    report = convert_bags([bag], tmp_path / "data", options(tmp_path))
    counts = report.messages[str(bag)]
    assert counts["skipped_by_cause"] == {"corrupt": 2, "invalid": 1}
    assert counts["skipped_by_topic"]["/cameras/static/color/image_raw (invalid)"] == 1
    # 31 camera frames; the last (3 ms after the last pose) is not extrapolated to, and the two lost
    # static frames are not replaced by neighbours further than the tolerance
    assert report.frames == 2 * CAMERA_RATE + 1 - 1 - 2
    saved = json.loads((tmp_path / "data" / CONVERSION_REPORT).read_text())
    assert saved["messages"][str(bag)]["messages_skipped"] == 3


def test_the_trainer_reads_the_result_with_the_bags_intrinsics(tmp_path):
    bag = RobotBag().write(tmp_path / "bag")
    convert_bags([bag], tmp_path / "data", options(tmp_path))
    calibration = CameraCalibration.for_split(tmp_path / "data")
    np.testing.assert_allclose(calibration.static_intrinsics, K)
    np.testing.assert_allclose(calibration.static_to_base[:3, 3], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(calibration.gripper_to_tcp[:3, 3], [0.0, 0.05, 0.0])
    dataset = OpenHelixCalvinDataset(tmp_path / "data", System1Config.tiny())
    frame = dataset.reader.load_frame(0)
    np.testing.assert_allclose(calibration.frames(frame)["static"].intrinsics, K)
    item = dataset[0]
    assert item["instruction"] == "open the drawer" and item["trajectory"].shape[0] == 19


def test_single_camera_bag_trains_with_a_static_only_policy(tmp_path):
    bag = RobotBag(cameras=("static",)).write(tmp_path / "bag")
    convert_bags([bag], tmp_path / "data", options(tmp_path, cameras={"static": "/cameras/static"}))
    with pytest.raises(ValueError, match="no gripper camera"):
        OpenHelixCalvinDataset(tmp_path / "data", System1Config.tiny())
    config = System1Config.tiny()
    config.cameras = ("static",)
    assert OpenHelixCalvinDataset(tmp_path / "data", config)[0]["rgb"].shape[0] == 1


def test_twists_integrate_to_the_pose_ramp(tmp_path):
    robot = RobotBag(duration=2.0, instructions=((0.0, "slide the door"),))
    robot.drop("/ee_pose")
    for k in range(int(2.0 * STATE_RATE) + 1):
        t = T0 + k / STATE_RATE
        twist = TwistStamped(header=Header(stamp=stamp(t), frame_id="world"))
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (float(v) for v in VELOCITY)
        twist.twist.angular.z = YAW_RATE
        robot.add(t, "/ee_twist", "geometry_msgs/msg/TwistStamped", twist)
    bag = robot.write(tmp_path / "bag")
    initial = list(position(T0)) + list(quaternion(T0))
    report = convert_bags([bag], tmp_path / "data", options(tmp_path, state_source="twist", base_frame="world",
                                                            initial_pose=initial))
    assert report.state_source == "twist (/ee_twist)"
    frame = CalvinDataset(tmp_path / "data").load_frame(10)
    t = T0 + CAMERA_OFFSET + 10 / CAMERA_RATE
    np.testing.assert_allclose(frame["robot_obs"][:3], position(t), atol=1e-9)
    euler = np.asarray(quaternion_to_euler(quaternion(t), "xyz"))
    np.testing.assert_allclose(np.cos(frame["robot_obs"][3:6] - euler), 1.0, atol=1e-9)


def test_output_directory_with_frames_is_not_overwritten(tmp_path):
    bag = RobotBag(duration=1.0).write(tmp_path / "bag")
    convert_bags([bag], tmp_path / "data", options(tmp_path))
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    with pytest.raises(ConversionError, match="already exists and is not empty"):
        convert_bags([bag], tmp_path / "data", options(tmp_path))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before


PLANAR_URDF = """<?xml version="1.0"?>
<robot name="planar">
  <link name="base_link"/><link name="link1"/><link name="link2"/><link name="tcp"/>
  <joint name="joint1" type="revolute"><parent link="base_link"/><child link="link1"/>
    <origin xyz="0 0 0.5" rpy="0 0 0"/><axis xyz="0 0 1"/><limit lower="-3" upper="3" effort="1" velocity="1"/></joint>
  <joint name="joint2" type="revolute"><parent link="link1"/><child link="link2"/>
    <origin xyz="0.3 0 0" rpy="0 0 0"/><axis xyz="0 0 1"/><limit lower="-3" upper="3" effort="1" velocity="1"/></joint>
  <joint name="tcp_joint" type="fixed"><parent link="link2"/><child link="tcp"/>
    <origin xyz="0.2 0 0" rpy="3.141592653589793 0 0"/></joint>
</robot>
"""


def planar_joints(t):
    return 0.1 + 0.2 * (t - T0), -0.3 + 0.1 * (t - T0)


def test_joint_states_through_the_urdf_give_the_tcp_pose(tmp_path):
    robot = RobotBag(duration=2.0, instructions=((0.0, "turn on the lightbulb"),))
    robot.drop("/ee_pose")
    robot.drop("/joint_states")
    for k in range(int(2.0 * STATE_RATE) + 1):
        t = T0 + k / STATE_RATE
        robot.add(t, "/joint_states", "sensor_msgs/msg/JointState",
                  JointState(header=Header(stamp=stamp(t)), name=["joint1", "joint2"] + FINGERS,
                             position=list(planar_joints(t)) + [0.04, 0.04]))
    (tmp_path / "planar.urdf").write_text(PLANAR_URDF)
    bag = robot.write(tmp_path / "bag")
    report = convert_bags([bag], tmp_path / "data", options(tmp_path, urdf=str(tmp_path / "planar.urdf"),
                                                            base_link="base_link", tip_link="tcp"))
    assert report.state_source == "joints (/joint_states)" and report.base_frame == "base_link"
    data = CalvinDataset(tmp_path / "data")
    for index in (0, 7, 20):
        t = T0 + CAMERA_OFFSET + index / CAMERA_RATE
        q1, q2 = planar_joints(t)
        expected = [0.3 * math.cos(q1) + 0.2 * math.cos(q1 + q2), 0.3 * math.sin(q1) + 0.2 * math.sin(q1 + q2), 0.5]
        robot_obs = data.load_frame(index)["robot_obs"]
        np.testing.assert_allclose(robot_obs[:3], expected, atol=1e-5)   # poses of joint samples, interpolated
        np.testing.assert_allclose(np.cos(robot_obs[3:6] - [math.pi, 0.0, q1 + q2]), 1.0, atol=1e-6)
        np.testing.assert_allclose(robot_obs[7:9], [q1, q2], atol=1e-9)

    degrees = RobotBag(duration=1.0)
    degrees.drop("/ee_pose")
    degrees.drop("/joint_states")
    for k in range(101):
        t = T0 + k / STATE_RATE
        degrees.add(t, "/joint_states", "sensor_msgs/msg/JointState",
                    JointState(header=Header(stamp=stamp(t)), name=["joint1", "joint2"] + FINGERS,
                               position=[45.0, -30.0, 0.04, 0.04]))
    with pytest.raises(ConversionError, match="radians.*degrees"):
        convert_bags([degrees.write(tmp_path / "deg")], tmp_path / "out_deg",
                     options(tmp_path, urdf=str(tmp_path / "planar.urdf"), base_link="base_link", tip_link="tcp"))


def tf_static(*transforms) -> bytes:
    """A serialized tf2_msgs/TFMessage (built with rosbags' types: tf2_msgs is no wheel here)."""
    store = default_typestore()
    types = store.types
    entries = []
    for parent, child, xyz, quaternion in transforms:
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                             frame_id=parent)
        transform = types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](*xyz),
            rotation=types["geometry_msgs/msg/Quaternion"](*quaternion))
        entries.append(types["geometry_msgs/msg/TransformStamped"](header=header, child_frame_id=child,
                                                                   transform=transform))
    return bytes(store.serialize_cdr(types["tf2_msgs/msg/TFMessage"](transforms=entries), "tf2_msgs/msg/TFMessage"))


def test_camera_poses_from_tf_static(tmp_path):
    robot = RobotBag(duration=1.0)
    half = math.sqrt(0.5)
    robot.add(T0 - 0.1, "/tf_static", "tf2_msgs/msg/TFMessage", tf_static(
        ("world", "camera_mount", (1.0, 0.0, 0.8), (0.0, 0.0, half, half)),
        ("camera_mount", "static_optical", (0.0, 0.1, 0.0), (0.0, 0.0, 0.0, 1.0)),
        ("tcp", "gripper_optical", (0.0, 0.0, 0.05), (0.0, 0.0, 0.0, 1.0))))
    bag = robot.write(tmp_path / "bag")
    report = convert_bags([bag], tmp_path / "data", ConversionOptions())
    calibration = CameraCalibration.for_split(tmp_path / "data")
    np.testing.assert_allclose(calibration.static_to_base[:3, 3], [1.0 - 0.1, 0.0, 0.8], atol=1e-12)
    np.testing.assert_allclose(calibration.gripper_to_tcp[:3, 3], [0.0, 0.0, 0.05], atol=1e-12)
    assert report.camera_sources == {"static": "/tf_static world -> static_optical",
                                     "gripper": "/tf_static tcp -> gripper_optical"}
    with pytest.raises(ConversionError, match="'static_optical'.*--controller-config"):
        convert_bags([RobotBag(duration=1.0).write(tmp_path / "no_tf")], tmp_path / "out2", ConversionOptions())


def test_a_pose_topic_slower_than_max_gap_is_refused_naming_it_and_the_flag(tmp_path):
    robot = RobotBag(duration=2.0, instructions=((0.0, "open the drawer"),))
    robot.drop("/ee_pose")
    for k in range(11):   # 5 Hz: samples 0.2 s apart
        t = T0 + k / 5.0
        robot.add(t, "/ee_pose", "geometry_msgs/msg/PoseStamped", pose_msg(t))
    bag = robot.write(tmp_path / "bag")
    with pytest.raises(ConversionError, match=r"/ee_pose \d+ \(largest gap 0.200 s\).*--max-gap 0.1"):
        convert_bags([bag], tmp_path / "data", options(tmp_path))
    report = convert_bags([bag], tmp_path / "data", options(tmp_path, max_gap=0.25))
    assert report.frames > 0 and report.frame_times_without["/ee_pose"] < 3


def test_a_refused_bag_leaves_no_partial_dataset(tmp_path):
    first = RobotBag(duration=1.0).write(tmp_path / "first")
    other = RobotBag(duration=1.0)
    for _, topic, _, message in other.messages:
        if topic.endswith("camera_info"):
            message.k = (K * [[1.1], [1.1], [1.0]]).ravel().tolist()   # another zoom
    second = other.write(tmp_path / "second")
    with pytest.raises(ConversionError, match="differ from those of"):
        convert_bags([first, second], tmp_path / "data", options(tmp_path))
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob(".data.partial-*"))
    report = convert_bags([first], tmp_path / "data", options(tmp_path))
    assert report.frames > 0 and (tmp_path / "data" / CONVERSION_REPORT).is_file()


def test_commands_received_at_one_recorder_time_keep_the_newest(tmp_path):
    robot = RobotBag(duration=1.0, instructions=((0.0, "close the gripper"),))
    robot.drop("/joint_states")
    robot.add(T0, "/openhelix/command/gripper", "std_msgs/msg/Float64", Float64(data=1.0))
    robot.add(T0, "/openhelix/command/gripper", "std_msgs/msg/Float64", Float64(data=0.0))
    report = convert_bags([robot.write(tmp_path / "bag")], tmp_path / "data", options(tmp_path))
    frame = CalvinDataset(tmp_path / "data").load_frame(0)
    assert frame["robot_obs"][6] == 0.0 and frame["robot_obs"][14] == -1.0
    assert not report.warnings
