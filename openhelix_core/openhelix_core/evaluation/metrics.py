"""CALVIN long-horizon metrics.

As in mees/calvin ``calvin_models/calvin_agent/evaluation/utils.py``:

* a sequence's result is the number of its instructions completed in a row (0..5); the
  rollout stops at the first failure;
* ``count_success``: the success rate for ``i`` chained instructions is the fraction of
  sequences whose result is at least ``i`` (i = 1..5);
* the average length is the mean result ("avg_seq_len");
* per task (``print_and_save``): every completed instruction counts as one success and one
  attempt, the instruction that failed counts as one attempt; instructions after the failure
  are not attempted and not counted.

``EvaluationSummary.to_dict`` uses CALVIN's results.json field names (``avg_seq_len``,
``chain_sr`` keyed "1".."5", ``task_info`` with ``success`` / ``total``). For an empty result
list the rates and average are 0 (CALVIN would divide by zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

SEQUENCE_LENGTH = 5


def _check_length(n, horizon: int = SEQUENCE_LENGTH) -> int:
    if isinstance(n, bool) or int(n) != n or not 0 <= int(n) <= horizon:
        raise ValueError(f"a sequence result must be an integer in [0, {horizon}], got {n!r}")
    return int(n)


def count_success(lengths: Sequence[int], horizon: int = SEQUENCE_LENGTH) -> list:
    """Success rates for 1..``horizon`` instructions in a row."""
    lengths = [_check_length(n, horizon) for n in lengths]
    if not lengths:
        return [0.0] * horizon
    return [sum(1 for n in lengths if n >= i) / len(lengths) for i in range(1, horizon + 1)]


def average_length(lengths: Sequence[int], horizon: int = SEQUENCE_LENGTH) -> float:
    lengths = [_check_length(n, horizon) for n in lengths]
    return float(sum(lengths) / len(lengths)) if lengths else 0.0


@dataclass
class TaskStats:
    """Attempts and successes of one instruction (task name) over an evaluation."""

    attempts: int = 0
    successes: int = 0

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    def to_dict(self) -> dict:
        return {"success": self.successes, "total": self.attempts}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TaskStats":
        return cls(attempts=int(d["total"]), successes=int(d["success"]))


@dataclass
class SequenceResult:
    """One evaluated chain: its initial state, its instructions and how many were completed in
    a row. ``info`` holds free-form extras (e.g. steps per subtask)."""

    initial_state: dict
    tasks: tuple
    completed: int
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.initial_state = dict(self.initial_state)
        self.tasks = tuple(str(t) for t in self.tasks)
        self.completed = _check_length(self.completed, len(self.tasks))

    def to_dict(self) -> dict:
        return {"initial_state": dict(self.initial_state), "tasks": list(self.tasks),
                "completed": self.completed, "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "SequenceResult":
        return cls(initial_state=dict(d["initial_state"]), tasks=tuple(d["tasks"]),
                   completed=int(d["completed"]), info=dict(d.get("info", {})))


def task_statistics(results: Iterable[SequenceResult]) -> dict:
    """Per-task attempts / successes, in order of first appearance."""
    stats: dict = {}
    for r in results:
        for name in r.tasks[:r.completed]:
            s = stats.setdefault(name, TaskStats())
            s.attempts += 1
            s.successes += 1
        if r.completed < len(r.tasks):
            stats.setdefault(r.tasks[r.completed], TaskStats()).attempts += 1
    return stats


@dataclass
class EvaluationSummary:
    num_sequences: int
    success_rates: list  # [rate for 1, 2, ..., horizon chained instructions]
    average_length: float
    task_stats: dict  # task name -> TaskStats

    @property
    def horizon(self) -> int:
        return len(self.success_rates)

    @classmethod
    def from_results(cls, results: Sequence[SequenceResult], horizon: int = SEQUENCE_LENGTH) -> "EvaluationSummary":
        results = list(results)
        lengths = [r.completed for r in results]
        return cls(num_sequences=len(results), success_rates=count_success(lengths, horizon),
                   average_length=average_length(lengths, horizon), task_stats=task_statistics(results))

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], horizon: int = SEQUENCE_LENGTH) -> "EvaluationSummary":
        """Summary from bare results (no per-task table)."""
        return cls(num_sequences=len(lengths), success_rates=count_success(lengths, horizon),
                   average_length=average_length(lengths, horizon), task_stats={})

    def to_dict(self) -> dict:
        return {
            "num_sequences": self.num_sequences,
            "avg_seq_len": self.average_length,
            "chain_sr": {str(i + 1): sr for i, sr in enumerate(self.success_rates)},
            "task_info": {name: s.to_dict() for name, s in self.task_stats.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "EvaluationSummary":
        chain = d["chain_sr"]
        rates = [float(chain[k]) for k in sorted(chain, key=int)]
        return cls(num_sequences=int(d.get("num_sequences", 0)), success_rates=rates,
                   average_length=float(d["avg_seq_len"]),
                   task_stats={name: TaskStats.from_dict(v) for name, v in d.get("task_info", {}).items()})
