"""The success tables of the learning demo."""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

from openhelix_core.evaluation.metrics import EvaluationSummary


def success_table(results: Dict[str, Dict[str, List[bool]]], seeds: Sequence[int]) -> str:
    """Markdown table: one row per task, one column per variant, ``k/n (rate)``."""
    variants = list(results)
    tasks = list(next(iter(results.values())))
    lines = ["| task | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for task in tasks:
        cells = [f"{sum(results[v][task])}/{len(results[v][task])}" for v in variants]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    totals = []
    for v in variants:
        ok = sum(sum(x) for x in results[v].values())
        n = sum(len(x) for x in results[v].values())
        totals.append(f"**{ok}/{n} ({100.0 * ok / max(n, 1):.0f} %)**")
    lines.append("| **all** | " + " | ".join(totals) + " |")
    lines.append(f"\nseeds: {list(seeds)}")
    return "\n".join(lines)


def chain_table(summaries: Mapping[str, EvaluationSummary]) -> str:
    """Markdown table of CALVIN's chain metrics: one row per variant, SR1 .. SR5 (share of
    sequences whose first k subtasks succeeded) and the average length."""
    horizon = max(s.horizon for s in summaries.values())
    lines = ["| variant | sequences | " + " | ".join(f"SR{k}" for k in range(1, horizon + 1)) + " | avg len |",
             "|---|---|" + "---|" * (horizon + 1)]
    for variant, summary in summaries.items():
        rates = " | ".join(f"{100 * r:.0f} %" for r in summary.success_rates)
        lines.append(f"| {variant} | {summary.num_sequences} | {rates} | {summary.average_length:.2f} |")
    return "\n".join(lines)
