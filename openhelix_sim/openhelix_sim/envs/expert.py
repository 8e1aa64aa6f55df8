"""Scripted expert for CALVIN tasks on the play table (waypoints, absolute actions).

``Expert().plan(task, env)`` returns an iterator of absolute actions (7,) = TCP xyz (world, m),
TCP Euler xyz (rad), gripper (+1 open / -1 closed) to feed to ``env.step(action)`` one at a
time. The plan reads the scene state (block poses, joint positions) when iteration starts and
then moves through fixed waypoints: between waypoints the commanded pose is interpolated at
most :data:`MAX_SPEED` m and :data:`MAX_TURN` rad per step, and each waypoint is held for a
few steps. A plan never yields more than :data:`MAX_STEPS` = 360 actions (the budget the CALVIN
evaluation gives each subtask, ``EP_LEN`` in ``calvin_agent/evaluation/evaluate_policy.py``);
typical plans take 60-160 steps.

Tasks performed: all 34 of CALVIN (:data:`SUPPORTED`): open/close_drawer,
move_slider_left/right, turn_on/off_led (button press; a press toggles), turn_on/off_lightbulb
(switch up / down), push_<color>_block_left/right and lift_<color>_block_table (blocks on the
table top), lift_<color>_block_slider (a block on the open half of the shelf, the hand leaned
back under the cabinet's roof), lift_<color>_block_drawer (a block in the open drawer),
rotate_<color>_block_left/right (grasp, turn 90 deg, put down), stack_block (grasp the
``stack_source`` block on the table and put it on another block; a block already held, as after a
lift in CALVIN's chains, is put on the nearest block on the table), unstack_block (take the top
block of a stack and put it down beside it), place_in_drawer / place_in_slider (a block already
held; the drawer open / part of the shelf open), push_into_drawer (drag the table-top block in
front of the open drawer over the table's front edge). A task whose precondition does not hold
(e.g. the block is not on the table) raises ``ValueError`` naming it.

Gripper frame: orientations are built as ``Rx(tilt) @ Rz(yaw) @ Rx(pi)``: pointing down,
``yaw`` about world z (at yaw = pi/2, CALVIN's start pose, the fingers close along world x),
then tilted about world x so that the fingertips lean towards +y (the hand leans back towards
the robot; used under the table top and the cabinet roof). The fingertips are
:data:`TIP_OFFSET` beyond the TCP along the approach axis; waypoints are given for the tips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np

from openhelix_core.geometry import euler_to_matrix, matrix_to_euler, quaternion_to_matrix

from .scene import BLOCKS, BUTTON_XY, CABINET_OPENING_X, INCLINE_FOOT_Y, TABLE_TOP_Z

MAX_STEPS = 360
MAX_SPEED = 0.012  # m per 30 Hz step (0.36 m/s)
MAX_TURN = 0.06  # rad per step
TIP_OFFSET = 0.01  # fingertips beyond the TCP (robot.py: pads end 1 cm past the TCP)
OPEN, CLOSED = 1.0, -1.0
DEFAULT_YAW = np.pi / 2
SAFE_Z = 0.60  # travel height of the fingertips
BLOCK_ON_TABLE_Z = TABLE_TOP_Z + 0.02  # centre of a block lying on the table top
BLOCK_IN_DRAWER_Z = 0.36  # centre of a block lying on the drawer's floor (top at z 0.34)
DRAWER_MIN_OPEN = 0.12  # drawer joint from which a block fits between the table top and the drawer's front
SLIDER_MID = 0.14  # sliding door joint half way: below it the shelf's left half is open, above it the right
SHELF_OPEN_X = {"left": -0.26, "right": 0.03}  # middle of the open half of the shelf
SHELF_Y = 0.07  # middle of the shelf's depth a gripper reaches
SHELF_TILT = 0.5  # hand leaned back (rad) to reach under the cabinet's roof
DRAWER_HANDLE_X = 0.18  # middle of the drawer's handle bar
SLIDER_HANDLE_X = 0.04  # sliding door's handle bar when the door is closed (joint 0)
DOOR_X = (-0.10, 0.18)  # sliding door's panel when the door is closed; it moves by -joint
SWITCH_BAR = (0.30, 0.015, 0.531)  # middle of the switch's crossbar at joint 0
SWITCH_TILT = 0.9  # hand tilt for the switch: fingers point into the incline
PUSH_BACK_Y = -0.08  # blocks behind this y are pushed with the hand leaned back ...
PUSH_BACK_TILT = 0.4  # ... by this much (rad)


def _scene_obs(env) -> np.ndarray:
    """scene_obs of either environment (the embedded one reads it without rendering)."""
    scene = getattr(env, "scene", None)
    if scene is not None and hasattr(scene, "observation"):
        return scene.observation()
    return env.get_obs()["scene_obs"]

FAMILIES = ("open_drawer", "close_drawer", "move_slider_left", "move_slider_right", "turn_on_led", "turn_off_led",
            "turn_on_lightbulb", "turn_off_lightbulb", "stack_block", "unstack_block", "place_in_drawer",
            "place_in_slider", "push_into_drawer")
SUPPORTED = frozenset(FAMILIES) | frozenset(
    f"{kind}_{c}_block_{x}" for c in ("red", "blue", "pink")
    for kind, xs in (("push", ("left", "right")), ("lift", ("table", "slider", "drawer")), ("rotate", ("left", "right")))
    for x in xs)


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def gripper_rotation(yaw: float, tilt: float = 0.0) -> np.ndarray:
    return _rot_x(tilt) @ _rot_z(yaw) @ _rot_x(np.pi)


def yaw_tilt_from_euler(e):
    """Inverse of ``gripper_rotation`` for a pose of that family (approximate otherwise)."""
    R = euler_to_matrix(np.asarray(e, dtype=float), "xyz")
    a = R[:, 2]
    tilt = float(np.arctan2(a[1], -a[2]))
    col0 = _rot_x(-tilt) @ R[:, 0]
    return float(np.arctan2(col0[1], col0[0])), tilt


@dataclass
class Waypoint:
    tip: np.ndarray  # fingertip position (world, m)
    yaw: float = DEFAULT_YAW
    tilt: float = 0.0
    gripper: float = CLOSED
    hold: int = 3  # extra steps at the waypoint
    speed: float = MAX_SPEED


def _wrap(a: float) -> float:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _block_half_x(name: str, yaw: float) -> float:
    L, W, _ = BLOCKS[name][0]
    return 0.5 * (abs(L * np.cos(yaw)) + abs(W * np.sin(yaw)))


def _grasp_yaw(block_yaw: float, turn: float = 0.0, square: bool = False) -> float:
    """Gripper yaw closing the fingers across the block's short side (across either side of a
    ``square`` block); of the yaws that do (pi apart, pi/2 for a square block) the one keeping
    both the grasp yaw and yaw + ``turn`` nearest pi/2, within the wrist's range (measured: a
    wrist turned 2 rad from pi/2 lags its command by 2 cm on the way down and tips the block)."""
    period = np.pi / 2 if square else np.pi
    base = block_yaw % period  # closing axis = yaw - pi/2 = across the block
    candidates = base + period * np.arange(-2, 3)
    return float(min(candidates, key=lambda g: max(abs(g - DEFAULT_YAW), abs(g + turn - DEFAULT_YAW))))


def _is_square(name: str) -> bool:
    L, W, _ = BLOCKS[name][0]
    return L == W


class Expert:
    """Waypoint expert; ``plan(task, env)`` -> iterator of absolute actions (see module doc)."""

    max_steps = MAX_STEPS

    def __init__(self, stack_source: Optional[str] = None):
        self.stack_source = stack_source

    # ------------------------------------------------------------------ API
    def plan(self, task: str, env) -> Iterator[np.ndarray]:
        if task not in SUPPORTED:
            raise ValueError(f"unknown CALVIN task {task!r}")
        waypoints = self.waypoints(task, env)
        return self._follow(env, waypoints)

    def run(self, task: str, env, on_step=None) -> int:
        """Execute the plan on ``env``; ``on_step(action, obs)`` is called after every step.
        Returns the number of steps taken."""
        n = 0
        for action in self.plan(task, env):
            obs = env.step(action)
            n += 1
            if on_step is not None:
                on_step(action, obs)
        return n

    # ------------------------------------------------------------ waypoints
    def waypoints(self, task: str, env) -> List[Waypoint]:
        scene_obs = _scene_obs(env)
        if task in ("open_drawer", "close_drawer"):
            return getattr(self, f"_{task}")(float(scene_obs[1]))
        if task.startswith("move_slider_"):
            return self._slider(float(scene_obs[0]), task.endswith("left"))
        if task in ("turn_on_led", "turn_off_led"):
            return self._button()
        if task == "turn_on_lightbulb":
            return self._switch(float(scene_obs[3]), up=True)
        if task == "turn_off_lightbulb":
            return self._switch(float(scene_obs[3]), up=False)
        if task == "place_in_drawer":
            return self._place_in_drawer(env, float(scene_obs[1]))
        if task == "place_in_slider":
            return self._place_in_slider(env, scene_obs)
        if task == "stack_block":
            return self._stack(env, scene_obs)
        if task == "unstack_block":
            return self._unstack(scene_obs)
        if task == "push_into_drawer":
            return self._push_into_drawer(scene_obs)
        kind, color = task.split("_")[:2]
        name = f"block_{color}"
        pose = self._block(scene_obs, name)
        if kind == "push":
            return self._push(name, pose, task.endswith("left"))
        if task.endswith("_slider"):
            return self._lift_from_shelf(name, pose, float(scene_obs[0]))
        if task.endswith("_drawer"):
            return self._lift_from_drawer(name, pose, float(scene_obs[1]))
        if kind == "lift":
            return self._lift(name, pose)
        return self._rotate(name, pose, np.pi / 2 if task.endswith("left") else -np.pi / 2)

    @staticmethod
    def _block(scene_obs, name: str) -> np.ndarray:
        k = ("block_red", "block_blue", "block_pink").index(name)
        return np.asarray(scene_obs[6 + 6 * k: 12 + 6 * k], dtype=float)

    @staticmethod
    def _require_on_table(name: str, pose) -> None:
        x, y, z = pose[:3]
        if not (y < INCLINE_FOOT_Y - 0.03 and abs(z - BLOCK_ON_TABLE_Z) < 0.01 and -0.43 < x < 0.43):
            raise ValueError(f"{name} is not lying on the table top (pose {np.round(pose[:3], 3).tolist()})")

    # drawer: handle bar at y -0.24 .. -0.26 (- q), z 0.345 .. 0.375, x 0.06 .. 0.30, 6 cm in front
    # of the drawer's face (y = -0.18 - q); the tips hook into that gap and pull.
    def _open_drawer(self, q: float) -> List[Waypoint]:
        gap_y = -0.21 - q
        pull = min(0.2, 0.215 - q)
        x = DRAWER_HANDLE_X
        return [
            Waypoint(np.array([x, gap_y, 0.48]), hold=2),
            Waypoint(np.array([x, gap_y, 0.35]), hold=2, speed=0.008),
            Waypoint(np.array([x, gap_y - pull, 0.35]), hold=6, speed=0.008),
            Waypoint(np.array([x, gap_y - pull, 0.48]), hold=2),
        ]

    def _close_drawer(self, q: float) -> List[Waypoint]:
        front = -0.26 - q  # front face of the handle bar
        x = DRAWER_HANDLE_X
        return [
            Waypoint(np.array([x, front - 0.03, 0.48]), hold=2),
            Waypoint(np.array([x, front - 0.03, 0.36]), hold=2, speed=0.008),
            Waypoint(np.array([x, -0.255, 0.36]), hold=6, speed=0.008),
            Waypoint(np.array([x, -0.30, 0.48]), hold=2),
        ]

    # sliding door: vertical handle bar at x = 0.04 - q, standing off the inclined panel; at
    # z = 0.55 its front is at y ~ 0.0. The closed tips push the bar's side along x.
    def _slider(self, q: float, left: bool) -> List[Waypoint]:
        hx = SLIDER_HANDLE_X - q
        side = 1.0 if left else -1.0  # push from +x towards -x for "left"
        x0 = hx + side * 0.03
        travel = min(0.22, (0.28 - q) if left else q) + 0.02
        x1 = x0 - side * travel
        y, z = 0.0, 0.55
        return [
            Waypoint(np.array([x0, -0.10, 0.64])),
            Waypoint(np.array([x0, y, 0.64]), hold=0),
            Waypoint(np.array([x0, y, z]), hold=2, speed=0.008),
            Waypoint(np.array([x1, y, z]), hold=4, speed=0.008),
            Waypoint(np.array([x1, -0.08, z]), hold=0),
            Waypoint(np.array([x1, -0.10, 0.64]), hold=2),
        ]

    def _button(self) -> List[Waypoint]:
        x, y = BUTTON_XY
        above, pressed = np.array([x, y, 0.55]), np.array([x, y, 0.462])
        return [Waypoint(above, hold=4), Waypoint(pressed, hold=8, speed=0.006), Waypoint(above, hold=4)]

    # switch: a U handle on the right cabinet's incline (60 deg), crossbar at x 0.24 .. 0.36, about
    # 5 cm off the face, rising along (0, 0.5, 0.866) with the joint (lightbulb on past q = 0.044).
    # The hand tilts so that the fingers point into the incline, the tips go under (or over) the
    # crossbar and push it up (or down) the incline.
    def _switch(self, q: float, up: bool) -> List[Waypoint]:
        tilt = SWITCH_TILT
        along = np.array([0.0, 0.5, np.sqrt(3) / 2])
        out = np.array([0.0, -np.sqrt(3) / 2, 0.5])
        bar = np.array(SWITCH_BAR) + q * along
        # tips inside the U, 1.2 cm nearer the face than the crossbar's middle, below (above) it
        start = bar - 0.012 * out + (-0.025 if up else 0.025) * along
        end = start + (0.075 if up else -(q + 0.01)) * along
        return [
            Waypoint(start + 0.1 * out, tilt=tilt, hold=2),
            Waypoint(start + 0.05 * out, tilt=tilt, hold=0, speed=0.006),
            Waypoint(start, tilt=tilt, hold=2, speed=0.006),
            Waypoint(end, tilt=tilt, hold=4, speed=0.005),
            Waypoint(end + 0.1 * out, tilt=tilt, hold=2),
        ]

    def _push(self, name: str, pose, left: bool) -> List[Waypoint]:
        self._require_on_table(name, pose)
        x, y = pose[0], pose[1]
        side = 1.0 if left else -1.0
        x0 = x + side * (_block_half_x(name, pose[5]) + 0.02)
        x1 = x0 - side * 0.16
        z = TABLE_TOP_Z + 0.012
        # Near the back edge an upright hand sweeps through the sliding door's handle and the
        # cabinet's incline (measured: it snags on the handle and stops, or tips the block onto
        # the incline); leaning the hand back towards the robot keeps it clear.
        tilt = PUSH_BACK_TILT if y > PUSH_BACK_Y else 0.0
        return [
            Waypoint(np.array([x0, y, SAFE_Z - 0.04]), tilt=tilt),
            Waypoint(np.array([x0, y, z]), tilt=tilt, hold=2, speed=0.008),
            Waypoint(np.array([x1, y, z]), tilt=tilt, hold=3, speed=0.008),
            Waypoint(np.array([x1, y, SAFE_Z - 0.04]), tilt=tilt, hold=2),
        ]

    def _grasp(self, name: str, pose, yaw: float, tilt: float = 0.0) -> List[Waypoint]:
        x, y = pose[0], pose[1]
        z = pose[2] - BLOCKS[name][0][2] / 2 + 0.008
        return [
            Waypoint(np.array([x, y, SAFE_Z - 0.04]), yaw=yaw, tilt=tilt, gripper=OPEN),
            Waypoint(np.array([x, y, z]), yaw=yaw, tilt=tilt, gripper=OPEN, hold=2, speed=0.008),
            Waypoint(np.array([x, y, z]), yaw=yaw, tilt=tilt, gripper=CLOSED, hold=10),
        ]

    def _lift(self, name: str, pose) -> List[Waypoint]:
        self._require_on_table(name, pose)
        yaw = _grasp_yaw(pose[5], square=_is_square(name))
        wps = self._grasp(name, pose, yaw)
        wps.append(Waypoint(np.array([pose[0], pose[1], TABLE_TOP_Z + 0.13]), yaw=yaw, gripper=CLOSED, hold=6,
                            speed=0.008))
        return wps

    def _rotate(self, name: str, pose, turn: float) -> List[Waypoint]:
        self._require_on_table(name, pose)
        yaw = _grasp_yaw(pose[5], turn, _is_square(name))
        x, y = pose[0], pose[1]
        up = np.array([x, y, TABLE_TOP_Z + 0.025])
        down = np.array([x, y, TABLE_TOP_Z + 0.01])
        wps = self._grasp(name, pose, yaw)
        wps += [
            Waypoint(up, yaw=yaw, gripper=CLOSED, hold=2, speed=0.006),
            Waypoint(up, yaw=yaw + turn, gripper=CLOSED, hold=4),
            Waypoint(down, yaw=yaw + turn, gripper=CLOSED, hold=2, speed=0.006),
            Waypoint(down, yaw=yaw + turn, gripper=OPEN, hold=8),
            Waypoint(np.array([x, y, SAFE_Z - 0.04]), yaw=yaw + turn, gripper=OPEN, hold=2),
        ]
        return wps

    def _stack(self, env, scene_obs) -> List[Waypoint]:
        names = ("block_red", "block_blue", "block_pink")
        poses = {n: self._block(scene_obs, n) for n in names}
        on_table = [n for n in names
                    if poses[n][1] < INCLINE_FOOT_Y - 0.03 and abs(poses[n][2] - BLOCK_ON_TABLE_Z) < 0.01]
        try:
            held = self._held(env, scene_obs)
        except ValueError:
            held = None
        if held is not None and held[0] not in on_table:  # CALVIN's chains stack the block a lift left in the hand
            return self._stack_held(env, *held, poses, on_table)
        src = self.stack_source or (on_table[0] if on_table else None)
        if src is None or src not in on_table:
            raise ValueError("stack_block needs a block on the table top to pick up")
        targets = [n for n in on_table if n != src]
        if not targets:
            raise ValueError("stack_block needs a second block on the table to stack onto")
        dst = min(targets, key=lambda n: np.linalg.norm(poses[n][:2] - poses[src][:2]))
        yaw = _grasp_yaw(poses[src][5], square=_is_square(src))
        wps = self._grasp(src, poses[src], yaw)
        gx, gy = poses[dst][0], poses[dst][1]
        top = poses[dst][2] + BLOCKS[dst][0][2] / 2
        yaw2 = _grasp_yaw(poses[dst][5], square=_is_square(dst))
        wps += [
            Waypoint(np.array([poses[src][0], poses[src][1], SAFE_Z]), yaw=yaw, gripper=CLOSED, hold=2, speed=0.008),
            Waypoint(np.array([gx, gy, SAFE_Z]), yaw=yaw2, gripper=CLOSED, hold=4),
            Waypoint(np.array([gx, gy, top + 0.012]), yaw=yaw2, gripper=CLOSED, hold=4, speed=0.006),
            Waypoint(np.array([gx, gy, top + 0.012]), yaw=yaw2, gripper=OPEN, hold=8),
            Waypoint(np.array([gx, gy, SAFE_Z]), yaw=yaw2, gripper=OPEN, hold=4),
        ]
        return wps

    def _stack_held(self, env, name: str, tip, above_bottom: float, poses, on_table) -> List[Waypoint]:
        targets = [n for n in on_table if n != name]
        if not targets:
            raise ValueError("stack_block needs a block on the table to stack the held one onto")
        dst = min(targets, key=lambda n: np.linalg.norm(poses[n][:2] - tip[:2]))
        _, quat = env.tcp_pose()
        yaw, _ = yaw_tilt_from_euler(matrix_to_euler(quaternion_to_matrix(quat), "xyz"))
        yaw = yaw if abs(_wrap(yaw - DEFAULT_YAW)) < np.pi / 2 else yaw + np.pi
        gx, gy = poses[dst][0], poses[dst][1]
        release = poses[dst][2] + BLOCKS[dst][0][2] / 2 + 0.01 + above_bottom
        return [
            Waypoint(np.array([tip[0], tip[1], max(tip[2], SAFE_Z)]), yaw=yaw, gripper=CLOSED, hold=0),
            Waypoint(np.array([gx, gy, SAFE_Z]), yaw=yaw, gripper=CLOSED, hold=4),
            Waypoint(np.array([gx, gy, release]), yaw=yaw, gripper=CLOSED, hold=4, speed=0.006),
            Waypoint(np.array([gx, gy, release]), yaw=yaw, gripper=OPEN, hold=8),
            Waypoint(np.array([gx, gy, SAFE_Z]), yaw=yaw, gripper=OPEN, hold=4),
        ]

    @staticmethod
    def _shelf_opening(q: float):
        """x range of the larger part of the shelf the sliding door (x -0.10 - q .. 0.18 - q)
        leaves open."""
        x0, x1 = CABINET_OPENING_X
        left, right = (x0, DOOR_X[0] - q), (DOOR_X[1] - q, x1)
        return max(left, right, key=lambda r: r[1] - r[0])

    def _lift_from_shelf(self, name: str, pose, q: float) -> List[Waypoint]:
        x, y, z = pose[:3]
        if not (y > INCLINE_FOOT_Y and abs(z - BLOCK_ON_TABLE_Z) < 0.01):
            raise ValueError(f"{name} is not lying on the shelf (pose {np.round(pose[:3], 3).tolist()})")
        door = (DOOR_X[0] - q, DOOR_X[1] - q)
        # CALVIN's reset states put shelf blocks 1.3 cm from the door's edge (x -0.241 or 0.070):
        # measured, the leaned-back hand lifts them from there in both envs (12/12)
        if door[0] < x < door[1]:
            raise ValueError(f"{name} at x {x:.3f} is behind the sliding door (x {door[0]:.3f} .. {door[1]:.3f})")
        # an upright hand over the shelf puts the forearm into the cabinet's roof (measured: the
        # arm stops on the roof and the LED, 10 cm above the block); leaning it back keeps it out
        yaw = _grasp_yaw(pose[5], square=_is_square(name))
        wps = self._grasp(name, pose, yaw, SHELF_TILT)
        wps.append(Waypoint(np.array([x, y, z + 0.08]), yaw=yaw, tilt=SHELF_TILT, gripper=CLOSED, hold=6, speed=0.008))
        return wps

    def _lift_from_drawer(self, name: str, pose, q: float) -> List[Waypoint]:
        x, y, z = pose[:3]
        if not (abs(z - BLOCK_IN_DRAWER_Z) < 0.01 and y < -0.18 and q >= DRAWER_MIN_OPEN):
            raise ValueError(f"{name} is not lying in the open part of the drawer (pose "
                             f"{np.round(pose[:3], 3).tolist()}, drawer joint {q:.3f})")
        yaw = _grasp_yaw(pose[5], square=_is_square(name))
        wps = self._grasp(name, pose, yaw)
        wps.append(Waypoint(np.array([x, y, z + 0.11]), yaw=yaw, gripper=CLOSED, hold=6, speed=0.008))
        return wps

    def _unstack(self, scene_obs) -> List[Waypoint]:
        names = ("block_red", "block_blue", "block_pink")
        poses = {n: self._block(scene_obs, n) for n in names}
        tops = [n for n in names if any(m != n and poses[n][2] - poses[m][2] > 0.03
                                        and np.linalg.norm(poses[n][:2] - poses[m][:2]) < 0.05 for m in names)]
        if not tops:
            raise ValueError("unstack_block needs a block lying on another block")
        src = tops[0]
        x, y, z = poses[src][:3]
        # put it down 12 cm to the side, the side farther from the other blocks and on the table
        def room(dx: float) -> float:
            gx = x + dx
            if not -0.05 < gx < 0.38:
                return -1.0
            return min(np.linalg.norm(poses[n][:2] - [gx, y]) for n in names if n != src)
        dx = max((0.12, -0.12), key=room)
        yaw = _grasp_yaw(poses[src][5], square=_is_square(src))
        down = BLOCK_ON_TABLE_Z - BLOCKS[src][0][2] / 2 + 0.012
        wps = self._grasp(src, poses[src], yaw)
        wps += [
            Waypoint(np.array([x, y, z + 0.06]), yaw=yaw, gripper=CLOSED, hold=2, speed=0.008),
            Waypoint(np.array([x + dx, y, z + 0.06]), yaw=yaw, gripper=CLOSED, hold=2),
            Waypoint(np.array([x + dx, y, down]), yaw=yaw, gripper=CLOSED, hold=2, speed=0.006),
            Waypoint(np.array([x + dx, y, down]), yaw=yaw, gripper=OPEN, hold=8),
            Waypoint(np.array([x + dx, y, SAFE_Z - 0.04]), yaw=yaw, gripper=OPEN, hold=2),
        ]
        return wps

    def _push_into_drawer(self, scene_obs) -> List[Waypoint]:
        q = float(scene_obs[1])
        if q < DRAWER_MIN_OPEN:
            raise ValueError(f"push_into_drawer needs the drawer open (joint {q:.3f} < {DRAWER_MIN_OPEN})")
        names = ("block_red", "block_blue", "block_pink")
        poses = {n: self._block(scene_obs, n) for n in names}
        # a block on the table top in front of the drawer (x -0.02 .. 0.38), nearest the front edge
        front = [n for n in names if abs(poses[n][2] - BLOCK_ON_TABLE_Z) < 0.01 and poses[n][1] < INCLINE_FOOT_Y - 0.03
                 and 0.02 < poses[n][0] < 0.34]
        if not front:
            raise ValueError("push_into_drawer needs a block on the table top in front of the drawer (x 0.02 .. 0.34)")
        name = min(front, key=lambda n: poses[n][1])
        x, y, yaw = poses[name][0], poses[name][1], poses[name][5]
        L, W, _ = BLOCKS[name][0]
        half_y = 0.5 * (abs(L * np.sin(yaw)) + abs(W * np.cos(yaw)))
        y0 = y + half_y + 0.02
        z = TABLE_TOP_Z + 0.012
        # the tips end 3 cm past the table's front edge (y -0.18): the block's centre is then
        # well over the open drawer and it tips in
        return [
            Waypoint(np.array([x, y0, SAFE_Z - 0.04])),
            Waypoint(np.array([x, y0, z]), hold=2, speed=0.008),
            Waypoint(np.array([x, -0.21, z]), hold=3, speed=0.006),
            Waypoint(np.array([x, -0.21, SAFE_Z - 0.04]), hold=4),
        ]

    @staticmethod
    def _held(env, scene_obs):
        """The block nearest the fingertips (within 6 cm) and how far the tips are above its
        bottom face."""
        pos, _ = env.tcp_pose()
        tip = np.asarray(pos) - np.array([0.0, 0.0, TIP_OFFSET])
        names = ("block_red", "block_blue", "block_pink")
        dist = {n: np.linalg.norm(Expert._block(scene_obs, n)[:3] - tip) for n in names}
        name = min(dist, key=dist.get)
        if dist[name] > 0.06:
            raise ValueError("the gripper holds no block")
        bottom = Expert._block(scene_obs, name)[2] - BLOCKS[name][0][2] / 2
        return name, tip, float(tip[2] - bottom)

    def _place_in_slider(self, env, scene_obs) -> List[Waypoint]:
        q = float(scene_obs[0])
        x0, x1 = self._shelf_opening(q)
        if x1 - x0 < 0.12:
            raise ValueError(f"place_in_slider needs a part of the shelf open (door joint {q:.3f})")
        _, tip, above_bottom = self._held(env, scene_obs)
        pos, quat = env.tcp_pose()
        yaw, _ = yaw_tilt_from_euler(matrix_to_euler(quaternion_to_matrix(quat), "xyz"))
        yaw = yaw if abs(_wrap(yaw - DEFAULT_YAW)) < np.pi / 2 else yaw + np.pi
        drop = np.array([(x0 + x1) / 2, SHELF_Y, TABLE_TOP_Z + 0.01 + above_bottom])
        return [
            Waypoint(np.array([tip[0], tip[1], max(tip[2], SAFE_Z)]), yaw=yaw, gripper=CLOSED, hold=0),
            Waypoint(np.array([drop[0], drop[1] - 0.05, SAFE_Z]), yaw=yaw, gripper=CLOSED, hold=2),
            Waypoint(drop, yaw=yaw, gripper=CLOSED, hold=3, speed=0.008),
            Waypoint(drop, yaw=yaw, gripper=OPEN, hold=10),
            Waypoint(np.array([drop[0], drop[1] - 0.05, SAFE_Z]), yaw=yaw, gripper=OPEN, hold=2),
        ]

    def _place_in_drawer(self, env, q: float) -> List[Waypoint]:
        if q < 0.12:
            raise ValueError(f"place_in_drawer needs the drawer open (joint {q:.3f} < 0.12)")
        pos, quat = env.tcp_pose()
        yaw, _ = yaw_tilt_from_euler(matrix_to_euler(quaternion_to_matrix(quat), "xyz"))
        yaw = yaw if abs(_wrap(yaw - DEFAULT_YAW)) < np.pi / 2 else yaw + np.pi
        tip = np.asarray(pos) + np.array([0.0, 0.0, -TIP_OFFSET])
        drop = np.array([DRAWER_HANDLE_X, -0.18 - q + 0.075, 0.40])
        return [
            Waypoint(np.array([tip[0], tip[1], max(tip[2], SAFE_Z)]), yaw=yaw, gripper=CLOSED, hold=0),
            Waypoint(np.array([drop[0], drop[1], SAFE_Z]), yaw=yaw, gripper=CLOSED, hold=2),
            Waypoint(drop, yaw=yaw, gripper=CLOSED, hold=3, speed=0.008),
            Waypoint(drop, yaw=yaw, gripper=OPEN, hold=10),
            Waypoint(np.array([drop[0], drop[1] - 0.04, SAFE_Z]), yaw=yaw, gripper=OPEN, hold=2),
        ]

    # ------------------------------------------------------------ execution
    def _follow(self, env, waypoints: List[Waypoint]) -> Iterator[np.ndarray]:
        pos, quat = env.tcp_pose()
        cur_tcp = np.asarray(pos, dtype=float)
        cur_yaw, cur_tilt = yaw_tilt_from_euler(matrix_to_euler(quaternion_to_matrix(quat), "xyz"))
        if waypoints:  # same yaw branch as the first waypoint (the gripper is symmetric under yaw + 2 pi)
            cur_yaw = waypoints[0].yaw + _wrap(cur_yaw - waypoints[0].yaw)
        n = 0
        for wp in waypoints:
            R = gripper_rotation(wp.yaw, wp.tilt)
            tcp = np.asarray(wp.tip, dtype=float) - TIP_OFFSET * R[:, 2]
            dist = np.linalg.norm(tcp - cur_tcp)
            dang = max(abs(wp.yaw - cur_yaw), abs(wp.tilt - cur_tilt))
            steps = max(1, int(np.ceil(max(dist / wp.speed, dang / MAX_TURN))))
            for k in range(1, steps + wp.hold + 1):
                f = min(1.0, k / steps)
                p_k = cur_tcp + f * (tcp - cur_tcp)
                yaw_k = cur_yaw + f * (wp.yaw - cur_yaw)
                tilt_k = cur_tilt + f * (wp.tilt - cur_tilt)
                euler = matrix_to_euler(gripper_rotation(yaw_k, tilt_k), "xyz")
                yield np.r_[p_k, euler, wp.gripper]
                n += 1
                if n >= MAX_STEPS:
                    return
            cur_tcp, cur_yaw, cur_tilt = tcp, wp.yaw, wp.tilt
