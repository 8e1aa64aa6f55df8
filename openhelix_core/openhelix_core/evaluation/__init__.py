"""Evaluation without ROS (pure Python; matplotlib only for plots).

Closed loop, CALVIN's protocol: ``sequences`` (CALVIN's evaluation sequences and reset states),
``metrics`` (success rates, average length) and ``report``. The simulator rollouts that produce
the results are :mod:`openhelix_sim.evaluation_runner`'s. Open loop, recorded bags:
``bag_scoring`` (chunks against what the bag recorded afterwards) and ``bag_report``."""

from .metrics import EvaluationSummary, SequenceResult, TaskStats, average_length, count_success, task_statistics
from .report import format_task_table, load_results_json, plot_summary, write_report, write_results_json
from .sequences import (
    STEPS_PER_SUBTASK,
    TASK_CATEGORIES,
    TASK_NAMES,
    TASKS,
    env_state_for_initial_state,
    get_sequences,
    initial_states,
    is_valid_chain,
    sequence_at,
)

__all__ = [
    "EvaluationSummary", "SequenceResult", "TaskStats", "average_length", "count_success", "task_statistics",
    "format_task_table", "load_results_json", "plot_summary", "write_report", "write_results_json",
    "STEPS_PER_SUBTASK", "TASK_CATEGORIES", "TASK_NAMES", "TASKS", "env_state_for_initial_state",
    "get_sequences", "initial_states", "is_valid_chain", "sequence_at",
]
