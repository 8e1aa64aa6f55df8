#!/usr/bin/env python
"""Success table of the scripted expert, per CALVIN task, in the embedded play table and in
CALVIN's own scene D (when calvin_env is installed).

Every episode starts from the start state of ``(task, seed)`` built in the embedded env
(:func:`openhelix_sim.start_states.initial_state`, ``scene_variation="full"``); the real env is
reset to the same robot_obs / scene_obs. Success in the embedded env: :mod:`openhelix_sim.envs.tasks`;
in the real env: CALVIN's own oracle (``new_playtable_tasks.yaml`` instantiated by hydra, as
CALVIN's evaluation does), comparing ``env.get_info()`` at the start with the one after every step.
A start state that cannot be built, or a plan that refuses its start state (``ValueError``,
printed on stderr), counts as a failure.

    python scripts/expert_table.py [--seeds 10] [--tasks open_drawer,...] [--envs embedded,calvin]
"""
from __future__ import annotations

import argparse
import os
import sys

from openhelix_sim.envs import PlayTableEnv
from openhelix_sim.envs import calvin_backend as cb
from openhelix_sim.envs.expert import Expert
from openhelix_sim.envs.tasks import TASKS, SceneState, task_succeeded
from openhelix_sim.evaluation_runner import CalvinTaskOracle
from openhelix_sim.start_states import initial_state

TASKS_YAML = "calvin_models/conf/callbacks/rollout/tasks/new_playtable_tasks.yaml"


def calvin_tasks_config() -> str:
    """CALVIN's task oracle config: $CALVIN_ROOT, else the shared checkout next to the project."""
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.environ.get("CALVIN_ROOT"), os.path.join(here, "..", "..", "shared", "calvin", "calvin")):
        if root and os.path.isfile(os.path.join(root, TASKS_YAML)):
            return os.path.join(root, TASKS_YAML)
    raise FileNotFoundError(f"CALVIN's {TASKS_YAML} not found: set CALVIN_ROOT to a clone of mees/calvin")


def run_embedded(env, task: str) -> bool:
    start = SceneState.capture(env)
    for action in Expert().plan(task, env):
        env.step(action)
        if task_succeeded(task, start, SceneState.capture(env)):
            return True
    return False


def run_calvin(env, oracle, task: str) -> bool:
    start = oracle.capture(env)
    for action in Expert().plan(task, env):
        env.step(action)
        if oracle.succeeded(task, start, oracle.capture(env)):
            return True
    return False


def sweep(tasks, seeds, envs, out=sys.stdout) -> dict:
    emb = PlayTableEnv(render_static=False, render_gripper=False)
    real = oracle = None
    if "calvin" in envs:
        real = cb.CalvinPlayTableEnv(scene="D", render_static=False, render_gripper=False)
        oracle = CalvinTaskOracle(calvin_tasks_config())
    table = {}
    print(f"| task | embedded ({len(seeds)}) | CALVIN scene D ({len(seeds)}) |", file=out)
    print("|---|---|---|", file=out)
    for task in tasks:
        wins = {"embedded": 0, "calvin": 0}
        for seed in seeds:
            try:
                obs = initial_state(emb, task, seed, scene_variation="full")
            except ValueError as e:  # no start state where the task's precondition holds
                print(f"  {task} seed {seed}: no start state: {e}", file=sys.stderr)
                continue
            if "embedded" in envs:
                try:
                    wins["embedded"] += run_embedded(emb, task)
                except ValueError as e:
                    print(f"  {task} seed {seed} embedded: {e}", file=sys.stderr)
            if real is not None:
                real.reset(robot_obs=obs["robot_obs"], scene_obs=obs["scene_obs"])
                try:
                    wins["calvin"] += run_calvin(real, oracle, task)
                except ValueError as e:
                    print(f"  {task} seed {seed} calvin: {e}", file=sys.stderr)
        table[task] = wins
        cells = [f"{wins[k]}/{len(seeds)}" if k in envs else "—" for k in ("embedded", "calvin")]
        print(f"| {task} | {cells[0]} | {cells[1]} |", file=out, flush=True)
    emb.close()
    if real is not None:
        real.close()
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="start states per task (seeds 0 .. N-1)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated CALVIN task names")
    ap.add_argument("--envs", default="embedded,calvin", help="embedded, calvin or both")
    args = ap.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        ap.error(f"unknown CALVIN task(s) {unknown}")
    envs = set(args.envs.split(","))
    if "calvin" in envs and not cb.calvin_env_available():
        ap.error("--envs calvin needs calvin_env installed")
    sweep(tasks, list(range(args.seeds)), envs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
