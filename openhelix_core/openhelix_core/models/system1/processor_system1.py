"""Observation -> System 1 batch, and System 1 output -> trajectory chunk / CALVIN actions.

Image pipeline (3DDA CALVIN: ``online_evaluation_calvin/evaluate_utils.prepare_visual_states``
and ``evaluate_model.DiffusionModel.step``):

1. depth is back-projected per camera into the robot base frame
   (:func:`openhelix_core.pointcloud.depth_to_points`); pixels without a reading
   take the camera's position (a zero depth back-projects there);
2. every camera is resized to ``image_resize`` x ``image_resize`` -- RGB bilinear
   (``align_corners=False``), point map nearest -- which in CALVIN upsamples the
   84x84 gripper view to the 200x200 static view's size;
3. the centred ``image_size`` square is cropped (CALVIN: ``[20:180, 20:180]`` -> 160);
4. RGB is scaled to [0, 1] (CLIP normalisation happens inside the model).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ... import geometry
from ...pointcloud import depth_to_points
from ...types import CameraFrame, Observation, TrajectoryChunk
from .configuration_system1 import System1Config
from .keys import CURRENT_GRIPPER, GOAL, PCD, RGB

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} is not numeric: {error}") from error


def calvin_gripper_action(openness: ArrayLike) -> np.ndarray:
    """CALVIN's gripper action of openness values (same shape): ``+1`` (open) from 0.5 up, else
    ``-1`` (close), as 3DDA's ``convert_action``."""
    return np.where(np.asarray(openness) >= 0.5, 1.0, -1.0)


def gripper_state(position: ArrayLike, orientation: ArrayLike, openness: float) -> np.ndarray:
    """Pack one gripper state as ``(8,)`` ``[x, y, z, qx, qy, qz, qw, openness]`` (validated)."""
    position = _as_numpy(position, "ee_position")
    orientation = _as_numpy(orientation, "ee_orientation")
    if position.shape != (3,):
        raise ValueError(f"ee_position must be (3,), got {position.shape}")
    if orientation.shape != (4,):
        raise ValueError(f"ee_orientation must be (4,) xyzw, got {orientation.shape}")
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(orientation))):
        raise ValueError("ee_position / ee_orientation contain non-finite values")
    norm = np.linalg.norm(orientation)
    if norm < 1e-6:
        raise ValueError("ee_orientation has zero norm")
    openness = float(openness)
    if not np.isfinite(openness):
        raise ValueError(f"gripper_openness must be finite, got {openness}")
    return np.concatenate([position, orientation / norm, [np.clip(openness, 0.0, 1.0)]])


class System1Processor:
    """Builds model batches from :class:`~openhelix_core.types.Observation` and turns
    predictions into :class:`~openhelix_core.types.TrajectoryChunk` / CALVIN actions."""

    def __init__(self, config: System1Config):
        self.config = config

    # -- observation -> batch -----------------------------------------------------------------
    def _camera_tensors(self, name: str, frame: CameraFrame) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = np.asarray(frame.rgb)
        depth = np.asarray(frame.depth)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"camera {name!r}: rgb must be (H, W, 3), got {rgb.shape}")
        if depth.shape != rgb.shape[:2]:
            raise ValueError(f"camera {name!r}: depth {depth.shape} does not match rgb {rgb.shape[:2]}")
        if rgb.dtype == np.uint8:
            rgb01 = rgb.astype(np.float32) / 255.0
        else:
            rgb01 = rgb.astype(np.float32)
            if not np.all(np.isfinite(rgb01)):
                raise ValueError(f"camera {name!r}: rgb contains non-finite values")
            if rgb01.min() < 0.0 or rgb01.max() > 1.0:
                raise ValueError(f"camera {name!r}: float rgb must lie in [0, 1]")
        intrinsics = np.asarray(frame.intrinsics, dtype=np.float64)
        extrinsics = np.asarray(frame.camera_to_base, dtype=np.float64)
        try:
            points, valid = depth_to_points(depth, intrinsics, extrinsics)
        except ValueError as error:
            raise ValueError(f"camera {name!r}: {error}") from error
        points[~valid] = extrinsics[:3, 3].astype(np.float32)  # zero depth -> camera centre
        size = self.config.image_resize
        rgb_t = torch.from_numpy(np.ascontiguousarray(rgb01)).permute(2, 0, 1)[None]
        pcd_t = torch.from_numpy(np.ascontiguousarray(points)).permute(2, 0, 1)[None]
        if rgb_t.shape[-2:] != (size, size):
            rgb_t = F.interpolate(rgb_t, size=(size, size), mode="bilinear", align_corners=False)
            pcd_t = F.interpolate(pcd_t, size=(size, size), mode="nearest")
        start = (size - self.config.image_size) // 2
        stop = start + self.config.image_size
        return rgb_t[0, :, start:stop, start:stop], pcd_t[0, :, start:stop, start:stop]

    def observation_to_batch(self, observation: Observation, goal_embedding: Optional[ArrayLike],
                             history: Optional[Sequence[ArrayLike]] = None) -> dict[str, torch.Tensor]:
        """Build a batch of one sample.

        Args:
            observation: cameras named as ``config.cameras`` plus the current gripper pose.
            goal_embedding: System 2 goal, ``(512,)`` or ``(L, 512)`` (``goal_dim``); may be
                None only when ``config.use_instruction`` is False.
            history: earlier gripper states, oldest first, each ``(8,)``
                ``[x, y, z, qx, qy, qz, qw, openness]``; the last ``nhist - 1`` are used and
                missing ones repeat the oldest available state (3DDA starts its history by
                repeating the first state).

        Returns:
            ``RGB (1, ncam, 3, S, S)`` in [0, 1], ``PCD (1, ncam, 3, S, S)`` base-frame metres,
            ``GOAL (1, L, goal_dim)`` and ``CURRENT_GRIPPER (1, nhist, 8)`` float32 tensors.

        Raises:
            ValueError: missing camera, wrong shapes, non-finite pose / goal / calibration.
        """
        cfg = self.config
        if not isinstance(observation, Observation):
            raise ValueError(f"observation must be an Observation, got {type(observation).__name__}")
        missing = [name for name in cfg.cameras if name not in observation.cameras]
        if missing:
            raise ValueError(f"observation is missing camera(s) {missing}; has "
                             f"{sorted(observation.cameras)}")
        rgbs, pcds = zip(*(self._camera_tensors(name, observation.cameras[name]) for name in cfg.cameras))

        current = gripper_state(observation.ee_position, observation.ee_orientation,
                                observation.gripper_openness)
        states = []
        for index, state in enumerate(history or []):
            state = _as_numpy(state, f"history[{index}]")
            if state.shape != (8,):
                raise ValueError(f"history[{index}] must be (8,), got {state.shape}")
            states.append(gripper_state(state[:3], state[3:7], state[7]))
        states = states[-(cfg.nhist - 1):] if cfg.nhist > 1 else []
        states.append(current)
        while len(states) < cfg.nhist:
            states.insert(0, states[0])
        batch = {
            RGB: torch.stack(rgbs)[None].float(),
            PCD: torch.stack(pcds)[None].float(),
            CURRENT_GRIPPER: torch.from_numpy(np.stack(states)).float()[None],
        }
        if goal_embedding is None:
            if cfg.use_instruction:
                raise ValueError("goal_embedding is required (config.use_instruction is True)")
        else:
            goal = _as_numpy(goal_embedding, "goal_embedding")
            if goal.ndim == 1:
                goal = goal[None]
            if goal.ndim != 2 or goal.shape[1] != cfg.goal_dim or goal.shape[0] < 1:
                raise ValueError(f"goal_embedding must be ({cfg.goal_dim},) or (L, {cfg.goal_dim}), got "
                                 f"{np.shape(goal_embedding)}")
            if not np.all(np.isfinite(goal)):
                raise ValueError("goal_embedding contains non-finite values")
            batch[GOAL] = torch.from_numpy(goal).float()[None]
        return batch

    # -- trajectory -> outputs ----------------------------------------------------------------
    @staticmethod
    def _check_trajectory(trajectory: ArrayLike) -> np.ndarray:
        traj = _as_numpy(trajectory, "trajectory")
        if traj.ndim == 3 and traj.shape[0] == 1:
            traj = traj[0]
        if traj.ndim != 2 or traj.shape[1] != 8 or traj.shape[0] < 1:
            raise ValueError(f"trajectory must be (T, 8) [xyz, qxyzw, openness], got {np.shape(trajectory)}")
        if not np.all(np.isfinite(traj)):
            raise ValueError("trajectory contains non-finite values")
        if np.any(np.linalg.norm(traj[:, 3:7], axis=-1) < 1e-6):
            raise ValueError("trajectory has a zero-norm quaternion")
        return traj

    def trajectory_to_chunk(self, trajectory: ArrayLike, control_period_s: float,
                            goal_sequence: int = 0, goal_instruction: str = "",
                            goal_age: float = 0.0) -> TrajectoryChunk:
        """``(T, 8)`` (or ``(1, T, 8)``) prediction -> :class:`TrajectoryChunk`.

        Waypoint ``i`` is due ``(i + 1) * control_period_s`` after the observation
        (3DDA executes one waypoint per CALVIN control step). Quaternions are
        normalised, openness clipped to [0, 1].
        """
        traj = self._check_trajectory(trajectory)
        period = float(control_period_s)
        if not np.isfinite(period) or period <= 0:
            raise ValueError(f"control_period_s must be positive, got {control_period_s}")
        steps = traj.shape[0]
        return TrajectoryChunk(
            positions=traj[:, :3].copy(),
            orientations=geometry.canonicalize_quaternion(geometry.normalize_quaternion(traj[:, 3:7])),
            gripper_openness=np.clip(traj[:, 7], 0.0, 1.0),
            time_from_start=period * np.arange(1, steps + 1, dtype=np.float64),
            goal_sequence=int(goal_sequence),
            goal_instruction=str(goal_instruction),
            goal_age=float(goal_age),
        )

    @staticmethod
    def trajectory_to_calvin_actions(trajectory: ArrayLike) -> np.ndarray:
        """``(T, 8)`` prediction -> ``(T, 7)`` CALVIN absolute actions
        ``[x, y, z, euler_x, euler_y, euler_z, gripper]``.

        Euler angles are CALVIN's (pybullet) extrinsic ``xyz``; gripper is ``+1``
        (open) when openness >= 0.5 else ``-1`` (close), as 3DDA's ``convert_action``.
        """
        traj = System1Processor._check_trajectory(trajectory)
        euler = geometry.quaternion_to_euler(traj[:, 3:7], "xyz")
        gripper = calvin_gripper_action(traj[:, 7:8])
        return np.concatenate([traj[:, :3], euler, gripper], axis=-1)


__all__ = ["System1Processor", "calvin_gripper_action", "gripper_state"]
