"""Expert demonstrations in the play table (embedded, or calvin_env's scene D), written as a CALVIN split.

For every task and seed, put the play table in the task's randomised start state
(:func:`~openhelix_sim.start_states.initial_state`), run the scripted
:class:`~openhelix_sim.envs.expert.Expert` and keep the demonstration only if CALVIN's success
check passes; frames go to ``<out>/episode_*.npz`` with one language annotation per demo (the
sentence CALVIN's evaluation uses, or also its training paraphrases), plus ``camera_info.json``
(static camera pose, fields of view and the gripper camera's hand-eye transform, read from
the environment) so the training reader back-projects depth with exactly
the simulator's calibration.

With ``scene_variation="calvin"`` the demos are CALVIN-style chains instead
(:func:`generate_chain_demos`): from a CALVIN scene-D reset state, the expert does the five
subtasks of a CALVIN sequence one after the other, each subtask saved as one demo when the
oracle passes it, so that the policy also sees the states in which a chain's later subtasks
begin (the arm where the last one left it, blocks lifted, moved or stacked).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from openhelix_core.data import CalvinEpisodeWriter
from openhelix_core.evaluation.sequences import get_sequences

from ..envs import make_play_table
from ..envs.annotations import ANNOTATIONS, validation_annotation
from ..envs.expert import SUPPORTED, Expert
from ..evaluation_runner import oracle_for
from ..start_states import initial_state, reset_to_calvin_state
from ..task_set import DEFAULT_TASKS, DEMO_IMAGE_SIZES

#: Written beside the demos: what was asked for and what was kept.
DEMOS_INFO = "demos_info.json"

#: Seed of the CALVIN-style sequences the chain demos follow (CALVIN's evaluation list is seed 0).
CHAIN_DEMO_SEED = 1

#: Chain demos per call by default: one per CALVIN reset state.
DEFAULT_DEMO_CHAINS = 192


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


def demo_jobs(tasks: Sequence[str], episodes_per_task: int, seed: int = 0, paraphrases: bool = False,
              scene_variation: str = "task") -> list[DemoJob]:
    """The single-task demos of :func:`generate_demos`, task by task: seeds ``seed ..
    seed + episodes_per_task - 1``, each with CALVIN's validation sentence (or, with
    ``paraphrases``, its training phrasings in turn). ValueError for a task the expert cannot do."""
    for task in tasks:
        if task not in SUPPORTED:
            raise ValueError(f"the scripted expert cannot perform {task!r}")
    jobs = []
    for task in tasks:
        for k in range(episodes_per_task):
            sentences = ANNOTATIONS[task] if paraphrases else (validation_annotation(task),)
            jobs.append(DemoJob(task, seed + k, sentences[k % len(sentences)], scene_variation))
    return jobs


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


@dataclass
class ChainJob:
    index: int
    initial_state: dict
    tasks: tuple


def demo_chains(count: int, seed: int = CHAIN_DEMO_SEED, exclude_seed: int = 0, exclude_count: int = 1000) -> list:
    """The first ``count`` CALVIN-style sequences of ``get_sequences(max(count, 192), seed)``
    (shuffled, so any prefix spreads over the reset states) that are not among CALVIN's
    evaluation sequences (``get_sequences(exclude_count, exclude_seed)``)."""
    held_out = {(tuple(s.items()), tuple(t)) for s, t in get_sequences(exclude_count, exclude_seed)}
    chains = [(s, tuple(t)) for s, t in get_sequences(max(int(count), 192), seed)
              if (tuple(s.items()), tuple(t)) not in held_out]
    return [ChainJob(k, state, tasks) for k, (state, tasks) in enumerate(chains[:count])]


def _snapshot(obs: dict) -> dict:
    return {key: np.array(value, copy=True) for key, value in obs.items()}


def _chain_worker(args) -> dict:
    directory, jobs, start_index, static_size, gripper_size, backend, tasks, paraphrases = args
    env = make_play_table(backend, image_size_static=static_size, image_size_gripper=gripper_size)
    oracle = oracle_for(backend)
    writer = CalvinEpisodeWriter(directory, start_index=start_index)
    kept, failed = [], []
    try:
        for job in jobs:
            obs = reset_to_calvin_state(env, job.initial_state)
            for position, task in enumerate(job.tasks):
                start, frames = oracle.capture(env), []
                try:
                    for action in Expert().plan(task, env):
                        frames.append((_snapshot(obs), action))
                        obs = env.step(action)
                    ok = oracle.succeeded(task, start, oracle.capture(env))
                except ValueError:  # the expert finds no way to do it from this state
                    ok = False
                if not ok:  # the scene is now in no known state: the rest of the chain is lost
                    failed.append((task, job.index, position))
                    break
                kept.append((task, job.index, position))
                if task not in tasks:
                    continue
                sentences = ANNOTATIONS[task] if paraphrases else (validation_annotation(task),)
                first = writer.start_episode()
                for frame, action in frames:
                    writer.add_frame(frame, action)
                writer.annotate(first, writer.last_index, task, sentences[job.index % len(sentences)])
                writer.end_episode()
    finally:
        env.close()
    return {"writer": writer, "kept": kept, "failed": failed}


def generate_chain_demos(out_dir, chains: int = DEFAULT_DEMO_CHAINS, tasks: Sequence[str] = tuple(sorted(SUPPORTED)),
                         static_size: int = DEMO_IMAGE_SIZES["static"],
                         gripper_size: int = DEMO_IMAGE_SIZES["gripper"], workers: int = 1,
                         paraphrases: bool = False, backend: str = "embedded") -> dict:
    """Write the expert's demos of :func:`demo_chains` ``(chains)`` to ``out_dir`` as a CALVIN
    split (see the module doc): every subtask the oracle passes is one annotated episode (only
    those of ``tasks`` are written); a failed subtask ends its chain.

    Returns ``{"kept": [(task, chain, position)], "failed": [...], "frames": n, "seconds": s}``."""
    jobs = demo_chains(chains)
    unknown = sorted({t for job in jobs for t in job.tasks} - set(SUPPORTED))
    if unknown:
        raise ValueError(f"the scripted expert cannot perform {unknown}")
    return _write_split(out_dir, jobs, _chain_worker, workers, static_size, gripper_size, backend,
                        extra=(tuple(tasks), paraphrases),
                        info={"tasks": list(tasks), "chains": int(chains), "scene_variation": "calvin"})


def _write_split(out_dir, jobs, worker, workers, static_size, gripper_size, backend, extra, info) -> dict:
    """Runs ``worker`` on ``workers`` shards of ``jobs`` (processes of their own), merges what
    they wrote, adds the camera calibration and :data:`DEMOS_INFO`; returns the summary."""
    out_dir = Path(out_dir)
    workers = max(1, min(int(workers), len(jobs)))
    shards = [jobs[w::workers] for w in range(workers)]
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [(out_dir, shard, w * 1_000_000, static_size, gripper_size, backend, *extra)
            for w, shard in enumerate(shards)]
    if workers == 1:
        parts = [worker(args[0])]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(worker, args)
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
    (out_dir / DEMOS_INFO).write_text(json.dumps({**summary, **info, "static_size": static_size,
                                                  "gripper_size": gripper_size, "backend": backend},
                                                 indent=2) + "\n")
    return summary


def generate_demos(out_dir, tasks: Sequence[str] = DEFAULT_TASKS, episodes_per_task: int = 16, seed: int = 0,
                   static_size: int = DEMO_IMAGE_SIZES["static"], gripper_size: int = DEMO_IMAGE_SIZES["gripper"],
                   workers: int = 1, paraphrases: bool = False, scene_variation: str = "task",
                   backend: str = "embedded") -> dict:
    """Write a CALVIN split of successful expert demos to ``out_dir`` (see the module doc); seeds
    ``seed .. seed + episodes_per_task - 1`` of every task, recorded in ``backend``'s play-table
    (``"calvin"``: calvin_env's scene D, each demo judged by CALVIN's own oracle).

    Returns ``{"kept": [(task, seed)], "failed": [...], "frames": n, "seconds": s}``."""
    if scene_variation == "calvin":
        raise ValueError("demos from CALVIN's start states follow CALVIN's chains: use generate_chain_demos")
    jobs = demo_jobs(tasks, episodes_per_task, seed, paraphrases, scene_variation)
    return _write_split(out_dir, jobs, _demo_worker, workers, static_size, gripper_size, backend, extra=(),
                        info={"tasks": list(tasks), "scene_variation": scene_variation})
