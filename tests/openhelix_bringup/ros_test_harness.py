"""Shared pieces of the integration tests: launching nodes, a recorder and a fake robot."""
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Header
from tf2_msgs.msg import TFMessage

from openhelix_msgs.msg import GoalEmbedding, TrajectoryChunk
from openhelix_ros import topics
from openhelix_ros.conversions import (
    arrays_to_pose,
    depth_to_image,
    intrinsics_to_camera_info,
    rgb_to_image,
    seconds_to_stamp,
)
from openhelix_ros.launching import LaunchedProcesses, parse_launch_file
from openhelix_ros.qos import LATEST_SENSOR, RELIABLE
from openhelix_ros.transforms import TF_QOS, TF_STATIC_QOS, transform_message

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 240.0
K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
STEADY = Clock(clock_type=ClockType.STEADY_TIME)


def launch(names, environment, log_directory, overrides=None):
    """Starts the named nodes of sim.launch.xml; ``overrides`` maps node -> {parameter: value}."""
    nodes = [n for n in parse_launch_file(REPO / "launch" / "sim.launch.xml") if n.name in names]
    for node in nodes:
        node.parameters.update((overrides or {}).get(node.name, {}))
    return LaunchedProcesses(nodes, log_directory=log_directory, environment=environment)


@contextmanager
def launched_with_robot(names, environment, log_directory, overrides=None, **robot_options):
    """The named nodes as processes, a :class:`Recorder` pumping goals and a :class:`FakeRobot`;
    everything is stopped and destroyed on exit."""
    recorder, robot = Recorder(), FakeRobot(**robot_options)
    processes = launch(names, environment, log_directory, overrides)
    recorder.pump_goals = True
    try:
        yield recorder, robot, processes
    finally:
        processes.stop()
        recorder.destroy_node()
        robot.destroy_node()


class Recorder(Node):
    """Records what the policy publishes and can publish goals itself."""

    def __init__(self, **node_options):
        super().__init__("integration_recorder", **node_options)
        self.goals: list[GoalEmbedding] = []
        self.chunks: list[TrajectoryChunk] = []
        self.commands: list[PoseStamped] = []
        self.gripper_commands: list[Float64] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.messages: dict[str, str] = {}
        self.levels: dict[str, bytes] = {}
        self.diagnostics_received = 0
        self.create_subscription(GoalEmbedding, topics.GOAL_EMBEDDING, self.goals.append, RELIABLE)
        self.create_subscription(TrajectoryChunk, topics.TRAJECTORY_CHUNK, self.chunks.append, RELIABLE)
        self.create_subscription(PoseStamped, topics.POSE_COMMAND, self.commands.append, LATEST_SENSOR)
        self.create_subscription(Float64, topics.GRIPPER_COMMAND, self.gripper_commands.append, LATEST_SENSOR)
        self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self.on_diagnostics, 10)
        self.goal_publisher = self.create_publisher(GoalEmbedding, topics.GOAL_EMBEDDING, RELIABLE)
        self.pumped_goals = 0
        self.pump_goals = False
        self.create_timer(0.5, self._pump_goal, clock=STEADY)

    def _pump_goal(self):
        """Plays the planner: a fresh goal twice a second while ``pump_goals`` is set."""
        if self.pump_goals:
            self.pumped_goals += 1
            self.publish_goal(1000 + self.pumped_goals)

    def on_diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
            self.messages[status.name] = status.message
            self.levels[status.name] = status.level
        self.diagnostics_received += 1

    def controller_status(self) -> dict[str, str]:
        return self.diagnostics.get("openhelix/controller", {})

    def refusals(self, cause: str) -> int:
        return int(self.controller_status().get(f"refused_{cause}", 0))

    def spin_until(self, condition, timeout_s, processes, also=()):
        """Spins this node (and ``also``) until ``condition()`` holds; False on timeout."""
        executor = SingleThreadedExecutor()
        for node in (self, *also):
            executor.add_node(node)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.01)
                crashed = processes.exited()
                assert not crashed, f"nodes exited: {crashed}; logs: {logs(processes)}"
                if condition():
                    return True
            return False
        finally:
            executor.shutdown(timeout_sec=0)

    def spin_for(self, seconds, processes, also=()):
        self.spin_until(lambda: False, seconds, processes, also)

    def publish_goal(self, sequence: int, embedding=None, instruction="lift the red block", ahead_s: float = 0.0):
        if embedding is None:
            embedding = np.random.default_rng(sequence).standard_normal(512).astype(np.float32).tolist()
        goal = GoalEmbedding(sequence=sequence, instruction=instruction, model_id="test", embedding=embedding)
        goal.header.stamp = seconds_to_stamp(self.get_clock().now().nanoseconds * 1e-9 + ahead_s)
        self.goal_publisher.publish(goal)


def logs(processes):
    return {name: path.read_text(errors="replace")[-2500:] for name, path in processes.log_files.items()}


# FakeRobot faults: name -> what the robot then publishes
FAULTS = {
    "out_of_order": "every stamp 5 s old",
    "future": "every stamp 10 s ahead of the clock",
    "unknown_encoding": "color images in an unknown encoding",
    "wrong_size": "depth images with bytes missing",
    "no_valid_depth": "depth images without one valid pixel",
    "no_intrinsics": "camera_info with a zero K",
    "implausible_intrinsics": "camera_info with fx = fy = 1e-30",
    "oversized_image": "static color images wider than the controller accepts",
    "nan_pose": "an EE pose with NaN",
    "outside_workspace": "an EE pose at x = 2 m, outside the workspace box",
    "far_pose": "an EE pose 1e6 m away",
    "frozen": "the same image content with advancing stamps",
}


class FakeRobot(Node):
    """Publishes two RGB-D cameras, the EE pose and joint states like a robot driver; faults on request.

    With ``follow_commands`` its EE pose tracks the controller's pose commands, as an arm does.
    """

    def __init__(self, rate_hz: float = 10.0, follow_commands: bool = False, **node_options):
        super().__init__("fake_robot", **node_options)
        self.images = {}
        for camera in ("static", "gripper"):
            self.images[camera] = (self.create_publisher(Image, topics.camera_color(camera), LATEST_SENSOR),
                                   self.create_publisher(Image, topics.camera_depth(camera), LATEST_SENSOR),
                                   self.create_publisher(CameraInfo, topics.camera_info(camera), LATEST_SENSOR))
        self.pose_publisher = self.create_publisher(PoseStamped, topics.EE_POSE, LATEST_SENSOR)
        self.joint_publisher = self.create_publisher(JointState, topics.JOINT_STATES, LATEST_SENSOR)
        self.tf_publisher = self.create_publisher(TFMessage, topics.TF, TF_QOS)
        self.tf_static_publisher = self.create_publisher(TFMessage, topics.TF_STATIC, TF_STATIC_QOS)
        # None: no TF; else the TCP goes to /tf stamped this much before the images (and the cameras' frames to
        # /tf_static), as robot_state_publisher and the camera drivers would.
        self.tf_age_s: float | None = None
        self.gripper_joint_publisher = None  # publish_gripper_joints_on() adds a gripper driver's topic
        self.fault: str | None = None
        self.paused = False
        self.published = 0
        self.position = np.array([0.3, 0.0, 0.4])
        self.rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        if follow_commands:
            self.create_subscription(PoseStamped, topics.POSE_COMMAND, self.on_command, LATEST_SENSOR)
        self.create_timer(1.0 / rate_hz, self.publish, clock=STEADY)  # a driver's rate does not follow /clock

    def on_command(self, msg: PoseStamped) -> None:
        self.position = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])

    def publish(self):
        if self.paused:
            return
        assert self.fault in (None, *FAULTS), self.fault
        now = self.get_clock().now().nanoseconds * 1e-9
        stamp = {"out_of_order": now - 5.0, "future": now + 10.0}.get(self.fault, now)
        header = Header(stamp=seconds_to_stamp(stamp), frame_id="camera")
        depth = np.full((48, 64), 0.0 if self.fault == "no_valid_depth" else 1.0, np.float32)
        rgb = self.rgb.copy()
        if self.fault != "frozen":
            rgb[0, 0, 0] = self.published % 256  # a real camera's frames always differ, at least by noise
        k = {"no_intrinsics": np.zeros((3, 3)), "implausible_intrinsics": np.diag([1e-30, 1e-30, 1.0])}.get(self.fault, K)
        for camera, (color_publisher, depth_publisher, info_publisher) in self.images.items():
            if self.fault == "oversized_image" and camera == "static":
                color = rgb_to_image(np.zeros((48, 2100, 3), np.uint8), header)
            else:
                color = rgb_to_image(rgb, header)
            if self.fault == "unknown_encoding":
                color.encoding = "yuv422_weird"
            depth_msg = depth_to_image(depth, header)
            if self.fault == "wrong_size":
                depth_msg.data = bytes(depth_msg.data)[:-8]
            info_publisher.publish(intrinsics_to_camera_info(k, 64, 48, header))
            color_publisher.publish(color)
            depth_publisher.publish(depth_msg)
        position = {"nan_pose": np.array([np.nan, 0.0, 0.4]), "outside_workspace": np.array([2.0, 0.0, 0.4]),
                    "far_pose": np.array([1e6, 0.0, 0.4])}.get(self.fault, self.position)
        self.pose_publisher.publish(PoseStamped(header=Header(stamp=header.stamp, frame_id="world"),
                                                pose=arrays_to_pose(position, np.array([1.0, 0.0, 0.0, 0.0]))))
        if self.tf_age_s is not None:
            self.publish_transforms(stamp - self.tf_age_s, position)
        fingers = JointState(header=Header(stamp=header.stamp), name=["panda_finger_joint1", "panda_finger_joint2"],
                             position=[0.04, 0.04])
        self.joint_publisher.publish(fingers)
        if self.gripper_joint_publisher is not None:
            self.gripper_joint_publisher.publish(fingers)
        self.published += 1

    def publish_gripper_joints_on(self, topic: str) -> None:
        self.gripper_joint_publisher = self.create_publisher(JointState, topic, LATEST_SENSOR)

    def publish_transforms(self, stamp: float, position: np.ndarray) -> None:
        tcp = np.eye(4)
        tcp[:3, :3] = np.diag([1.0, -1.0, -1.0])  # the quaternion (1, 0, 0, 0) of the EE pose
        tcp[:3, 3] = position
        static_camera = np.eye(4)
        static_camera[:3, 3] = (1.0, 0.0, 0.8)
        hand_camera = np.eye(4)
        hand_camera[:3, 3] = (0.05, 0.0, -0.06)
        self.tf_publisher.publish(TFMessage(transforms=[
            transform_message("world", "tcp", tcp, seconds_to_stamp(stamp))]))
        self.tf_static_publisher.publish(TFMessage(transforms=[
            transform_message("world", "static_camera_optical_frame", static_camera, seconds_to_stamp(0.0)),
            transform_message("tcp", "gripper_camera_optical_frame", hand_camera, seconds_to_stamp(0.0))]))
