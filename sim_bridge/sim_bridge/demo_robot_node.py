"""Demo robot node: the scripted expert's demonstrations, published as a real robot's drivers would.

Plays the demos of ``openhelix_sim.experiments.demos`` (``tasks`` x ``episodes_per_task`` start
states from ``seed``; each episode dry-run first and kept only if the oracle passes it) on the
embedded play-table through :class:`openhelix_sim.demo_robot.DemoRobot`, and publishes, stamped
with a simulated clock (``start wall time + sim time``; physics at 240 Hz, actions at 30 Hz):

* ``/joint_states`` (``sensor_msgs/JointState``: the 7 arm and 2 finger joints, position and
  velocity) and ``/ee_pose`` (``geometry_msgs/PoseStamped``, TCP in ``base_frame``) at
  ``state_rate_hz``, each stamped with the time of the physics substep it was read after;
* per camera (``static``, ``gripper``) color (rgb8), registered depth (32FC1, metres) and
  camera_info at ``camera_rate_hz``, frame ``<camera>_camera_optical_frame``;
* the expert's commands at 30 Hz while an episode runs: ``/openhelix/command/ee_pose``
  (``PoseStamped``) and ``/openhelix/command/gripper`` (``std_msgs/Float64`` openness, 1 open /
  0 closed, as the controller publishes it);
* ``/instruction`` (``std_msgs/String``, latched) at each episode's start;
* once, latched: the fixed transforms (robot base and static camera in ``base_frame``, gripper
  camera in ``ee_frame``) on ``/tf_static`` (``tf2_msgs/TFMessage``, when tf2_msgs is
  installed) and, one ``geometry_msgs/TransformStamped`` each, on ``/openhelix/static_transforms``.

The simulated clock is also published on ``/clock`` (``rosgraph_msgs/Clock``, at every published
stamp), as a simulator does: a recorder with ``use_sim_time`` (``openhelix record-demos``) then
stores receive times on the same clock as the stamps, whatever the real-time factor, so a replay
(``openhelix bag-eval``) sees data as fresh as a robot's.

After each episode the arm holds still for ``pause_s``, sensors still publishing, so episodes
can be split by the instruction or by the pauses. With ``real_time`` (default) it never
publishes a message before its stamp (when rendering is slower than real time it falls behind;
stamps stay sim time). It exits when done, logging "N episodes published, M skipped".
"""
from __future__ import annotations

import time

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Header, String

from openhelix_core.geometry import euler_to_quaternion
from openhelix_ros import topics
from openhelix_ros.conversions import arrays_to_pose, depth_to_image, intrinsics_to_camera_info, rgb_to_image
from openhelix_ros.node_main import run_node
from openhelix_ros.parameters import (
    ParameterSpec,
    declare_and_validate,
    non_empty,
    non_negative,
    one_of,
    positive,
    topic_name,
)
from openhelix_ros.qos import LATCHED
from openhelix_ros.transforms import transform_message
from openhelix_sim.demo_robot import CAMERAS, DemoRobot, SensorSchedule, gripper_openness_command, optical_frame
from openhelix_sim.demo_robot import static_transforms as env_static_transforms
from openhelix_sim.envs import make_play_table
from openhelix_sim.envs.play_table import PHYSICS_HZ
from openhelix_sim.evaluation_runner import oracle_for
from openhelix_sim.experiments.demos import demo_jobs
from openhelix_sim.task_set import DEFAULT_TASKS
from sim_bridge.sim_bridge_node import task_list, task_names

try:  # not among the PyPI ROS wheels this suite installs
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the installation
    TFMessage = None

CONTROL_HZ = 30.0


def within(low: float, high: float):
    def check(value) -> str | None:
        return None if low < value <= high else f"must lie in ({low:g}, {high:g}], got {value}"
    return check


PARAMETERS = (
    ParameterSpec("tasks", ",".join(DEFAULT_TASKS), "Comma-separated tasks the scripted expert demonstrates.",
                  task_list),
    ParameterSpec("episodes_per_task", 1, "Start states (consecutive seeds from 'seed') per task.", positive),
    ParameterSpec("seed", 0, "First start-state seed (as openhelix_sim.experiments demos: seed .. seed + N - 1).",
                  non_negative),
    ParameterSpec("scene_variation", "task", "Start scenes: 'task' (fixed scene but the task's joint and the arm) "
                  "or 'full' (random scenes), as the demos.", one_of("task", "full")),
    ParameterSpec("paraphrases", False, "Instructions: CALVIN's training phrasings in turn (true) instead of its "
                  "validation sentence."),
    ParameterSpec("pause_s", 1.0, "Sim seconds the arm holds still after each episode (sensors still publishing).",
                  non_negative),
    ParameterSpec("state_rate_hz", 100.0, f"Joint state and EE pose rate (Hz, at most the {PHYSICS_HZ} Hz physics).",
                  within(0.0, float(PHYSICS_HZ))),
    ParameterSpec("camera_rate_hz", 15.0, f"Camera rate (Hz, at most the {CONTROL_HZ:g} Hz control rate).",
                  within(0.0, CONTROL_HZ)),
    ParameterSpec("real_time", True, "Never publish a message before its stamp (sim time does not run ahead of "
                  "wall time); false: as fast as it goes (a slow subscriber may then lose messages)."),
    ParameterSpec("static_image_size", 200, "Static camera image side (px; CALVIN: 200).", positive),
    ParameterSpec("gripper_image_size", 84, "Gripper camera image side (px; CALVIN: 84).", positive),
    ParameterSpec("base_frame", "world", "Frame of the EE poses, the commands and the static camera (the "
                  "play-table's world frame).", non_empty),
    ParameterSpec("robot_base_frame", "panda_link0", "The arm's base link (its pose in base_frame goes to /tf_static).",
                  non_empty),
    ParameterSpec("ee_frame", "tcp", "The TCP frame the EE pose describes; parent of the gripper camera.", non_empty),
    ParameterSpec("sensor_qos", "reliable", "'reliable' (a recorder loses nothing) or 'sensor_data' (best effort, "
                  "as most camera drivers).", one_of("reliable", "sensor_data")),
    ParameterSpec("wait_for_subscribers_s", 0.0, "Before the first episode, wait up to this long until every "
                  "sensor and command topic has a subscriber (a recorder); 0 = start at once.", non_negative),
    ParameterSpec("linger_s", 5.0, "At the end, wait up to this long for subscribers to acknowledge every "
                  "reliable message before exiting.", non_negative),
    ParameterSpec("ee_pose_topic", topics.EE_POSE, "TCP pose topic.", topic_name),
    ParameterSpec("joint_states_topic", topics.JOINT_STATES, "Joint state topic.", topic_name),
    ParameterSpec("instruction_topic", topics.INSTRUCTION, "Instruction topic (latched).", topic_name),
    ParameterSpec("pose_command_topic", topics.POSE_COMMAND, "Commanded TCP pose topic.", topic_name),
    ParameterSpec("gripper_command_topic", topics.GRIPPER_COMMAND, "Commanded gripper openness topic.", topic_name),
    ParameterSpec("static_transforms_topic", topics.STATIC_TRANSFORMS, "Latched TransformStamped messages of the "
                  "fixed frames (also on /tf_static when tf2_msgs is installed).", topic_name),
)

# Reliable sensors: a subscriber that falls behind by less than the history gets every message
# (states and commands: 10 s at 100 Hz; images, about 3 s at 15 Hz).
RELIABLE_STATES = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
RELIABLE_IMAGES = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
# Every transform stays available to late subscribers (one message per transform).
#: /clock as rclpy's time source subscribes to it (every tick delivered, none kept for late joiners).
CLOCK_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
#: Time for the first /clock message to reach the subscribers before anything stamped follows.
CLOCK_SETTLE_S = 0.3
LATCHED_TRANSFORMS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Interrupted(Exception):
    """The node was asked to shut down (SIGINT / SIGTERM) during the recording."""


class DemoRobotNode(Node):
    def __init__(self) -> None:
        super().__init__("demo_robot")
        self.params = declare_and_validate(self, PARAMETERS)
        p = self.params
        self.schedule = SensorSchedule(state_rate_hz=p["state_rate_hz"], camera_rate_hz=p["camera_rate_hz"],
                                       physics_hz=PHYSICS_HZ, control_hz=CONTROL_HZ)
        self.jobs = demo_jobs(task_names(p["tasks"]), p["episodes_per_task"], p["seed"], p["paraphrases"],
                              p["scene_variation"])
        self.env = make_play_table("embedded", seed=p["seed"], image_size_static=p["static_image_size"],
                                   image_size_gripper=p["gripper_image_size"], render_static=False,
                                   render_gripper=False)
        reliable = p["sensor_qos"] == "reliable"
        image_qos = RELIABLE_IMAGES if reliable else qos_profile_sensor_data
        sensor_qos = RELIABLE_STATES if reliable else qos_profile_sensor_data
        self.color_publishers = {c: self.create_publisher(Image, topics.camera_color(c), image_qos) for c in CAMERAS}
        self.depth_publishers = {c: self.create_publisher(Image, topics.camera_depth(c), image_qos) for c in CAMERAS}
        self.info_publishers = {c: self.create_publisher(CameraInfo, topics.camera_info(c), image_qos)
                                for c in CAMERAS}
        self.joint_publisher = self.create_publisher(JointState, p["joint_states_topic"], sensor_qos)
        self.pose_publisher = self.create_publisher(PoseStamped, p["ee_pose_topic"], sensor_qos)
        self.pose_command_publisher = self.create_publisher(PoseStamped, p["pose_command_topic"], sensor_qos)
        self.gripper_command_publisher = self.create_publisher(Float64, p["gripper_command_topic"], sensor_qos)
        self.instruction_publisher = self.create_publisher(String, p["instruction_topic"], LATCHED)
        self.transforms_publisher = self.create_publisher(TransformStamped, p["static_transforms_topic"],
                                                          LATCHED_TRANSFORMS)
        self.tf_static_publisher = (self.create_publisher(TFMessage, topics.TF_STATIC, LATCHED)
                                    if TFMessage is not None else None)
        self.clock_publisher = self.create_publisher(Clock, topics.CLOCK, CLOCK_QOS)
        self.clock_ns = -1
        self.joint_names = list(self.env.joint_names())
        self.intrinsics = {c: self.env.camera_intrinsics(c) for c in CAMERAS}
        self.start_ns = 0
        self.start_monotonic = 0.0
        self._timer = self.create_timer(0.01, self.record)
        self.get_logger().info(f"demo robot: {len(self.jobs)} episodes ({p['tasks']} x {p['episodes_per_task']}, "
                               f"seeds from {p['seed']}); states {p['state_rate_hz']:g} Hz, cameras "
                               f"{p['camera_rate_hz']:g} Hz, pause {p['pause_s']:g} s, real_time {p['real_time']}")

    def destroy_node(self) -> None:
        if hasattr(self, "env"):
            self.env.close()
        super().destroy_node()

    # ------------------------------------------------------------------------------ the run
    def record(self) -> None:
        self._timer.cancel()
        p = self.params
        try:
            self.wait_for_subscribers(p["wait_for_subscribers_s"])
            self.start_ns = time.time_ns()
            self.start_monotonic = time.monotonic()
            self.advance_clock(0.0)
            time.sleep(CLOCK_SETTLE_S)
            self.publish_static_transforms()
            robot = DemoRobot(self.env, self.jobs, oracle_for("embedded"), self, self.schedule, p["pause_s"],
                              log=self.get_logger().info)
            summary = robot.run()
        except Interrupted:
            self.get_logger().info("interrupted; exiting")
            raise SystemExit(0) from None
        wall = time.monotonic() - self.start_monotonic
        self.wait_for_acknowledgements(p["linger_s"])
        self.get_logger().info(
            f"{len(summary.published)} episodes published, {len(summary.skipped)} skipped; {summary.sim_time_s:.2f} s "
            f"of sim time in {wall:.2f} s of wall time (real-time factor {summary.sim_time_s / max(wall, 1e-9):.2f})")
        raise SystemExit(0)

    def _check_running(self) -> None:
        if not self.context.ok():
            raise Interrupted()

    def wait_for_subscribers(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        publishers = [*self.color_publishers.values(), *self.depth_publishers.values(), *self.info_publishers.values(),
                      self.joint_publisher, self.pose_publisher, self.pose_command_publisher,
                      self.gripper_command_publisher, self.clock_publisher]
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_running()
            waiting = [pub.topic_name for pub in publishers if pub.get_subscription_count() == 0]
            if not waiting:
                self.get_logger().info("every sensor and command topic has a subscriber; starting")
                return
            if time.monotonic() > deadline:
                self.get_logger().warning(f"starting after {timeout_s:g} s although nothing subscribes to {waiting}")
                return
            time.sleep(0.05)

    def wait_for_acknowledgements(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        deadline = time.monotonic() + timeout_s
        for publisher in [*self.color_publishers.values(), *self.depth_publishers.values(),
                          *self.info_publishers.values(), self.joint_publisher, self.pose_publisher,
                          self.pose_command_publisher, self.gripper_command_publisher, self.instruction_publisher]:
            left = deadline - time.monotonic()
            if left <= 0 or not publisher.wait_for_all_acked(Duration(seconds=left)):
                self.get_logger().warning(f"not every message on {publisher.topic_name} was acknowledged within "
                                          f"{timeout_s:g} s")
                return

    def stamp(self, t: float) -> Time:
        ns = self.start_ns + int(round(t * 1e9))
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def advance_clock(self, t: float) -> Time:
        """``t``'s stamp, after publishing it on /clock when the clock has not reached it yet."""
        stamp = self.stamp(t)
        ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        if ns > self.clock_ns:
            self.clock_publisher.publish(Clock(clock=stamp))
            self.clock_ns = ns
        return stamp

    def publish_static_transforms(self) -> None:
        p = self.params
        stamp = self.stamp(0.0)
        messages = [transform_message(parent, child, matrix, stamp) for parent, child, matrix in
                    env_static_transforms(self.env, p["base_frame"], p["robot_base_frame"], p["ee_frame"])]
        for message in messages:
            self.transforms_publisher.publish(message)
        frames = ", ".join(f"{m.header.frame_id} -> {m.child_frame_id}" for m in messages)
        if self.tf_static_publisher is not None:
            self.tf_static_publisher.publish(TFMessage(transforms=messages))
            self.get_logger().info(f"static transforms on {topics.TF_STATIC} and {p['static_transforms_topic']}: {frames}")
        else:
            self.get_logger().warning(f"tf2_msgs is not installed: not publishing {topics.TF_STATIC}; the static "
                                      f"transforms ({frames}) are on {p['static_transforms_topic']} "
                                      "(geometry_msgs/TransformStamped, latched)")

    # ----------------------------------------------------------------- DemoSink (DemoRobot's output)
    def pace(self, t: float) -> None:
        self._check_running()
        if not self.params["real_time"]:
            return
        while True:
            left = self.start_monotonic + t - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))
            self._check_running()

    def state(self, t: float) -> None:
        header = Header(stamp=self.advance_clock(t), frame_id=self.params["base_frame"])
        position, orientation = self.env.tcp_pose()
        self.joint_publisher.publish(JointState(header=Header(stamp=header.stamp), name=self.joint_names,
                                                position=[float(v) for v in self.env.joint_positions()],
                                                velocity=[float(v) for v in self.env.joint_velocities()]))
        self.pose_publisher.publish(PoseStamped(header=header, pose=arrays_to_pose(position, orientation)))

    def cameras(self, t: float, images: dict) -> None:
        stamp = self.advance_clock(t)
        for camera, (rgb, depth) in images.items():
            header = Header(stamp=stamp, frame_id=optical_frame(camera))
            self.info_publishers[camera].publish(intrinsics_to_camera_info(self.intrinsics[camera], rgb.shape[1],
                                                                           rgb.shape[0], header))
            self.color_publishers[camera].publish(rgb_to_image(rgb, header))
            self.depth_publishers[camera].publish(depth_to_image(depth, header))

    def command(self, t: float, action: np.ndarray) -> None:
        header = Header(stamp=self.advance_clock(t), frame_id=self.params["base_frame"])
        orientation = euler_to_quaternion(np.asarray(action[3:6], dtype=np.float64), "xyz")
        self.pose_command_publisher.publish(PoseStamped(header=header, pose=arrays_to_pose(action[:3], orientation)))
        self.gripper_command_publisher.publish(Float64(data=gripper_openness_command(action)))

    def instruction(self, t: float, text: str, job) -> None:
        self.advance_clock(t)
        self.instruction_publisher.publish(String(data=text))


def main(args: list[str] | None = None) -> None:
    run_node(DemoRobotNode, args)


if __name__ == "__main__":
    main()
