"""Rotation utilities shared by the policy, the processors and the tests.

Conventions (fixed across the suite, see :mod:`openhelix_core.types`):

- quaternions are ``(x, y, z, w)`` (ROS order), Hamilton product, unit norm;
  functions that *return* quaternions canonicalise the sign so that ``w >= 0``;
- rotation matrices act on column vectors (``v_base = R @ v_local``);
- the 6-D rotation representation (Zhou et al., "On the Continuity of Rotation
  Representations in Neural Networks", CVPR 2019) is the first two *columns* of
  ``R`` concatenated: ``[R[:, 0], R[:, 1]]``; it is mapped back to ``SO(3)`` by
  Gram-Schmidt (normalise column 0, ``z = normalize(c0 x c1)``, ``y = z x c0``);
- Euler angles are ``(a, b, c)`` for the axes x, y, z with a *convention* string
  in the scipy style: ``"xyz"`` (lower case) is **extrinsic** x, then y, then z
  about the fixed axes, i.e. ``R = Rz(c) @ Ry(b) @ Rx(a)``. This is what CALVIN
  (pybullet ``getQuaternionFromEuler``) and scipy's ``from_euler("xyz")`` use.
  ``"XYZ"`` (upper case) is **intrinsic** x, y', z'', i.e.
  ``R = Rx(a) @ Ry(b) @ Rz(c)``; this is pytorch3d's ``euler_angles_to_matrix(.., "XYZ")``,
  which 3D Diffuser Actor uses to turn CALVIN Euler angles into the quaternions
  its networks were trained on.

Every function has a torch implementation (any float dtype, any leading batch
shape, differentiable where meaningful) and accepts numpy arrays too: numpy in,
numpy out (computed in float64).
"""
from __future__ import annotations

import math
from typing import Callable, TypeVar, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]
T = TypeVar("T", np.ndarray, torch.Tensor)

_EULER_CONVENTIONS = ("xyz", "XYZ")


def _numpy_compatible(fn: Callable[..., torch.Tensor]) -> Callable[..., ArrayLike]:
    """Let a torch function take numpy input and give numpy output (float64)."""

    def wrapper(x, *args, **kwargs):
        if isinstance(x, torch.Tensor):
            return fn(x, *args, **kwargs)
        array = np.asarray(x, dtype=np.float64)
        return fn(torch.from_numpy(array), *args, **kwargs).numpy()

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _check_last_dims(x: torch.Tensor, shape: tuple, name: str) -> None:
    if tuple(x.shape[x.dim() - len(shape):]) != shape or x.dim() < len(shape):
        raise ValueError(f"{name} must have trailing shape {shape}, got {tuple(x.shape)}")


@_numpy_compatible
def normalize_quaternion(quaternion: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale ``(..., 4)`` quaternions to unit norm (no sign change)."""
    _check_last_dims(quaternion, (4,), "quaternion")
    return quaternion / quaternion.norm(dim=-1, keepdim=True).clamp_min(eps)


@_numpy_compatible
def canonicalize_quaternion(quaternion: torch.Tensor) -> torch.Tensor:
    """Flip the sign of ``(..., 4)`` xyzw quaternions so that ``w >= 0``."""
    _check_last_dims(quaternion, (4,), "quaternion")
    sign = torch.where(quaternion[..., 3:4] < 0, -1.0, 1.0).to(quaternion.dtype)
    return quaternion * sign


@_numpy_compatible
def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` xyzw quaternion (normalised internally) -> ``(..., 3, 3)`` matrix."""
    _check_last_dims(quaternion, (4,), "quaternion")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z, w = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = (
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    )
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


@_numpy_compatible
def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotation matrix -> ``(..., 4)`` unit xyzw quaternion with ``w >= 0``.

    Uses the numerically best-conditioned of the four standard candidates
    (largest of ``1 + trace`` and ``1 + 2 R_ii - trace``).
    """
    _check_last_dims(matrix, (3, 3), "matrix")
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * (component)^2 for w, x, y, z.
    squares = torch.stack([
        1 + m00 + m11 + m22,
        1 + m00 - m11 - m22,
        1 - m00 + m11 - m22,
        1 - m00 - m11 + m22,
    ], dim=-1)
    best = squares.argmax(dim=-1, keepdim=True)
    # Each candidate row is (w, x, y, z) * 4 * component.
    cand_w = torch.stack([squares[..., 0], m[..., 2, 1] - m[..., 1, 2],
                          m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    cand_x = torch.stack([m[..., 2, 1] - m[..., 1, 2], squares[..., 1],
                          m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1)
    cand_y = torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1],
                          squares[..., 2], m[..., 2, 1] + m[..., 1, 2]], -1)
    cand_z = torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                          m[..., 2, 1] + m[..., 1, 2], squares[..., 3]], -1)
    candidates = torch.stack([cand_w, cand_x, cand_y, cand_z], dim=-2)  # (..., 4, 4)
    index = best.unsqueeze(-1).expand(best.shape[:-1] + (1, 4))
    wxyz = torch.gather(candidates, -2, index).squeeze(-2)
    wxyz = wxyz / wxyz.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    xyzw = torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)
    return canonicalize_quaternion(xyzw)


@_numpy_compatible
def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)``: first column then second column of ``R``."""
    _check_last_dims(matrix, (3, 3), "matrix")
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


@_numpy_compatible
def rotation_6d_to_matrix(rotation_6d: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(..., 6)`` (any scale, need not be orthonormal) -> ``(..., 3, 3)`` rotation.

    Gram-Schmidt as in Zhou et al. / 3D Diffuser Actor: ``x = a1 / |a1|``,
    ``z = normalize(x cross a2)``, ``y = z cross x``; the columns of ``R`` are
    ``x, y, z``.
    """
    _check_last_dims(rotation_6d, (6,), "rotation_6d")
    a1, a2 = rotation_6d[..., :3], rotation_6d[..., 3:]
    x = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(eps)
    z = torch.linalg.cross(x, a2, dim=-1)
    z = z / z.norm(dim=-1, keepdim=True).clamp_min(eps)
    y = torch.linalg.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def quaternion_to_rotation_6d(quaternion: T) -> T:
    """``(..., 4)`` xyzw -> ``(..., 6)``."""
    return matrix_to_rotation_6d(quaternion_to_matrix(quaternion))


def rotation_6d_to_quaternion(rotation_6d: T) -> T:
    """``(..., 6)`` -> ``(..., 4)`` xyzw with ``w >= 0``."""
    return matrix_to_quaternion(rotation_6d_to_matrix(rotation_6d))


def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "x":
        rows = (one, zero, zero, zero, c, -s, zero, s, c)
    elif axis == "y":
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).reshape(angle.shape + (3, 3))


def _check_convention(convention: str) -> None:
    if convention not in _EULER_CONVENTIONS:
        raise ValueError(f"Euler convention must be one of {_EULER_CONVENTIONS}, got {convention!r}")


@_numpy_compatible
def euler_to_matrix(euler: torch.Tensor, convention: str = "xyz") -> torch.Tensor:
    """``(..., 3)`` angles (radians) about x, y, z -> ``(..., 3, 3)``.

    ``"xyz"``: extrinsic, ``R = Rz(c) Ry(b) Rx(a)`` (CALVIN / pybullet / scipy).
    ``"XYZ"``: intrinsic, ``R = Rx(a) Ry(b) Rz(c)`` (pytorch3d "XYZ", used by 3DDA).
    """
    _check_last_dims(euler, (3,), "euler")
    _check_convention(convention)
    rx = _axis_rotation("x", euler[..., 0])
    ry = _axis_rotation("y", euler[..., 1])
    rz = _axis_rotation("z", euler[..., 2])
    if convention == "xyz":
        return rz @ ry @ rx
    return rx @ ry @ rz


@_numpy_compatible
def matrix_to_euler(matrix: torch.Tensor, convention: str = "xyz", eps: float = 1e-9) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 3)`` angles, inverse of :func:`euler_to_matrix`.

    The middle angle lies in ``[-pi/2, pi/2]``, the others in ``(-pi, pi]``. At
    gimbal lock (middle angle ``+-pi/2``) the third angle is set to 0, as scipy does.
    """
    _check_last_dims(matrix, (3, 3), "matrix")
    _check_convention(convention)
    m = matrix
    if convention == "xyz":
        # R = Rz(c) Ry(b) Rx(a): R20 = -sin b, R21 = cb sa, R22 = cb ca, R10 = cb sc, R00 = cb cc.
        cos_b = torch.sqrt(m[..., 0, 0] ** 2 + m[..., 1, 0] ** 2)
        b = torch.atan2(-m[..., 2, 0], cos_b)
        a_regular = torch.atan2(m[..., 2, 1], m[..., 2, 2])
        c_regular = torch.atan2(m[..., 1, 0], m[..., 0, 0])
        a_locked = torch.atan2(-m[..., 1, 2], m[..., 1, 1])
    else:
        # R = Rx(a) Ry(b) Rz(c): R02 = sin b, R12 = -sa cb, R22 = ca cb, R01 = -cb sc, R00 = cb cc.
        cos_b = torch.sqrt(m[..., 0, 0] ** 2 + m[..., 0, 1] ** 2)
        b = torch.atan2(m[..., 0, 2], cos_b)
        a_regular = torch.atan2(-m[..., 1, 2], m[..., 2, 2])
        c_regular = torch.atan2(-m[..., 0, 1], m[..., 0, 0])
        a_locked = torch.atan2(m[..., 2, 1], m[..., 1, 1])
    locked = cos_b < eps
    a = torch.where(locked, a_locked, a_regular)
    c = torch.where(locked, torch.zeros_like(c_regular), c_regular)
    return torch.stack([a, b, c], dim=-1)


def euler_to_quaternion(euler: T, convention: str = "xyz") -> T:
    """``(..., 3)`` Euler angles -> ``(..., 4)`` xyzw quaternion (``w >= 0``)."""
    return matrix_to_quaternion(euler_to_matrix(euler, convention))


def quaternion_to_euler(quaternion: T, convention: str = "xyz") -> T:
    """``(..., 4)`` xyzw quaternion -> ``(..., 3)`` Euler angles."""
    return matrix_to_euler(quaternion_to_matrix(quaternion), convention)


@_numpy_compatible
def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Wrap angles to ``[-pi, pi)`` (as CALVIN's ``angle_between_angles`` does for differences)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


@_numpy_compatible
def quaternion_multiply(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``q1 * q2`` of ``(..., 4)`` xyzw quaternions (rotation ``R1 @ R2``)."""
    if not isinstance(q2, torch.Tensor):
        q2 = torch.as_tensor(np.asarray(q2, dtype=np.float64), dtype=q1.dtype)
    x1, y1, z1, w1 = q1.unbind(-1)
    x2, y2, z2, w2 = q2.unbind(-1)
    return torch.stack([
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
    ], dim=-1)


def quaternion_angle(q1: T, q2: T) -> T:
    """Rotation angle (radians, in ``[0, pi]``) between two xyzw quaternions."""
    if isinstance(q1, torch.Tensor):
        q2 = torch.as_tensor(q2, dtype=q1.dtype)
        dot = (normalize_quaternion(q1) * normalize_quaternion(q2)).sum(-1).abs().clamp(max=1.0)
        return 2 * torch.acos(dot)
    dot = np.abs(np.sum(normalize_quaternion(q1) * normalize_quaternion(np.asarray(q2)), axis=-1))
    return 2 * np.arccos(np.clip(dot, 0.0, 1.0))


__all__ = [
    "canonicalize_quaternion", "euler_to_matrix", "euler_to_quaternion", "matrix_to_euler",
    "matrix_to_quaternion", "matrix_to_rotation_6d", "normalize_quaternion", "pose_to_matrix", "quaternion_angle",
    "quaternion_slerp",
    "quaternion_multiply", "quaternion_to_euler", "quaternion_to_matrix", "quaternion_to_rotation_6d",
    "rotation_6d_to_matrix", "rotation_6d_to_quaternion", "wrap_angle",
]


def pose_to_matrix(position: ArrayLike, quaternion: ArrayLike) -> np.ndarray:
    """Position ``(3,)`` and quaternion ``(4,)`` (x, y, z, w) -> homogeneous ``(4, 4)`` float64."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(quaternion_to_matrix(np.asarray(quaternion, dtype=np.float64)))
    matrix[:3, 3] = np.asarray(position, dtype=np.float64)
    return matrix


def quaternion_slerp(start: ArrayLike, end: ArrayLike, fraction: float | np.ndarray) -> np.ndarray:
    """Spherical linear interpolation between xyzw quaternions along the shorter arc (numpy).

    ``start`` and ``end`` are ``(..., 4)`` (normalised first); ``fraction`` is a number or an
    array of their leading shape (0 gives ``start``, 1 gives ``end`` or ``-end``, whichever
    is on ``start``'s side). Returns unit float64 quaternions, sign not canonicalised.
    """
    start = np.asarray(normalize_quaternion(np.asarray(start, dtype=np.float64)))
    end = np.asarray(normalize_quaternion(np.asarray(end, dtype=np.float64)))
    fraction = np.asarray(fraction, dtype=np.float64)[..., None]
    dot = np.sum(start * end, axis=-1, keepdims=True)
    end = np.where(dot < 0.0, -end, end)
    angle = np.arccos(np.clip(np.abs(dot), 0.0, 1.0))
    # sin(angle) loses all precision near zero; there the linear weights are exact to rounding.
    nearly_equal = angle < 1e-6
    sin_angle = np.where(nearly_equal, 1.0, np.sin(angle))
    start_weight = np.where(nearly_equal, 1.0 - fraction, np.sin((1.0 - fraction) * angle) / sin_angle)
    end_weight = np.where(nearly_equal, fraction, np.sin(fraction * angle) / sin_angle)
    blended = start_weight * start + end_weight * end
    return blended / np.linalg.norm(blended, axis=-1, keepdims=True)
