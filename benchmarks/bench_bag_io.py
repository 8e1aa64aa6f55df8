"""Bag read / write throughput, sqlite3 vs mcap, through openhelix_ros.bags.io (rosbags).

    python benchmarks/bench_bag_io.py [--messages N]

Writes N messages of each kind (a 200x200 rgb8 image as the sim publishes, a 640x480 rgb8
image, a PoseStamped) into a fresh bag per storage format, then reads them back raw and
deserialized. Prints messages/s and MB/s (payload bytes).
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from openhelix_ros.bags.io import BagReader, BagWriter
from openhelix_ros.conversions import rgb_to_image


def payloads():
    rng = np.random.default_rng(0)
    return {
        "image 200x200 rgb8": ("sensor_msgs/msg/Image",
                               serialize_message(rgb_to_image(rng.integers(0, 256, (200, 200, 3), np.uint8), Header()))),
        "image 640x480 rgb8": ("sensor_msgs/msg/Image",
                               serialize_message(rgb_to_image(rng.integers(0, 256, (480, 640, 3), np.uint8), Header()))),
        "PoseStamped": ("geometry_msgs/msg/PoseStamped", serialize_message(PoseStamped())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_bag_io_"))
    print(f"{'storage':8s} {'message':20s} {'size':>9s} | {'write msg/s':>11s} {'MB/s':>7s} | "
          f"{'read raw msg/s':>14s} {'MB/s':>7s} | {'read+deser msg/s':>16s} {'MB/s':>7s}")
    try:
        for name, (msgtype, raw) in payloads().items():
            for storage in ("sqlite3", "mcap"):
                path = root / f"{storage}-{name.replace(' ', '_')}"
                megabytes = options.messages * len(raw) / 1e6
                started = time.perf_counter()
                with BagWriter(path, storage) as writer:
                    writer.add_topic("/topic", msgtype)
                    for index in range(options.messages):
                        writer.write("/topic", 1_000_000_000 + index * 1_000_000, raw)
                write_s = time.perf_counter() - started
                timings = []
                for deserialize in (False, True):
                    started = time.perf_counter()
                    with BagReader(path) as reader:
                        count = sum(1 for _ in reader.messages(deserialize=deserialize))
                    assert count == options.messages
                    timings.append(time.perf_counter() - started)
                n = options.messages
                print(f"{storage:8s} {name:20s} {len(raw) / 1e3:7.1f}kB | {n / write_s:11.0f} {megabytes / write_s:7.1f} | "
                      f"{n / timings[0]:14.0f} {megabytes / timings[0]:7.1f} | "
                      f"{n / timings[1]:16.0f} {megabytes / timings[1]:7.1f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
