"""Adapter that runs CALVIN's own simulator (mees/calvin_env, scenes A-D) behind the public API
of the embedded ``PlayTableEnv`` (``openhelix_sim/envs/play_table.py``).

calvin_env is optional: ``calvin_env_available()`` says whether it imports, and building a
``CalvinPlayTableEnv`` without it raises ImportError with ``CALVIN_ENV_INSTALL``.

Building the environment (two ways, as CALVIN does it)
------------------------------------------------------
* ``dataset_path``: a CALVIN dataset split with ``.hydra/merged_config.yaml`` (e.g.
  ``task_D_D/validation``), or the dataset root (then ``<root>/validation`` is used), which is
  what calvin's ``evaluate_policy.make_env`` passes to ``calvin_env.envs.play_table_env.get_env``
  (cameras 200 x 200 static, 84 x 84 gripper there). ``scene="A".."D"`` swaps in calvin_env's
  ``conf/scene/calvin_scene_<X>.yaml`` (``get_env(scene=...)`` intends this but drops the merge
  result, so it is done here).
* no dataset: the same configuration composed from calvin_env's ``conf`` directory
  (``conf_dir``; default: the calvin_env checkout it was installed from, see
  ``calvin_env_source_dir``) as CALVIN's rendering step composes it -- hydra's
  ``config_data_collection`` with ``scene=calvin_scene_<X>``, ``robot=panda_longer_finger``,
  ``cameras=static_and_gripper``, merged with ``config_rendering`` -- and ``data_path`` = the
  checkout's ``data/`` (``compose_rendering_config``).

Either way the env is instantiated like ``get_env`` does: ``hydra.utils.instantiate(cfg.env,
show_gui=..., use_vr=False, use_scene_info=True)``.

Conventions (same as ``PlayTableEnv``)
--------------------------------------
* "base" = calvin_env's world frame; camera poses are OpenCV optical frames (x right, y down,
  z forward); intrinsics have pixel centres at integer coordinates.
* ``step``/``reset``/``get_obs`` follow ``PlayTableSimEnv`` (``robot.apply_action``, then
  ``action_repeat`` physics steps, then ``scene.step``; reset = scene, robot, one physics
  step) but only render the cameras that are switched on. The observation dict is flat, like
  the embedded env: ``rgb_static``, ``depth_static``, ``rgb_gripper``, ``depth_gripper``,
  ``robot_obs`` (15,), ``scene_obs`` (24,). ``calvin_info()`` returns calvin_env's ``get_info()``
  (what CALVIN's task oracle compares).
* CALVIN's gripper camera, like calvin_env's ``GripperCamera.render``, looks along the
  ``gripper_cam`` link's +y axis with -z as "up", from ``getLinkState(...)[:2]``.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import urllib.parse
import warnings
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from openhelix_core.geometry import pose_to_matrix, quaternion_to_matrix

from .play_table import ACTION_SIZES, ACTION_TYPES, ROBOT_OBS_DIM, SCENE_OBS_DIM, check_vector

CALVIN_ENV_INSTALL = (
    "calvin_env (CALVIN's simulator) is not installed. Install it with:\n"
    "    git clone --recursive https://github.com/mees/calvin_env.git\n"
    "    cd calvin_env/tacto && pip install -e . && cd ..\n"
    "    pip install -e .\n"
    "(steps from the calvin_env README; --recursive fetches the tacto submodule, which is installed\n"
    "first). calvin_env also needs its own dependencies (hydra-core, omegaconf, gym, pybullet,\n"
    "numpy-quaternion, opencv-python); CALVIN itself targets Python 3.8. To build the env from a\n"
    "dataset's rendering config, download a CALVIN split (https://github.com/mees/calvin,\n"
    "dataset/download_data.sh) and pass dataset_path=<split>/validation."
)

SCENES = ("A", "B", "C", "D")
# pybullet's client for calls that name none
DEFAULT_CLIENT = 0

# OpenGL eye frame (x right, y up, z backwards) -> OpenCV optical frame (x right, y down, z forward)
_GL_TO_OPTICAL = np.diag([1.0, -1.0, -1.0, 1.0])


# ------------------------------------------------------------------------------ availability
@functools.lru_cache(maxsize=1)
def _import_error() -> Optional[BaseException]:
    try:
        import calvin_env  # noqa: F401
        import calvin_env.envs.play_table_env  # noqa: F401
    except Exception as e:  # ImportError, or a broken dependency inside calvin_env
        return e
    return None


def calvin_env_available() -> bool:
    """True when ``calvin_env`` (and its play-table env module) imports."""
    return _import_error() is None


def require_calvin_env():
    """Return the ``calvin_env`` module or raise ImportError with install instructions."""
    err = _import_error()
    if err is not None:
        raise ImportError(f"{CALVIN_ENV_INSTALL}\n(import failed with: {type(err).__name__}: {err})") from err
    import calvin_env
    return calvin_env


# ---------------------------------------------------------------------------- pure helpers
def intrinsics_from_fov(width: int, height: int, fov_deg: float, aspect: Optional[float] = None) -> np.ndarray:
    """(3, 3) pinhole K for PyBullet's ``computeProjectionMatrixFOV(fov, aspect, ...)`` rendered
    at ``width`` x ``height``. ``fov_deg`` is the vertical field of view; ``aspect`` defaults to
    width / height (then fx = fy). Pixel centres at integer coordinates."""
    width, height = int(width), int(height)
    if width <= 0 or height <= 0 or not 0.0 < float(fov_deg) < 180.0:
        raise ValueError(f"bad camera parameters: {width}x{height}, fov {fov_deg}")
    aspect = width / height if aspect is None else float(aspect)
    t = math.tan(math.radians(float(fov_deg)) / 2.0)
    fy = height / (2.0 * t)
    fx = width / (2.0 * aspect * t)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fy, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def look_at_view_matrix(eye, target, up) -> np.ndarray:
    """OpenGL look-at view matrix flattened column-major (16,), as PyBullet's
    ``computeViewMatrix(eye, target, up)`` returns it."""
    eye, target, up = (np.asarray(v, dtype=float) for v in (eye, target, up))
    f = target - eye
    f = f / np.linalg.norm(f)
    s = np.cross(f, up / np.linalg.norm(up))
    s = s / np.linalg.norm(s)
    u = np.cross(s, f)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -m[:3, :3] @ eye
    return m.T.reshape(16)


def camera_pose_from_view_matrix(view_matrix) -> np.ndarray:
    """(4, 4) optical-frame pose in the world from a column-major (16,) view matrix."""
    v = np.asarray(view_matrix, dtype=float).reshape(4, 4).T  # world -> GL eye
    return np.linalg.inv(v) @ _GL_TO_OPTICAL


def gripper_camera_view_matrix(link_pos, link_quat_xyzw) -> np.ndarray:
    """View matrix of CALVIN's gripper camera from its link pose (look along link +y, up = -z)."""
    R = quaternion_to_matrix(link_quat_xyzw)
    pos = np.asarray(link_pos, dtype=float)
    return look_at_view_matrix(pos, pos + R[:, 1], -R[:, 2])


def gripper_camera_pose(link_pos, link_quat_xyzw) -> np.ndarray:
    """(4, 4) optical-frame pose of CALVIN's gripper camera in the world."""
    return camera_pose_from_view_matrix(gripper_camera_view_matrix(link_pos, link_quat_xyzw))


def flatten_calvin_obs(obs: Mapping) -> dict:
    """calvin_env observation (``rgb_obs`` / ``depth_obs`` sub-dicts) -> the embedded env's flat
    layout (uint8 RGB, float32 depth in metres, float64 state vectors)."""
    out = {}
    for key, img in dict(obs.get("rgb_obs", {})).items():
        out[key] = np.ascontiguousarray(np.asarray(img)[..., :3], dtype=np.uint8)
    for key, img in dict(obs.get("depth_obs", {})).items():
        out[key] = np.asarray(img, dtype=np.float32)
    out["robot_obs"] = np.asarray(obs["robot_obs"], dtype=np.float64)
    out["scene_obs"] = np.asarray(obs["scene_obs"], dtype=np.float64)
    return out


def to_calvin_action(action, action_type: str = "absolute"):
    """Our action -> what calvin_env's ``Robot.apply_action`` takes.

    ``absolute``: tuple (xyz (3,), Euler xyz (3,), gripper +-1); ``relative``: (7,) array in
    [-1, 1] with the gripper entry snapped to +-1 (a copy: calvin scales it in place);
    ``joints``: calvin_env's ``joint_abs`` action (seven arm joints, gripper +-1). The gripper
    opens for values >= 0 and closes below, as in ``PlayTableEnv``."""
    if action_type not in ACTION_TYPES:
        raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")
    a = check_vector(action, ACTION_SIZES[action_type], "action")
    gripper = 1 if a[-1] >= 0 else -1
    if action_type == "joints":
        return {"type": "joint_abs", "action": [*a[:-1].tolist(), gripper]}
    if action_type == "relative":
        bad = np.abs(a) > 1.0
        if np.any(bad):
            raise ValueError(f"relative action values must lie in [-1, 1]; indices {np.flatnonzero(bad).tolist()} "
                             f"are out of range: {a[bad].tolist()}")
        out = a.copy()
        out[6] = gripper
        return out
    return a[:3].copy(), a[3:6].copy(), gripper


def scene_config_name(scene: str) -> str:
    """"A".."D" (any case) -> "calvin_scene_X"; a name starting with "calvin_scene_" is kept."""
    s = str(scene)
    if s.startswith("calvin_scene_") and len(s) > len("calvin_scene_"):
        return s
    if s.upper() in SCENES:
        return f"calvin_scene_{s.upper()}"
    raise ValueError(f"scene must be one of {SCENES} or 'calvin_scene_<name>', got {scene!r}")


def resolve_dataset_config(dataset_path) -> Path:
    """Path of ``.hydra/merged_config.yaml`` for a dataset split or a dataset root."""
    root = Path(dataset_path).expanduser()
    for split in (root, root / "validation"):
        cfg = split / ".hydra" / "merged_config.yaml"
        if cfg.is_file():
            return cfg
    raise FileNotFoundError(f"no .hydra/merged_config.yaml under {root} or {root / 'validation'}; "
                            "pass a CALVIN dataset split such as task_D_D/validation")


def calvin_env_source_dir() -> Path:
    """The calvin_env checkout holding ``conf/`` and ``data/`` (neither is part of the installed
    package): the package's parent after ``pip install -e`` of a clone, or the local folder a
    ``pip install <folder>`` recorded in the distribution's ``direct_url.json``."""
    calvin_env = require_calvin_env()
    package_parent = Path(calvin_env.__file__).resolve().parents[1]
    if (package_parent / "conf").is_dir():
        return package_parent
    import importlib.metadata

    try:
        direct_url = json.loads(importlib.metadata.distribution("calvin_env").read_text("direct_url.json") or "{}")
    except importlib.metadata.PackageNotFoundError:
        direct_url = {}
    url = urllib.parse.urlparse(direct_url.get("url", ""))
    if url.scheme == "file" and (Path(url.path) / "conf").is_dir():
        return Path(url.path)
    raise FileNotFoundError(
        f"cannot find calvin_env's conf/ and data/ folders: the installed package {package_parent} has none and it "
        f"was not installed from a local folder that has them; pass conf_dir=<calvin_env checkout>/conf, or "
        f"reinstall calvin_env from a clone (pip install -e <clone>)")


def default_tasks_config() -> Path:
    """calvin_env's ``conf/tasks/new_playtable_tasks.yaml``: the task oracle's config, the same
    file as calvin's ``calvin_models/conf/callbacks/rollout/tasks/new_playtable_tasks.yaml``."""
    return calvin_env_source_dir() / "conf" / "tasks" / "new_playtable_tasks.yaml"


def compose_rendering_config(conf_dir, scene: str = "D", data_path=None):
    """The config CALVIN's rendering step writes to a dataset's ``merged_config.yaml``, composed
    from calvin_env's ``conf`` directory: hydra's ``config_data_collection`` (the recording's
    config) with scene ``calvin_scene_<scene>``, robot ``panda_longer_finger`` and cameras
    ``static_and_gripper``, merged with ``config_rendering`` (its ``env`` overrides: no VR, no GUI;
    cameras 200 px static, 84 px gripper); ``data_path`` defaults to ``<conf_dir>/../data``."""
    require_calvin_env()
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf_dir = Path(conf_dir).expanduser().resolve()
    for name in ("config_data_collection.yaml", "config_rendering.yaml"):
        if not (conf_dir / name).is_file():
            raise FileNotFoundError(f"{conf_dir} is not calvin_env's conf directory: it has no {name}")
    scene_name = scene_config_name(scene)
    if not (conf_dir / "scene" / f"{scene_name}.yaml").is_file():
        raise FileNotFoundError(f"calvin_env's conf directory {conf_dir} has no scene/{scene_name}.yaml")
    choices = ["robot=panda_longer_finger", "cameras=static_and_gripper"]
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None), warnings.catch_warnings():
        # config_rendering predates hydra 1.1's `_self_` entry; hydra's default for it is what CALVIN gets too.
        warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`", category=UserWarning)
        recording = compose("config_data_collection", overrides=[f"scene={scene_name}", *choices])
        rendering = compose("config_rendering", overrides=choices[1:])
    # CALVIN merges the two as plain YAML files (hydra's struct flag would refuse rendering-only keys).
    root = OmegaConf.merge(*(OmegaConf.create(OmegaConf.to_container(c)) for c in (recording, rendering)))
    root.data_path = str(Path(data_path) if data_path is not None else conf_dir.parent / "data")
    return root


def load_calvin_config(dataset_path=None, conf_dir=None, scene: Optional[str] = None,
                       image_size_static: Optional[int] = None, image_size_gripper: Optional[int] = None,
                       keep_cameras: Optional[tuple] = ("static", "gripper")):
    """Resolved OmegaConf config of the env (the ``env`` node of CALVIN's config tree).

    ``keep_cameras`` drops the other cameras (e.g. the tactile one, which needs tacto), as
    ``get_env(obs_space=...)`` does; None keeps all."""
    from omegaconf import OmegaConf

    if conf_dir is None:
        conf_dir = calvin_env_source_dir() / "conf"
    if dataset_path is not None:
        root = OmegaConf.load(resolve_dataset_config(dataset_path))
        if scene is not None:
            root.scene = OmegaConf.load(Path(conf_dir) / "scene" / f"{scene_config_name(scene)}.yaml")
            if "scene_cfg" in root.env:
                root.env.scene_cfg = root.scene
        # calvin_env reads a relative data_path from next to its package, which a non-editable
        # install does not ship: take the checkout's data/ instead.
        if not Path(str(root.get("data_path", ""))).is_absolute():
            root.data_path = str(Path(conf_dir).parent / "data")
    else:
        root = compose_rendering_config(conf_dir, scene or "D")
    camera_nodes = [node for node in (root.get("cameras"), root.env.get("cameras")) if OmegaConf.is_dict(node)]
    if keep_cameras is not None:
        for node in camera_nodes:
            for name in [k for k in node.keys() if k not in keep_cameras]:
                del node[name]
    for name, size in (("static", image_size_static), ("gripper", image_size_gripper)):
        if size is None:
            continue
        hits = [node for node in camera_nodes if name in node]
        if not hits:
            raise ValueError(f"the config has no {name!r} camera")
        for node in hits:
            node[name].width = int(size)
            node[name].height = int(size)
    # Resolve only the env subtree (the hydra section uses hydra-only resolvers such as ${now:}).
    return OmegaConf.create(OmegaConf.to_container(root.env, resolve=True))


def make_calvin_sim_env(dataset_path=None, conf_dir=None, scene: Optional[str] = None, show_gui: bool = False,
                        **config_kwargs):
    """calvin_env's ``PlayTableSimEnv`` built as ``get_env`` does (see the module docstring)."""
    require_calvin_env()
    import hydra

    cfg = load_calvin_config(dataset_path=dataset_path, conf_dir=conf_dir, scene=scene, **config_kwargs)
    bodies_before = _default_client_bodies()
    env = hydra.utils.instantiate(cfg, show_gui=show_gui, use_vr=False, use_scene_info=True)
    if env.cid != DEFAULT_CLIENT:
        _remove_stray_base_cylinder(bodies_before)
        # The scene's block sampler steps the physics without physicsClientId, i.e. client 0's,
        # and then reads contacts from its own, never updated, client.
        env.scene.p = _PybulletOnClient(env.cid)
    return env


class _PybulletOnClient:
    """The pybullet module with ``physicsClientId`` defaulting to one client (calls that name a
    client keep it). Unlike pybullet_utils' BulletClient it neither connects nor disconnects."""

    def __init__(self, client: int) -> None:
        self._client = client

    def __getattr__(self, name: str):
        import pybullet as p

        attribute = getattr(p, name)
        return functools.partial(attribute, physicsClientId=self._client) if inspect.isbuiltin(attribute) else attribute


def _default_client_bodies() -> set:
    import pybullet as p

    if not p.isConnected(physicsClientId=DEFAULT_CLIENT):
        return set()
    return {p.getBodyUniqueId(i, physicsClientId=DEFAULT_CLIENT)
            for i in range(p.getNumBodies(physicsClientId=DEFAULT_CLIENT))}


def _remove_stray_base_cylinder(bodies_before: set) -> None:
    """calvin_env's ``Robot.add_base_cylinder`` creates its body without ``physicsClientId``, so
    it lands in client 0 when another simulation (e.g. an embedded ``PlayTableEnv``) owns that
    one; the extra body then breaks that simulation's ``restoreState``. Take it out again."""
    import pybullet as p

    for body in _default_client_bodies() - bodies_before:
        p.removeBody(body, physicsClientId=DEFAULT_CLIENT)


# --------------------------------------------------------------------------------- the adapter
class CalvinRobotView:
    """calvin_env's ``Robot`` (every attribute passes through) with the embedded robot's
    ``observation()``: the 15-D ``robot_obs``. ``target_pos`` / ``target_orn`` (Euler) are calvin's own."""

    def __init__(self, robot) -> None:
        self._robot = robot

    def __getattr__(self, name: str):
        return getattr(self._robot, name)

    def observation(self) -> np.ndarray:
        return np.asarray(self._robot.get_observation()[0], dtype=np.float64)


class CalvinSceneView:
    """calvin_env's ``PlayTableScene`` (every attribute passes through) with the embedded scene's
    ``observation()``: the 24-D ``scene_obs`` (same layout in both)."""

    def __init__(self, scene) -> None:
        self._scene = scene

    def __getattr__(self, name: str):
        return getattr(self._scene, name)

    def observation(self) -> np.ndarray:
        return np.asarray(self._scene.get_obs(), dtype=np.float64)


class CalvinPlayTableEnv:
    """calvin_env behind ``PlayTableEnv``'s API (see the module docstring).

    Pass ``env=`` to wrap an already built ``PlayTableSimEnv`` instead of building one."""

    def __init__(self, dataset_path=None, conf_dir=None, scene: Optional[str] = None, seed: Optional[int] = 0,
                 render_static: bool = True, render_gripper: bool = True,
                 image_size_static: Optional[int] = None, image_size_gripper: Optional[int] = None,
                 show_gui: bool = False, env=None):
        require_calvin_env()
        import pybullet as p

        self._p = p
        self.render_static = bool(render_static)
        self.render_gripper = bool(render_gripper)
        self._closed = False
        if env is None:
            env = make_calvin_sim_env(dataset_path=dataset_path, conf_dir=conf_dir, scene=scene, show_gui=show_gui,
                                      image_size_static=image_size_static, image_size_gripper=image_size_gripper)
        self.env = env
        self.cid = env.cid
        self.robot = CalvinRobotView(env.robot)
        self.scene = CalvinSceneView(env.scene)
        self.cameras = {cam.name: cam for cam in env.cameras}
        self.reset(seed=seed)

    # --------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.env.close()
            # calvin_env's __del__ closes again and fails on the client it has just disconnected.
            self.env.ownsPhysicsClient = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------- reset
    def reset(self, seed: Optional[int] = None, robot_obs=None, scene_obs=None) -> dict:
        """CALVIN reset: scene (``scene_obs`` or calvin_env's own sampling), robot (``robot_obs``
        or the scene's initial joints), one physics step. ``seed`` re-seeds the sampler of the
        block poses, so that the same seed gives the same scene."""
        if robot_obs is not None:
            robot_obs = check_vector(robot_obs, ROBOT_OBS_DIM, "robot_obs")
        if scene_obs is not None:
            scene_obs = check_vector(scene_obs, SCENE_OBS_DIM, "scene_obs")
        if seed is not None:
            self._reseed(int(seed))
        self.env.scene.reset(scene_obs)
        self.robot.reset(robot_obs)
        self._p.stepSimulation(physicsClientId=self.cid)
        return self.get_obs()

    def _reseed(self, seed: int) -> None:
        # gym 0.26's seeding makes a new numpy Generator (which cannot be re-seeded in place);
        # the scene and its blocks keep the one they were built with, so hand them the new one.
        self.env.seed(seed)
        self.env.scene.np_random = self.env.np_random
        for block in self.env.scene.movable_objects:
            block.np_random = self.env.np_random

    # -------------------------------------------------------------------- step
    def step(self, action, action_type: str = "absolute") -> dict:
        """One 30 Hz control step (``action_repeat`` = 8 physics substeps), as
        ``PlayTableSimEnv.step`` without VR."""
        calvin_action = to_calvin_action(action, action_type)
        self.robot.apply_action(calvin_action)
        for _ in range(int(self.env.action_repeat)):
            self._p.stepSimulation(physicsClientId=self.cid)
        self.env.scene.step()
        return self.get_obs()

    # ------------------------------------------------------------ observations
    def get_obs(self) -> dict:
        obs = {}
        for name, on in (("static", self.render_static), ("gripper", self.render_gripper)):
            if on and name in self.cameras:
                rgb, depth = self.cameras[name].render()
                obs[f"rgb_{name}"] = np.ascontiguousarray(np.asarray(rgb)[..., :3], dtype=np.uint8)
                obs[f"depth_{name}"] = np.asarray(depth, dtype=np.float32)
        state = self.env.get_state_obs()
        obs["robot_obs"] = np.asarray(state["robot_obs"], dtype=np.float64)
        obs["scene_obs"] = np.asarray(state["scene_obs"], dtype=np.float64)
        return obs

    def calvin_info(self) -> dict:
        """calvin_env's ``get_info()`` (robot and scene info for CALVIN's task oracle)."""
        return self.env.get_info()

    # ----------------------------------------------------------------- cameras
    def _camera(self, name: str):
        if name not in self.cameras:
            raise ValueError(f"unknown camera {name!r}; available: {sorted(self.cameras)}")
        return self.cameras[name]

    def camera_intrinsics(self, name: str) -> np.ndarray:
        cam = self._camera(name)
        return intrinsics_from_fov(cam.width, cam.height, cam.fov, getattr(cam, "aspect", None))

    def _gripper_link_pose(self, cam):
        ls = self._p.getLinkState(cam.robot_uid, cam.gripper_cam_link, physicsClientId=self.cid)
        return ls[0], ls[1]

    def camera_to_base(self, name: str) -> np.ndarray:
        """(4, 4) optical frame in the world frame, now."""
        cam = self._camera(name)
        if hasattr(cam, "viewMatrix"):  # StaticCamera keeps its view matrix
            return camera_pose_from_view_matrix(cam.viewMatrix)
        if hasattr(cam, "gripper_cam_link"):
            return gripper_camera_pose(*self._gripper_link_pose(cam))
        raise ValueError(f"camera {name!r} ({type(cam).__name__}) has no known pose")

    def camera_to_tcp(self, name: str = "gripper") -> np.ndarray:
        """(4, 4) gripper optical frame in the TCP frame (computed from the current link poses;
        both hang off the hand, so it does not change)."""
        if name != "gripper":
            raise ValueError("camera_to_tcp is only defined for the 'gripper' camera")
        pos, quat = self.tcp_pose()
        return np.linalg.inv(pose_to_matrix(pos, quat)) @ self.camera_to_base("gripper")

    def robot_base_pose(self):
        return (np.asarray(self.robot.base_position, dtype=float).copy(),
                np.asarray(self.robot.base_orientation, dtype=float).copy())

    def tcp_pose(self):
        ls = self._p.getLinkState(self.robot.robot_uid, self.robot.tcp_link_id, physicsClientId=self.cid)
        return np.asarray(ls[0], dtype=float), np.asarray(ls[1], dtype=float)

    def gripper_openness(self) -> float:
        width = float(self.env.get_state_obs()["robot_obs"][6])
        return float(np.clip(width / (2 * float(self.robot.gripper_joint_limits[1])), 0.0, 1.0))

    # ------------------------------------------------------------------ joints
    def robot_urdf(self) -> str:
        """The URDF text of calvin_env's arm (its robot config's file, under the scene's data path)."""
        path = Path(self.robot.filename)
        if not path.is_absolute():
            path = Path(self.env.scene.data_path) / path
        return path.read_text(encoding="utf-8")

    def _joint_ids(self) -> list:
        return list(self.robot.arm_joint_ids) + list(self.robot.gripper_joint_ids)

    def joint_names(self) -> list:
        uid = self.robot.robot_uid
        return [self._p.getJointInfo(uid, j, physicsClientId=self.cid)[1].decode() for j in self._joint_ids()]

    def joint_positions(self) -> np.ndarray:
        states = self._p.getJointStates(self.robot.robot_uid, self._joint_ids(), physicsClientId=self.cid)
        return np.array([s[0] for s in states])

    def joint_velocities(self) -> np.ndarray:
        states = self._p.getJointStates(self.robot.robot_uid, self._joint_ids(), physicsClientId=self.cid)
        return np.array([s[1] for s in states])
