"""System 1 controller node: synchronized RGB-D + EE pose + latest goal -> guarded arm commands.

Subscribes:  per camera color / registered depth / camera_info, the EE pose
             (``geometry_msgs/PoseStamped``), ``sensor_msgs/JointState`` (gripper fingers),
             ``openhelix_msgs/GoalEmbedding``, the e-stop (``std_msgs/Bool``) and, when
             configured, a deadman heartbeat (``std_msgs/Bool``, true while held).
Publishes:   ``openhelix_msgs/TrajectoryChunk`` (one per inference), a blended, limited
             ``geometry_msgs/PoseStamped`` command stream and ``std_msgs/Float64`` gripper
             openness at ``command_rate_hz``, goal age and System 1 steps per System 2 update,
             ``diagnostic_msgs/DiagnosticArray``, and optionally the consumed point cloud and
             the planned path for RViz / Foxglove.
Services:    ``~/engage_estop`` and ``~/clear_estop`` (``std_srvs/Trigger``); the lifecycle
             services (configure loads the model, activate starts control, deactivate stops
             all motion commands at once).

No motion is commanded while any input is stale, out of order or invalid, the goal is too
old, the deadman lapsed or the e-stop is engaged; each cause is logged once and reported
on /diagnostics, and control resumes by itself when the inputs are valid again (except the
e-stop, which stays latched until cleared).
"""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import Bool, Float64, Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from openhelix_core.chunking import MODES, TrajectoryBlender
from openhelix_core.controller import TrajectoryController
from openhelix_core.models.system1 import SYSTEM1_PRESETS
from openhelix_core.pointcloud import DepthFilter
from openhelix_core.policy import DualSystemPolicy
from openhelix_core.runtime import limit_cpu_threads
from openhelix_core.safety import CommandLimiter, InputWatchdog, SafetyLimits
from openhelix_msgs.msg import GoalEmbedding, TrajectoryChunk
from openhelix_ros import topics
from openhelix_ros.conversions import (
    InvalidMessageError,
    arrays_to_pose,
    chunk_to_markers,
    chunk_to_msg,
    goal_from_msg,
    points_to_pointcloud2,
    pose_to_arrays,
    seconds_to_stamp,
    stamp_to_seconds,
)
from openhelix_ros.node_main import run_node
from openhelix_ros.observation import build_observation, camera_mounts_from_parameters, gripper_openness
from openhelix_ros.parameters import (
    ParameterSpec,
    declare_and_validate,
    length,
    non_empty,
    non_negative,
    one_of,
    optional_topic_name,
    positive,
    topic_name,
)
from openhelix_ros.qos import LATCHED, LATEST_SENSOR, RELIABLE
from openhelix_ros.refusals import RefusalLog
from openhelix_ros.sync import ApproximateTimeSynchronizer

UNBOUNDED = 1e6


PARAMETERS = (
    ParameterSpec("autostart", True, "Configure and activate on start-up (false: wait for the lifecycle services)."),
    ParameterSpec("control_rate_hz", 10.0, "Most System 1 inferences per second; each needs a new observation.",
                  positive),
    ParameterSpec("command_rate_hz", 30.0, "Rate of the blended pose / gripper command stream (Hz).", positive),
    ParameterSpec("waypoint_period_s", 1.0 / 30.0, "Time between successive waypoints of a chunk (s).", positive),
    ParameterSpec("preset", "tiny", "Model architecture when no checkpoint is given: 'tiny' (random "
                  "weights, for tests) or 'openhelix_calvin'.", one_of(*SYSTEM1_PRESETS)),
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
    ParameterSpec("base_frame", "world", "Frame of the EE pose, the commands and the chunks.", non_empty),
    ParameterSpec("expected_goal_model_id", "", "Refuse goals from another System 2 model ('' = any)."),
    ParameterSpec("max_goal_age_s", 3.0, "No motion when the newest goal's image is older than this (s).",
                  positive),
    ParameterSpec("max_observation_age_s", 0.5, "No motion when camera / EE / joint data are older (s).",
                  positive),
    ParameterSpec("heartbeat_topic", "", "Deadman input (std_msgs/Bool, true while held); '' = none.",
                  optional_topic_name),
    ParameterSpec("heartbeat_timeout_s", 0.5, "No motion when the deadman is silent this long (s).", positive),
    ParameterSpec("estop_topic", topics.ESTOP, "E-stop input (std_msgs/Bool true engages; latched).", topic_name),
    ParameterSpec("workspace_min", [-0.8, -0.8, 0.0], "Lower corner (m, base frame) of the TCP box.", length(3)),
    ParameterSpec("workspace_max", [0.8, 0.8, 1.2], "Upper corner (m, base frame) of the TCP box.", length(3)),
    ParameterSpec("max_linear_velocity", 0.25, "TCP speed limit of the commands (m/s).", positive),
    ParameterSpec("max_angular_velocity", 1.0, "TCP rotation speed limit of the commands (rad/s).", positive),
    ParameterSpec("max_linear_acceleration", 2.0, "TCP acceleration limit of the commands (m/s^2).", positive),
    ParameterSpec("gripper_min", 0.0, "Lowest gripper openness commanded (0 = closed).", non_negative),
    ParameterSpec("gripper_max", 1.0, "Highest gripper openness commanded (1 = open).", positive),
    ParameterSpec("blend_mode", "ensemble", "How successive chunks combine: 'ensemble' (temporal ensembling) "
                  "or 'replace' (newest chunk only).", one_of(*MODES)),
    ParameterSpec("execution_horizon", 20, "Waypoints of each chunk used before it expires.", positive),
    ParameterSpec("ensemble_decay", 0.01, "Temporal-ensembling weight decay per newer chunk.", non_negative),
    ParameterSpec("crop_min", [-UNBOUNDED] * 3, "Point cloud: lower corner (m, base frame) of the box kept.",
                  length(3)),
    ParameterSpec("crop_max", [UNBOUNDED] * 3, "Point cloud: upper corner of the box kept.", length(3)),
    ParameterSpec("flying_pixel_threshold", 0.0, "Reject depth jumping by more than this fraction to a "
                  "neighbour (0 = off).", non_negative),
    ParameterSpec("outlier_radius", 0.0, "Radius (m) for outlier removal (0 = off).", non_negative),
    ParameterSpec("outlier_min_neighbors", 5, "Fewer neighbours within outlier_radius: outlier.", positive),
    ParameterSpec("publish_chunks", True, "Publish each predicted chunk (a simulator or executor consumes it)."),
    ParameterSpec("publish_commands", True, "Publish the blended pose and gripper command stream."),
    ParameterSpec("publish_point_cloud", False, "Publish the point cloud System 1 consumed (costly)."),
    ParameterSpec("publish_markers", False, "Publish the planned path as a MarkerArray."),
    ParameterSpec("ee_pose_topic", topics.EE_POSE, "End-effector pose in base_frame.", topic_name),
    ParameterSpec("joint_states_topic", topics.JOINT_STATES, "Joint states including the fingers.", topic_name),
    ParameterSpec("goal_topic", topics.GOAL_EMBEDDING, "Goal embeddings from the planner.", topic_name),
    ParameterSpec("chunk_topic", topics.TRAJECTORY_CHUNK, "Where trajectory chunks are published.", topic_name),
    ParameterSpec("pose_command_topic", topics.POSE_COMMAND, "Cartesian TCP command stream.", topic_name),
    ParameterSpec("gripper_command_topic", topics.GRIPPER_COMMAND, "Gripper openness commands.", topic_name),
)


class ControllerNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("controller")
        self.params = declare_and_validate(self, PARAMETERS)
        p = self.params
        self.cameras = camera_mounts_from_parameters(p["camera_names"], p["camera_mounts"], p["camera_extrinsics"])
        self.limits = SafetyLimits(tuple(p["workspace_min"]), tuple(p["workspace_max"]), p["max_linear_velocity"],
                                   p["max_angular_velocity"], p["max_linear_acceleration"], p["gripper_min"],
                                   p["gripper_max"])
        self.depth_filter = DepthFilter(tuple(p["crop_min"]), tuple(p["crop_max"]), p["flying_pixel_threshold"],
                                        p["outlier_radius"], p["outlier_min_neighbors"])
        self.refusals = RefusalLog(self.get_logger())
        self.policy: DualSystemPolicy | None = None
        self.active = False
        self.control_timers = []
        self._reset_state()

    def _reset_state(self) -> None:
        observation_age = self.params["max_observation_age_s"]
        self.watchdog = InputWatchdog({"goal": self.params["max_goal_age_s"], "observation": observation_age,
                                       "joint_states": observation_age},
                                      self.params["heartbeat_timeout_s"] if self.params["heartbeat_topic"] else 0.0)
        self.blender = TrajectoryBlender(self.params["blend_mode"], self.params["execution_horizon"],
                                         self.params["ensemble_decay"])
        self.limiter = CommandLimiter(self.limits)
        self.latest_observation: tuple | None = None
        self.camera_infos: dict[str, CameraInfo] = {}
        self.joint_state: JointState | None = None
        self.ee_pose: PoseStamped | None = None
        self.chunk_sequence = 0
        self.commands_published = 0
        self.steps_per_goal: list[int] = []
        self.last_goal_age = float("nan")
        self.was_blocked = True

    # lifecycle ------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        limit_cpu_threads(p["torch_threads"])
        try:
            controller = TrajectoryController.load(
                checkpoint=p["checkpoint"] or None, preset=p["preset"], device=p["device"], seed=p["seed"],
                waypoint_period_s=p["waypoint_period_s"], depth_filter=self.depth_filter)
        except (OSError, ValueError) as error:
            self.get_logger().error(f"cannot load System 1: {error}")
            return TransitionCallbackReturn.FAILURE
        self.policy = DualSystemPolicy(controller)  # goals come from the planner node's messages
        self._create_interfaces()
        self.get_logger().info(f"System 1 '{controller.model_id}' loaded; cameras {p['camera_names']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._reset_state()
        self.policy.reset()
        self.active = True
        self.control_timers = [self.create_timer(1.0 / self.params["control_rate_hz"], self.control_step),
                       self.create_timer(1.0 / self.params["command_rate_hz"], self.command_step),
                       self.create_timer(1.0, self.publish_diagnostics)]
        self.get_logger().info("active: commanding motion while every input is valid")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        for timer in self.control_timers:
            self.destroy_timer(timer)
        self.control_timers = []
        self.blender.clear()
        self.get_logger().info("inactive: no motion commands")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.policy = None
        return TransitionCallbackReturn.SUCCESS

    def _create_interfaces(self) -> None:
        p = self.params
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
        self.create_subscription(Bool, p["estop_topic"], self.on_estop, LATCHED)
        if p["heartbeat_topic"]:
            self.create_subscription(Bool, p["heartbeat_topic"], self.on_heartbeat, LATEST_SENSOR)
        self.create_service(Trigger, "~/engage_estop", self.engage_estop_service)
        self.create_service(Trigger, "~/clear_estop", self.clear_estop_service)
        self.chunk_publisher = self.create_lifecycle_publisher(TrajectoryChunk, p["chunk_topic"], RELIABLE)
        self.pose_publisher = self.create_lifecycle_publisher(PoseStamped, p["pose_command_topic"], LATEST_SENSOR)
        self.gripper_publisher = self.create_lifecycle_publisher(Float64, p["gripper_command_topic"], LATEST_SENSOR)
        self.goal_age_publisher = self.create_publisher(Float64, topics.GOAL_AGE, 10)
        self.steps_per_goal_publisher = self.create_publisher(Float64, topics.STEPS_PER_GOAL, 10)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.cloud_publisher = self.create_publisher(PointCloud2, topics.POLICY_POINT_CLOUD, 1)
        self.marker_publisher = self.create_publisher(MarkerArray, topics.POLICY_MARKERS, 1)

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

    # inputs ---------------------------------------------------------------------------------

    def now(self) -> float:
        return stamp_to_seconds(self.get_clock().now().to_msg())

    def _accept_in_order(self, name: str, stamp: float) -> bool:
        problem = self.watchdog.observe(name, stamp)
        if problem:
            self.refusals.refuse(f"out_of_order_{name}", f"dropping message: {problem}")
            return False
        self.refusals.clear(f"out_of_order_{name}")
        return True

    def on_synchronized(self, *messages) -> None:
        if self._accept_in_order("observation", stamp_to_seconds(messages[0].header.stamp)):
            self.latest_observation = messages
            self.ee_pose = messages[-1]

    def on_joint_state(self, msg: JointState) -> None:
        if self._accept_in_order("joint_states", stamp_to_seconds(msg.header.stamp)):
            self.joint_state = msg

    def on_goal(self, msg: GoalEmbedding) -> None:
        try:
            goal = goal_from_msg(msg, expected_dim=self.policy.controller.goal_dim)
            expected_model = self.params["expected_goal_model_id"]
            if expected_model and goal.model_id != expected_model:
                raise InvalidMessageError(f"goal comes from System 2 '{goal.model_id}', expected '{expected_model}'")
        except InvalidMessageError as error:
            self.refusals.refuse("invalid_goal", f"ignoring goal #{msg.sequence}: {error}")
            return
        if not self._accept_in_order("goal", goal.stamp):
            return
        self.refusals.clear("invalid_goal")
        if self.policy.goal is not None:
            self.steps_per_goal.append(self.policy.steps_since_goal)
            self.steps_per_goal_publisher.publish(Float64(data=float(self.policy.steps_since_goal)))
        self.policy.set_goal(goal)

    def on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.watchdog.engage_estop(f"{self.params['estop_topic']} was set")

    def on_heartbeat(self, msg: Bool) -> None:
        if msg.data:
            self.watchdog.heartbeat(self.now())
        else:
            self.watchdog.release_deadman()

    def engage_estop_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.watchdog.engage_estop("~/engage_estop service")
        self.blender.clear()
        response.success, response.message = True, "e-stop engaged"
        return response

    def clear_estop_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was = self.watchdog.estop_reason
        self.watchdog.clear_estop()
        response.success = True
        response.message = f"e-stop cleared (was: {was})" if was else "e-stop was not engaged"
        self.get_logger().warning(response.message)
        return response

    # control --------------------------------------------------------------------------------

    def motion_allowed(self) -> bool:
        """Whether motion may be commanded now; logs each blocking cause once while it lasts."""
        causes = self.watchdog.blocking_causes(self.now())
        for cause in [c for c in self.refusals.active if c.startswith("blocked_")]:
            if cause.removeprefix("blocked_") not in causes:
                self.refusals.clear(cause)
        for cause, message in causes.items():
            self.refusals.refuse(f"blocked_{cause}", f"no motion: {message}")
        if causes:
            if not self.was_blocked:
                self.blender.clear()
                self.publish_diagnostics()
            self.was_blocked = True
            return False
        return True

    def control_step(self) -> None:
        messages, self.latest_observation = self.latest_observation, None
        if messages is None or not self.motion_allowed():
            return
        count = len(self.cameras)
        try:
            openness = gripper_openness(self.joint_state, self.params["gripper_joint_names"],
                                        self.params["gripper_max_width"])
            observation = build_observation(
                self.cameras, messages[0:2 * count:2], messages[1:2 * count:2],
                [self.camera_infos.get(camera.name) for camera in self.cameras], messages[-1], openness)
            chunk = self.policy.act(observation)
        except (InvalidMessageError, ValueError) as error:
            self.refusals.refuse("invalid_observation", f"not acting: {error}")
            self.blender.clear()  # nothing planned from earlier frames is executed on top of bad input
            return
        self.refusals.clear("invalid_observation")
        self.last_goal_age = chunk.goal_age
        self.goal_age_publisher.publish(Float64(data=chunk.goal_age))
        self.chunk_sequence += 1
        header = Header(stamp=seconds_to_stamp(observation.stamp), frame_id=self.params["base_frame"])
        self.blender.add(chunk, observation.stamp)
        if self.params["publish_chunks"]:
            self.chunk_publisher.publish(chunk_to_msg(chunk, header, self.chunk_sequence))
        if self.params["publish_markers"]:
            self.marker_publisher.publish(chunk_to_markers(chunk, header))
        if self.params["publish_point_cloud"]:
            points, colors = self.policy.controller.point_cloud(observation)
            self.cloud_publisher.publish(points_to_pointcloud2(points, colors, header))

    def command_step(self) -> None:
        if not self.params["publish_commands"] or not self.motion_allowed():
            return
        if "invalid_observation" in self.refusals.active:
            self.was_blocked = True
            return
        now = self.now()
        target = self.blender.sample(now)
        if target is None:
            return  # nothing planned for now: the driver holds the last command
        if self.was_blocked or not self.limiter.anchored:
            position, orientation = pose_to_arrays(self.ee_pose.pose)
            self.limiter.reset(position, orientation)
            self.was_blocked = False
        command = self.limiter.limit(*target, dt=1.0 / self.params["command_rate_hz"])
        header = Header(stamp=seconds_to_stamp(now), frame_id=self.params["base_frame"])
        self.pose_publisher.publish(PoseStamped(header=header, pose=arrays_to_pose(command.position,
                                                                                    command.orientation)))
        self.gripper_publisher.publish(Float64(data=command.gripper_openness))
        self.commands_published += 1

    def publish_diagnostics(self) -> None:
        estop = "blocked_estop" in self.refusals.active
        level = DiagnosticStatus.ERROR if estop else DiagnosticStatus.WARN if self.refusals.active else \
            DiagnosticStatus.OK
        message = "; ".join(self.refusals.active.values()) or ("acting" if self.active else "inactive")
        recent = self.steps_per_goal[-20:]
        goal = self.policy.goal if self.policy else None
        values = {
            "active": self.active,
            "chunks_published": self.chunk_sequence,
            "commands_published": self.commands_published,
            "goal_sequence": goal.sequence if goal else 0,
            "goal_age_s": f"{self.last_goal_age:.3f}",
            "system1_steps_per_system2_update": f"{np.mean(recent):.2f}" if recent else "nan",
            "estop": self.watchdog.estop_reason or "",
        }
        values.update({f"refused_{cause}": count for cause, count in self.refusals.counts.items()})
        status = DiagnosticStatus(level=level, name="openhelix/controller", message=message,
                                  hardware_id=self.policy.controller.model_id if self.policy else "",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diagnostics_publisher.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                           status=[status]))


def main(args: list[str] | None = None) -> None:
    run_node(ControllerNode, args)


if __name__ == "__main__":
    main()
