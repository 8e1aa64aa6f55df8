"""Approximate-time synchronization of several message streams, without ROS.

Semantics follow ``message_filters.ApproximateTimeSynchronizer``: each input keeps at most
``queue_size`` messages keyed by header stamp; when a message arrives, a set is emitted
if every other input holds a message whose stamp lies within ``slop`` seconds of all the
others in the set. The set always contains the message that just arrived; among the
candidate sets the one with the smallest stamp spread is chosen, and the messages it used
(and everything older on each input) are dropped so no message is delivered twice.

Unlike message_filters, inputs are named and the set is handed over as a dict from input
name to message, so adding or reordering an input cannot swap the messages a consumer reads.
The class only sees ``(stamp, message)`` pairs, so it is tested with plain objects; the
nodes feed it ROS messages, or use message_filters itself when it is importable.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any


class ApproximateTimeSynchronizer:
    """Emits sets of approximately simultaneous messages, one per named input.

    Args:
        inputs: the input names (any hashable, distinct), e.g. ``("color", "wrist")``.
        queue_size: messages kept per input.
        slop: largest stamp spread of one set, seconds.
        callback: called with ``{input name: message}`` for every set, with every input.
    """

    def __init__(self, inputs: Sequence[Hashable], queue_size: int, slop: float,
                 callback: Callable[[dict[Hashable, Any]], None]) -> None:
        if len(inputs) < 1:
            raise ValueError("at least one input is needed")
        if len(set(inputs)) != len(inputs):
            raise ValueError(f"input names must be distinct, got {list(inputs)}")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if slop < 0:
            raise ValueError("slop must be non-negative")
        self._queues: dict[Hashable, OrderedDict[float, Any]] = {name: OrderedDict() for name in inputs}
        self._queue_size = queue_size
        self._slop = slop
        self._callback = callback

    def clear(self) -> None:
        """Drops every queued message (their stamps no longer compare with new ones after a clock jump)."""
        for queue in self._queues.values():
            queue.clear()

    def add(self, name: Hashable, stamp: float, message: Any) -> bool:
        """Adds a message to the input ``name``; returns True if a synchronized set was emitted."""
        if name not in self._queues:
            raise KeyError(f"unknown input {name!r}; the inputs are {list(self._queues)}")
        queue = self._queues[name]
        queue[stamp] = message
        while len(queue) > self._queue_size:
            queue.popitem(last=False)
        best = self._tightest_set_with(name, stamp)
        if best is None:
            return False
        messages = {input_name: self._queues[input_name][chosen] for input_name, chosen in best.items()}
        for input_name, chosen in best.items():
            queue = self._queues[input_name]
            for older in [s for s in queue if s <= chosen]:
                del queue[older]
        self._callback(messages)
        return True

    def _tightest_set_with(self, anchor_name: Hashable, anchor_stamp: float) -> dict[Hashable, float] | None:
        """Stamps (one per input) of the smallest-spread set within ``slop`` holding the anchor.

        For a candidate lowest stamp ``low``, taking on every input the earliest stamp at or
        after ``low`` gives the smallest possible highest stamp, so trying each stamp in
        ``[anchor - slop, anchor]`` as ``low`` finds the optimum in O(inputs * queue^2).
        """
        lows = {s for queue in self._queues.values() for s in queue if anchor_stamp - self._slop <= s <= anchor_stamp}
        best: dict[Hashable, float] | None = None
        for low in sorted(lows):
            chosen = {}
            for name, queue in self._queues.items():
                if name == anchor_name:
                    chosen[name] = anchor_stamp
                    continue
                later = [s for s in queue if s >= low]
                if not later:
                    break
                chosen[name] = min(later)
            else:
                spread = max(chosen.values()) - min(chosen.values())
                if spread <= self._slop and (best is None or spread < max(best.values()) - min(best.values())):
                    best = chosen
        return best
