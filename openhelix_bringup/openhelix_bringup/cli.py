"""The ``openhelix`` command.

    openhelix demo [--steps N]          sim bridge + planner + controller through ROS topics
    openhelix eval-calvin [--sequences N] CALVIN's evaluation protocol through the same nodes
                          [--protocol tasks --checkpoint DIR]  single-task episodes, trained policy
                          [--backend calvin] [--shard I/N]      CALVIN's simulator; one job of an array
    openhelix eval-calvin-merge DIR... --output OUT   one report from the shards' outputs
    openhelix bag-eval BAG [--rate R]     replay a bag through the nodes and score what they produce
    openhelix bag-record OUTPUT           record the policy's topics to a bag
    openhelix bag-to-dataset BAG... --out DIR  a robot's bags -> a CALVIN-layout training split
    openhelix dataset-export SPLIT --out DIR   a CALVIN-layout split -> LeRobotDataset v3.0
    openhelix dataset-import DIR --out SPLIT   a LeRobotDataset v3.0 -> CALVIN-layout split
                          [--camera static=FEATURE ...] [--state-key F] [--action-key F]
    openhelix record-demos BAG [--tasks T ...]  the scripted expert's demos recorded as a robot's drivers publish
                          [--episodes-per-task N]  them (cameras 15 Hz, joint states 100 Hz, sim-time stamps)
    openhelix learning-table [--out DIR]  demos -> training -> every variant in process and through ROS
    openhelix launch FILE [name:=value]  run a launch/*.launch.xml file without ros2 launch
    openhelix security-keystore DIR       write an SROS2 keystore (planner / controller / sim_bridge /
                          [--domain-id N]   operator enclaves) for the split deployment
"""
from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import time
from pathlib import Path

from openhelix_bringup.bag_commands import add_bag_commands
from openhelix_bringup.dataset_commands import add_dataset_commands
from openhelix_bringup.demo_commands import add_demo_commands
from openhelix_bringup.launch_files import resolve_launch_file, write_evaluation_config
from openhelix_bringup.learning_table import add_learning_table_command
from openhelix_ros import topics
from openhelix_ros.domains import isolated_domain_id
from openhelix_ros.launching import LaunchedProcesses, LaunchError, log_tail, parse_launch_file
from openhelix_sim.experiments.cli import add_sampler_arguments, sampler_from_arguments
from openhelix_sim.task_set import DEFAULT_TASKS, EVAL_EPISODES_PER_TASK, EVAL_SEED_OFFSET, SCENE_VARIATIONS

SIM_NODE = "sim_bridge"
#: Controller parameters of --execution joint_trajectory: the IK reads the simulated arm's URDF from
#: /robot_description and relates its base link to the world frame through /tf_static.
JOINT_TRAJECTORY_CONTROLLER = {"joint_trajectory_topic": topics.JOINT_TRAJECTORY_COMMAND, "ik_base_link": "panda_link0"}


def parse_launch_arguments(pairs: list[str]) -> dict[str, str]:
    arguments = {}
    for pair in pairs:
        name, separator, value = pair.partition(":=")
        if not separator or not name:
            raise LaunchError(f"launch argument '{pair}' is not of the form name:=value")
        arguments[name] = value
    return arguments


def run_demo(options: argparse.Namespace) -> int:
    import rclpy

    from openhelix_ros.monitor import FlowMonitor

    log_dir = Path(options.log_dir) / time.strftime("demo-%Y%m%d-%H%M%S")
    nodes = parse_launch_file(resolve_launch_file("sim.launch.xml"),
                              {"max_steps": str(options.steps), "instruction": options.instruction})
    print(f"openhelix demo: starting {', '.join(n.name for n in nodes)} as separate processes "
          f"(logs in {log_dir}); stopping after {options.steps} executed steps")
    rclpy.init()
    monitor = FlowMonitor()
    processes = LaunchedProcesses(nodes, log_directory=log_dir)
    started = time.monotonic()
    next_progress = started + 5.0
    failure = None
    try:
        while True:
            rclpy.spin_once(monitor, timeout_sec=0.1)
            exited = processes.exited()
            if SIM_NODE in exited:
                break
            if exited:
                name, code = next(iter(exited.items()))
                failure = f"node '{name}' exited early with code {code}:\n{log_tail(processes.log_files[name])}"
                break
            now = time.monotonic()
            if now - started > options.timeout:
                failure = f"timed out after {options.timeout:.0f} s"
                break
            if now >= next_progress:
                next_progress = now + 5.0
                summary = monitor.summary
                print(f"  [{now - started:5.0f} s] goals {summary.goals.count}, chunks {summary.chunks.count}, "
                      f"steps executed {summary.sim_status.get('steps_executed', 0)}", flush=True)
        for _ in range(5):
            rclpy.spin_once(monitor, timeout_sec=0.1)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        codes = processes.stop()
        summary = monitor.summary
        monitor.destroy_node()
        rclpy.try_shutdown()
    print(f"\nopenhelix demo: what flowed through ROS in {time.monotonic() - started:.0f} s")
    print(summary.report())
    steps = int(summary.sim_status.get("steps_executed", 0))
    if failure is None and codes.get(SIM_NODE) != 0:
        failure = f"sim bridge exited with code {codes.get(SIM_NODE)}:\n{log_tail(processes.log_files[SIM_NODE])}"
    if failure is None and steps < options.steps:
        failure = f"only {steps} of {options.steps} steps were executed"
    if failure is None and summary.chunks_with_published_goal == 0:
        failure = "no trajectory chunk carried the sequence of a goal the planner published"
    if failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
        return 1
    print(f"\nOK: {steps} policy steps executed through sim -> planner -> controller -> sim")
    return 0


def run_eval_calvin(options: argparse.Namespace) -> int:
    """One worker (sim bridge + planner + controller, own ROS domain) per --workers; merges the results."""
    import json

    from tqdm import tqdm

    from openhelix_core.evaluation.metrics import SequenceResult

    output = Path(options.output or time.strftime("runs/calvin-eval-%Y%m%d-%H%M%S"))
    output.mkdir(parents=True, exist_ok=True)
    tasks_protocol = options.protocol == "tasks"
    total = len(options.tasks) * options.episodes_per_task if tasks_protocol else options.sequences
    shard_index, shard_count = options.shard
    shard_total = len(shard_indices(total, shard_index, shard_count))
    if shard_total == 0:
        raise LaunchError(f"--shard {shard_index}/{shard_count} holds no sequence of {total}")
    config_dir = options.config_dir
    bridge = {"execution": options.execution, **({"realtime": True} if options.realtime else {}),
              **({"execution_horizon": options.execution_horizon} if options.execution_horizon else {}),
              **({"replan_after_horizon": True} if options.replan_after_horizon else {}),
              **({"observe_within_chunks": False} if options.replan_after_horizon and not options.realtime
                 and not options.observe_within_chunks else {})}
    controller = {**({"blend_mode": options.blend_mode} if options.blend_mode else {}),
                  **({"inference_delay_s": options.inference_delay} if options.inference_delay else {}),
                  **({"control_rate_hz": options.control_rate} if options.control_rate else {}),
                  **({"execution_horizon": options.execution_horizon} if options.execution_horizon else {}),
                  **({"sampler": options.sampler} if options.sampler != "model" else {}),
                  **({"sampling_steps": options.sampling_steps} if options.sampling_steps else {}),
                  **({"fast_sampling": False} if options.reference_sampling else {}),
                  **(JOINT_TRAJECTORY_CONTROLLER if options.execution == "joint_trajectory" else {}),
                  **({"extrinsics_source": "tf", "ee_pose_source": "tf"} if options.transforms else {})}
    if options.checkpoint or len(bridge) > 1 or bridge["execution"] != "chunks" or controller:
        config_dir = str(write_evaluation_config(output / "config", options.config_dir or None, options.checkpoint,
                                                 bridge, controller))
    workers = min(options.workers, shard_total)
    domains: list[int] = []
    for _ in range(workers):
        domains.append(options.first_domain + len(domains) if options.first_domain is not None
                       else isolated_domain_id(avoid=domains))
    launches, result_files = [], []
    for worker in range(workers):
        result_files.append(output / f"worker{worker}.jsonl")
        result_files[-1].write_text("")
        stride, offset = bridge_stride(shard_index, shard_count, worker, workers)
        arguments = {"results_path": str(result_files[-1]), "sequence_count": str(options.sequences),
                     "num_workers": str(stride), "worker_index": str(offset),
                     "backend": options.backend, "calvin_scene": options.calvin_scene,
                     "calvin_dataset_path": options.calvin_dataset,
                     "max_steps_per_subtask": str(options.max_steps), "sequence_seed": str(options.seed),
                     "protocol": options.protocol, "tasks": ",".join(options.tasks),
                     "task_first_seed": str(options.first_seed), "task_episodes": str(options.episodes_per_task),
                     "task_scene_variation": options.scene_variation,
                     "static_image_size": str(options.static_size), "gripper_image_size": str(options.gripper_size)}
        if config_dir:
            arguments["config_dir"] = config_dir
        nodes = parse_launch_file(resolve_launch_file("calvin_eval.launch.xml"), arguments)
        launches.append(LaunchedProcesses(nodes, log_directory=output / f"logs-worker{worker}",
                                          environment={"ROS_DOMAIN_ID": str(domains[worker])}))
    what = f"{shard_total} single-task episodes" if tasks_protocol else f"{shard_total} sequences"
    if shard_count > 1:
        what += f" (shard {shard_index}/{shard_count} of {total})"
    print(f"openhelix eval-calvin: {what} on {workers} worker(s) (ROS domains "
          f"{', '.join(map(str, domains))}); logs and results in {output}")

    def finished_sequences() -> list[SequenceResult]:
        return [SequenceResult.from_dict(json.loads(line)) for path in result_files
                for line in path.read_text().splitlines() if line.strip()]

    failure = None
    started = time.monotonic()
    try:
        with tqdm(total=shard_total, unit="seq", desc=options.protocol, dynamic_ncols=True) as progress:
            while True:
                done = finished_sequences()
                progress.update(len(done) - progress.n)
                if done:
                    progress.set_postfix(avg_len=f"{sum(r.completed for r in done) / len(done):.2f}")
                exits = [launch.exited() for launch in launches]
                # A crashed sim bridge has exited too: look for crashes before calling the run done.
                crashed = [(index, name, code) for index, codes in enumerate(exits)
                           for name, code in codes.items() if name != SIM_NODE or code != 0]
                if crashed:
                    failure = crash_report(launches, *crashed[0])
                    break
                if all(SIM_NODE in codes for codes in exits):
                    break
                if time.monotonic() - started > options.timeout:
                    failure = f"timed out after {options.timeout:.0f} s"
                    break
                time.sleep(1.0)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        final_codes = [launch.stop() for launch in launches]
    if failure is None:
        sim_failures = [(index, SIM_NODE, codes.get(SIM_NODE)) for index, codes in enumerate(final_codes)
                        if codes.get(SIM_NODE) != 0]
        if sim_failures:
            failure = crash_report(launches, *sim_failures[0])
    results = sorted(finished_sequences(), key=lambda r: r.info["sequence_index"])
    config = {"sequences": total, "workers": workers, "seed": options.seed, "backend": options.backend,
              "calvin_scene": options.calvin_scene or "(dataset's, else D)",
              "calvin_dataset": options.calvin_dataset or "(none: calvin_env's rendering config)",
              "max_steps_per_subtask": options.max_steps, "through": "ROS topics (sim_bridge, planner, controller)",
              "protocol": options.protocol, "checkpoint": options.checkpoint or "(parameter files)",
              "checkpoint_sha256": checkpoint_digest(options.checkpoint) if options.checkpoint else None,
              "execution": options.execution, "realtime": options.realtime,
              "camera_poses_and_tcp": "TF" if options.transforms else "(parameter files)",
              "observe_within_chunks": bridge.get("observe_within_chunks", True),
              "blend_mode": options.blend_mode or "(parameter files)", "inference_delay_s": options.inference_delay,
              "control_rate_hz": options.control_rate or "(parameter files)",
              "system1_sampler": (sampler_from_arguments(options).describe()
                                  if {"sampler", "sampling_steps", "fast_sampling"} & set(controller)
                                  else "(parameter files)")}
    if tasks_protocol:
        config.update(tasks=list(options.tasks), seeds=[options.first_seed + k for k in range(options.episodes_per_task)],
                      scene_variation=options.scene_variation)
    if shard_count > 1:
        config["shard"] = {"index": shard_index, "count": shard_count}
    print_report(output, results, config, tasks_protocol, shard_total)
    if failure or len(results) < shard_total:
        print(f"\nFAILED: {failure or 'not every sequence was evaluated'}", file=sys.stderr)
        return 1
    return 0


def crash_report(launches: list, worker: int, node: str, code) -> str:
    how = "did not exit when stopped" if code is None else f"exited with code {code}"
    return (f"worker {worker}: node '{node}' {how}; the end of its log "
            f"({launches[worker].log_files[node]}):\n{log_tail(launches[worker].log_files[node], lines=40)}")


def shard_indices(total: int, index: int, count: int) -> list[int]:
    """The sequence indices shard ``index`` of ``count`` evaluates: every ``count``-th, from ``index``
    (strided, so that each shard gets early and late sequences alike)."""
    return list(range(index, total, count))


def bridge_stride(shard_index: int, shard_count: int, worker: int, workers: int) -> tuple[int, int]:
    """The sim bridge's ``(num_workers, worker_index)`` for one worker of a shard: worker w of shard
    I/N takes i = I + N * (w + k * workers), i.e. i % (N * workers) == I + N * w."""
    return shard_count * workers, shard_index + shard_count * worker


def print_report(output: Path, results: list, config: dict, tasks_protocol: bool, expected: int) -> None:
    from openhelix_core.evaluation.metrics import EvaluationSummary
    from openhelix_core.evaluation.report import format_task_table, write_report

    report_files = write_report(output, results, config)
    summary = EvaluationSummary.from_results(results)
    print(format_task_table(summary, "text"))
    if tasks_protocol:
        successes = sum(r.completed for r in results)
        print(f"\n{successes}/{len(results)} episodes succeeded", end="; ")
    else:
        print(f"\n{len(results)}/{expected} sequences; average length {summary.average_length:.2f}", end="; ")
    print(f"report: {', '.join(str(path) for path in report_files.values())}")


# Differ between the shards of one evaluation without changing what is evaluated.
PER_SHARD_SETTINGS = ("shard", "workers")


def checkpoint_digest(directory: str | Path) -> str:
    """sha256 of a checkpoint directory's files (relative paths and contents): shards run on
    different machines name the same checkpoint by different paths."""
    digest = hashlib.sha256()
    root = Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _differing_settings(config: dict, settings: dict) -> list[str]:
    """Keys whose values differ, the checkpoint's path excepted when both name its contents."""
    keys = (set(settings) | set(config)) - set(PER_SHARD_SETTINGS)
    if config.get("checkpoint_sha256") and settings.get("checkpoint_sha256"):
        keys.discard("checkpoint")
    return sorted(key for key in keys if config.get(key) != settings.get(key))


def merge_shards(directories: list[Path]) -> tuple[list, dict]:
    """Results and config of the evaluation whose shards ``directories`` hold; LaunchError when
    they come from different settings, overlap, miss a shard or a sequence."""
    from openhelix_core.evaluation.report import load_results_json

    shards = {}
    for directory in directories:
        report = Path(directory) / "calvin_eval.json"
        if not report.is_file():
            raise LaunchError(f"{directory} holds no calvin_eval.json (not an eval-calvin output directory)")
        config, results, _ = load_results_json(report)
        shard = config.get("shard") or {"index": 0, "count": 1}
        if shard["index"] in shards:
            raise LaunchError(f"{directory} and {shards[shard['index']][0]} are both shard "
                              f"{shard['index']}/{shard['count']}")
        shards[shard["index"]] = (directory, shard, config, results)
    first_dir, first_shard, first_config, _ = shards[min(shards)]
    settings = {k: v for k, v in first_config.items() if k not in PER_SHARD_SETTINGS}
    for directory, shard, config, results in shards.values():
        if shard["count"] != first_shard["count"]:
            raise LaunchError(f"{directory} is shard {shard['index']}/{shard['count']}, {first_dir} is shard "
                              f"{first_shard['index']}/{first_shard['count']}: not the same split")
        for key in _differing_settings(config, settings):
            raise LaunchError(f"{directory} and {first_dir} were evaluated with different {key}: "
                              f"{config.get(key)!r} and {settings.get(key)!r}")
        expected = shard_indices(settings["sequences"], shard["index"], shard["count"])
        found = sorted(r.info["sequence_index"] for r in results)
        if found != expected:
            raise LaunchError(f"{directory} (shard {shard['index']}/{shard['count']}) is incomplete or foreign: "
                              f"{len(found)} of its {len(expected)} sequences, missing "
                              f"{sorted(set(expected) - set(found))[:10]}, unexpected {sorted(set(found) - set(expected))[:10]}")
    missing = sorted(set(range(first_shard["count"])) - set(shards))
    if missing:
        raise LaunchError(f"shards {missing} of {first_shard['count']} are missing")
    results = sorted((r for _, _, _, rs in shards.values() for r in rs), key=lambda r: r.info["sequence_index"])
    config = {**settings, "workers": sum(c.get("workers", 1) for _, _, c, _ in shards.values()),
              "merged_from": [str(d) for d, _, _, _ in shards.values()]}
    return results, config


def run_eval_calvin_merge(options: argparse.Namespace) -> int:
    results, config = merge_shards([Path(d) for d in options.directories])
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    print_report(output, results, config, config.get("protocol") == "tasks", config["sequences"])
    return 0


def parse_shard(text: str) -> tuple[int, int]:
    index, separator, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        index = count = -1
    if not separator or count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"'{text}' is not I/N with 0 <= I < N (e.g. 3/10)")
    return index, count


def run_launch(options: argparse.Namespace) -> int:
    nodes = parse_launch_file(resolve_launch_file(options.file), parse_launch_arguments(options.arguments))
    processes = LaunchedProcesses(nodes)
    try:
        while len(processes.exited()) < len(nodes):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        codes = processes.stop()
    return max(codes.values(), default=0)


def run_security_keystore(options: argparse.Namespace) -> int:
    from openhelix_ros.security import KeystoreError, create_keystore

    try:
        written = create_keystore(options.directory, domain_id=options.domain_id, valid_days=options.valid_days,
                                  heartbeat_topic=options.heartbeat_topic)
    except KeystoreError as error:
        print(f"openhelix: {error}", file=sys.stderr)
        return 2
    root = Path(options.directory).resolve()
    print(f"keystore for ROS domain {options.domain_id} written to {root}")
    for enclave, directory in written.items():
        print(f"  {enclave:24s} {directory}")
    print(f"CA private keys: {root / 'private'} (keep them off the robots)\n"
          f"On each machine: copy only the enclaves it runs (keeping enclaves/openhelix/<name>), set\n"
          f"ROS_SECURITY_KEYSTORE to the directory holding enclaves/, and source config/split_deployment_secure.env.")
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openhelix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the embedded default end to end on CPU")
    demo.add_argument("--steps", type=int, default=60, help="policy steps to execute (default 60)")
    demo.add_argument("--instruction", default="open the drawer")
    demo.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    demo.add_argument("--log-dir", default="log/openhelix", help="where node logs are written")
    demo.set_defaults(run=run_demo)
    calvin = commands.add_parser("eval-calvin", help="CALVIN's evaluation protocol through the ROS nodes")
    calvin.add_argument("--sequences", type=int, default=1000, help="first N of CALVIN's 1000 sequences")
    calvin.add_argument("--workers", type=int, default=1, help="parallel sim bridge workers")
    calvin.add_argument("--seed", type=int, default=0, help="sequence set seed (CALVIN's is 0)")
    calvin.add_argument("--max-steps", type=int, default=360, help="environment steps per subtask")
    calvin.add_argument("--backend", choices=("embedded", "calvin"), default="embedded")
    calvin.add_argument("--config-dir", default="", help="directory with planner.yaml / controller_sim.yaml / "
                        "sim_bridge.yaml to use instead of the installed ones")
    calvin.add_argument("--output", default="", help="results directory (default runs/calvin-eval-<time>)")
    calvin.add_argument("--timeout", type=float, default=24 * 3600.0)
    calvin.add_argument("--first-domain", type=int, default=None,
                        help="ROS domain of worker 0, the next ones for the other workers (default: a free "
                        "domain per worker, see openhelix_ros.domains)")
    calvin.add_argument("--protocol", choices=("calvin", "tasks"), default="calvin",
                        help="'tasks': single-task episodes from the training demo's held-out start states")
    calvin.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="--protocol tasks: tasks to evaluate")
    calvin.add_argument("--episodes-per-task", type=int, default=EVAL_EPISODES_PER_TASK, help="--protocol tasks: seeds per task")
    calvin.add_argument("--first-seed", type=int, default=EVAL_SEED_OFFSET,
                        help="--protocol tasks: first start-state seed (the demos use the seeds below it)")
    calvin.add_argument("--scene-variation", choices=SCENE_VARIATIONS, default="task",
                        help="--protocol tasks: start scenes as the demos were generated")
    calvin.add_argument("--static-size", type=int, default=200, help="static camera image side (px)")
    calvin.add_argument("--gripper-size", type=int, default=84, help="gripper camera image side (px)")
    calvin.add_argument("--checkpoint", default="", help="trainer checkpoint directory (system1/ + system2/) for "
                        "the controller and the planner, e.g. runs/play_table_demo/stage2/final")
    calvin.add_argument("--execution-horizon", type=int, default=0,
                        help="waypoints the bridge executes per chunk (0 = the parameter file's)")
    calvin.add_argument("--execution", choices=("chunks", "servo", "joint_trajectory"), default="chunks",
                        help="chunks: the simulator executes System 1's trajectory chunks; servo: it follows the "
                        "controller's blended, limited command stream, as a real arm's servo controller does; "
                        "joint_trajectory: it follows that stream converted to joint targets by the controller's "
                        "inverse kinematics (URDF from /robot_description), as joint_trajectory_controller does")
    calvin.add_argument("--transforms", action="store_true",
                        help="the controller reads the camera poses and the TCP from /tf and /tf_static (as on a "
                        "robot with robot_state_publisher) instead of camera_extrinsics and the EE pose topic")
    calvin.add_argument("--realtime", action="store_true", help="the scene advances every tick, also while "
                        "the policy computes (default: lockstep, the scene waits for the policy)")
    calvin.add_argument("--blend-mode", choices=("ensemble", "replace", "rtc"), default="",
                        help="controller's chunk blending (servo execution); default: the parameter file's")
    calvin.add_argument("--control-rate", type=float, default=0.0,
                        help="System 1 calls per second at most (controller control_rate_hz); default: the "
                        "parameter file's")
    add_sampler_arguments(calvin)
    calvin.add_argument("--inference-delay", type=float, default=0.0,
                        help="seconds added to every System 1 call, to measure what latency costs")
    calvin.add_argument("--replan-after-horizon", action="store_true",
                        help="execute each chunk to its horizon before taking a newer one (3DDA's evaluation)")
    calvin.add_argument("--observe-within-chunks", action="store_true",
                        help="with --replan-after-horizon (lockstep): also render and publish the scene at the steps "
                        "inside a chunk, where no new chunk is taken (default: only when a chunk has ended, "
                        "several times faster; System 1 sees the same frames either way)")
    calvin.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                        help="evaluate only sequences i with i %% N == I (one job of an array of N; combine the "
                        "outputs with eval-calvin-merge)")
    calvin.add_argument("--calvin-scene", default="", choices=("", "A", "B", "C", "D"),
                        help="--backend calvin: scene (default: the dataset's, else D)")
    calvin.add_argument("--calvin-dataset", default="",
                        help="--backend calvin: a CALVIN dataset split (e.g. task_ABC_D/validation) whose "
                        ".hydra/merged_config.yaml builds the env, as CALVIN does (default: none, the same config "
                        "composed from calvin_env's conf/)")
    calvin.set_defaults(run=run_eval_calvin)
    merge = commands.add_parser("eval-calvin-merge", help="combine the outputs of eval-calvin --shard I/N runs "
                                "into the report one run writes")
    merge.add_argument("directories", nargs="+", help="the --output directories of every shard")
    merge.add_argument("--output", required=True, help="directory for the merged report")
    merge.set_defaults(run=run_eval_calvin_merge)
    launch = commands.add_parser("launch", help="run a launch file without ros2 launch")
    launch.add_argument("file", help="path, or name of a file in openhelix_bringup/launch")
    launch.add_argument("arguments", nargs="*", help="launch arguments as name:=value")
    launch.set_defaults(run=run_launch)
    keystore = commands.add_parser("security-keystore", help="write an SROS2 keystore for the split deployment")
    keystore.add_argument("directory", help="new or empty directory to write the keystore into")
    keystore.add_argument("--domain-id", type=int, default=42,
                          help="ROS domain the permissions apply to (default 42, as config/split_deployment.env)")
    keystore.add_argument("--valid-days", type=int, default=3650, help="lifetime of certificates and permissions")
    keystore.add_argument("--heartbeat-topic", default="",
                          help="the controller's heartbeat_topic: the operator may publish it, the controller reads it")
    keystore.set_defaults(run=run_security_keystore)
    add_bag_commands(commands)
    add_dataset_commands(commands)
    add_demo_commands(commands)
    add_learning_table_command(commands)
    options = parser.parse_args(argv)
    if getattr(options, "steps", 1) < 1:
        parser.error("--steps must be at least 1")
    try:
        # `kill` / a CI timeout sends SIGTERM: stop the launched nodes as Ctrl-C does instead of
        # leaving them running (and publishing into the next run's ROS domain).
        signal.signal(signal.SIGTERM, _interrupt)
        return options.run(options)
    except LaunchError as error:
        print(f"openhelix: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
