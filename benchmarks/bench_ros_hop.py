"""ROS hop benchmark: one message from one process to another, and the conversions around it.

Prints, per message kind, the delivery ratio and the publish->receive latency (p50 / p95 ms)
between two processes, once with the suite's Fast DDS profile (large shared-memory segment)
and once with Fast DDS's defaults, plus the cost of the numpy Image conversions.

    source scripts/env.sh && python benchmarks/bench_ros_hop.py [--count 100]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

KINDS = {
    "image 200x200 rgb8 (CALVIN static)": (200, 200),
    "image 640x480 rgb8": (480, 640),
    "image 1280x720 rgb8": (720, 1280),
}


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


def subscriber(count: int, seconds: float) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from openhelix_ros.conversions import stamp_to_seconds

    rclpy.init()
    node = rclpy.create_node("hop_subscriber")
    latencies: list[float] = []

    def on_image(msg: Image) -> None:
        latencies.append(time.time() - stamp_to_seconds(msg.header.stamp))

    node.create_subscription(Image, "/bench/image", on_image, qos_profile_sensor_data)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(latencies) < count:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(latencies), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def publisher(shape: tuple[int, int], count: int) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from openhelix_ros.conversions import rgb_to_image, seconds_to_stamp

    rclpy.init()
    node = rclpy.create_node("hop_publisher")
    image_publisher = node.create_publisher(Image, "/bench/image", qos_profile_sensor_data)
    deadline = time.monotonic() + 20
    while image_publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    rgb = np.random.default_rng(0).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    for _ in range(count):
        image_publisher.publish(rgb_to_image(rgb, Header(stamp=seconds_to_stamp(time.time()))))
        time.sleep(1 / 30)
    node.destroy_node()
    rclpy.try_shutdown()


def hop(shape: tuple[int, int], count: int, environment: dict[str, str]) -> list[float]:
    """Runs publisher and subscriber as two fresh processes (Fast DDS reads its profile once)."""
    role = [sys.executable, __file__, "--count", str(count), "--height", str(shape[0]), "--width", str(shape[1])]
    receiving = subprocess.Popen([*role, "--role", "subscriber"], stdout=subprocess.PIPE, env=environment, text=True)
    subprocess.run([*role, "--role", "publisher"], env=environment, check=True)
    output, _ = receiving.communicate(timeout=120)
    return json.loads(output.strip().splitlines()[-1])


def bench_conversions() -> None:
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from openhelix_ros.conversions import image_to_depth, image_to_rgb, rgb_to_image

    rng = np.random.default_rng(0)
    for name, (height, width) in KINDS.items():
        rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        msg = rgb_to_image(rgb, Header(), "bgr8")
        depth = Image(height=height, width=width, encoding="16UC1", step=2 * width,
                      data=rng.integers(0, 4000, size=(height, width), dtype=np.uint16).tobytes())
        for label, fn, arg in (("bgr8 -> rgb", image_to_rgb, msg), ("16UC1 -> metres", image_to_depth, depth),
                               ("rgb -> Image", lambda a: rgb_to_image(a, Header()), rgb)):
            times = []
            for _ in range(30):
                start = time.perf_counter()
                fn(arg)
                times.append(time.perf_counter() - start)
            print(f"  {name:38s} {label:16s} p50 {percentile_ms(times, 50):7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--role", choices=("subscriber", "publisher"))
    parser.add_argument("--height", type=int, default=0)
    parser.add_argument("--width", type=int, default=0)
    options = parser.parse_args()
    if options.role == "subscriber":
        subscriber(options.count, seconds=options.count / 30 + 30)
        return
    if options.role == "publisher":
        publisher((options.height, options.width), options.count)
        return
    print("ROS hop between two processes, best-effort sensor QoS, 30 Hz")
    for profile_name in ("suite Fast DDS profile", "Fast DDS defaults"):
        environment = dict(os.environ)
        if profile_name == "Fast DDS defaults":
            environment.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
        for kind, shape in KINDS.items():
            latencies = hop(shape, options.count, environment)
            print(f"  {profile_name:24s} {kind:38s} delivered {len(latencies):4d}/{options.count}  "
                  f"latency p50 {percentile_ms(latencies, 50):6.2f} ms  p95 {percentile_ms(latencies, 95):6.2f} ms",
                  flush=True)
    print("Conversions (numpy, no cv_bridge)")
    bench_conversions()


if __name__ == "__main__":
    main()
