"""The bag evaluation report: ``report.json``, ``report.html`` (tables and embedded plots),
``errors.png`` and a one-line summary. Plots need matplotlib; without it the report says so."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from openhelix_core.plotting import PRIMARY_COLOR, REFERENCE_COLOR, new_figure, save_png


def _fmt(value, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value * scale:.{digits}f}{unit}"


def one_line_summary(report: dict) -> str:
    o = report["replay"]["overall"]
    position, rotation = o["position_error_m"], o["rotation_error_deg"]
    latency, goal_age = o["latency_s"], o["goal_age_s"]
    gripper = "n/a" if o["gripper_agreement"] is None else f"{100 * o['gripper_agreement']:.0f}%"
    skipped = report["input"]["messages_skipped"]
    return (f"bag-eval {Path(report['bag']).name}: {o['chunks_scored']}/{o['chunks']} chunks scored vs "
            f"{report['reference']} poses; position error mean {_fmt(position['mean'], 100, 1, ' cm')} "
            f"(p95 {_fmt(position['p95'], 100, 1, ' cm')}), rotation {_fmt(rotation['mean'], 1, 1, ' deg')}, "
            f"gripper agreement {gripper}; latency p50 {_fmt(latency['median'], 1000, 0, ' ms')}, "
            f"goal age {_fmt(goal_age['mean'], 1000, 0, ' ms')}, System 2 {_fmt(o['system2_rate_hz'], 1, 2, ' Hz')}"
            f"{f'; {skipped} input messages skipped' if skipped else ''}")


def plot_png(report: dict) -> bytes | None:
    """Position / rotation error over time, error by waypoint index and latency histogram;
    None without matplotlib."""
    try:
        figure, axes = new_figure(11, 7, 2, 2)
    except ImportError:
        return None
    sections = [("replay", PRIMARY_COLOR)] + ([("recorded", REFERENCE_COLOR)] if report.get("recorded") else [])
    for name, color in sections:
        rows = [c for c in report[name]["chunks"] if c["position_error_m"] is not None]
        axes[0, 0].plot([c["t_s"] for c in rows], [100 * c["position_error_m"] for c in rows], ".-", color=color,
                        label=name, markersize=3, linewidth=0.8)
        axes[0, 1].plot([c["t_s"] for c in rows], [c["rotation_error_deg"] for c in rows], ".-", color=color,
                        label=name, markersize=3, linewidth=0.8)
        per_step = report[name]["position_error_by_waypoint_m"]
        axes[1, 0].plot(range(len(per_step)), [100 * v if v is not None else float("nan") for v in per_step],
                        "o-", color=color, label=name, markersize=3)
    latencies = [1000 * c["latency_s"] for c in report["replay"]["chunks"] if c["latency_s"] is not None]
    if latencies:
        axes[1, 1].hist(latencies, bins=30, color=PRIMARY_COLOR)
    for episode in report["replay"]["episodes"][1:]:
        for axis in (axes[0, 0], axes[0, 1]):
            axis.axvline(episode["start_s"], color="k", linestyle=":", linewidth=0.8)
    axes[0, 0].set(title="position error per chunk", xlabel="bag time (s)", ylabel="cm")
    axes[0, 1].set(title="rotation error per chunk", xlabel="bag time (s)", ylabel="deg")
    axes[1, 0].set(title="position error by waypoint index", xlabel="waypoint", ylabel="cm")
    axes[1, 1].set(title="latency: observation published -> chunk received", xlabel="ms", ylabel="chunks")
    for axis in (axes[0, 0], axes[0, 1], axes[1, 0]):
        axis.legend(loc="best", fontsize=8)
    buffer = io.BytesIO()
    save_png(figure, buffer)
    return buffer.getvalue()


_COLUMNS = [
    ("label", "span", lambda r: html.escape(str(r["label"]))),
    ("time", "time (s)", lambda r: f"{r['start_s']:.1f}–{r['end_s']:.1f}"),
    ("chunks", "chunks scored", lambda r: f"{r['chunks_scored']}/{r['chunks']}"),
    ("pos", "position error mean / p95 (cm)",
     lambda r: f"{_fmt(r['position_error_m']['mean'], 100, 2)} / {_fmt(r['position_error_m']['p95'], 100, 2)}"),
    ("rot", "rotation error mean / p95 (deg)",
     lambda r: f"{_fmt(r['rotation_error_deg']['mean'], 1, 2)} / {_fmt(r['rotation_error_deg']['p95'], 1, 2)}"),
    ("grip", "gripper agreement", lambda r: _fmt(r["gripper_agreement"], 100, 0, "%")),
    ("lat", "latency p50 (ms)", lambda r: _fmt(r["latency_s"]["median"], 1000, 0)),
    ("age", "goal age mean (ms)", lambda r: _fmt(r["goal_age_s"]["mean"], 1000, 0)),
    ("s2", "System 2 (Hz)", lambda r: _fmt(r["system2_rate_hz"], 1, 2)),
]


def _table(rows: list[dict]) -> str:
    head = "".join(f"<th>{title}</th>" for _, title, _ in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{cell(r)}</td>" for _, _, cell in _COLUMNS) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _overall_rows(report: dict) -> list[dict]:
    rows = []
    for name in ("replay", "recorded"):
        if report.get(name):
            rows.append({"label": name, "start_s": 0.0, "end_s": report["duration_s"], **report[name]["overall"]})
    return rows


def text_report(report: dict) -> str:
    lines = [one_line_summary(report), "", f"bag {report['bag']} ({report['storage']}), {report['duration_s']:.1f} s, "
             f"played at rate {report['rate']}; reference: {report['reference']} poses"]
    for row in _overall_rows(report):
        lines.append(f"  {row['label']:9s} chunks {row['chunks_scored']}/{row['chunks']}, position "
                     f"{_fmt(row['position_error_m']['mean'], 100, 2, ' cm')}, rotation "
                     f"{_fmt(row['rotation_error_deg']['mean'], 1, 2, ' deg')}, gripper "
                     f"{_fmt(row['gripper_agreement'], 100, 0, '%')}, latency p50 "
                     f"{_fmt(row['latency_s']['median'], 1000, 0, ' ms')}, goal age "
                     f"{_fmt(row['goal_age_s']['mean'], 1000, 0, ' ms')}, System 2 "
                     f"{_fmt(row['system2_rate_hz'], 1, 2, ' Hz')}")
    for episode in report["replay"]["episodes"]:
        lines.append(f"  episode {episode['label']}: {episode['chunks_scored']} chunks, position "
                     f"{_fmt(episode['position_error_m']['mean'], 100, 2, ' cm')}, rotation "
                     f"{_fmt(episode['rotation_error_deg']['mean'], 1, 2, ' deg')}")
    for warning in report["input"]["warnings"][:20]:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def write_report(report: dict, directory: Path) -> dict[str, Path]:
    """Writes report.json, report.txt, report.html and (with matplotlib) errors.png."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "text": directory / "report.txt", "html": directory / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    paths["text"].write_text(text_report(report) + "\n")
    png = plot_png(report)
    if png is not None:
        paths["png"] = directory / "errors.png"
        paths["png"].write_bytes(png)
        image = f'<img alt="errors" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    else:
        image = "<p>(plots need matplotlib: pip install matplotlib)</p>"
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report["input"]["warnings"])
    document = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>bag-eval {html.escape(Path(report['bag']).name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#eee}}</style></head><body>
<h1>Bag evaluation</h1>
<p><b>{html.escape(one_line_summary(report))}</b></p>
<p>Bag <code>{html.escape(str(report['bag']))}</code> ({report['storage']}), {report['duration_s']:.1f} s,
played at rate {report['rate']} through the planner and controller processes; chunks scored against the
{report['reference']} end-effector poses the bag recorded. <i>recorded</i> scores the chunks the bag
itself holds (from the original run), when it has any.</p>
<h2>Overall</h2>{_table(_overall_rows(report))}
<h2>Episodes</h2>{_table(report['replay']['episodes'])}
<h2>Segments ({report['segment_s']:.0f} s)</h2>{_table(report['replay']['segments'])}
<h2>Plots</h2>{image}
<h2>Input</h2><p>{report['input']['messages_read']} messages read, {report['input']['messages_skipped']} skipped
{html.escape(json.dumps(report['input']['skipped_by_cause']))}; truncated: {report['input']['truncated']}.</p>
<ul>{warnings}</ul>
</body></html>
"""
    paths["html"].write_text(document)
    return paths
