"""A node that watches the policy's topics and summarizes what flowed through them."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from openhelix_msgs.msg import GoalEmbedding, TrajectoryChunk
from openhelix_ros import topics
from openhelix_ros.conversions import duration_to_seconds, stamp_to_seconds
from openhelix_ros.qos import RELIABLE


@dataclass
class TopicCount:
    count: int = 0
    first: float = float("nan")
    last: float = float("nan")

    def add(self, now: float) -> None:
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now

    @property
    def rate_hz(self) -> float:
        return (self.count - 1) / (self.last - self.first) if self.count > 1 and self.last > self.first else 0.0


@dataclass
class FlowSummary:
    images: TopicCount = field(default_factory=TopicCount)
    goals: TopicCount = field(default_factory=TopicCount)
    chunks: TopicCount = field(default_factory=TopicCount)
    goal_sequences: set[int] = field(default_factory=set)
    chunk_goal_sequences: list[int] = field(default_factory=list)
    goal_ages_s: list[float] = field(default_factory=list)
    chunk_latencies_s: list[float] = field(default_factory=list)
    sim_status: dict[str, str] = field(default_factory=dict)
    controller_status: dict[str, str] = field(default_factory=dict)

    @property
    def chunks_with_published_goal(self) -> int:
        return sum(1 for sequence in self.chunk_goal_sequences if sequence in self.goal_sequences)

    def report(self) -> str:
        def mean(values: list[float]) -> str:
            return f"{1000 * sum(values) / len(values):.0f} ms" if values else "n/a"
        lines = [
            f"static images received     {self.images.count:6d}  ({self.images.rate_hz:.1f} Hz)",
            f"goal embeddings (System 2) {self.goals.count:6d}  ({self.goals.rate_hz:.2f} Hz)",
            f"trajectory chunks (System 1){self.chunks.count:5d}  ({self.chunks.rate_hz:.2f} Hz)",
            f"chunks conditioned on a published goal  {self.chunks_with_published_goal}/{self.chunks.count}",
            f"goal sequences used by chunks  {sorted(set(self.chunk_goal_sequences))}",
            f"mean goal age at chunk time    {mean(self.goal_ages_s)}",
            f"mean observation->chunk latency {mean(self.chunk_latencies_s)}",
            f"System 1 steps per System 2 update {self.controller_status.get('system1_steps_per_system2_update', 'n/a')}",
            f"sim: steps executed {self.sim_status.get('steps_executed', '0')}, "
            f"ticks {self.sim_status.get('ticks', '0')}, chunks received {self.sim_status.get('chunks_received', '0')}",
        ]
        return "\n".join(lines)


class FlowMonitor(Node):
    def __init__(self) -> None:
        super().__init__("openhelix_monitor")
        self.summary = FlowSummary()
        self.create_subscription(Image, topics.camera_color("static"),
                                 lambda _: self.summary.images.add(time.monotonic()), qos_profile_sensor_data)
        self.create_subscription(GoalEmbedding, topics.GOAL_EMBEDDING, self.on_goal, RELIABLE)
        self.create_subscription(TrajectoryChunk, topics.TRAJECTORY_CHUNK, self.on_chunk, RELIABLE)
        self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self.on_diagnostics, 10)

    def on_goal(self, msg: GoalEmbedding) -> None:
        self.summary.goals.add(time.monotonic())
        self.summary.goal_sequences.add(msg.sequence)

    def on_chunk(self, msg: TrajectoryChunk) -> None:
        self.summary.chunks.add(time.monotonic())
        self.summary.chunk_goal_sequences.append(msg.goal_sequence)
        self.summary.goal_ages_s.append(duration_to_seconds(msg.goal_age))
        now = stamp_to_seconds(self.get_clock().now().to_msg())
        self.summary.chunk_latencies_s.append(now - stamp_to_seconds(msg.header.stamp))

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name == "openhelix/sim_bridge":
                self.summary.sim_status = values
            elif status.name == "openhelix/controller":
                self.summary.controller_status = values
