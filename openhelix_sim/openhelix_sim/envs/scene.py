"""CALVIN scene-D-like play table built from primitive shapes.

Layout follows mees/calvin_env ``conf/scene/calvin_scene_D.yaml`` and
``data/calvin_table_D/urdf/calvin_table_D.urdf`` (joint origins there are given before the
scene's ``global_scaling: 0.8``; the numbers below are the scaled ones):

* table top at z = 0.46 (the block sampling surfaces all lie at z = 0.46);
* sliding door ``base__slide``: prismatic, 0 .. 0.28 m (0.35 * 0.8), slides towards -x,
  in front of a two-compartment cabinet at the back of the table;
* drawer ``base__drawer``: prismatic, 0 .. 0.22 m (0.275 * 0.8), under the top at x ~ 0.1,
  pulls out towards -y (towards the robot);
* button ``base__button``: prismatic, 0 .. 0.02 m (0.025 * 0.8), at (-0.28, -0.12) on the
  top, pushed downwards; held up by a weak position motor (max force 4 N as in
  ``calvin_env/scene/objects/button.py``); every press crossing mid-range toggles the LED;
* switch ``base__switch``: prismatic, 0 .. 0.088 m (0.11 * 0.8), on the front of the block at
  x ~ 0.3; CALVIN's switch slides along an incline, ours slides straight up; the lightbulb
  (on top of that block, x ~ 0.3) is on while the switch is past mid-range;
* LED on the cabinet's top plank at x ~ -0.28; lights turn yellow (bulb) / green (LED)
  when on, as in the scene config;
* blocks: red (middle), blue (big), pink (small), dropped with a uniform position on one of
  the surfaces ``table``, ``slider_left``, ``slider_right`` and a uniform yaw, resampled until
  no two blocks touch (``calvin_env/scene/play_table_scene.py`` / ``movable_object.py``).
  Block extents (0.056 / 0.08 / 0.04 m long, 0.04 m square section) are not in calvin_env's
  stored sources; they follow the RoboVerse port of CALVIN and are an approximation. A block's
  pose (scene_obs) is that of the centre of its bottom face, so a block resting on the table
  has z = 0.46 as in CALVIN's recorded states (calvin_agent/evaluation/utils.py).
"""

from __future__ import annotations

import itertools

import numpy as np
import pybullet as p

from .urdf_util import Joint, Link, Shape, robot_xml, write_text

TABLE_TOP_Z = 0.46

SURFACES = {
    "table": ((-0.2, -0.15, 0.46), (0.35, -0.03, 0.46)),
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
    "block_red": ((0.056, 0.04, 0.04), (0.9, 0.1, 0.1, 1.0)),
    "block_blue": ((0.08, 0.04, 0.04), (0.1, 0.2, 0.9, 1.0)),
    "block_pink": ((0.04, 0.04, 0.04), (1.0, 0.45, 0.75, 1.0)),
}
BLOCK_MASS = 0.2

LIGHT_ON_RGBA = {"lightbulb": (1.0, 1.0, 0.0, 1.0), "led": (0.0, 1.0, 0.0, 1.0)}
LIGHT_OFF_RGBA = (1.0, 1.0, 1.0, 1.0)

WOOD = (0.72, 0.55, 0.38, 1.0)
WHITE = (0.93, 0.93, 0.9, 1.0)
GREY = (0.55, 0.55, 0.55, 1.0)
DARK = (0.12, 0.12, 0.12, 1.0)
FLOOR = (0.62, 0.66, 0.72, 1.0)

DOOR_FRICTION_FORCE = 2.0  # velocity motor holding doors / switch in place (N)
BUTTON_SPRING_FORCE = 4.0  # calvin_env/scene/objects/button.py MAX_FORCE


def _box(size, xyz, rgba, collide=True):
    return Shape("box", size, xyz, rgba=rgba, collide=collide)


def table_urdf() -> str:
    base = Link("base_link", mass=0.0)
    s = base.shapes
    # top and legs
    s.append(_box((0.90, 0.44, 0.04), (0.0, 0.0, 0.44), WOOD))
    for x, y in itertools.product((-0.42, 0.42), (-0.19, 0.19)):
        s.append(_box((0.04, 0.04, 0.42), (x, y, 0.21), WOOD))
    # drawer housing under the top
    s.append(_box((0.36, 0.40, 0.01), (0.1, 0.0, 0.265), WOOD))
    for x in (-0.08, 0.28):
        s.append(_box((0.01, 0.40, 0.155), (x, 0.0, 0.3425), WOOD))
    # cabinet behind the sliding door: two compartments (x -0.38..-0.11 and -0.10..0.18)
    s.append(_box((0.02, 0.21, 0.14), (-0.39, 0.115, 0.53), WHITE))
    s.append(_box((0.01, 0.21, 0.14), (-0.105, 0.115, 0.53), WHITE))
    s.append(_box((0.02, 0.21, 0.14), (0.19, 0.115, 0.53), WHITE))
    s.append(_box((0.58, 0.01, 0.14), (-0.10, 0.215, 0.53), WHITE))
    s.append(_box((0.61, 0.23, 0.02), (-0.105, 0.105, 0.61), WHITE))
    # block carrying the switch (front face at y = 0.04) and the lightbulb
    s.append(_box((0.20, 0.18, 0.16), (0.30, 0.13, 0.54), WHITE))
    # button plate
    s.append(_box((0.08, 0.08, 0.004), (-0.28, -0.12, 0.462), GREY))

    slide = Link("slide_link", mass=1.0, inertia=5e-3, shapes=[
        _box((0.29, 0.012, 0.125), (0.0, 0.0, 0.0), (0.85, 0.8, 0.72, 1.0)),
        _box((0.02, 0.024, 0.07), (0.10, -0.018, 0.0), DARK),
    ])
    drawer = Link("drawer_link", mass=1.0, inertia=5e-3, shapes=[
        _box((0.32, 0.36, 0.01), (0.0, -0.02, -0.04), WHITE),
        _box((0.34, 0.012, 0.10), (0.0, -0.194, 0.0), WHITE),
        _box((0.32, 0.01, 0.08), (0.0, 0.154, -0.005), WHITE),
        _box((0.01, 0.35, 0.08), (-0.155, -0.02, -0.005), WHITE),
        _box((0.01, 0.35, 0.08), (0.155, -0.02, -0.005), WHITE),
        # handle: a bar on two posts, 3 cm in front of the drawer face
        _box((0.012, 0.03, 0.016), (-0.05, -0.215, 0.015), DARK),
        _box((0.012, 0.03, 0.016), (0.05, -0.215, 0.015), DARK),
        _box((0.124, 0.012, 0.016), (0.0, -0.236, 0.015), DARK),
    ])
    button = Link("button_link", mass=0.1, inertia=1e-4, shapes=[
        Shape("cylinder", (0.025, 0.03), (0.0, 0.0, 0.02), rgba=DARK),
    ])
    switch = Link("switch_link", mass=0.1, inertia=1e-4, shapes=[
        _box((0.08, 0.03, 0.02), (0.0, 0.0, 0.0), GREY),
    ])
    light = Link("light_link", mass=0.0, shapes=[
        Shape("sphere", (0.03,), (0.0, 0.0, 0.0), rgba=LIGHT_OFF_RGBA, collide=False),
    ])
    led = Link("led_link", mass=0.0, shapes=[
        _box((0.08, 0.03, 0.02), (0.0, 0.0, 0.0), LIGHT_OFF_RGBA, collide=False),
    ])
    joints = [
        Joint("base__slide", "prismatic", "base_link", "slide_link", xyz=(0.035, 0.0, 0.5325),
              axis=(-1, 0, 0), lower=0.0, upper=0.28),
        Joint("base__drawer", "prismatic", "base_link", "drawer_link", xyz=(0.1, 0.0, 0.32),
              axis=(0, -1, 0), lower=0.0, upper=0.22),
        Joint("base__button", "prismatic", "base_link", "button_link", xyz=(-0.28, -0.12, 0.46),
              axis=(0, 0, -1), lower=0.0, upper=0.02),
        Joint("base__switch", "prismatic", "base_link", "switch_link", xyz=(0.30, 0.025, 0.49),
              axis=(0, 0, 1), lower=0.0, upper=0.088),
        Joint("base__light", "fixed", "base_link", "light_link", xyz=(0.30, 0.13, 0.65)),
        Joint("base__led", "fixed", "base_link", "led_link", xyz=(-0.28, 0.15, 0.63)),
    ]
    return robot_xml("play_table_d", [base, slide, drawer, button, switch, light, led], joints)


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
        # button; this separate static body under the cap does (cap bottom at full press: 0.445).
        stop = p.createCollisionShape(p.GEOM_BOX, halfExtents=[0.02, 0.02, 0.005], physicsClientId=cid)
        self.button_stop_uid = p.createMultiBody(0.0, stop, -1, basePosition=[-0.28, -0.12, 0.44 - 1e-4],
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
            p.changeDynamics(uid, -1, lateralFriction=1.0, spinningFriction=0.001, physicsClientId=cid)
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
    # A block's pose (CALVIN convention) is that of the centre of its bottom face; PyBullet's
    # base pose is the centre of mass (the box centre), half the height further along local +z.
    def block_pose(self, name: str):
        com, orn = p.getBasePositionAndOrientation(self.block_uids[name], physicsClientId=self.cid)
        offset = np.array(p.getMatrixFromQuaternion(orn)).reshape(3, 3)[:, 2] * (BLOCKS[name][0][2] / 2)
        return np.array(com) - offset, np.array(orn)

    def set_block_pose(self, name: str, pos, orn) -> None:
        offset = np.array(p.getMatrixFromQuaternion(list(orn))).reshape(3, 3)[:, 2] * (BLOCKS[name][0][2] / 2)
        p.resetBasePositionAndOrientation(self.block_uids[name], (np.asarray(pos, dtype=float) + offset).tolist(),
                                          list(orn), physicsClientId=self.cid)

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
