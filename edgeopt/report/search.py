"""The search's results as a console summary, results.json, report.md and report.html.

Every latency of a search for a device that is not this machine is an estimate; the
tables say "est." beside each such figure and the plot's axis says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeopt.search.record import Candidate


def points(record: Candidate) -> str:
    """The goal metric's change against the baseline in points, signed (+0.00 for none)."""
    change = -record.drop_points
    return f"{0.0 if abs(change) < 0.005 else change:+.2f}"


def latency_text(record: Candidate) -> str:
    return f"{record.latency_ms:.2f}" + (" est." if record.measurement.estimated else "")


def value_text(record: Candidate) -> str:
    return _number(record.value)


def _number(value: float) -> str:
    """A metric's value: a fraction as a percentage, anything else as a number."""
    return f"{value:.2%}" if 0.0 <= value <= 1.0 else f"{value:.4g}"


def metric_text(record: Candidate) -> str:
    return f"{record.metric_title} {value_text(record)}"


def verdict(record: Candidate) -> str:
    return "meets the goals" if not record.violations else "misses: " + "; ".join(v.text for v in record.violations)


def _rows(outcome) -> list[Candidate]:
    """Measured candidates, fastest first, then the others."""
    ok = sorted((r for r in outcome.records if r.ok), key=lambda r: (r.latency_ms, r.key))
    return ok + [r for r in outcome.records if not r.ok]


def headers(outcome) -> list[str]:
    return ["", "candidate", "status", "p50 ms", outcome.baseline["metric_title"], "Δ points", "size MB", "peak MB",
            "verdict"]


def table_rows(outcome) -> list[list[str]]:
    """The candidate table as text cells (shared by the console, Markdown and HTML)."""
    front = {r.key for r in outcome.front}
    chosen = outcome.chosen.key if outcome.chosen else None
    rows = []
    for r in _rows(outcome):
        mark = "★" if r.key == chosen else ("◆" if r.key in front else "")
        if not r.ok:
            rows.append([mark, r.label, r.status, "", "", "", "", "", (r.reason or "")[:160]])
            continue
        m = r.measurement
        rows.append([mark, r.label, "ok", latency_text(r), value_text(r), points(r), f"{m.size_mb:.2f}",
                     f"{m.peak_rss_mb:.0f}", verdict(r)])
    return rows


def print_outcome(outcome, console: Console) -> None:
    """The candidate table (★ chosen, ◆ Pareto front) and the decision."""
    where = f"estimated for {outcome.device['name']}" if outcome.estimated else "measured here"
    title = outcome.baseline["metric_title"]
    baseline = _baseline_text(outcome)
    table = Table(title=f"candidates — latency at batch 1, {where}; baseline {title} {baseline}")
    numeric = ("p50 ms", title, "Δ points", "size MB", "peak MB")
    for header in headers(outcome):
        table.add_column(header, justify="right" if header in numeric else "left")
    for row in table_rows(outcome):
        table.add_row(*[Text(cell) for cell in row])
    console.print(table)
    if outcome.front:
        front = " → ".join(f"{r.label} ({latency_text(r)} ms, {value_text(r)})" for r in outcome.front)
        console.print(Text(f"Pareto front, fastest to most accurate: {front}"), soft_wrap=True)
    for item in outcome.not_tried:
        console.print(Text(f"not tried: {item['label']} — {item['reason']}", style="yellow"), soft_wrap=True)
    console.print(Text(decision_text(outcome), style="bold green" if outcome.chosen else "bold red"), soft_wrap=True)


def _baseline_text(outcome) -> str:
    return _number(outcome.baseline["metrics"][outcome.baseline["metric"]])


def decision_text(outcome) -> str:
    goals, title = outcome.config.goals, outcome.baseline["metric_title"]
    if outcome.chosen:
        c = outcome.chosen
        base = outcome.eager_baseline()
        speed = f", {base.latency_ms / c.latency_ms:.1f}× faster than eager FP32" if base else ""
        return (f"chosen: {c.label} — {latency_text(c)} ms, {metric_text(c)} ({points(c)} points){speed}, "
                f"{c.measurement.size_mb:.2f} MB; meets {goals.describe(title)}. Artifact: {outcome.config.out}/best, "
                f"recipe: {outcome.config.out}/best.toml")
    words = {"max_drop": f"{title} drop", "max_latency_ms": "latency", "max_size_mb": "size",
             "max_memory_mb": "memory", "memory_cap": "the device's memory"}
    missed = sorted({words[v.goal] for r in outcome.records if r.ok for v in r.violations})
    lines = [f"no candidate meets the goals ({goals.describe(title)}); missed: "
             f"{', '.join(missed) or 'no candidate was measured'}."]
    if outcome.closest:
        lines.append("closest: " + "; ".join(f"{r.label} ({latency_text(r)} ms, {metric_text(r)}, misses: "
                                             f"{'; '.join(v.text for v in r.violations)})" for r in outcome.closest))
    return " ".join(lines)


def markdown(outcome) -> str:
    """report.md: the decision, the candidate table, what was not tried, the environment."""
    env, config = outcome.environment, outcome.config
    lines = [f"# edgeopt optimize: {config.model}", "",
             f"Data `{config.data}` · device **{outcome.device['name']}**"
             f"{' (latencies are roofline estimates from measurements here)' if outcome.estimated else ''}"
             f" · {config.goals.describe(outcome.baseline['metric_title'])} · {outcome.elapsed_s / 60:.1f} of "
             f"{config.budget_s / 60:.3g} min", "", decision_text(outcome), ""]
    if outcome.chosen:
        lines += ["Rebuild the chosen artifact:", "", "```bash", f"edgeopt build {config.out}/best.toml --out rebuilt",
                  "```", ""]
    columns = headers(outcome)
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(outcome)]
    lines += ["", "★ chosen · ◆ on the Pareto front (latency vs quality)", ""]
    lines += [f"- not tried: {item['label']} — {item['reason']}" for item in outcome.not_tried]
    lines += ["", f"Measured on {env['cpu']} ({env['usable_cpus']} CPUs, {env['memory_mb']:.0f} MB), "
                  f"{outcome.device['threads_here']} threads, Python {env['python']}.", ""]
    return "\n".join(lines)


def write_reports(outcome, out: Path) -> dict[str, Path]:
    """results.json, report.md and report.html in ``out`` (each written whole, then renamed)."""
    from edgeopt.report.html import render_html

    out = Path(out)
    paths = {"json": out / "results.json", "md": out / "report.md", "html": out / "report.html"}
    contents = {"json": json.dumps(outcome.to_dict(), indent=2, default=str) + "\n", "md": markdown(outcome),
                "html": render_html(outcome, table_rows(outcome), headers(outcome), decision_text(outcome))}
    for kind, path in paths.items():
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(contents[kind])
        tmp.replace(path)
    return paths
