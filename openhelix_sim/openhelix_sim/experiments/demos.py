"""Expert demonstrations in the play table (embedded, or calvin_env's scene D), written as a CALVIN split.

For every task and seed, put the play table in the task's randomised start state
(:func:`~openhelix_sim.start_states.initial_state`), run the scripted
:class:`~openhelix_sim.envs.expert.Expert` and keep the demonstration only if CALVIN's success
check passes; frames go to ``<out>/episode_*.npz`` with one language annotation per demo (the
sentence CALVIN's evaluation uses, or also its training paraphrases), plus ``camera_info.json``
(static camera pose, fields of view and the gripper camera's hand-eye transform, read from
the environment) so the training reader back-projects depth with exactly
the simulator's calibration.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from openhelix_core.data import CalvinEpisodeWriter

from ..envs import make_play_table
from ..envs.annotations import ANNOTATIONS, validation_annotation
from ..envs.expert import SUPPORTED, Expert
from ..evaluation_runner import oracle_for
from ..start_states import initial_state
from ..task_set import DEFAULT_TASKS, DEMO_IMAGE_SIZES

#: Written beside the demos: what was asked for and what was kept.
DEMOS_INFO = "demos_info.json"


def write_camera_info(env, directory) -> Path:
    """``camera_info.json`` in ``directory``: the calibration of ``env``'s cameras."""
    from openhelix_core.training.dataset import CameraCalibration

    calib = CameraCalibration(static_fov=float(env.cameras["static"].fov), static_to_base=env.camera_to_base("static"),
                              gripper_fov=float(env.cameras["gripper"].fov), gripper_to_tcp=env.camera_to_tcp("gripper"),
                              source=f"openhelix_sim.{type(env).__name__}")
    return calib.save(directory)


@dataclass
class DemoJob:
    task: str
    seed: int
    annotation: str
    scene_variation: str = "task"


def _run_expert(env, oracle, job: DemoJob, writer: Optional[CalvinEpisodeWriter]) -> tuple[bool, int]:
    obs = initial_state(env, job.task, job.seed, scene_variation=job.scene_variation)
    start = oracle.capture(env)
    first = writer.start_episode() if writer is not None else 0
    steps = 0
    for action in Expert().plan(job.task, env):
        if writer is not None:
            writer.add_frame(obs, action)
        obs = env.step(action)
        steps += 1
    ok = oracle.succeeded(job.task, start, oracle.capture(env))
    if writer is not None:
        writer.annotate(first, writer.last_index, job.task, job.annotation)
        writer.end_episode()
    return ok, steps


def _demo_worker(args) -> dict:
    directory, jobs, start_index, static_size, gripper_size, backend = args
    env = make_play_table(backend, image_size_static=static_size, image_size_gripper=gripper_size,
                          render_static=False, render_gripper=False)
    oracle = oracle_for(backend)
    writer = CalvinEpisodeWriter(directory, start_index=start_index)
    kept, failed = [], []
    try:
        for job in jobs:
            env.render_static = env.render_gripper = False
            ok, _ = _run_expert(env, oracle, job, None)  # dry run without rendering: keep successful demos only
            if not ok:
                failed.append((job.task, job.seed))
                continue
            env.render_static = env.render_gripper = True
            _run_expert(env, oracle, job, writer)
            kept.append((job.task, job.seed))
    finally:
        env.close()
    return {"writer": writer, "kept": kept, "failed": failed}


def generate_demos(out_dir, tasks: Sequence[str] = DEFAULT_TASKS, episodes_per_task: int = 16, seed: int = 0,
                   static_size: int = DEMO_IMAGE_SIZES["static"], gripper_size: int = DEMO_IMAGE_SIZES["gripper"],
                   workers: int = 1, paraphrases: bool = False, scene_variation: str = "task",
                   backend: str = "embedded") -> dict:
    """Write a CALVIN split of successful expert demos to ``out_dir`` (see the module doc); seeds
    ``seed .. seed + episodes_per_task - 1`` of every task, recorded in ``backend``'s play-table
    (``"calvin"``: calvin_env's scene D, each demo judged by CALVIN's own oracle).

    Returns ``{"kept": [(task, seed)], "failed": [...], "frames": n, "seconds": s}``."""
    out_dir = Path(out_dir)
    for task in tasks:
        if task not in SUPPORTED:
            raise ValueError(f"the scripted expert cannot perform {task!r}")
    jobs = []
    for task in tasks:
        for k in range(episodes_per_task):
            sentences = ANNOTATIONS[task] if paraphrases else (validation_annotation(task),)
            jobs.append(DemoJob(task, seed + k, sentences[k % len(sentences)], scene_variation))
    workers = max(1, min(int(workers), len(jobs)))
    shards = [jobs[w::workers] for w in range(workers)]
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [(out_dir, shard, w * 1_000_000, static_size, gripper_size, backend) for w, shard in enumerate(shards)]
    if workers == 1:
        parts = [_demo_worker(args[0])]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_demo_worker, args)
    merged = CalvinEpisodeWriter(out_dir)
    for part in parts:
        merged.include(part["writer"])
    merged.close()
    env = make_play_table(backend, image_size_static=static_size, image_size_gripper=gripper_size,
                          render_static=False, render_gripper=False)
    try:
        write_camera_info(env, out_dir)
    finally:
        env.close()
    frames = int(sum(e - s + 1 for s, e in merged.episodes))
    summary = {"kept": [k for p in parts for k in p["kept"]], "failed": [f for p in parts for f in p["failed"]],
               "frames": frames, "seconds": time.perf_counter() - start}
    (out_dir / DEMOS_INFO).write_text(json.dumps({**summary, "tasks": list(tasks), "static_size": static_size,
                                                  "gripper_size": gripper_size, "scene_variation": scene_variation,
                                                  "backend": backend},
                                                 indent=2) + "\n")
    return summary
