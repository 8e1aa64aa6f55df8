#!/usr/bin/env python3
"""Chunk boundaries and inference latency, in process: the command stream a real arm gets.

Runs the shipped play-table policy in the embedded play-table as the controller node runs it
against a servo-driven arm -- the same :class:`~openhelix_core.runtime.chunking.CommandStream`
(blender + limiter) with the controller's default limits, one pose command per 30 Hz tick --
but with simulated time, so that System 1's latency is exact and repeatable: a chunk computed
from the observation of tick ``k`` is added at tick ``k + L``. For every blend mode
(``replace``, ``ensemble``, ``rtc``) and latency it prints

* the boundary jump: at each tick a chunk arrives, how much the commanded target's per-tick
  motion changes (the second difference of the unlimited blended target), mean / p95 / max in mm;
* success on the learning-table protocol (six tasks, held-out seeds) with servo execution.

    python benchmarks/bench_chunk_boundaries.py --latencies 1 9 --seeds 1
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from openhelix_core.runtime.chunking import MODES, CommandStream
from openhelix_core.runtime.controller import TrajectoryController
from openhelix_core.runtime.planner import GoalPlanner
from openhelix_core.runtime.safety import SafetyLimits
from openhelix_core.types import Goal
from openhelix_sim.envs import PlayTableEnv
from openhelix_sim.envs.annotations import validation_annotation
from openhelix_sim.envs.tasks import SceneState, task_succeeded
from openhelix_sim.execution import hold_action, waypoint_to_absolute_action
from openhelix_sim.observation import observation_from_env
from openhelix_sim.start_states import initial_state
from openhelix_sim.task_set import DEFAULT_TASKS, EVAL_SEED_OFFSET

REPO = Path(__file__).resolve().parents[1]
TICK_S = 1.0 / 30.0
CONTROL_EVERY = 3  # the controller's control_rate_hz 10 against 30 Hz commands


def boundary_jumps(targets: dict[int, np.ndarray], arrivals: list[int]) -> list[float]:
    """At each tick a chunk arrived: how much the target's per-tick motion changed there (mm),
    ``|(x[k+1] - x[k]) - (x[k] - x[k-1])|`` -- a jump of the plan shows as a spike, a plan
    continued smoothly as about zero."""
    return [1000.0 * float(np.linalg.norm(targets[k + 1] - 2 * targets[k] + targets[k - 1]))
            for k in arrivals if all(i in targets for i in (k - 1, k, k + 1))]


def run_episode(system1: TrajectoryController, planner: GoalPlanner, env: PlayTableEnv, task: str, seed: int,
                mode: str, latency_ticks: int, max_steps: int) -> tuple[bool, list[float]]:
    initial_state(env, task, seed)
    start = SceneState.capture(env)
    system1.reset()
    system1.generator.manual_seed(seed)
    observation = observation_from_env(env, stamp=0.0)
    goal_embedding = planner.plan(observation.cameras["static"].rgb, validation_annotation(task))
    goal = Goal(embedding=goal_embedding, sequence=1, instruction=validation_annotation(task), stamp=0.0)
    stream = CommandStream(SafetyLimits(workspace_max=(0.8, 0.8, 1.2)), mode, execution_horizon=19,
                           command_period_s=TICK_S)
    hold = hold_action(env)
    pending, targets, arrivals = None, {}, []
    for tick in range(max_steps):
        now = tick * TICK_S
        if pending is not None and tick >= pending[2]:
            stream.add(pending[0], pending[1], now)
            arrivals.append(tick)
            pending = None
        if pending is None and tick % CONTROL_EVERY == 0:
            observation = observation_from_env(env, stamp=now)
            committed = None
            if mode == "rtc":
                committed = stream.committed(now, now + latency_ticks * TICK_S, TICK_S,
                                             system1.model.config.trajectory_length - 1)
            pending = (system1.act(observation, goal, committed=committed), now, tick + latency_ticks)
        target = stream.blender.sample(now)
        if target is not None:
            targets[tick] = target[0]
        command = stream.command(now, *env.tcp_pose())
        if command is not None:
            hold = waypoint_to_absolute_action(command.position, command.orientation, command.gripper_openness)
        env.step(hold, action_type="absolute")
        if task_succeeded(task, start, SceneState.capture(env)):
            return True, boundary_jumps(targets, arrivals)
    return False, boundary_jumps(targets, arrivals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "sim_bridge" / "checkpoints" / "play_table_demo"))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--latencies", nargs="+", type=int, default=[1, 9],
                        help="System 1 latency in 30 Hz ticks (1 = 33 ms, 9 = 300 ms)")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--seeds", type=int, default=5, help="held-out start states per task")
    parser.add_argument("--max-steps", type=int, default=240)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint)
    system1 = TrajectoryController.load(checkpoint=str(checkpoint / "system1"))
    planner = GoalPlanner.load(checkpoint=str(checkpoint / "system2"))
    env = PlayTableEnv(seed=0, image_size_static=64, image_size_gripper=48)
    seeds = [EVAL_SEED_OFFSET + k for k in range(args.seeds)]
    print(f"shipped policy {checkpoint.name}, servo execution in process, {len(args.tasks)} tasks x {len(seeds)} "
          f"seeds, {args.max_steps} steps, System 1 every {CONTROL_EVERY} ticks")
    print(f"{'mode':9s} {'latency':>9s} {'success':>9s} {'jump mean':>10s} {'p95':>7s} {'max':>7s}  (mm)   time")
    try:
        for latency in args.latencies:
            for mode in args.modes:
                started, successes, jumps = time.perf_counter(), 0, []
                for task in args.tasks:
                    for seed in seeds:
                        ok, episode_jumps = run_episode(system1, planner, env, task, seed, mode, latency,
                                                        args.max_steps)
                        successes += ok
                        jumps += episode_jumps
                jumps_mm = np.array(jumps) if jumps else np.zeros(1)
                total = len(args.tasks) * len(seeds)
                print(f"{mode:9s} {1000 * latency * TICK_S:7.0f}ms {successes:4d}/{total:<4d} "
                      f"{jumps_mm.mean():10.2f} {np.percentile(jumps_mm, 95):7.2f} {jumps_mm.max():7.2f}"
                      f"         {time.perf_counter() - started:5.0f} s", flush=True)
    finally:
        env.close()


if __name__ == "__main__":
    main()
