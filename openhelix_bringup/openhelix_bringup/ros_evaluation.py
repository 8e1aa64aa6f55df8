"""The learning demo's episodes through the ROS nodes: ``openhelix eval-calvin --protocol tasks``
(sim bridge, planner and controller processes talking over topics), one subprocess per variant
so that each runs in ROS domains of its own."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from openhelix_sim.experiments.variants import variant_directory


def evaluate_variants_through_ros(checkpoints: Dict[str, Path], tasks: Sequence[str], seeds: Sequence[int],
                                  max_steps: int, execute_steps: int, static_size: int, gripper_size: int,
                                  out_dir, workers: int = 2, scene_variation: str = "task",
                                  execution: str = "chunks", backend: str = "embedded") -> Dict[str, Dict[str, List[bool]]]:
    """One ``openhelix eval-calvin --protocol tasks`` per variant checkpoint. With
    ``execution="chunks"`` the bridge executes ``execute_steps`` waypoints of a chunk, then asks
    for a new one; with ``"servo"`` it follows the controller's blended, limited command stream.
    Raises RuntimeError when an evaluation fails."""
    seeds = list(seeds)
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"the ROS evaluation takes consecutive seeds, got {seeds}")
    results = {}
    for variant, checkpoint in checkpoints.items():
        output = variant_directory(out_dir, variant)
        command = [sys.executable, "-m", "openhelix_bringup.cli", "eval-calvin", "--protocol", "tasks",
                   "--checkpoint", str(checkpoint), "--tasks", *tasks, "--episodes-per-task", str(len(seeds)),
                   "--first-seed", str(seeds[0]), "--scene-variation", scene_variation,
                   "--static-size", str(static_size), "--gripper-size", str(gripper_size),
                   "--execution-horizon", str(execute_steps), "--max-steps", str(max_steps),
                   "--execution", execution, *(["--replan-after-horizon"] if execution == "chunks" else []),
                   "--backend", backend, "--workers", str(workers), "--output", str(output)]
        start = time.perf_counter()
        completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"ROS evaluation of {variant!r} failed (exit {completed.returncode}):\n"
                               f"{completed.stdout[-3000:]}")
        records = json.loads((output / "calvin_eval.json").read_text())["sequences"]
        by_episode = {(r["initial_state"]["task"], r["initial_state"]["seed"]): r["completed"] == 1 for r in records}
        results[variant] = {task: [by_episode[(task, seed)] for seed in seeds] for task in tasks}
        rate = np.mean([x for r in results[variant].values() for x in r])
        print(f"[evaluate through ROS] {variant}: {100 * rate:.0f} % in {time.perf_counter() - start:.0f} s",
              flush=True)
    return results
