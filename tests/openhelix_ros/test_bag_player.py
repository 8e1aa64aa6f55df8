"""The player publishes a bag's messages on their (remapped) topics with /clock, in one process.

rclpy runs in a private context and ROS domain; waits are event-driven with generous timeouts.
"""
import io
import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from PIL import Image as PILImage
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from openhelix_ros.bags.io import BagReader, BagWriter, parse_remaps
from openhelix_ros.bags.player_node import BagPlayback
from openhelix_ros.conversions import image_to_depth, image_to_rgb
from openhelix_ros.domains import isolated_domain_id

START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 50_000_000
FRAMES = 8
RGB = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def stamp(i):
    return Time(sec=(START_NS + i * PERIOD_NS) // 1_000_000_000, nanosec=(START_NS + i * PERIOD_NS) % 1_000_000_000)


def make_bag(path):
    buffer = io.BytesIO()
    PILImage.fromarray(RGB).save(buffer, format="PNG")
    depth = np.full((6, 8), 1234, dtype="<u2")
    with BagWriter(path, "mcap") as writer:
        writer.add_topic("/instruction", "std_msgs/msg/String")
        writer.add_topic("/robot/cam/image_raw/compressed", "sensor_msgs/msg/CompressedImage")
        writer.add_topic("/robot/depth", "sensor_msgs/msg/Image")
        writer.add_topic("/openhelix/trajectory_chunk", "std_msgs/msg/String")   # a policy output: not played
        writer.write("/instruction", START_NS, serialize_message(String(data="open the drawer")))
        for i in range(FRAMES):
            t = START_NS + i * PERIOD_NS
            writer.write("/robot/cam/image_raw/compressed", t, serialize_message(
                CompressedImage(header=Header(stamp=stamp(i)), format="png", data=buffer.getvalue())))
            raw = serialize_message(Image(header=Header(stamp=stamp(i)), height=6, width=8, encoding="16UC1",
                                          step=16, data=depth.tobytes()))
            writer.write("/robot/depth", t, raw if i != 3 else raw[:10])                # frame 3 is cut short
            writer.write("/openhelix/trajectory_chunk", t, serialize_message(String(data="old output")))
    return path


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=isolated_domain_id())
    yield context
    rclpy.try_shutdown(context=context)


def test_player_publishes_decoded_remapped_messages_and_the_clock(tmp_path, ros_context):
    bag = make_bag(tmp_path / "bag")
    player_node = rclpy.create_node("bag_player_test", context=ros_context)
    listener = rclpy.create_node("listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(player_node)
    executor.add_node(listener)
    received = {"color": [], "depth": [], "clock": [], "instruction": [], "chunk": []}
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    listener.create_subscription(Image, "/cameras/static/color/image_raw", received["color"].append, reliable)
    listener.create_subscription(Image, "/cameras/static/depth/image_raw", received["depth"].append, reliable)
    listener.create_subscription(Clock, "/clock", received["clock"].append, reliable)
    listener.create_subscription(String, "/openhelix/trajectory_chunk", received["chunk"].append, reliable)
    remaps = parse_remaps(["/robot/cam/image_raw/compressed:=/cameras/static/color/image_raw/compressed",
                           "/robot/depth:=/cameras/static/depth/image_raw"])
    try:
        with BagReader(bag, remaps) as reader:
            playback = BagPlayback(player_node, reader, rate=2.0, tail_s=0.1)
            assert "/openhelix/trajectory_chunk" not in playback.topics
            wanted = {"/cameras/static/color/image_raw": 1, "/cameras/static/depth/image_raw": 1}
            deadline = time.monotonic() + 60
            while playback.subscribers_missing(wanted) and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            assert not playback.subscribers_missing(wanted)
            # A latched subscriber that joins late still gets the instruction.
            started = time.monotonic()
            while not playback.done:
                executor.spin_once(timeout_sec=min(playback.step(), 0.02))
            assert time.monotonic() - started >= (FRAMES - 1) * PERIOD_NS / 1e9 / 2.0 * 0.9   # rate 2: half time
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            listener.create_subscription(String, "/instruction", received["instruction"].append, latched)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (len(received["color"]) < FRAMES or
                                                    len(received["depth"]) < FRAMES - 1 or
                                                    not received["instruction"]):
                executor.spin_once(timeout_sec=0.05)
            stats = reader.stats
    finally:
        executor.shutdown()
        player_node.destroy_node()
        listener.destroy_node()
    assert len(received["color"]) == FRAMES and received["chunk"] == []
    np.testing.assert_array_equal(image_to_rgb(received["color"][-1]), RGB)
    assert received["color"][2].header.stamp == stamp(2)
    assert len(received["depth"]) == FRAMES - 1                       # the cut frame was skipped
    np.testing.assert_allclose(image_to_depth(received["depth"][0]), 1.234, atol=1e-6)
    assert stats.skipped[("/cameras/static/depth/image_raw", "corrupt")] == 1
    assert received["instruction"][0].data == "open the drawer"
    clock = [c.clock.sec * 1_000_000_000 + c.clock.nanosec for c in received["clock"]]
    assert clock == sorted(clock) and clock[0] == START_NS
    assert clock[-1] >= START_NS + (FRAMES - 1) * PERIOD_NS
