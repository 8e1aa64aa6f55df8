"""Evaluation reports: results JSON, per-task table (markdown / plain text) and a PNG plot
(in the style of :mod:`openhelix_core.plotting`; matplotlib is needed only for the plot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from ..plotting import PRIMARY_COLOR, SECONDARY_COLOR, new_figure, save_png
from .metrics import EvaluationSummary, SequenceResult

RESULTS_FORMAT = "openhelix.calvin_eval/1"


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def results_to_dict(results: Sequence[SequenceResult], config: Optional[Mapping] = None,
                    summary: Optional[EvaluationSummary] = None) -> dict:
    results = list(results)
    summary = summary if summary is not None else EvaluationSummary.from_results(results)
    return {
        "format": RESULTS_FORMAT,
        "config": dict(config or {}),
        "summary": summary.to_dict(),
        "sequences": [r.to_dict() for r in results],
    }


def write_results_json(path, results: Sequence[SequenceResult], config: Optional[Mapping] = None,
                       summary: Optional[EvaluationSummary] = None) -> Path:
    """Write config, summary (CALVIN field names) and every per-sequence record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = results_to_dict(results, config, summary)
    path.write_text(json.dumps(data, indent=1, default=_jsonable) + "\n")
    return path


def load_results_json(path) -> tuple:
    """``(config, results, summary)`` from a file written by ``write_results_json``."""
    data = json.loads(Path(path).read_text())
    results = [SequenceResult.from_dict(d) for d in data.get("sequences", [])]
    return data.get("config", {}), results, EvaluationSummary.from_dict(data["summary"])


def format_task_table(summary: EvaluationSummary, style: str = "markdown") -> str:
    """Chained success rates, average length and per-task successes / attempts.

    ``style`` is "markdown" or "text" (fixed-width columns)."""
    if style not in ("markdown", "text"):
        raise ValueError(f"style must be 'markdown' or 'text', got {style!r}")
    chain_head = [f"{i} in a row" for i in range(1, summary.horizon + 1)]
    chain_row = [f"{sr * 100:.1f}%" for sr in summary.success_rates]
    tasks = sorted(summary.task_stats.items())
    task_rows = [[name, str(s.successes), str(s.attempts), f"{s.success_rate * 100:.1f}%"] for name, s in tasks]
    task_head = ["task", "successes", "attempts", "success rate"]
    head = f"CALVIN evaluation: {summary.num_sequences} sequences, average length {summary.average_length:.3f}"
    if style == "markdown":
        def md(rows, header):
            lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            return "\n".join(lines)
        parts = [f"**{head}**", "", md([chain_row], chain_head), ""]
        parts += [md(task_rows, task_head) if task_rows else "_no per-task records_", ""]
        return "\n".join(parts)

    def text(rows, header, first_left=True):
        widths = [max(len(x) for x in col) for col in zip(header, *rows)]
        fmt = "  ".join(f"{{:<{w}}}" if k == 0 and first_left else f"{{:>{w}}}" for k, w in enumerate(widths))
        lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
        return "\n".join(lines + [fmt.format(*r) for r in rows])
    parts = [head, "", text([chain_row], chain_head, first_left=False), ""]
    parts += [text(task_rows, task_head) if task_rows else "(no per-task records)", ""]
    return "\n".join(parts)


def plot_summary(path, summary: EvaluationSummary, title: Optional[str] = None) -> Path:
    """PNG with two panels: success rate for 1..5 chained instructions, and per-task success
    rates (horizontal bars, attempts in the labels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = sorted(summary.task_stats.items())
    task_h = max(3.0, 0.28 * len(tasks) + 1.0)
    fig, (ax1, ax2) = new_figure(11, max(4.0, task_h), 1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    xs = np.arange(1, summary.horizon + 1)
    rates = np.asarray(summary.success_rates, dtype=float) * 100
    bars = ax1.bar(xs, rates, color=PRIMARY_COLOR)
    for b, r in zip(bars, rates):
        ax1.text(b.get_x() + b.get_width() / 2, r + 1, f"{r:.1f}", ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(xs)
    ax1.set_xlabel("instructions in a row")
    ax1.set_ylabel("success rate (%)")
    ax1.set_ylim(0, 105)
    ax1.set_title(f"chained success (avg len {summary.average_length:.2f}, n={summary.num_sequences})", fontsize=9)
    if tasks:
        names = [f"{n} ({s.attempts})" for n, s in tasks]
        vals = [s.success_rate * 100 for _, s in tasks]
        ys = np.arange(len(tasks))
        ax2.barh(ys, vals, color=SECONDARY_COLOR)
        ax2.set_yticks(ys)
        ax2.set_yticklabels(names, fontsize=7)
        ax2.invert_yaxis()
        ax2.set_xlim(0, 100)
        ax2.set_xlabel("success rate (%)")
        ax2.set_title("per task (attempts)", fontsize=9)
    else:
        ax2.axis("off")
        ax2.text(0.5, 0.5, "no per-task records", ha="center", va="center")
    if title:
        fig.suptitle(title)
    save_png(fig, path)
    return path


def write_report(out_dir, results: Sequence[SequenceResult], config: Optional[Mapping] = None,
                 name: str = "calvin_eval", plot: bool = True) -> dict:
    """Write ``<name>.json``, ``<name>.md``, ``<name>.txt`` and (if ``plot``) ``<name>.png``
    into ``out_dir``; returns {"json", "markdown", "text", "plot"} -> Path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = list(results)
    summary = EvaluationSummary.from_results(results)
    paths = {"json": write_results_json(out_dir / f"{name}.json", results, config, summary)}
    paths["markdown"] = out_dir / f"{name}.md"
    paths["markdown"].write_text(format_task_table(summary, "markdown"))
    paths["text"] = out_dir / f"{name}.txt"
    paths["text"].write_text(format_task_table(summary, "text"))
    if plot:
        paths["plot"] = plot_summary(out_dir / f"{name}.png", summary, title=(config or {}).get("title"))
    return paths
