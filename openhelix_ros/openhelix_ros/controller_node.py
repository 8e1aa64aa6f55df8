"""System 1 controller node: synchronized RGB-D + EE pose + latest goal -> trajectory chunks.

Subscribes:  per camera color / registered depth / camera_info, the EE pose
             (``geometry_msgs/PoseStamped``), ``sensor_msgs/JointState`` (gripper fingers) and
             ``openhelix_msgs/GoalEmbedding``.
Publishes:   ``openhelix_msgs/TrajectoryChunk`` at up to the control rate and
             ``diagnostic_msgs/DiagnosticArray`` once a second.
System 1 keeps conditioning on the last goal it received (the planner is slower).
"""
from __future__ import annotations

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header

from openhelix_core.controller import TrajectoryController
from openhelix_core.policy import DualSystemPolicy
from openhelix_core.runtime import limit_cpu_threads
from openhelix_msgs.msg import GoalEmbedding, TrajectoryChunk
from openhelix_ros import topics
from openhelix_ros.conversions import (
    InvalidMessageError,
    chunk_to_msg,
    goal_from_msg,
    seconds_to_stamp,
    stamp_to_seconds,
)
from openhelix_ros.observation import build_observation, camera_mounts_from_parameters, gripper_openness
from openhelix_ros.parameters import (
    ParameterSpec,
    declare_and_validate,
    non_empty,
    non_negative,
    one_of,
    positive,
    topic_name,
)
from openhelix_ros.qos import LATEST_SENSOR, RELIABLE
from openhelix_ros.refusals import RefusalLog
from openhelix_ros.sync import ApproximateTimeSynchronizer

PARAMETERS = (
    ParameterSpec("control_rate_hz", 10.0, "Most chunks per second; each needs a new observation.", positive),
    ParameterSpec("waypoint_period_s", 1.0 / 30.0, "Time between successive waypoints of a chunk (s).", positive),
    ParameterSpec("preset", "tiny", "Model architecture when no checkpoint is given: 'tiny' (random "
                  "weights, for tests) or 'openhelix_calvin'.", one_of("tiny", "openhelix_calvin")),
    ParameterSpec("checkpoint", "", "Directory of a trained System 1 checkpoint ('' = untrained preset)."),
    ParameterSpec("device", "cpu", "Torch device, e.g. 'cpu' or 'cuda:0'."),
    ParameterSpec("seed", 0, "Seed of the random initialisation and of the diffusion noise."),
    ParameterSpec("torch_threads", 1, "CPU threads torch may use (0 = torch's default). Several nodes "
                  "sharing a few cores run fastest with 1: idle OpenMP threads spin and starve the others.",
                  non_negative),
    ParameterSpec("camera_names", ["static", "gripper"], "Cameras in the order the model expects.", non_empty),
    ParameterSpec("camera_mounts", ["base", "ee"], "Per camera: 'base' (fixed) or 'ee' (on the hand)."),
    ParameterSpec("camera_extrinsics", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0] * 2,
                  "Per camera x y z qx qy qz qw of the optical frame in its mount frame."),
    ParameterSpec("sync_slop_s", 0.02, "Largest stamp spread of one synchronized observation (s).", positive),
    ParameterSpec("sync_queue_size", 10, "Messages kept per input while synchronizing.", positive),
    ParameterSpec("gripper_joint_names", ["panda_finger_joint1", "panda_finger_joint2"],
                  "Finger joints whose positions add up to the gripper opening width.", non_empty),
    ParameterSpec("gripper_max_width", 0.08, "Opening width (m) that counts as fully open.", positive),
    ParameterSpec("base_frame", "world", "Frame of the EE pose and of the published chunks.", non_empty),
    ParameterSpec("ee_pose_topic", topics.EE_POSE, "End-effector pose in base_frame.", topic_name),
    ParameterSpec("joint_states_topic", topics.JOINT_STATES, "Joint states including the fingers.", topic_name),
    ParameterSpec("goal_topic", topics.GOAL_EMBEDDING, "Goal embeddings from the planner.", topic_name),
    ParameterSpec("chunk_topic", topics.TRAJECTORY_CHUNK, "Where trajectory chunks are published.", topic_name),
)


class ControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("controller")
        self.params = declare_and_validate(self, PARAMETERS)
        p = self.params
        self.cameras = camera_mounts_from_parameters(p["camera_names"], p["camera_mounts"], p["camera_extrinsics"])
        self.refusals = RefusalLog(self.get_logger())
        limit_cpu_threads(self.params["torch_threads"])
        self.controller = TrajectoryController.load(
            checkpoint=p["checkpoint"] or None, preset=p["preset"], device=p["device"], seed=p["seed"],
            waypoint_period_s=p["waypoint_period_s"])
        # Two-node mode: the goals come from the planner node's messages.
        self.policy = DualSystemPolicy(self.controller)
        self.latest_observation: tuple | None = None
        self.camera_infos: dict[str, CameraInfo] = {}
        self.joint_state: JointState | None = None
        self.chunk_sequence = 0
        self.steps_per_goal: list[int] = []
        self.last_goal_age = float("nan")

        synchronized_inputs = []
        for camera in self.cameras:
            synchronized_inputs += [(Image, topics.camera_color(camera.name)), (Image, topics.camera_depth(camera.name))]
            self.create_subscription(CameraInfo, topics.camera_info(camera.name),
                                     lambda msg, name=camera.name: self.camera_infos.__setitem__(name, msg),
                                     LATEST_SENSOR)
        synchronized_inputs.append((PoseStamped, p["ee_pose_topic"]))
        self._synchronize(synchronized_inputs)
        self.create_subscription(JointState, p["joint_states_topic"], self.on_joint_state, LATEST_SENSOR)
        self.create_subscription(GoalEmbedding, p["goal_topic"], self.on_goal, RELIABLE)
        self.chunk_publisher = self.create_publisher(TrajectoryChunk, p["chunk_topic"], RELIABLE)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_timer(1.0 / p["control_rate_hz"], self.control_step)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(f"System 1 '{self.controller.model_id}' ready; cameras {p['camera_names']}")

    def _synchronize(self, inputs: list[tuple[type, str]]) -> None:
        """Delivers approximately simultaneous camera frames and EE pose to on_synchronized.

        Uses message_filters when a full ROS install provides it, the suite's own
        implementation of the same semantics otherwise.
        """
        queue_size, slop = self.params["sync_queue_size"], self.params["sync_slop_s"]
        try:
            import message_filters
        except ImportError:
            synchronizer = ApproximateTimeSynchronizer(len(inputs), queue_size, slop, self.on_synchronized)
            for index, (message_type, topic) in enumerate(inputs):
                def on_message(msg, index=index):
                    synchronizer.add(index, stamp_to_seconds(msg.header.stamp), msg)
                self.create_subscription(message_type, topic, on_message, LATEST_SENSOR)
            return
        subscribers = [message_filters.Subscriber(self, message_type, topic, qos_profile=LATEST_SENSOR)
                       for message_type, topic in inputs]
        self.message_filters_synchronizer = message_filters.ApproximateTimeSynchronizer(subscribers, queue_size, slop)
        self.message_filters_synchronizer.registerCallback(self.on_synchronized)

    def on_synchronized(self, *messages) -> None:
        self.latest_observation = messages

    def on_joint_state(self, msg: JointState) -> None:
        self.joint_state = msg

    def on_goal(self, msg: GoalEmbedding) -> None:
        try:
            goal = goal_from_msg(msg, expected_dim=self.controller.goal_dim)
        except InvalidMessageError as error:
            self.refusals.refuse("invalid_goal", f"ignoring goal #{msg.sequence}: {error}")
            return
        self.refusals.clear("invalid_goal")
        if self.policy.goal is not None:
            self.steps_per_goal.append(self.policy.steps_since_goal)
        self.policy.set_goal(goal)

    def control_step(self) -> None:
        messages, self.latest_observation = self.latest_observation, None
        if messages is None:
            return
        if self.policy.goal is None:
            self.refusals.refuse("no_goal", "waiting for the first goal embedding from the planner")
            return
        self.refusals.clear("no_goal")
        if self.joint_state is None:
            self.refusals.refuse("no_joint_state", "waiting for joint states (gripper)")
            return
        self.refusals.clear("no_joint_state")
        count = len(self.cameras)
        try:
            openness = gripper_openness(self.joint_state, self.params["gripper_joint_names"],
                                        self.params["gripper_max_width"])
            observation = build_observation(
                self.cameras, messages[0:2 * count:2], messages[1:2 * count:2],
                [self.camera_infos.get(camera.name) for camera in self.cameras], messages[-1], openness)
        except InvalidMessageError as error:
            self.refusals.refuse("invalid_observation", f"not acting: {error}")
            return
        self.refusals.clear("invalid_observation")
        try:
            chunk = self.policy.act(observation)
        except ValueError as error:
            self.refusals.refuse("rejected_by_model", f"not acting: {error}")
            return
        self.refusals.clear("rejected_by_model")
        self.last_goal_age = chunk.goal_age
        self.chunk_sequence += 1
        header = Header(stamp=seconds_to_stamp(observation.stamp), frame_id=self.params["base_frame"])
        self.chunk_publisher.publish(chunk_to_msg(chunk, header, self.chunk_sequence))

    def publish_diagnostics(self) -> None:
        level = DiagnosticStatus.WARN if self.refusals.active else DiagnosticStatus.OK
        message = "; ".join(self.refusals.active.values()) or "acting"
        recent = self.steps_per_goal[-20:]
        values = {
            "chunks_published": self.chunk_sequence,
            "goal_sequence": self.policy.goal.sequence if self.policy.goal else 0,
            "goal_age_s": f"{self.last_goal_age:.3f}",
            "system1_steps_per_system2_update": f"{sum(recent) / len(recent):.2f}" if recent else "nan",
        }
        values.update({f"refused_{cause}": count for cause, count in self.refusals.counts.items()})
        status = DiagnosticStatus(level=level, name="openhelix/controller", message=message,
                                  hardware_id=self.controller.model_id,
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diagnostics_publisher.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                           status=[status]))


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = ControllerNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
