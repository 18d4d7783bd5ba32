"""report.html: one self-contained page (inline SVG plots, no scripts, no external files).

Sections: the decision, the Pareto plot (latency vs the goal's metric, marker area ∝ size, the chosen
point starred), the candidate table, the chosen recipe and how to rebuild it, the
winner's per-class accuracy and confusion matrix, its operator profile, the device and
the environment.
"""

from __future__ import annotations

import html
import io
import json
from typing import Any

from edgeopt.devices.mcu import McuSpec
from edgeopt.report.search import RANKING_HEADERS, host_choice_text, ranking_rows, where_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
td:nth-child(2),th:nth-child(2),td:last-child,th:last-child{text-align:left}.decision{font-size:1rem;padding:.8rem;border-radius:6px}
.ok{background:#e8f5e9}.miss{background:#ffebee}.est{color:#b45309;font-weight:600}pre{background:#f6f8fa;padding:.8rem;overflow:auto}
figure{margin:0}svg{max-width:100%;height:auto}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _memory_text(device: dict) -> str:
    mcu = device.get("mcu")
    if mcu:
        return (f"{mcu['sram_kb']:g} KB of SRAM for the tensor arena and {mcu['flash_kb']:g} KB of flash (hard limits); "
                f"latency {_esc(McuSpec(**mcu).basis)}")
    return f"{device['memory_mb']:.0f} MB (a model process may use {device['memory_cap_mb']:.0f} MB)"


def _table(headers: list[str], rows: list[list[str]], css_id: str) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on an edge box or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    _pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG is inline


def pareto_svg(outcome) -> str:
    """Latency vs the goal's metric for every measured candidate; front joined; chosen starred."""
    plt = _pyplot()
    ok = [r for r in outcome.records if r.ok]
    title = outcome.baseline["metric_title"]

    def shown(r) -> float:  # in points (percent for a fraction)
        return 100 * r.value

    figure, axis = plt.subplots(figsize=(9, 5.5))
    largest = max((r.measurement.size_mb for r in ok), default=1.0) or 1.0
    for meets, color, name in ((True, "#2e7d32", "meets the goals"), (False, "#9e9e9e", "misses a goal")):
        group = [r for r in ok if r.meets_goals == meets]
        if group:
            axis.scatter([r.latency_ms for r in group], [shown(r) for r in group],
                         s=[30 + 400 * r.measurement.size_mb / largest for r in group], c=color, alpha=0.6,
                         label=name, edgecolors="black", linewidths=0.5)
    front = outcome.front
    if front:
        axis.plot([r.latency_ms for r in front], [shown(r) for r in front], "--", color="#1565c0", label="Pareto front")
        for r in front:
            axis.annotate(r.label, (r.latency_ms, shown(r)), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if outcome.chosen:
        c = outcome.chosen
        axis.scatter([c.latency_ms], [shown(c)], marker="*", s=400, c="#ffb300", edgecolors="black",
                     label="chosen", zorder=5)
    goals = outcome.config.goals
    if goals.max_drop is not None:
        baseline = 100 * outcome.baseline["metrics"][outcome.baseline["metric"]]
        axis.axhline(baseline - goals.max_drop, color="#c62828", linestyle=":",
                     label=f"max {title} drop ({goals.max_drop:g} pt)")
    if goals.max_latency_ms:
        axis.axvline(goals.max_latency_ms, color="#c62828", linestyle="-.", label="max latency")
    axis.set_xscale("log")
    where = where_text(outcome).replace("estimated", "ESTIMATED")
    axis.set_xlabel(f"p50 latency at batch 1, ms ({where}; log scale)")
    axis.set_ylabel(f"{title} on the test split, %")
    axis.set_title(f"candidates: latency vs {title} (marker area ∝ artifact size)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    return _svg(figure)


def confusion_svg(confusion: list[list[int]], classes: list[str]) -> str:
    plt = _pyplot()
    size = max(4, 0.45 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(classes)), labels=classes, fontsize=8)
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            if count:
                axis.text(j, i, str(count), ha="center", va="center", fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("confusion matrix of the chosen artifact")
    return _svg(figure)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _winner_sections(outcome) -> str:
    details = outcome.winner_details
    if not details:
        return ""
    task = details.get("task", {})
    parts = []
    table = task.get("table")
    if table and table.get("rows"):  # the task's per-class figures, as it titled them
        rows = [[name, *(_percent(v) for v in values)] for name, values in table["rows"].items()]
        parts += ["<h2>Chosen artifact: per class</h2>", _table(["class", *table["columns"]], rows, "per-class")]
    if task.get("confusion") and task.get("per_class"):
        parts.append(f"<figure id=\"confusion\">{confusion_svg(task['confusion'], list(task['per_class']))}</figure>")
    if task.get("samples_drawn"):
        images = "".join(f'<img src="{_esc(path)}" alt="{_esc(path)}" width="256">' for path in task["samples_drawn"])
        parts.append('<h2>Test images: the truth (green) and the chosen artifact\'s results (red, with scores)</h2>'
                     f'<figure id="samples">{images}</figure>')
    profile = details.get("profile", {})
    parts.append(f"<h2>Operator profile ({_esc(profile.get('backend', ''))}, measured here, per run)</h2>")
    if profile.get("layers"):
        rows = [[row["name"][:60], row["op_type"], f"{row['ms']:.3f}"] for row in profile["layers"]]
        parts.append(f"<p>Slowest layers of {profile['total_ms']:.2f} ms in all.</p>"
                     + _table(["layer", "op", "ms"], rows, "profile"))
    else:
        parts.append(f"<p>{_esc(profile.get('note', 'no profile'))}</p>")
    return "".join(parts)


def _rankings(outcome) -> str:
    rows = ranking_rows(outcome)
    if not rows:
        return ""
    return (f"<h2>Ranked on the device and here</h2><p>Every candidate was timed on {_esc(outcome.measured_on)} by its "
            f"agent, and here with {outcome.device.get('host_threads')} threads. {_esc(host_choice_text(outcome))}</p>"
            + _table(RANKING_HEADERS, rows, "rankings"))


def render_html(outcome, rows: list[list[str]], headers: list[str], decision: str) -> str:
    """The whole page as a string."""
    config, env = outcome.config, outcome.environment
    estimated = ('<p class="est">Every latency on this page is an ESTIMATE for '
                 f'{_esc(outcome.device["name"])}: measured here with {outcome.device["threads_here"]} threads, scaled '
                 f'by a roofline model of the two CPUs ({_esc(where_text(outcome))}; each figure shows its interval). '
                 'Measure on the device (<code>edgeopt agent</code> there, <code>--agent</code> here) before relying '
                 'on it.</p>' if outcome.estimated else "")
    try:
        plot = pareto_svg(outcome)
    except ImportError:
        plot = "<p>matplotlib is not installed (pip install 'edgeopt[report]'): no plot.</p>"
    recipe = ""
    if outcome.chosen:
        from edgeopt.pipeline.recipe import Recipe

        toml = Recipe.from_dict(outcome.chosen.recipe).to_toml()
        recipe = (f"<h2>Chosen recipe</h2><pre>{_esc(toml)}</pre><p>Rebuild it: <code>edgeopt build "
                  f"{_esc(config.out)}/best.toml --out rebuilt</code></p>")
    not_tried = "".join(f"<li>{_esc(i['label'])} — {_esc(i['reason'])}</li>" for i in outcome.not_tried)
    device = outcome.device
    sources = "".join(f"<li>{_esc(s)}</li>" for s in device.get("sources", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgeopt optimize — {_esc(config.model)}</title>
<link rel="icon" href="data:,"><style>{STYLE}</style></head><body>
<h1>edgeopt optimize: {_esc(config.model)}</h1>
<p>Data <code>{_esc(config.data)}</code> · device <b>{_esc(device['name'])}</b> ·
{_esc(config.goals.describe(outcome.baseline['metric_title']))} · search time {outcome.elapsed_s / 60:.1f} of
{config.budget_s / 60:.3g} min · baseline {_esc(outcome.baseline['metric_title'])}
{outcome.baseline['metrics'][outcome.baseline['metric']]:.2%} on {outcome.baseline['test_samples']} test images</p>
{estimated}
<p class="decision {'ok' if outcome.chosen else 'miss'}" id="decision">{_esc(decision)}</p>
<h2>Pareto front</h2><figure id="pareto">{plot}</figure>
<h2>Candidates</h2><p>★ chosen · ◆ on the Pareto front · Δ points: change of {_esc(outcome.baseline['metric_title'])} against the baseline</p>
{_table(headers, rows, "candidates")}
{f"<h3>Not tried</h3><ul>{not_tried}</ul>" if not_tried else ""}
{_rankings(outcome)}
{recipe}
{_winner_sections(outcome)}
<h2>Device</h2><p>{_esc(device['name'])}: {_esc(device['cpu']['description'])}, {_memory_text(device)};
{_esc(where_text(outcome))}{'' if outcome.measured_on else f" with {device['threads_here']} threads"}.</p>
<ul>{sources}</ul>
<h2>Environment</h2><pre>{_esc(json.dumps(env, indent=2))}</pre>
</body></html>
"""
