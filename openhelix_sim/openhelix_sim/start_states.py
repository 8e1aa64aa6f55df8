"""Randomised start states of the single-task episodes (demos and evaluations alike).

The arm starts from CALVIN's neutral pose moved by up to ``robot_jitter`` m (the offset depends on
the seed only, so it is the same for every task), with the gripper as the expert first commands
it, and the one joint the task needs is drawn in a range where the task is possible (e.g. drawer
closed for ``open_drawer``). The rest of the scene depends on ``scene_variation``:

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

import numpy as np

from .envs import PlayTableEnv
from .envs.expert import SUPPORTED, Expert
from .envs.scene import BUTTON_XY, SURFACES
from .task_set import SCENE_VARIATIONS

SWITCH_ON = 0.08  # switch joint (0 .. 0.088) well past mid-range: the lightbulb is on
FIXED_LAYOUT_SEED = 0
FIXED_SLIDER = 0.14  # sliding door half way (0 .. 0.28)


def _block_tasks_colors(task: str):
    """Colours whose block the task needs on the table top (all three for stack_block)."""
    parts = task.split("_")
    if task == "stack_block":
        return ("red", "blue", "pink")
    if len(parts) == 4 and parts[0] in ("push", "rotate", "lift") and parts[3] in ("left", "right", "table"):
        return (parts[1],)
    return ()


def _place_blocks_for(task: str, scene: np.ndarray, rng: np.random.Generator) -> None:
    """Put the blocks the task works on at free places on the table top (scene D's table
    sampling box, at least 12 cm from every other block so a gripper fits between them), in
    ``scene``."""
    colors = _block_tasks_colors(task)
    if not colors:
        return
    lo, hi = np.array(SURFACES["table"][0]), np.array(SURFACES["table"][1])
    # a push moves the block ~0.13 m: leave room on the table (and off the button) that way
    if task.startswith("push_") and task.endswith("_right"):
        hi[0] = 0.2
    elif task.startswith("push_") and task.endswith("_left"):
        lo[0] = 0.15
    names = ("red", "blue", "pink")
    placed = [scene[6 + 6 * k: 8 + 6 * k].copy() for k, c in enumerate(names) if c not in colors]
    for color in colors:
        k = names.index(color)
        for _ in range(1000):
            xy = rng.uniform(lo[:2], hi[:2])
            # keep clear of the button ring and of blocks already placed
            if all(np.linalg.norm(xy - q) > 0.12 for q in placed) and np.linalg.norm(xy - BUTTON_XY) > 0.1:
                break
        placed.append(xy)
        scene[6 + 6 * k: 12 + 6 * k] = [xy[0], xy[1], lo[2], 0.0, 0.0, rng.uniform(-np.pi, np.pi)]


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
    _place_blocks_for(task, scene, rng)
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
