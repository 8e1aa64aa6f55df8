"""Transforms from ``/tf`` and ``/tf_static`` for the nodes, with or without tf2_ros.

With tf2_ros importable (a ROS distribution), its ``Buffer`` and ``TransformListener`` are used.
Without it (the PyPI wheels), :class:`openhelix_core.transform_buffer.TransformBuffer` is fed
from ``tf2_msgs/TFMessage`` subscriptions -- the real tf2_msgs, or where none is installed the
wire-identical stand-in that ``scripts/setup`` builds from ``fallback_msgs/tf2_msgs``.

Both answer :meth:`TransformSource.lookup` the same way: the pose at the time asked for
(interpolated), the newest one while it is at most ``max_age_s`` older than that time, and a
:class:`TransformLookupError` naming the frames otherwise.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from std_msgs.msg import Header

from openhelix_core.geometry import matrix_to_quaternion
from openhelix_core.kinematics import KinematicsError, transform_from_message
from openhelix_core.transform_buffer import TransformBuffer, TransformLookupError
from openhelix_ros import topics

# tf2_ros's listener and broadcaster profiles: /tf reliable and volatile, /tf_static latched.
TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def tf2_ros_available() -> bool:
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


class TransformSource:
    """Looks up stamped transforms for ``node``. ``report(text)`` hears of each bad ``/tf`` message
    -- malformed entries, moving frames stamped more than ``future_tolerance_s`` ahead of the
    node's clock -- and ``report(None)`` of each good one (the tf2_ros path validates entries
    itself)."""

    def __init__(self, node, max_age_s: float, report: Callable[[str | None], None],
                 future_tolerance_s: float) -> None:
        self.node, self.max_age_s, self.report = node, max_age_s, report
        self.future_tolerance_s = future_tolerance_s
        self.subscriptions = []
        if tf2_ros_available():
            import tf2_ros
            self.tf2 = tf2_ros
            self.tf2_buffer = tf2_ros.Buffer(node=node)
            self.listener = tf2_ros.TransformListener(self.tf2_buffer, node, spin_thread=False)
            self.buffer = None
            return
        from tf2_msgs.msg import TFMessage
        self.tf2 = None
        self.buffer = TransformBuffer(max_age_s)
        self.subscriptions = [
            node.create_subscription(TFMessage, topics.TF, lambda msg: self._add(msg, static=False), TF_QOS),
            node.create_subscription(TFMessage, topics.TF_STATIC, lambda msg: self._add(msg, static=True),
                                     TF_STATIC_QOS)]

    @property
    def implementation(self) -> str:
        return "tf2_ros" if self.tf2 is not None else "openhelix TransformBuffer on tf2_msgs/TFMessage"

    def _add(self, message, static: bool) -> None:
        try:
            latest_valid = self.node.get_clock().now().nanoseconds * 1e-9 + self.future_tolerance_s
            self.buffer.add_message(message, static, latest_valid)
        except KinematicsError as error:
            self.report(f"ignoring a {'static ' if static else ''}transform: {error}")
            return
        self.report(None)

    def lookup(self, target_frame: str, source_frame: str, stamp: float) -> np.ndarray:
        """``(4, 4)`` pose of ``source_frame`` in ``target_frame`` at ``stamp`` (s); raises
        TransformLookupError naming the cause."""
        if self.buffer is not None:
            return self.buffer.lookup(target_frame, source_frame, stamp)
        return self._tf2_lookup(target_frame, source_frame, stamp)

    def _tf2_lookup(self, target_frame: str, source_frame: str, stamp: float) -> np.ndarray:
        try:
            message = self.tf2_buffer.lookup_transform(target_frame, source_frame,
                                                       Time(nanoseconds=int(round(stamp * 1e9))))
        except self.tf2.ExtrapolationException:
            message = self._newest_within_age(target_frame, source_frame, stamp)
        except self.tf2.TransformException as error:
            raise TransformLookupError(f"cannot look up {source_frame!r} in {target_frame!r}: {error}") from None
        return transform_from_message(message)[2]

    def _newest_within_age(self, target_frame: str, source_frame: str, stamp: float):
        """tf2 answers no time after its newest data: take the newest while it is young enough."""
        try:
            message = self.tf2_buffer.lookup_transform(target_frame, source_frame, Time())
        except self.tf2.TransformException as error:
            raise TransformLookupError(f"cannot look up {source_frame!r} in {target_frame!r}: {error}") from None
        newest = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
        age = stamp - newest
        if not 0.0 <= age <= self.max_age_s:
            when = "older than" if age > 0 else "newer than"
            raise TransformLookupError(
                f"transform {target_frame!r} -> {source_frame!r}: its newest data ({newest:.3f}) is {abs(age):.3f} s "
                f"{when} the time asked for ({stamp:.3f}; limit max_transform_age_s = {self.max_age_s} s)")
        return message

    def clear(self) -> None:
        """Forgets every transform (after a clock jump)."""
        if self.buffer is not None:
            self.buffer.clear()
        else:
            self.tf2_buffer.clear()

    def destroy(self) -> None:
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.subscriptions = []
        if self.tf2 is not None:
            self.listener.unregister()


def transform_message(parent: str, child: str, matrix: np.ndarray, stamp) -> TransformStamped:
    """A ``geometry_msgs/TransformStamped``: ``child``'s pose ``matrix`` (4x4) in ``parent`` at ``stamp``."""
    x, y, z = (float(v) for v in matrix[:3, 3])
    qx, qy, qz, qw = (float(v) for v in matrix_to_quaternion(np.asarray(matrix[:3, :3], dtype=np.float64)))
    return TransformStamped(header=Header(stamp=stamp, frame_id=parent), child_frame_id=child,
                            transform=Transform(translation=Vector3(x=x, y=y, z=z),
                                                rotation=Quaternion(x=qx, y=qy, z=qz, w=qw)))


__all__ = ["TF_QOS", "TF_STATIC_QOS", "TransformLookupError", "TransformSource", "tf2_ros_available",
           "transform_message"]
