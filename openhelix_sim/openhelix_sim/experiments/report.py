"""The success tables of the learning demo."""
from __future__ import annotations

from typing import Dict, List, Sequence


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
