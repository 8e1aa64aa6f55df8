"""Environment steps per second of the in-process evaluation with N play-tables side by side.

The shipped play-table policy (``sim_bridge/checkpoints/play_table_demo``; with
``--system1-preset openhelix_calvin`` its System 1 replaced by the full-size architecture with
random weights) runs the learning table's single-task protocol on the same episodes for every N: System 1 is called once per
step for all N environments (:func:`openhelix_sim.evaluation_runner.run_together`), System 2
and the simulator still run once per environment. Prints wall time, environment steps and
steps per second per N, and whether every N gave the same outcomes (it must).

    python benchmarks/bench_batched_evaluation.py --environments 1 4 8 --sampler ddim --sampling-steps 3
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from openhelix_core.models.system1 import SYSTEM1_PRESETS, DiffuserActor, SamplerConfig
from openhelix_core.training.trainer import load_models_from_checkpoint
from openhelix_sim.experiments.cli import selected_tasks
from openhelix_sim.experiments.in_process import dual_system_policy, task_episode_results
from openhelix_sim.task_set import DEFAULT_TASKS, DEMO_IMAGE_SIZES, EVAL_SEED_OFFSET, EXECUTION_HORIZON

CHECKPOINT = Path(__file__).resolve().parents[1] / "sim_bridge" / "checkpoints" / "play_table_demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--environments", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--seeds", type=int, default=2, help="held-out start states per task")
    parser.add_argument("--max-steps", type=int, default=120, help="30 Hz steps per episode at most")
    parser.add_argument("--sampler", default="model")
    parser.add_argument("--sampling-steps", type=int, default=0)
    parser.add_argument("--system1-preset", choices=["", *sorted(SYSTEM1_PRESETS)], default="",
                        help="replace the trained System 1 by this architecture with random weights (e.g. "
                        "openhelix_calvin: the full-size call; outcomes then mean nothing, the rate does)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    system1, system2 = load_models_from_checkpoint(args.checkpoint)
    if args.system1_preset:
        torch.manual_seed(0)
        system1 = DiffuserActor(SYSTEM1_PRESETS[args.system1_preset](), system1.normalization)
    sampler = SamplerConfig.from_options(args.sampler, args.sampling_steps, fast=True)
    tasks, seeds = selected_tasks(args.tasks), [EVAL_SEED_OFFSET + k for k in range(args.seeds)]
    print(f"{args.checkpoint}{' with a random ' + args.system1_preset + ' System 1' if args.system1_preset else ''}: "
          f"{len(tasks)} tasks x {len(seeds)} seeds, <= {args.max_steps} steps each, "
          f"sampler {sampler.resolved(system1.config).describe()}, {torch.get_num_threads()} threads")
    reference = None
    for environments in args.environments:
        start = time.perf_counter()
        results = task_episode_results(lambda: dual_system_policy(system1, system2, sampler=sampler), tasks, seeds,
                                       args.max_steps, EXECUTION_HORIZON, DEMO_IMAGE_SIZES["static"],
                                       DEMO_IMAGE_SIZES["gripper"], False, "task", "embedded", environments)
        seconds = time.perf_counter() - start
        steps = sum(sum(r.info["steps_per_subtask"]) for r in results)
        outcomes = [r.completed for r in results]
        same = "" if reference is None else ("; same outcomes as N=1" if outcomes == reference
                                             else "; OUTCOMES DIFFER from N=1")
        reference = reference or outcomes
        print(f"N={environments:2d}: {seconds:7.1f} s, {steps} environment steps, {steps / seconds:6.1f} steps/s, "
              f"{sum(outcomes)}/{len(outcomes)} solved{same}", flush=True)


if __name__ == "__main__":
    main()
