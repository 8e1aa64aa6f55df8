"""The learning demo's evaluations through the ROS nodes: ``openhelix eval-calvin`` (sim bridge,
planner and controller processes talking over topics) with ``--protocol tasks`` (single-task
episodes) or CALVIN's chains, one subprocess per variant so that each runs in ROS domains of its own."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from openhelix_core.evaluation.metrics import EvaluationSummary, SequenceResult
from openhelix_sim.experiments.variants import variant_directory


def run_openhelix(arguments: List[str], what: str) -> str:
    """``python -m openhelix_bringup.cli ARGUMENTS`` in a subprocess; its output, or RuntimeError
    naming ``what`` with the output's tail when it fails."""
    completed = subprocess.run([sys.executable, "-m", "openhelix_bringup.cli", *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {completed.returncode}):\n{completed.stdout[-3000:]}")
    return completed.stdout


def _eval_calvin(variant: str, checkpoint: Path, protocol_arguments: List[str], max_steps: int, execute_steps: int,
                 static_size: int, gripper_size: int, output: Path, workers: int, execution: str,
                 backend: str, sampler_arguments: Sequence[str]) -> List[dict]:
    """One ``openhelix eval-calvin`` run; returns its sequence records (RuntimeError if it fails)."""
    run_openhelix(["eval-calvin", *protocol_arguments,
                   "--checkpoint", str(checkpoint), "--static-size", str(static_size), "--gripper-size", str(gripper_size),
                   "--execution-horizon", str(execute_steps), "--max-steps", str(max_steps),
                   "--execution", execution, *(["--replan-after-horizon"] if execution == "chunks" else []),
                   "--backend", backend, "--workers", str(workers), "--output", str(output), *sampler_arguments],
                  f"ROS evaluation of {variant!r}")
    return json.loads((output / "calvin_eval.json").read_text())["sequences"]


def evaluate_variants_through_ros(checkpoints: Dict[str, Path], tasks: Sequence[str], seeds: Sequence[int],
                                  max_steps: int, execute_steps: int, static_size: int, gripper_size: int,
                                  out_dir, workers: int = 2, scene_variation: str = "task",
                                  execution: str = "chunks", backend: str = "embedded",
                                  sampler_arguments: Sequence[str] = ()) -> Dict[str, Dict[str, List[bool]]]:
    """One ``openhelix eval-calvin --protocol tasks`` per variant checkpoint. With
    ``execution="chunks"`` the bridge executes ``execute_steps`` waypoints of a chunk, then asks
    for a new one; with ``"servo"`` it follows the controller's blended, limited command stream.
    ``sampler_arguments`` (``--sampler ...``) go to ``eval-calvin`` for System 1.
    Raises RuntimeError when an evaluation fails."""
    seeds = list(seeds)
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"the ROS evaluation takes consecutive seeds, got {seeds}")
    results = {}
    for variant, checkpoint in checkpoints.items():
        start = time.perf_counter()
        records = _eval_calvin(variant, checkpoint, ["--protocol", "tasks", "--tasks", *tasks, "--episodes-per-task",
                                                     str(len(seeds)), "--first-seed", str(seeds[0]),
                                                     "--scene-variation", scene_variation],
                               max_steps, execute_steps, static_size, gripper_size,
                               variant_directory(out_dir, variant), workers, execution, backend, sampler_arguments)
        by_episode = {(r["initial_state"]["task"], r["initial_state"]["seed"]): r["completed"] == 1 for r in records}
        results[variant] = {task: [by_episode[(task, seed)] for seed in seeds] for task in tasks}
        rate = np.mean([x for r in results[variant].values() for x in r])
        print(f"[evaluate through ROS] {variant}: {100 * rate:.0f} % in {time.perf_counter() - start:.0f} s",
              flush=True)
    return results


def evaluate_chains_through_ros(checkpoints: Dict[str, Path], sequences: int, max_steps: int, execute_steps: int,
                                static_size: int, gripper_size: int, out_dir, workers: int = 2,
                                execution: str = "chunks", backend: str = "embedded",
                                sampler_arguments: Sequence[str] = ()) -> Dict[str, EvaluationSummary]:
    """One ``openhelix eval-calvin`` (CALVIN's protocol, its first ``sequences`` sequences) per
    variant checkpoint; raises RuntimeError when an evaluation fails or leaves sequences out."""
    summaries = {}
    for variant, checkpoint in checkpoints.items():
        start = time.perf_counter()
        records = _eval_calvin(variant, checkpoint, ["--protocol", "calvin", "--sequences", str(sequences)],
                               max_steps, execute_steps, static_size, gripper_size,
                               variant_directory(Path(out_dir) / "chains", variant), workers, execution, backend,
                               sampler_arguments)
        if len(records) != sequences:
            raise RuntimeError(f"ROS chain evaluation of {variant!r} returned {len(records)} of {sequences} sequences")
        summaries[variant] = EvaluationSummary.from_results([SequenceResult.from_dict(r) for r in records])
        print(f"[evaluate chains through ROS] {variant}: average length {summaries[variant].average_length:.2f} "
              f"in {time.perf_counter() - start:.0f} s", flush=True)
    return summaries
