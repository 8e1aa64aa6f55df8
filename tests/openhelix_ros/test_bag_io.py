"""Bags in both storage formats, every image encoding, custom types and damaged input.

No rclpy.init: messages are built in memory, serialized with rclpy's serializer (the bytes
``ros2 bag record`` would store), written with rosbags and read back through the reader, then
decoded with the same conversions the nodes use.
"""
import io
import os

import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from PIL import Image as PILImage
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Header, String

from openhelix_msgs.msg import TrajectoryChunk
from openhelix_ros.bags.io import (
    BagReader,
    BagWriter,
    MissingTopicError,
    compressed_to_image,
    decoded_image_topic,
    parse_remaps,
)
from openhelix_ros.conversions import arrays_to_pose, image_to_depth, image_to_rgb

STORAGES = ("sqlite3", "mcap")
RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)


def header(i=0):
    return Header(stamp=Time(sec=100, nanosec=1000 * i), frame_id="cam")


def image(encoding, pixels, i=0):
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return Image(header=header(i), height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * channels * pixels.itemsize, data=np.ascontiguousarray(pixels).tobytes())


COLOR = {
    "rgb8": (RGB, RGB),
    "bgr8": (RGB[..., ::-1], RGB),
    "rgba8": (np.concatenate([RGB, np.full((6, 5, 1), 9, np.uint8)], axis=2), RGB),
    "bgra8": (np.concatenate([RGB[..., ::-1], np.full((6, 5, 1), 9, np.uint8)], axis=2), RGB),
    "mono8": (GRAY, np.repeat(GRAY[..., None], 3, axis=2)),
}


def png(array) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_bag(path, storage, messages):
    """``messages``: list of (topic, type, rclpy message or raw bytes)."""
    with BagWriter(path, storage) as writer:
        for index, (topic, msgtype, message) in enumerate(messages):
            writer.add_topic(topic, msgtype)
            raw = message if isinstance(message, bytes) else serialize_message(message)
            writer.write(topic, 1_000_000_000 + index * 10_000_000, raw)
    return path


@pytest.mark.parametrize("storage", STORAGES)
def test_every_image_encoding_reads_back_with_its_values(tmp_path, storage):
    depth_mm = np.full((4, 3), 1234, dtype="<u2")
    depth_m = np.full((4, 3), 0.75, dtype="<f4")
    messages = [(f"/color/{enc}", "sensor_msgs/msg/Image", image(enc, pixels)) for enc, (pixels, _) in COLOR.items()]
    messages += [("/depth/16UC1", "sensor_msgs/msg/Image", image("16UC1", depth_mm)),
                 ("/depth/32FC1", "sensor_msgs/msg/Image", image("32FC1", depth_m))]
    bag = write_bag(tmp_path / "bag", storage, messages)
    with BagReader(bag) as reader:
        assert reader.storage == storage
        read = {m.topic: m for m in reader.messages()}
        assert reader.stats.skipped_total == 0
    assert set(read) == {topic for topic, _, _ in messages}
    for encoding, (_, expected) in COLOR.items():
        message = read[f"/color/{encoding}"]
        np.testing.assert_array_equal(image_to_rgb(message.to_ros()), expected)
        np.testing.assert_array_equal(image_to_rgb(message.message), expected)   # rosbags' object, same fields
    np.testing.assert_allclose(image_to_depth(read["/depth/16UC1"].to_ros()), 1.234, atol=1e-6)
    np.testing.assert_allclose(image_to_depth(read["/depth/32FC1"].to_ros()), 0.75)
    assert read["/depth/16UC1"].message.header.stamp.sec == 100


def test_compressed_images_decode_to_the_encodings_the_nodes_read():
    smooth = np.stack([*np.meshgrid(np.arange(16) * 8, np.arange(16) * 4, indexing="xy"), np.full((16, 16), 90)],
                      axis=2).astype(np.uint8)
    jpeg = io.BytesIO()
    PILImage.fromarray(smooth).save(jpeg, format="JPEG", quality=95)
    color = compressed_to_image(CompressedImage(header=header(3), format="jpeg", data=jpeg.getvalue()))
    assert color.encoding == "rgb8" and color.header.stamp.nanosec == 3000
    assert np.abs(image_to_rgb(color).astype(int) - smooth).mean() < 3       # jpeg is lossy
    exact = compressed_to_image(CompressedImage(format="rgb8; png compressed bgr8", data=png(RGB)))
    np.testing.assert_array_equal(image_to_rgb(exact), RGB)
    mono = compressed_to_image(CompressedImage(format="mono8; png compressed", data=png(GRAY)))
    np.testing.assert_array_equal(image_to_rgb(mono)[..., 0], GRAY)
    millimetres = np.full((4, 3), 1234, dtype=np.uint16)
    depth = compressed_to_image(CompressedImage(format="16UC1; compressedDepth png",
                                                data=bytes(12) + png(millimetres)), depth_hint=True)
    np.testing.assert_allclose(image_to_depth(depth), 1.234, atol=1e-6)
    with pytest.raises(ValueError, match="cannot decode"):
        compressed_to_image(CompressedImage(format="jpeg", data=b"not a jpeg"))
    assert decoded_image_topic("/cam/color/image_raw/compressed") == "/cam/color/image_raw"
    assert decoded_image_topic("/cam/depth/image_raw/compressedDepth") == "/cam/depth/image_raw"


@pytest.mark.parametrize("storage", STORAGES)
def test_custom_messages_round_trip_with_their_stored_definitions(tmp_path, storage):
    chunk = TrajectoryChunk(header=header(), sequence=5, poses=[arrays_to_pose([0.1, 0.2, 0.3], [0, 0, 0, 1])],
                            gripper_openness=[0.25], time_from_start=[Duration(sec=0, nanosec=33_000_000)],
                            goal_sequence=2, goal_instruction="open the drawer")
    bag = write_bag(tmp_path / "bag", storage, [("/openhelix/trajectory_chunk", "openhelix_msgs/msg/TrajectoryChunk",
                                                 chunk)])
    with BagReader(bag) as reader:
        (message,) = list(reader.messages())
        # The bag carries the definition: a reader knowing nothing of openhelix_msgs decodes it.
        connection = reader.connections[0]
        assert "geometry_msgs/Pose[] poses" in connection.msgdef.data
    assert message.message.poses[0].position.y == pytest.approx(0.2)
    assert message.to_ros().goal_instruction == "open the drawer"

    from rosbags.highlevel import AnyReader
    with AnyReader([bag]) as plain:       # rosbags alone, with only the bag's definitions
        (conn, _, raw), = list(plain.messages())
        assert plain.deserialize(raw, conn.msgtype).gripper_openness[0] == pytest.approx(0.25)


@pytest.mark.parametrize("storage", STORAGES)
def test_garbage_bytes_and_unknown_types_are_counted_and_skipped(tmp_path, storage, caplog):
    good = String(data="open the drawer")
    path = tmp_path / "bag"
    with BagWriter(path, storage) as writer:
        writer.add_topic("/instruction", "std_msgs/msg/String")
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        # A type whose definition is neither in the bag nor installed.
        writer.connections["/mystery"] = writer.writer.add_connection(
            "/mystery", "no_such_pkg/msg/Mystery", msgdef="", rihs01="RIHS01_" + "0" * 64)
        writer.write("/instruction", 1, serialize_message(good))
        writer.write("/joint_states", 2, b"\x00\x01\x00\x00" + os.urandom(3))               # cut short
        writer.write("/joint_states", 3, b"\x07\x07" + bytes(40))                          # bad encapsulation
        writer.write("/mystery", 4, b"\x00\x01\x00\x00abcd")
        writer.write("/joint_states", 5, serialize_message(JointState(name=["a"], position=[0.5])))
        writer.write("/instruction", 6, serialize_message(good))
    with BagReader(path) as reader:
        assert not reader.topics()["/mystery"].known
        messages = list(reader.messages())
        stats = reader.stats
    assert [m.timestamp_ns for m in messages] == [1, 5, 6]
    assert stats.skipped[("/joint_states", "corrupt")] == 2
    assert stats.skipped[("/mystery", "unknown_type")] == 1
    assert any("no_such_pkg/msg/Mystery" in w for w in stats.warnings)
    assert stats.to_dict()["skipped_by_cause"] == {"corrupt": 2, "unknown_type": 1}


def _truncate(bag, fraction=0.5):
    (storage_file,) = [p for p in bag.iterdir() if p.suffix in (".db3", ".mcap")]
    os.truncate(storage_file, int(storage_file.stat().st_size * fraction))
    return storage_file


@pytest.mark.parametrize("storage", STORAGES)
def test_a_truncated_file_yields_the_messages_before_the_damage(tmp_path, storage):
    frame = image("rgb8", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    bag = write_bag(tmp_path / "bag", storage, [("/img", "sensor_msgs/msg/Image", frame)] * 60)
    storage_file = _truncate(bag)
    for target in (bag, storage_file):          # the directory, or the storage file alone
        with BagReader(target) as reader:
            messages = list(reader.messages())
            assert 10 < len(messages) < 60
            assert reader.stats.truncated
            assert any("truncated" in w or "ends early" in w for w in reader.stats.warnings)
            np.testing.assert_array_equal(image_to_rgb(messages[-1].to_ros()), image_to_rgb(frame))


def test_a_bag_that_is_not_a_bag_fails_with_a_message(tmp_path):
    from openhelix_ros.bags.io import BagError
    (tmp_path / "junk.mcap").write_bytes(b"definitely not mcap")
    with pytest.raises(BagError, match="cannot open bag"):
        BagReader(tmp_path / "junk.mcap").open()
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "nothing").open()


def test_a_missing_required_topic_is_named_with_what_the_bag_has(tmp_path):
    bag = write_bag(tmp_path / "bag", "mcap", [("/camera/rgb", "sensor_msgs/msg/Image", image("rgb8", RGB))])
    with BagReader(bag) as reader:
        with pytest.raises(MissingTopicError) as error:
            reader.require({"/cameras/static/color/image_raw": "sensor_msgs/msg/Image", "/ee_pose": "geometry_msgs/PoseStamped"})
    text = str(error.value)
    assert "/cameras/static/color/image_raw" in text and "/ee_pose" in text
    assert "/camera/rgb [sensor_msgs/msg/Image, 1]" in text and "--remap" in text
    with BagReader(bag, parse_remaps(["/camera/rgb:=/cameras/static/color/image_raw"])) as reader:
        reader.require({"/cameras/static/color/image_raw": "sensor_msgs/msg/Image"})
        assert [m.topic for m in reader.messages()] == ["/cameras/static/color/image_raw"]
    with pytest.raises(ValueError, match="from:=to"):
        parse_remaps(["/a=/b"])


def test_a_bag_without_stored_definitions_reads_with_the_installed_ones(tmp_path):
    """rosbag2 sqlite3 bags before Iron store no message definitions."""
    bag = write_bag(tmp_path / "bag", "sqlite3", [("/instruction", "std_msgs/msg/String", String(data="hi"))])
    import sqlite3
    (db,) = bag.glob("*.db3")
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE message_definitions SET encoded_message_definition = ''")
    with BagReader(bag) as reader:
        assert [m.message.data for m in reader.messages()] == ["hi"]

