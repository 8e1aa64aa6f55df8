"""TransformSource on tf2_ros's buffer answers as the suite's own buffer does (tf2_ros is not
installed here: a stand-in with tf2's lookup semantics plays it), and transform_message
round-trips a pose."""
from types import SimpleNamespace

import numpy as np
import pytest

from openhelix_core.kinematics import transform_from_message
from openhelix_ros.conversions import seconds_to_stamp
from openhelix_ros.transforms import TransformLookupError, TransformSource, transform_message


class TransformException(Exception):
    pass


class LookupException(TransformException):
    pass


class ExtrapolationException(TransformException):
    pass


class Tf2Buffer:
    """tf2's semantics: a time after the newest sample extrapolates (refused); time 0 is the newest."""

    def __init__(self, newest_stamp: float, frames=("world", "tcp")):
        self.newest_stamp, self.frames = newest_stamp, frames

    def lookup_transform(self, target, source, time):
        if target not in self.frames or source not in self.frames:
            raise LookupException(f'"{source}" passed to lookupTransform argument source_frame does not exist')
        seconds = time.nanoseconds * 1e-9
        if seconds > self.newest_stamp:
            raise ExtrapolationException("Lookup would require extrapolation into the future")
        matrix = np.eye(4)
        matrix[0, 3] = 0.5
        return transform_message(target, source, matrix, seconds_to_stamp(seconds or self.newest_stamp))


def tf2_source(newest_stamp: float, max_age_s: float = 0.1) -> TransformSource:
    source = TransformSource.__new__(TransformSource)
    source.max_age_s, source.buffer = max_age_s, None
    source.tf2 = SimpleNamespace(TransformException=TransformException, LookupException=LookupException,
                                 ExtrapolationException=ExtrapolationException)
    source.tf2_buffer = Tf2Buffer(newest_stamp)
    return source


def test_tf2_path_answers_within_the_data_and_holds_the_newest_up_to_the_age_limit():
    source = tf2_source(newest_stamp=10.0)
    assert source.lookup("world", "tcp", 9.5)[0, 3] == pytest.approx(0.5)
    assert source.lookup("world", "tcp", 10.05)[0, 3] == pytest.approx(0.5)
    with pytest.raises(TransformLookupError, match=r"0\.500 s older than the time asked for"):
        source.lookup("world", "tcp", 10.5)


def test_tf2_path_names_a_missing_frame():
    with pytest.raises(TransformLookupError, match="cannot look up 'hand_camera' in 'world'.*does not exist"):
        tf2_source(newest_stamp=10.0).lookup("world", "hand_camera", 9.0)


def test_transform_message_round_trips_a_pose():
    angle = 0.7
    matrix = np.array([[np.cos(angle), -np.sin(angle), 0, 0.1], [np.sin(angle), np.cos(angle), 0, -0.2],
                       [0, 0, 1, 0.3], [0, 0, 0, 1]])
    message = transform_message("world", "tcp", matrix, seconds_to_stamp(1.5))
    parent, child, decoded = transform_from_message(message)
    assert (parent, child) == ("world", "tcp") and message.header.stamp.sec == 1
    np.testing.assert_allclose(decoded, matrix, atol=1e-12)
