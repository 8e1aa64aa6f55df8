"""Expert demonstrations in the embedded play table, written as a CALVIN split, and an in-process
evaluation of the OpenHelix :class:`~openhelix_core.policy.DualSystemPolicy` on the same tasks.

Three commands (``python -m sim_bridge.make_demos <command> --help``):

* ``generate``: for every task and seed, put the play table in a task-specific randomised
  start state (:func:`initial_state`), run the scripted :class:`~sim_bridge.envs.expert.Expert`
  and keep the demonstration only if CALVIN's success check passes; frames go to
  ``<out>/training/episode_*.npz`` with one language annotation per demo (the sentence CALVIN's
  evaluation uses, or also its training paraphrases with ``--paraphrases``), plus
  ``camera_info.json`` (static camera pose, fields of view and the gripper camera's hand-eye
  transform, read from :class:`PlayTableEnv`) so the training reader back-projects depth with
  exactly the simulator's calibration.
* ``evaluate``: :func:`evaluate_in_process` on held-out seeds for a trained checkpoint and its
  ablations (:func:`variant_models`: "goal zeroed", System 2 ablated; "goal averaged", the
  training data's mean goal; "untrained", fresh weights).
* ``pipeline``: generate -> train stage 1 -> train stage 2 -> evaluate every variant on the same
  held-out seeds, in process and then through the ROS nodes (the variants are written as
  checkpoints and run by ``openhelix eval-calvin --protocol tasks``); writes ``results.json``
  and ``results.md`` and prints both tables.

Start states (:func:`initial_state`): the arm starts from CALVIN's neutral pose moved by up to
``robot_jitter`` m (the offset depends on the seed only, so it is the same for every task), with
the gripper as the expert first commands it, and the one joint the task needs is drawn in a
range where the task is possible (e.g. drawer closed for ``open_drawer``). The rest of the scene depends on
``scene_variation``:

* ``"task"`` (default): everything else is the same fixed scene (blocks of layout seed 0, drawer
  shut, sliding door in the middle, LED and lightbulb off). Episode k of ``turn_on_led`` and of
  ``turn_on_lightbulb`` then start from the very same observation (``open_drawer`` too, up to a
  drawer ajar by at most 3 cm), so only the instruction -- System 2's goal -- says which to do;
* ``"full"``: blocks sampled by the play table; drawer closed or open, sliding door anywhere, LED
  and lightbulb on or off, all drawn at random before the task's joint is forced. Every demo's
  scene is then unique, and a small policy trained on a dozen demos per task memorises the
  scene instead of reading the instruction (measured: 0.7 cm open-loop error on the training
  demos whatever the instruction, failure from held-out scenes).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from openhelix_core.data import CalvinEpisodeWriter
from openhelix_core.types import CameraFrame, Observation

from .chunk_executor import chunk_to_absolute_actions
from .envs import PlayTableEnv
from .envs.annotations import ANNOTATIONS, validation_annotation
from .envs.expert import SUPPORTED, Expert
from .envs.tasks import SceneState, task_succeeded

DEFAULT_TASKS = ("open_drawer", "close_drawer", "move_slider_left", "move_slider_right", "turn_on_led",
                 "turn_on_lightbulb")
SWITCH_ON = 0.08  # switch joint (0 .. 0.088) well past mid-range: the lightbulb is on
EVAL_SEED_OFFSET = 100_000
SCENE_VARIATIONS = ("task", "full")
FIXED_LAYOUT_SEED = 0
DEMOS_INFO = "demos_info.json"
FIXED_SLIDER = 0.14  # sliding door half way (0 .. 0.28)


# ---------------------------------------------------------------------------------------------
# Start states and observations
# ---------------------------------------------------------------------------------------------
def initial_state(env: PlayTableEnv, task: str, seed: int, robot_jitter: float = 0.04,
                  scene_variation: str = "task") -> dict:
    """Reset ``env`` to the randomised start state of ``(task, seed)`` (deterministic) and
    return the observation (see the module docstring for ``scene_variation``)."""
    if scene_variation not in SCENE_VARIATIONS:
        raise ValueError(f"scene_variation must be one of {SCENE_VARIATIONS}, got {scene_variation!r}")
    rng = np.random.default_rng([int(seed), sum(map(ord, task))])
    if scene_variation == "full":
        env.reset(seed=int(seed))
        drawer = rng.uniform(0.0, 0.03) if rng.random() < 0.5 else rng.uniform(0.15, 0.2)
        slider = rng.uniform(0.0, 0.28)
        led = float(rng.random() < 0.5)
        bulb = float(rng.random() < 0.5)
    else:
        env.reset(seed=FIXED_LAYOUT_SEED)
        drawer, slider, led, bulb = 0.0, FIXED_SLIDER, 0.0, 0.0
    scene = env.scene.observation().copy()
    if task == "open_drawer":
        drawer = rng.uniform(0.0, 0.03)
    elif task == "close_drawer":
        drawer = rng.uniform(0.15, 0.2)
    elif task == "move_slider_left":
        slider = rng.uniform(0.0, 0.1)
    elif task == "move_slider_right":
        slider = rng.uniform(0.18, 0.28)
    elif task == "turn_on_led":
        led = 0.0
    elif task == "turn_off_led":
        led = 1.0
    elif task == "turn_on_lightbulb":
        bulb = 0.0
    elif task == "turn_off_lightbulb":
        bulb = 1.0
    scene[0:6] = [slider, drawer, 0.0, SWITCH_ON if bulb else 0.0, bulb, led]
    env.reset(scene_obs=scene)
    pos = np.asarray(env.robot.target_pos, dtype=float)
    orn = np.asarray(env.robot.target_orn, dtype=float)
    # The arm's offset depends on the seed only: episode k of every task starts from the same
    # pose, so the pose cannot tell the tasks apart.
    target = pos + np.random.default_rng(int(seed)).uniform(-robot_jitter, robot_jitter, size=3)
    # The gripper starts as the expert first commands it: a demo that opened with a gripper-only
    # step would teach a motion System 1 cannot see (it reads poses and images, not the command).
    grip = (float(next(iter(Expert().plan(task, env)))[6]) if task in SUPPORTED
            else (1.0 if env.robot.observation()[14] > 0 else -1.0))
    obs = None
    for k in range(1, 13):  # move there smoothly, then let it settle
        obs = env.step(np.r_[pos + min(1.0, k / 8) * (target - pos), orn, grip])
    return obs


def observation_from_env(env: PlayTableEnv, stamp: float = 0.0, openness_source: str = "action") -> Observation:
    """Render both cameras now and pack an :class:`Observation` (world frame = base frame).

    ``openness_source="action"`` reports the last gripper command (``robot_obs[14] > 0``) as
    the training data does; ``"width"`` the finger opening. (System 1 reads only the pose.)"""
    cameras = {}
    for name in ("static", "gripper"):
        rgb, depth = env.cameras[name].render()
        cameras[name] = CameraFrame(rgb, depth, env.camera_intrinsics(name), env.camera_to_base(name))
    position, orientation = env.tcp_pose()
    if openness_source == "action":
        openness = 1.0 if env.robot.observation()[14] > 0 else 0.0
    else:
        openness = env.gripper_openness()
    return Observation(cameras=cameras, ee_position=position, ee_orientation=orientation,
                       gripper_openness=openness, stamp=stamp)


def write_camera_info(env: PlayTableEnv, directory) -> Path:
    from openhelix_core.training.dataset import CameraCalibration

    calib = CameraCalibration(static_fov=float(env.cameras["static"].fov), static_to_base=env.camera_to_base("static"),
                              gripper_fov=float(env.cameras["gripper"].fov), gripper_to_tcp=env.camera_to_tcp("gripper"),
                              source="sim_bridge.PlayTableEnv")
    return calib.save(directory)


# ---------------------------------------------------------------------------------------------
# Demonstrations
# ---------------------------------------------------------------------------------------------
@dataclass
class DemoJob:
    task: str
    seed: int
    annotation: str
    scene_variation: str = "task"


def _run_expert(env: PlayTableEnv, job: DemoJob, writer: Optional[CalvinEpisodeWriter]) -> tuple[bool, int]:
    obs = initial_state(env, job.task, job.seed, scene_variation=job.scene_variation)
    start = SceneState.capture(env)
    first = writer.start_episode() if writer is not None else 0
    steps = 0
    for action in Expert().plan(job.task, env):
        if writer is not None:
            writer.add_frame(obs, action)
        obs = env.step(action)
        steps += 1
    ok = task_succeeded(job.task, start, SceneState.capture(env))
    if writer is not None:
        writer.annotate(first, writer.last_index, job.task, job.annotation)
        writer.end_episode()
    return ok, steps


def _demo_worker(args) -> dict:
    directory, jobs, start_index, static_size, gripper_size = args
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False,
                       image_size_static=static_size, image_size_gripper=gripper_size)
    writer = CalvinEpisodeWriter(directory, start_index=start_index)
    kept, failed = [], []
    try:
        for job in jobs:
            env.render_static = env.render_gripper = False
            ok, _ = _run_expert(env, job, None)  # dry run without rendering: keep successful demos only
            if not ok:
                failed.append((job.task, job.seed))
                continue
            env.render_static = env.render_gripper = True
            _run_expert(env, job, writer)
            kept.append((job.task, job.seed))
    finally:
        env.close()
    return {"episodes": writer.episodes, "indx": writer.indx, "task": writer.tasks, "ann": writer.ann,
            "kept": kept, "failed": failed}


def generate_demos(out_dir, tasks: Sequence[str] = DEFAULT_TASKS, episodes_per_task: int = 16, seed: int = 0,
                   static_size: int = 64, gripper_size: int = 48, workers: int = 1,
                   paraphrases: bool = False, scene_variation: str = "task") -> dict:
    """Write a CALVIN split of successful expert demos to ``out_dir`` (see the module doc).

    Returns ``{"kept": [(task, seed)], "failed": [...], "frames": n, "seconds": s}``."""
    out_dir = Path(out_dir)
    for task in tasks:
        if task not in SUPPORTED:
            raise ValueError(f"the scripted expert cannot perform {task!r}")
    jobs = []
    for t_index, task in enumerate(tasks):
        for k in range(episodes_per_task):
            sentences = ANNOTATIONS[task] if paraphrases else (validation_annotation(task),)
            jobs.append(DemoJob(task, seed + k, sentences[k % len(sentences)], scene_variation))
    workers = max(1, min(int(workers), len(jobs)))
    shards = [jobs[w::workers] for w in range(workers)]
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [(out_dir, shard, w * 1_000_000, static_size, gripper_size) for w, shard in enumerate(shards)]
    if workers == 1:
        parts = [_demo_worker(args[0])]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_demo_worker, args)
    merged = CalvinEpisodeWriter(out_dir)
    for part in parts:
        merged.episodes += [tuple(e) for e in part["episodes"]]
        merged.indx += [tuple(i) for i in part["indx"]]
        merged.tasks += part["task"]
        merged.ann += part["ann"]
    merged.close()
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False,
                       image_size_static=static_size, image_size_gripper=gripper_size)
    try:
        write_camera_info(env, out_dir)
    finally:
        env.close()
    frames = int(sum(e - s + 1 for s, e in merged.episodes))
    summary = {"kept": [k for p in parts for k in p["kept"]], "failed": [f for p in parts for f in p["failed"]],
               "frames": frames, "seconds": time.perf_counter() - start}
    (out_dir / DEMOS_INFO).write_text(json.dumps({**summary, "tasks": list(tasks), "static_size": static_size,
                                                  "gripper_size": gripper_size, "scene_variation": scene_variation},
                                                 indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------------------------
# In-process evaluation
# ---------------------------------------------------------------------------------------------
def evaluate_in_process(policy_factory: Callable[[], object], tasks: Sequence[str], seeds: Sequence[int],
                        max_steps: int = 240, execute_steps: int = 19, static_size: int = 64,
                        gripper_size: int = 48, progress: bool = False,
                        scene_variation: str = "task") -> Dict[str, List[bool]]:
    """Run a :class:`~openhelix_core.policy.DualSystemPolicy` in :class:`PlayTableEnv`.

    For every task and seed the table is put in :func:`initial_state` ``(task, seed)``, the
    policy is reset with the task's CALVIN evaluation sentence, and then, until the task's
    success check passes or ``max_steps`` 30 Hz steps have run: observe (both cameras rendered
    with the given sizes), ``policy.act`` (System 2 runs when its goal is due), execute the
    first ``execute_steps`` waypoints of the chunk as absolute actions. The controller's noise
    generator is re-seeded with the seed, so variants compared on the same seeds start from the
    same scene and draw the same diffusion noise.

    Args:
        policy_factory: returns the policy (called once; reset before every episode).

    Returns:
        ``{task: [success per seed]}``.
    """
    policy = policy_factory()
    env = PlayTableEnv(seed=0, render_static=False, render_gripper=False,
                       image_size_static=static_size, image_size_gripper=gripper_size)
    results: Dict[str, List[bool]] = {task: [] for task in tasks}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks) * len(seeds), desc="evaluating", unit="episode")
    try:
        for task in tasks:
            instruction = validation_annotation(task)
            for seed in seeds:
                initial_state(env, task, seed, scene_variation=scene_variation)
                start = SceneState.capture(env)
                policy.reset(instruction)
                controller = getattr(policy, "controller", None)
                if controller is not None and hasattr(controller, "generator"):
                    controller.generator.manual_seed(int(seed))
                steps, success = 0, False
                while steps < max_steps and not success:
                    chunk = policy.act(observation_from_env(env, stamp=steps / 30.0))
                    for action in chunk_to_absolute_actions(chunk)[:execute_steps]:
                        env.step(action)
                        steps += 1
                        if task_succeeded(task, start, SceneState.capture(env)):
                            success = True
                            break
                        if steps >= max_steps:
                            break
                results[task].append(success)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(task=task, ok=success)
    finally:
        if bar is not None:
            bar.close()
        env.close()
    return results


def dual_system_policy(system1, system2, processor=None, goal_refresh_period: int = 1, model_id: str = "trained"):
    """A :class:`DualSystemPolicy` from loaded models (System 2 runs every ``goal_refresh_period`` calls)."""
    from openhelix_core.controller import TrajectoryController
    from openhelix_core.models.system2 import processor_for
    from openhelix_core.planner import GoalPlanner
    from openhelix_core.policy import DualSystemPolicy

    controller = TrajectoryController(system1.eval(), f"system1/{model_id}", waypoint_period_s=1.0 / 30.0)
    planner = GoalPlanner(system2.eval(), processor or processor_for(system2), f"system2/{model_id}")
    return DualSystemPolicy(controller=controller, planner=planner, goal_refresh_period=goal_refresh_period)


#: What is compared on the same seeds (see :func:`variant_models`).
VARIANTS = ("trained", "goal zeroed", "goal averaged", "untrained")
UNTRAINED_SEED = 1234


def variant_models(system1, system2, variant: str):
    """System 1 and System 2 of one evaluation variant, built from the trained models (which
    are left untouched), as weights, so that the in-process evaluation and the ROS nodes
    (which load them as checkpoints) run exactly the same ablation:

    * ``"trained"``: the models themselves;
    * ``"goal zeroed"``: System 2 ablated: its goal projection has zero weights and bias, so
      the goal is all zeros whatever the image and the instruction;
    * ``"goal averaged"``: its projection outputs the training data's mean goal (System 1's
      ``goal_mean``: no instruction in it, and nothing System 1 has not seen); needs goal
      statistics (``standardize_goals``);
    * ``"untrained"``: fresh weights (seed :data:`UNTRAINED_SEED`) with the same configs,
      normalization and frozen LLaVA.
    """
    import torch

    from openhelix_core.models.system1 import DiffuserActor
    from openhelix_core.models.system2 import System2Planner

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    if variant == "trained":
        return system1, system2
    if variant == "untrained":
        torch.manual_seed(UNTRAINED_SEED)
        fresh = DiffuserActor(system1.config, system1.normalization)
        return fresh, System2Planner(system2.config, llava=system2.llava, tokenizer=system2.tokenizer)
    goal_mean = system1.normalization.goal_mean
    if variant == "goal averaged" and goal_mean is None:
        raise ValueError("this System 1 has no goal statistics (train with standardize_goals) for a mean goal")
    ablated = System2Planner(system2.config, llava=system2.llava, tokenizer=system2.tokenizer)
    ablated.load_trainable_state_dict(system2.trainable_state_dict())
    with torch.no_grad():
        ablated.projection.weight.zero_()
        if variant == "goal averaged":
            ablated.projection.bias.copy_(torch.as_tensor(np.asarray(goal_mean)))
        else:
            ablated.projection.bias.zero_()
    return system1, ablated


def success_table(results: Dict[str, Dict[str, List[bool]]], seeds: Sequence[int]) -> str:
    """Markdown table: one row per task, one column per variant, ``k/n (rate)``."""
    variants = list(results)
    tasks = list(next(iter(results.values())))
    lines = ["| task | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for task in tasks:
        cells = [f"{sum(results[v][task])}/{len(results[v][task])}" for v in variants]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    totals = []
    for v in variants:
        ok = sum(sum(x) for x in results[v].values())
        n = sum(len(x) for x in results[v].values())
        totals.append(f"**{ok}/{n} ({100.0 * ok / max(n, 1):.0f} %)**")
    lines.append("| **all** | " + " | ".join(totals) + " |")
    lines.append(f"\nseeds: {list(seeds)}")
    return "\n".join(lines)


def _variant_directory(out_dir, variant: str) -> Path:
    return Path(out_dir) / variant.replace(" ", "_")


def _variants_to_run(checkpoint_system1, variants: Sequence[str]) -> list[str]:
    if checkpoint_system1.normalization.goal_mean is None and "goal averaged" in variants:
        print("[evaluate] goal averaged: skipped (the checkpoint has no goal statistics)", flush=True)
        return [v for v in variants if v != "goal averaged"]
    return list(variants)


def evaluate_variants(checkpoint, tasks: Sequence[str], seeds: Sequence[int], max_steps: int, execute_steps: int,
                      static_size: int, gripper_size: int, progress: bool = True, variants: Sequence[str] = VARIANTS,
                      scene_variation: str = "task") -> Dict[str, Dict[str, List[bool]]]:
    """In-process :func:`evaluate_in_process` of every :func:`variant_models` of a checkpoint."""
    import torch

    from openhelix_core.training.trainer import load_models_from_checkpoint

    torch.set_num_threads(max(1, torch.get_num_threads()))
    system1, system2 = load_models_from_checkpoint(checkpoint)
    results = {}
    for variant in _variants_to_run(system1, variants):
        start = time.perf_counter()
        models = variant_models(system1, system2, variant)

        def factory(models=models, name=variant):
            return dual_system_policy(*models, model_id=name)

        results[variant] = evaluate_in_process(factory, tasks, seeds, max_steps=max_steps, execute_steps=execute_steps,
                                               static_size=static_size, gripper_size=gripper_size, progress=progress,
                                               scene_variation=scene_variation)
        rate = np.mean([x for r in results[variant].values() for x in r])
        print(f"[evaluate] {variant}: {100 * rate:.0f} % in {time.perf_counter() - start:.0f} s", flush=True)
    return results


def write_variant_checkpoints(checkpoint, out_dir, variants: Sequence[str] = VARIANTS) -> Dict[str, Path]:
    """``{variant: checkpoint directory}`` for the ROS nodes: ``checkpoint`` itself for
    ``"trained"``, ``<out_dir>/<variant>/{system1,system2}`` for the others."""
    from openhelix_core.training.trainer import load_models_from_checkpoint

    system1, system2 = load_models_from_checkpoint(checkpoint)
    paths = {}
    for variant in _variants_to_run(system1, variants):
        if variant == "trained":
            paths[variant] = Path(checkpoint)
            continue
        directory = _variant_directory(out_dir, variant)
        variant_system1, variant_system2 = variant_models(system1, system2, variant)
        variant_system1.save_pretrained(directory / "system1")
        variant_system2.save_pretrained(directory / "system2")
        paths[variant] = directory
    return paths


def evaluate_variants_through_ros(checkpoints: Dict[str, Path], tasks: Sequence[str], seeds: Sequence[int],
                                  max_steps: int, execute_steps: int, static_size: int, gripper_size: int,
                                  out_dir, workers: int = 2, scene_variation: str = "task",
                                  first_domain: int = 40, execution: str = "chunks") -> Dict[str, Dict[str, List[bool]]]:
    """The same episodes through the ROS nodes: one ``openhelix eval-calvin --protocol tasks``
    per variant (sim bridge, planner and controller processes talking over topics). With
    ``execution="chunks"`` the bridge executes ``execute_steps`` waypoints of a chunk, then asks
    for a new one; with ``"servo"`` it follows the controller's blended, limited command stream.
    Raises RuntimeError when an evaluation fails."""
    seeds = list(seeds)
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"the ROS evaluation takes consecutive seeds, got {seeds}")
    results = {}
    for variant, checkpoint in checkpoints.items():
        output = _variant_directory(out_dir, variant)
        command = [sys.executable, "-m", "openhelix_ros.cli", "eval-calvin", "--protocol", "tasks",
                   "--checkpoint", str(checkpoint), "--tasks", *tasks, "--episodes-per-task", str(len(seeds)),
                   "--first-seed", str(seeds[0]), "--scene-variation", scene_variation,
                   "--static-size", str(static_size), "--gripper-size", str(gripper_size),
                   "--execution-horizon", str(execute_steps), "--max-steps", str(max_steps),
                   "--execution", execution, *(["--replan-after-horizon"] if execution == "chunks" else []),
                   "--workers", str(workers), "--first-domain", str(first_domain), "--output", str(output)]
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


# ---------------------------------------------------------------------------------------------
# Pipeline: demos -> stage 1 -> stage 2 -> evaluation
# ---------------------------------------------------------------------------------------------
def tiny_policy_overrides(position_frame: str = "absolute") -> dict:
    """System 1 settings of the CPU demo (see ``pipeline --help``)."""
    return {# Relative mode (CALVIN's) sees the scene only relative to the gripper, so it must
            # find the handle in 4x4 feature grids of 32-px crops; absolute positions let the
            # small model tie each instruction to where its task happens (measured: 27 % -> 70 %).
            "relative": position_frame == "relative",
            "embedding_dim": 48, "num_attn_heads": 4, "image_resize": 40, "image_size": 32, "feature_level": "res3",
            "diffusion_timesteps": 10, "dropout": 0.0,
            # With only 10 steps, scaled_linear betas (1e-4 .. 0.02) noise positions to
            # alpha_bar_T ~ 0.9, so training never sees the pure noise inference starts from;
            # the cosine schedule reaches alpha_bar_T ~ 0 at any step count.
            "position_beta_schedule": "squaredcos_cap_v2",
            # At alpha_bar_T ~ 0 an epsilon model's first step says nothing about the
            # trajectory; predicting the trajectory itself makes every step read the scene.
            "prediction_type": "sample",
            # No pretrained CLIP weights here: a frozen, randomly initialised ResNet (BatchNorm
            # in eval with its initial statistics) gives features System 1 cannot learn from.
            "freeze_backbone": False}


#: Tiny System 2 prompt: the byte-level tiny tokenizer makes OpenHelix's system sentence ~200
#: tokens; the short template keeps the image, the instruction and <ACT> last (54 tokens).
TINY_SYSTEM2_OVERRIDES = {"system_prompt": "", "prompt_template": "{system}{image}\n{instruction} {act}"}


def run_pipeline(args) -> dict:
    import torch

    from openhelix_core.training import TrainingConfig, train

    out = Path(args.out)
    if args.ros_eval:
        missing = [name for name in ("rclpy", "openhelix_ros") if importlib.util.find_spec(name) is None]
        if missing:
            raise RuntimeError(f"the evaluation through ROS needs {missing}: run `source scripts/env.sh` first "
                               f"(after ./scripts/setup), or pass --no-ros-eval")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    timings = {}
    demos = out / "demos" / "training"
    t0 = time.perf_counter()
    if (demos / DEMOS_INFO).is_file():
        existing = json.loads((demos / DEMOS_INFO).read_text())
        if existing.get("scene_variation", "full") != args.scene_variation:
            raise ValueError(f"{demos} holds demos with scene_variation {existing.get('scene_variation', 'full')!r}, "
                             f"this run asks for {args.scene_variation!r}: choose another --out")
    if not (demos / "lang_annotations" / "auto_lang_ann.npy").is_file():
        info = generate_demos(demos, args.tasks, args.episodes, seed=0, static_size=args.static_size,
                              gripper_size=args.gripper_size, workers=args.workers,
                              scene_variation=args.scene_variation)
        print(f"[demos] kept {len(info['kept'])}, failed {len(info['failed'])}, {info['frames']} frames, "
              f"{info['seconds']:.0f} s", flush=True)
    timings["demos_s"] = time.perf_counter() - t0
    common = dict(train_data=str(demos), tasks=list(args.tasks), cache_dir=str(out / "cache"),
                  frame_sampling=args.frame_sampling, keypose_neighbors=args.keypose_neighbors,
                  still_motion=args.still_motion,
                  system1_preset="tiny", system1_overrides=tiny_policy_overrides(args.position_frame),
                  system2_overrides=dict(TINY_SYSTEM2_OVERRIDES), batch_size=args.batch_size,
                  checkpoint_every=max(args.stage2_steps, args.stage1_steps), log_every=25, seed=0,
                  progress=not args.quiet)
    t0 = time.perf_counter()
    stage1 = TrainingConfig(stage=1, steps=args.stage1_steps, output_dir=str(out / "stage1"),
                            system2_lr=args.stage1_system2_lr, **common)
    train(stage1, resume="auto" if args.resume else None)
    timings["stage1_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage2 = TrainingConfig(stage=2, steps=args.stage2_steps, output_dir=str(out / "stage2"),
                            init_from=str(out / "stage1" / "final"), standardize_goals=True, system1_lr=args.system1_lr,
                            system2_lr=args.system2_lr, lr_schedule="cosine", warmup_steps=50, **common)
    train(stage2, resume="auto" if args.resume else None)
    timings["stage2_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    seeds = [EVAL_SEED_OFFSET + k for k in range(args.eval_seeds)]
    results = evaluate_variants(out / "stage2" / "final", args.tasks, seeds, args.max_steps, args.execute_steps,
                                args.static_size, args.gripper_size, progress=not args.quiet,
                                scene_variation=args.scene_variation)
    timings["evaluation_s"] = time.perf_counter() - t0
    report = {"results": results, "seeds": seeds, "timings": timings,
              "args": {k: v for k, v in vars(args).items() if k != "func"}}
    tables = ["In process (DualSystemPolicy in PlayTableEnv):\n\n" + success_table(results, seeds)]
    if args.ros_eval:
        t0 = time.perf_counter()
        checkpoints = write_variant_checkpoints(out / "stage2" / "final", out / "variants")
        report["ros_results"] = evaluate_variants_through_ros(
            checkpoints, args.tasks, seeds, args.max_steps, args.execute_steps, args.static_size, args.gripper_size,
            out / "ros_evaluation", workers=args.workers, scene_variation=args.scene_variation,
            execution=args.execution)
        timings["ros_evaluation_s"] = time.perf_counter() - t0
        tables.append("Through ROS (sim bridge, planner and controller nodes; `openhelix eval-calvin --protocol "
                      "tasks`):\n\n" + success_table(report["ros_results"], seeds))
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text("\n\n".join(tables) + "\n\n" + json.dumps(timings, indent=2) + "\n")
    print("\n\n".join(tables))
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return results


def _cmd_generate(args) -> int:
    info = generate_demos(args.out, args.tasks, args.episodes, seed=args.seed, static_size=args.static_size,
                          gripper_size=args.gripper_size, workers=args.workers, paraphrases=args.paraphrases,
                          scene_variation=args.scene_variation)
    print(f"kept {len(info['kept'])} demos ({info['frames']} frames), failed {len(info['failed'])}: "
          f"{info['failed']} in {info['seconds']:.0f} s -> {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    seeds = [EVAL_SEED_OFFSET + k for k in range(args.eval_seeds)]
    results = evaluate_variants(args.checkpoint, args.tasks, seeds, args.max_steps, args.execute_steps,
                                args.static_size, args.gripper_size, variants=args.variants,
                                scene_variation=args.scene_variation)
    print(success_table(results, seeds))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim_bridge.make_demos", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
        p.add_argument("--static-size", type=int, default=64, help="static camera image size (px)")
        p.add_argument("--gripper-size", type=int, default=48, help="gripper camera image size (px)")
        p.add_argument("--scene-variation", choices=SCENE_VARIATIONS, default="task",
                       help="'task': fixed scene but the task's joint and the arm; 'full': random scenes")

    def evaluation(p):
        p.add_argument("--eval-seeds", type=int, default=5, help="held-out start states per task")
        p.add_argument("--max-steps", type=int, default=240, help="30 Hz steps per episode")
        p.add_argument("--execute-steps", type=int, default=19,
                       help="waypoints executed per System 1 call (19: the whole trajectory to the next keypose)")

    g = sub.add_parser("generate", help="write expert demos as a CALVIN split")
    g.add_argument("--out", required=True, help="split folder to write (e.g. demos/training)")
    g.add_argument("--episodes", type=int, default=16, help="demos per task")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--paraphrases", action="store_true", help="cycle through CALVIN's training phrasings")
    common(g)
    g.set_defaults(func=_cmd_generate)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint (trained / goal zeroed / untrained)")
    e.add_argument("--checkpoint", required=True, help="a trainer checkpoint directory (e.g. runs/x/stage2/final)")
    e.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    common(e)
    evaluation(e)
    e.set_defaults(func=_cmd_evaluate)

    pl = sub.add_parser("pipeline", help="demos -> stage 1 -> stage 2 -> evaluation table")
    pl.add_argument("--out", default="runs/play_table_demo")
    pl.add_argument("--episodes", type=int, default=16, help="demos per task")
    pl.add_argument("--workers", type=int, default=2)
    pl.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    pl.add_argument("--batch-size", type=int, default=24)
    pl.add_argument("--stage1-steps", type=int, default=150)
    pl.add_argument("--stage2-steps", type=int, default=8000)
    pl.add_argument("--stage1-system2-lr", type=float, default=1e-3,
                    help="stage 1 lr of <ACT>/projection/aux (tiny LLaVA: higher than OpenHelix's 5e-5)")
    pl.add_argument("--system1-lr", type=float, default=3e-4)
    pl.add_argument("--system2-lr", type=float, default=5e-4)
    pl.add_argument("--frame-sampling", default="all", choices=("all", "keypose"))
    pl.add_argument("--keypose-neighbors", type=int, default=0)
    pl.add_argument("--still-motion", type=float, default=0.01,
                    help="frames where the arm holds still (moves < this, m) target the motion after the hold "
                         "(0: every frame targets its next keypose, as 3DDA)")
    pl.add_argument("--position-frame", choices=("relative", "absolute"), default="absolute",
                    help="System 1 positions absolute (the CPU demo) or relative to the current gripper (CALVIN)")
    pl.add_argument("--resume", action="store_true", help="resume interrupted training stages")
    pl.add_argument("--execution", choices=("chunks", "servo"), default="chunks",
                    help="ROS evaluation: the simulator executes chunks, or follows the controller's command stream")
    pl.add_argument("--quiet", action="store_true")
    pl.add_argument("--ros-eval", action=argparse.BooleanOptionalAction, default=True,
                    help="also evaluate every variant through the ROS nodes (needs `source scripts/env.sh`)")
    common(pl)
    evaluation(pl)
    pl.set_defaults(func=run_pipeline)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
