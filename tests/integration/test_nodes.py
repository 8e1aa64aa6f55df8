"""The real nodes as separate processes, talking through ROS topics.

Each test runs in its own ROS domain so that parallel runs and a demo on the same machine
never cross-talk. Waits are generous and event-driven: the machine may be loaded.
"""
import os
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from openhelix_msgs.msg import GoalEmbedding, TrajectoryChunk
from openhelix_ros import topics
from openhelix_ros.launching import LaunchedProcesses, parse_launch_file
from openhelix_ros.qos import RELIABLE

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 240.0


@pytest.fixture
def ros_domain(tmp_path):
    domain = 1 + (os.getpid() + time.monotonic_ns()) % 100
    rclpy.init(domain_id=domain)
    yield {"ROS_DOMAIN_ID": str(domain)}
    rclpy.try_shutdown()


class Recorder(Node):
    def __init__(self):
        super().__init__("integration_recorder")
        self.goals: list[GoalEmbedding] = []
        self.chunks: list[TrajectoryChunk] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.create_subscription(GoalEmbedding, topics.GOAL_EMBEDDING, self.goals.append, RELIABLE)
        self.create_subscription(TrajectoryChunk, topics.TRAJECTORY_CHUNK, self.chunks.append, RELIABLE)
        self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self.on_diagnostics, 10)
        self.goal_publisher = self.create_publisher(GoalEmbedding, topics.GOAL_EMBEDDING, RELIABLE)

    def on_diagnostics(self, msg):
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def spin_until(self, condition, timeout_s, processes):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.1)
            crashed = processes.exited()
            assert not crashed, f"nodes exited early: {crashed}; logs: {self.logs(processes)}"
            if condition():
                return True
        return False

    @staticmethod
    def logs(processes):
        return {name: path.read_text(errors="replace")[-2000:] for name, path in processes.log_files.items()}


def launch(names, environment, tmp_path):
    nodes = [n for n in parse_launch_file(REPO / "launch" / "sim.launch.xml") if n.name in names]
    return LaunchedProcesses(nodes, log_directory=tmp_path, environment=environment)


def test_chunks_carry_the_sequence_of_a_goal_the_planner_published(ros_domain, tmp_path):
    recorder = Recorder()
    processes = launch({"sim_bridge", "planner", "controller"}, ros_domain, tmp_path)
    try:
        def conditioned():
            published = {g.sequence for g in recorder.goals}
            return [c for c in recorder.chunks if c.goal_sequence in published]

        assert recorder.spin_until(lambda: len(conditioned()) >= 3, STARTUP_TIMEOUT_S, processes), \
            f"no chunk conditioned on a published goal; goals {len(recorder.goals)}, " \
            f"chunks {len(recorder.chunks)}; logs: {recorder.logs(processes)}"
        chunk = conditioned()[0]
        assert len(chunk.poses) == len(chunk.gripper_openness) == len(chunk.time_from_start) > 0
        assert chunk.header.frame_id == "world"
        goal = next(g for g in recorder.goals if g.sequence == chunk.goal_sequence)
        assert chunk.goal_instruction == goal.instruction == "open the drawer"
        assert len(goal.embedding) == 512 and goal.model_id.startswith("system2/")
        assert recorder.spin_until(
            lambda: int(recorder.diagnostics.get("openhelix/sim_bridge", {}).get("steps_executed", 0)) > 0,
            STARTUP_TIMEOUT_S, processes), "the sim bridge never executed a waypoint"
    finally:
        codes = processes.stop()
        recorder.destroy_node()
    assert all(code in (0, -2) for code in codes.values()), f"unclean shutdown {codes}"


def test_controller_refuses_a_goal_of_the_wrong_size_and_acts_on_a_valid_one(ros_domain, tmp_path):
    recorder = Recorder()
    processes = launch({"sim_bridge", "controller"}, ros_domain, tmp_path)
    try:
        def controller_status():
            return recorder.diagnostics.get("openhelix/controller", {})

        def controller_listens():
            return bool(controller_status()) and recorder.goal_publisher.get_subscription_count() > 0

        assert recorder.spin_until(controller_listens, STARTUP_TIMEOUT_S, processes), recorder.logs(processes)
        recorder.goal_publisher.publish(GoalEmbedding(sequence=41, instruction="bad", embedding=[0.5] * 511))
        assert recorder.spin_until(lambda: int(controller_status().get("refused_invalid_goal", 0)) > 0, 60,
                                   processes), recorder.diagnostics
        assert recorder.chunks == [], "the controller acted on a goal of the wrong size"

        good = GoalEmbedding(sequence=42, instruction="lift the red block", model_id="test",
                             embedding=np.random.default_rng(0).standard_normal(512).astype(np.float32).tolist())
        good.header.stamp = recorder.get_clock().now().to_msg()
        recorder.goal_publisher.publish(good)
        assert recorder.spin_until(lambda: len(recorder.chunks) >= 2, STARTUP_TIMEOUT_S, processes), \
            recorder.logs(processes)
        assert {c.goal_sequence for c in recorder.chunks} == {42}
        assert recorder.chunks[0].goal_instruction == "lift the red block"
    finally:
        processes.stop()
        recorder.destroy_node()
