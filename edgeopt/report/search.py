"""The search's results as a console summary, results.json, report.md and report.html.

Every latency of a search for a device that is not this machine is an estimate; the
tables say "est." beside each such figure and the plot's axis says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeopt.report.html import render_html


def points(record: dict[str, Any]) -> str:
    """Top-1 change against the baseline in points, signed (+0.00 for none)."""
    change = -record["drop_points"]
    return f"{0.0 if abs(change) < 0.005 else change:+.2f}"


def latency_text(record: dict[str, Any]) -> str:
    return f"{record['latency_ms']:.2f}" + (" est." if record.get("estimated") else "")


def _rows(outcome) -> list[dict[str, Any]]:
    """Measured candidates, fastest first, then the others."""
    ok = sorted((r for r in outcome.records if r["status"] == "ok"), key=lambda r: (r["latency_ms"], r["key"]))
    return ok + [r for r in outcome.records if r["status"] != "ok"]


def table_rows(outcome) -> list[list[str]]:
    """The candidate table as text cells (shared by the console, Markdown and HTML)."""
    front = {r["key"] for r in outcome.front}
    chosen = outcome.chosen["key"] if outcome.chosen else None
    rows = []
    for r in _rows(outcome):
        mark = "★" if r["key"] == chosen else ("◆" if r["key"] in front else "")
        if r["status"] != "ok":
            rows.append([mark, r["label"], r["status"], "", "", "", "", "", r.get("reason", "")[:160]])
            continue
        verdict = "meets goals" if not r["violations"] else "misses: " + "; ".join(r["violations"])
        rows.append([mark, r["label"], "ok", latency_text(r), f"{r['top1']:.2%}", points(r),
                     f"{r['size_mb']:.2f}", f"{r['peak_rss_mb']:.0f}", verdict])
    return rows


HEADERS = ["", "candidate", "status", "p50 ms", "top-1", "Δ points", "size MB", "peak MB", "verdict"]


def print_outcome(outcome, console: Console) -> None:
    """The candidate table (★ chosen, ◆ Pareto front) and the decision."""
    where = f"estimated for {outcome.device['name']}" if outcome.estimated else "measured here"
    table = Table(title=f"candidates — latency at batch 1, {where}; baseline top-1 {outcome.baseline['top1']:.2%}")
    for header in HEADERS:
        table.add_column(header, justify="right" if header in ("p50 ms", "top-1", "Δ points", "size MB", "peak MB") else "left")
    for row in table_rows(outcome):
        table.add_row(*[Text(cell) for cell in row])
    console.print(table)
    if outcome.front:
        front = " → ".join(f"{r['label']} ({latency_text(r)} ms, {r['top1']:.2%})" for r in outcome.front)
        console.print(Text(f"Pareto front, fastest to most accurate: {front}"), soft_wrap=True)
    for item in outcome.not_tried:
        console.print(Text(f"not tried: {item['label']} — {item['reason']}", style="yellow"), soft_wrap=True)
    console.print(Text(decision_text(outcome), style="bold green" if outcome.chosen else "bold red"), soft_wrap=True)


def decision_text(outcome) -> str:
    goals = outcome.config.goals
    if outcome.chosen:
        c = outcome.chosen
        base = next((r for r in outcome.records if r["status"] == "ok" and r["backend"] == "eager"
                     and r["precision"] == "fp32" and not r["recipe"]["steps"]), None)
        speed = f", {base['latency_ms'] / c['latency_ms']:.1f}× faster than eager FP32" if base else ""
        return (f"chosen: {c['label']} — {latency_text(c)} ms, top-1 {c['top1']:.2%} ({points(c)} points)"
                f"{speed}, {c['size_mb']:.2f} MB; meets {goals.describe()}. Artifact: {outcome.config.out}/best, "
                f"recipe: {outcome.config.out}/best.toml")
    missed = sorted({v.split(":")[0] for r in outcome.records if r["status"] == "ok" for v in r["violations"]})
    lines = [f"no candidate meets the goals ({goals.describe()}); missed: {', '.join(missed) or 'no candidate was measured'}."]
    lines += ["closest: " + "; ".join(f"{r['label']} ({latency_text(r)} ms, top-1 {r['top1']:.2%}, misses "
                                       f"{', '.join(r['violations'])})" for r in outcome.closest)] if outcome.closest else []
    return " ".join(lines)


def markdown(outcome) -> str:
    """report.md: the decision, the candidate table, what was not tried, the environment."""
    env = outcome.environment
    lines = [f"# edgeopt optimize: {outcome.config.model}", "",
             f"Data `{outcome.config.data}` · device **{outcome.device['name']}**"
             f"{' (latencies are roofline estimates from measurements here)' if outcome.estimated else ''}"
             f" · {outcome.config.goals.describe()} · {outcome.elapsed_s / 60:.1f} of {outcome.config.budget_s / 60:.3g} min",
             "", decision_text(outcome), ""]
    if outcome.chosen:
        lines += ["Rebuild the chosen artifact:", "", "```bash",
                  f"edgeopt build {outcome.config.out}/best.toml --out rebuilt", "```", ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(outcome)]
    lines += ["", "★ chosen · ◆ on the Pareto front (latency vs top-1)", ""]
    lines += [f"- not tried: {item['label']} — {item['reason']}" for item in outcome.not_tried]
    lines += ["", f"Measured on {env['cpu']} ({env['usable_cpus']} CPUs, {env['memory_mb']:.0f} MB), "
                  f"{outcome.device['threads_here']} threads, Python {env['python']}.", ""]
    return "\n".join(lines)


def write_reports(outcome, out: Path) -> dict[str, Path]:
    """results.json, report.md and report.html in ``out`` (each written whole, then renamed)."""
    out = Path(out)
    data = outcome.to_dict()
    paths = {"json": out / "results.json", "md": out / "report.md", "html": out / "report.html"}
    contents = {"json": json.dumps(data, indent=2, default=str) + "\n", "md": markdown(outcome),
                "html": render_html(outcome, table_rows(outcome), HEADERS, decision_text(outcome))}
    for kind, path in paths.items():
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(contents[kind])
        tmp.replace(path)
    return paths
