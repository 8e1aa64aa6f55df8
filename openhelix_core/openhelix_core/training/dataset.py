"""CALVIN-format data -> OpenHelix training samples (System 1 batch + System 2 inputs).

Reads one CALVIN split folder (a real CALVIN ``training/`` / ``validation/`` split, the debug
split included, or a folder written by ``openhelix_sim.experiments``) with
:class:`openhelix_core.data.CalvinDataset` and turns every annotated segment into samples:

* **Keyposes** (3DDA ``utils/utils_with_calvin.keypoint_discovery``, re-implemented): on the
  proprioception ``[xyz, euler xyz, openness]`` of a segment, the end-effector acceleration
  ``|v[t+1] - v[t]|`` (velocities ``p[t] - p[t-1]``, first repeated) is computed; its strict
  local maxima that are in the top 20 % of all values become keyposes, kept greedily at least
  ``keypose_buffer`` (5) frames apart; then every frame where the gripper state changes, the
  frame before it (when > 1), and the last frame are added.
* **Samples**: ``frame_sampling="keypose"`` takes the segment start and every keypose but the
  last (3DDA's ``package_calvin.py``, mode ``keypose``), optionally plus ``keypose_neighbors``
  frames after each; ``"all"`` takes every frame but the last. The target of frame ``i`` is the
  stretch of proprioception from ``i`` to the first keypose ``> i`` (inclusive).
* **Pauses** (``still_motion`` > 0, off by default as in 3DDA): when the arm stays put from
  frame ``i`` to that keypose (moves less than ``still_motion`` metres, turns less than
  :data:`STILL_ROTATION`, keeps the gripper's openness), frame ``i`` is in effect *at* the
  keypose, and its target is the stretch from that keypose to the next one instead
  (repeatedly). Scripted demos hold still at contacts (hooked into a handle, pressing a
  button); without this, the frames of a hold teach "stay here" from the very observation at
  which the keypose teaches "pull", and a policy that arrives there stalls.
* **Trajectory**: that stretch resampled to ``interpolation_length`` (20) points uniformly in
  its index (3DDA ``datasets/utils.TrajectoryInterpolator``: cubic spline per pose dimension,
  linear for openness; the cubic spline needs scipy, which falls back to linear interpolation
  when scipy is not installed). Euler angles are unwrapped along the stretch first, so a pose
  near the +-pi seam does not interpolate the long way round. The first point (the current
  pose) is dropped: the target is ``(interpolation_length - 1, 8)`` absolute
  ``[xyz, quaternion xyzw, openness]``; :class:`DiffuserActor` makes it relative to the
  current gripper itself (3DDA's ``relative_action``: offsets and wrapped Euler differences).
* **Proprioception**: ``robot_obs[:3]``, the quaternion of the CALVIN Euler angles
  ``robot_obs[3:6]`` (extrinsic xyz), openness ``robot_obs[14] > 0`` (the last gripper action,
  as 3DDA) or ``robot_obs[6] / 0.08`` (finger width); ``nhist`` states, earlier frames of the
  segment, the first repeated.
* **Images and point clouds** go through :meth:`System1Processor.observation_to_batch`, the
  exact function the controller runs at inference: depth back-projected with the camera
  calibration, every camera resized to ``image_resize`` (RGB bilinear, points nearest; this
  upsamples CALVIN's 84x84 gripper view), the centred ``image_size`` square cropped.
* **System 2 input**: the static RGB image as recorded (uint8) and the instruction text.

Camera calibration (:class:`CameraCalibration`): read from ``camera_info.json`` in the split
folder when present (``openhelix_sim.experiments`` writes it from ``PlayTableEnv``); otherwise
CALVIN's own parameters are assumed:

* static camera (``calvin_env/conf/cameras/cameras/static.yaml``): vertical fov 10 deg,
  look_from (2.8715, -2.1666, 2.5552), look_at (-0.0262, -0.0302, 0.3920), up (0.4041, 0.2263,
  0.8863), fixed; intrinsics from the fov and the recorded image size (200x200 in the dataset);
* gripper camera (``gripper.yaml``): fov 75 deg, mounted on the ``gripper_cam`` link of CALVIN's
  Panda URDF (``panda_hand`` + xyz (-0.1, 0, 0), rpy (1.3, 0, -1.57)), looking along the link's
  +y with -z up; the TCP link is ``panda_hand`` + (0, 0, 0.14) (``panda_longer_finger.urdf``,
  which reproduces CALVIN's recorded ``robot_obs``). Its pose per frame is therefore
  ``T_base_tcp(robot_obs[:6]) @ T_tcp_camera`` (CALVIN does not store camera poses; 3DDA
  re-renders the robot state in calvin_env to get the same matrix);
* pinhole intrinsics with ``fx = fy = H / (2 tan(fov / 2))`` and the principal point at
  ``((W - 1) / 2, (H - 1) / 2)`` (the play table's convention; 3DDA's ``deproject`` uses
  ``W // 2``, half a pixel off);
* depth is CALVIN's z-depth in metres; pixels without a reading take the camera position.

Everything here is numpy / torch; nothing imports ROS or the simulator.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import geometry
from ..data.calvin_format import CalvinDataset
from ..models.system1 import CURRENT_GRIPPER, PCD, RGB, TRAJECTORY, System1Config, System1Processor
from ..types import CameraFrame, Observation

CAMERA_INFO_FILE = "camera_info.json"
FINGER_MAX_WIDTH = 0.08
#: A pause (``still_motion``) turns the gripper by less than this (rad) and changes its
#: openness (0 .. 1) by less than STILL_OPENNESS.
STILL_ROTATION = 0.05
STILL_OPENNESS = 0.05

# CALVIN's camera parameters (mees/calvin_env conf/cameras/cameras/{static,gripper}.yaml).
CALVIN_STATIC_FOV = 10.0
CALVIN_STATIC_EYE = (2.871459009488717, -2.166602199425597, 2.555159848480571)
CALVIN_STATIC_TARGET = (-0.026242351159453392, -0.0302329882979393, 0.3920000493526459)
CALVIN_STATIC_UP = (0.4041403970338857, 0.22629790978217404, 0.8862616969685161)
CALVIN_GRIPPER_FOV = 75.0
# CALVIN's Panda URDF: fixed links on panda_hand.
_TCP_IN_HAND_XYZ = (0.0, 0.0, 0.14)
_GRIPPER_CAM_IN_HAND_XYZ = (-0.1, 0.0, 0.0)
_GRIPPER_CAM_IN_HAND_RPY = (1.3, 0.0, -1.57)
# Optical frame (x right, y down, z forward) in the gripper_cam link frame: z = link +y,
# y = link +z (up is link -z), x = y cross z = link -x.
_GRIPPER_LINK_TO_OPTICAL = np.array([[-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                                     [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Camera calibration
# ---------------------------------------------------------------------------------------------
def intrinsics_from_fov(width: int, height: int, fov_deg: float) -> np.ndarray:
    """Pinhole K for a vertical field of view (square pixels, centre at ``(W-1)/2, (H-1)/2``)."""
    focal = height / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    return np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def look_at_camera_to_base(eye, target, up) -> np.ndarray:
    """Optical-frame pose (x right, y down, z forward) of a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def pose_from_xyz_euler(xyz, euler) -> np.ndarray:
    """``(4, 4)`` from a position and CALVIN (extrinsic xyz) Euler angles."""
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(geometry.euler_to_matrix(np.asarray(euler, dtype=np.float64), "xyz"))
    pose[:3, 3] = np.asarray(xyz, dtype=np.float64)
    return pose


def calvin_gripper_camera_to_tcp() -> np.ndarray:
    """Fixed hand-eye transform of CALVIN's gripper camera (optical frame in the TCP frame)."""
    hand_tcp = pose_from_xyz_euler(_TCP_IN_HAND_XYZ, (0.0, 0.0, 0.0))
    hand_link = pose_from_xyz_euler(_GRIPPER_CAM_IN_HAND_XYZ, _GRIPPER_CAM_IN_HAND_RPY)
    return np.linalg.inv(hand_tcp) @ hand_link @ _GRIPPER_LINK_TO_OPTICAL


@dataclass
class CameraCalibration:
    """How to turn a CALVIN frame's depth images into base-frame point maps.

    Attributes:
        static_fov / gripper_fov: vertical fields of view in degrees (intrinsics follow the
            recorded image sizes) -- used for a camera without measured intrinsics.
        static_to_base: ``(4, 4)`` fixed pose of the static camera's optical frame.
        gripper_to_tcp: ``(4, 4)`` fixed pose of the gripper camera's optical frame in the TCP
            frame; per frame ``T_base_tcp @ gripper_to_tcp``.
        static_intrinsics / gripper_intrinsics: ``(3, 3)`` pinhole K measured for the recorded
            image size (a robot's CameraInfo), or None to derive K from the field of view.
        source: where the numbers came from (for messages and reports).
    """

    static_fov: float
    static_to_base: np.ndarray
    gripper_fov: float
    gripper_to_tcp: np.ndarray
    source: str = "calvin"
    static_intrinsics: Optional[np.ndarray] = None
    gripper_intrinsics: Optional[np.ndarray] = None

    @classmethod
    def calvin(cls) -> "CameraCalibration":
        return cls(CALVIN_STATIC_FOV, look_at_camera_to_base(CALVIN_STATIC_EYE, CALVIN_STATIC_TARGET, CALVIN_STATIC_UP),
                   CALVIN_GRIPPER_FOV, calvin_gripper_camera_to_tcp(), "calvin")

    def to_dict(self) -> dict[str, Any]:
        data = {"static_fov": float(self.static_fov), "static_to_base": np.asarray(self.static_to_base).tolist(),
                "gripper_fov": float(self.gripper_fov), "gripper_to_tcp": np.asarray(self.gripper_to_tcp).tolist(),
                "source": self.source}
        for name in ("static_intrinsics", "gripper_intrinsics"):
            if getattr(self, name) is not None:
                data[name] = np.asarray(getattr(self, name)).tolist()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CameraCalibration":
        try:
            calib = cls(float(data["static_fov"]), np.asarray(data["static_to_base"], dtype=np.float64),
                        float(data["gripper_fov"]), np.asarray(data["gripper_to_tcp"], dtype=np.float64),
                        str(data.get("source", "file")))
        except KeyError as error:
            raise ValueError(f"camera calibration lacks {error}") from error
        for name in ("static_to_base", "gripper_to_tcp"):
            matrix = getattr(calib, name)
            if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
                raise ValueError(f"camera calibration {name} must be a finite 4x4 matrix")
        for name in ("static_intrinsics", "gripper_intrinsics"):
            if data.get(name) is not None:
                matrix = np.asarray(data[name], dtype=np.float64)
                if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)) or matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
                    raise ValueError(f"camera calibration {name} must be a finite 3x3 K with positive focal lengths")
                setattr(calib, name, matrix)
        return calib

    def save(self, directory) -> Path:
        path = Path(directory) / CAMERA_INFO_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def for_split(cls, directory) -> "CameraCalibration":
        """``camera_info.json`` of the split folder, else CALVIN's parameters."""
        path = Path(directory) / CAMERA_INFO_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from error
            calib = cls.from_dict(data)
            calib.source = str(path)
            return calib
        return cls.calvin()

    def _intrinsics(self, camera: str, depth: np.ndarray) -> np.ndarray:
        height, width = depth.shape
        measured = getattr(self, f"{camera}_intrinsics")
        if measured is None:
            return intrinsics_from_fov(width, height, getattr(self, f"{camera}_fov"))
        if not (0.0 <= measured[0, 2] <= width and 0.0 <= measured[1, 2] <= height):
            raise ValueError(f"the {camera} camera's intrinsics ({self.source}) put the principal point "
                             f"({measured[0, 2]:g}, {measured[1, 2]:g}) outside its {width}x{height} images")
        return measured

    def frames(self, frame: Dict[str, np.ndarray]) -> Dict[str, CameraFrame]:
        """The :class:`CameraFrame` of each camera in one CALVIN frame (keys ``rgb_static`` ...
        ``robot_obs``; a frame without ``rgb_gripper`` gives the static camera only)."""
        robot_obs = np.asarray(frame["robot_obs"], dtype=np.float64)
        cameras = {"static": CameraFrame(np.asarray(frame["rgb_static"], dtype=np.uint8),
                                         np.asarray(frame["depth_static"], dtype=np.float32),
                                         self._intrinsics("static", frame["depth_static"]), self.static_to_base)}
        if "rgb_gripper" in frame:
            tcp = pose_from_xyz_euler(robot_obs[:3], robot_obs[3:6])
            cameras["gripper"] = CameraFrame(np.asarray(frame["rgb_gripper"], dtype=np.uint8),
                                             np.asarray(frame["depth_gripper"], dtype=np.float32),
                                             self._intrinsics("gripper", frame["depth_gripper"]),
                                             tcp @ self.gripper_to_tcp)
        return cameras


# ---------------------------------------------------------------------------------------------
# Keyposes and trajectories
# ---------------------------------------------------------------------------------------------
def proprio_from_robot_obs(robot_obs: np.ndarray, openness_source: str = "action") -> np.ndarray:
    """``(N, 15)`` robot_obs -> ``(N, 7)`` ``[xyz, euler xyz, openness]`` (3DDA's CALVIN proprio)."""
    robot_obs = np.asarray(robot_obs, dtype=np.float64).reshape(-1, 15)
    if openness_source == "action":
        openness = (robot_obs[:, 14] > 0).astype(np.float64)
    elif openness_source == "width":
        openness = np.clip(robot_obs[:, 6] / FINGER_MAX_WIDTH, 0.0, 1.0)
    else:
        raise ValueError(f"openness_source must be 'action' or 'width', got {openness_source!r}")
    return np.concatenate([robot_obs[:, :6], openness[:, None]], axis=1)


def discover_keyposes(proprio: np.ndarray, buffer_size: int = 5, top_fraction: float = 0.2) -> np.ndarray:
    """Keypose indices of one segment's ``(N, 7)`` proprioception (see the module docstring)."""
    proprio = np.asarray(proprio, dtype=np.float64)
    count = len(proprio)
    if count == 0:
        raise ValueError("cannot find keyposes in an empty segment")
    if count == 1:
        return np.array([0])
    padded = np.concatenate([proprio[:1], proprio], axis=0)
    velocity = np.diff(padded, axis=0)                       # (N, 7), first = 0
    velocity = np.concatenate([velocity, velocity[-1:]], axis=0)
    accel = np.linalg.norm(np.diff(velocity, axis=0)[:, :3], axis=1)  # (N,)
    keys: list[int] = []
    if count >= 3:
        inner = np.arange(1, count - 1)
        maxima = inner[(accel[inner] > accel[inner - 1]) & (accel[inner] > accel[inner + 1])]
        threshold = np.sort(accel)[::-1][int(count * top_fraction)]
        for index in maxima[accel[maxima] >= threshold]:
            if not keys or index - keys[-1] >= buffer_size:
                keys.append(int(index))
    openness = padded[:, -1]
    changed = np.flatnonzero(openness[:-1] != openness[1:])
    keys += changed.tolist() + (changed[changed > 1] - 1).tolist() + [count - 1]
    return np.unique(np.asarray(keys, dtype=np.int64))


def _resample(values: np.ndarray, length: int, cubic: bool) -> np.ndarray:
    """Resample ``(N, D)`` uniformly in the index to ``(length, D)``."""
    old = np.linspace(0.0, 1.0, len(values))
    new = np.linspace(0.0, 1.0, length)
    if len(values) == 1:
        return np.repeat(values, length, axis=0)
    if cubic and len(values) >= 2:
        try:
            from scipy.interpolate import CubicSpline
        except ImportError:  # scipy is optional: linear interpolation instead
            cubic = False
        else:
            return CubicSpline(old, values, axis=0)(new)
    return np.stack([np.interp(new, old, values[:, d]) for d in range(values.shape[1])], axis=1)


def interpolate_trajectory(stretch: np.ndarray, length: int) -> np.ndarray:
    """``(N, 7)`` proprio stretch (current pose first) -> ``(length, 8)`` absolute
    ``[xyz, quaternion xyzw, openness]`` (cubic for the pose when scipy exists, linear openness)."""
    stretch = np.asarray(stretch, dtype=np.float64)
    pose = stretch[:, :6].copy()
    pose[:, 3:6] = np.unwrap(pose[:, 3:6], axis=0)
    pose = _resample(pose, length, cubic=True)
    openness = _resample(stretch[:, 6:7], length, cubic=False)
    quat = np.asarray(geometry.euler_to_quaternion(pose[:, 3:6], "xyz"))
    return np.concatenate([pose[:, :3], quat, openness], axis=1)


def gripper_states(proprio: np.ndarray) -> np.ndarray:
    """``(N, 7)`` proprio -> ``(N, 8)`` ``[xyz, quaternion xyzw, openness]``."""
    proprio = np.asarray(proprio, dtype=np.float64)
    quat = np.asarray(geometry.euler_to_quaternion(proprio[:, 3:6], "xyz"))
    return np.concatenate([proprio[:, :3], quat, proprio[:, 6:7]], axis=1)


@dataclass(frozen=True)
class SampleRef:
    """One training sample: frame ``frame`` (global id) of segment ``segment``, targeting
    the stretch from ``stretch_start`` (``frame``, or the keypose it pauses at) to
    ``keypose`` (global ids)."""

    segment: int
    frame: int
    keypose: int
    stretch_start: int


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    task: str
    instruction: str


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------
class OpenHelixCalvinDataset(torch.utils.data.Dataset):
    """Samples for OpenHelix training from one CALVIN split folder.

    Args:
        directory: the split folder (``episode_*.npz`` + ``lang_annotations/auto_lang_ann.npy``).
        system1_config: decides cameras, ``image_resize``/``image_size`` and ``nhist``.
        interpolation_length: trajectory points incl. the current pose (targets: one fewer).
        frame_sampling / keypose_neighbors / keypose_buffer / still_motion / openness_source: see
            the module doc.
        tasks: keep only segments of these tasks (None = all).
        max_segments: read at most this many segments (in file order).
        calibration: camera calibration; default :meth:`CameraCalibration.for_split`.
        cache_dir: when set, every sample is pre-processed once and kept in
            ``<cache_dir>/<key>.pt`` (a dict of tensors, loaded with ``weights_only=True``);
            the key hashes the split, the settings and the frame files' sizes.

    Item ``i`` is a dict: ``rgb (ncam, 3, S, S)`` float in [0, 1], ``pcd (ncam, 3, S, S)``,
    ``current_gripper (nhist, 8)``, ``trajectory (T, 8)`` (absolute), ``static_image (H, W, 3)``
    uint8 tensor, ``instruction`` str, ``task`` str, ``index`` int.
    """

    def __init__(self, directory, system1_config: System1Config, interpolation_length: int = 20,
                 frame_sampling: str = "all", keypose_neighbors: int = 0, keypose_buffer: int = 5,
                 still_motion: float = 0.0, openness_source: str = "action", tasks: Optional[Sequence[str]] = None,
                 max_segments: Optional[int] = None, calibration: Optional[CameraCalibration] = None,
                 cache_dir=None, progress: bool = False):
        self.directory = Path(directory)
        self.reader = CalvinDataset(self.directory)
        self.config = system1_config
        self.processor = System1Processor(system1_config)
        self.interpolation_length = int(interpolation_length)
        self.frame_sampling = frame_sampling
        self.keypose_neighbors = int(keypose_neighbors)
        self.keypose_buffer = int(keypose_buffer)
        self.still_motion = float(still_motion)
        if not np.isfinite(self.still_motion) or self.still_motion < 0:
            raise ValueError(f"still_motion must be finite and >= 0 (metres), got {still_motion!r}")
        self.openness_source = openness_source
        self.calibration = calibration or CameraCalibration.for_split(self.directory)
        if frame_sampling not in ("keypose", "all"):
            raise ValueError(f"frame_sampling must be 'keypose' or 'all', got {frame_sampling!r}")
        if self.interpolation_length < 2:
            raise ValueError("interpolation_length must be at least 2")
        unknown_cams = [c for c in system1_config.cameras if c not in ("static", "gripper")]
        if unknown_cams:
            raise ValueError(f"CALVIN data has cameras 'static' and 'gripper'; System 1 asks for {unknown_cams}")

        if "gripper" in system1_config.cameras:
            first = self.reader.frame_path(self.reader.frame_ids[0])
            with np.load(first, allow_pickle=False) as data:
                if "rgb_gripper" not in data.files:
                    raise ValueError(f"{self.directory} has no gripper camera (its frames hold {sorted(data.files)}), "
                                     f"and this System 1 takes cameras {list(system1_config.cameras)}: record the "
                                     f"gripper camera, or train System 1 on the static camera alone "
                                     f"(system1_overrides {{\"cameras\": [\"static\"]}}, also when starting from a "
                                     f"two-camera checkpoint)")
        segments = self.reader.annotated_segments()
        if not segments:
            raise ValueError(f"{self.directory} has no language annotations "
                             f"(lang_annotations/auto_lang_ann.npy); nothing to train on")
        if tasks is not None:
            wanted = set(tasks)
            segments = [s for s in segments if s[2] in wanted]
            if not segments:
                raise ValueError(f"no annotated segment of tasks {sorted(wanted)} in {self.directory}")
        if max_segments is not None:
            segments = segments[:int(max_segments)]
        self.segments = [Segment(*s) for s in segments]
        self._proprio: list[np.ndarray] = []
        self.samples: list[SampleRef] = []
        for seg_index, seg in enumerate(self.segments):
            robot_obs = self.reader.load_range(seg.start, seg.end, keys=("robot_obs",))["robot_obs"]
            proprio = proprio_from_robot_obs(robot_obs, openness_source)
            self._proprio.append(proprio)
            keys = discover_keyposes(proprio, self.keypose_buffer)
            for local in self._sample_frames(len(proprio), keys):
                start, target = self._target_stretch(proprio, keys, int(local))
                self.samples.append(SampleRef(seg_index, seg.start + int(local), seg.start + target, seg.start + start))
        if not self.samples:
            raise ValueError(f"{self.directory}: the annotated segments give no samples")
        self.instructions = sorted({s.instruction for s in self.segments})
        self._cache: Optional[dict[str, torch.Tensor]] = None
        if cache_dir is not None:
            self._cache = self._load_or_build_cache(Path(cache_dir), progress)

    # -- indexing ------------------------------------------------------------------------------
    def _sample_frames(self, count: int, keys: np.ndarray) -> list[int]:
        if count < 2:
            return []
        if self.frame_sampling == "all":
            return list(range(count - 1))
        frames = {0} | {int(k) for k in keys[:-1]}
        for k in keys[:-1]:
            for offset in range(1, self.keypose_neighbors + 1):
                frames.add(int(k) + offset)
        return sorted(f for f in frames if f < count - 1)

    def _target_stretch(self, proprio: np.ndarray, keys: np.ndarray, local: int) -> tuple[int, int]:
        """``(start, keypose)`` of frame ``local``'s target stretch (see *Pauses*)."""
        start = local
        target = int(keys[np.searchsorted(keys, local, side="right")])
        while self.still_motion > 0 and target != keys[-1] and self._still(proprio[local:target + 1]):
            start, target = target, int(keys[np.searchsorted(keys, target, side="right")])
        return start, target

    def _still(self, stretch: np.ndarray) -> bool:
        """Whether the arm barely moves over ``stretch (N, 7)`` (xyz, euler xyz, openness)."""
        moved = np.linalg.norm(stretch[:, :3] - stretch[0, :3], axis=1).max()
        turned = np.abs(np.remainder(stretch[:, 3:6] - stretch[0, 3:6] + np.pi, 2 * np.pi) - np.pi).max()
        regripped = np.abs(stretch[:, 6] - stretch[0, 6]).max()
        return bool(moved < self.still_motion and turned < STILL_ROTATION and regripped < STILL_OPENNESS)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def trajectory_length(self) -> int:
        return self.interpolation_length - 1

    def target_trajectory(self, index: int) -> np.ndarray:
        """``(T, 8)`` absolute target of sample ``index`` (no images read)."""
        ref = self.samples[index]
        seg = self.segments[ref.segment]
        proprio = self._proprio[ref.segment]
        stretch = proprio[ref.stretch_start - seg.start: ref.keypose - seg.start + 1]
        return interpolate_trajectory(stretch, self.interpolation_length)[1:]

    def current_gripper(self, index: int) -> np.ndarray:
        """``(nhist, 8)`` proprioception of sample ``index``, oldest first."""
        ref = self.samples[index]
        seg = self.segments[ref.segment]
        local = ref.frame - seg.start
        rows = [max(local - k, 0) for k in range(self.config.nhist - 1, -1, -1)]
        return gripper_states(self._proprio[ref.segment][rows])

    def workspace_bounds(self) -> np.ndarray:
        """``(2, 3)`` min / max of the absolute TCP positions of every annotated segment."""
        positions = np.concatenate([proprio[:, :3] for proprio in self._proprio])
        return np.stack([positions.min(axis=0), positions.max(axis=0)])

    def image_sizes(self) -> dict[str, tuple]:
        """``{camera: (H, W)}`` of the recorded images (first frame)."""
        frame = self.reader.load_frame(self.segments[0].start)
        return {name: tuple(frame[f"rgb_{name}"].shape[:2]) for name in ("static", "gripper")
                if f"rgb_{name}" in frame}

    def position_bounds(self) -> np.ndarray:
        """``(2, 3)`` min / max over all samples of the positions System 1 normalises: target
        positions minus the current position when ``config.relative`` (3DDA's relative-trajectory
        bounds), else the absolute target and current positions (the workspace)."""
        low = np.full(3, np.inf)
        high = np.full(3, -np.inf)
        for index in range(len(self)):
            targets = self.target_trajectory(index)[:, :3]
            current = self.current_gripper(index)[:, :3]
            positions = targets - current[-1] if self.config.relative else np.concatenate([targets, current])
            low = np.minimum(low, positions.min(axis=0))
            high = np.maximum(high, positions.max(axis=0))
        return np.stack([low, high])

    # -- samples -------------------------------------------------------------------------------
    def _build(self, index: int) -> dict[str, Any]:
        ref = self.samples[index]
        keys = ["rgb_static", "depth_static", "robot_obs"]
        if "gripper" in self.config.cameras:
            keys += ["rgb_gripper", "depth_gripper"]
        frame = self.reader.load_frame(ref.frame, keys=keys)
        cameras = self.calibration.frames(frame)
        current = self.current_gripper(index)
        observation = Observation(cameras={name: cameras[name] for name in self.config.cameras},
                                  ee_position=current[-1, :3], ee_orientation=current[-1, 3:7],
                                  gripper_openness=float(current[-1, 7]))
        batch = self.processor.observation_to_batch(observation, np.zeros(self.config.goal_dim, np.float32),
                                                    history=list(current[:-1]))
        return {
            RGB: batch[RGB][0],
            PCD: batch[PCD][0],
            CURRENT_GRIPPER: torch.from_numpy(current).float(),
            TRAJECTORY: torch.from_numpy(self.target_trajectory(index)).float(),
            "static_image": torch.from_numpy(np.ascontiguousarray(frame["rgb_static"], dtype=np.uint8)),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range (0..{len(self) - 1})")
        if self._cache is not None:
            item = {
                RGB: self._cache["rgb"][index].float() / 255.0,
                PCD: self._cache["pcd"][index].float(),
                CURRENT_GRIPPER: self._cache["current_gripper"][index],
                TRAJECTORY: self._cache["trajectory"][index],
                "static_image": self._cache["static_image"][index],
            }
        else:
            item = self._build(index)
        seg = self.segments[self.samples[index].segment]
        item.update(instruction=seg.instruction, task=seg.task, index=index)
        return item

    # -- cache ---------------------------------------------------------------------------------
    def cache_key(self) -> str:
        files = [self.reader.frame_path(ref.frame) for ref in self.samples]
        digest = hashlib.sha256()
        digest.update(json.dumps({
            "dir": str(self.directory.resolve()), "cameras": list(self.config.cameras),
            "resize": self.config.image_resize, "size": self.config.image_size, "nhist": self.config.nhist,
            "interp": self.interpolation_length, "sampling": self.frame_sampling,
            "neighbors": self.keypose_neighbors, "buffer": self.keypose_buffer, "open": self.openness_source,
            "calib": self.calibration.to_dict() | {"source": ""},
            "samples": [(r.segment, r.frame, r.keypose, r.stretch_start) for r in self.samples],
            "segments": [(s.start, s.end, s.task, s.instruction) for s in self.segments],
        }, sort_keys=True).encode())
        for path in sorted(set(files)):
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
        return digest.hexdigest()[:20]

    def _load_or_build_cache(self, cache_dir: Path, progress: bool) -> dict[str, torch.Tensor]:
        path = cache_dir / f"calvin_samples_{self.cache_key()}.pt"
        if path.is_file():
            return torch.load(str(path), map_location="cpu", weights_only=True)
        items = []
        iterator = range(len(self))
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc=f"pre-processing {self.directory.name}", unit="sample")
        for index in iterator:
            items.append(self._build(index))
        rgb = torch.stack([item[RGB] for item in items])
        cache = {
            # RGB is stored as uint8 (rounded): at most 0.5/255 away from the processor's output.
            "rgb": (rgb * 255.0).round().clamp(0, 255).to(torch.uint8),
            "pcd": torch.stack([item[PCD] for item in items]).half(),
            "current_gripper": torch.stack([item[CURRENT_GRIPPER] for item in items]),
            "trajectory": torch.stack([item[TRAJECTORY] for item in items]),
            "static_image": torch.stack([item["static_image"] for item in items]),
        }
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(cache, str(tmp))
        tmp.replace(path)
        return cache


def collate(items: List[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep ``instruction`` / ``task`` as lists and ``static_image`` as a list of
    ``(H, W, 3)`` uint8 numpy arrays (System 2's processor takes a list)."""
    out: dict[str, Any] = {}
    for key in (RGB, PCD, CURRENT_GRIPPER, TRAJECTORY):
        out[key] = torch.stack([item[key] for item in items])
    out["static_image"] = [item["static_image"].numpy() for item in items]
    out["instruction"] = [item["instruction"] for item in items]
    out["task"] = [item["task"] for item in items]
    out["index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
    return out


__all__ = [
    "CAMERA_INFO_FILE", "CameraCalibration", "OpenHelixCalvinDataset", "SampleRef", "Segment",
    "calvin_gripper_camera_to_tcp", "collate", "discover_keyposes", "gripper_states", "interpolate_trajectory",
    "intrinsics_from_fov", "look_at_camera_to_base", "pose_from_xyz_euler", "proprio_from_robot_obs",
]
