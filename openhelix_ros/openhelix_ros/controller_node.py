"""System 1 controller node: synchronized RGB-D + EE pose + latest goal -> guarded arm commands.

Subscribes:  per camera color / registered depth / camera_info, the EE pose
             (``geometry_msgs/PoseStamped``) or, ``ee_pose_source: tf``, ``/tf`` and
             ``/tf_static`` (also for ``extrinsics_source: tf``), ``sensor_msgs/JointState``
             (gripper fingers; the arm's joints seed the IK), ``openhelix_msgs/GoalEmbedding``,
             the e-stop (``std_msgs/Bool``), when configured a deadman heartbeat
             (``std_msgs/Bool``, true while held), and ``/robot_description`` when the joint
             trajectory output has no ``urdf_path``.
Publishes:   ``openhelix_msgs/TrajectoryChunk`` (one per inference), a blended, limited
             ``geometry_msgs/PoseStamped`` command stream and ``std_msgs/Float64`` gripper
             openness at ``command_rate_hz`` -- optionally also as one-point
             ``trajectory_msgs/JointTrajectory`` messages by inverse kinematics --, goal age and
             System 1 steps per System 2 update, ``diagnostic_msgs/DiagnosticArray``, and
             optionally the consumed point cloud and the planned path for RViz / Foxglove.
Services:    ``~/engage_estop`` and ``~/clear_estop`` (``std_srvs/Trigger``); the lifecycle
             services (configure loads the model -- a trained checkpoint, a preset, or System 1
             of the published OpenHelix release when ``release_dir`` is set -- activate starts
             control, deactivate stops all motion commands at once). A model that cannot be
             loaded fails configure with the cause in the log; the node stays up, unconfigured.

No motion is commanded while any input is stale, stamped in the future, out of order, invalid
or frozen, the goal is too old, the measured TCP is outside the workspace, the deadman lapsed
or the e-stop is engaged; each cause is logged once and reported on /diagnostics, and control
resumes by itself when the inputs are valid again (except the e-stop, which stays latched
until cleared while no e-stop input asserts it). A clock jump discards everything planned.
Parameters are read-only: a running controller cannot be reconfigured from outside.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
from std_msgs.msg import Bool, Float64, Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import MarkerArray

from openhelix_core.checkpoints import LOAD_ERRORS, OPENHELIX_VARIANTS, RELEASE_ARCHITECTURES
from openhelix_core.data.calvin_format import CALVIN_CONTROL_PERIOD_S, CALVIN_CONTROL_RATE_HZ
from openhelix_core.geometry import matrix_to_quaternion, pose_to_matrix
from openhelix_core.kinematics import KinematicsError
from openhelix_core.models.system1 import SYSTEM1_PRESETS, SamplerConfig
from openhelix_core.models.system1.configuration_system1 import SAMPLERS
from openhelix_core.pointcloud import DepthFilter
from openhelix_core.runtime.chunking import MODES, CommandStream
from openhelix_core.runtime.controller import TrajectoryController
from openhelix_core.runtime.devices import limit_cpu_threads
from openhelix_core.runtime.joint_commands import JointCommandPlanner
from openhelix_core.runtime.safety import (
    EStopLatch,
    FrozenInputDetector,
    InputWatchdog,
    SafetyLimits,
    clip_chunk,
)
from openhelix_core.runtime.worker import LatestOnlyWorker
from openhelix_core.types import Goal, Observation
from openhelix_core.types import TrajectoryChunk as Chunk
from openhelix_msgs.msg import GoalEmbedding, TrajectoryChunk
from openhelix_ros import topics
from openhelix_ros.conversions import (
    InvalidMessageError,
    arrays_to_pose,
    check_image_size,
    chunk_to_markers,
    chunk_to_msg,
    goal_from_msg,
    image_fingerprint,
    points_to_pointcloud2,
    pose_to_arrays,
    seconds_to_duration,
    seconds_to_stamp,
    stamp_to_seconds,
)
from openhelix_ros.node_main import run_node
from openhelix_ros.observation import (
    TF_MOUNT,
    build_observation,
    camera_frames_from_parameters,
    camera_mounts_from_parameters,
    gripper_openness,
)
from openhelix_ros.parameters import (
    ParameterSpec,
    declare_and_validate,
    length,
    non_empty,
    non_negative,
    one_of,
    optional_path,
    optional_topic_name,
    positive,
    topic_name,
)
from openhelix_ros.qos import ANY_PUBLISHER, COMMAND_STREAM, LATCHED, LATEST_SENSOR, RELIABLE
from openhelix_ros.refusals import RefusalLog
from openhelix_ros.sync import ApproximateTimeSynchronizer
from openhelix_ros.transforms import TransformLookupError, TransformSource

UNBOUNDED = 1e6
SAMPLER_METHODS = sorted({method for methods in SAMPLERS.values() for method in methods})


PARAMETERS = (
    ParameterSpec("autostart", True, "Configure and activate on start-up (false: wait for the lifecycle services)."),
    ParameterSpec("control_rate_hz", 10.0, "Most System 1 inferences per second; each needs a new observation.",
                  positive),
    ParameterSpec("command_rate_hz", CALVIN_CONTROL_RATE_HZ, "Rate of the blended pose / gripper command stream (Hz).", positive),
    ParameterSpec("waypoint_period_s", CALVIN_CONTROL_PERIOD_S, "Time between successive waypoints of a chunk (s).", positive),
    ParameterSpec("preset", "tiny", "Model architecture when no checkpoint is given: 'tiny' (random "
                  "weights, for tests) or 'openhelix_calvin'.", one_of(*SYSTEM1_PRESETS)),
    ParameterSpec("checkpoint", "", "Directory of a trained System 1 checkpoint ('' = untrained preset)."),
    ParameterSpec("release_dir", "", "Local copy of the Hugging Face repo OpenHelix/openhelix (the folder holding "
                  "prompt_tuning/ and prompt_tuning_aux/, or one variant folder). When set, System 1 is read from "
                  "<release_variant>/policy.pth with CALVIN's position bounds, preset and checkpoint are not used, "
                  "and only goals of the same release's System 2 (model id "
                  "'openhelix/<release_variant>/<release_dir>', the path as the planner was given it) are accepted, "
                  "whatever expected_goal_model_id says ('' = no release).", optional_path),
    ParameterSpec("release_variant", "prompt_tuning_aux", "Variant of the release: 'prompt_tuning' or "
                  "'prompt_tuning_aux' (trained with the auxiliary action head).", one_of(*OPENHELIX_VARIANTS)),
    ParameterSpec("release_architecture", "openhelix", "Model size the release is read into: 'openhelix' (the "
                  "published weights) or 'tiny' (a release written from the tiny test models, for tests and smoke "
                  "runs only).", one_of(*RELEASE_ARCHITECTURES)),
    ParameterSpec("device", "cpu", "Torch device, e.g. 'cpu' or 'cuda:0'."),
    ParameterSpec("sampler", "", "System 1's sampler: '' (the model's own: DDPM for 3DDA / OpenHelix weights, "
                  "Euler for flow-matching ones), 'ddim' (deterministic, few steps, for DDPM weights), 'ddpm' or "
                  "'euler'. One that does not suit the model fails configure.", one_of("", *SAMPLER_METHODS)),
    ParameterSpec("sampling_steps", 0, "Denoising steps per System 1 call (0 = the model's diffusion_timesteps; "
                  "DDPM runs exactly those).", non_negative),
    ParameterSpec("fast_sampling", True, "Compute per call, not per denoising step, what does not depend on the "
                  "noisy trajectory (same mathematics as the original module-by-module path, which false runs)."),
    ParameterSpec("seed", 0, "Seed of the random initialisation and of the diffusion noise."),
    ParameterSpec("torch_threads", 1, "CPU threads torch may use (0 = torch's default). Several nodes "
                  "sharing a few cores run fastest with 1: idle OpenMP threads spin and starve the others.",
                  non_negative),
    ParameterSpec("camera_names", ["static", "gripper"], "Cameras in the order the model expects.", non_empty),
    ParameterSpec("camera_mounts", ["base", "ee"], "Per camera: 'base' (fixed) or 'ee' (on the hand)."),
    ParameterSpec("camera_extrinsics", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0] * 2,
                  "Per camera x y z qx qy qz qw of the optical frame in its mount frame (extrinsics_source "
                  "'parameters')."),
    ParameterSpec("extrinsics_source", "parameters", "Camera poses: 'parameters' (camera_mounts and "
                  "camera_extrinsics) or 'tf' (each camera's optical frame looked up in /tf and /tf_static at its "
                  "image's stamp, so a hand camera may move).", one_of("parameters", "tf")),
    ParameterSpec("camera_frames", ["static_camera_optical_frame", "gripper_camera_optical_frame"],
                  "extrinsics_source 'tf': per camera, its optical frame (x right, y down, z forward) in TF."),
    ParameterSpec("ee_pose_source", "topic", "The measured TCP: 'topic' (PoseStamped on ee_pose_topic, "
                  "synchronized with the images) or 'tf' (tcp_frame in base_frame from TF at the images' stamp).",
                  one_of("topic", "tf")),
    ParameterSpec("tcp_frame", "tcp", "TF frame of the TCP (ee_pose_source 'tf'; default IK tip link).", non_empty),
    ParameterSpec("max_transform_age_s", 0.1, "A moving frame whose newest transform is older than the time it is "
                  "looked up for by more than this is refused, and so is the observation (s).", non_negative),
    ParameterSpec("sync_slop_s", 0.02, "Largest stamp spread of one synchronized observation (s).", positive),
    ParameterSpec("sync_queue_size", 10, "Messages kept per input while synchronizing.", positive),
    ParameterSpec("gripper_joint_names", ["panda_finger_joint1", "panda_finger_joint2"],
                  "Finger joints whose positions add up to the gripper opening width.", non_empty),
    ParameterSpec("gripper_max_width", 0.08, "Opening width (m) that counts as fully open.", positive),
    ParameterSpec("base_frame", "world", "Frame of the EE pose, the commands and the chunks.", non_empty),
    ParameterSpec("expected_goal_model_id", "", "Refuse goals from another System 2 model ('' = any; with "
                  "release_dir the release's own model id is required instead)."),
    ParameterSpec("max_goal_age_s", 3.0, "No motion when the newest goal's image is older than this (s).",
                  positive),
    ParameterSpec("max_observation_age_s", 0.5, "No motion when camera / EE / joint data are older (s).",
                  positive),
    ParameterSpec("max_chunk_latency_s", 1.0, "A chunk that arrives later than this after its observation's stamp "
                  "is dropped: its observation became stale while System 1 computed (s).", positive),
    ParameterSpec("future_stamp_tolerance_s", 0.1, "A stamp further ahead of this node's clock is invalid input "
                  "(s; covers clock offset between machines).", non_negative),
    ParameterSpec("max_clock_jump_s", 1.0, "A forward clock jump larger than this (or any backward jump) discards "
                  "all planned motion and input history (s).", positive),
    ParameterSpec("frozen_camera_timeout_s", 1.0, "No motion when a camera's image content has not changed for "
                  "this long while its stamps advance (s; 0 = off, for simulators that repeat frames).",
                  non_negative),
    ParameterSpec("max_image_width", 2048, "Larger images are invalid input (pixels).", positive),
    ParameterSpec("max_image_height", 2048, "Larger images are invalid input (pixels).", positive),
    ParameterSpec("max_measured_jump_m", 0.05, "A jump of the measured TCP larger than this between two "
                  "observations (the arm was reset or moved by hand) discards planned motion; commands start again "
                  "from the new pose (m).", positive),
    ParameterSpec("workspace_tolerance_m", 0.01, "No motion when the measured TCP is further outside the "
                  "workspace box than this (m).", non_negative),
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
    ParameterSpec("blend_mode", "ensemble", "How successive chunks combine: 'ensemble' (temporal ensembling), "
                  "'replace' (newest chunk only) or 'rtc' (real-time chunking: each chunk is denoised with the "
                  "waypoints executed during its inference held fixed, then replaces the plan).", one_of(*MODES)),
    ParameterSpec("inference_delay_s", 0.0, "Seconds added to every System 1 call, to measure what latency costs "
                  "(0 on a robot).", non_negative),
    ParameterSpec("warm_up", True, "Run System 1 once on a synthetic observation at configure, so that the first "
                  "real call is not the slow first one."),
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
    ParameterSpec("joint_states_topic", topics.JOINT_STATES, "Joint states: the arm's (they seed the IK of "
                  "joint_trajectory_topic) and the fingers' unless gripper_joint_states_topic is set.", topic_name),
    ParameterSpec("gripper_joint_states_topic", "", "Joint states holding gripper_joint_names when a separate node "
                  "publishes them (a gripper driver or adapter); '' = joint_states_topic.", optional_topic_name),
    ParameterSpec("goal_topic", topics.GOAL_EMBEDDING, "Goal embeddings from the planner.", topic_name),
    ParameterSpec("chunk_topic", topics.TRAJECTORY_CHUNK, "Where trajectory chunks are published.", topic_name),
    ParameterSpec("pose_command_topic", topics.POSE_COMMAND, "Cartesian TCP command stream.", topic_name),
    ParameterSpec("gripper_command_topic", topics.GRIPPER_COMMAND, "Gripper openness commands.", topic_name),
    ParameterSpec("joint_trajectory_topic", "", "Where each command is also published as a one-point "
                  "trajectory_msgs/JointTrajectory for ros2_control's joint_trajectory_controller, converted by "
                  "inverse kinematics seeded from joint_states ('' = off).", optional_topic_name),
    ParameterSpec("urdf_path", "", "The arm's URDF for the inverse kinematics ('' = read it from "
                  "robot_description_topic).", optional_path),
    ParameterSpec("robot_description_topic", topics.ROBOT_DESCRIPTION, "The URDF as robot_state_publisher serves "
                  "it (std_msgs/String, latched), used when urdf_path is ''.", topic_name),
    ParameterSpec("ik_base_link", "", "URDF link the inverse kinematics starts from ('' = base_frame; another "
                  "link is related to base_frame through TF).",),
    ParameterSpec("ik_tip_link", "", "URDF link the commands place ('' = tcp_frame).",),
    ParameterSpec("ik_position_tolerance_m", 0.001, "Largest TCP position error of an IK solution (m); a command "
                  "whose IK does not reach it is not sent.", positive),
    ParameterSpec("ik_orientation_tolerance_rad", 0.00873, "Largest TCP rotation error of an IK solution (rad).",
                  positive),
    ParameterSpec("ik_max_iterations", 50, "Damped least-squares iterations per IK solve at most (a solve from the "
                  "measured joints takes a few; a refused one stops early or runs them all).", positive),
)


class ControllerNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("controller")
        self.params = declare_and_validate(self, PARAMETERS)
        p = self.params
        self.cameras = (camera_frames_from_parameters(p["camera_names"], p["camera_frames"])
                        if p["extrinsics_source"] == "tf" else
                        camera_mounts_from_parameters(p["camera_names"], p["camera_mounts"], p["camera_extrinsics"]))
        self.ik_base_link = p["ik_base_link"] or p["base_frame"]
        self.ik_tip_link = p["ik_tip_link"] or p["tcp_frame"]
        self.transforms: TransformSource | None = None
        self.joint_commands: JointCommandPlanner | None = None  # the IK of joint_trajectory_topic
        self.joint_trajectory_publisher = None
        self.frame_warned: set[str] = set()  # cameras whose image frame_id differs from camera_frames
        self.limits = SafetyLimits(tuple(p["workspace_min"]), tuple(p["workspace_max"]), p["max_linear_velocity"],
                                   p["max_angular_velocity"], p["max_linear_acceleration"], p["gripper_min"],
                                   p["gripper_max"])
        self.depth_filter = DepthFilter(tuple(p["crop_min"]), tuple(p["crop_max"]), p["flying_pixel_threshold"],
                                        p["outlier_radius"], p["outlier_min_neighbors"])
        self.refusals = RefusalLog(self.get_logger())
        self.clipping = RefusalLog(self.get_logger())
        self.qos_problems = RefusalLog(self.get_logger())
        self.estop = EStopLatch()  # outlives every lifecycle transition: only clear_estop releases it
        self.system1: TrajectoryController | None = None
        self.expected_goal_model_id = p["expected_goal_model_id"]  # the release's own id with release_dir
        self.worker: LatestOnlyWorker | None = None
        self.goal: Goal | None = None
        self.active = False
        self.control_timers = []
        self.data_path = []  # (destroy function, entity) created by configure, destroyed by cleanup
        self.synchronizer: ApproximateTimeSynchronizer | None = None
        self.clock_jumps = 0
        self._reset_state()
        self._create_estop_interfaces()
        # Diagnostics in every lifecycle state: an engaged e-stop or a QoS mismatch shows before activation.
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_timer(1.0, self.publish_diagnostics)
        self.jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(seconds=p["max_clock_jump_s"]), min_backward=Duration(nanoseconds=-1),
                          on_clock_change=True),
            post_callback=self.on_time_jump)

    def _reset_state(self) -> None:
        p = self.params
        observation_age = p["max_observation_age_s"]
        self.watchdog = InputWatchdog({"goal": p["max_goal_age_s"], "observation": observation_age,
                                       "joint_states": observation_age,
                                       **({"gripper_joint_states": observation_age}
                                          if p["gripper_joint_states_topic"] else {})},
                                      p["heartbeat_timeout_s"] if p["heartbeat_topic"] else 0.0,
                                      p["future_stamp_tolerance_s"], self.estop)
        self.stream = CommandStream(self.limits, p["blend_mode"], p["execution_horizon"], p["ensemble_decay"],
                                    1.0 / p["command_rate_hz"], p["future_stamp_tolerance_s"])
        self.frozen_cameras = FrozenInputDetector(p["frozen_camera_timeout_s"])
        self._forget_inputs()
        self.chunk_sequence = 0
        self.commands_published = 0
        self.joint_commands_published = 0
        self.steps_per_goal: list[int] = []
        self.steps_since_goal = 0
        self.last_goal_age = float("nan")
        self.inference_seconds: list[float] = []
        self.reset_history = True  # System 1's proprioception history starts afresh with each activation

    def _forget_inputs(self) -> None:
        """Drops every received input and planned motion: control restarts from fresh data."""
        self.latest_observation: dict | None = None
        self.camera_infos: dict[str, CameraInfo] = {}
        self.joint_state: JointState | None = None
        self.gripper_joint_state: JointState | None = None  # with gripper_joint_states_topic
        self.ee_pose: PoseStamped | None = None
        self.last_tick_time: float | None = None
        self.was_blocked = True
        self.stream.stop()
        self.frozen_cameras.forget()
        if self.synchronizer is not None:
            self.synchronizer.clear()

    def destroy_node(self) -> None:
        """Ends the worker thread before the node goes (a call in flight is waited for, briefly)."""
        if self.worker is not None:
            self.worker.stop()
        super().destroy_node()

    # lifecycle ------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        limit_cpu_threads(p["torch_threads"])
        try:
            controller = self._load_system1()
            if p["warm_up"]:
                self.get_logger().info(f"System 1 warm-up call: {controller.warm_up():.3f} s")
        except LOAD_ERRORS as error:
            self.get_logger().error(f"cannot load System 1: {error}")
            return TransitionCallbackReturn.FAILURE
        if p["joint_trajectory_topic"] and p["urdf_path"]:
            try:
                self.joint_commands = self._joint_command_planner(p["urdf_path"])
            except (OSError, KinematicsError) as error:
                self.get_logger().error(f"cannot set up the inverse kinematics from urdf_path: {error}")
                return TransitionCallbackReturn.FAILURE
        self.system1 = controller
        self._create_data_path()
        ready = self.create_guard_condition(self.collect_chunk)
        self.data_path.append((self.destroy_guard_condition, ready))
        self.worker = LatestOnlyWorker(self._infer, ready.trigger, name="system1")
        sampler = controller.model.sampler.resolved(controller.model.config)
        self.get_logger().info(f"System 1 '{controller.model_id}' loaded; cameras {p['camera_names']}; sampler "
                               f"{sampler.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def _load_system1(self) -> TrajectoryController:
        """System 1 of the release when ``release_dir`` is set (it takes precedence, and goals are
        then accepted only from the release's System 2), else the checkpoint or the preset.
        Raises one of ``LOAD_ERRORS`` naming what failed."""
        p = self.params
        if not p["release_dir"]:
            return TrajectoryController.load(
                checkpoint=p["checkpoint"] or None, preset=p["preset"], device=p["device"], seed=p["seed"],
                waypoint_period_s=p["waypoint_period_s"], depth_filter=self.depth_filter, sampler=self._sampler())
        self.get_logger().info(f"loading System 1 of the OpenHelix release '{p['release_dir']}' "
                               f"({p['release_variant']}, architecture {p['release_architecture']}) on {p['device']}; "
                               "preset and checkpoint are not used")
        controller = TrajectoryController.from_release(
            p["release_dir"], p["release_variant"], p["release_architecture"], device=p["device"], seed=p["seed"],
            waypoint_period_s=p["waypoint_period_s"], depth_filter=self.depth_filter, sampler=self._sampler())
        self.get_logger().info(f"key mapping (system1): {controller.load_report.summary()}")
        if p["expected_goal_model_id"] not in ("", controller.model_id):
            self.get_logger().warning(f"expected_goal_model_id '{p['expected_goal_model_id']}' is replaced by the "
                                      f"release's '{controller.model_id}': with release_dir, goals are accepted only "
                                      "from the System 2 of the release whose System 1 runs here")
        self.expected_goal_model_id = controller.model_id
        return controller

    def _joint_command_planner(self, urdf: str) -> JointCommandPlanner:
        """The IK of the joint trajectory output, from a URDF path or text; raises KinematicsError or
        OSError naming the cause."""
        p = self.params
        planner = JointCommandPlanner.from_urdf(
            urdf, self.ik_base_link, self.ik_tip_link, position_tolerance_m=p["ik_position_tolerance_m"],
            orientation_tolerance_rad=p["ik_orientation_tolerance_rad"], max_iterations=p["ik_max_iterations"],
            min_duration_s=1.0 / p["command_rate_hz"])
        self.get_logger().info(f"joint trajectories on {p['joint_trajectory_topic']}: IK {self.ik_base_link} -> "
                               f"{self.ik_tip_link}, joints {list(planner.chain.joint_names)}")
        return planner

    def on_robot_description(self, msg: String) -> None:
        try:
            planner = self._joint_command_planner(msg.data)
        except KinematicsError as error:
            self.refusals.refuse("invalid_robot_description", f"ignoring robot_description: {error}")
            return
        self.refusals.clear("invalid_robot_description")
        self.joint_commands = planner

    def _sampler(self) -> SamplerConfig:
        p = self.params
        return SamplerConfig.from_options(p["sampler"], p["sampling_steps"], fast=p["fast_sampling"])

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._reset_state()
        self.goal = None
        self.active = True
        self.control_timers = [self.create_timer(1.0 / self.params["control_rate_hz"], self.control_step),
                               self.create_timer(1.0 / self.params["command_rate_hz"], self.command_step)]
        self.get_logger().info("active: commanding motion while every input is valid")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control()
        self.get_logger().info("inactive: no motion commands")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unload()
        self.get_logger().info("unconfigured: System 1 unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control()
        self._unload()
        return TransitionCallbackReturn.SUCCESS

    def _stop_control(self) -> None:
        self.active = False
        for timer in self.control_timers:
            self.destroy_timer(timer)
        self.control_timers = []
        if self.worker is not None:
            self.worker.discard()  # a chunk computed before deactivation is never executed
        self.stream.stop()

    def _unload(self) -> None:
        if self.worker is not None and not self.worker.stop():
            self.get_logger().warning("a System 1 call outlasted the worker's stop; its result is dropped")
        self.worker = None
        self._destroy_data_path()
        self.system1 = None
        self.goal = None
        self.joint_commands = None

    def _create_estop_interfaces(self) -> None:
        """The e-stop listens in every lifecycle state, from publishers of any QoS."""
        topic = self.params["estop_topic"]
        self._recent_estop_messages: list[tuple] = []
        self.create_subscription(Bool, topic, self.on_estop, ANY_PUBLISHER,
                                 event_callbacks=self._subscription_events(topic))
        # Volatile and best-effort e-stop publishers are incompatible with this latched reader by
        # design; the reader above receives them, so its incompatibility is not a problem.
        self.create_subscription(Bool, topic, self.on_estop, LATCHED,
                                 event_callbacks=SubscriptionEventCallbacks(incompatible_qos=lambda event: None))
        self.create_service(Trigger, "~/engage_estop", self.engage_estop_service)
        self.create_service(Trigger, "~/clear_estop", self.clear_estop_service)

    def _subscription_events(self, topic: str) -> SubscriptionEventCallbacks:
        return SubscriptionEventCallbacks(incompatible_qos=self._qos_reporter(
            topic, f"a publisher on {topic} offers a QoS incompatible with this node's reader"))

    def _publisher_events(self, topic: str) -> PublisherEventCallbacks:
        return PublisherEventCallbacks(incompatible_qos=self._qos_reporter(
            topic, f"a subscriber of {topic} requests a QoS this node does not offer"))

    def _qos_reporter(self, topic: str, what: str):
        def report(event) -> None:
            self.qos_problems.refuse(f"incompatible_qos {topic}", f"{what} (policy {event.last_policy_kind}): "
                                     "nothing passes between them")
        return report

    def _subscribe(self, message_type: type, topic: str, callback, qos) -> None:
        subscription = self.create_subscription(message_type, topic, callback, qos,
                                                event_callbacks=self._subscription_events(topic))
        self.data_path.append((self.destroy_subscription, subscription))

    def _publisher(self, message_type: type, topic: str, qos, lifecycle: bool = False):
        create = self.create_lifecycle_publisher if lifecycle else self.create_publisher
        publisher = create(message_type, topic, qos, event_callbacks=self._publisher_events(topic))
        self.data_path.append((self.destroy_lifecycle_publisher if lifecycle else self.destroy_publisher, publisher))
        return publisher

    def _uses_transforms(self) -> bool:
        p = self.params
        return (p["extrinsics_source"] == "tf" or p["ee_pose_source"] == "tf"
                or bool(p["joint_trajectory_topic"]) and self.ik_base_link != p["base_frame"])

    def _create_data_path(self) -> None:
        p = self.params
        if self._uses_transforms():
            self.transforms = TransformSource(self, p["max_transform_age_s"], self._report_transform,
                                              p["future_stamp_tolerance_s"])
            self.data_path.append((TransformSource.destroy, self.transforms))
            self.get_logger().info(f"transforms from {topics.TF} and {topics.TF_STATIC} "
                                   f"({self.transforms.implementation})")
        synchronized_inputs = []
        for camera in self.cameras:
            synchronized_inputs += [(("color", camera.name), Image, topics.camera_color(camera.name)),
                                    (("depth", camera.name), Image, topics.camera_depth(camera.name))]
            self._subscribe(CameraInfo, topics.camera_info(camera.name),
                            lambda msg, name=camera.name: self.camera_infos.__setitem__(name, msg), LATEST_SENSOR)
        if p["ee_pose_source"] == "topic":
            synchronized_inputs.append((("ee_pose", ""), PoseStamped, p["ee_pose_topic"]))
        self._synchronize(synchronized_inputs)
        self._subscribe(JointState, p["joint_states_topic"], self.on_joint_state, LATEST_SENSOR)
        if p["gripper_joint_states_topic"]:
            self._subscribe(JointState, p["gripper_joint_states_topic"], self.on_gripper_joint_state, LATEST_SENSOR)
        self._subscribe(GoalEmbedding, p["goal_topic"], self.on_goal, RELIABLE)
        if p["heartbeat_topic"]:
            self._subscribe(Bool, p["heartbeat_topic"], self.on_heartbeat, ANY_PUBLISHER)
        self.chunk_publisher = self._publisher(TrajectoryChunk, p["chunk_topic"], RELIABLE, lifecycle=True)
        self.pose_publisher = self._publisher(PoseStamped, p["pose_command_topic"], COMMAND_STREAM, lifecycle=True)
        self.gripper_publisher = self._publisher(Float64, p["gripper_command_topic"], COMMAND_STREAM, lifecycle=True)
        if p["joint_trajectory_topic"]:
            self.joint_trajectory_publisher = self._publisher(JointTrajectory, p["joint_trajectory_topic"],
                                                              COMMAND_STREAM, lifecycle=True)
            if not p["urdf_path"]:
                self._subscribe(String, p["robot_description_topic"], self.on_robot_description, LATCHED)
        self.goal_age_publisher = self._publisher(Float64, topics.GOAL_AGE, 10)
        self.steps_per_goal_publisher = self._publisher(Float64, topics.STEPS_PER_GOAL, 10)
        self.cloud_publisher = self._publisher(PointCloud2, topics.POLICY_POINT_CLOUD, 1)
        self.marker_publisher = self._publisher(MarkerArray, topics.POLICY_MARKERS, 1)

    def _destroy_data_path(self) -> None:
        for destroy, entity in reversed(self.data_path):
            destroy(entity)
        self.data_path = []
        self.synchronizer = None
        self.transforms = None
        self.joint_trajectory_publisher = None
        self._forget_inputs()

    def _synchronize(self, inputs: list[tuple[tuple[str, str], type, str]]) -> None:
        """Delivers approximately simultaneous camera frames and EE pose to on_synchronized.

        Uses message_filters when a full ROS install provides it, the suite's own
        implementation of the same semantics otherwise. Images larger than the node accepts
        are refused before they are queued.
        """
        queue_size, slop = self.params["sync_queue_size"], self.params["sync_slop_s"]
        keys = [key for key, _, _ in inputs]
        try:
            import message_filters
        except ImportError:
            self.synchronizer = ApproximateTimeSynchronizer(keys, queue_size, slop, self.on_synchronized)
            for key, message_type, topic in inputs:
                def on_message(msg, key=key):
                    if key[0] in ("color", "depth") and not self._image_size_ok(key, msg):
                        return
                    self.synchronizer.add(key, stamp_to_seconds(msg.header.stamp), msg)
                self._subscribe(message_type, topic, on_message, LATEST_SENSOR)
            return

        def deliver(*messages) -> None:  # message_filters hands the set over in subscriber order
            self.on_synchronized(dict(zip(keys, messages, strict=True)))

        subscribers = [message_filters.Subscriber(self, message_type, topic, qos_profile=LATEST_SENSOR)
                       for _, message_type, topic in inputs]
        self.data_path += [(self.destroy_subscription, subscriber.sub) for subscriber in subscribers]
        self.message_filters_synchronizer = message_filters.ApproximateTimeSynchronizer(subscribers, queue_size, slop)
        self.message_filters_synchronizer.registerCallback(deliver)

    # inputs ---------------------------------------------------------------------------------

    def now(self) -> float:
        return stamp_to_seconds(self.get_clock().now().to_msg())

    def _image_size_ok(self, key: tuple[str, str], msg: Image) -> bool:
        try:
            check_image_size(msg, self.params["max_image_width"], self.params["max_image_height"])
        except InvalidMessageError as error:
            self.refusals.refuse("oversized_image", f"dropping {key[0]} image of camera '{key[1]}': {error}")
            return False
        return True

    def _accept_stamp(self, name: str, stamp: float) -> bool:
        """Records an input's stamp; refuses (logged once, counted) one in the future or out of order."""
        refusal = self.watchdog.observe(name, stamp, self.now())
        for kind in ("future", "out_of_order"):
            if refusal is None or refusal.kind != kind:
                self.refusals.clear(f"{kind}_{name}")
        if refusal is not None:
            self.refusals.refuse(f"{refusal.kind}_{name}", f"dropping message: {refusal.message}")
            return False
        return True

    def on_synchronized(self, messages: dict[tuple[str, str], object]) -> None:
        """Takes one synchronized set, keyed by input name: ``("color", camera)``,
        ``("depth", camera)`` for every camera and ``("ee_pose", "")``."""
        if not all(self._image_size_ok(key, msg) for key, msg in messages.items() if key[0] in ("color", "depth")):
            return
        now = self.now()
        stamps = [stamp_to_seconds(msg.header.stamp) for msg in messages.values()]
        # Every stamp of the set must be valid (none in the future); the oldest one sets its age.
        tracked = max(stamps) if max(stamps) > now + self.watchdog.future_tolerance_s else min(stamps)
        if not self._accept_stamp("observation", tracked):
            return
        if self.params["ee_pose_source"] == "tf":
            stamp = stamp_to_seconds(messages[("color", self.cameras[0].name)].header.stamp)
            try:
                messages = {**messages, ("ee_pose", ""): self._tcp_from_transforms(stamp)}
            except TransformLookupError as error:
                self._refuse_observation(f"TCP from TF: {error}")
                return
        ee_pose = messages[("ee_pose", "")]
        try:
            position, _ = pose_to_arrays(ee_pose.pose)
        except InvalidMessageError as error:
            self._refuse_observation(f"EE pose: {error}")
            return
        self.watchdog.set_condition("ee_outside_workspace",
                                    self.limits.workspace_violation(position, self.params["workspace_tolerance_m"]))
        if self.ee_pose is not None:
            jump = float(np.linalg.norm(position - pose_to_arrays(self.ee_pose.pose)[0]))
            if jump > self.params["max_measured_jump_m"]:
                self._discard_plan(f"the measured TCP jumped {jump:.3f} m: planned motion dropped, commands start "
                                   "again from the new pose")
        self.latest_observation = messages
        self.ee_pose = ee_pose
        for camera in self.cameras:
            self.frozen_cameras.update(camera.name, (image_fingerprint(messages[("color", camera.name)]),
                                                     image_fingerprint(messages[("depth", camera.name)])), now)

    def _report_transform(self, problem: str | None) -> None:
        if problem is None:
            self.refusals.clear("invalid_transform")
        else:
            self.refusals.refuse("invalid_transform", problem)

    def _tcp_from_transforms(self, stamp: float) -> PoseStamped:
        matrix = self.transforms.lookup(self.params["base_frame"], self.params["tcp_frame"], stamp)
        return PoseStamped(header=Header(stamp=seconds_to_stamp(stamp), frame_id=self.params["base_frame"]),
                           pose=arrays_to_pose(matrix[:3, 3], matrix_to_quaternion(matrix[:3, :3])))

    def _camera_poses_from_transforms(self, messages: dict) -> dict[str, np.ndarray]:
        """Each TF-mounted camera's optical frame in base_frame at its image's stamp; raises
        InvalidMessageError naming the camera and the cause."""
        poses = {}
        for camera in self.cameras:
            if camera.mount != TF_MOUNT:
                continue
            header = messages[("color", camera.name)].header
            if header.frame_id and header.frame_id.lstrip("/") != camera.frame and camera.name not in self.frame_warned:
                self.frame_warned.add(camera.name)  # a driver's name for the frame may differ: say so once
                self.get_logger().warning(f"camera '{camera.name}': its images are in frame '{header.frame_id}' but "
                                          f"camera_frames names '{camera.frame}', whose pose is used")
            stamp = stamp_to_seconds(header.stamp)
            try:
                poses[camera.name] = self.transforms.lookup(self.params["base_frame"], camera.frame, stamp)
            except TransformLookupError as error:
                raise InvalidMessageError(f"camera '{camera.name}' pose from TF: {error}") from None
        return poses

    def on_joint_state(self, msg: JointState) -> None:
        if self._accept_stamp("joint_states", stamp_to_seconds(msg.header.stamp)):
            self.joint_state = msg

    def on_gripper_joint_state(self, msg: JointState) -> None:
        if self._accept_stamp("gripper_joint_states", stamp_to_seconds(msg.header.stamp)):
            self.gripper_joint_state = msg

    def on_goal(self, msg: GoalEmbedding) -> None:
        try:
            goal = goal_from_msg(msg, expected_dim=self.system1.goal_dim)
            expected_model = self.expected_goal_model_id
            if expected_model and goal.model_id != expected_model:
                raise InvalidMessageError(f"goal comes from System 2 '{goal.model_id}', expected '{expected_model}'")
        except InvalidMessageError as error:
            self.refusals.refuse("invalid_goal", f"ignoring goal #{msg.sequence}: {error}")
            return
        if not self._accept_stamp("goal", goal.stamp):
            return
        self.refusals.clear("invalid_goal")
        if self.goal is not None and goal.instruction != self.goal.instruction:
            self._discard_plan(f"new instruction '{goal.instruction}': motion planned for "
                               f"'{self.goal.instruction}' is dropped")
        if self.goal is not None:
            self.steps_per_goal.append(self.steps_since_goal)
            self.steps_per_goal_publisher.publish(Float64(data=float(self.steps_since_goal)))
        self.goal, self.steps_since_goal = goal, 0

    def on_estop(self, msg: Bool, info: dict) -> None:
        # The two e-stop readers deliver the same sample twice; apply each sample once, in order.
        key = (str(info.get("publisher_gid")), info.get("source_timestamp"))
        if key in self._recent_estop_messages:
            return
        self._recent_estop_messages = [*self._recent_estop_messages[-63:], key]
        was_engaged = self.estop.engaged
        self.estop.input(msg.data, self.params["estop_topic"])
        if self.estop.engaged and not was_engaged:
            self._stop_motion_now()

    def on_heartbeat(self, msg: Bool) -> None:
        if msg.data:
            self.watchdog.heartbeat(self.now())
        else:
            self.watchdog.release_deadman()

    def on_time_jump(self, jump) -> None:
        """The clock's jump event (sim time reset, /clock replayed, ROS time switched on or off)."""
        self.discard_after_clock_jump(jump.delta.nanoseconds * 1e-9)

    def discard_after_clock_jump(self, delta_s: float) -> None:
        """Nothing planned or received before a clock jump compares with the new time: start afresh."""
        self.clock_jumps += 1
        self.get_logger().warning(f"clock jumped by {delta_s:+.3f} s: discarding planned motion and input "
                                  "history; motion resumes on fresh data")
        self.watchdog.forget_history()
        self._forget_inputs()
        if self.transforms is not None:
            self.transforms.clear()
        if self.worker is not None:
            self.worker.discard()

    def engage_estop_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.estop.engage("~/engage_estop service")
        self._stop_motion_now()
        response.success, response.message = True, "e-stop engaged"
        return response

    def clear_estop_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.estop.clear()
        self.get_logger().warning(response.message if response.success else f"clear_estop refused: {response.message}")
        return response

    def _discard_plan(self, reason: str) -> None:
        self.get_logger().info(reason)
        if self.worker is not None:
            self.worker.discard()
        self.stream.stop()

    def _stop_motion_now(self) -> None:
        if self.worker is not None:
            self.worker.discard()
        self.stream.stop()
        self.was_blocked = True
        self.get_logger().error(f"e-stop engaged ({self.estop.reason}): no motion until cleared")
        self.publish_diagnostics()

    # control --------------------------------------------------------------------------------

    def motion_allowed(self, now: float) -> bool:
        """Whether motion may be commanded now; logs each blocking cause once while it lasts."""
        frozen = self.frozen_cameras.frozen(now)
        for camera in self.cameras:
            seconds = frozen.get(camera.name)
            self.watchdog.set_condition(f"frozen_camera_{camera.name}", None if seconds is None else
                                        f"camera '{camera.name}' has sent the same image for {seconds:.1f} s")
        causes = self.watchdog.blocking_causes(now)
        for cause in [c for c in self.refusals.active if c.startswith("blocked_")]:
            if cause.removeprefix("blocked_") not in causes:
                self.refusals.clear(cause)
        for cause, message in causes.items():
            self.refusals.refuse(f"blocked_{cause}", f"no motion: {message}")
        if causes:
            if not self.was_blocked:
                self.stream.stop()
                self.publish_diagnostics()
            self.was_blocked = True
            return False
        return True

    def control_step(self) -> None:
        """Hands the newest observation to System 1's worker when it is free (never waits for it)."""
        if self.worker.busy or self.goal is None:
            return
        messages, self.latest_observation = self.latest_observation, None
        now = self.now()
        if messages is None or not self.motion_allowed(now):
            return
        try:
            finger_state = self.gripper_joint_state if self.params["gripper_joint_states_topic"] else self.joint_state
            openness = gripper_openness(finger_state, self.params["gripper_joint_names"],
                                        self.params["gripper_max_width"])
            names = [camera.name for camera in self.cameras]
            observation = build_observation(
                self.cameras, [messages[("color", name)] for name in names],
                [messages[("depth", name)] for name in names],
                [self.camera_infos.get(name) for name in names], messages[("ee_pose", "")], openness,
                self._camera_poses_from_transforms(messages))
        except InvalidMessageError as error:
            self._refuse_observation(error)
            return
        committed = self._committed_waypoints(observation.stamp, now) if self.params["blend_mode"] == "rtc" else None
        self.worker.submit(InferenceJob(observation, self.goal, committed, self.reset_history,
                                        self.params["publish_point_cloud"]))
        self.reset_history = False

    def _committed_waypoints(self, observation_stamp: float, now: float) -> Chunk | None:
        """What the arm executes before this call's chunk arrives: now, plus the recent System 1 duration
        (which includes any ``inference_delay_s``)."""
        recent = self.inference_seconds[-5:]
        expected = float(np.median(recent)) if recent else self.params["inference_delay_s"]
        return self.stream.committed(observation_stamp, now + expected,
                                     self.params["waypoint_period_s"],
                                     self.system1.model.config.trajectory_length - 1)

    def _infer(self, job: "InferenceJob") -> tuple[Chunk, tuple | None]:
        """System 1 on the worker thread: nothing here touches ROS or the node's state."""
        if self.params["inference_delay_s"] > 0:
            time.sleep(self.params["inference_delay_s"])
        if job.reset_history:
            self.system1.reset()
        chunk = self.system1.act(job.observation, job.goal, committed=job.committed)
        cloud = self.system1.point_cloud(job.observation) if job.point_cloud else None
        return chunk, cloud

    def collect_chunk(self) -> None:
        """On the executor thread when System 1's worker has a result."""
        result = self.worker.take_result() if self.worker is not None else None
        if result is None:
            return
        if result.error is not None:
            if not isinstance(result.error, ValueError):
                self.get_logger().error(f"System 1 failed: {result.error!r}")
            self._refuse_observation(result.error)
            return
        self.inference_seconds = [*self.inference_seconds[-19:], result.duration_s]
        self.refusals.clear("invalid_observation")
        if not self.motion_allowed(self.now()):
            return  # e.g. the e-stop was engaged while System 1 computed
        if result.job.goal is self.goal:
            self.steps_since_goal += 1
        chunk, cloud = result.output
        self._accept_chunk(result.job.observation, chunk, cloud)

    def _refuse_observation(self, error: Exception | str) -> None:
        self.refusals.refuse("invalid_observation", f"not acting: {error}")
        # Nothing planned from earlier frames, nor computed from them now, is executed on top of bad input.
        if self.worker is not None:
            self.worker.discard()
        self.stream.stop()

    def _accept_chunk(self, observation: Observation, chunk: Chunk, cloud: tuple | None) -> None:
        """Checks, clips, blends and publishes a chunk System 1 computed from ``observation``."""
        now = self.now()
        age, limit = now - observation.stamp, self.params["max_chunk_latency_s"]
        if age > limit:
            self.refusals.refuse("stale_after_inference", f"dropping chunk: its observation is {age:.2f} s old "
                                 f"after inference (limit max_chunk_latency_s = {limit} s)")
            return
        self.refusals.clear("stale_after_inference")
        try:
            chunk, clipped = clip_chunk(chunk, self.limits)
        except ValueError as error:
            self.refusals.refuse("invalid_chunk", f"dropping chunk: {error}")
            self.stream.stop()
            return
        self.refusals.clear("invalid_chunk")
        for limit in ("workspace", "gripper"):
            if limit in clipped:
                self.clipping.refuse(limit, f"System 1 planned waypoints outside the {limit} limits: clipped")
            else:
                self.clipping.clear(limit)
        if not self.stream.add(chunk, observation.stamp, now):
            return
        self.last_goal_age = chunk.goal_age
        self.goal_age_publisher.publish(Float64(data=chunk.goal_age))
        self.chunk_sequence += 1
        header = Header(stamp=seconds_to_stamp(observation.stamp), frame_id=self.params["base_frame"])
        if self.params["publish_chunks"]:
            self.chunk_publisher.publish(chunk_to_msg(chunk, header, self.chunk_sequence))
        if self.params["publish_markers"]:
            self.marker_publisher.publish(chunk_to_markers(chunk, header))
        if cloud is not None:
            self.cloud_publisher.publish(points_to_pointcloud2(*cloud, header))

    def command_step(self) -> None:
        now = self.now()
        if self.last_tick_time is not None and now < self.last_tick_time:
            self.discard_after_clock_jump(now - self.last_tick_time)  # a clock without jump events
        self.last_tick_time = now
        if not self.params["publish_commands"] or not self.motion_allowed(now):
            return
        if "invalid_observation" in self.refusals.active:
            return
        self.was_blocked = False
        command = self.stream.command(now, *pose_to_arrays(self.ee_pose.pose))
        if command is None:
            return  # nothing planned for now: the driver holds the last command
        header = Header(stamp=seconds_to_stamp(now), frame_id=self.params["base_frame"])
        self.pose_publisher.publish(PoseStamped(header=header, pose=arrays_to_pose(command.position,
                                                                                    command.orientation)))
        self.gripper_publisher.publish(Float64(data=command.gripper_openness))
        self.commands_published += 1
        if self.joint_trajectory_publisher is not None:
            self._publish_joint_command(command.position, command.orientation, now)

    def _publish_joint_command(self, position: np.ndarray, orientation: np.ndarray, now: float) -> None:
        """The command as a one-point JointTrajectory; none (and a diagnostic) when the IK has no URDF,
        no joint state to start from, or finds no solution within tolerance."""
        p = self.params
        missing = (f"no URDF received on {p['robot_description_topic']} yet" if self.joint_commands is None else
                   f"no joint state received on {p['joint_states_topic']}" if self.joint_state is None else None)
        if missing:
            self.refusals.refuse("no_joint_command", f"no joint trajectory command: {missing}")
            return
        try:
            if self.ik_base_link != p["base_frame"]:
                target = self.transforms.lookup(self.ik_base_link, p["base_frame"], now) @ pose_to_matrix(
                    position, orientation)
                position, orientation = target[:3, 3], matrix_to_quaternion(target[:3, :3])
            command = self.joint_commands.plan(position, orientation, self.joint_state.name,
                                               self.joint_state.position)
        except KinematicsError as error:  # the IK's and the TF lookup's errors
            self.refusals.refuse("no_joint_command", f"no joint trajectory command: {error}")
            return
        self.refusals.clear("no_joint_command")
        seconds = command.time_from_start_s
        point = JointTrajectoryPoint(positions=[float(q) for q in command.positions],
                                     time_from_start=seconds_to_duration(seconds))
        # A zero stamp: joint_trajectory_controller starts the point on receipt.
        self.joint_trajectory_publisher.publish(JointTrajectory(joint_names=list(command.joint_names),
                                                                points=[point]))
        self.joint_commands_published += 1

    def publish_diagnostics(self) -> None:
        estop = self.estop.engaged
        level = DiagnosticStatus.ERROR if estop or self.qos_problems.active else \
            DiagnosticStatus.WARN if self.refusals.active else DiagnosticStatus.OK
        messages = [*self.qos_problems.active.values(), *self.refusals.active.values(),
                    *self.clipping.active.values()]
        message = "; ".join(messages) or ("acting" if self.active else "inactive" if self.system1 else "unconfigured")
        recent = self.steps_per_goal[-20:]
        goal = self.goal
        recent_inference = self.inference_seconds[-20:]
        values = {
            "active": self.active,
            "chunks_published": self.chunk_sequence,
            "commands_published": self.commands_published,
            "joint_commands_published": self.joint_commands_published,
            "goal_sequence": goal.sequence if goal else 0,
            "goal_age_s": f"{self.last_goal_age:.3f}",
            "system1_steps_per_system2_update": f"{np.mean(recent):.2f}" if recent else "nan",
            "estop": self.estop.reason or "",
            "system1_seconds_p50": f"{np.median(recent_inference):.3f}" if recent_inference else "nan",
            "clock_jumps": self.clock_jumps,
        }
        values.update({f"refused_{cause}": count for cause, count in self.refusals.counts.items()})
        values.update({f"clipped_{limit}": count for limit, count in self.clipping.counts.items()})
        values.update({cause: message for cause, message in self.qos_problems.active.items()})
        status = DiagnosticStatus(level=level, name="openhelix/controller", message=message,
                                  hardware_id=self.system1.model_id if self.system1 else "",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diagnostics_publisher.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                           status=[status]))


@dataclass(frozen=True)
class InferenceJob:
    """One System 1 call: the observation, the goal at submission, and the RTC prefix."""

    observation: Observation
    goal: Goal
    committed: Chunk | None
    reset_history: bool
    point_cloud: bool


def main(args: list[str] | None = None) -> None:
    run_node(ControllerNode, args)


if __name__ == "__main__":
    main()
