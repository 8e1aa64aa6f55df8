"""Recorder node: writes the topics the policy consumes and the commands it publishes into a
rosbag2 bag (sqlite3 or mcap) with the ``rosbags`` library, without ``ros2 bag``.

Each topic is subscribed once a publisher of it appears (its type is taken from the graph),
with the QoS its publishers offer (reliable / transient-local only when every publisher
offers it, as ``ros2 bag record`` does), and stored as received: raw CDR, stamped with the
receive time of this node's clock. The message definitions go into the bag, including those of
``openhelix_msgs``, so any rosbag2 reader can decode it. The bag is closed on shutdown
(SIGINT / SIGTERM) or after ``max_duration_s``.
"""
from __future__ import annotations

import time
from pathlib import Path

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from openhelix_ros import topics
from openhelix_ros.bags.io import STORAGES, BagError, BagWriter, qos_profile, ros_message_class
from openhelix_ros.parameters import ParameterSpec, declare_and_validate, non_empty, non_negative, one_of, positive

CAMERAS = ("static", "gripper")
POLICY_INPUTS = tuple(t for c in CAMERAS for t in (topics.camera_color(c), topics.camera_depth(c),
                                                   topics.camera_info(c))) + (
    topics.EE_POSE, topics.JOINT_STATES, topics.INSTRUCTION)
POLICY_OUTPUTS = (topics.GOAL_EMBEDDING, topics.TRAJECTORY_CHUNK, topics.POSE_COMMAND, topics.GRIPPER_COMMAND)
DEFAULT_TOPICS = POLICY_INPUTS + POLICY_OUTPUTS + (topics.DIAGNOSTICS,)

PARAMETERS = (
    ParameterSpec("output", "", "Bag directory to create ('' = bag_<date>_<time> in the working directory); "
                  "it must not exist."),
    ParameterSpec("storage", "sqlite3", "Storage format: 'sqlite3' or 'mcap'.", one_of(*STORAGES)),
    ParameterSpec("topics", list(DEFAULT_TOPICS), "Topics to record (the policy's inputs and outputs).",
                  non_empty),
    ParameterSpec("discovery_period_s", 0.25, "How often the graph is checked for the topics' publishers (s).",
                  positive),
    ParameterSpec("max_duration_s", 0.0, "Stop after this long (s; 0 = until shut down).", non_negative),
)


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        self.params = declare_and_validate(self, PARAMETERS)
        output = self.params["output"] or time.strftime("bag_%Y%m%d_%H%M%S")
        self.writer = BagWriter(Path(output), self.params["storage"])
        self.writer.open()
        self.pending = [self.resolve_topic_name(t) if hasattr(self, "resolve_topic_name") else t
                        for t in self.params["topics"]]
        self.subscriptions_by_topic = {}
        self.started = time.monotonic()
        self.finished = False
        self.discover()
        # Discovery runs on wall time: with use_sim_time the simulated clock may not tick before
        # its publisher sees a subscriber, which discovery creates.
        self.create_timer(self.params["discovery_period_s"], self.discover, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"recording {len(self.pending)} topics into {output} ({self.params['storage']})")

    def discover(self) -> None:
        if 0 < self.params["max_duration_s"] <= time.monotonic() - self.started:
            self.finished = True
            return
        if not self.pending:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in list(self.pending):
            types = graph.get(topic)
            if not types:
                continue
            msgtype = types[0]
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            try:
                message_class = ros_message_class(msgtype)
                reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
                latched = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
                self.writer.add_topic(topic, msgtype, [qos_profile(reliable, latched)])
            except BagError as error:
                self.get_logger().warning(f"not recording {topic}: {error}")
                self.pending.remove(topic)
                continue
            qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self.subscriptions_by_topic[topic] = self.create_subscription(
                message_class, topic, lambda raw, topic=topic: self.on_message(topic, raw), qos, raw=True)
            self.pending.remove(topic)
            self.get_logger().info(f"recording {topic} [{msgtype}]")

    def on_message(self, topic: str, raw: bytes) -> None:
        if not self.writer.closed:
            self.writer.write(topic, self.get_clock().now().nanoseconds, raw)

    def close(self) -> None:
        if not self.writer.closed:
            self.writer.close()
            self.get_logger().info(f"wrote {self.writer.count} messages ({self.writer.bytes / 1e6:.1f} MB) to "
                                   f"{self.writer.path}")


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = RecorderNode()
        while rclpy.ok() and not node.finished:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
