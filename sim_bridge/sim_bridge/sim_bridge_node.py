"""Simulator bridge node: the play-table seen through the topics of a real camera and arm.

Publishes per camera color (rgb8), registered depth (32FC1, metres) and camera_info, the
EE pose (``PoseStamped``), joint states, the instruction (latched) and its status on
``/diagnostics``. ``execution: chunks`` executes the ``openhelix_msgs/TrajectoryChunk``
messages it receives, waypoint by waypoint; ``execution: servo`` drives the arm to each
command of the controller's blended, limited stream (``/openhelix/command/ee_pose`` and
``/openhelix/command/gripper``), as a Cartesian impedance controller on a real arm does --
so that the blender, the limiter and the inference latency are part of what is evaluated;
``execution: joint_trajectory`` drives the arm joints to each ``trajectory_msgs/JointTrajectory``
target (the controller's inverse kinematics output), as ros2_control's joint_trajectory_controller
does. Like a robot's ``robot_state_publisher`` and camera drivers, it publishes the TCP on
``/tf`` (at each observation's stamp), the robot base and camera optical frames on ``/tf_static``
and the arm's URDF on ``/robot_description``.
With ``max_steps > 0`` it exits after executing that many policy waypoints.

With ``mode: evaluate`` it runs an evaluation protocol instead -- CALVIN's chains of five
(``protocol: calvin``) or single-task episodes from the training demo's held-out start states
(``protocol: tasks``): it resets the scene for each sequence, publishes each subtask's instruction, steps only when the policy has sent a
waypoint conditioned on the current instruction, or (servo) a new command (lockstep: a slow policy
loses no steps; with ``realtime`` the scene advances every tick whatever the policy does),
checks success after every step, appends one JSON line per sequence to ``results_path`` and
exits when its sequences are done.
"""
from __future__ import annotations

import json
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Header, String
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectory

from openhelix_core.data.calvin_format import CALVIN_CONTROL_RATE_HZ
from openhelix_core.geometry import pose_to_matrix
from openhelix_msgs.msg import TrajectoryChunk
from openhelix_ros import topics
from openhelix_ros.conversions import (
    InvalidMessageError,
    arrays_to_pose,
    chunk_from_msg,
    depth_to_image,
    intrinsics_to_camera_info,
    pose_to_arrays,
    rgb_to_image,
    stamp_to_seconds,
)
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
from openhelix_ros.qos import ANY_PUBLISHER, LATCHED, RELIABLE
from openhelix_ros.refusals import RefusalLog
from openhelix_ros.transforms import TF_QOS, TF_STATIC_QOS, transform_message
from openhelix_sim.demo_robot import static_transforms
from openhelix_sim.envs import make_play_table
from openhelix_sim.envs.calvin_backend import require_calvin_env
from openhelix_sim.envs.expert import SUPPORTED
from openhelix_sim.evaluation_runner import CalvinEvaluationRunner, StepOutcome, TaskEpisodeRunner, oracle_for
from openhelix_sim.execution import PANDA_ARM_JOINTS, ChunkExecutor, JointServoFollower, ServoFollower, hold_action
from openhelix_sim.task_set import DEFAULT_TASKS, EVAL_EPISODES_PER_TASK, EVAL_SEED_OFFSET, SCENE_VARIATIONS

CAMERAS = ("static", "gripper")


def task_names(value: str) -> list[str]:
    """The names of a comma-separated ``tasks`` parameter."""
    return [name.strip() for name in str(value).split(",") if name.strip()]


def task_list(value) -> str | None:
    names = task_names(value)
    if not names:
        return "must name at least one task"
    unknown = [name for name in names if name not in SUPPORTED]
    return f"unknown or unscripted task(s) {unknown}; choose from {sorted(SUPPORTED)}" if unknown else None

PARAMETERS = (
    ParameterSpec("rate_hz", CALVIN_CONTROL_RATE_HZ, "Control ticks per wall-clock second; each tick is one 1/30 s "
                  "simulator step (CALVIN: 30 Hz, 8 physics substeps each).", positive),
    ParameterSpec("max_steps", 0, "Exit after executing this many policy waypoints (0 = run forever).",
                  non_negative),
    ParameterSpec("seed", 0, "Scene seed (block poses)."),
    ParameterSpec("instruction", "open the drawer", "Instruction published (latched) for the planner.", non_empty),
    ParameterSpec("execution_horizon", 20, "Waypoints executed from each chunk before holding.", positive),
    ParameterSpec("replan_after_horizon", False, "Execute each chunk to its horizon and then take the first chunk "
                  "computed after it (3DDA's CALVIN evaluation) instead of switching to every newer chunk."),
    ParameterSpec("execution", "chunks", "'chunks': execute trajectory chunks waypoint by waypoint; 'servo': follow "
                  "the controller's pose / gripper command stream like a real arm's servo controller; "
                  "'joint_trajectory': follow its JointTrajectory targets (and gripper commands) like "
                  "joint_trajectory_controller.", one_of("chunks", "servo", "joint_trajectory")),
    ParameterSpec("realtime", False, "evaluate: advance the scene every tick even when the policy sent nothing new "
                  "(the world does not wait for the model); false = lockstep."),
    ParameterSpec("observe_within_chunks", True, "evaluate, lockstep chunk execution with replan_after_horizon: "
                  "render and publish the scene after every step (true, as a camera would), or only when a chunk "
                  "has ended and the next is needed (false: the frames in between are ones no chunk is taken from; "
                  "rendering dominates a step's cost, so this is several times faster)."),
    ParameterSpec("pose_command_topic", topics.POSE_COMMAND, "servo: the controller's TCP commands.", topic_name),
    ParameterSpec("gripper_command_topic", topics.GRIPPER_COMMAND, "servo: the controller's gripper commands.",
                  topic_name),
    ParameterSpec("joint_trajectory_topic", topics.JOINT_TRAJECTORY_COMMAND, "joint_trajectory: the controller's "
                  "joint targets.", topic_name),
    ParameterSpec("base_frame", "world", "Frame of the published poses.", non_empty),
    ParameterSpec("robot_base_frame", "panda_link0", "The arm's base link (its pose in base_frame goes to "
                  "/tf_static).", non_empty),
    ParameterSpec("tcp_frame", "tcp", "TF frame of the TCP (on /tf) and parent of the gripper camera.", non_empty),
    ParameterSpec("backend", "embedded", "Simulator: 'embedded' (PyBullet play-table of this suite) or 'calvin' "
                  "(CALVIN's own calvin_env, when installed).", one_of("embedded", "calvin")),
    ParameterSpec("calvin_dataset_path", "", "calvin backend: a CALVIN dataset split (e.g. task_ABC_D/validation) "
                  "whose .hydra config selects the scene."),
    ParameterSpec("calvin_scene", "", "calvin backend: scene A, B, C or D ('' = the dataset's)."),
    ParameterSpec("calvin_tasks_config", "", "calvin backend: CALVIN's new_playtable_tasks.yaml (task oracle; "
                  "'' = calvin_env's conf/tasks copy of it)."),
    ParameterSpec("mode", "free", "'free': run until max_steps; 'evaluate': CALVIN's evaluation protocol.",
                  one_of("free", "evaluate")),
    ParameterSpec("num_sequences", 1000, "evaluate: size of the CALVIN sequence set the sequences come from.",
                  positive),
    ParameterSpec("sequence_count", 10, "evaluate: evaluate the first this many sequences of the set.", positive),
    ParameterSpec("sequence_seed", 0, "evaluate: seed of the sequence set (CALVIN's is 0).", non_negative),
    ParameterSpec("worker_index", 0, "evaluate: this worker takes sequences i with i % num_workers == worker_index.",
                  non_negative),
    ParameterSpec("num_workers", 1, "evaluate: number of parallel bridge workers.", positive),
    ParameterSpec("protocol", "calvin", "evaluate: 'calvin' (chains of 5 from CALVIN's sequences) or 'tasks' "
                  "(single-task episodes from the training demo's start states).",
                  one_of("calvin", "tasks")),
    ParameterSpec("tasks", ",".join(DEFAULT_TASKS), "evaluate/tasks: comma-separated task names.", task_list),
    ParameterSpec("task_first_seed", EVAL_SEED_OFFSET, "evaluate/tasks: start-state seed of each task's first "
                  f"episode (seeds below {EVAL_SEED_OFFSET} are the demos' own).", non_negative),
    ParameterSpec("task_episodes", EVAL_EPISODES_PER_TASK, "evaluate/tasks: episodes (consecutive seeds) per task.", positive),
    ParameterSpec("task_scene_variation", "task", "evaluate/tasks: 'task' (fixed scene but the task's joint and the "
                  "arm) or 'full' (random scenes), as the demos were generated.", one_of(*SCENE_VARIATIONS)),
    ParameterSpec("static_image_size", 200, "Static camera image side, either backend (CALVIN: 200).", positive),
    ParameterSpec("gripper_image_size", 84, "Gripper camera image side, either backend (CALVIN: 84).", positive),
    ParameterSpec("max_steps_per_subtask", 360, "evaluate: environment steps allowed per subtask (CALVIN: 360).",
                  positive),
    ParameterSpec("results_path", "", "evaluate: JSON-lines file receiving one record per sequence."),
    ParameterSpec("ee_pose_topic", topics.EE_POSE, "Where the TCP pose is published.", topic_name),
    ParameterSpec("joint_states_topic", topics.JOINT_STATES, "Where joint states are published.", topic_name),
    ParameterSpec("instruction_topic", topics.INSTRUCTION, "Where the instruction is published.", topic_name),
    ParameterSpec("chunk_topic", topics.TRAJECTORY_CHUNK, "Trajectory chunks to execute.", topic_name),
)


class SimBridgeNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_bridge")
        self.params = declare_and_validate(self, PARAMETERS)
        p = self.params
        if p["mode"] == "evaluate" and not p["results_path"]:
            raise ValueError("mode 'evaluate' needs results_path")
        if p["worker_index"] >= p["num_workers"]:
            raise ValueError(f"worker_index {p['worker_index']} must be below num_workers {p['num_workers']}")
        self.env = self._make_env()
        self.env.reset(seed=p["seed"])
        self.executor_logic = ChunkExecutor(p["execution_horizon"], replan_after_horizon=p["replan_after_horizon"])
        self.servo = (JointServoFollower(self.env.gripper_openness(), self.env.joint_names()[:PANDA_ARM_JOINTS])
                      if p["execution"] == "joint_trajectory" else ServoFollower(self.env.gripper_openness()))
        self.action_type = "absolute" if p["execution"] == "chunks" else self.servo.action_type
        self.runner = None
        self.refusals = RefusalLog(self.get_logger())
        self.tick = 0
        self.steps_executed = 0
        self.scenes_observed = 0
        self.chunks_received = 0
        self.hold_action = hold_action(self.env, self.action_type)
        self.finished = False
        self._status_steps, self._status_time = 0, time.monotonic()

        self.color_publishers = {c: self.create_publisher(Image, topics.camera_color(c), qos_profile_sensor_data)
                                 for c in CAMERAS}
        self.depth_publishers = {c: self.create_publisher(Image, topics.camera_depth(c), qos_profile_sensor_data)
                                 for c in CAMERAS}
        self.info_publishers = {c: self.create_publisher(CameraInfo, topics.camera_info(c), qos_profile_sensor_data)
                                for c in CAMERAS}
        self.pose_publisher = self.create_publisher(PoseStamped, p["ee_pose_topic"], qos_profile_sensor_data)
        self.joint_publisher = self.create_publisher(JointState, p["joint_states_topic"], qos_profile_sensor_data)
        self.status_publisher = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.tf_publisher = self.create_publisher(TFMessage, topics.TF, TF_QOS)
        self.tf_static_publisher = self.create_publisher(TFMessage, topics.TF_STATIC, TF_STATIC_QOS)
        self.robot_description_publisher = self.create_publisher(String, topics.ROBOT_DESCRIPTION, LATCHED)
        self.robot_description_publisher.publish(String(data=self.env.robot_urdf()))
        self.tf_static_publisher.publish(TFMessage(transforms=[
            transform_message(parent, child, matrix, self.get_clock().now().to_msg())
            for parent, child, matrix in static_transforms(self.env, p["base_frame"], p["robot_base_frame"],
                                                           p["tcp_frame"])]))
        self.instruction_publisher = self.create_publisher(String, p["instruction_topic"], LATCHED)
        self.instruction = p["instruction"]
        if p["mode"] == "evaluate" and p["protocol"] == "tasks":
            episodes = [(task, p["task_first_seed"] + k) for task in task_names(p["tasks"])
                        for k in range(p["task_episodes"])]
            mine = [i for i in range(len(episodes)) if i % p["num_workers"] == p["worker_index"]]
            self.runner = TaskEpisodeRunner(self.env, episodes, mine, p["max_steps_per_subtask"],
                                            p["task_scene_variation"], oracle=self._oracle())
            self.instruction = self.runner.start_next_sequence()
            self.get_logger().info(f"evaluating {len(mine)} single-task episodes -> {p['results_path']}")
        elif p["mode"] == "evaluate":
            indices = [i for i in range(p["sequence_count"]) if i % p["num_workers"] == p["worker_index"]]
            # CALVIN reads the oracle's start info right after the reset; the embedded oracle needs
            # one physics step for contacts.
            self.runner = CalvinEvaluationRunner(self.env, indices, p["num_sequences"], p["sequence_seed"],
                                                 p["max_steps_per_subtask"], oracle=self._oracle(),
                                                 settle_steps=0 if p["backend"] == "calvin" else 1)
            self.instruction = self.runner.start_next_sequence()
            self.get_logger().info(f"evaluating {len(indices)} CALVIN sequences -> {p['results_path']}")
        self.instruction_publisher.publish(String(data=self.instruction or ""))
        if p["execution"] in ("servo", "joint_trajectory"):
            if p["execution"] == "servo":
                self.create_subscription(PoseStamped, p["pose_command_topic"], self.on_pose_command, ANY_PUBLISHER)
            else:
                self.create_subscription(JointTrajectory, p["joint_trajectory_topic"], self.on_joint_trajectory,
                                         ANY_PUBLISHER)
            self.create_subscription(Float64, p["gripper_command_topic"],
                                     lambda msg: self.servo.gripper_command(msg.data), ANY_PUBLISHER)
        else:
            self.create_subscription(TrajectoryChunk, p["chunk_topic"], self.on_chunk, RELIABLE)
        self.create_timer(1.0 / p["rate_hz"], self.step)
        self.create_timer(1.0, self.publish_status)
        self.observe()
        self.publish_observation()
        self.get_logger().info(f"{p['backend']} play-table ready (seed {p['seed']}); instruction: '{self.instruction}'")

    def destroy_node(self) -> None:
        if hasattr(self, "env"):  # absent when the constructor failed before building it
            self.env.close()
        super().destroy_node()

    def _oracle(self):
        return oracle_for(self.params["backend"], self.params["calvin_tasks_config"] or None)

    def _make_env(self):
        p = self.params
        if p["backend"] == "calvin":
            require_calvin_env()
        return make_play_table(p["backend"], seed=p["seed"], image_size_static=p["static_image_size"],
                               image_size_gripper=p["gripper_image_size"], calvin_scene=p["calvin_scene"] or None,
                               calvin_dataset=p["calvin_dataset_path"] or None)

    def on_chunk(self, msg: TrajectoryChunk) -> None:
        try:
            chunk = chunk_from_msg(msg)
        except InvalidMessageError as error:
            self.refusals.refuse("invalid_chunk", f"not executing chunk #{msg.sequence}: {error}")
            return
        self.refusals.clear("invalid_chunk")
        if self.runner is not None and chunk.goal_instruction != self.instruction:
            return  # conditioned on the previous subtask's instruction
        self.chunks_received += 1
        self.executor_logic.receive(chunk, stamp_to_seconds(msg.header.stamp), self.tick)

    def on_pose_command(self, msg: PoseStamped) -> None:
        try:
            self.servo.pose_command(*pose_to_arrays(msg.pose))
        except InvalidMessageError as error:
            self.refusals.refuse("invalid_command", f"not following pose command: {error}")

    def on_joint_trajectory(self, msg: JointTrajectory) -> None:
        """Takes the last point of each trajectory as the joint target (a streaming controller sends one)."""
        try:
            if not msg.points:
                raise ValueError("the trajectory has no points")
            self.servo.joint_command(msg.joint_names, list(msg.points[-1].positions))
        except ValueError as error:
            self.refusals.refuse("invalid_command", f"not following joint trajectory: {error}")
            return
        self.refusals.clear("invalid_command")

    def next_action(self, hold: bool):
        """This tick's action from the chunk being executed or the command stream."""
        if self.params["execution"] != "chunks":
            return self.servo.next_action(hold=hold)
        return self.executor_logic.next_action(self.tick)

    def step(self) -> None:
        if self.finished:
            return
        realtime = self.runner is None or self.params["realtime"]
        action = self.next_action(hold=realtime)
        if action is None and self.runner is not None and realtime:
            action = self.hold_action  # the world does not wait for the policy
        if self.runner is not None:
            self.evaluation_step(action)
            return
        if action is not None:
            self.hold_action = action
            self.steps_executed += 1
        self.env.step(self.hold_action, action_type=self.action_type)
        self.tick += 1
        self.observe()
        self.publish_observation()
        if 0 < self.params["max_steps"] <= self.steps_executed:
            self.finish(f"executed {self.steps_executed} policy steps in {self.tick} ticks")

    def evaluation_step(self, action) -> None:
        """Lockstep: the scene advances only on a waypoint for the current instruction (or a new
        servo command); in real time on every tick."""
        if action is None:
            if self.render_what_is_subscribed():
                self.last_obs = self.env.get_obs()
            self.publish_observation()  # same scene, new stamp: the planner and controller keep up
            return
        self.env.step(action, action_type=self.action_type)
        self.hold_action = action
        self.steps_executed += 1
        self.tick += 1
        outcome = self.runner.after_step()
        if outcome is StepOutcome.SUBTASK_SUCCEEDED:
            self.start_instruction(self.runner.instruction)
        elif outcome is StepOutcome.SEQUENCE_ENDED:
            result = self.runner.results[-1]
            with open(self.params["results_path"], "a") as results_file:
                results_file.write(json.dumps(result.to_dict()) + "\n")
            self.get_logger().info(f"sequence {result.info['sequence_index']}: {result.completed}/{len(result.tasks)} "
                                   f"({', '.join(result.tasks[:result.completed + 1])})")
            instruction = self.runner.start_next_sequence()
            if instruction is None:
                self.finish(f"evaluated {len(self.runner.results)} sequences")
                return
            self.start_instruction(instruction)
        elif self.skips_frame_within_chunk():
            return
        self.observe()
        self.publish_observation()

    def skips_frame_within_chunk(self) -> bool:
        """Lockstep with chunks executed to their horizon: no chunk is taken until the running one
        ends, so (``observe_within_chunks`` false) the scene is not observed before then."""
        p = self.params
        return (not p["observe_within_chunks"] and p["execution"] == "chunks" and p["replan_after_horizon"]
                and not p["realtime"] and self.executor_logic.next_action(self.tick) is not None)

    def start_instruction(self, instruction: str) -> None:
        self.instruction = instruction
        self.executor_logic.clear(self.tick)
        self.servo.clear(self.env.gripper_openness())
        self.hold_action = hold_action(self.env, self.action_type)
        self.instruction_publisher.publish(String(data=instruction))

    def finish(self, summary: str) -> None:
        self.finished = True
        self.publish_status()
        self.get_logger().info(f"{summary}; {self.scenes_observed} scenes observed in {self.steps_executed} steps; "
                               "exiting")
        raise SystemExit(0)

    def render_what_is_subscribed(self) -> bool:
        """Rendering dominates a step's cost (about 45 ms static, 20 ms gripper): skip unwatched cameras.

        Returns whether the set of rendered cameras changed.
        """
        changed = False
        for camera in CAMERAS:
            watched = (self.color_publishers[camera].get_subscription_count()
                       + self.depth_publishers[camera].get_subscription_count()) > 0
            changed |= getattr(self.env, f"render_{camera}") != watched
            setattr(self.env, f"render_{camera}", watched)
        return changed

    def observe(self) -> None:
        self.render_what_is_subscribed()
        self.last_obs = self.env.get_obs()
        self.scenes_observed += 1

    def publish_observation(self) -> None:
        stamp = self.get_clock().now().to_msg()
        self.executor_logic.observation_published(stamp_to_seconds(stamp), self.tick)
        obs = self.last_obs
        # Before the images: a controller looking the TCP up at an image's stamp finds it.
        position, orientation = self.env.tcp_pose()
        self.tf_publisher.publish(TFMessage(transforms=[transform_message(
            self.params["base_frame"], self.params["tcp_frame"], pose_to_matrix(position, orientation), stamp)]))
        for camera in CAMERAS:
            if f"rgb_{camera}" not in obs:
                continue
            header = Header(stamp=stamp, frame_id=f"{camera}_camera_optical_frame")
            rgb, depth = obs[f"rgb_{camera}"], obs[f"depth_{camera}"]
            self.info_publishers[camera].publish(intrinsics_to_camera_info(
                self.env.camera_intrinsics(camera), rgb.shape[1], rgb.shape[0], header))
            self.color_publishers[camera].publish(rgb_to_image(rgb, header))
            self.depth_publishers[camera].publish(depth_to_image(depth, header))
        self.pose_publisher.publish(PoseStamped(header=Header(stamp=stamp, frame_id=self.params["base_frame"]),
                                                pose=arrays_to_pose(position, orientation)))
        self.joint_publisher.publish(JointState(header=Header(stamp=stamp), name=list(self.env.joint_names()),
                                                position=[float(v) for v in self.env.joint_positions()],
                                                velocity=[float(v) for v in self.env.joint_velocities()]))

    def publish_status(self) -> None:
        now = time.monotonic()
        steps_per_s = (self.steps_executed - self._status_steps) / max(now - self._status_time, 1e-9)
        self._status_steps, self._status_time = self.steps_executed, now
        values = {"env_steps_per_s": f"{steps_per_s:.1f}", "ticks": self.tick, "steps_executed": self.steps_executed,
                  "scenes_observed": self.scenes_observed, "chunks_received": self.chunks_received,
                  "goal_sequence": self.executor_logic.goal_sequence, "finished": self.finished,
                  "instruction": self.instruction or ""}
        if self.runner is not None:
            values["sequences_done"] = len(self.runner.results)
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name="openhelix/sim_bridge",
                                  message="finished" if self.finished else "running", hardware_id="play_table",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.status_publisher.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                      status=[status]))


def main(args: list[str] | None = None) -> None:
    run_node(SimBridgeNode, args)


if __name__ == "__main__":
    main()
