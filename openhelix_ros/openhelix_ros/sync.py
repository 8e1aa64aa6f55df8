"""Approximate-time synchronization of several message streams, without ROS.

Semantics follow ``message_filters.ApproximateTimeSynchronizer``: each input keeps at most
``queue_size`` messages keyed by header stamp; when a message arrives, a set is emitted
if every other input holds a message whose stamp lies within ``slop`` seconds of all the
others in the set. The set always contains the message that just arrived; among the
candidate sets the one with the smallest stamp spread is chosen, and the messages it used
(and everything older on each input) are dropped so no message is delivered twice.

The class only sees ``(stamp, message)`` pairs, so it is tested with plain objects; the
nodes feed it ROS messages, or use message_filters itself when it is importable.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable


class ApproximateTimeSynchronizer:
    def __init__(self, num_inputs: int, queue_size: int, slop: float,
                 callback: Callable[..., None]) -> None:
        if num_inputs < 1:
            raise ValueError("num_inputs must be at least 1")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if slop < 0:
            raise ValueError("slop must be non-negative")
        self._queues: list[OrderedDict[float, Any]] = [OrderedDict() for _ in range(num_inputs)]
        self._queue_size = queue_size
        self._slop = slop
        self._callback = callback

    def clear(self) -> None:
        """Drops every queued message (their stamps no longer compare with new ones after a clock jump)."""
        for queue in self._queues:
            queue.clear()

    def add(self, input_index: int, stamp: float, message: Any) -> bool:
        """Adds a message to one input; returns True if a synchronized set was emitted."""
        queue = self._queues[input_index]
        queue[stamp] = message
        while len(queue) > self._queue_size:
            queue.popitem(last=False)
        best = self._tightest_set_with(input_index, stamp)
        if best is None:
            return False
        messages = [self._queues[index][chosen] for index, chosen in enumerate(best)]
        for queue, chosen in zip(self._queues, best):
            for older in [s for s in queue if s <= chosen]:
                del queue[older]
        self._callback(*messages)
        return True

    def _tightest_set_with(self, anchor_index: int, anchor_stamp: float) -> list[float] | None:
        """Stamps (one per input) of the smallest-spread set within ``slop`` holding the anchor.

        For a candidate lowest stamp ``low``, taking on every input the earliest stamp at or
        after ``low`` gives the smallest possible highest stamp, so trying each stamp in
        ``[anchor - slop, anchor]`` as ``low`` finds the optimum in O(inputs * queue^2).
        """
        lows = {s for queue in self._queues for s in queue if anchor_stamp - self._slop <= s <= anchor_stamp}
        best: list[float] | None = None
        for low in sorted(lows):
            chosen = []
            for index, queue in enumerate(self._queues):
                if index == anchor_index:
                    chosen.append(anchor_stamp)
                    continue
                later = [s for s in queue if s >= low]
                if not later:
                    break
                chosen.append(min(later))
            else:
                spread = max(chosen) - min(chosen)
                if spread <= self._slop and (best is None or spread < max(best) - min(best)):
                    best = chosen
        return best
