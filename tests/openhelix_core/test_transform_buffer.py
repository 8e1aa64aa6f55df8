"""TransformBuffer: stamped lookups of a moving hand camera, and refusals of missing and stale frames."""
from types import SimpleNamespace

import numpy as np
import pytest

from openhelix_core.kinematics import KinematicsError, quaternion_to_matrix, transform
from openhelix_core.transform_buffer import TransformBuffer, TransformLookupError

HAND_EYE_T = (0.05, 0.0, -0.06)
HAND_EYE_Q = (0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4))


def z_rotation(angle: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2))


def tcp_at(t: float) -> tuple[np.ndarray, tuple]:
    """A TCP moving 0.2 m/s along x and turning 1 rad/s about z."""
    return np.array([0.3 + 0.2 * t, 0.0, 0.5]), z_rotation(1.0 * t)


def moving_hand_camera(stamps) -> TransformBuffer:
    buffer = TransformBuffer(max_age_s=0.1)
    buffer.add("tcp", "hand_camera", 0.0, HAND_EYE_T, HAND_EYE_Q, static=True)
    for stamp in stamps:
        buffer.add("world", "tcp", stamp, *tcp_at(stamp), static=False)
    return buffer


def expected_camera(t: float) -> np.ndarray:
    position, quaternion = tcp_at(t)
    return transform(quaternion_to_matrix(quaternion), position) @ transform(quaternion_to_matrix(HAND_EYE_Q),
                                                                             HAND_EYE_T)


def test_moving_hand_camera_is_looked_up_at_the_image_stamp():
    buffer = moving_hand_camera(np.arange(0.0, 1.0001, 0.1))
    for image_stamp in (0.0, 0.25, 0.37, 0.9):
        # Samples 0.1 s apart: linear x and slerped yaw reproduce the motion exactly in between.
        np.testing.assert_allclose(buffer.lookup("world", "hand_camera", image_stamp), expected_camera(image_stamp),
                                   atol=1e-9)
    # The pose at the image's stamp, not the newest one: a moving camera differs by centimetres.
    assert not np.allclose(buffer.lookup("world", "hand_camera", 0.37), buffer.lookup("world", "hand_camera", 1.0),
                           atol=1e-2)
    inverse = buffer.lookup("hand_camera", "world", 0.37)
    np.testing.assert_allclose(inverse @ expected_camera(0.37), np.eye(4), atol=1e-9)


def test_samples_arriving_out_of_order_are_sorted():
    buffer = moving_hand_camera([0.0, 0.2, 0.1, 0.4, 0.3])
    np.testing.assert_allclose(buffer.lookup("world", "hand_camera", 0.15), expected_camera(0.15), atol=1e-9)


def test_newest_sample_is_held_only_up_to_the_age_limit():
    buffer = moving_hand_camera(np.arange(0.0, 1.0001, 0.1))
    np.testing.assert_allclose(buffer.lookup("world", "hand_camera", 1.08), expected_camera(1.0), atol=1e-9)
    with pytest.raises(TransformLookupError, match=r"'world' -> 'tcp'.*0\.300 s older.*max_transform_age_s = 0\.1"):
        buffer.lookup("world", "hand_camera", 1.3)


def test_time_before_the_history_is_refused():
    buffer = moving_hand_camera(np.arange(5.0, 6.0001, 0.1))
    with pytest.raises(TransformLookupError, match="before its oldest sample"):
        buffer.lookup("world", "hand_camera", 4.0)


def test_missing_and_unconnected_frames_are_refused():
    buffer = moving_hand_camera([0.0, 0.1])
    with pytest.raises(TransformLookupError, match=r"frame\(s\) \['static_camera'\]"):
        buffer.lookup("world", "static_camera", 0.05)
    buffer.add("table", "static_camera", 0.0, (1, 0, 1), (0, 0, 0, 1), static=True)
    with pytest.raises(TransformLookupError, match="not connected"):
        buffer.lookup("world", "static_camera", 0.05)


def test_static_transforms_hold_at_any_time_and_are_replaced():
    buffer = TransformBuffer(max_age_s=0.0)
    buffer.add("world", "static_camera", 0.0, (1.0, 0.0, 1.0), (0, 0, 0, 1), static=True)
    assert buffer.lookup("world", "static_camera", 1e6)[0, 3] == 1.0
    buffer.add("world", "static_camera", 5.0, (2.0, 0.0, 1.0), (0, 0, 0, 1), static=True)
    assert buffer.lookup("world", "static_camera", 0.0)[0, 3] == 2.0


def test_old_samples_leave_the_history():
    buffer = TransformBuffer(max_age_s=0.3, history_s=1.0)
    for stamp in np.arange(0.0, 3.0001, 0.5):
        buffer.add("world", "tcp", stamp, *tcp_at(stamp), static=False)
    with pytest.raises(TransformLookupError, match="before its oldest sample"):
        buffer.lookup("world", "tcp", 1.5)
    buffer.lookup("world", "tcp", 2.2)


@pytest.mark.parametrize("translation, quaternion, cause", [
    ((np.nan, 0, 0), (0, 0, 0, 1), "NaN or inf"),
    ((0, 0, 0), (0, 0, 0, 2), "norm 2"),
])
def test_bad_transforms_are_refused(translation, quaternion, cause):
    buffer = TransformBuffer(max_age_s=0.1)
    with pytest.raises(KinematicsError, match=cause):
        buffer.add("world", "tcp", 0.0, translation, quaternion, static=False)
    assert buffer.frames == []


def test_loops_are_refused():
    buffer = TransformBuffer(max_age_s=0.1)
    buffer.add("world", "tcp", 0.0, (0, 0, 0), (0, 0, 0, 1), static=True)
    with pytest.raises(KinematicsError, match="loop"):
        buffer.add("tcp", "world", 0.0, (0, 0, 0), (0, 0, 0, 1), static=True)


def test_tf_message_contents_are_added():
    def entry(parent, child, sec, nanosec, x):
        return SimpleNamespace(header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=sec, nanosec=nanosec)),
                               child_frame_id=child,
                               transform=SimpleNamespace(translation=SimpleNamespace(x=x, y=0.0, z=0.0),
                                                         rotation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0)))
    buffer = TransformBuffer(max_age_s=0.3)
    count = buffer.add_message(SimpleNamespace(transforms=[entry("world", "tcp", 1, 0, 0.0),
                                                           entry("world", "tcp", 1, 500_000_000, 1.0)]), static=False)
    assert count == 2
    assert buffer.lookup("world", "tcp", 1.25)[0, 3] == pytest.approx(0.5)


def test_a_gap_in_the_samples_is_not_bridged():
    buffer = moving_hand_camera([0.0, 0.1, 2.0])
    # Near a sample across the gap: answered (the motion is uniform, so exactly).
    np.testing.assert_allclose(buffer.lookup("world", "hand_camera", 1.95), expected_camera(1.95), atol=1e-9)
    with pytest.raises(TransformLookupError, match=r"no sample within 0\.1 s"):
        buffer.lookup("world", "hand_camera", 1.0)


def test_a_future_stamped_sample_is_refused_so_that_a_stall_is_still_seen():
    def message(stamp):
        return SimpleNamespace(transforms=[SimpleNamespace(
            header=SimpleNamespace(frame_id="world", stamp=SimpleNamespace(sec=int(stamp), nanosec=0)),
            child_frame_id="tcp", transform=SimpleNamespace(translation=SimpleNamespace(x=0.0, y=0.0, z=0.0),
                                                            rotation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0)))])
    buffer = TransformBuffer(max_age_s=0.1)
    buffer.add_message(message(10), static=False, latest_valid_stamp=10.1)
    with pytest.raises(KinematicsError, match="beyond the latest valid stamp"):
        buffer.add_message(message(100), static=False, latest_valid_stamp=10.1)
    with pytest.raises(TransformLookupError, match="older than the time asked for"):
        buffer.lookup("world", "tcp", 11.0)


def test_clear_forgets_moving_frames_but_keeps_static_ones():
    buffer = moving_hand_camera([0.0, 0.1])
    buffer.add("world", "static_camera", 0.0, (1.0, 0.0, 1.0), (0, 0, 0, 1), static=True)
    buffer.clear()
    assert buffer.lookup("world", "static_camera", 123.0)[0, 3] == 1.0
    with pytest.raises(TransformLookupError, match="not connected"):  # world -> tcp was a moving frame
        buffer.lookup("world", "hand_camera", 0.05)
