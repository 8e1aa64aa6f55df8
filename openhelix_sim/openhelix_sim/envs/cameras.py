"""Static and gripper cameras rendered with PyBullet's TinyRenderer (CPU, no display).

Camera parameters from mees/calvin_env:

* ``conf/cameras/cameras/static.yaml``: fov 10 deg, near 0.01, far 10, look_from
  (2.8715, -2.1666, 2.5552), look_at (-0.0262, -0.0302, 0.3920), up (0.4041, 0.2263, 0.8863).
  (CALVIN's stored dataset uses 200 x 200 images.)
* ``conf/cameras/cameras/gripper.yaml`` and ``calvin_env/camera/gripper_camera.py``: fov 75
  deg, near 0.01, far 2; the eye is the ``gripper_cam`` link origin, the camera looks along the
  link's +y axis with the link's -z axis as "up". (The dataset uses 84 x 84 images.)
* ``calvin_env/camera/camera.py``: depth = far * near / (far - (far - near) * zbuffer), i.e. the
  z-depth along the optical axis in metres; fov is the vertical field of view.

Conventions used here
---------------------
* Intrinsics ``K`` follow OpenCV: pixel (u, v) = (column, row) with integer coordinates at
  pixel centres, so cx = (W - 1) / 2, cy = (H - 1) / 2 and fx = fy = H / (2 tan(fov / 2)).
  A pixel with depth d back-projects to ``d * K^-1 [u, v, 1]`` in the optical frame.
* Optical frame: x right, y down, z forward (out of the lens).
* ``camera_to_world`` is the 4x4 pose of the optical frame in the world frame.
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

STATIC_EYE = (2.871459009488717, -2.166602199425597, 2.555159848480571)
STATIC_TARGET = (-0.026242351159453392, -0.0302329882979393, 0.3920000493526459)
STATIC_UP = (0.4041403970338857, 0.22629790978217404, 0.8862616969685161)
STATIC_FOV, STATIC_NEAR, STATIC_FAR = 10.0, 0.01, 10.0
GRIPPER_FOV, GRIPPER_NEAR, GRIPPER_FAR = 75.0, 0.01, 2.0

# OpenGL camera frame (x right, y up, z backwards) -> optical frame (x right, y down, z forward)
_GL_TO_OPTICAL = np.diag([1.0, -1.0, -1.0, 1.0])

# Gripper optical frame in the ``gripper_cam`` link frame: the view looks along link +y with link
# -z as "up", so optical z = link +y, optical y (down) = link +z, optical x = y cross z = link -x.
GRIPPER_LINK_TO_OPTICAL = np.array([
    [-1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
])


def intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    f = height / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def view_matrix_to_camera_pose(view_matrix) -> np.ndarray:
    """PyBullet view matrix (column-major world->GL eye) -> optical-frame pose in the world."""
    v = np.asarray(view_matrix, dtype=float).reshape(4, 4).T
    return np.linalg.inv(v) @ _GL_TO_OPTICAL


def linearize_depth(zbuffer: np.ndarray, near: float, far: float) -> np.ndarray:
    return (far * near / (far - (far - near) * zbuffer)).astype(np.float32)


class Camera:
    def __init__(self, name: str, width: int, height: int, fov: float, near: float, far: float, cid: int):
        self.name, self.width, self.height = name, int(width), int(height)
        self.fov, self.near, self.far, self.cid = fov, near, far, cid
        self.projection = p.computeProjectionMatrixFOV(fov=fov, aspect=self.width / self.height,
                                                       nearVal=near, farVal=far)

    def K(self) -> np.ndarray:
        return intrinsics(self.width, self.height, self.fov)

    def view_matrix(self):
        raise NotImplementedError

    def camera_to_world(self) -> np.ndarray:
        return view_matrix_to_camera_pose(self.view_matrix())

    def render(self):
        w, h, rgba, zbuf, _ = p.getCameraImage(
            self.width, self.height, self.view_matrix(), self.projection,
            renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK, physicsClientId=self.cid,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3].copy()
        depth = linearize_depth(np.asarray(zbuf, dtype=np.float64).reshape(h, w), self.near, self.far)
        return rgb, depth


class StaticCamera(Camera):
    def __init__(self, cid: int, size: int = 200):
        super().__init__("static", size, size, STATIC_FOV, STATIC_NEAR, STATIC_FAR, cid)
        self._view = p.computeViewMatrix(STATIC_EYE, STATIC_TARGET, STATIC_UP)

    def view_matrix(self):
        return self._view


class GripperCamera(Camera):
    def __init__(self, cid: int, robot_uid: int, link_id: int, size: int = 84):
        super().__init__("gripper", size, size, GRIPPER_FOV, GRIPPER_NEAR, GRIPPER_FAR, cid)
        self.robot_uid, self.link_id = robot_uid, link_id

    def view_matrix(self):
        ls = p.getLinkState(self.robot_uid, self.link_id, computeForwardKinematics=True, physicsClientId=self.cid)
        pos = np.array(ls[4])
        rot = np.array(p.getMatrixFromQuaternion(ls[5])).reshape(3, 3)
        return p.computeViewMatrix(pos.tolist(), (pos + rot[:, 1]).tolist(), (-rot[:, 2]).tolist())
