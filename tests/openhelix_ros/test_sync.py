"""Approximate-time synchronization semantics (message_filters' ApproximateTimeSynchronizer)."""
import itertools

import pytest

from openhelix_ros.sync import ApproximateTimeSynchronizer


class Collector:
    def __init__(self):
        self.sets = []

    def __call__(self, messages):
        self.sets.append(messages)


def test_emits_when_every_input_has_a_close_message():
    out = Collector()
    sync = ApproximateTimeSynchronizer(["a", "b", "c"], queue_size=5, slop=0.01, callback=out)
    assert not sync.add("a", 1.000, "a1")
    assert not sync.add("b", 1.004, "b1")
    assert sync.add("c", 1.008, "c1")
    assert out.sets == [{"a": "a1", "b": "b1", "c": "c1"}]


def test_never_delivers_a_message_twice_and_drops_older_ones():
    out = Collector()
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=5, slop=0.01, callback=out)
    sync.add("a", 1.0, "a1")
    sync.add("b", 1.0, "b1")
    assert not sync.add("b", 1.001, "b2")  # a1 was used already
    sync.add("a", 0.999, "late")  # older than the last delivered set on this input: pairs with b2
    assert out.sets == [{"a": "a1", "b": "b1"}, {"a": "late", "b": "b2"}]


def test_picks_the_tightest_set():
    out = Collector()
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=10, slop=0.05, callback=out)
    sync.add("b", 0.96, "far")
    sync.add("b", 0.99, "near")
    sync.add("a", 1.0, "anchor")
    assert out.sets == [{"a": "anchor", "b": "near"}]


def test_respects_slop_and_queue_size():
    out = Collector()
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=2, slop=0.01, callback=out)
    sync.add("a", 1.0, "a")
    assert not sync.add("b", 1.02, "b")
    for index, stamp in enumerate((1.1, 1.2)):
        sync.add("a", stamp, f"x{index}")  # pushes "a" out of the queue of size 2
    assert not sync.add("b", 1.005, "c")
    assert out.sets == []


CONTROLLER_INPUTS = [("color", "static"), ("depth", "static"), ("color", "wrist"), ("depth", "wrist"), ("ee_pose", "")]


@pytest.mark.parametrize("declared", [CONTROLLER_INPUTS, CONTROLLER_INPUTS[::-1], sorted(CONTROLLER_INPUTS)])
def test_each_message_is_delivered_under_the_name_it_arrived_on_whatever_the_input_order(declared):
    # The controller's inputs: cameras' colour and depth images and the EE pose, declared in
    # any order and arriving in yet another order; no message may end up under another name.
    out = Collector()
    sync = ApproximateTimeSynchronizer(declared, queue_size=5, slop=0.01, callback=out)
    for offset, name in enumerate(itertools.chain(CONTROLLER_INPUTS[1::2], CONTROLLER_INPUTS[::2])):
        sync.add(name, 1.0 + 0.001 * offset, f"{name[0]} of {name[1] or 'the arm'}")
    assert out.sets == [{name: f"{name[0]} of {name[1] or 'the arm'}" for name in CONTROLLER_INPUTS}]


def test_rejects_bad_configuration_and_unknown_inputs():
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer(["a", "b"], queue_size=0, slop=0.1, callback=print)
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer(["a", "b"], queue_size=1, slop=-1, callback=print)
    with pytest.raises(ValueError, match="distinct"):
        ApproximateTimeSynchronizer(["a", "a"], queue_size=1, slop=0.1, callback=print)
    with pytest.raises(KeyError, match="unknown input 'c'"):
        ApproximateTimeSynchronizer(["a", "b"], queue_size=1, slop=0.1, callback=print).add("c", 1.0, "c1")
