"""``openhelix record-demos``: the scripted expert's demonstrations recorded into a rosbag, as a
real robot's would be.

    openhelix record-demos BAG [--tasks T ...] [--episodes-per-task N] [--seed S] [--storage sqlite3|mcap]
                               [--camera-rate 15] [--state-rate 100] [--pause 1.0] [--no-real-time]

Starts two processes in a free ROS domain of their own: the demo robot (``sim_bridge``'s
``demo_robot`` node: the expert on the embedded play-table, its cameras, joint states, TCP poses,
commands and instructions stamped with a simulated clock; see ``sim_bridge.demo_robot_node``)
and the recorder of ``openhelix bag-record``. The robot starts once the recorder subscribes to
its topics; when it has published every episode the recorder is stopped cleanly, and the
bag's path and message count per topic are printed.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from openhelix_ros import topics
from openhelix_ros.bags.io import STORAGES, BagReader
from openhelix_ros.domains import isolated_domain_id
from openhelix_ros.launching import LaunchedProcesses, LaunchError, NodeDescription, log_tail
from openhelix_sim.task_set import DEFAULT_TASKS

ROBOT, RECORDER = "demo_robot", "recorder"
CAMERAS = ("static", "gripper")

#: What the recorder records: the robot's sensors, instruction, commands and fixed transforms.
RECORDED_TOPICS = tuple(t for c in CAMERAS for t in (topics.camera_color(c), topics.camera_depth(c),
                                                     topics.camera_info(c))) + (
    topics.JOINT_STATES, topics.EE_POSE, topics.INSTRUCTION, topics.POSE_COMMAND, topics.GRIPPER_COMMAND,
    topics.TF_STATIC, topics.STATIC_TRANSFORMS)


def demo_nodes(options: argparse.Namespace, bag: Path) -> list[NodeDescription]:
    """The recorder (first, so that it is up when the robot waits for subscribers) and the robot."""
    recorder = NodeDescription("openhelix_ros", "recorder", RECORDER, parameters={
        "output": str(bag), "storage": options.storage, "topics": f"[{','.join(RECORDED_TOPICS)}]",
        # receive times on the robot's simulated clock (/clock), as when recording a simulator
        "use_sim_time": "true"})
    robot = NodeDescription("sim_bridge", "demo_robot", ROBOT, parameters={
        "tasks": ",".join(options.tasks), "episodes_per_task": str(options.episodes_per_task),
        "seed": str(options.seed), "state_rate_hz": repr(float(options.state_rate)),
        "camera_rate_hz": repr(float(options.camera_rate)), "pause_s": repr(float(options.pause)),
        "real_time": "false" if options.no_real_time else "true",
        "static_image_size": str(options.static_size), "gripper_image_size": str(options.gripper_size),
        "scene_variation": options.scene_variation,
        "wait_for_subscribers_s": repr(float(options.startup_timeout))})
    return [recorder, robot]


def robot_summary(log_file: Path) -> str:
    """The robot's closing log line ("N episodes published, M skipped; ..."), if it wrote one."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [re.sub(r"^\[[A-Z]+\] \[[0-9.]+\] \[[^]]*\]: ", "", line) for line in lines if "episodes published" in line]
    return found[-1] if found else ""


def run_record_demos(options: argparse.Namespace) -> int:
    bag = Path(options.bag)
    if bag.exists():
        print(f"openhelix: {bag} already exists; record-demos writes a new bag", file=sys.stderr)
        return 2
    bag.parent.mkdir(parents=True, exist_ok=True)
    log_dir = Path(options.log_dir) if options.log_dir else bag.parent / f"{bag.name}-logs"
    domain = options.domain_id if options.domain_id is not None else isolated_domain_id()
    nodes = demo_nodes(options, bag)
    print(f"openhelix record-demos: {', '.join(options.tasks)} x {options.episodes_per_task} (seeds from "
          f"{options.seed}) -> {bag} ({options.storage}); ROS domain {domain}, logs in {log_dir}", flush=True)
    started = time.monotonic()
    processes = LaunchedProcesses(nodes, log_directory=log_dir, environment={"ROS_DOMAIN_ID": str(domain)})
    failure = None
    try:
        while True:
            exited = processes.exited()
            if ROBOT in exited:
                if exited[ROBOT] != 0:
                    failure = (f"the demo robot exited with code {exited[ROBOT]}:\n"
                               f"{log_tail(processes.log_files[ROBOT], lines=40)}")
                break
            if RECORDER in exited:
                failure = (f"the recorder exited early with code {exited[RECORDER]}:\n"
                           f"{log_tail(processes.log_files[RECORDER], lines=40)}")
                break
            if time.monotonic() - started > options.timeout:
                failure = f"timed out after {options.timeout:.0f} s"
                break
            time.sleep(0.5)
        if failure is None:
            # The robot waited for every reliable message to be acknowledged before exiting: give the
            # recorder a moment to write what it has received.
            time.sleep(options.drain)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        codes = processes.stop()
    if codes.get(RECORDER) not in (0, -2, 130) and failure is None:
        failure = (f"the recorder stopped with code {codes.get(RECORDER)}:\n"
                   f"{log_tail(processes.log_files[RECORDER], lines=40)}")
    summary = robot_summary(processes.log_files[ROBOT])
    if summary:
        print(f"demo robot: {summary}")
    if bag.exists():
        print_bag_counts(bag)
    print(f"recorded in {time.monotonic() - started:.1f} s")
    if failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
        return 1
    return 0


def print_bag_counts(bag: Path) -> None:
    with BagReader(bag) as reader:
        summaries = reader.topics()
        duration = (reader.end_ns - reader.start_ns) / 1e9
        print(f"bag: {bag} ({reader.storage}, {reader.count()} messages, {duration:.1f} s)")
        for topic in sorted(summaries):
            summary = summaries[topic]
            print(f"  {summary.count:7d}  {topic} [{summary.msgtype}]")


def add_demo_commands(subparsers) -> None:
    """Adds ``record-demos`` to the ``openhelix`` command's subparsers."""
    parser = subparsers.add_parser("record-demos", help="record the scripted expert's demos into a bag, as a "
                                   "robot's drivers publish them", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", help="bag directory to create")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="tasks the expert demonstrates")
    parser.add_argument("--episodes-per-task", type=_positive_int, default=1, help="start states per task")
    parser.add_argument("--seed", type=int, default=0, help="first start-state seed (default 0)")
    parser.add_argument("--storage", choices=tuple(STORAGES), default="sqlite3")
    parser.add_argument("--camera-rate", type=float, default=15.0, help="camera rate in Hz (at most 30)")
    parser.add_argument("--state-rate", type=float, default=100.0, help="joint state / EE pose rate in Hz (at most 240)")
    parser.add_argument("--pause", type=float, default=1.0, help="sim seconds the arm holds still after each episode")
    parser.add_argument("--scene-variation", choices=("task", "full"), default="task",
                        help="start scenes, as the demos of openhelix_sim.experiments")
    parser.add_argument("--static-size", type=_positive_int, default=200, help="static camera image side (px)")
    parser.add_argument("--gripper-size", type=_positive_int, default=84, help="gripper camera image side (px)")
    parser.add_argument("--no-real-time", action="store_true",
                        help="publish as fast as the simulation goes (default: never ahead of the stamps)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: a free random one)")
    parser.add_argument("--log-dir", default="", help="node logs (default: BAG-logs beside the bag)")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="how long the robot waits for the recorder to subscribe (s)")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds the recorder keeps writing after the robot ends")
    parser.add_argument("--timeout", type=float, default=24 * 3600.0, help="give up after this many seconds")
    parser.set_defaults(run=_checked(run_record_demos))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _checked(function):
    def run(options: argparse.Namespace) -> int:
        from openhelix_sim.envs.expert import SUPPORTED

        unknown = [task for task in options.tasks if task not in SUPPORTED]
        problems = [f"unknown or unscripted task(s) {unknown}; choose from {sorted(SUPPORTED)}"] if unknown else []
        if not 0 < options.camera_rate <= 30:
            problems.append(f"--camera-rate must lie in (0, 30], got {options.camera_rate:g}")
        if not 0 < options.state_rate <= 240:
            problems.append(f"--state-rate must lie in (0, 240], got {options.state_rate:g}")
        if options.pause < 0:
            problems.append(f"--pause must be >= 0, got {options.pause:g}")
        if problems:
            print("openhelix: " + "; ".join(problems), file=sys.stderr)
            return 2
        try:
            return function(options)
        except LaunchError as error:
            print(f"openhelix: {error}", file=sys.stderr)
            return 2
    return run
