"""CALVIN scene D's play table built from primitive shapes.

Every size and pose below is read from mees/calvin_env: ``conf/scene/calvin_scene_D.yaml``
(``global_scaling: 0.8``, surfaces, objects), ``data/calvin_table_D/urdf/calvin_table_D.urdf``
(joint origins, axes, limits, link masses; the numbers here are the scaled ones) and the link
meshes in ``data/calvin_table_D/meshes`` (measured: their planes, scaled by 0.8). Nothing here
loads calvin_env, so the table works without it; ``tests/openhelix_sim/test_scene_parity.py``
compares it with CALVIN's own scene where calvin_env is installed.

* table top at z = 0.44 (the cabinet shelf, ``plank_link``, too), 0.88 x 0.36 m, on four legs,
  with a cabinet body under it (z 0.30 .. 0.40) holding the drawer;
* at the back, a cabinet 0.648 m high whose front leans back at 60 deg from the horizontal (the
  face plane rises from y = 0.02 at the table top); solid on the left (x < -0.36) and right
  (x > 0.16), open between them, where the shelf lies at z 0.42 .. 0.44;
* sliding door ``base__slide``: a panel on that incline (x -0.10 .. 0.18 when closed), prismatic
  0 .. 0.28 m towards -x, with a vertical bar handle standing 6 cm off the panel at x = 0.04 - q;
* drawer ``base__drawer``: prismatic 0 .. 0.22 m towards -y, x -0.04 .. 0.40, z 0.30 .. 0.40,
  front at y = -0.18 (flush with the table top) and a bar handle 8 cm in front of it
  (x 0.06 .. 0.30, z 0.345 .. 0.375);
* button ``base__button``: prismatic 0 .. 0.02 m downwards at (-0.12, -0.12) in a ring on the top,
  held up by a position motor of 4 N (``calvin_env/scene/objects/button.py``); every press
  crossing mid-range toggles the LED;
* switch ``base__switch``: a U handle on the right cabinet's incline at x = 0.30, prismatic
  0 .. 0.088 m up the incline (joint frame rolled 150 deg), held by a 4 N velocity motor; the
  lightbulb is on while it is past mid-range;
* LED: a flat box on the cabinet roof at x = -0.12; lightbulb: a sphere on the roof at x = 0.30;
  lights turn yellow (bulb) / green (LED) when on, as in the scene config;
* blocks (``data/blocks/block_{red_middle,blue_small,pink_big}.urdf`` scaled by 0.8): red
  0.056 x 0.04 x 0.04 m, blue 0.04 m cube, pink 0.08 x 0.04 x 0.04 m, 1 kg, lateral friction
  0.7, spinning friction 0.001, placed with a uniform position on one of the surfaces ``table``,
  ``slider_left``, ``slider_right`` and a uniform yaw, resampled until no two blocks touch
  (``calvin_env/scene/objects/movable_object.py``, ``play_table_scene.py``). A block's pose
  (scene_obs) is that of its box centre, as in CALVIN: a block on the table has z = 0.46.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pybullet as p

from .urdf_util import Joint, Link, Shape, robot_xml, write_text

TABLE_TOP_Z = 0.44

# Block centres are sampled in these boxes (calvin_scene_D.yaml ``surfaces``).
SURFACES = {
    "table": ((0.0, -0.15, 0.46), (0.35, -0.03, 0.46)),
    "slider_left": ((-0.32, 0.05, 0.46), (-0.16, 0.12, 0.46)),
    "slider_right": ((-0.05, 0.05, 0.46), (0.13, 0.12, 0.46)),
}

DOOR_NAMES = ("base__slide", "base__drawer")
BUTTON_NAME = "base__button"
SWITCH_NAME = "base__switch"
LIGHT_NAMES = ("lightbulb", "led")  # scene_obs order
BLOCK_NAMES = ("block_red", "block_blue", "block_pink")  # scene_obs order

BLOCKS = {
    # name: (full extents xyz in m, rgba)
    "block_red": ((0.056, 0.04, 0.04), (1.0, 0.0, 0.0, 1.0)),
    "block_blue": ((0.04, 0.04, 0.04), (0.0, 0.0, 1.0, 1.0)),
    "block_pink": ((0.08, 0.04, 0.04), (1.0, 0.0, 1.0, 1.0)),
}
BLOCK_MASS = 1.0
BLOCK_FRICTION = 0.7
BLOCK_SPINNING_FRICTION = 0.001

LIGHT_ON_RGBA = {"lightbulb": (1.0, 1.0, 0.0, 1.0), "led": (0.0, 1.0, 0.0, 1.0)}
LIGHT_OFF_RGBA = (1.0, 1.0, 1.0, 1.0)

WOOD = (0.60, 0.42, 0.26, 1.0)
LIGHT_WOOD = (0.72, 0.55, 0.38, 1.0)
HANDLE = (0.25, 0.25, 0.27, 1.0)
DARK = (0.02, 0.02, 0.02, 1.0)
FLOOR = (0.62, 0.66, 0.72, 1.0)

# calvin_env/scene/objects/{door,switch,button}.py: MAX_FORCE = 4 for every joint motor
DOOR_FRICTION_FORCE = 4.0
BUTTON_SPRING_FORCE = 4.0

INCLINE = math.radians(60.0)  # cabinet front, from the horizontal
INCLINE_FOOT_Y = 0.02  # where the incline meets the table top
CABINET_TOP_Z = 0.648
CABINET_OPENING_X = (-0.36, 0.16)  # open part of the cabinet front (the shelf and the door)
SLIDE_ORIGIN = (-0.10, 0.075, 0.535)
DRAWER_ORIGIN = (0.18, 0.0, 0.32)
BUTTON_XY = (-0.12, -0.12)
SWITCH_ORIGIN = (0.30, 0.0609, 0.4949)
SWITCH_ROLL = math.radians(150.0)


def _box(size, xyz, rgba, collide=True, rpy=(0.0, 0.0, 0.0)):
    return Shape("box", size, xyz, rpy=rpy, rgba=rgba, collide=collide)


def _span(lo, hi):
    """Box (size, centre) spanning the corner points ``lo`` .. ``hi``."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return tuple(hi - lo), tuple((hi + lo) / 2)


def _solid(lo, hi, rgba=WOOD):
    size, centre = _span(lo, hi)
    return _box(size, centre, rgba)


def _incline_block(x0: float, x1: float) -> Shape:
    """Solid cabinet side under the incline: a slab whose front face lies on the incline from
    below the table top up to the roof (its back corners hide inside the top and the roof)."""
    depth = 0.04
    s0, s1 = -0.01, (CABINET_TOP_Z - TABLE_TOP_Z) / math.sin(INCLINE)
    along = np.array([math.cos(INCLINE), math.sin(INCLINE)])
    normal = np.array([-math.sin(INCLINE), math.cos(INCLINE)])  # out of the face, towards -y
    face_mid = np.array([INCLINE_FOOT_Y, TABLE_TOP_Z]) + along * (s0 + s1) / 2
    y, z = face_mid - normal * depth / 2
    return _box((x1 - x0, s1 - s0, depth), ((x0 + x1) / 2, y, z), WOOD, rpy=(INCLINE, 0.0, 0.0))


def table_urdf() -> str:
    base = Link("base_link", mass=0.0)
    s = base.shapes
    ox0, ox1 = CABINET_OPENING_X
    s.append(_solid((-0.44, -0.18, 0.40), (0.44, 0.02, 0.44)))  # top in front of the cabinet
    s.append(_solid((-0.44, 0.02, 0.40), (ox0, 0.18, 0.44)))
    s.append(_solid((ox1, 0.02, 0.40), (0.44, 0.18, 0.44)))
    s.append(_solid((ox0, 0.02, 0.40), (ox1, 0.18, 0.42)))  # under the shelf
    for x, y in itertools.product((-0.42, 0.42), (-0.16, 0.16)):
        s.append(_solid((x - 0.02, y - 0.02, 0.0), (x + 0.02, y + 0.02, 0.30)))
    # body under the top, around the drawer's slot (x -0.04 .. 0.40, y < 0.07)
    s.append(_solid((-0.42, -0.16, 0.30), (-0.04, 0.16, 0.40)))
    s.append(_solid((0.40, -0.16, 0.30), (0.42, 0.16, 0.40)))
    s.append(_solid((-0.04, 0.07, 0.30), (0.40, 0.16, 0.40)))
    s.append(_solid((-0.04, -0.16, 0.29), (0.40, 0.07, 0.30)))
    # cabinet: solid inclined sides, back wall and roof over the opening
    for x0, x1 in ((-0.44, ox0), (ox1, 0.44)):
        s.append(_incline_block(x0, x1))
        s.append(_solid((x0, 0.06, 0.44), (x1, 0.14, 0.50)))  # fill between the slab and the back
        s.append(_solid((x0, 0.10, 0.50), (x1, 0.14, 0.57)))
        s.append(_solid((x0, 0.14, 0.44), (x1, 0.18, CABINET_TOP_Z)))
    s.append(_solid((ox0, 0.16, 0.42), (ox1, 0.18, CABINET_TOP_Z)))
    s.append(_solid((ox0, 0.135, 0.628), (ox1, 0.16, CABINET_TOP_Z)))
    # ring around the button (r 0.03 .. 0.04, 2 cm high)
    bx, by = BUTTON_XY
    for dx, dy, sx, sy in ((-0.036, 0, 0.008, 0.08), (0.036, 0, 0.008, 0.08), (0, -0.036, 0.064, 0.008),
                           (0, 0.036, 0.064, 0.008)):
        s.append(_box((sx, sy, 0.02), (bx + dx, by + dy, TABLE_TOP_Z + 0.01), WOOD))

    plank = Link("plank_link", mass=0.0, shapes=[_solid((ox0, 0.02, 0.42), (ox1, 0.16, 0.44), LIGHT_WOOD)])
    # slide_link frame: x along the door, y up the incline, z out of it (rolled by INCLINE)
    slide = Link("slide_link", mass=1.543, inertia=1e-2, shapes=[
        _box((0.28, 0.22, 0.02), (0.14, 0.0, 0.01), LIGHT_WOOD),
        _box((0.016, 0.016, 0.05), (0.14, 0.07, 0.045), HANDLE),
        _box((0.016, 0.016, 0.05), (0.14, -0.07, 0.045), HANDLE),
        _box((0.016, 0.156, 0.016), (0.14, 0.0, 0.072), HANDLE),
    ])
    drawer = Link("drawer_link", mass=4.231, inertia=5e-2, shapes=[
        _box((0.44, 0.02, 0.10), (0.0, -0.17, 0.03), WOOD),  # front
        _box((0.40, 0.20, 0.02), (0.0, -0.06, 0.01), LIGHT_WOOD),  # floor (top at z 0.34)
        _box((0.02, 0.22, 0.10), (-0.21, -0.05, 0.03), WOOD),
        _box((0.02, 0.22, 0.10), (0.21, -0.05, 0.03), WOOD),
        _box((0.40, 0.02, 0.08), (0.0, 0.05, 0.04), WOOD),
        _box((0.02, 0.06, 0.03), (-0.11, -0.21, 0.04), HANDLE),
        _box((0.02, 0.06, 0.03), (0.11, -0.21, 0.04), HANDLE),
        _box((0.24, 0.02, 0.03), (0.0, -0.25, 0.04), HANDLE),
    ])
    button = Link("button_link", mass=0.154, inertia=1e-4, shapes=[
        Shape("cylinder", (0.028, 0.024), (0.0, 0.0, 0.012), rgba=DARK),
    ])
    # switch_link frame: x along the handle's bar, y out of the incline, z down it
    switch = Link("switch_link", mass=0.239, inertia=1e-4, shapes=[
        _box((0.012, 0.064, 0.016), (-0.054, 0.032, -0.008), HANDLE),
        _box((0.012, 0.064, 0.016), (0.054, 0.032, -0.008), HANDLE),
        _box((0.12, 0.012, 0.016), (0.0, 0.058, -0.008), HANDLE),
    ])
    light = Link("light_link", mass=0.0, shapes=[
        Shape("sphere", (0.027,), (0.0, 0.0, 0.024), rgba=LIGHT_OFF_RGBA),
    ])
    led = Link("led_link", mass=0.0, shapes=[_box((0.16, 0.04, 0.015), (0.0, 0.0, 0.0075), LIGHT_OFF_RGBA)])
    joints = [
        Joint("base__slide", "prismatic", "base_link", "slide_link", xyz=SLIDE_ORIGIN, rpy=(INCLINE, 0.0, 0.0),
              axis=(-1, 0, 0), lower=0.0, upper=0.28),
        Joint("base__drawer", "prismatic", "base_link", "drawer_link", xyz=DRAWER_ORIGIN,
              axis=(0, -1, 0), lower=0.0, upper=0.22),
        Joint("base__button", "prismatic", "base_link", "button_link", xyz=(*BUTTON_XY, TABLE_TOP_Z + 0.02),
              axis=(0, 0, -1), lower=0.0, upper=0.02),
        Joint("base__switch", "prismatic", "base_link", "switch_link", xyz=SWITCH_ORIGIN,
              rpy=(SWITCH_ROLL, 0.0, 0.0), axis=(0, 0, -1), lower=0.0, upper=0.088),
        Joint("base__light", "fixed", "base_link", "light_link", xyz=(0.30, 0.16, CABINET_TOP_Z)),
        Joint("base__led", "fixed", "base_link", "led_link", xyz=(-0.12, 0.16, CABINET_TOP_Z)),
        Joint("base__plank", "fixed", "base_link", "plank_link"),
    ]
    return robot_xml("play_table_d", [base, plank, slide, drawer, button, switch, light, led], joints)


class PlayTableScene:
    def __init__(self, cid: int, urdf_dir: str):
        self.cid = cid
        path = write_text(urdf_dir, "play_table_d.urdf", table_urdf())
        self.table_uid = p.loadURDF(path, [0, 0, 0], [0, 0, 0, 1], useFixedBase=True, physicsClientId=cid)
        # Floor: infinite collision plane, plain 6 x 6 m visual (pybullet_data's textured plane.urdf
        # costs ~20 ms per static frame in TinyRenderer).
        floor_col = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=cid)
        floor_vis = p.createVisualShape(p.GEOM_BOX, halfExtents=[3.0, 3.0, 0.001], rgbaColor=FLOOR,
                                        visualFramePosition=[0, 0, -0.001], physicsClientId=cid)
        self.plane_uid = p.createMultiBody(0.0, floor_col, floor_vis, physicsClientId=cid)
        # Links of one multibody do not collide with each other, so the table top cannot stop the
        # button; this separate static body under the cap does (cap bottom at full press: 0.44).
        stop = p.createCollisionShape(p.GEOM_BOX, halfExtents=[0.02, 0.02, 0.005], physicsClientId=cid)
        self.button_stop_uid = p.createMultiBody(0.0, stop, -1, basePosition=[*BUTTON_XY, TABLE_TOP_Z - 0.005 - 1e-4],
                                                 physicsClientId=cid)
        self.joint_ids = {}
        self.link_ids = {}
        for i in range(p.getNumJoints(self.table_uid, physicsClientId=cid)):
            info = p.getJointInfo(self.table_uid, i, physicsClientId=cid)
            self.joint_ids[info[1].decode()] = i
            self.link_ids[info[12].decode()] = i
        self.limits = {
            n: p.getJointInfo(self.table_uid, self.joint_ids[n], physicsClientId=cid)[8:10]
            for n in (*DOOR_NAMES, BUTTON_NAME, SWITCH_NAME)
        }
        self.light_links = {"lightbulb": self.link_ids["light_link"], "led": self.link_ids["led_link"]}
        self.block_uids = {}
        for name in BLOCK_NAMES:
            size, rgba = BLOCKS[name]
            half = [x / 2 for x in size]
            col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=cid)
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba, physicsClientId=cid)
            uid = p.createMultiBody(BLOCK_MASS, col, vis, basePosition=[0, 0, 1.0 + len(self.block_uids)],
                                    physicsClientId=cid)
            p.changeDynamics(uid, -1, lateralFriction=BLOCK_FRICTION, spinningFriction=BLOCK_SPINNING_FRICTION,
                             physicsClientId=cid)
            self.block_uids[name] = uid
        self.light_state = {n: 0 for n in LIGHT_NAMES}
        self._button_prev_pressed = False
        self._set_joint_motors()

    # ----------------------------------------------------------------- joints
    def _set_joint_motors(self) -> None:
        for n in (*DOOR_NAMES, SWITCH_NAME):
            p.setJointMotorControl2(self.table_uid, self.joint_ids[n], p.VELOCITY_CONTROL, targetVelocity=0.0,
                                    force=DOOR_FRICTION_FORCE, physicsClientId=self.cid)
        p.setJointMotorControl2(self.table_uid, self.joint_ids[BUTTON_NAME], p.POSITION_CONTROL,
                                targetPosition=0.0, force=BUTTON_SPRING_FORCE, physicsClientId=self.cid)

    def joint_state(self, name: str) -> float:
        return float(p.getJointState(self.table_uid, self.joint_ids[name], physicsClientId=self.cid)[0])

    def _mid(self, name: str) -> float:
        lo, hi = self.limits[name]
        return 0.5 * (lo + hi)

    def _button_pressed(self) -> bool:
        return self.joint_state(BUTTON_NAME) > self._mid(BUTTON_NAME)

    def set_light(self, name: str, on: bool) -> None:
        on = int(bool(on))
        if self.light_state.get(name) == on:
            return
        self.light_state[name] = on
        rgba = LIGHT_ON_RGBA[name] if on else LIGHT_OFF_RGBA
        p.changeVisualShape(self.table_uid, self.light_links[name], rgbaColor=rgba, physicsClientId=self.cid)

    # ----------------------------------------------------------------- blocks
    # A block's pose is its box centre (PyBullet's base pose: the boxes' centre of mass), as CALVIN's.
    def block_pose(self, name: str):
        pos, orn = p.getBasePositionAndOrientation(self.block_uids[name], physicsClientId=self.cid)
        return np.array(pos), np.array(orn)

    def set_block_pose(self, name: str, pos, orn) -> None:
        p.resetBasePositionAndOrientation(self.block_uids[name], np.asarray(pos, dtype=float).tolist(), list(orn),
                                          physicsClientId=self.cid)

    # ------------------------------------------------------------------ reset
    def reset(self, rng: np.random.Generator, scene_obs=None, avoid_uids=()) -> bool:
        """Reset joints, lights and blocks. Returns True when block poses were sampled."""
        if scene_obs is None:
            joints = np.zeros(4)
            lights = np.zeros(2)
        else:
            scene_obs = np.asarray(scene_obs, dtype=float)
            joints, lights = scene_obs[:4], scene_obs[4:6]
        for n, v in zip((*DOOR_NAMES, BUTTON_NAME, SWITCH_NAME), joints):
            lo, hi = self.limits[n]
            p.resetJointState(self.table_uid, self.joint_ids[n], float(np.clip(v, lo, hi)), 0.0,
                              physicsClientId=self.cid)
        self._set_joint_motors()
        self.light_state = {n: None for n in LIGHT_NAMES}
        for n, v in zip(LIGHT_NAMES, lights):
            self.set_light(n, v > 0.5)
        self._button_prev_pressed = self._button_pressed()
        if scene_obs is not None:
            for k, name in enumerate(BLOCK_NAMES):
                st = scene_obs[6 + 6 * k: 12 + 6 * k]
                self.set_block_pose(name, st[:3], p.getQuaternionFromEuler(st[3:6].tolist()))
                p.resetBaseVelocity(self.block_uids[name], [0, 0, 0], [0, 0, 0], physicsClientId=self.cid)
            return False
        self._sample_blocks(rng, avoid_uids)
        return True

    def _sample_blocks(self, rng: np.random.Generator, avoid_uids=(), max_tries: int = 1000) -> None:
        names = list(SURFACES)
        uids = [self.block_uids[n] for n in BLOCK_NAMES]
        for _ in range(max_tries):
            for name in BLOCK_NAMES:
                surface = SURFACES[names[int(rng.integers(len(names)))]]
                pos = rng.uniform(surface[0], surface[1])
                pos[2] += 0.002  # drop from 2 mm above the surface
                yaw = rng.uniform(-np.pi, np.pi)
                self.set_block_pose(name, pos, p.getQuaternionFromEuler([0.0, 0.0, yaw]))
                p.resetBaseVelocity(self.block_uids[name], [0, 0, 0], [0, 0, 0], physicsClientId=self.cid)
            clear = True
            for a, b in itertools.combinations(uids, 2):
                if p.getClosestPoints(a, b, 0.002, physicsClientId=self.cid):
                    clear = False
                    break
            if clear:
                for a in uids:
                    for b in avoid_uids:
                        if p.getClosestPoints(a, b, 0.0, physicsClientId=self.cid):
                            clear = False
            if clear:
                return
        raise RuntimeError("could not place the blocks without contacts")

    # ------------------------------------------------------------------- step
    def update(self) -> None:
        """Button / switch logic; call after every physics substep."""
        pressed = self._button_pressed()
        if pressed and not self._button_prev_pressed:
            self.set_light("led", not self.light_state["led"])
        self._button_prev_pressed = pressed
        self.set_light("lightbulb", self.joint_state(SWITCH_NAME) > self._mid(SWITCH_NAME))

    def observation(self) -> np.ndarray:
        joints = [self.joint_state(n) for n in (*DOOR_NAMES, BUTTON_NAME, SWITCH_NAME)]
        lights = [float(self.light_state[n]) for n in LIGHT_NAMES]
        blocks = []
        for name in BLOCK_NAMES:
            pos, orn = self.block_pose(name)
            blocks.extend(pos)
            blocks.extend(p.getEulerFromQuaternion(orn))
        return np.array(joints + lights + blocks, dtype=np.float64)
