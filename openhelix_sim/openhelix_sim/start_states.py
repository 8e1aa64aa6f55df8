"""Randomised start states of the single-task episodes (demos and evaluations alike).

The arm starts from CALVIN's neutral pose moved by up to ``robot_jitter`` m (the offset depends on
the seed only, so it is the same for every task), with the gripper as the expert first commands
it, and the one joint the task needs is drawn in a range where the task is possible (e.g. drawer
closed for ``open_drawer``). The blocks a task works on are put where its precondition holds
(:func:`_layout`): on the table top for push / rotate / lift_*_table / stack_block, with a pushed
block's lane clear; on the open half of the shelf, the sliding door pushed aside, for
lift_*_slider; on the floor of the open drawer for lift_*_drawer; a stack on the table for
unstack_block; near the table's front edge, the drawer open, for push_into_drawer; and in the
gripper (the expert lifts it off the table, then the arm returns to its start pose) for
place_in_drawer / place_in_slider. Other blocks in the way are moved elsewhere on the table top,
or onto the shelf. The rest of the scene depends on ``scene_variation``:

* ``"task"`` (default): everything else is the same fixed scene (blocks of layout seed 0, drawer
  shut, sliding door in the middle, LED and lightbulb off). Episode k of ``turn_on_led`` and of
  ``turn_on_lightbulb`` then start from the very same observation (``open_drawer`` too, up to a
  drawer ajar by at most 3 cm), so only the instruction -- System 2's goal -- says which to do;
* ``"full"``: blocks sampled by the play table; drawer closed or open, sliding door anywhere, LED
  and lightbulb on or off, all drawn at random before the task's joint is forced. Every demo's
  scene is then unique, and a small policy trained on a dozen demos per task memorises the
  scene instead of reading the instruction (measured: 0.7 cm open-loop error on the training
  demos whatever the instruction, failure from held-out scenes);
* ``"calvin"``: CALVIN's own scene-D start states (:func:`calvin_start_state`): one of the 192
  reset states of CALVIN's evaluation in which the task can be the next subtask, the arm at
  CALVIN's reset pose. A task that no reset state allows (placing or stacking needs a block in
  the hand, unstacking a stack) starts after the expert has done the shortest chain of CALVIN
  tasks that leads there (e.g. ``lift_red_block_table`` before ``place_in_drawer``), checked by
  the oracle, as it would happen in one of CALVIN's chains.
"""
from __future__ import annotations

import functools

import numpy as np

from openhelix_core.evaluation.sequences import (
    TASK_NAMES,
    env_state_for_initial_state,
    initial_states,
    is_valid_chain,
)
from openhelix_core.geometry import matrix_to_euler, quaternion_to_matrix

from .envs import PlayTableEnv
from .envs.expert import MAX_SPEED, SUPPORTED, Expert
from .envs.scene import BUTTON_XY, INCLINE_FOOT_Y, SURFACES
from .task_set import SCENE_VARIATIONS

SWITCH_ON = 0.08  # switch joint (0 .. 0.088) well past mid-range: the lightbulb is on
FIXED_LAYOUT_SEED = 0
FIXED_SLIDER = 0.14  # sliding door half way (0 .. 0.28)
# a push moves its block 0.1 .. 0.14 m: no other block (up to 8 cm long, any yaw) may sit in
# that lane, in front of the pushed block
PUSH_LANE_LENGTH = 0.25
PUSH_LANE_HALF_WIDTH = 0.09
MIN_BLOCK_GAP = 0.12  # between block centres: a gripper fits between two blocks
BLOCK_HEIGHT = 0.04  # every block (scene.BLOCKS)
DRAWER_OPEN = (0.16, 0.22)  # drawer joint for the tasks working in the open drawer
DRAWER_FLOOR_Z = 0.34
# The sliding door (0.28 m wide, x -0.10 - q .. 0.18 - q) leaves one half of the shelf open:
# shelf side -> (door joint range, block centre box (x, y) on the shelf)
SHELF_SIDES = {
    "left": ((0.0, 0.03), ((-0.30, 0.05), (-0.21, 0.09))),
    "right": ((0.25, 0.28), ((-0.01, 0.05), (0.08, 0.09))),
}
SHELF = ((-0.32, 0.05), (0.13, 0.12))  # block centres on the shelf (scene D's slider_left .. slider_right)
SHELF_BACK_Y = 0.095  # block centres behind this are clear of the sliding door's panel
COLORS = ("red", "blue", "pink")


def _xy(scene: np.ndarray, color: str) -> np.ndarray:
    k = COLORS.index(color)
    return scene[6 + 6 * k: 8 + 6 * k].copy()


def _put(scene: np.ndarray, color: str, xyz, yaw: float) -> None:
    k = COLORS.index(color)
    scene[6 + 6 * k: 12 + 6 * k] = [xyz[0], xyz[1], xyz[2], 0.0, 0.0, yaw]


def _on_table(scene: np.ndarray, color: str) -> bool:
    k = COLORS.index(color)
    return scene[7 + 6 * k] < INCLINE_FOOT_Y and abs(scene[8 + 6 * k] - SURFACES["table"][0][2]) < 0.01


def _sample(rng, lo, hi, ok, what: str) -> np.ndarray:
    for _ in range(1000):
        xy = rng.uniform(lo, hi)
        if ok(xy):
            return xy
    raise ValueError(f"no free place for {what}")


def _table_spot(rng, scene, others, what: str, lo=None, hi=None, ok=lambda xy: True) -> np.ndarray:
    """A block centre on the table top (scene D's table sampling box, or ``lo`` .. ``hi``), off
    the button ring and ``MIN_BLOCK_GAP`` from the table-top blocks of ``others``."""
    box = SURFACES["table"]
    lo = np.array(box[0][:2]) if lo is None else np.asarray(lo, dtype=float)
    hi = np.array(box[1][:2]) if hi is None else np.asarray(hi, dtype=float)
    near = [_xy(scene, c) for c in others if _on_table(scene, c)]
    return _sample(rng, lo, hi, lambda xy: np.linalg.norm(xy - BUTTON_XY) > 0.1
                   and all(np.linalg.norm(xy - q) > MIN_BLOCK_GAP for q in near) and ok(xy), what)


def _make_room(task: str, color: str, scene: np.ndarray, rng) -> None:
    """Move the other table-top blocks away from the ``color`` block (to ``MIN_BLOCK_GAP``; for
    a block in the drawer, away from the table's front edge in front of it) and, for a push, out
    of the lane it travels along: to another free place on the table top, else
    onto the shelf (measured: a block pushed into another ends touching it, which fails
    CALVIN's push check)."""
    direction = 1.0 if task.endswith("_right") else -1.0
    start = _xy(scene, color)

    def blocked(xy) -> bool:
        if np.linalg.norm(xy - start) <= MIN_BLOCK_GAP:
            return True
        # grasping in the drawer, the hand (20 cm across) reaches down past the table's front edge
        # (measured: it lands on a block there)
        if task.endswith("_block_drawer") and abs(xy[0] - start[0]) < 0.14 and xy[1] < -0.08:
            return True
        return task.startswith("push_") and abs(xy[1] - start[1]) < PUSH_LANE_HALF_WIDTH \
            and 0.0 < direction * (xy[0] - start[0]) < PUSH_LANE_LENGTH

    z = SURFACES["table"][0][2]
    for other in COLORS:
        if other == color or not _on_table(scene, other) or not blocked(_xy(scene, other)):
            continue
        rest = [c for c in COLORS if c != other]
        try:
            xy = _table_spot(rng, scene, rest, f"the {other} block", ok=lambda q: not blocked(q))
        except ValueError:  # the table top is full: the shelf (CALVIN samples blocks there too)
            taken = [_xy(scene, c) for c in rest]
            xy = _sample(rng, SHELF[0], SHELF[1], lambda q: all(np.linalg.norm(q - t) > MIN_BLOCK_GAP for t in taken),
                         f"the {other} block on the shelf")
        _put(scene, other, (*xy, z), rng.uniform(-np.pi, np.pi))


def _clear_shelf(scene: np.ndarray, rng, colors) -> None:
    """The shelf is the task's: the blocks ``colors`` lying on it go to the table top."""
    for c in colors:
        if not _on_table(scene, c):
            _put(scene, c, (*_table_spot(rng, scene, [o for o in COLORS if o != c], f"the {c} block"),
                            SURFACES["table"][0][2]), rng.uniform(-np.pi, np.pi))


def _layout(task: str, scene: np.ndarray, rng: np.random.Generator) -> dict:
    """Put the blocks ``task`` works on where its precondition holds, in ``scene``; returns the
    joint values the layout needs (``drawer``, ``slider``) and ``hold``: the colour of a block the
    robot must hold at the start (it is put on the table, and the expert lifts it)."""
    parts = task.split("_")
    z_table = SURFACES["table"][0][2]
    need = {}
    if task == "stack_block":
        for c in COLORS:
            _put(scene, c, (*_table_spot(rng, scene, [o for o in COLORS if o != c], f"the {c} block"), z_table),
                 rng.uniform(-np.pi, np.pi))
    elif task == "unstack_block":
        top, bottom = (str(c) for c in rng.choice(COLORS, size=2, replace=False))
        # the sliding door's handle reaches down to y -0.03, z 0.51: the top block keeps clear of it
        xy = _table_spot(rng, scene, [], "the stack", hi=(SURFACES["table"][1][0], -0.08))
        yaw = rng.uniform(-np.pi, np.pi)
        _put(scene, bottom, (*xy, z_table), yaw)
        # dropped from 2 mm: set exactly onto the other block, it is pushed out of the overlap sideways
        _put(scene, top, (*xy, z_table + BLOCK_HEIGHT + 0.002), yaw + rng.uniform(-0.3, 0.3))
        _make_room(task, bottom, scene, rng)
    elif task == "push_into_drawer":
        color = COLORS[int(rng.integers(3))]
        # in front of the drawer (x -0.02 .. 0.38), near the table's front edge (y = -0.18)
        xy = _table_spot(rng, scene, [], f"the {color} block", lo=(0.06, -0.14), hi=(0.30, -0.09))
        _put(scene, color, (*xy, z_table), rng.uniform(-np.pi, np.pi))
        _make_room(task, color, scene, rng)
        need["drawer"] = rng.uniform(*DRAWER_OPEN)
    elif task in ("place_in_drawer", "place_in_slider"):
        color = COLORS[int(rng.integers(3))]
        _put(scene, color, (*_table_spot(rng, scene, [], f"the {color} block"), z_table), rng.uniform(-np.pi, np.pi))
        _make_room(task, color, scene, rng)
        need["hold"] = color
        if task == "place_in_drawer":
            need["drawer"] = rng.uniform(*DRAWER_OPEN)
        else:
            need["slider"] = rng.uniform(*SHELF_SIDES[("left", "right")[int(rng.integers(2))]][0])
            _clear_shelf(scene, rng, [o for o in COLORS if o != color])
    elif task.startswith("move_slider_"):
        # The door's panel sweeps the front of the shelf (y < 0.09 at a block's top); measured: it
        # jams a block there against the cabinet's side and stops short. Such blocks move back.
        for c in COLORS:
            xy = _xy(scene, c)
            if _on_table(scene, c) or xy[1] >= SHELF_BACK_Y:
                continue
            taken = [_xy(scene, o) for o in COLORS if o != c]
            back = np.array([xy[0], rng.uniform(SHELF_BACK_Y, SHELF[1][1])])
            if any(np.linalg.norm(back - t) <= 0.09 for t in taken):
                back = _table_spot(rng, scene, [o for o in COLORS if o != c], f"the {c} block")
            _put(scene, c, (*back, z_table), scene[11 + 6 * COLORS.index(c)])
    elif len(parts) == 4 and parts[0] in ("push", "rotate", "lift") and parts[2] == "block":
        color, where = parts[1], parts[3]
        others = [o for o in COLORS if o != color]
        yaw = rng.uniform(-np.pi, np.pi)
        if where == "slider":
            joint, (lo, hi) = SHELF_SIDES[("left", "right")[int(rng.integers(2))]]
            need["slider"] = rng.uniform(*joint)
            _put(scene, color, (*rng.uniform(lo, hi), z_table), yaw)
            _clear_shelf(scene, rng, others)
        elif where == "drawer":
            q = need["drawer"] = rng.uniform(*DRAWER_OPEN)
            # the part of the drawer in front of the table top: y -0.16 - q .. -0.18
            y = (-0.16 - q - 0.18) / 2 + rng.uniform(-0.01, 0.01)
            _put(scene, color, (rng.uniform(0.04, 0.32), y, DRAWER_FLOOR_Z + BLOCK_HEIGHT / 2), yaw)
            _make_room(task, color, scene, rng)
        else:
            lo, hi = np.array(SURFACES["table"][0][:2]), np.array(SURFACES["table"][1][:2])
            # a push moves the block ~0.13 m: leave room on the table (and off the button) that
            # way; a push to the left starts 2 cm right of the block, and near the table's right
            # edge (x > 0.38) the arm cannot reach down to the table top (measured: the tips come
            # down 2 cm short, onto the block's end, and squeeze it sideways). A pushed block
            # turns a little; within 6 cm of the incline's foot its corner then catches on the
            # sliding door (measured in calvin_env: the pink block ends against the door).
            if parts[0] == "push":
                hi[1] = -0.06
            if parts[0] == "push" and where == "right":
                hi[0] = 0.2
            elif parts[0] == "push" and where == "left":
                lo[0], hi[0] = 0.15, 0.30
            _put(scene, color, (*_table_spot(rng, scene, [], f"the {color} block", lo, hi), z_table), yaw)
            _make_room(task, color, scene, rng)
    return need


def reset_to_calvin_state(env, state, settle_steps: int = 1) -> dict:
    """Reset ``env`` to CALVIN's reset state for the symbolic initial ``state`` (as CALVIN's
    ``get_env_state_for_initial_condition``) and hold the arm ``settle_steps`` steps (contacts
    exist only after a physics step); returns the last observation."""
    robot_obs, scene_obs = env_state_for_initial_state(state)
    obs = env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
    hold = robot_obs[[0, 1, 2, 3, 4, 5, 14]]
    for _ in range(settle_steps):
        obs = env.step(hold, action_type="absolute")
    return obs


@functools.lru_cache(maxsize=None)
def calvin_setups(task: str, max_prefix: int = 2) -> tuple:
    """``((initial_state items, prefix tasks), ...)``: CALVIN reset states with the shortest
    chain of tasks (``()`` when the task applies at once) after which ``task`` is a valid next
    subtask by CALVIN's rules (one applicable rule per task, no two tasks of a category)."""
    if task not in TASK_NAMES:
        raise ValueError(f"{task!r} is not a CALVIN task")
    states = initial_states()
    prefixes = [()]
    for _ in range(max_prefix + 1):
        found = tuple((tuple(state.items()), prefix) for state in states for prefix in prefixes
                      if is_valid_chain(state, prefix + (task,)))
        if found:
            return found
        prefixes = [p + (t,) for p in prefixes for t in TASK_NAMES]
    raise ValueError(f"no chain of at most {max_prefix} tasks from CALVIN's reset states leads to {task!r}")


def calvin_start_state(env, task: str, seed: int, oracle, attempts: int = 10) -> dict:
    """Reset ``env`` to a CALVIN scene-D start state of ``task`` drawn with ``seed`` from
    :func:`calvin_setups` and let the expert do its prefix, each prefix task checked by
    ``oracle`` (a setup whose prefix fails is replaced by another draw); returns the observation."""
    setups = calvin_setups(task)
    rng = np.random.default_rng([int(seed), sum(map(ord, task))])
    failures = []
    for _ in range(attempts):
        items, prefix = setups[int(rng.integers(len(setups)))]
        obs = reset_to_calvin_state(env, dict(items))
        for step in prefix:
            if oracle is None:
                raise ValueError(f"{task!r} starts after the expert did {prefix}: pass the oracle that checks them")
            start = oracle.capture(env)
            try:
                for action in Expert().plan(step, env):
                    obs = env.step(action)
            except ValueError as error:  # the expert finds no way to do it in this scene
                failures.append(f"{step}: {error}")
                break
            if not oracle.succeeded(step, start, oracle.capture(env)):
                failures.append(f"{step} failed")
                break
        else:
            return obs
    raise RuntimeError(f"no start state for {task!r} with seed {seed}: the expert's setup failed {attempts} "
                       f"times ({'; '.join(failures)})")


def initial_state(env: PlayTableEnv, task: str, seed: int, robot_jitter: float = 0.04,
                  scene_variation: str = "task", oracle=None) -> dict:
    """Reset ``env`` to the randomised start state of ``(task, seed)`` (deterministic) and
    return the observation (see the module docstring for ``scene_variation``; ``"calvin"``
    needs ``oracle`` for tasks that start after an expert prefix)."""
    if scene_variation not in SCENE_VARIATIONS:
        raise ValueError(f"scene_variation must be one of {SCENE_VARIATIONS}, got {scene_variation!r}")
    if scene_variation == "calvin":
        return calvin_start_state(env, task, seed, oracle)
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
    need = _layout(task, scene, rng)
    drawer, slider = need.get("drawer", drawer), need.get("slider", slider)
    scene[0:6] = [slider, drawer, 0.0, SWITCH_ON if bulb else 0.0, bulb, led]
    env.reset(scene_obs=scene)
    pos = np.asarray(env.robot.target_pos, dtype=float)
    orn = np.asarray(env.robot.target_orn, dtype=float)
    if "hold" in need:
        # A held block is picked up by the expert, so that the grasp is one the arm makes (both
        # envs then hold it the same way once reset to this robot_obs / scene_obs); the arm then
        # carries it back to its start pose, the wrist kept as it grasped.
        Expert().run(f"lift_{need['hold']}_block_table", env)
        orn = matrix_to_euler(quaternion_to_matrix(env.tcp_pose()[1]), "xyz")
    # The arm's offset depends on the seed only: episode k of every task starts from the same
    # pose, so the pose cannot tell the tasks apart.
    target = pos + np.random.default_rng(int(seed)).uniform(-robot_jitter, robot_jitter, size=3)
    here = np.asarray(env.tcp_pose()[0], dtype=float)
    moves = max(8, int(np.ceil(np.linalg.norm(target - here) / MAX_SPEED)))
    # The gripper starts as the expert first commands it: a demo that opened with a gripper-only
    # step would teach a motion System 1 cannot see (it reads poses and images, not the command).
    grip = (float(next(iter(Expert().plan(task, env)))[6]) if task in SUPPORTED
            else (1.0 if env.robot.observation()[14] > 0 else -1.0))
    obs = None
    for k in range(1, moves + 5):  # move there smoothly, then let it settle
        obs = env.step(np.r_[here + min(1.0, k / moves) * (target - here), orn, grip])
    return obs
