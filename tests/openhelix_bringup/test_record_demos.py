"""`openhelix record-demos`: the demo robot and the recorder as processes; the bag read back.

Rates are measured on the header stamps (simulated time), never on the wall clock, so a loaded
machine only makes the test slower."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from openhelix_core.kinematics import KinematicChain, TransformTree, quaternion_to_matrix, transform
from openhelix_ros import topics
from openhelix_ros.bags.io import BagReader
from openhelix_ros.domains import isolated_domain_id

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CAMERAS = ("static", "gripper")
TASK = "turn_on_led"  # the expert's shortest task (57 steps at seed 0)


def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _rate(stamps) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    out = tmp_path_factory.mktemp("record_demos")
    bag = out / "demos"
    environment = {**os.environ, "ROS_DOMAIN_ID": str(isolated_domain_id())}
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_bringup.cli", "record-demos", str(bag), "--tasks", TASK,
         "--episodes-per-task", "1", "--seed", "0", "--storage", "mcap", "--static-size", "96", "--gripper-size", "64",
         "--timeout", "800"],
        capture_output=True, text=True, env=environment, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    messages = defaultdict(list)
    with BagReader(bag) as reader:
        assert reader.storage == "mcap"
        for message in reader.messages():
            messages[message.topic].append(message)
        assert reader.stats.skipped_total == 0, reader.stats.to_dict()
    return result.stdout, messages, out


def test_record_demos_reports_the_bag_and_its_topics(recording):
    stdout, messages, _ = recording
    assert "demo robot: 1 episodes published, 0 skipped" in stdout
    for topic in (topics.JOINT_STATES, topics.EE_POSE, topics.INSTRUCTION, topics.POSE_COMMAND,
                  topics.GRIPPER_COMMAND, topics.STATIC_TRANSFORMS, *(topics.camera_color(c) for c in CAMERAS)):
        assert f"  {len(messages[topic]):7d}  {topic} [" in stdout, (topic, stdout)


def test_states_at_100_hz_and_cameras_at_15_hz_on_sim_time(recording):
    _, messages, _ = recording
    joint_stamps = np.array([_stamp(m.message.header) for m in messages[topics.JOINT_STATES]])
    pose_stamps = np.array([_stamp(m.message.header) for m in messages[topics.EE_POSE]])
    assert len(joint_stamps) > 200 and np.all(np.diff(joint_stamps) > 0)
    np.testing.assert_array_equal(joint_stamps, pose_stamps)
    assert _rate(joint_stamps) == pytest.approx(100.0, rel=0.1)
    # every gap is 2 or 3 physics substeps (240 Hz)
    assert set(np.round(np.diff(joint_stamps) * 240).astype(int)) <= {2, 3}
    names = messages[topics.JOINT_STATES][0].message.name
    assert list(names) == [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
    for camera in CAMERAS:
        stamps = {}
        for topic in (topics.camera_color(camera), topics.camera_depth(camera), topics.camera_info(camera)):
            stamps[topic] = np.array([_stamp(m.message.header) for m in messages[topic]])
            assert len(stamps[topic]) > 20 and np.all(np.diff(stamps[topic]) > 0), topic
            assert _rate(stamps[topic]) == pytest.approx(15.0, rel=0.1), topic
            assert {m.message.header.frame_id for m in messages[topic]} == {f"{camera}_camera_optical_frame"}
        first = stamps[topics.camera_color(camera)]
        assert all(np.array_equal(first, s) for s in stamps.values()), "color, depth and info stamps differ"
    assert set(np.round(np.diff(stamps[topics.camera_info("gripper")]) * 30).astype(int)) == {2}


def test_camera_info_matches_the_images_and_the_demos_calibration(recording):
    from openhelix_core.training.dataset import CameraCalibration
    from openhelix_sim.envs import PlayTableEnv
    from openhelix_sim.envs.cameras import intrinsics
    from openhelix_sim.experiments.demos import write_camera_info

    _, messages, out = recording
    with PlayTableEnv(seed=0, render_static=False, render_gripper=False) as env:
        write_camera_info(env, out)
    calibration = CameraCalibration.for_split(out)
    for camera, size in (("static", 96), ("gripper", 64)):
        info = messages[topics.camera_info(camera)][0].message
        color = messages[topics.camera_color(camera)][0].message
        depth = messages[topics.camera_depth(camera)][0].message
        assert (info.width, info.height) == (color.width, color.height) == (depth.width, depth.height) == (size, size)
        assert (color.encoding, depth.encoding) == ("rgb8", "32FC1")
        fov = calibration.static_fov if camera == "static" else calibration.gripper_fov
        np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), intrinsics(size, size, fov), rtol=1e-12)
        values = np.frombuffer(bytes(depth.data), dtype=np.float32)
        assert np.all(np.isfinite(values)) and 0.01 < values.min() < values.max() < 10.0


def test_instruction_commands_and_pause(recording):
    _, messages, _ = recording
    assert [m.message.data for m in messages[topics.INSTRUCTION]] == ["press the button to turn on the led light"]
    commands = np.array([_stamp(m.message.header) for m in messages[topics.POSE_COMMAND]])
    assert 30 < len(commands) < 150 and len(messages[topics.GRIPPER_COMMAND]) == len(commands)
    np.testing.assert_allclose(np.diff(commands), 1 / 30, atol=1e-6)
    assert {m.message.data for m in messages[topics.GRIPPER_COMMAND]} <= {0.0, 1.0}
    assert {m.message.header.frame_id for m in messages[topics.POSE_COMMAND]} == {"world"}
    frames = np.array([_stamp(m.message.header) for m in messages[topics.camera_color("static")]])
    assert np.min(np.abs(frames - commands[0])) < 1e-6, "the episode starts on a camera frame"
    # the arm holds still for the 1 s pause after the last command: no commands, the TCP stays put
    poses = messages[topics.EE_POSE]
    stamps = np.array([_stamp(m.message.header) for m in poses])
    assert stamps[-1] - commands[-1] == pytest.approx(1.0 + 1 / 30, abs=0.02)
    late = np.array([[m.message.pose.position.x, m.message.pose.position.y, m.message.pose.position.z]
                     for m, t in zip(poses, stamps) if t > commands[-1] + 0.5])
    assert len(late) > 40 and np.ptp(late, axis=0).max() < 2e-3


def test_static_transforms_and_forward_kinematics_agree_with_the_recorded_poses(recording, tmp_path):
    """/openhelix/static_transforms (and /tf_static where tf2_msgs exists) hold the demos'
    calibration; FK of the recorded joint states, placed at the recorded robot base, is the
    recorded TCP pose at the same stamp."""
    from openhelix_core.training.dataset import CameraCalibration
    from openhelix_sim.envs import PlayTableEnv, robot
    from openhelix_sim.experiments.demos import write_camera_info

    _, messages, _ = recording
    transforms = [m.message for m in messages[topics.STATIC_TRANSFORMS]]
    assert len(transforms) == 3
    tree = TransformTree.from_tf_messages(transforms)
    if messages[topics.TF_STATIC]:
        tf_tree = TransformTree.from_tf_messages(m.message for m in messages[topics.TF_STATIC])
        assert sorted(tf_tree.frames) == sorted(tree.frames)
    with PlayTableEnv(seed=0, render_static=False, render_gripper=False) as env:
        write_camera_info(env, tmp_path)
    calibration = CameraCalibration.for_split(tmp_path)
    # 1e-6: the static camera's pose comes from PyBullet's float32 view matrix, orthonormal only to
    # about 1e-8; the quaternion of the message is that of the nearest rotation
    np.testing.assert_allclose(tree.lookup("world", "static_camera_optical_frame"), calibration.static_to_base,
                               atol=1e-6)
    np.testing.assert_allclose(tree.lookup("tcp", "gripper_camera_optical_frame"), calibration.gripper_to_tcp,
                               atol=1e-6)
    base = tree.lookup("world", "panda_link0")
    chain = KinematicChain.from_urdf(robot.write_panda_urdf(str(tmp_path)), "panda_link0", "tcp")
    states = messages[topics.JOINT_STATES]
    fk = base @ chain.forward_from_joint_state(states[0].message.name, np.array([m.message.position for m in states]))
    poses = [m.message.pose for m in messages[topics.EE_POSE]]
    recorded = np.stack([transform(quaternion_to_matrix([p.orientation.x, p.orientation.y, p.orientation.z,
                                                         p.orientation.w]), [p.position.x, p.position.y, p.position.z])
                         for p in poses])
    np.testing.assert_allclose(fk, recorded, atol=1e-5)
