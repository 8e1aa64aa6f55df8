"""Bag player node: publishes a rosbag2 bag's messages with their recorded timing, or at a rate
factor, and publishes ``/clock`` so that nodes with ``use_sim_time`` run on the bag's time.

Works without ``ros2 bag``: reads with :mod:`openhelix_ros.bags.io` (sqlite3 and mcap, custom
types from the bag's definitions), republishes the recorded CDR bytes unchanged, decodes
``sensor_msgs/CompressedImage`` (jpeg / png / compressedDepth) into ``sensor_msgs/Image`` on the
image_transport base topic, and skips (and counts) messages of unknown types or with corrupt
bytes. Topics are renamed with ``topic_remappings`` (``recorded:=published``) or with ordinary
ROS remapping. The policy's own outputs are not republished by default, so the real planner and
controller can produce them afresh.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from openhelix_ros import topics
from openhelix_ros.bags.io import (
    COMPRESSED_IMAGE,
    BagError,
    BagMessage,
    BagReader,
    compressed_to_image,
    decoded_image_topic,
    parse_remaps,
    ros_message_class,
)
from openhelix_ros.parameters import ParameterSpec, declare_and_validate, non_negative, positive

POLICY_OUTPUTS = (topics.GOAL_EMBEDDING, topics.TRAJECTORY_CHUNK, topics.POSE_COMMAND, topics.GRIPPER_COMMAND,
                  topics.GOAL_AGE, topics.STEPS_PER_GOAL, topics.POLICY_POINT_CLOUD, topics.POLICY_MARKERS,
                  topics.DIAGNOSTICS, topics.CLOCK, "/rosout", "/parameter_events")


def _remap_rule(value) -> str | None:
    try:
        parse_remaps([v for v in value if v])
    except ValueError as error:
        return str(error)
    return None


PARAMETERS = (
    ParameterSpec("bag", "", "The rosbag2 directory (or .db3 / .mcap file) to play."),
    ParameterSpec("rate", 1.0, "Playback speed factor (0.5 = half speed; /clock follows the bag's time).",
                  positive),
    ParameterSpec("topics", [""], "Recorded topics to play ([''] = all but the policy's outputs)."),
    ParameterSpec("exclude_topics", list(POLICY_OUTPUTS), "Topics never played (the policy's own outputs)."),
    ParameterSpec("topic_remappings", [""], "Renames, 'recorded:=published' ([''] = none).", _remap_rule),
    ParameterSpec("publish_clock", True, "Publish /clock (rosgraph_msgs/Clock) on the bag's time."),
    ParameterSpec("clock_rate_hz", 100.0, "How often /clock is published between messages (Hz).", positive),
    ParameterSpec("latched_topics", [topics.INSTRUCTION], "Topics published transient-local (latched) "
                  "besides those the bag recorded as latched."),
    ParameterSpec("decompress_images", True, "Publish CompressedImage topics as Image on the base topic."),
    ParameterSpec("wait_for_subscribers", [""], "Start only when each of these (published) topics has a "
                  "subscriber ([''] = start at once)."),
    ParameterSpec("wait_timeout_s", 120.0, "Give up waiting for subscribers after this long (s).", positive),
    ParameterSpec("tail_s", 1.0, "Keep /clock running this long (bag time) after the last message (s).",
                  non_negative),
    ParameterSpec("instruction", "", "Publish this instruction (latched) at start ('' = only the bag's)."),
)


def _clean(values: Sequence[str]) -> list[str]:
    return [v for v in values if v]


@dataclass
class PlaybackStats:
    published: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    decoded: int = 0
    skipped_undecodable: int = 0
    started_wall: float = 0.0
    finished_wall: float = 0.0


class BagPlayback:
    """Plays one bag through ``node``'s publishers. Drive it with :meth:`step` from any loop.

    ``on_published(topic, header_stamp_ns | None, wall_time)`` is called after each message.
    """

    def __init__(self, node: Node, reader: BagReader, rate: float = 1.0, play_topics: Sequence[str] | None = None,
                 exclude: Sequence[str] = POLICY_OUTPUTS, publish_clock: bool = True, clock_rate_hz: float = 100.0,
                 latched_topics: Sequence[str] = (topics.INSTRUCTION,), decompress_images: bool = True,
                 tail_s: float = 1.0,
                 on_published: Callable[[str, int | None, float], None] | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.node, self.reader, self.rate = node, reader, rate
        self.clock_period = 1.0 / clock_rate_hz
        self.tail_ns = int(tail_s * 1e9)
        self.on_published = on_published
        self.decompress_images = decompress_images
        self.stats = PlaybackStats()
        available = reader.topics()
        wanted = list(play_topics) if play_topics else [t for t in available if t not in set(exclude)]
        missing = [t for t in wanted if t not in available]
        if missing:
            raise BagError(f"bag {reader.path}: topics {missing} are not in the bag; it has: {reader.describe_topics()}")
        self.topics = [t for t in wanted if available[t].known]
        for topic in wanted:
            if not available[topic].known:
                reader.stats.skip(topic, "unknown_type", f"type {available[topic].msgtype} has no definition",
                                  available[topic].count)
        self.publishers = {}
        self.output_topic: dict[str, str] = {}
        for topic in self.topics:
            summary = available[topic]
            latched = summary.latched or topic in latched_topics
            qos = QoSProfile(depth=1 if latched else 100, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            if summary.msgtype == COMPRESSED_IMAGE and decompress_images:
                from sensor_msgs.msg import Image
                message_class, target = Image, decoded_image_topic(topic)
            else:
                message_class, target = ros_message_class(summary.msgtype), topic
            self.output_topic[topic] = target
            self.publishers[topic] = node.create_publisher(message_class, target, qos)
        self.clock_publisher = node.create_publisher(Clock, topics.CLOCK, 10) if publish_clock else None
        self.total = reader.count(self.topics)
        self._iterator = None
        self._pending: BagMessage | None = None
        self._exhausted = False
        self._end_ns = 0
        self._last_clock_ns = -1
        self._next_clock_wall = 0.0
        self.bag_start_ns = reader.start_ns
        self.wall_start = 0.0

    # readiness ------------------------------------------------------------------------------

    def publisher_for(self, published_topic: str):
        for topic, target in self.output_topic.items():
            if target == published_topic:
                return self.publishers[topic]
        return None

    def subscribers_missing(self, wanted: dict[str, int]) -> list[str]:
        """Which of ``{published topic: subscriber count}`` are not yet met."""
        missing = []
        for topic, count in wanted.items():
            publisher = self.publisher_for(topic)
            if publisher is None or publisher.get_subscription_count() < count:
                missing.append(topic)
        return missing

    # playback ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._iterator = self.reader.messages(self.topics, deserialize=True)
        self.wall_start = time.monotonic()
        self.stats.started_wall = self.wall_start
        self._publish_clock(self.bag_start_ns)
        self._advance()

    def _advance(self) -> None:
        try:
            self._pending = next(self._iterator)
        except StopIteration:
            self._pending = None
            if not self._exhausted:
                self._exhausted = True
                last = max(self._last_clock_ns, self.bag_start_ns)
                self._end_ns = last + self.tail_ns

    def bag_time_at(self, wall: float) -> int:
        return self.bag_start_ns + int((wall - self.wall_start) * self.rate * 1e9)

    def wall_time_of(self, bag_ns: int) -> float:
        return self.wall_start + (bag_ns - self.bag_start_ns) / 1e9 / self.rate

    @property
    def done(self) -> bool:
        return self._exhausted and self._last_clock_ns >= self._end_ns

    @property
    def progress_ns(self) -> int:
        return max(self._last_clock_ns - self.bag_start_ns, 0)

    def step(self) -> float:
        """Publishes what is due now; returns the seconds until the next thing is due (0 when done)."""
        if self._iterator is None:
            self.start()
        now = time.monotonic()
        while self._pending is not None and self.wall_time_of(self._pending.timestamp_ns) <= now:
            self._publish(self._pending)
            self._advance()
            now = time.monotonic()
        if self._exhausted:
            target = min(self.bag_time_at(now), self._end_ns)
            self._publish_clock(target)
            if self.done:
                self.stats.finished_wall = now
                return 0.0
        elif now >= self._next_clock_wall:
            self._publish_clock(min(self.bag_time_at(now), self._pending.timestamp_ns))
        next_due = self._next_clock_wall
        if self._pending is not None:
            next_due = min(next_due, self.wall_time_of(self._pending.timestamp_ns))
        return max(next_due - time.monotonic(), 0.0)

    def _publish_clock(self, bag_ns: int) -> None:
        self._next_clock_wall = time.monotonic() + self.clock_period
        if bag_ns <= self._last_clock_ns:
            return
        self._last_clock_ns = bag_ns
        if self.clock_publisher is not None:
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(bag_ns, 1_000_000_000)
            self.clock_publisher.publish(clock)

    def _publish(self, message: BagMessage) -> None:
        self._publish_clock(message.timestamp_ns)
        publisher = self.publishers[message.topic]
        if message.msgtype == COMPRESSED_IMAGE and self.decompress_images:
            try:
                payload = compressed_to_image(message.message, depth_hint="depth" in message.topic)
            except ValueError as error:
                self.reader.stats.skip(message.topic, "undecodable_image", str(error))
                self.stats.skipped_undecodable += 1
                return
            self.stats.decoded += 1
        else:
            payload = message.raw
        publisher.publish(payload)
        self.stats.published += 1
        self.stats.by_topic[message.topic] = self.stats.by_topic.get(message.topic, 0) + 1
        if self.on_published is not None:
            header = getattr(message.message, "header", None)
            stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec if header is not None else None
            self.on_published(self.output_topic[message.topic], stamp, time.monotonic())


class PlayerNode(Node):
    def __init__(self) -> None:
        super().__init__("bag_player")
        self.params = declare_and_validate(self, PARAMETERS)
        p = self.params
        self.reader = None
        if not p["bag"]:
            self.get_logger().info("no bag given (parameter 'bag'): nothing to play")
            return
        self.reader = BagReader(p["bag"], parse_remaps(_clean(p["topic_remappings"])))
        self.reader.open()
        self.playback = BagPlayback(self, self.reader, p["rate"], _clean(p["topics"]), p["exclude_topics"],
                                    p["publish_clock"], p["clock_rate_hz"], p["latched_topics"],
                                    p["decompress_images"], p["tail_s"])
        if p["instruction"]:
            from std_msgs.msg import String
            latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.instruction_publisher = self.create_publisher(String, topics.INSTRUCTION, latched)
            self.instruction_publisher.publish(String(data=p["instruction"]))
        self.get_logger().info(f"playing {p['bag']} ({self.reader.storage}, {self.playback.total} messages on "
                               f"{len(self.playback.topics)} topics) at rate {p['rate']}")

    def wait_for_subscribers(self) -> bool:
        wanted = {t: 1 for t in _clean(self.params["wait_for_subscribers"])}
        deadline = time.monotonic() + self.params["wait_timeout_s"]
        while wanted and time.monotonic() < deadline:
            missing = self.playback.subscribers_missing(wanted)
            if not missing:
                return True
            rclpy.spin_once(self, timeout_sec=0.1)
        if wanted and self.playback.subscribers_missing(wanted):
            self.get_logger().error(f"no subscriber on {self.playback.subscribers_missing(wanted)} "
                                    f"after {self.params['wait_timeout_s']} s")
            return False
        return True

    def play(self) -> None:
        while rclpy.ok():
            wait = self.playback.step()
            if self.playback.done:
                break
            rclpy.spin_once(self, timeout_sec=min(wait, 0.05))
        stats = self.reader.stats
        self.get_logger().info(f"published {self.playback.stats.published} messages; skipped "
                               f"{stats.skipped_total}{' (bag truncated)' if stats.truncated else ''}")


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = PlayerNode()
        if node.reader is None:
            pass
        elif node.wait_for_subscribers():
            node.play()
        else:
            code = 1
    except (BagError, ValueError) as error:
        print(f"bag_player: {error}")
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None and node.reader is not None:
            node.reader.close()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
