"""CALVIN evaluation protocol: sequences, metrics and reports (pure Python; matplotlib only
for the plot). See ``sequences``, ``metrics`` and ``report``."""

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
