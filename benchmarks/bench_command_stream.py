#!/usr/bin/env python3
"""The controller's command stream and e-stop while a full-size System 1 computes (ROS, real node).

Starts the controller node as a process (``--preset openhelix_calvin``: the full-size 3D
Diffuser Actor, 650-900 ms per call on a 2-core CPU) in a ROS domain of its own, plays a
robot (two RGB-D cameras and the EE pose at 10 Hz, the EE pose following the commands) and
a planner (a goal twice a second) from this process, and prints

* the intervals between pose commands (by header stamp and by arrival) at the nominal
  ``command_rate_hz``: p50 / p99 / max, and System 1's duration from the node's diagnostics;
* e-stop latency during inference: ``/controller/engage_estop`` is called at random moments;
  the time to its answer, and from the request to the stamp of the last command published.

    python benchmarks/bench_command_stream.py --seconds 20 --estops 5
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from std_srvs.srv import Trigger

from openhelix_ros.conversions import stamp_to_seconds
from openhelix_ros.domains import isolated_domain_id

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "openhelix_bringup"))
from ros_test_harness import launched_with_robot, logs  # noqa: E402  (the tests' robot and recorder)


def percentiles(values_s: list[float]) -> str:
    if len(values_s) == 0:
        return "no samples"
    ms = 1000.0 * np.asarray(values_s)
    return f"p50 {np.percentile(ms, 50):6.1f}  p99 {np.percentile(ms, 99):6.1f}  max {ms.max():6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="openhelix_calvin", choices=("tiny", "openhelix_calvin"))
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the command stream is recorded")
    parser.add_argument("--estops", type=int, default=5, help="e-stop trials")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="System 1's torch threads; on 2 cores, 2 spinning OpenMP threads starve the executor "
                        "thread beside them")
    parser.add_argument("--max-chunk-latency", type=float, default=5.0,
                        help="controller max_chunk_latency_s: a full-size call takes 2-3 s on this 2-core CPU")
    parser.add_argument("--waypoint-period", type=float, default=0.4,
                        help="controller waypoint_period_s: a chunk arrives one call after its observation and must "
                        "still cover 'now' when the next one arrives, so its 19 waypoints must outlast two calls "
                        "(at 1/30 s they last 0.63 s, and nothing would be commanded)")
    parser.add_argument("--domain", type=int, default=isolated_domain_id(), help="ROS domain (default: an isolated one)")
    args = parser.parse_args()
    rclpy.init(domain_id=args.domain)
    log_directory = Path(tempfile.mkdtemp(prefix="bench_command_stream_"))
    overrides = {"controller": {"preset": args.preset, "torch_threads": str(args.torch_threads),
                                "max_chunk_latency_s": str(args.max_chunk_latency),
                                "waypoint_period_s": str(args.waypoint_period)}}
    with launched_with_robot({"controller"}, {"ROS_DOMAIN_ID": str(args.domain)}, log_directory, overrides,
                             follow_commands=True) as (recorder, robot, processes):
        if not recorder.spin_until(lambda: len(recorder.chunks) >= 3, 600, processes, also=[robot]):
            raise SystemExit(f"the controller did not act: {logs(processes)}")
        start = len(recorder.commands)
        arrivals: list[float] = []
        count = [start]

        def note_arrivals() -> bool:
            while count[0] < len(recorder.commands):
                arrivals.append(time.monotonic())
                count[0] += 1
            return False

        deadline = time.monotonic() + args.seconds
        recorder.spin_until(lambda: note_arrivals() or time.monotonic() > deadline, args.seconds + 5, processes,
                            also=[robot])
        window = recorder.commands[start:]
        stamps = [stamp_to_seconds(c.header.stamp) for c in window]
        status = recorder.controller_status()
        print(f"controller preset {args.preset}, command_rate_hz 30 (period 33.3 ms), waypoint_period_s "
              f"{args.waypoint_period}, {args.seconds:.0f} s: "
              f"{len(window)} pose commands ({len(window) / args.seconds:.1f} Hz), "
              f"{status.get('chunks_published', '?')} chunks in all, System 1 p50 "
              f"{status.get('system1_seconds_p50', '?')} s")
        print(f"command interval by stamp:   {percentiles(np.diff(stamps))}")
        print(f"command interval by arrival: {percentiles(np.diff(arrivals))}")

        engage = recorder.create_client(Trigger, "/controller/engage_estop")
        clear = recorder.create_client(Trigger, "/controller/clear_estop")
        answers, last_command = [], []
        for _ in range(args.estops):
            recorder.spin_for(random.uniform(0.5, 1.5), processes, also=[robot])
            requested = recorder.get_clock().now().nanoseconds * 1e-9
            future = engage.call_async(Trigger.Request())
            recorder.spin_until(future.done, 30, processes, also=[robot])
            answers.append(recorder.get_clock().now().nanoseconds * 1e-9 - requested)
            recorder.spin_for(2.0, processes, also=[robot])
            last = max(stamp_to_seconds(c.header.stamp) for c in recorder.commands)
            last_command.append(last - requested)
            future = clear.call_async(Trigger.Request())
            recorder.spin_until(future.done, 30, processes, also=[robot])
            acting = len(recorder.commands)
            recorder.spin_until(lambda acting=acting: len(recorder.commands) > acting + 5, 60, processes,
                                also=[robot])
        print(f"e-stop request -> answer:            {percentiles(answers)}")
        print(f"e-stop request -> last command stamp: {percentiles(last_command)} "
              "(negative: the last command came before the request)")
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
