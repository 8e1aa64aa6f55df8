#!/usr/bin/env python3
"""The planner node's answers while a large LLaVA computes (ROS, real node).

Writes a random-weight System 2 checkpoint of a large LLaVA (by default a 24-layer, 2048-wide
LLaMA in bfloat16, about 1.2 B parameters: what this 24 GB machine loads comfortably next to
the benchmark), starts the planner node on it, feeds it images and an instruction, and while
System 2 computes measures the time to answer lifecycle ``get_state`` and ``get_parameters``
requests, and the gaps between its ``/diagnostics`` messages (published at 1 Hz).

    python benchmarks/bench_planner_responsiveness.py --layers 24 --hidden 2048 --requests 40
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from lifecycle_msgs.srv import GetState
from rclpy.parameter_client import AsyncParameterClient
from std_msgs.msg import String

from openhelix_core.models.system2 import System2Config, System2Planner
from openhelix_ros import topics
from openhelix_ros.domains import isolated_domain_id
from openhelix_ros.qos import LATCHED

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "openhelix_bringup"))
from ros_test_harness import launched_with_robot, logs  # noqa: E402  (the tests' robot and recorder)


def large_checkpoint(directory: Path, layers: int, hidden: int) -> Path:
    config = System2Config.tiny(seed=0, torch_dtype="bfloat16")
    text = dict(config.llava_config["text_config"], hidden_size=hidden, intermediate_size=int(2.6875 * hidden),
                num_hidden_layers=layers, num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128)
    config = System2Config.tiny(seed=0, torch_dtype="bfloat16", llava_config=dict(config.llava_config, text_config=text))
    planner = System2Planner(config)
    parameters = sum(p.numel() for p in planner.parameters())
    planner.save_pretrained(directory)
    print(f"System 2 checkpoint: {layers} layers x {hidden} wide, {parameters / 1e9:.2f} B parameters, bfloat16")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--requests", type=int, default=40, help="get_state + get_parameters pairs while computing")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--domain", type=int, default=isolated_domain_id(), help="ROS domain (default: an isolated one)")
    args = parser.parse_args()
    torch.manual_seed(0)
    checkpoint = large_checkpoint(Path(tempfile.mkdtemp(prefix="bench_planner_")) / "system2", args.layers,
                                  args.hidden)
    rclpy.init(domain_id=args.domain)
    diagnostics_times: list[float] = []
    seen = [0]
    with launched_with_robot({"planner"}, {"ROS_DOMAIN_ID": str(args.domain)}, checkpoint.parent,
                             {"planner": {"checkpoint": str(checkpoint), "torch_threads": str(args.torch_threads)}}) as (
            recorder, robot, processes):
        recorder.pump_goals = False  # the goals counted are the planner's
        recorder.create_publisher(String, topics.INSTRUCTION, LATCHED).publish(String(data="open the drawer"))
        if not recorder.spin_until(lambda: len(recorder.goals) >= 1, 900, processes, also=[robot]):
            raise SystemExit(f"the planner published no goal: {logs(processes)}")
        states = recorder.create_client(GetState, "/planner/get_state")
        parameters = AsyncParameterClient(recorder, "planner")
        parameters.wait_for_services(timeout_sec=30)
        state_s, parameter_s, during_call = [], [], 0

        def planning() -> bool:
            return recorder.diagnostics.get("openhelix/planner", {}).get("planning") == "True"

        def note_diagnostics() -> None:
            while seen[0] < recorder.diagnostics_received:
                diagnostics_times.append(time.monotonic())
                seen[0] += 1

        for _ in range(args.requests):
            recorder.spin_until(lambda: note_diagnostics() or planning(), 120, processes, also=[robot])
            started = time.monotonic()
            future = states.call_async(GetState.Request())
            recorder.spin_until(future.done, 60, processes, also=[robot])
            state_s.append(time.monotonic() - started)
            started = time.monotonic()
            future = parameters.get_parameters(["rate_hz"])
            recorder.spin_until(future.done, 60, processes, also=[robot])
            parameter_s.append(time.monotonic() - started)
            during_call += planning()
            recorder.spin_for(0.2, processes, also=[robot])
            note_diagnostics()
        call_s = recorder.diagnostics.get("openhelix/planner", {}).get("system2_seconds_last", "?")
        print(f"System 2 call {call_s} s; {len(recorder.goals)} goals; {during_call}/{args.requests} request pairs "
              "answered while System 2 was computing")
        for name, values in (("get_state", state_s), ("get_parameters", parameter_s)):
            ms = 1000 * np.asarray(values)
            print(f"{name:26s} p50 {np.percentile(ms, 50):7.1f}  p99 {np.percentile(ms, 99):7.1f}  "
                  f"max {ms.max():7.1f} ms")
        # Messages handled in one spin share a time: the largest gap is the figure, not the spread.
        print(f"largest gap between /diagnostics messages (published at 1 Hz): "
              f"{1000 * np.diff(diagnostics_times).max():.0f} ms")
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
