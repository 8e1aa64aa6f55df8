"""The README's main job: `openhelix demo` runs the loop through ROS topics and exits 0."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from openhelix_ros.domains import isolated_domain_id

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_sim_planner_controller_loop(tmp_path):
    environment = {**os.environ, "ROS_DOMAIN_ID": str(isolated_domain_id())}
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_bringup.cli", "demo", "--steps", "10", "--timeout", "400",
         "--log-dir", str(tmp_path)],
        capture_output=True, text=True, env=environment, timeout=500, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 10 policy steps executed" in result.stdout
    assert "chunks conditioned on a published goal" in result.stdout
    assert list(tmp_path.glob("demo-*/controller.log")), "node logs were not written"


def test_eval_calvin_runs_the_protocol_through_the_nodes_and_writes_the_report(tmp_path):
    environment = {**os.environ}
    first_domain = str(isolated_domain_id())
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_bringup.cli", "eval-calvin", "--sequences", "2", "--workers", "1",
         "--max-steps", "12", "--output", str(tmp_path), "--timeout", "400", "--first-domain", first_domain],
        capture_output=True, text=True, env=environment, timeout=500, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "calvin_eval.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "worker0.jsonl").read_text().splitlines()]
    assert [r["info"]["sequence_index"] for r in records] == [0, 1]
    for record in records:  # every attempted subtask stayed within its step budget
        steps = record["info"]["steps_per_subtask"]
        assert len(steps) == min(record["completed"] + 1, 5) and all(1 <= n <= 12 for n in steps)
    lengths = [r["completed"] for r in records]
    assert report["summary"]["avg_seq_len"] == sum(lengths) / 2
    assert (tmp_path / "calvin_eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"average length {sum(lengths) / 2:.2f}" in result.stdout


def test_eval_tasks_protocol_runs_a_trainer_checkpoint_through_the_nodes(tmp_path):
    import torch

    from openhelix_core.models.system1 import DiffuserActor, System1Config
    from openhelix_core.models.system2 import System2Config, System2Planner

    checkpoint = tmp_path / "final"
    torch.manual_seed(0)
    DiffuserActor(System1Config.tiny()).save_pretrained(checkpoint / "system1")
    System2Planner(System2Config.tiny(seed=3)).save_pretrained(checkpoint / "system2")
    output = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_bringup.cli", "eval-calvin", "--protocol", "tasks", "--tasks", "open_drawer",
         "turn_on_led", "--episodes-per-task", "1", "--first-seed", "100007", "--max-steps", "8",
         "--static-size", "64", "--gripper-size", "48", "--execution-horizon", "4", "--checkpoint", str(checkpoint),
         "--output", str(output), "--timeout", "400", "--first-domain", str(isolated_domain_id())],
        capture_output=True, text=True, env={**os.environ}, timeout=500, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in (output / "worker0.jsonl").read_text().splitlines()]
    assert [(r["initial_state"]["task"], r["initial_state"]["seed"], r["tasks"]) for r in records] == [
        ("open_drawer", 100007, ["open_drawer"]), ("turn_on_led", 100007, ["turn_on_led"])]
    assert all(1 <= r["info"]["steps_per_subtask"][0] <= 8 for r in records)
    logs = {name: (output / "logs-worker0" / f"{name}.log").read_text() for name in ("planner", "controller")}
    assert f"{checkpoint / 'system2'}' loaded" in logs["planner"]
    assert f"{checkpoint / 'system1'}' loaded" in logs["controller"]
    report = json.loads((output / "calvin_eval.json").read_text())
    assert report["config"]["protocol"] == "tasks" and report["config"]["seeds"] == [100007]
    assert f"{sum(r['completed'] for r in records)}/2 episodes succeeded" in result.stdout


def test_pipeline_runs_its_variant_checkpoints_through_the_nodes(tmp_path):
    import torch

    from openhelix_bringup.ros_evaluation import evaluate_variants_through_ros
    from openhelix_core.models.system1 import DiffuserActor, System1Config
    from openhelix_core.models.system2 import System2Config, System2Planner
    from openhelix_sim.experiments.variants import write_variant_checkpoints

    torch.manual_seed(0)
    DiffuserActor(System1Config.tiny()).save_pretrained(tmp_path / "final" / "system1")
    System2Planner(System2Config.tiny(seed=3)).save_pretrained(tmp_path / "final" / "system2")
    paths = write_variant_checkpoints(tmp_path / "final", tmp_path / "variants", variants=("trained", "goal zeroed"))
    results = evaluate_variants_through_ros(paths, ["turn_on_led"], [100007, 100008], max_steps=8, execute_steps=4,
                                            static_size=64, gripper_size=48, out_dir=tmp_path / "ros", workers=1)
    assert list(results) == ["trained", "goal zeroed"]
    for variant in results.values():
        assert list(variant) == ["turn_on_led"] and len(variant["turn_on_led"]) == 2
        assert all(isinstance(ok, bool) for ok in variant["turn_on_led"])
    planner_log = (tmp_path / "ros" / "goal_zeroed" / "logs-worker0" / "planner.log").read_text()
    assert f"{tmp_path / 'variants' / 'goal_zeroed' / 'system2'}' loaded" in planner_log
    with pytest.raises(RuntimeError, match="ROS evaluation of 'broken' failed"):
        evaluate_variants_through_ros({"broken": tmp_path / "nowhere"}, ["turn_on_led"], [1], max_steps=8,
                                      execute_steps=4, static_size=64, gripper_size=48, out_dir=tmp_path / "bad")


@pytest.mark.parametrize("observe_within_chunks", [False, True])
def test_lockstep_chunks_observe_the_scene_only_when_a_chunk_is_needed(tmp_path, observe_within_chunks):
    output = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_bringup.cli", "eval-calvin", "--protocol", "tasks", "--tasks", "turn_on_led",
         "--episodes-per-task", "1", "--max-steps", "40", "--static-size", "64", "--gripper-size", "48",
         "--checkpoint", str(REPO / "sim_bridge" / "checkpoints" / "play_table_demo"), "--execution-horizon", "10",
         "--replan-after-horizon", *(["--observe-within-chunks"] if observe_within_chunks else []),
         "--output", str(output), "--timeout", "400", "--first-domain", str(isolated_domain_id())],
        capture_output=True, text=True, env={**os.environ}, timeout=500, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    [record] = [json.loads(line) for line in (output / "worker0.jsonl").read_text().splitlines()]
    steps = record["info"]["steps_per_subtask"][0]
    log = (output / "logs-worker0" / "sim_bridge.log").read_text()
    observed = int(re.search(r"(\d+) scenes observed in (\d+) steps", log).group(1))
    # one scene per step, or one per chunk of 10 waypoints (plus the episode's start)
    assert observed >= steps if observe_within_chunks else observed <= steps // 10 + 2
    report = json.loads((output / "calvin_eval.json").read_text())
    assert report["config"]["observe_within_chunks"] is observe_within_chunks


@pytest.mark.parametrize("execution", [["--execution", "servo", "--realtime", "--blend-mode", "rtc"],
                                       ["--execution", "servo", "--blend-mode", "ensemble"]])
def test_servo_execution_evaluates_the_command_stream_a_real_arm_would_get(tmp_path, execution):
    output = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_bringup.cli", "eval-calvin", "--protocol", "tasks", "--tasks", "open_drawer",
         "--episodes-per-task", "1", "--first-seed", "100000", "--max-steps", "30", "--static-size", "64",
         "--gripper-size", "48", "--checkpoint", str(REPO / "sim_bridge" / "checkpoints" / "play_table_demo"),
         *execution, "--output", str(output), "--timeout", "400",
         "--first-domain", str(isolated_domain_id())],
        capture_output=True, text=True, env={**os.environ}, timeout=500, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    [record] = [json.loads(line) for line in (output / "worker0.jsonl").read_text().splitlines()]
    assert record["initial_state"]["task"] == "open_drawer" and 1 <= record["info"]["steps_per_subtask"][0] <= 30
    bridge = yaml.safe_load((output / "config" / "sim_bridge.yaml").read_text())["sim_bridge"]["ros__parameters"]
    controller = yaml.safe_load((output / "config" / "controller_sim.yaml").read_text())["controller"]
    assert bridge["execution"] == "servo" and bridge.get("realtime", False) == ("--realtime" in execution)
    assert controller["ros__parameters"]["blend_mode"] == execution[-1]
    report = json.loads((output / "calvin_eval.json").read_text())
    assert report["config"]["execution"] == "servo"
    controller_log = (output / "logs-worker0" / "controller.log").read_text()
    assert "System 1 warm-up call" in controller_log


def test_joint_trajectory_execution_through_tf_evaluates_the_ik_path_a_ros2_control_arm_would_get(tmp_path):
    """The controller reads camera poses and the TCP from the bridge's /tf, converts its command stream by IK
    (URDF from /robot_description) and the bridge steps only on the joint targets it receives."""
    output = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_bringup.cli", "eval-calvin", "--protocol", "tasks", "--tasks", "open_drawer",
         "--episodes-per-task", "1", "--first-seed", "100000", "--max-steps", "30", "--static-size", "64",
         "--gripper-size", "48", "--checkpoint", str(REPO / "sim_bridge" / "checkpoints" / "play_table_demo"),
         "--execution", "joint_trajectory", "--transforms", "--output", str(output), "--timeout", "400",
         "--first-domain", str(isolated_domain_id())],
        capture_output=True, text=True, env={**os.environ}, timeout=500, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    [record] = [json.loads(line) for line in (output / "worker0.jsonl").read_text().splitlines()]
    assert 1 <= record["info"]["steps_per_subtask"][0] <= 30
    controller = yaml.safe_load((output / "config" / "controller_sim.yaml").read_text())["controller"]
    assert controller["ros__parameters"]["joint_trajectory_topic"] == "/openhelix/command/joint_trajectory"
    controller_log = (output / "logs-worker0" / "controller.log").read_text()
    assert "joint trajectories on /openhelix/command/joint_trajectory: IK panda_link0 -> tcp" in controller_log
    assert "transforms from /tf and /tf_static" in controller_log
    assert "no joint trajectory command" not in controller_log and "from TF" not in controller_log
    bridge_log = (output / "logs-worker0" / "sim_bridge.log").read_text()
    assert "not following joint trajectory" not in bridge_log
    report = json.loads((output / "calvin_eval.json").read_text())
    assert report["config"]["execution"] == "joint_trajectory" and report["config"]["camera_poses_and_tcp"] == "TF"
