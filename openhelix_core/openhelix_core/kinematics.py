"""Forward kinematics and Jacobian of a URDF chain, and a static transform tree, in numpy.

Pure numpy and the standard library's XML parser: no rclpy, no torch, so a dataset converter
(rosbags in, arrays out) can use it on any machine.

:class:`KinematicChain` reads a URDF and computes the pose of ``tip_link`` in ``base_link``
from joint positions::

    chain = KinematicChain.from_urdf("panda.urdf", "panda_link0", "tcp")
    chain.joint_names                      # movable joints in chain order
    chain.forward([q1, ..., q7])           # (4, 4)
    chain.forward(q_batch)                 # (N, 7) -> (N, 4, 4)
    chain.forward_from_joint_state(msg.name, msg.position)
    chain.jacobian([q1, ..., q7])          # (6, 7): tip linear and angular velocity per joint velocity
    chain.limits, chain.velocity_limits    # (7, 2), (7,) from the URDF's <limit>

The Jacobian (and :meth:`KinematicChain.pose_and_jacobian`, both in one pass) is what
:mod:`openhelix_core.inverse_kinematics` iterates on.

:class:`TransformTree` holds frames linked by 4x4 transforms (``/tf_static`` and the like) and
answers ``lookup(target_frame, source_frame)``: the pose of ``source_frame`` in
``target_frame``, as tf2's ``lookupTransform(target, source)``.

Conventions (the same as :mod:`openhelix_core.geometry`, which is not imported here because it
imports torch):

* URDF ``<origin xyz rpy>``: translation, then fixed-axis roll-pitch-yaw,
  ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (geometry's ``euler_to_matrix(.., "xyz")``);
* a joint's transform from its parent link to its child link is ``origin @ motion(q)``, with
  ``motion`` a rotation by ``q`` (rad) about ``<axis xyz>`` (revolute, continuous), a translation by
  ``q`` (m) along it (prismatic), or the identity (fixed); the axis defaults to ``1 0 0`` and is
  normalised;
* quaternions are ``(x, y, z, w)``, as in ROS messages; 4x4 matrices act on column vectors.

URDFs with a DOCTYPE or entity declarations are refused rather than expanded, and so are
malformed XML, non-finite numbers, velocity limits that are not positive and ``floating`` /
``planar`` joints inside the chain.
Every error is a :class:`KinematicsError` (a ``ValueError``) naming what is wrong.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

MOVABLE_TYPES = ("revolute", "continuous", "prismatic")
JOINT_TYPES = (*MOVABLE_TYPES, "fixed", "floating", "planar")
#: Largest ``| |q| - 1 |`` accepted for a transform's quaternion (it is then normalised).
QUATERNION_NORM_TOLERANCE = 1e-3
#: Largest deviation from orthonormality accepted for a 4x4 transform's rotation block.
ROTATION_TOLERANCE = 1e-6

_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class KinematicsError(ValueError):
    """A URDF, chain, transform or input that cannot be used; the text names the cause."""


# rotations (numpy) -------------------------------------------------------------------------------

def rpy_to_matrix(rpy: Sequence[float]) -> np.ndarray:
    """URDF ``rpy`` (fixed axes x, y, z) -> ``(3, 3)``: ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    roll, pitch, yaw = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def quaternion_to_matrix(quaternion: Sequence[float]) -> np.ndarray:
    """Unit ``(x, y, z, w)`` quaternion (normalised here) -> ``(3, 3)`` rotation."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def transform(rotation: np.ndarray | None = None, translation: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """A ``(4, 4)`` homogeneous transform from a ``(3, 3)`` rotation and a translation."""
    matrix = np.eye(4)
    if rotation is not None:
        matrix[:3, :3] = rotation
    matrix[:3, 3] = np.asarray(translation, dtype=np.float64)
    return matrix


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms ``(..., 4, 4)`` (rotation transposed, no general inverse)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    inverse = np.zeros_like(matrix)
    rotation_t = np.swapaxes(matrix[..., :3, :3], -1, -2)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3] = -np.einsum("...ij,...j->...i", rotation_t, matrix[..., :3, 3])
    inverse[..., 3, 3] = 1.0
    return inverse


def check_rigid_transform(matrix: Any, what: str) -> np.ndarray:
    """``matrix`` as a finite ``(4, 4)`` float64 rigid transform; KinematicsError naming ``what``."""
    try:
        matrix = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise KinematicsError(f"{what}: not a numeric 4x4 matrix ({error})") from None
    if matrix.shape != (4, 4):
        raise KinematicsError(f"{what}: expected a 4x4 matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise KinematicsError(f"{what}: contains NaN or inf")
    if not _close(matrix[3], _LAST_ROW):
        raise KinematicsError(f"{what}: last row must be 0 0 0 1, got {matrix[3].tolist()}")
    rotation = matrix[:3, :3]
    if not _close(rotation.T @ rotation, _IDENTITY_3) or _determinant_3(rotation) < 0.0:
        raise KinematicsError(f"{what}: the 3x3 block is not a rotation (orthonormal, determinant +1)")
    return matrix


_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_IDENTITY_3 = np.eye(3)


def _close(actual: np.ndarray, expected: np.ndarray) -> bool:
    """``np.allclose(actual, expected, atol=ROTATION_TOLERANCE)`` without its overhead (IK checks
    a target 30 times a second)."""
    return bool((np.abs(actual - expected) <= ROTATION_TOLERANCE + 1e-5 * np.abs(expected)).all())


def _determinant_3(matrix: np.ndarray) -> float:
    (a, b, c), (d, e, f), (g, h, i) = matrix.tolist()
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


# URDF ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UrdfJoint:
    """One ``<joint>`` of a URDF."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray            # (4, 4) parent link -> joint frame at q = 0
    axis: np.ndarray              # (3,) unit vector in the joint frame (zeros for fixed joints)
    lower: float = -math.inf
    upper: float = math.inf
    velocity: float = math.inf    # <limit velocity> (rad/s or m/s); inf where the URDF gives none

    @property
    def movable(self) -> bool:
        return self.type in MOVABLE_TYPES


@dataclass
class UrdfModel:
    """The links and joints of a URDF (what :class:`KinematicChain` needs of it)."""

    name: str
    links: list[str]
    joints: dict[str, UrdfJoint]          # by child link

    @classmethod
    def parse(cls, urdf: str | Path) -> "UrdfModel":
        """``urdf``: the XML text (a string starting with ``<``), or a path to a ``.urdf`` file."""
        text, where = _urdf_text(urdf)
        if _DECLARATION.search(text):
            raise KinematicsError(f"{where}: DOCTYPE / ENTITY declarations are not accepted in a URDF "
                                  "(refused rather than expanded); expand xacro / entities beforehand")
        try:
            root = ElementTree.fromstring(text)
        except ElementTree.ParseError as error:
            raise KinematicsError(f"{where}: malformed XML: {error}") from None
        if root.tag != "robot":
            raise KinematicsError(f"{where}: root element is <{root.tag}>, expected <robot>")
        name = root.get("name", "")
        links = []
        for element in root.findall("link"):
            link = element.get("name")
            if not link:
                raise KinematicsError(f"{where}: a <link> has no name")
            if link in links:
                raise KinematicsError(f"{where}: link '{link}' is declared twice")
            links.append(link)
        joints: dict[str, UrdfJoint] = {}
        names = set()
        for element in root.findall("joint"):
            joint = _parse_joint(element, where)
            if joint.name in names:
                raise KinematicsError(f"{where}: joint '{joint.name}' is declared twice")
            names.add(joint.name)
            for role, link in (("parent", joint.parent), ("child", joint.child)):
                if link not in links:
                    raise KinematicsError(f"{where}: joint '{joint.name}' names {role} link '{link}', which is not "
                                          f"declared; links: {links}")
            if joint.child in joints:
                raise KinematicsError(f"{where}: link '{joint.child}' is the child of two joints "
                                      f"('{joints[joint.child].name}' and '{joint.name}'); a URDF is a tree")
            joints[joint.child] = joint
        model = cls(name, links, joints)
        for link in links:  # a loop would make walking up never end
            model.ancestors(link)
        return model

    def ancestors(self, link: str) -> list[str]:
        """``[link, its parent, ..., the root]``."""
        path = [link]
        while path[-1] in self.joints:
            parent = self.joints[path[-1]].parent
            if parent in path:
                raise KinematicsError(f"URDF '{self.name}': the joints form a loop through link '{parent}'")
            path.append(parent)
        return path

    def check_link(self, link: str, role: str) -> None:
        if link not in self.links:
            raise KinematicsError(f"{role} '{link}' is not a link of URDF '{self.name}'; links: {self.links}")


def _urdf_text(urdf: str | Path) -> tuple[str, str]:
    if isinstance(urdf, bytes):
        urdf = urdf.decode("utf-8")
    if isinstance(urdf, str) and urdf.lstrip().startswith("<"):
        return urdf, "URDF text"
    path = Path(urdf)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as error:
        raise KinematicsError(f"cannot read URDF file {str(path)!r}: {error}") from None


def _floats(text: str | None, count: int, default: Sequence[float], what: str) -> np.ndarray:
    if text is None:
        return np.asarray(default, dtype=np.float64)
    try:
        values = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError:
        raise KinematicsError(f"{what}: {text!r} is not {count} numbers") from None
    if values.shape != (count,):
        raise KinematicsError(f"{what}: expected {count} numbers, got {text!r}")
    if not np.all(np.isfinite(values)):
        raise KinematicsError(f"{what}: {text!r} contains NaN or inf")
    return values


def _parse_joint(element: ElementTree.Element, where: str) -> UrdfJoint:
    name = element.get("name")
    if not name:
        raise KinematicsError(f"{where}: a <joint> has no name")
    what = f"{where}: joint '{name}'"
    kind = element.get("type")
    if kind not in JOINT_TYPES:
        raise KinematicsError(f"{what} has type {kind!r}; URDF joint types are {list(JOINT_TYPES)}")
    links = {}
    for role in ("parent", "child"):
        tag = element.find(role)
        if tag is None or not tag.get("link"):
            raise KinematicsError(f"{what} has no <{role} link=...>")
        links[role] = tag.get("link")
    origin = element.find("origin")
    xyz = _floats(origin.get("xyz") if origin is not None else None, 3, (0, 0, 0), f"{what} <origin xyz>")
    rpy = _floats(origin.get("rpy") if origin is not None else None, 3, (0, 0, 0), f"{what} <origin rpy>")
    axis_tag = element.find("axis")
    axis = _floats(axis_tag.get("xyz") if axis_tag is not None else None, 3, (1, 0, 0), f"{what} <axis xyz>")
    if kind in MOVABLE_TYPES:
        norm = float(np.linalg.norm(axis))
        if norm < 1e-12:
            raise KinematicsError(f"{what}: <axis xyz> is the zero vector")
        axis = axis / norm
    else:
        axis = np.zeros(3)
    lower, upper, velocity = -math.inf, math.inf, math.inf
    limit = element.find("limit")
    if limit is not None and kind in ("revolute", "prismatic"):
        lower = float(_floats(limit.get("lower"), 1, (0.0,), f"{what} <limit lower>")[0])
        upper = float(_floats(limit.get("upper"), 1, (0.0,), f"{what} <limit upper>")[0])
    if limit is not None and kind in MOVABLE_TYPES and limit.get("velocity") is not None:
        velocity = float(_floats(limit.get("velocity"), 1, (), f"{what} <limit velocity>")[0])
        if velocity <= 0.0:
            # A trajectory's duration is the joint motion divided by this limit: zero would make it infinite.
            raise KinematicsError(f"{what}: <limit velocity> must be positive, got {limit.get('velocity')!r}")
    return UrdfJoint(name, kind, links["parent"], links["child"], transform(rpy_to_matrix(rpy), xyz), axis,
                     lower, upper, velocity)


# the chain -------------------------------------------------------------------------------------

class KinematicChain:
    """Forward kinematics from ``base_link`` to ``tip_link`` of a URDF (see the module doc).

    The two links may lie on different branches: the chain then goes up from ``base_link`` to
    their common ancestor and down to ``tip_link`` (joints on the way up are inverted).
    """

    def __init__(self, model: UrdfModel, base_link: str, tip_link: str) -> None:
        model.check_link(base_link, "base_link")
        model.check_link(tip_link, "tip_link")
        up_from_base, up_from_tip = model.ancestors(base_link), model.ancestors(tip_link)
        common = next((link for link in up_from_base if link in up_from_tip), None)
        if common is None:
            raise KinematicsError(
                f"links '{base_link}' and '{tip_link}' are not connected in URDF '{model.name}' (their roots are "
                f"'{up_from_base[-1]}' and '{up_from_tip[-1]}'); links: {model.links}")
        # Joints from the common ancestor down to each link, top-down.
        up = [model.joints[link] for link in reversed(up_from_base[:up_from_base.index(common)])]
        down = [model.joints[link] for link in reversed(up_from_tip[:up_from_tip.index(common)])]
        for joint in up + down:
            if joint.type in ("floating", "planar"):
                raise KinematicsError(f"joint '{joint.name}' between '{base_link}' and '{tip_link}' is {joint.type}; "
                                      "only revolute, continuous, prismatic and fixed joints are supported")
        self.model, self.base_link, self.tip_link = model, base_link, tip_link
        # Chain order: from base_link up to the common ancestor, then down to tip_link.
        self.joints: list[UrdfJoint] = list(reversed(up)) + down
        self.joint_names: list[str] = [j.name for j in self.joints if j.movable]
        self._index = {name: k for k, name in enumerate(self.joint_names)}
        self._up_branch = _Branch(up, self._index)
        self._down_branch = _Branch(down, self._index)
        # Jacobian columns in branch order (up joints, then down joints, each top-down) -> chain order.
        branch_order = np.concatenate([self._up_branch.indices, self._down_branch.indices])
        self._columns = np.argsort(branch_order)
        # Moving an up joint moves base_link instead of tip_link: seen from the base, the tip turns the other way.
        self._column_signs = np.concatenate([-np.ones(len(self._up_branch.indices)),
                                             np.ones(len(self._down_branch.indices))])
        self._revolute = np.concatenate([self._up_branch.revolute, self._down_branch.revolute])
        self._any_prismatic = not bool(np.all(self._revolute))
        self._axes = np.concatenate([self._up_branch.axes, self._down_branch.axes])[:, :, None]   # (J, 3, 1)

    @classmethod
    def from_urdf(cls, urdf: str | Path, base_link: str, tip_link: str) -> "KinematicChain":
        """``urdf``: XML text or a file path; see :meth:`UrdfModel.parse`."""
        return cls(UrdfModel.parse(urdf), base_link, tip_link)

    @property
    def limits(self) -> np.ndarray:
        """``(J, 2)`` lower and upper limits of :attr:`joint_names` (``-inf, inf`` for continuous joints)."""
        return np.array([[j.lower, j.upper] for j in self.joints if j.movable], dtype=np.float64).reshape(-1, 2)

    @property
    def velocity_limits(self) -> np.ndarray:
        """``(J,)`` URDF velocity limits of :attr:`joint_names` (rad/s, m/s; ``inf`` where none is given)."""
        return np.array([j.velocity for j in self.joints if j.movable], dtype=np.float64)

    def _positions(self, positions: Any) -> tuple[np.ndarray, bool]:
        """``(N, J)`` float64 positions and whether the input was a batch."""
        if isinstance(positions, Mapping):
            missing = [name for name in self.joint_names if name not in positions]
            if missing:
                raise KinematicsError(f"positions lack joints {missing} of the chain {self.base_link} -> "
                                      f"{self.tip_link} (joints {self.joint_names})")
            columns = [np.asarray(positions[name], dtype=np.float64) for name in self.joint_names]
            shapes = {c.shape for c in columns}
            if len(shapes) > 1 or any(len(s) > 1 for s in shapes):
                raise KinematicsError(f"joint positions must all be numbers or all 1-D arrays of one length, got "
                                      f"shapes {sorted(shapes)}")
            batch = bool(columns) and columns[0].ndim == 1
            array = np.stack(columns, axis=-1) if columns else np.zeros((0,))
            if not batch:
                array = array.reshape(1, len(self.joint_names))
        else:
            try:
                array = np.asarray(positions, dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise KinematicsError(f"joint positions are not numeric: {error}") from None
            batch = array.ndim == 2
            if array.ndim not in (1, 2) or array.shape[-1] != len(self.joint_names):
                raise KinematicsError(f"joint positions must have shape ({len(self.joint_names)},) or "
                                      f"(N, {len(self.joint_names)}) for joints {self.joint_names}, got {array.shape}")
            array = array.reshape(array.shape[0] if batch else 1, len(self.joint_names))
        if not np.all(np.isfinite(array)):
            bad = sorted({self.joint_names[k] for k in np.argwhere(~np.isfinite(array))[:, 1]})
            raise KinematicsError(f"joint positions of {bad} are NaN or inf")
        return array, batch

    def forward(self, positions: Any) -> np.ndarray:
        """Pose of ``tip_link`` in ``base_link``: ``(4, 4)`` for ``(J,)`` positions or a dict of
        numbers, ``(N, 4, 4)`` for ``(N, J)`` positions or a dict of ``(N,)`` arrays (radians,
        metres; in :attr:`joint_names` order)."""
        array, batch = self._positions(positions)
        poses = invert(self._up_branch.ends(array)) @ self._down_branch.ends(array)
        return poses if batch else poses[0]

    def jacobian(self, positions: Any) -> np.ndarray:
        """``(6, J)`` geometric Jacobian of ``tip_link`` in ``base_link`` at ``(J,)`` positions (or a
        dict of numbers): rows are the tip's linear velocity (x, y, z, at the tip's origin) and
        angular velocity (x, y, z), both in ``base_link`` coordinates, per unit joint velocity."""
        return self.pose_and_jacobian(positions)[1]

    def pose_and_jacobian(self, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`forward` ``(4, 4)`` and :meth:`jacobian` ``(6, J)`` of one configuration, in one pass."""
        array, batch = self._positions(positions)
        if batch:
            raise KinematicsError(f"the Jacobian takes one configuration of shape ({len(self.joint_names)},), "
                                  f"got a batch of {array.shape[0]}")
        return self._pose_and_jacobian(array[0])

    def _pose_and_jacobian(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`pose_and_jacobian` of checked finite float64 ``(J,)`` positions (the IK's inner loop,
        hence the special cases that skip work: no up branch, no prismatic joint)."""
        tip_in_common, down_frames = self._down_branch.frames(positions)
        if self._up_branch.count:
            base_in_common, up_frames = self._up_branch.frames(positions)
            frames = np.concatenate([up_frames, down_frames])
        else:
            frames = down_frames
        axes = (frames[:, :3, :3] @ self._axes)[..., 0].T      # (3, J) joint axes in the common frame
        lever = tip_in_common[:3, 3, None] - frames[:, :3, 3].T  # (3, J) joint origin -> tip
        columns = np.empty((6, len(self.joint_names)))        # branch order
        columns[0] = axes[1] * lever[2] - axes[2] * lever[1]  # axis x lever, spelt out: np.cross costs 5x more
        columns[1] = axes[2] * lever[0] - axes[0] * lever[2]
        columns[2] = axes[0] * lever[1] - axes[1] * lever[0]
        columns[3:] = axes
        if self._any_prismatic:
            columns[:3] = np.where(self._revolute, columns[:3], axes)
            columns[3:] *= self._revolute
        if not self._up_branch.count:
            return tip_in_common, columns   # down-only branches are already in chain order and base frame
        columns *= self._column_signs
        columns = columns[:, self._columns]
        rotation_t = base_in_common[:3, :3].T
        pose = np.eye(4)
        pose[:3, :3] = rotation_t @ tip_in_common[:3, :3]
        pose[:3, 3] = rotation_t @ (tip_in_common[:3, 3] - base_in_common[:3, 3])
        jacobian = np.empty_like(columns)
        jacobian[:3] = rotation_t @ columns[:3]
        jacobian[3:] = rotation_t @ columns[3:]
        return pose, jacobian

    def forward_from_joint_state(self, names: Sequence[str], positions: Any) -> np.ndarray:
        """:meth:`forward` from a JointState-like name list and positions: ``(len(names),)`` (one
        state) or ``(N, len(names))``; see :meth:`joint_state_positions`."""
        return self.forward(self.joint_state_positions(names, positions))

    def joint_state_positions(self, names: Sequence[str], positions: Any) -> np.ndarray:
        """The positions of :attr:`joint_names`, picked by name from a JointState-like name list and
        positions: ``(J,)`` from ``(len(names),)``, ``(N, J)`` from ``(N, len(names))``. Other joints
        are ignored (they may even be NaN); a chain joint that is missing, named twice or not finite
        is an error naming it."""
        names = [str(n) for n in names]
        index: dict[str, int] = {}
        for k, name in enumerate(names):
            if name in index:
                raise KinematicsError(f"joint state names '{name}' more than once")
            index[name] = k
        missing = [name for name in self.joint_names if name not in index]
        if missing:
            raise KinematicsError(f"joint state lacks joints {missing} of the chain {self.base_link} -> "
                                  f"{self.tip_link}; it has {names}")
        try:
            array = np.asarray(positions, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise KinematicsError(f"joint state positions are not numeric: {error}") from None
        if array.ndim not in (1, 2) or array.shape[-1] != len(names):
            raise KinematicsError(f"joint state has {len(names)} names but positions of shape {array.shape}")
        return self._positions(array[..., [index[name] for name in self.joint_names]])[0].reshape(
            array.shape[:-1] + (len(self.joint_names),))

class _Branch:
    """One branch of a chain (common ancestor -> base_link or -> tip_link, top-down), prepared so that
    its frames cost a few batched operations and one matrix product per movable joint.

    Each movable joint ``k`` becomes ``fixed[k] @ motion(q_k)``: ``fixed[k]`` gathers the fixed
    joints since the previous movable joint and the joint's own origin, ``tail`` the fixed joints
    after the last one. ``motion(q) = I + sin(q) K + (1 - cos(q)) K^2 + q T`` (Rodrigues with the
    axis' cross-product matrix ``K`` for revolute and continuous joints, the translation generator
    ``T`` for prismatic ones), so ``fixed[k] @ motion(q)`` is a weighted sum of matrices that are
    multiplied out here, once."""

    def __init__(self, joints: list[UrdfJoint], index: Mapping[str, int]) -> None:
        fixed, indices, axes, revolute, rotation_generators, translation_generators = [], [], [], [], [], []
        pending = np.eye(4)
        for joint in joints:
            pending = pending @ joint.origin
            if not joint.movable:
                continue
            x, y, z = joint.axis
            rotation, translation = np.zeros((4, 4)), np.zeros((4, 4))
            if joint.type == "prismatic":
                translation[:3, 3] = joint.axis
            else:
                rotation[:3, :3] = [[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]]
            fixed.append(pending)
            indices.append(index[joint.name])
            axes.append(joint.axis)
            revolute.append(joint.type != "prismatic")
            rotation_generators.append(rotation)
            translation_generators.append(translation)
            pending = np.eye(4)
        self.count = len(indices)
        self.tail = pending
        self.indices = np.array(indices, dtype=np.int64)
        self.axes = np.array(axes, dtype=np.float64).reshape(-1, 3)
        self.revolute = np.array(revolute, dtype=bool)
        fixed = np.array(fixed).reshape(-1, 4, 4)
        rotation_generators = np.array(rotation_generators).reshape(-1, 4, 4)
        self._fixed = fixed
        self._fixed_sine = fixed @ rotation_generators
        self._fixed_versine = self._fixed_sine @ rotation_generators
        self._fixed_translation = fixed @ np.array(translation_generators).reshape(-1, 4, 4)
        self._any_prismatic = not bool(np.all(self.revolute))

    def _steps(self, joints: slice | int, q: np.ndarray) -> np.ndarray:
        """``fixed[k] @ motion(q)`` of the movable joints ``joints`` at positions ``q`` (one per
        joint, or a batch of one joint's), each ``(4, 4)``."""
        q = q[..., None, None]
        steps = (self._fixed[joints] + np.sin(q) * self._fixed_sine[joints]
                 + (1.0 - np.cos(q)) * self._fixed_versine[joints])
        if self._any_prismatic:
            steps += q * self._fixed_translation[joints]
        return steps

    def ends(self, positions: np.ndarray) -> np.ndarray:
        """``(N, 4, 4)`` branch ends in the common ancestor's frame for the chain's ``(N, J)``
        positions (one joint at a time: a batch may be long)."""
        result = np.broadcast_to(np.eye(4), (positions.shape[0], 4, 4))
        for k, column in enumerate(self.indices):
            result = result @ self._steps(k, positions[:, column])
        return result @ self.tail

    def frames(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The branch's end ``(4, 4)`` and each movable joint's frame after its motion ``(M, 4, 4)``,
        in the common ancestor's frame, for the chain's ``(J,)`` positions. A joint's motion leaves
        its own axis and (for revolute joints) its origin in place, so these frames give both."""
        frames = np.empty((self.count, 4, 4))
        if self.count == 0:
            return self.tail.copy(), frames   # a copy: callers may write into the pose they get
        steps = self._steps(slice(None), positions[self.indices])
        frames[0] = steps[0]
        for k in range(1, self.count):
            np.matmul(frames[k - 1], steps[k], out=frames[k])
        return frames[-1] @ self.tail, frames


# the transform tree ----------------------------------------------------------------------------

@dataclass(frozen=True)
class StampedTransform:
    """``child``'s pose in ``parent`` (4x4)."""

    parent: str
    child: str
    matrix: np.ndarray
    static: bool = True


class TransformTree:
    """Frames connected by rigid transforms, each frame with at most one parent (as tf2's tree).

    ``add(parent, child, matrix)`` stores ``child``'s pose in ``parent``; adding the same child
    again with the same parent replaces the transform (the newest wins, static or not);
    another parent, or a loop, is an error. ``lookup(target, source)`` walks up from both
    frames to their common ancestor and returns the pose of ``source`` in ``target``.
    """

    def __init__(self) -> None:
        self._edges: dict[str, StampedTransform] = {}   # by child
        self._frames: dict[str, None] = {}               # insertion-ordered set

    @property
    def frames(self) -> list[str]:
        return list(self._frames)

    def transforms(self) -> list[StampedTransform]:
        return list(self._edges.values())

    def add(self, parent: str, child: str, matrix: Any, static: bool = True) -> None:
        for role, frame in (("parent", parent), ("child", child)):
            if not isinstance(frame, str) or not frame:
                raise KinematicsError(f"transform {parent!r} -> {child!r}: the {role} frame must be a non-empty name")
        if parent == child:
            raise KinematicsError(f"transform {parent!r} -> {child!r}: a frame cannot be its own parent")
        matrix = check_rigid_transform(matrix, f"transform {parent!r} -> {child!r}")
        existing = self._edges.get(child)
        if existing is not None and existing.parent != parent:
            raise KinematicsError(f"frame {child!r} already has parent {existing.parent!r}; cannot also attach it "
                                  f"to {parent!r}")
        if child in self._path_to_root(parent):
            raise KinematicsError(f"transform {parent!r} -> {child!r} would close a loop ({child!r} is an "
                                  f"ancestor of {parent!r})")
        self._edges[child] = StampedTransform(parent, child, matrix, bool(static))
        self._frames.setdefault(parent)
        self._frames.setdefault(child)

    def _path_to_root(self, frame: str) -> list[str]:
        path = [frame]
        while path[-1] in self._edges:
            path.append(self._edges[path[-1]].parent)
        return path

    def _to_ancestor(self, path: list[str]) -> np.ndarray:
        """Pose of ``path[0]`` in ``path[-1]`` along a path up the tree."""
        matrix = np.eye(4)
        for frame in path[:-1]:
            matrix = self._edges[frame].matrix @ matrix
        return matrix

    def can_transform(self, target_frame: str, source_frame: str) -> bool:
        try:
            self.lookup(target_frame, source_frame)
        except KinematicsError:
            return False
        return True

    def lookup(self, target_frame: str, source_frame: str) -> np.ndarray:
        """``(4, 4)`` pose of ``source_frame`` in ``target_frame`` (maps points from source
        coordinates to target coordinates), as tf2's ``lookupTransform(target, source)``."""
        unknown = list(dict.fromkeys(f for f in (target_frame, source_frame) if f not in self._frames))
        up_target, up_source = self._path_to_root(target_frame), self._path_to_root(source_frame)
        common = next((f for f in up_target if f in up_source), None)
        if common is None or unknown:
            why = f"unknown frame(s) {unknown}" if unknown else "they are not connected (different trees)"
            raise KinematicsError(f"cannot look up {source_frame!r} in {target_frame!r}: {why}; known frames: "
                                  f"{self.frames}")
        target_in_common = self._to_ancestor(up_target[:up_target.index(common) + 1])
        source_in_common = self._to_ancestor(up_source[:up_source.index(common) + 1])
        return invert(target_in_common) @ source_in_common

    # from messages -----------------------------------------------------------------------------

    def add_transform_message(self, message: Any, static: bool = True) -> None:
        """One geometry_msgs/TransformStamped-like object (rclpy or rosbags; duck-typed)."""
        parent, child, matrix = transform_from_message(message)
        self.add(parent, child, matrix, static)

    def add_tf_message(self, message: Any, static: bool = True) -> int:
        """Every transform of a tf2_msgs/TFMessage-like object (``transforms[]`` of
        TransformStamped-like entries), or one TransformStamped-like object; returns how many."""
        entries = getattr(message, "transforms", None)
        if entries is None:
            entries = [message]
        count = 0
        for entry in entries:
            self.add_transform_message(entry, static)
            count += 1
        return count

    @classmethod
    def from_tf_messages(cls, messages: Iterable[Any], static: bool = True) -> "TransformTree":
        """A tree filled from TFMessage-like (or TransformStamped-like) objects, e.g. the
        deserialized ``/tf_static`` messages of a bag."""
        tree = cls()
        for message in messages:
            tree.add_tf_message(message, static)
        return tree


def transform_from_message(message: Any) -> tuple[str, str, np.ndarray]:
    """``(parent, child, 4x4)`` of a TransformStamped-like object (``header.frame_id``,
    ``child_frame_id``, ``transform.translation.{x,y,z}``, ``transform.rotation.{x,y,z,w}``).

    Refuses (KinematicsError naming the frames) missing fields, non-finite values and
    quaternions whose norm is off 1 by more than :data:`QUATERNION_NORM_TOLERANCE`."""
    try:
        parent = str(message.header.frame_id)
        child = str(message.child_frame_id)
    except AttributeError as error:
        raise KinematicsError(f"not a TransformStamped-like message: {error}") from None
    what = f"transform {parent!r} -> {child!r}"
    try:
        t, r = message.transform.translation, message.transform.rotation
        translation = np.array([t.x, t.y, t.z], dtype=np.float64)
        quaternion = np.array([r.x, r.y, r.z, r.w], dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as error:
        raise KinematicsError(f"{what}: not a TransformStamped-like message: {error}") from None
    if not np.all(np.isfinite(translation)) or not np.all(np.isfinite(quaternion)):
        raise KinematicsError(f"{what}: translation {translation.tolist()} / rotation {quaternion.tolist()} "
                              "contains NaN or inf")
    norm = float(np.linalg.norm(quaternion))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise KinematicsError(f"{what}: rotation quaternion {quaternion.tolist()} has norm {norm:.6g}, not 1")
    return parent, child, transform(quaternion_to_matrix(quaternion), translation)


__all__ = [
    "JOINT_TYPES", "KinematicChain", "KinematicsError", "MOVABLE_TYPES", "QUATERNION_NORM_TOLERANCE",
    "StampedTransform", "TransformTree", "UrdfJoint", "UrdfModel", "check_rigid_transform", "invert",
    "quaternion_to_matrix", "rpy_to_matrix", "transform", "transform_from_message",
]
