"""Approximate-time synchronization semantics (message_filters' ApproximateTimeSynchronizer)."""
import pytest

from openhelix_ros.sync import ApproximateTimeSynchronizer


class Collector:
    def __init__(self):
        self.sets = []

    def __call__(self, *messages):
        self.sets.append(messages)


def test_emits_when_every_input_has_a_close_message():
    out = Collector()
    sync = ApproximateTimeSynchronizer(3, queue_size=5, slop=0.01, callback=out)
    assert not sync.add(0, 1.000, "a1")
    assert not sync.add(1, 1.004, "b1")
    assert sync.add(2, 1.008, "c1")
    assert out.sets == [("a1", "b1", "c1")]


def test_never_delivers_a_message_twice_and_drops_older_ones():
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, queue_size=5, slop=0.01, callback=out)
    sync.add(0, 1.0, "a1")
    sync.add(1, 1.0, "b1")
    assert not sync.add(1, 1.001, "b2")  # a1 was used already
    sync.add(0, 0.999, "late")  # older than the last delivered set on this input: pairs with b2
    assert out.sets == [("a1", "b1"), ("late", "b2")]


def test_picks_the_tightest_set():
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, queue_size=10, slop=0.05, callback=out)
    sync.add(1, 0.96, "far")
    sync.add(1, 0.99, "near")
    sync.add(0, 1.0, "anchor")
    assert out.sets == [("anchor", "near")]


def test_respects_slop_and_queue_size():
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, queue_size=2, slop=0.01, callback=out)
    sync.add(0, 1.0, "a")
    assert not sync.add(1, 1.02, "b")
    for index, stamp in enumerate((1.1, 1.2)):
        sync.add(0, stamp, f"x{index}")  # pushes "a" out of the queue of size 2
    assert not sync.add(1, 1.005, "c")
    assert out.sets == []


def test_rejects_bad_configuration():
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer(2, queue_size=0, slop=0.1, callback=print)
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer(2, queue_size=1, slop=-1, callback=print)
