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
* ``conf_dir``: calvin_env's ``conf`` directory (default: the one next to the installed
  package); the env config is assembled from ``robot/<robot>.yaml``, ``scene/<scene>.yaml`` and
  ``cameras/cameras/{static,gripper}.yaml`` with ``PlayTableSimEnv``'s arguments (240 Hz
  physics, 30 Hz control, no VR, no EGL).

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
import math
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from openhelix_core.geometry import pose_to_matrix, quaternion_to_matrix

from .play_table import ROBOT_OBS_DIM, SCENE_OBS_DIM, check_vector

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

PHYSICS_HZ = 240
CONTROL_HZ = 30
SCENES = ("A", "B", "C", "D")

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
    """Our (7,) action -> what calvin_env's ``Robot.apply_action`` takes.

    ``absolute``: tuple (xyz (3,), Euler xyz (3,), gripper +-1); ``relative``: (7,) array in
    [-1, 1] with the gripper entry snapped to +-1 (a copy: calvin scales it in place). The
    gripper opens for values >= 0 and closes below, as in ``PlayTableEnv``."""
    if action_type not in ("absolute", "relative"):
        raise ValueError(f"action_type must be 'absolute' or 'relative', got {action_type!r}")
    a = check_vector(action, 7, "action")
    gripper = 1 if a[6] >= 0 else -1
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


def conf_dir_env_config(conf_dir, scene: str = "D", robot: str = "panda_longer_finger", seed: int = 0,
                        data_path=None) -> dict:
    """Plain-dict env config assembled from a calvin_env ``conf`` directory (YAML read with
    PyYAML; hydra-style ``${...}`` interpolations are kept for OmegaConf to resolve)."""
    import yaml

    conf_dir = Path(conf_dir)

    def load(rel: str) -> dict:
        path = conf_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"calvin_env config {path} not found")
        return yaml.safe_load(path.read_text()) or {}

    robot_file = conf_dir / "robot" / f"{robot}.yaml"
    if not robot_file.is_file():
        robot = "panda"  # older calvin_env checkouts only ship panda.yaml
    return {
        "seed": int(seed),
        "data_path": str(Path(data_path) if data_path is not None else conf_dir.parent / "data"),
        "robot": load(f"robot/{robot}.yaml"),
        "scene": load(f"scene/{scene_config_name(scene)}.yaml"),
        "cameras": {"static": load("cameras/cameras/static.yaml"), "gripper": load("cameras/cameras/gripper.yaml")},
        "env": {
            "_target_": "calvin_env.envs.play_table_env.PlayTableSimEnv",
            "_recursive_": False,
            "robot_cfg": "${robot}",
            "seed": "${seed}",
            "use_vr": False,
            "bullet_time_step": PHYSICS_HZ,
            "cameras": "${cameras}",
            "show_gui": False,
            "scene_cfg": "${scene}",
            "use_scene_info": True,
            "use_egl": False,
            "control_freq": CONTROL_HZ,
        },
    }


def load_calvin_config(dataset_path=None, conf_dir=None, scene: Optional[str] = None,
                       image_size_static: Optional[int] = None, image_size_gripper: Optional[int] = None,
                       robot: str = "panda_longer_finger", seed: int = 0,
                       keep_cameras: Optional[tuple] = ("static", "gripper")):
    """Resolved OmegaConf config of the env (the ``env`` node of CALVIN's config tree).

    ``keep_cameras`` drops the other cameras (e.g. the tactile one, which needs tacto), as
    ``get_env(obs_space=...)`` does; None keeps all."""
    calvin_env = require_calvin_env()
    from omegaconf import OmegaConf

    package_conf = Path(calvin_env.__file__).resolve().parents[1] / "conf"
    if dataset_path is not None:
        root = OmegaConf.load(resolve_dataset_config(dataset_path))
        if scene is not None:
            scene_dir = Path(conf_dir) if conf_dir is not None else package_conf
            root.scene = OmegaConf.load(scene_dir / "scene" / f"{scene_config_name(scene)}.yaml")
            if "scene_cfg" in root.env:
                root.env.scene_cfg = root.scene
    else:
        root = OmegaConf.create(conf_dir_env_config(conf_dir if conf_dir is not None else package_conf,
                                                    scene or "D", robot=robot, seed=seed))
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
    # Resolve only the env subtree (the dataset config's hydra section uses hydra-only resolvers).
    return OmegaConf.create(OmegaConf.to_container(root.env, resolve=True))


def make_calvin_sim_env(dataset_path=None, conf_dir=None, scene: Optional[str] = None, show_gui: bool = False,
                        **config_kwargs):
    """calvin_env's ``PlayTableSimEnv`` built as ``get_env`` does (see the module docstring)."""
    require_calvin_env()
    import hydra

    cfg = load_calvin_config(dataset_path=dataset_path, conf_dir=conf_dir, scene=scene, **config_kwargs)
    return hydra.utils.instantiate(cfg, show_gui=show_gui, use_vr=False, use_scene_info=True)


# --------------------------------------------------------------------------------- the adapter
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
        self.robot = env.robot
        self.cameras = {cam.name: cam for cam in env.cameras}
        self.reset(seed=seed)

    # --------------------------------------------------------------- lifecycle
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------- reset
    def reset(self, seed: Optional[int] = None, robot_obs=None, scene_obs=None) -> dict:
        """CALVIN reset: scene (``scene_obs`` or calvin_env's own sampling), robot (``robot_obs``
        or the scene's initial joints), one physics step. ``seed`` re-seeds calvin_env's object
        sampler when it is a RandomState (older gym); otherwise it is ignored."""
        if robot_obs is not None:
            robot_obs = check_vector(robot_obs, ROBOT_OBS_DIM, "robot_obs")
        if scene_obs is not None:
            scene_obs = check_vector(scene_obs, SCENE_OBS_DIM, "scene_obs")
        if seed is not None:
            rng = getattr(self.env, "np_random", None)
            if hasattr(rng, "seed"):
                rng.seed(int(seed))
        self.env.scene.reset(scene_obs)
        self.robot.reset(robot_obs)
        self._p.stepSimulation(physicsClientId=self.cid)
        return self.get_obs()

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
