"""``openhelix bag-eval`` and ``openhelix bag-record``.

    openhelix bag-eval BAG [--rate R] [--remap from:=to ...] [--reference achieved|commanded] [--out DIR]
    openhelix bag-record OUTPUT [--storage sqlite3|mcap] [--topics T ...] [--duration S]

``bag-eval`` starts the real planner and controller processes of ``launch/bag_replay.launch.xml``
in a ROS domain of their own, plays the bag into them on the bag's clock (/clock, use_sim_time),
records what they publish (``OUT/outputs``), scores every trajectory chunk against the poses the
bag recorded afterwards and writes ``report.json``, ``report.txt``, ``report.html`` and
``errors.png`` into ``OUT``. The last line it prints is a one-line summary.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from openhelix_bringup.launch_files import resolve_launch_file, write_evaluation_config
from openhelix_core.evaluation.bag_scoring import (
    ChunkRecord,
    GoalRecord,
    PoseTrack,
    Reference,
    ScalarTrack,
    episodes_from,
    evaluate,
)
from openhelix_ros import topics
from openhelix_ros.bags.io import COMPRESSED_IMAGE, IMAGE, BagError, BagReader, BagWriter, parse_remaps
from openhelix_ros.domains import isolated_domain_id
from openhelix_ros.launching import (
    LaunchedProcesses,
    LaunchError,
    NodeDescription,
    log_tail,
    parse_launch_file,
)
from openhelix_ros.parameters import validate_values

REPLAY_LAUNCH = "bag_replay.launch.xml"
POLICY_NODES = ("planner", "controller")
STARTUP_TIMEOUT_S = 300.0


# configuration of the nodes under test ---------------------------------------------------------

def node_parameters(node: NodeDescription, specs) -> dict:
    import yaml
    values = {}
    for parameter_file in node.parameter_files:
        document = yaml.safe_load(Path(parameter_file).read_text()) or {}
        section = document.get(node.name, document.get("/**", {}))
        values.update(section.get("ros__parameters", {}))
    values.update({k: yaml.safe_load(v) for k, v in node.parameters.items() if k != "use_sim_time"})
    return validate_values(specs, values, allow_unknown=True)


class PolicySetup:
    """The topics the planner and controller of the replay launch file consume and publish."""

    def __init__(self, nodes: list[NodeDescription]) -> None:
        from openhelix_ros import controller_node, planner_node
        by_name = {n.name: n for n in nodes}
        missing = [n for n in POLICY_NODES if n not in by_name]
        if missing:
            raise LaunchError(f"{REPLAY_LAUNCH} starts no node named {missing}")
        self.nodes = [by_name[n] for n in POLICY_NODES]
        planner = node_parameters(by_name["planner"], planner_node.PARAMETERS)
        controller = node_parameters(by_name["controller"], controller_node.PARAMETERS)
        self.controller = controller
        self.image_topic = planner["image_topic"]
        self.instruction_topic = planner["instruction_topic"]
        self.goal_topic = planner["goal_topic"]
        self.chunk_topic = controller["chunk_topic"]
        self.ee_pose_topic = controller["ee_pose_topic"]
        self.joint_states_topic = controller["joint_states_topic"]
        self.pose_command_topic = controller["pose_command_topic"]
        self.gripper_command_topic = controller["gripper_command_topic"]
        self.color_topics = [topics.camera_color(c) for c in controller["camera_names"]]
        self.depth_topics = [topics.camera_depth(c) for c in controller["camera_names"]]
        self.info_topics = [topics.camera_info(c) for c in controller["camera_names"]]
        self.synchronized = set(self.color_topics + self.depth_topics + [self.ee_pose_topic])

    def inputs(self, reader: BagReader, instruction_given: bool) -> list[str]:
        """The bag topics to play; raises MissingTopicError naming any required topic it lacks."""
        available = reader.topics()
        required: dict[str, object] = {}
        play = []
        for topic in dict.fromkeys([self.image_topic] + self.color_topics + self.depth_topics):
            compressed = [t for t in (f"{topic}/compressed", f"{topic}/compressedDepth")
                          if t in available and available[t].msgtype == COMPRESSED_IMAGE]
            if topic not in available and compressed:
                play.append(compressed[0])
            else:
                required[topic] = IMAGE
                play.append(topic)
        for topic in self.info_topics:
            required[topic] = "sensor_msgs/msg/CameraInfo"
        required[self.ee_pose_topic] = "geometry_msgs/msg/PoseStamped"
        required[self.joint_states_topic] = "sensor_msgs/msg/JointState"
        if not instruction_given:
            required[self.instruction_topic] = "std_msgs/msg/String"
        reader.require(required)
        play += [t for t in required if t not in play]
        return play


# reading the ground truth ----------------------------------------------------------------------

def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def chunk_record(msg, received: float = math.nan, latency_s: float = math.nan) -> ChunkRecord:
    """From an rclpy or a rosbags TrajectoryChunk (same fields)."""
    stamp = _stamp(msg.header)
    return ChunkRecord(
        stamp=stamp, sequence=int(msg.sequence), goal_sequence=int(msg.goal_sequence),
        goal_age_s=msg.goal_age.sec + msg.goal_age.nanosec * 1e-9,
        time_from_start=np.array([d.sec + d.nanosec * 1e-9 for d in msg.time_from_start]),
        positions=np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses]).reshape(-1, 3),
        quaternions=np.array([[p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]
                              for p in msg.poses]).reshape(-1, 4),
        gripper=np.asarray(msg.gripper_openness, dtype=np.float64),
        received=received, latency_s=latency_s, latency_sim_s=received - stamp)


def load_reference(reader: BagReader, setup: PolicySetup, source: str) -> tuple[Reference, list, list]:
    """Achieved or commanded poses and gripper openness, instructions, and the bag's own
    goals and chunks (from the original run, if it recorded them)."""
    pose_topic = setup.ee_pose_topic if source == "achieved" else setup.pose_command_topic
    gripper_topic = setup.joint_states_topic if source == "achieved" else setup.gripper_command_topic
    if source == "commanded":
        reader.require({setup.pose_command_topic: "geometry_msgs/msg/PoseStamped",
                        setup.gripper_command_topic: "std_msgs/msg/Float64"})
    available = reader.topics()
    wanted = [t for t in {pose_topic, gripper_topic, setup.instruction_topic, setup.goal_topic, setup.chunk_topic}
              if t in available]
    pose_times, positions, quaternions = [], [], []
    gripper_times, gripper_values = [], []
    instructions, goals, chunks = [], [], []
    fingers = setup.controller["gripper_joint_names"]
    width = setup.controller["gripper_max_width"]
    for message in reader.messages(wanted):
        msg, t = message.message, message.timestamp_ns * 1e-9
        try:
            if message.topic == pose_topic:
                pose = msg.pose
                pose_times.append(_stamp(msg.header))
                positions.append([pose.position.x, pose.position.y, pose.position.z])
                quaternions.append([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
            elif message.topic == gripper_topic and source == "achieved":
                joints = dict(zip(msg.name, msg.position))
                if all(f in joints for f in fingers):
                    gripper_times.append(_stamp(msg.header))
                    gripper_values.append(min(max(sum(joints[f] for f in fingers) / width, 0.0), 1.0))
            elif message.topic == gripper_topic:
                gripper_times.append(t)
                gripper_values.append(float(msg.data))
            elif message.topic == setup.instruction_topic:
                instructions.append((t, msg.data))
            elif message.topic == setup.goal_topic:
                goals.append(GoalRecord(int(msg.sequence), _stamp(msg.header), received=t))
            elif message.topic == setup.chunk_topic and len(msg.poses):
                chunks.append(chunk_record(msg, received=t))
        except (AttributeError, TypeError, ValueError) as error:
            reader.stats.skip(message.topic, "invalid", f"{type(error).__name__}: {error}")
    if not pose_times:
        raise BagError(f"bag {reader.path}: no usable {pose_topic} message to score against")
    poses = PoseTrack.from_samples(pose_times, positions, quaternions)
    gripper = ScalarTrack.from_samples(gripper_times, gripper_values) if gripper_times else None
    return Reference(poses, gripper, instructions, source), goals, chunks


# the replay -------------------------------------------------------------------------------------

class ReplayOutputs:
    """Collects (and records into a bag) the goals and chunks the policy publishes during replay."""

    def __init__(self, node, setup: PolicySetup, playback, writer: BagWriter | None) -> None:
        from openhelix_msgs.msg import GoalEmbedding, TrajectoryChunk
        from openhelix_ros.qos import RELIABLE
        self.playback, self.writer, self.setup = playback, writer, setup
        self.goals: list[GoalRecord] = []
        self.chunks: list[ChunkRecord] = []
        self.observation_published: dict[int, float] = {}
        self.last_received_wall = time.monotonic()
        if writer is not None:
            writer.add_topic(setup.goal_topic, "openhelix_msgs/msg/GoalEmbedding")
            writer.add_topic(setup.chunk_topic, "openhelix_msgs/msg/TrajectoryChunk")
        node.create_subscription(GoalEmbedding, setup.goal_topic, self.on_goal, RELIABLE)
        node.create_subscription(TrajectoryChunk, setup.chunk_topic, self.on_chunk, RELIABLE)

    # Stamps go through float seconds in the controller, so they are matched to 10 us.
    def on_published(self, topic: str, stamp_ns: int | None, wall: float) -> None:
        if stamp_ns is not None and topic in self.setup.synchronized:
            key = round(stamp_ns / 10_000)
            self.observation_published[key] = max(wall, self.observation_published.get(key, 0.0))

    def published_wall(self, stamp_ns: int) -> float | None:
        key = round(stamp_ns / 10_000)
        return next((self.observation_published[k] for k in (key, key - 1, key + 1)
                     if k in self.observation_published), None)

    def _record(self, topic: str, msg) -> float:
        received = self.playback.progress_ns + self.playback.bag_start_ns
        if self.writer is not None:
            from rclpy.serialization import serialize_message
            self.writer.write(topic, received, serialize_message(msg))
        self.last_received_wall = time.monotonic()
        return received * 1e-9

    def on_goal(self, msg) -> None:
        received = self._record(self.setup.goal_topic, msg)
        self.goals.append(GoalRecord(int(msg.sequence), _stamp(msg.header), received, time.monotonic()))

    def on_chunk(self, msg) -> None:
        wall = time.monotonic()
        received = self._record(self.setup.chunk_topic, msg)
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        published = self.published_wall(stamp_ns)
        if len(msg.poses):
            self.chunks.append(chunk_record(msg, received, wall - published if published else math.nan))


def replay(options, reader: BagReader, setup: PolicySetup, play_topics: list[str], out: Path) -> ReplayOutputs:
    """Starts the policy processes, plays the bag into them and returns what they published."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from tqdm import tqdm

    from openhelix_ros.bags.player_node import BagPlayback

    domain = options.domain_id if options.domain_id is not None else isolated_domain_id()
    processes = LaunchedProcesses(setup.nodes, log_directory=out / "logs", environment={"ROS_DOMAIN_ID": str(domain)})
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("bag_eval", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    writer = BagWriter(out / "outputs", "sqlite3")
    writer.open()
    try:
        outputs_box = {}
        playback = BagPlayback(node, reader, options.rate, play_topics, publish_clock=True, tail_s=options.tail,
                               on_published=lambda *a: outputs_box["o"].on_published(*a))
        outputs = outputs_box["o"] = ReplayOutputs(node, setup, playback, writer)
        if options.instruction:
            latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_publisher(String, setup.instruction_topic, latched).publish(String(data=options.instruction))

        def check_processes() -> None:
            exited = processes.exited()
            if exited:
                name, code = next(iter(exited.items()))
                raise BagError(f"node '{name}' exited with code {code}:\n{log_tail(processes.log_files[name])}")

        # Event-driven start: both nodes subscribed to their inputs and advertising their outputs.
        print(f"bag-eval: starting {', '.join(n.name for n in setup.nodes)} in ROS domain {domain} "
              f"(logs in {out / 'logs'})", flush=True)
        wanted = {setup.image_topic: 1, setup.ee_pose_topic: 1}
        deadline = time.monotonic() + options.startup_timeout
        while True:
            check_processes()
            ready = (not playback.subscribers_missing(wanted)
                     and node.count_publishers(setup.goal_topic) > 0 and node.count_publishers(setup.chunk_topic) > 0)
            if ready:
                break
            if time.monotonic() > deadline:
                raise BagError(f"the policy nodes did not come up within {options.startup_timeout:.0f} s; "
                               f"missing subscribers on {playback.subscribers_missing(wanted)}")
            executor.spin_once(timeout_sec=0.1)
        progress = tqdm(total=playback.total, unit="msg", desc="bag-eval", disable=options.no_progress,
                        file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        shown = 0
        while not playback.done:
            wait = playback.step()
            if playback.stats.published != shown:
                progress.update(playback.stats.published - shown)
                shown = playback.stats.published
                progress.set_postfix(goals=len(outputs.goals), chunks=len(outputs.chunks), refresh=False)
            check_processes()
            executor.spin_once(timeout_sec=min(wait, 0.02))
        progress.close()
        # Let in-flight inferences arrive: wait until no output came for `drain` seconds.
        deadline = time.monotonic() + max(options.drain * 10, 30.0)
        while time.monotonic() - outputs.last_received_wall < options.drain and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        return outputs
    finally:
        codes = processes.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        writer.close()
        unclean = {n: c for n, c in codes.items() if c not in (0, -2, 130)}
        if unclean:
            print(f"bag-eval: warning: nodes stopped with codes {unclean}", file=sys.stderr)


def run_bag_eval(options: argparse.Namespace) -> int:
    bag = Path(options.bag)
    out = Path(options.out) if options.out else Path("log/bag_eval") / f"{bag.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / "outputs").exists():
        raise BagError(f"{out} already holds an evaluation; pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    launch_arguments = {}
    if options.checkpoint:
        config = write_evaluation_config(out / "config", None, options.checkpoint)
        launch_arguments = {"planner_config": str((config / "planner.yaml").resolve()),
                            "controller_config": str((config / "controller_sim.yaml").resolve())}
    if options.planner_config:
        launch_arguments["planner_config"] = str(Path(options.planner_config).resolve())
    if options.controller_config:
        launch_arguments["controller_config"] = str(Path(options.controller_config).resolve())
    nodes = parse_launch_file(resolve_launch_file(REPLAY_LAUNCH), launch_arguments)
    setup = PolicySetup(nodes)
    started = time.monotonic()
    with BagReader(bag, parse_remaps(options.remap)) as reader:
        play_topics = setup.inputs(reader, bool(options.instruction))
        reference, recorded_goals, recorded_chunks = load_reference(reader, setup, options.reference)
        print(f"bag-eval: {bag} ({reader.storage}, {(reader.end_ns - reader.start_ns) / 1e9:.1f} s): playing "
              f"{reader.count(play_topics)} messages on {len(play_topics)} topics at rate {options.rate}", flush=True)
        outputs = replay(options, reader, setup, play_topics, out)
        episodes = episodes_from(reference.instructions, reference.poses.times, options.episode_gap)
        origin = reader.start_ns * 1e-9
        common = dict(segment_s=options.segment, horizon=options.horizon, max_gap_s=options.max_gap,
                      time_origin=origin)
        report = {
            "bag": str(bag), "storage": reader.storage, "duration_s": (reader.end_ns - reader.start_ns) / 1e9,
            "rate": options.rate, "remap": options.remap, "reference": options.reference,
            "segment_s": options.segment, "horizon": options.horizon, "played_topics": play_topics,
            "input": reader.stats.to_dict(),
            "replay": evaluate(outputs.chunks, outputs.goals, reference.poses, reference.gripper, episodes, **common),
            "recorded": evaluate(recorded_chunks, recorded_goals, reference.poses, reference.gripper, episodes,
                                 **common) if recorded_chunks else None,
            "outputs_bag": str(out / "outputs"),
            "wall_time_s": time.monotonic() - started,
        }
    from openhelix_core.evaluation.bag_report import one_line_summary, text_report, write_report
    paths = write_report(report, out)
    print(text_report(report).split("\n", 1)[1])
    print(f"report: {paths['html']} (json: {paths['json']})")
    print(one_line_summary(report))
    if report["replay"]["overall"]["chunks"] == 0:
        print("bag-eval: FAILED: the controller published no trajectory chunk during the replay", file=sys.stderr)
        return 1
    return 0


def run_bag_record(options: argparse.Namespace) -> int:
    from openhelix_ros.bags import recorder_node
    arguments = ["--ros-args", "-p", f"output:={options.output}", "-p", f"storage:={options.storage}",
                 "-p", f"max_duration_s:={float(options.duration)}"]
    if options.topics:
        arguments += ["-p", f"topics:=[{','.join(options.topics)}]"]
    recorder_node.main(arguments)
    return 0


def parse_camera_mapping(pairs: list[str], form: str) -> dict[str, str]:
    """``--camera NAME=VALUE`` options -> ``{NAME: VALUE}``; ValueError naming a malformed or
    repeated one (``form`` shows the expected shape)."""
    mapping = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name or not value:
            raise ValueError(f"--camera {pair!r} is not of the form {form}")
        if name in mapping:
            raise ValueError(f"--camera {name} is given twice")
        mapping[name] = value
    return mapping


def run_bag_to_dataset(options: argparse.Namespace) -> int:
    from openhelix_ros.bags.to_dataset import ConversionOptions, convert_bags

    conversion = ConversionOptions(
        cameras=parse_camera_mapping(options.camera, "SLOT=/topic/prefix") or {"static": "/cameras/static",
                                                                                "gripper": "/cameras/gripper"},
        state_source=options.state_source, ee_pose_topic=options.ee_pose_topic,
        pose_command_topic=options.pose_command_topic, joint_states_topic=options.joint_states_topic,
        twist_topic=options.twist_topic, gripper_command_topic=options.gripper_command_topic,
        instruction_topic=options.instruction_topic, urdf=options.urdf or None, base_link=options.base_link or None,
        tip_link=options.tip_link or None, initial_pose=options.initial_pose, base_frame=options.base_frame or None,
        ee_frame=options.ee_frame, gripper_joints=options.gripper_joints, arm_joints=options.arm_joints,
        gripper_max_width=options.gripper_max_width, rate_hz=options.rate_hz, image_tolerance=options.image_tolerance,
        max_gap=options.max_gap, split=options.split, split_topic=options.split_topic, pause_s=options.pause,
        instruction=options.instruction, task=options.task, stamps=options.stamps,
        controller_config=options.controller_config or None, min_frames=options.min_frames,
        remap=parse_remaps(options.remap))
    report = convert_bags(options.bags, options.out, conversion)
    print(f"{report.frames} frames in {len(report.episodes)} episodes from {len(report.bags)} bag(s) -> {options.out}")
    print(f"  state: {report.state_source}; actions: {report.action_source}; gripper: {report.gripper_source}")
    print(f"  frames at: {report.tick_source}; episodes split by: {report.split}; base frame: {report.base_frame}")
    print("  cameras: " + "; ".join(f"{slot} from {source}" for slot, source in report.camera_sources.items()))
    skipped = sum(stats["messages_skipped"] for stats in report.messages.values())
    if skipped or report.ticks_without_data or report.pieces_too_short:
        print(f"  skipped: {skipped} unreadable message(s), {report.ticks_without_data} frame time(s) without "
              f"all data, {report.pieces_too_short} piece(s) shorter than --min-frames")
    for warning in report.warnings:
        print(f"  warning: {warning}")
    return 0


def add_bag_commands(subparsers) -> None:
    """Adds ``bag-eval``, ``bag-record`` and ``bag-to-dataset`` to the ``openhelix`` command's subparsers."""
    evaluate_parser = subparsers.add_parser(
        "bag-eval", help="replay a bag through the planner and controller and score their chunks",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate_parser.add_argument("bag", help="rosbag2 directory, or a .db3 / .mcap file")
    evaluate_parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    evaluate_parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                                 help="rename a recorded topic (repeatable)")
    evaluate_parser.add_argument("--reference", choices=("achieved", "commanded"), default="achieved",
                                 help="score against the achieved EE poses / gripper (default) or the "
                                      "controller's recorded command stream")
    evaluate_parser.add_argument("--instruction", default="", help="instruction to use if the bag has none")
    evaluate_parser.add_argument("--out", default="", help="report directory (default log/bag_eval/BAG-DATE)")
    evaluate_parser.add_argument("--segment", type=float, default=5.0, help="segment length in seconds")
    evaluate_parser.add_argument("--horizon", type=int, default=0,
                                 help="score only the first N waypoints of each chunk (0 = all)")
    evaluate_parser.add_argument("--max-gap", type=float, default=0.5,
                                 help="do not score waypoints in a recording gap longer than this (s)")
    evaluate_parser.add_argument("--episode-gap", type=float, default=2.0,
                                 help="a pause of the EE pose stream this long starts a new episode (s)")
    evaluate_parser.add_argument("--tail", type=float, default=1.0, help="bag seconds of /clock after the end")
    evaluate_parser.add_argument("--drain", type=float, default=3.0,
                                 help="after playback, wait until no output came for this long (s)")
    evaluate_parser.add_argument("--checkpoint", default="",
                                 help="trainer checkpoint (system1/ + system2/) for the planner and controller of "
                                      "the simulation parameter files; --planner-config / --controller-config "
                                      "replace them")
    evaluate_parser.add_argument("--planner-config", default="", help="planner parameter file")
    evaluate_parser.add_argument("--controller-config", default="", help="controller parameter file")
    evaluate_parser.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: a free random one)")
    evaluate_parser.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT_S)
    evaluate_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate_parser.set_defaults(run=_guarded(run_bag_eval))
    record = subparsers.add_parser("bag-record", help="record the policy's topics into a bag (rosbags)")
    record.add_argument("output", help="bag directory to create")
    record.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    record.add_argument("--topics", nargs="*", default=[], help="topics (default: the policy's inputs and outputs)")
    record.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = Ctrl-C)")
    record.set_defaults(run=_guarded(run_bag_record))
    add_bag_to_dataset_command(subparsers)


def add_bag_to_dataset_command(subparsers) -> None:
    from openhelix_ros.bags import to_dataset

    convert = subparsers.add_parser(
        "bag-to-dataset", help="turn a robot's bags into a CALVIN-layout training split",
        description=to_dataset.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directories or .db3 / .mcap files")
    convert.add_argument("--out", required=True, help="split directory to write (must not hold frames yet)")
    convert.add_argument("--camera", action="append", default=[], metavar="SLOT=PREFIX",
                         help="dataset camera (static: fixed to the base, gripper: on the hand) and its topic prefix "
                              "(PREFIX/color/image_raw, PREFIX/depth/image_raw, PREFIX/color/camera_info); repeatable "
                              "(default static=/cameras/static gripper=/cameras/gripper)")
    convert.add_argument("--state-source", choices=to_dataset.STATE_SOURCES, default="auto",
                         help="TCP pose from: a measured pose topic, the commanded poses, joint states through the "
                              "URDF, or integrated twists (auto: the first the bag allows, in that order)")
    convert.add_argument("--ee-pose-topic", default=topics.EE_POSE)
    convert.add_argument("--pose-command-topic", default=topics.POSE_COMMAND)
    convert.add_argument("--joint-states-topic", default=topics.JOINT_STATES)
    convert.add_argument("--twist-topic", default="/ee_twist")
    convert.add_argument("--gripper-command-topic", default=topics.GRIPPER_COMMAND)
    convert.add_argument("--instruction-topic", default=topics.INSTRUCTION)
    convert.add_argument("--urdf", default="", help="the arm's URDF (for --state-source joints)")
    convert.add_argument("--base-link", default="", help="URDF base link (the base frame of the poses)")
    convert.add_argument("--tip-link", default="", help="URDF TCP link")
    convert.add_argument("--initial-pose", type=float, nargs=7, default=None, metavar=("X", "Y", "Z", "QX", "QY", "QZ",
                                                                                         "QW"),
                         help="starting pose for integrated twists (default: the first measured pose)")
    convert.add_argument("--base-frame", default="", help="base frame (default: the frame of the pose messages)")
    convert.add_argument("--ee-frame", default="tcp", help="TCP frame (hand cameras in /tf_static, body twists)")
    convert.add_argument("--gripper-joints", nargs="+", default=["panda_finger_joint1", "panda_finger_joint2"],
                         help="finger joints whose positions add up to the opening width (m)")
    convert.add_argument("--arm-joints", nargs="+", default=None,
                         help="arm joints kept in robot_obs[7:14] (default: the joint states' other joints)")
    convert.add_argument("--gripper-max-width", type=float, default=0.08, help="fully open width (m)")
    convert.add_argument("--rate-hz", type=float, default=None,
                         help="frames per second (default: one frame per image of the static camera)")
    convert.add_argument("--image-tolerance", type=float, default=0.05,
                         help="largest distance of an image from its frame time (s)")
    convert.add_argument("--max-gap", type=float, default=0.1,
                         help="largest gap between two samples interpolated across (s)")
    convert.add_argument("--split", choices=to_dataset.SPLITS, default="auto",
                         help="episodes from the instruction topic, a marker topic, pauses, or one per bag "
                              "(auto: instruction when the bag has one, else none)")
    convert.add_argument("--split-topic", default="/episode", help="std_msgs/String episode markers (--split topic)")
    convert.add_argument("--pause", type=float, default=1.0,
                         help="holding still this long ends an episode (--split pause); such stretches are trimmed "
                              "from every episode's start and end (s)")
    convert.add_argument("--instruction", default="", help="instruction of episodes without one in the bag")
    convert.add_argument("--task", default="", help="task name of the annotations (default: from the instruction)")
    convert.add_argument("--stamps", choices=("header", "receive"), default="header",
                         help="place messages at their header stamps or at the recorder's receive times")
    convert.add_argument("--controller-config", default="",
                         help="controller parameter file with camera_names/camera_mounts/camera_extrinsics "
                              "(default: camera poses from /tf_static)")
    convert.add_argument("--min-frames", type=int, default=2, help="shorter episode pieces are dropped")
    convert.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                         help="rename a recorded topic (repeatable)")
    convert.set_defaults(run=_guarded(run_bag_to_dataset))


def _guarded(function):
    def run(options: argparse.Namespace) -> int:
        if getattr(options, "rate", 1.0) <= 0:
            print("openhelix: --rate must be > 0", file=sys.stderr)
            return 2
        try:
            return function(options)
        except (BagError, ValueError) as error:
            print(f"openhelix: {error}", file=sys.stderr)
            return 2
    return run
