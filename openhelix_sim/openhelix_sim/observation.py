"""The play table as the policy sees it: an :class:`~openhelix_core.types.Observation`."""
from __future__ import annotations

from openhelix_core.types import CameraFrame, Observation

from .envs import PlayTableEnv


def observation_from_env(env: PlayTableEnv, stamp: float = 0.0, openness_source: str = "action") -> Observation:
    """Render both cameras now and pack an :class:`Observation` (world frame = base frame).

    ``openness_source="action"`` reports the last gripper command (``robot_obs[14] > 0``) as
    the training data does; ``"width"`` the finger opening. (System 1 reads only the pose.)"""
    cameras = {}
    for name in ("static", "gripper"):
        rgb, depth = env.cameras[name].render()
        cameras[name] = CameraFrame(rgb, depth, env.camera_intrinsics(name), env.camera_to_base(name))
    position, orientation = env.tcp_pose()
    if openness_source == "action":
        openness = 1.0 if env.robot.observation()[14] > 0 else 0.0
    else:
        openness = env.gripper_openness()
    return Observation(cameras=cameras, ee_position=position, ee_orientation=orientation,
                       gripper_openness=openness, stamp=stamp)
