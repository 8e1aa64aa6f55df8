"""A time-indexed transform tree: what tf2's buffer answers, in numpy, for nodes without tf2_ros.

Each frame has at most one parent. A static transform holds at every time; a dynamic one is a
history of stamped samples, looked up at a time by interpolation between the two samples around
it (linear for the translation, slerp for the rotation), as tf2 does::

    buffer = TransformBuffer(max_age_s=0.1)
    buffer.add("world", "tcp", stamp, translation, quaternion_xyzw, static=False)
    buffer.lookup("world", "gripper_camera_optical_frame", image_stamp)   # (4, 4)

Unlike tf2, which makes a caller wait for data newer than the time asked for, a lookup after a
frame's newest sample is answered with that sample while it is at most ``max_age_s`` older than
the time asked for (a robot publishes its TF shortly after the camera's image arrives; a control
loop cannot wait) and refused beyond that. Between two samples, the nearer one must be within
``max_age_s`` too: a gap in the data is not bridged. A time before a dynamic frame's oldest
sample is refused, as are unknown and unconnected frames. Every refusal is a
:class:`TransformLookupError` naming the frames, the times and the limit. Samples stamped in the
future (beyond a tolerance, against the caller's clock) are refused when they arrive: one would
otherwise hide a stalled publisher by always lying ahead of the time asked for.

Pure numpy (no rclpy, no torch): the nodes feed it ``tf2_msgs/TFMessage`` contents.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from openhelix_core.kinematics import (
    QUATERNION_NORM_TOLERANCE,
    KinematicsError,
    invert,
    quaternion_to_matrix,
    transform,
)

#: How long dynamic samples are kept (s; tf2's default cache time).
DEFAULT_HISTORY_S = 10.0


class TransformLookupError(KinematicsError):
    """A transform that cannot be answered (unknown frame, no connection, too old, before the
    history); the text names the frames, times and limit."""


@dataclass
class _Edge:
    """``child``'s pose in ``parent``: one static sample or a time-sorted history."""

    parent: str
    static: bool
    stamps: list[float] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)


def _slerp(start: np.ndarray, end: np.ndarray, fraction: float) -> np.ndarray:
    """Unit quaternions (x, y, z, w) -> the one ``fraction`` of the way along the shorter arc."""
    cosine = float(np.dot(start, end))
    if cosine < 0.0:
        end, cosine = -end, -cosine
    if cosine > 0.9995:  # nearly parallel: normalised lerp is exact to float precision
        result = start + fraction * (end - start)
        return result / np.linalg.norm(result)
    angle = np.arccos(cosine)
    return (np.sin((1.0 - fraction) * angle) * start + np.sin(fraction * angle) * end) / np.sin(angle)


class TransformBuffer:
    """Static and stamped transforms between named frames (see the module doc).

    ``max_age_s``: how much older than the time asked for a dynamic frame's newest sample may be.
    ``history_s``: samples older than a frame's newest by more than this are dropped.
    """

    def __init__(self, max_age_s: float, history_s: float = DEFAULT_HISTORY_S) -> None:
        if not (np.isfinite(max_age_s) and max_age_s >= 0.0):
            raise ValueError(f"max_age_s must be a finite number >= 0, got {max_age_s!r}")
        if not (np.isfinite(history_s) and history_s > 0.0):
            raise ValueError(f"history_s must be a finite number > 0, got {history_s!r}")
        self.max_age_s, self.history_s = float(max_age_s), float(history_s)
        self._edges: dict[str, _Edge] = {}   # by child frame

    @property
    def frames(self) -> list[str]:
        return sorted({*self._edges, *(edge.parent for edge in self._edges.values())})

    def clear(self) -> None:
        """Forgets every moving frame's samples (after a clock jump nothing stamped before compares
        with the new time); static transforms stay, as in tf2: they hold at any time and a latched
        ``/tf_static`` is not sent again."""
        self._edges = {child: edge for child, edge in self._edges.items() if edge.static}

    def add(self, parent: str, child: str, stamp: float, translation: Sequence[float],
            quaternion: Sequence[float], static: bool) -> None:
        """Stores ``child``'s pose in ``parent`` (quaternion x y z w) at ``stamp`` (s).

        A static transform replaces the previous one. A child given another parent, or turned
        static / dynamic, starts a new history (as a robot re-parenting a frame means). Raises
        :class:`KinematicsError` for empty or equal frame names, a loop, non-finite values or a
        quaternion off unit length by more than ``QUATERNION_NORM_TOLERANCE``.
        """
        what = f"transform {parent!r} -> {child!r}"
        if not isinstance(parent, str) or not isinstance(child, str) or not parent or not child:
            raise KinematicsError(f"{what}: frame names must be non-empty")
        if parent == child:
            raise KinematicsError(f"{what}: a frame cannot be its own parent")
        translation = np.asarray(translation, dtype=np.float64).reshape(3)
        quaternion = np.asarray(quaternion, dtype=np.float64).reshape(4)
        if not (np.isfinite(stamp) and np.all(np.isfinite(translation)) and np.all(np.isfinite(quaternion))):
            raise KinematicsError(f"{what}: stamp, translation or rotation is NaN or inf")
        norm = float(np.linalg.norm(quaternion))
        if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            raise KinematicsError(f"{what}: rotation quaternion {quaternion.tolist()} has norm {norm:.6g}, not 1")
        if child in self._path_to_root(parent):
            raise KinematicsError(f"{what} would close a loop ({child!r} is an ancestor of {parent!r})")
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != bool(static) or static:
            edge = self._edges[child] = _Edge(parent, bool(static))
        index = bisect.bisect_left(edge.stamps, stamp)
        if index < len(edge.stamps) and edge.stamps[index] == stamp:  # a resend of the same sample
            edge.translations[index], edge.quaternions[index] = translation, quaternion / norm
            return
        edge.stamps.insert(index, float(stamp))
        edge.translations.insert(index, translation)
        edge.quaternions.insert(index, quaternion / norm)
        expired = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.history_s)
        if expired:
            del edge.stamps[:expired], edge.translations[:expired], edge.quaternions[:expired]

    def add_message(self, message: Any, static: bool, latest_valid_stamp: float = math.inf) -> int:
        """Every transform of a ``tf2_msgs/TFMessage``-like object (``transforms[]`` of
        ``geometry_msgs/TransformStamped``-like entries); returns how many were stored. A bad
        entry, or a dynamic one stamped after ``latest_valid_stamp`` (the caller's clock plus its
        tolerance), raises :class:`KinematicsError` naming it; the entries before it are kept."""
        count = 0
        for entry in message.transforms:
            try:
                stamp = entry.header.stamp.sec + entry.header.stamp.nanosec * 1e-9
                parent, child = str(entry.header.frame_id), str(entry.child_frame_id)
                t, r = entry.transform.translation, entry.transform.rotation
                translation, quaternion = (t.x, t.y, t.z), (r.x, r.y, r.z, r.w)
            except AttributeError as error:
                raise KinematicsError(f"not a TransformStamped-like entry: {error}") from None
            if not static and stamp > latest_valid_stamp:
                raise KinematicsError(f"transform {parent!r} -> {child!r} is stamped {stamp:.3f}, "
                                      f"{stamp - latest_valid_stamp:.3f} s beyond the latest valid stamp "
                                      f"{latest_valid_stamp:.3f} (this clock plus its tolerance)")
            self.add(parent, child, stamp, translation, quaternion, static)
            count += 1
        return count

    def _path_to_root(self, frame: str) -> list[str]:
        path = [frame]
        while path[-1] in self._edges:
            path.append(self._edges[path[-1]].parent)
        return path

    def _edge_at(self, child: str, stamp: float) -> np.ndarray:
        """``(4, 4)`` pose of ``child`` in its parent at ``stamp``."""
        edge = self._edges[child]
        if edge.static:
            return transform(quaternion_to_matrix(edge.quaternions[0]), edge.translations[0])
        newest, oldest = edge.stamps[-1], edge.stamps[0]
        what = f"transform {edge.parent!r} -> {child!r}"
        if stamp >= newest:
            age = stamp - newest
            if age > self.max_age_s:
                raise TransformLookupError(
                    f"{what}: its newest sample ({newest:.3f}) is {age:.3f} s older than the time asked for "
                    f"({stamp:.3f}; limit max_transform_age_s = {self.max_age_s} s)")
            return transform(quaternion_to_matrix(edge.quaternions[-1]), edge.translations[-1])
        if stamp < oldest:
            raise TransformLookupError(f"{what}: the time asked for ({stamp:.3f}) is before its oldest sample "
                                       f"({oldest:.3f}) in the buffer")
        after = bisect.bisect_right(edge.stamps, stamp)
        before = after - 1
        nearest = min(stamp - edge.stamps[before], edge.stamps[after] - stamp)
        if nearest > self.max_age_s:
            raise TransformLookupError(
                f"{what}: no sample within {self.max_age_s} s (max_transform_age_s) of the time asked for "
                f"({stamp:.3f}): the nearest are at {edge.stamps[before]:.3f} and {edge.stamps[after]:.3f}")
        fraction = (stamp - edge.stamps[before]) / (edge.stamps[after] - edge.stamps[before])
        translation = (1.0 - fraction) * edge.translations[before] + fraction * edge.translations[after]
        quaternion = _slerp(edge.quaternions[before], edge.quaternions[after], fraction)
        return transform(quaternion_to_matrix(quaternion), translation)

    def _to_ancestor(self, path: list[str], stamp: float) -> np.ndarray:
        matrix = np.eye(4)
        for frame in path[:-1]:
            matrix = self._edge_at(frame, stamp) @ matrix
        return matrix

    def lookup(self, target_frame: str, source_frame: str, stamp: float) -> np.ndarray:
        """``(4, 4)`` pose of ``source_frame`` in ``target_frame`` at ``stamp`` (maps points from
        source to target coordinates), as tf2's ``lookup_transform(target, source, time)``."""
        if target_frame == source_frame:
            return np.eye(4)
        known = set(self.frames)
        unknown = [frame for frame in dict.fromkeys((target_frame, source_frame)) if frame not in known]
        if unknown:
            raise TransformLookupError(f"cannot look up {source_frame!r} in {target_frame!r}: no transform for "
                                       f"frame(s) {unknown} received; known frames: {sorted(known)}")
        up_target, up_source = self._path_to_root(target_frame), self._path_to_root(source_frame)
        common = next((frame for frame in up_target if frame in up_source), None)
        if common is None:
            raise TransformLookupError(f"cannot look up {source_frame!r} in {target_frame!r}: they are not connected "
                                       f"(their roots are {up_target[-1]!r} and {up_source[-1]!r})")
        target_in_common = self._to_ancestor(up_target[:up_target.index(common) + 1], stamp)
        source_in_common = self._to_ancestor(up_source[:up_source.index(common) + 1], stamp)
        return invert(target_in_common) @ source_in_common


__all__ = ["DEFAULT_HISTORY_S", "TransformBuffer", "TransformLookupError"]
