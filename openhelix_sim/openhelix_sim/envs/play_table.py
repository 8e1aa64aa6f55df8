"""CALVIN-like play-table environment (pure Python, PyBullet DIRECT + TinyRenderer).

Frames
------
* "base" in this module is the **world frame** (the table's frame; the table stands at the
  world origin). The robot's own base pose in that frame is given by ``robot_base_pose()``
  (CALVIN: position (-0.34, -0.46, 0.24), identity orientation).
* All poses returned here (TCP, cameras) are expressed in the world frame.
* Camera frames are OpenCV optical frames: x right, y down, z forward.

Timing: 240 Hz physics, 30 Hz control, so every ``step`` applies one action and runs 8
physics substeps (``calvin_env/envs/play_table_env.py``: ``action_repeat = 240 // 30``).

Observation dict (CALVIN keys): ``rgb_static`` (S, S, 3) uint8, ``depth_static`` (S, S)
float32 metres, ``rgb_gripper`` (G, G, 3) uint8, ``depth_gripper`` (G, G) float32 metres
(camera keys are omitted when that camera's rendering is switched off), ``robot_obs`` (15,)
float64 = TCP xyz, TCP Euler xyz, gripper opening width, 7 arm joints, last gripper action
(+-1), ``scene_obs`` (24,) float64 = slide, drawer, button, switch joint positions, lightbulb,
LED (0/1), then red, blue, pink block xyz + Euler xyz (a block's xyz is the centre of its
bottom face, so a block lying on the table has z = 0.46, as in CALVIN's recorded states).

Actions (7,): ``absolute`` = TCP target xyz (m, world), Euler xyz (rad), gripper;
``relative`` = values in [-1, 1]; position * 0.02 m and orientation * 0.05 rad are added to the
current target pose (as CALVIN's ``use_target_pose``). The gripper entry opens for values >= 0
and closes for values < 0 (CALVIN uses exactly +1 / -1). As in CALVIN, an absolute action does
not change that running target: relative actions after it add to the previous relative target
(or to the pose at reset).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Callable, Optional

import numpy as np
import pybullet as p

from openhelix_core.data.calvin_format import CALVIN_CONTROL_RATE_HZ
from openhelix_core.geometry import pose_to_matrix

from . import robot as robot_mod
from .cameras import GRIPPER_LINK_TO_OPTICAL, GripperCamera, StaticCamera
from .robot import PandaRobot
from .scene import PlayTableScene

PHYSICS_HZ = 240
SUBSTEPS = PHYSICS_HZ // int(CALVIN_CONTROL_RATE_HZ)  # 8
SETTLE_SUBSTEPS = 48  # physics substeps after dropping the blocks in reset (0.2 s)

ROBOT_OBS_DIM = 15
#: ``step``'s action types and their sizes: a TCP pose (xyz, Euler xyz) or a relative move in
#: [-1, 1], each with the gripper (>= 0 opens); or the seven arm joint positions (rad) and the gripper.
ACTION_SIZES = {"absolute": 7, "relative": 7, "joints": 8}
ACTION_TYPES = tuple(ACTION_SIZES)
SCENE_OBS_DIM = 24


def check_vector(x, n: int, what: str) -> np.ndarray:
    """``x`` as a finite float64 vector of length ``n``; ValueError naming ``what`` otherwise."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be numeric: {e}") from None
    if arr.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf")
    return arr


class PlayTableEnv:
    """CALVIN scene-D-like table with a Franka Panda; see the module docstring for conventions."""

    def __init__(self, seed: int = 0, render_static: bool = True, render_gripper: bool = True,
                 image_size_static: int = 200, image_size_gripper: int = 84):
        self.render_static = bool(render_static)
        self.render_gripper = bool(render_gripper)
        self._rng = np.random.default_rng(seed)
        self._tmpdir = tempfile.mkdtemp(prefix="play_table_")
        self.cid = p.connect(p.DIRECT)
        try:
            p.resetSimulation(physicsClientId=self.cid)
            p.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=self.cid)
            p.setTimeStep(1.0 / PHYSICS_HZ, physicsClientId=self.cid)
            p.setGravity(0, 0, -9.8, physicsClientId=self.cid)
            self.robot = PandaRobot(self.cid, self._tmpdir)
            self.scene = PlayTableScene(self.cid, self._tmpdir)
            self.cameras = {
                "static": StaticCamera(self.cid, image_size_static),
                "gripper": GripperCamera(self.cid, self.robot.uid, robot_mod.GRIPPER_CAM_LINK_ID, image_size_gripper),
            }
            # Snapshot of the freshly built world: every reset starts from it, so a given seed
            # gives the same result no matter what happened before.
            self._initial_state = p.saveState(physicsClientId=self.cid)
        except Exception:
            self.close()
            raise
        self._closed = False
        self.reset()

    # --------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if getattr(self, "cid", -1) >= 0 and not getattr(self, "_closed", False):
            try:
                p.disconnect(physicsClientId=self.cid)
            except p.error:
                pass
        self._closed = True
        shutil.rmtree(getattr(self, "_tmpdir", ""), ignore_errors=True)

    def __del__(self):  # best effort
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------- reset
    def reset(self, seed: Optional[int] = None, robot_obs=None, scene_obs=None) -> dict:
        """Reset robot and scene. ``seed`` re-seeds the block sampler; ``robot_obs`` /
        ``scene_obs`` (CALVIN layouts, 15 / 24 values) restore a recorded state instead."""
        if robot_obs is not None:
            robot_obs = check_vector(robot_obs, ROBOT_OBS_DIM, "robot_obs")
        if scene_obs is not None:
            scene_obs = check_vector(scene_obs, SCENE_OBS_DIM, "scene_obs")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        p.restoreState(self._initial_state, physicsClientId=self.cid)
        if robot_obs is None:
            self.robot.reset()
        else:
            self.robot.reset(arm_joints=robot_obs[7:14], finger_position=robot_obs[6] / 2.0,
                             gripper_action=robot_obs[14])
        sampled = self.scene.reset(self._rng, scene_obs, avoid_uids=(self.robot.uid,))
        for _ in range(SETTLE_SUBSTEPS if sampled else 1):
            p.stepSimulation(physicsClientId=self.cid)
            self.scene.update()
        self.robot.sync_target_to_tcp()
        return self.get_obs()

    # -------------------------------------------------------------------- step
    def step(self, action, action_type: str = "absolute", on_substep: Optional[Callable[[int], None]] = None) -> dict:
        """Apply one 30 Hz control action (8 physics substeps) and return the observation.

        ``on_substep(k)``, if given, is called after each physics substep (and the scene's update
        that follows it) with ``k`` = 1 .. 8, the substeps done so far in this step: a caller can
        read the robot's state at 240 Hz (e.g. to publish joint states at a robot's rate).

        ``action_type``: see :data:`ACTION_SIZES`. Raises ValueError (and leaves the simulation
        untouched) for a wrong shape, NaN/inf, an unknown action_type, or relative values outside
        [-1, 1]."""
        if action_type not in ACTION_TYPES:
            raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")
        a = check_vector(action, ACTION_SIZES[action_type], "action")
        if action_type == "joints":
            self.robot.apply_joints(a[:-1], a[-1])
        elif action_type == "relative":
            bad = np.abs(a) > 1.0
            if np.any(bad):
                raise ValueError(f"relative action values must lie in [-1, 1]; indices {np.flatnonzero(bad).tolist()} "
                                 f"are out of range: {a[bad].tolist()}")
            self.robot.apply_relative(a)
        else:
            self.robot.apply_absolute(a[:3], a[3:6], a[6])
        for substep in range(1, SUBSTEPS + 1):
            p.stepSimulation(physicsClientId=self.cid)
            self.scene.update()
            if on_substep is not None:
                on_substep(substep)
        return self.get_obs()

    # ------------------------------------------------------------ observations
    def get_obs(self) -> dict:
        obs = {}
        if self.render_static:
            obs["rgb_static"], obs["depth_static"] = self.cameras["static"].render()
        if self.render_gripper:
            obs["rgb_gripper"], obs["depth_gripper"] = self.cameras["gripper"].render()
        obs["robot_obs"] = self.robot.observation()
        obs["scene_obs"] = self.scene.observation()
        return obs

    def _camera(self, name: str):
        if name not in self.cameras:
            raise ValueError(f"unknown camera {name!r}; expected 'static' or 'gripper'")
        return self.cameras[name]

    def camera_intrinsics(self, name: str) -> np.ndarray:
        """(3, 3) pinhole K (OpenCV convention, pixel centres at integers)."""
        return self._camera(name).K()

    def camera_to_base(self, name: str) -> np.ndarray:
        """(4, 4) pose of the camera's optical frame in the world ("base") frame, now."""
        return self._camera(name).camera_to_world()

    def camera_to_tcp(self, name: str = "gripper") -> np.ndarray:
        """(4, 4) fixed hand-eye transform: gripper optical frame expressed in the TCP frame."""
        if name != "gripper":
            raise ValueError("camera_to_tcp is only defined for the 'gripper' camera")
        # Composed from the fixed URDF offsets (both frames hang off panda_hand), so it is exact
        # and does not depend on the current simulation state.
        T_hand_tcp = pose_to_matrix(robot_mod.TCP_OFFSET_XYZ, p.getQuaternionFromEuler(robot_mod.TCP_OFFSET_RPY))
        T_hand_link = pose_to_matrix(robot_mod.GRIPPER_CAM_OFFSET_XYZ,
                                   p.getQuaternionFromEuler(robot_mod.GRIPPER_CAM_OFFSET_RPY))
        return np.linalg.inv(T_hand_tcp) @ T_hand_link @ GRIPPER_LINK_TO_OPTICAL

    def robot_base_pose(self):
        """Robot base in the world frame: (xyz (3,), quaternion xyzw (4,))."""
        # The base is fixed; (PyBullet's getBasePositionAndOrientation would give the centre of
        # mass of panda_link0, 5 cm above the link frame.)
        return self.robot.base_position.copy(), self.robot.base_orientation.copy()

    def tcp_pose(self):
        """TCP in the world frame: (xyz (3,), quaternion xyzw (4,))."""
        return self.robot.tcp_pose()

    def gripper_openness(self) -> float:
        """Finger opening width / 0.08 m, clipped to [0, 1] (1 = fully open)."""
        return float(np.clip(self.robot.opening_width() / (2 * robot_mod.FINGER_LIMITS[1]), 0.0, 1.0))

    def robot_urdf(self) -> str:
        """The URDF text of the simulated arm (its links and joints, as robot_state_publisher serves it)."""
        with open(self.robot.urdf_path, encoding="utf-8") as urdf:
            return urdf.read()

    def joint_names(self) -> list:
        return list(robot_mod.ARM_JOINT_NAMES + robot_mod.FINGER_JOINT_NAMES)

    def joint_positions(self) -> np.ndarray:
        return self.robot.joint_states()[0]

    def joint_velocities(self) -> np.ndarray:
        return self.robot.joint_states()[1]
