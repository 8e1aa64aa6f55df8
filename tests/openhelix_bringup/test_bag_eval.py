"""Record a sim run to a bag, replay it through the real planner and controller, score it.

The recording runs record.launch.xml (sim bridge + planner + controller + recorder) until the
sim bridge has executed its steps; ``openhelix bag-eval`` then plays a copy of that bag, with
its topics renamed and in the other storage format, through the planner and controller
processes. Each launch uses its own ROS domain; waits are event-driven and nothing is timed.
"""
import json
import time
from pathlib import Path

import numpy as np
import pytest

from openhelix_bringup.cli import main as openhelix_main
from openhelix_ros.bags.io import BagReader, BagWriter
from openhelix_ros.domains import isolated_domain_id
from openhelix_ros.launching import LaunchedProcesses, parse_launch_file

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300.0
STEPS = 30


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory):
    """A bag of a sim run, recorded by the recorder node next to the sim bridge (mcap)."""
    directory = tmp_path_factory.mktemp("recording")
    bag = directory / "sim_run"
    nodes = parse_launch_file(REPO / "launch" / "record.launch.xml",
                              {"output": str(bag), "storage": "mcap", "max_steps": str(STEPS)})
    domain = isolated_domain_id()
    processes = LaunchedProcesses(nodes, log_directory=directory / "logs", environment={"ROS_DOMAIN_ID": str(domain)})
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while "sim_bridge" not in processes.exited() and time.monotonic() < deadline:
            early = {n: c for n, c in processes.exited().items() if n != "sim_bridge"}
            assert not early, f"nodes exited early: {early}"
            time.sleep(0.2)
        assert processes.exited().get("sim_bridge") == 0, "the sim bridge did not finish its steps"
    finally:
        codes = processes.stop()
    assert codes["recorder"] in (0, -2), (directory / "logs" / "recorder.log").read_text()[-2000:]
    return bag


def renamed_copy(source: Path, target: Path, renames: dict, storage: str) -> Path:
    """The same messages under other topic names, in another storage format."""
    with BagReader(source) as reader, BagWriter(target, storage) as writer:
        for message in reader.messages(deserialize=False):
            topic = renames.get(message.topic, message.topic)
            writer.add_topic(topic, message.msgtype)
            writer.write(topic, message.timestamp_ns, message.raw)
    return target


def test_the_recording_holds_the_policy_inputs_and_outputs_with_ground_truth(sim_bag):
    with BagReader(sim_bag) as reader:
        topics = reader.topics()
        assert reader.storage == "mcap"
        for topic in ("/cameras/static/color/image_raw", "/cameras/gripper/depth/image_raw", "/ee_pose",
                      "/joint_states", "/instruction", "/openhelix/goal_embedding", "/openhelix/trajectory_chunk"):
            assert topics[topic].count > 0, f"{topic} was not recorded: {reader.describe_topics()}"
        assert topics["/instruction"].latched
        chunks = [m.message for m in reader.messages(["/openhelix/trajectory_chunk"])]
        assert reader.stats.skipped_total == 0
    assert len(chunks[0].poses) == len(chunks[0].gripper_openness) > 0


def test_bag_eval_replays_the_bag_through_the_nodes_and_writes_the_report(sim_bag, tmp_path, capsys):
    bag = renamed_copy(sim_bag, tmp_path / "renamed", {"/ee_pose": "/robot/tcp_pose",
                                                       "/cameras/static/color/image_raw": "/front/rgb"}, "sqlite3")
    # Without the remapping the bag lacks what the controller needs; the error says what it has.
    assert openhelix_main(["bag-eval", str(bag), "--out", str(tmp_path / "refused"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "/ee_pose" in error and "/robot/tcp_pose [geometry_msgs/msg/PoseStamped" in error

    out = tmp_path / "report"
    code = openhelix_main(["bag-eval", str(bag), "--rate", "1.5", "--remap", "/robot/tcp_pose:=/ee_pose",
                    "--remap", "/front/rgb:=/cameras/static/color/image_raw", "--out", str(out),
                    "--startup-timeout", str(TIMEOUT_S)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0, printed[-20:]
    assert printed[-1].startswith("bag-eval renamed:") and "position error" in printed[-1]
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.html").stat().st_size > 1000 and (out / "report.txt").is_file()
    assert report["storage"] == "sqlite3" and report["rate"] == 1.5
    overall = report["replay"]["overall"]
    assert overall["chunks"] >= 3 and overall["chunks_scored"] >= 1 and overall["goals"] >= 1
    assert 0.0 <= overall["position_error_m"]["mean"] < 10.0
    assert 0.0 <= overall["rotation_error_deg"]["max"] <= 180.0
    assert 0.0 <= overall["gripper_agreement"] <= 1.0
    assert overall["latency_s"]["count"] >= 1 and overall["latency_s"]["median"] > 0
    assert overall["goal_age_s"]["count"] >= 1 and overall["system2_rate_hz"] > 0
    assert report["replay"]["episodes"] and report["replay"]["segments"]
    assert report["recorded"]["overall"]["chunks"] > 0          # the live run's chunks, scored the same way
    assert report["input"]["messages_skipped"] == 0

    # The replay's outputs were recorded: every chunk was conditioned on a goal of this replay.
    with BagReader(out / "outputs") as outputs:
        goals = {m.message.sequence for m in outputs.messages(["/openhelix/goal_embedding"])}
        chunks = [m.message for m in outputs.messages(["/openhelix/trajectory_chunk"])]
    assert len(chunks) == overall["chunks"]
    assert {c.goal_sequence for c in chunks} <= goals
    assert all(np.isfinite(c.poses[0].position.x) for c in chunks)
    if "png" in {p.suffix[1:] for p in out.iterdir()}:
        assert (out / "errors.png").stat().st_size > 1000
