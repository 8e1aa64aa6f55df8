"""CALVIN's 34 language-conditioned tasks and their success checks for the play table.

A CALVIN task is a *change* between the state at the start of a subtask and the state now
(``calvin_env/envs/tasks.py``: ``Tasks.get_task_info(start_info, end_info)``; thresholds from
``calvin_models/conf/callbacks/rollout/tasks/new_playtable_tasks.yaml`` in mees/calvin, the
file the CALVIN evaluation instantiates). Here the two states are :class:`SceneState`
snapshots taken with :meth:`SceneState.capture`, and

* :func:`task_succeeded` ``(name, start, current)`` checks one task,
* :func:`completed_tasks` ``(start, current)`` returns every task whose condition holds
  (CALVIN's ``get_task_info``).

Conditions (CALVIN's numbers; "left" is world -x, i.e. to the robot's left as it faces +y
across the table, "right" is +x):

=========================  ==================================================================
rotate_<c>_block_left/right  rotation end * start^-1, as extrinsic xyz Euler angles: z beyond
                             +60 deg (left, counter-clockwise seen from above) / -60 deg
                             (right), |z| < 180, |x|, |y| < 30 deg; the block moved < 0.1 m
                             and at the end touches some body other than the robot
push_<c>_block_left/right    x moved by < -0.1 m (left) / > +0.1 m (right); the block touches
                             a body other than the robot at the start and the same such
                             bodies at the end
move_slider_left/right       slide joint change > +0.15 (left: the door moves towards -x) /
                             < -0.15 (right)
open/close_drawer            drawer joint change > +0.12 (open: pulled out towards the robot,
                             -y) / < -0.12 (close)
lift_<c>_block_<surface>     z rose by > 0.05 m (0.03 m from the slider); the robot did not
                             touch the block at the start and is the only body touching it
                             at the end; at the start the block touched the table top
                             (``base_link``), the cabinet's plank (``plank_link``) or the
                             drawer (``drawer_link``)
place_in_slider/drawer       at the start the robot touches exactly one body, a block, and
                             that block touches only the robot; at the end the robot does
                             not touch it and it touches the plank / the drawer
stack_block                  some block touched no block at the start and at the end
                             touches only blocks, with every linear and angular velocity
                             component below 1 (m/s, rad/s) at the end
unstack_block                some block touched only blocks (at least one) at the start, no
                             block at the end, with velocity components below 1 at the start
turn_on/off_lightbulb, _led  the light's logical state went 0 -> 1 / 1 -> 0
push_into_drawer             some block touched only the table top at the start and touches
                             the drawer at the end; the robot touches it at neither time
=========================  ==================================================================

Deviations from calvin_env, documented:

* **push_into_drawer, robot contact.** calvin_env's ``push_object_into`` tests
  ``robot_uid not in start_contacts | end_contacts`` on a set of (body, link) *pairs*, so the
  integer uid is never found and the robot is in effect only excluded at the start (through
  "exactly one contact pair"). We implement what its docstring states: the robot may touch the
  block neither at the start nor at the end.
* Block positions used by the checks are PyBullet base positions (box centres), as
  calvin_env's ``current_pos`` and scene_obs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Mapping, Optional, Set, Tuple

import numpy as np

from openhelix_core.geometry import matrix_to_euler, quaternion_to_matrix

BLOCK_NAMES = ("block_red", "block_blue", "block_pink")
COLORS = ("red", "blue", "pink")
DOOR_JOINTS = ("base__slide", "base__drawer", "base__button", "base__switch")
LIGHTS = ("lightbulb", "led")

ROBOT = "robot"
TABLE = "table"
TABLE_TOP = "base_link"
PLANK = "plank_link"
DRAWER = "drawer_link"

# CALVIN's thresholds (new_playtable_tasks.yaml / Tasks defaults).
ROTATE_Z_DEG = 60.0
ROTATE_XY_MAX_DEG = 30.0
ROTATE_Z_MAX_DEG = 180.0
ROTATE_MAX_MOVE = 0.1
PUSH_DX = 0.1
SLIDER_DELTA = 0.15
DRAWER_DELTA = 0.12
LIFT_DZ = {"table": 0.05, "slider": 0.03, "drawer": 0.05}
LIFT_SURFACE_LINK = {"table": TABLE_TOP, "slider": PLANK, "drawer": DRAWER}
STACK_MAX_VEL = 1.0

Contact = Tuple[str, str]  # (body, link): body in {"robot", "table", "floor", block names, "other"}


def _empty() -> FrozenSet[Contact]:
    return frozenset()


@dataclass(frozen=True)
class BlockState:
    """One block: position (box centre, world, m), orientation (quaternion xyzw), linear and
    angular velocity (world), and the set of (body, link) it touches."""

    pos: np.ndarray
    orn: np.ndarray
    lin_vel: np.ndarray = field(default_factory=lambda: np.zeros(3))
    ang_vel: np.ndarray = field(default_factory=lambda: np.zeros(3))
    contacts: FrozenSet[Contact] = field(default_factory=_empty)

    @property
    def bodies(self) -> FrozenSet[str]:
        """Bodies touched (CALVIN compares contact body uids, ``c[2]``)."""
        return frozenset(b for b, _ in self.contacts)


@dataclass(frozen=True)
class SceneState:
    """Snapshot of what CALVIN's task checks read (calvin_env ``env.get_info()``).

    * ``joints``: articulation joint positions by URDF joint name (``base__slide`` (m, + =
      towards -x), ``base__drawer`` (m, + = open), ``base__button``, ``base__switch``);
    * ``lights``: logical states (0/1) of ``lightbulb`` and ``led``;
    * ``blocks``: :class:`BlockState` per block name (``block_red``, ``block_blue``,
      ``block_pink``); a block's contacts are (body, link) labels: body ``robot`` (link =
      robot link name), ``table`` (link ``base_link`` = table top and fixed furniture,
      ``plank_link`` = floor of the sliding cabinet, ``drawer_link``, ``slide_link``,
      ``button_link``, ``switch_link``), another block's name (link ``base``), ``floor`` or
      ``other``;
    * ``robot_contacts``: (body, link) labels of everything the robot touches.
    """

    joints: Mapping[str, float]
    lights: Mapping[str, int]
    blocks: Mapping[str, BlockState]
    robot_contacts: FrozenSet[Contact] = field(default_factory=_empty)

    @property
    def robot_bodies(self) -> FrozenSet[str]:
        return frozenset(b for b, _ in self.robot_contacts)

    @classmethod
    def capture(cls, env) -> "SceneState":
        """Read the state of a :class:`~openhelix_sim.envs.PlayTableEnv` (contacts as computed by the
        last physics step, as in CALVIN)."""
        import pybullet as p  # only needed to read a live simulation

        cid = env.cid
        scene = env.scene
        labels = _body_labels(env)
        table_links = {v: k for k, v in scene.link_ids.items()}
        table_links[-1] = TABLE_TOP
        robot_links = {-1: "panda_link0"}
        for i in range(p.getNumJoints(env.robot.uid, physicsClientId=cid)):
            robot_links[i] = p.getJointInfo(env.robot.uid, i, physicsClientId=cid)[12].decode()

        def label(c) -> Contact:
            body = labels.get(c[2], "other")
            if body == TABLE:
                link = table_links.get(c[4], f"link{c[4]}")
            elif body == ROBOT:
                link = robot_links.get(c[4], f"link{c[4]}")
            else:
                link = "base"
            return body, link

        blocks = {}
        for name in BLOCK_NAMES:
            uid = scene.block_uids[name]
            pos, orn = p.getBasePositionAndOrientation(uid, physicsClientId=cid)
            lin, ang = p.getBaseVelocity(uid, physicsClientId=cid)
            contacts = frozenset(label(c) for c in p.getContactPoints(bodyA=uid, physicsClientId=cid))
            blocks[name] = BlockState(np.array(pos, dtype=float), np.array(orn, dtype=float), np.array(lin, dtype=float),
                                      np.array(ang, dtype=float), contacts)
        robot_contacts = frozenset(label(c) for c in p.getContactPoints(bodyA=env.robot.uid, physicsClientId=cid)
                                   if c[2] != env.robot.uid)
        joints = {n: scene.joint_state(n) for n in DOOR_JOINTS}
        lights = {n: int(bool(scene.light_state[n])) for n in LIGHTS}
        return cls(joints=joints, lights=lights, blocks=blocks, robot_contacts=robot_contacts)


def _body_labels(env) -> Dict[int, str]:
    scene = env.scene
    labels = {env.robot.uid: ROBOT, scene.table_uid: TABLE, scene.plane_uid: "floor"}
    labels.update({uid: name for name, uid in scene.block_uids.items()})
    return labels


# ----------------------------------------------------------------------------- task list
def _build_tasks() -> Dict[str, tuple]:
    t: Dict[str, tuple] = {}
    for c in COLORS:  # rotation; left = +60 deg about z (counter-clockwise from above)
        t[f"rotate_{c}_block_right"] = ("rotate", f"block_{c}", -ROTATE_Z_DEG)
        t[f"rotate_{c}_block_left"] = ("rotate", f"block_{c}", ROTATE_Z_DEG)
    for c in COLORS:  # pushing along x; right = +x
        t[f"push_{c}_block_right"] = ("push", f"block_{c}", PUSH_DX)
        t[f"push_{c}_block_left"] = ("push", f"block_{c}", -PUSH_DX)
    t["move_slider_left"] = ("door", "base__slide", SLIDER_DELTA)
    t["move_slider_right"] = ("door", "base__slide", -SLIDER_DELTA)
    t["open_drawer"] = ("door", "base__drawer", DRAWER_DELTA)
    t["close_drawer"] = ("door", "base__drawer", -DRAWER_DELTA)
    for c in COLORS:
        for surface in ("table", "slider", "drawer"):
            t[f"lift_{c}_block_{surface}"] = ("lift", f"block_{c}", LIFT_DZ[surface], LIFT_SURFACE_LINK[surface])
    t["place_in_slider"] = ("place", PLANK)
    t["place_in_drawer"] = ("place", DRAWER)
    t["stack_block"] = ("stack",)
    t["unstack_block"] = ("unstack",)
    t["turn_on_lightbulb"] = ("light", "lightbulb", 0, 1)
    t["turn_off_lightbulb"] = ("light", "lightbulb", 1, 0)
    t["turn_on_led"] = ("light", "led", 0, 1)
    t["turn_off_led"] = ("light", "led", 1, 0)
    t["push_into_drawer"] = ("push_into", TABLE_TOP, DRAWER)
    return t


_TASK_SPECS = _build_tasks()
TASKS: Tuple[str, ...] = tuple(_TASK_SPECS)  # 34 names, in CALVIN's config order
assert len(TASKS) == 34


# ------------------------------------------------------------------------------ checks
def relative_rotation_euler_deg(q_start, q_end) -> np.ndarray:
    """Extrinsic xyz Euler angles (deg) of ``R_end @ R_start^T`` (scipy's ``as_euler("xyz")``)."""
    relative = quaternion_to_matrix(q_end) @ quaternion_to_matrix(q_start).T
    return np.degrees(matrix_to_euler(relative, "xyz"))


def _rotate(obj: str, z_deg: float, start: SceneState, end: SceneState) -> bool:
    s, e = start.blocks[obj], end.blocks[obj]
    if np.linalg.norm(e.pos - s.pos) > ROTATE_MAX_MOVE:
        return False
    if not (e.bodies - {ROBOT}):
        return False
    x, y, z = relative_rotation_euler_deg(s.orn, e.orn)
    tilt_ok = abs(x) < ROTATE_XY_MAX_DEG and abs(y) < ROTATE_XY_MAX_DEG
    if z_deg > 0:
        return tilt_ok and z_deg < z < ROTATE_Z_MAX_DEG
    return tilt_ok and -ROTATE_Z_MAX_DEG < z < z_deg


def _push(obj: str, dx: float, start: SceneState, end: SceneState) -> bool:
    s, e = start.blocks[obj], end.blocks[obj]
    support_start = s.bodies - {ROBOT}
    if not support_start or support_start != e.bodies - {ROBOT}:
        return False
    moved = e.pos[0] - s.pos[0]
    return moved > dx if dx > 0 else moved < dx


def _door(joint: str, delta: float, start: SceneState, end: SceneState) -> bool:
    change = end.joints[joint] - start.joints[joint]
    return change > delta if delta > 0 else change < delta


def _lift(obj: str, dz: float, link: str, start: SceneState, end: SceneState) -> bool:
    s, e = start.blocks[obj], end.blocks[obj]
    return bool(e.pos[2] - s.pos[2] > dz and ROBOT not in s.bodies and e.bodies == {ROBOT}
                and (TABLE, link) in s.contacts)


def _held_block(state: SceneState) -> Optional[str]:
    """Name of the block the robot holds: the robot touches exactly one body, and it is a block."""
    bodies = state.robot_bodies
    if len(bodies) != 1:
        return None
    (body,) = bodies
    return body if body in state.blocks else None


def _place(link: str, start: SceneState, end: SceneState) -> bool:
    obj = _held_block(start)
    if obj is None or obj in end.robot_bodies:
        return False
    return start.blocks[obj].bodies == {ROBOT} and (TABLE, link) in end.blocks[obj].contacts


def _slow(b: BlockState) -> bool:
    return bool(np.all(np.abs(b.lin_vel) < STACK_MAX_VEL) and np.all(np.abs(b.ang_vel) < STACK_MAX_VEL))


def _stack(start: SceneState, end: SceneState) -> bool:
    names = set(start.blocks)
    for n in start.blocks:
        s, e = start.blocks[n].bodies, end.blocks[n].bodies
        if not (s & names) and (e & names) and not (e - names) and _slow(end.blocks[n]):
            return True
    return False


def _unstack(start: SceneState, end: SceneState) -> bool:
    names = set(start.blocks)
    for n in start.blocks:
        s, e = start.blocks[n].bodies, end.blocks[n].bodies
        if (s & names) and not (s - names) and not (e & names) and _slow(start.blocks[n]):
            return True
    return False


def _light(light: str, before: int, after: int, start: SceneState, end: SceneState) -> bool:
    return int(start.lights[light]) == before and int(end.lights[light]) == after


def _push_into(src: str, dest: str, start: SceneState, end: SceneState) -> bool:
    for n in start.blocks:
        s, e = start.blocks[n], end.blocks[n]
        if ROBOT in s.bodies or ROBOT in e.bodies:
            continue
        if s.contacts == {(TABLE, src)} and (TABLE, dest) in e.contacts:
            return True
    return False


_CHECKS = {
    "rotate": _rotate, "push": _push, "door": _door, "lift": _lift, "place": _place, "stack": _stack,
    "unstack": _unstack, "light": _light, "push_into": _push_into,
}


def task_succeeded(name: str, start: SceneState, current: SceneState) -> bool:
    """True when the change from ``start`` to ``current`` completes task ``name``
    (see the module docstring). Raises ValueError for an unknown task name."""
    spec = _TASK_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown CALVIN task {name!r}; known tasks: {', '.join(TASKS)}")
    return bool(_CHECKS[spec[0]](*spec[1:], start, current))


def completed_tasks(start: SceneState, current: SceneState, subset=None) -> Set[str]:
    """All tasks (or those in ``subset``) completed between ``start`` and ``current``
    (CALVIN's ``Tasks.get_task_info`` / ``get_task_info_for_set``)."""
    names = TASKS if subset is None else list(subset)
    return {n for n in names if task_succeeded(n, start, current)}
