"""The search's results as a console summary, results.json, report.md and report.html.

Every latency says where it came from: measured on the device by its agent (the device is
named, and the ranking timed here is shown beside the device's), measured here, or an
estimate for a device that is not this machine ("est." beside each such figure, with its
interval and how many device measurements back it).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeopt.search.candidate import Candidate


def points(record: Candidate) -> str:
    """The goal metric's change against the baseline in points, signed (+0.00 for none)."""
    change = -record.drop_points
    return f"{0.0 if abs(change) < 0.005 else change:+.2f}"


def latency_text(record: Candidate) -> str:
    m = record.measurement
    if not m.estimated:
        return f"{record.latency_ms:.2f}"
    if m.estimate_low_ms is None:
        return f"{record.latency_ms:.2f} est."
    return f"{record.latency_ms:.2f} est. [{m.estimate_low_ms:.2g}–{m.estimate_high_ms:.2g}, n={m.estimate_basis}]"


def where_text(outcome) -> str:
    """Where the latencies of ``outcome`` come from, in a few words."""
    if outcome.measured_on:
        return f"measured on {outcome.measured_on} by its agent"
    if outcome.estimated and outcome.device.get("mcu"):
        return f"estimated for {outcome.device['name']} from each model's MACs at an assumed int8 rate, not measured"
    if outcome.estimated:
        basis = max((r.measurement.estimate_basis or 0 for r in outcome.records if r.ok), default=0)
        backing = f"corrected by {basis} measurements of that device" if basis else "no device measurement backs them yet"
        return f"estimated for {outcome.device['name']} ({backing})"
    return "measured here"


def cluster_text(outcome) -> str:
    """Where the candidates were built and timed, when a cluster built them (empty for a local search)."""
    built = outcome.device.get("built_by") or {}
    if built.get("name", "local") == "local":
        return ""
    nodes = built.get("built_on") or []
    timed = outcome.measured_on or f"{built.get('timed_on')} (the search's node, which offers the cluster no CPUs)"
    sharing = built.get("nodes_sharing_timing_machine") or 0
    shared = (f" — {sharing} worker node(s) run on that same machine, whose cores they share" if sharing
              and not outcome.measured_on else "")
    return (f"Built on the Ray cluster at {built.get('address')}: {len(nodes)} node(s) ({', '.join(nodes) or 'none'}), "
            f"{built.get('cpus_per_build'):g} CPU per build; every candidate timed on {timed}{shared}; "
            f"{built.get('to_workers', 0) / 2**20:.1f} MB sent to workers, {built.get('from_workers', 0) / 2**20:.1f} MB back.")


def ranking_rows(outcome) -> list[list[str]]:
    """Measured candidates ranked on the device and as timed here, side by side (empty without an agent)."""
    timed = [r for r in outcome.records if r.ok and r.measurement.host_ms is not None]
    if not timed:
        return []
    on_device = sorted(timed, key=lambda r: (r.latency_ms, r.key))
    here_rank = {r.key: i + 1 for i, r in enumerate(sorted(timed, key=lambda r: (r.measurement.host_ms, r.key)))}
    return [[str(i + 1), r.label, f"{r.latency_ms:.3f}", str(here_rank[r.key]), f"{r.measurement.host_ms:.3f}"]
            for i, r in enumerate(on_device)]


RANKING_HEADERS = ["rank on the device", "candidate", "p50 ms on the device", "rank here", "p50 ms here"]


def host_choice_text(outcome) -> str:
    """What the search would have chosen by this machine's timings, when that differs from the device's choice."""
    if not outcome.measured_on or outcome.chosen is None:
        return ""
    here = host_choice(outcome)
    if here is None or here.key == outcome.chosen.key:
        return "Timed here instead, the choice would be the same."
    return (f"Timed here instead ({outcome.device.get('host_threads')} threads on this machine), the choice would have "
            f"been {here.label} ({here.measurement.host_ms:.3f} ms here; {here.latency_ms:.3f} ms on the device).")


def host_choice(outcome) -> Candidate | None:
    return choice_by(outcome, lambda m: m.host_ms)


def choice_by(outcome, latency_of) -> Candidate | None:
    """What the search would have chosen had each candidate's latency been ``latency_of(measurement)`` (a
    candidate without one left out), judged by the same goals."""
    import dataclasses

    from edgeopt.search import pareto
    from edgeopt.tasks import get_task

    metric = get_task(outcome.baseline["task"]).metric(outcome.baseline["metric"])
    goals = outcome.config.goals
    rejudged = []
    for r in outcome.records:
        if r.ok and latency_of(r.measurement) is not None:
            m = dataclasses.replace(r.measurement, latency_ms=latency_of(r.measurement))
            rejudged.append(dataclasses.replace(r, measurement=m, violations=goals.violations(
                m, r.drop_points, r.metric_title or "", outcome.device["memory_cap_mb"], outcome.device["id"])))
    chosen = pareto.choose(rejudged, goals.priority, metric)
    return next((r for r in outcome.records if chosen and r.key == chosen.key), None)


def farm_devices(outcome) -> list[str]:
    """The labels of a farm's other devices (empty without a farm)."""
    return list(outcome.device.get("farm") or [])


def device_choices_text(outcome) -> str:
    """Each farm device's own choice, the same goals judged with its latencies (empty without a farm)."""
    if not farm_devices(outcome):
        return ""
    parts = []
    for device in [outcome.measured_on, *farm_devices(outcome)]:
        deciding = device == outcome.measured_on
        latency_of = (lambda m: m.latency_ms) if deciding else (lambda m, d=device: m.on_devices.get(d))
        chosen = choice_by(outcome, latency_of)
        parts.append(f"{_short(device)}{' (deciding)' if deciding else ''}: " +
                     (f"{chosen.label} ({latency_of(chosen.measurement):.3f} ms)" if chosen else "nothing meets the goals"))
    return ("Chosen on each device of the farm (its p50 judged by the same goals; its other figures are the deciding "
            "device's) — " + "; ".join(parts) + ".")


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _short(device_label: str) -> str:
    return device_label.split(" (")[0]


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
    """The table's columns; for a microcontroller the arena and flash take the place of the host process's memory."""
    memory = ["arena KB", "flash KB"] if outcome.config.goals.microcontroller else ["peak MB"]
    others = [f"p50 ms {_short(device)}" for device in farm_devices(outcome)]
    first = f"p50 ms {_short(outcome.measured_on)}" if others else "p50 ms"
    return ["", "candidate", "status", first, *others, outcome.baseline["metric_title"], "Δ points", "size MB", *memory,
            "verdict"]


def _memory_cells(outcome, m) -> list[str]:
    if outcome.config.goals.microcontroller:
        return [f"{m.arena_kb:.0f}" if m.arena_kb is not None else "–", f"{m.flash_kb:.0f}" if m.flash_kb is not None else "–"]
    return [f"{m.peak_rss_mb:.0f}"]


def table_rows(outcome) -> list[list[str]]:
    """The candidate table as text cells (shared by the console, Markdown and HTML)."""
    front = {r.key for r in outcome.front}
    chosen = outcome.chosen.key if outcome.chosen else None
    rows = []
    for r in _rows(outcome):
        mark = "★" if r.key == chosen else ("◆" if r.key in front else "")
        if not r.ok:
            blank = [""] * (len(headers(outcome)) - 4)
            rows.append([mark, r.label, r.status, *blank, (r.reason or "")[:160]])
            continue
        m = r.measurement
        others = [_ms(m.on_devices.get(device)) for device in farm_devices(outcome)]
        rows.append([mark, r.label, "ok", latency_text(r), *others, value_text(r), points(r), f"{m.size_mb:.2f}",
                     *_memory_cells(outcome, m), verdict(r)])
    return rows


def print_outcome(outcome, console: Console) -> None:
    """The candidate table (★ chosen, ◆ Pareto front) and the decision."""
    where = where_text(outcome)
    title = outcome.baseline["metric_title"]
    baseline = _baseline_text(outcome)
    table = Table(title=f"candidates — latency at batch 1, {where}; baseline {title} {baseline}")
    numeric = ("p50 ms", title, "Δ points", "size MB", "peak MB", "arena KB", "flash KB")
    for header in headers(outcome):
        table.add_column(header, justify="right" if header in numeric or header.startswith("p50 ms") else "left")
    for row in table_rows(outcome):
        table.add_row(*[Text(cell) for cell in row])
    console.print(table)
    if outcome.front:
        front = " → ".join(f"{r.label} ({latency_text(r)} ms, {value_text(r)})" for r in outcome.front)
        console.print(Text(f"Pareto front, fastest to most accurate: {front}"), soft_wrap=True)
    if cluster_text(outcome):
        console.print(Text(cluster_text(outcome)), soft_wrap=True)
    for item in outcome.not_tried:
        console.print(Text(f"not tried: {item['label']} — {item['reason']}", style="yellow"), soft_wrap=True)
    rankings = ranking_rows(outcome)
    if rankings:
        table = Table(title="the same candidates ranked on the device and here")
        for header in RANKING_HEADERS:
            table.add_column(header, justify="left" if header == "candidate" else "right")
        for row in rankings:
            table.add_row(*row)
        console.print(table)
    console.print(Text(decision_text(outcome), style="bold green" if outcome.chosen else "bold red"), soft_wrap=True)
    if host_choice_text(outcome):
        console.print(Text(host_choice_text(outcome)), soft_wrap=True)
    if device_choices_text(outcome):
        console.print(Text(device_choices_text(outcome)), soft_wrap=True)


def _baseline_text(outcome) -> str:
    return _number(outcome.baseline["metrics"][outcome.baseline["metric"]])


def _budget(bound_kb: float | None) -> str:
    return "no budget" if bound_kb is None else f"budget {bound_kb:g} KB"


def decision_text(outcome) -> str:
    goals, title = outcome.config.goals, outcome.baseline["metric_title"]
    if outcome.chosen:
        c = outcome.chosen
        base = outcome.eager_baseline()
        speed = f", {base.latency_ms / c.latency_ms:.1f}× faster than eager FP32" if base else ""
        return (f"chosen: {c.label} — {latency_text(c)} ms, {metric_text(c)} ({points(c)} points){speed}, "
                f"{c.measurement.size_mb:.2f} MB; meets {goals.describe(title)}. Artifact: {outcome.config.out}/best, "
                f"recipe: {outcome.config.out}/best.toml")
    words = {"max_drop": f"{title} drop", "max_latency_ms": "latency", "max_sustained_p99_ms": "sustained p99",
             "max_size_mb": "size",
             "max_memory_mb": "memory", "memory_cap": "the device's memory", "max_sram_kb": "SRAM", "max_flash_kb": "flash"}
    missed = sorted({words[v.goal] for r in outcome.records if r.ok for v in r.violations})
    lines = [f"no candidate meets the goals ({goals.describe(title)}); missed: "
             f"{', '.join(missed) or 'no candidate was measured'}."]
    smallest = outcome.smallest_footprint
    if smallest and not smallest["fits"]:
        lines.insert(0, f"nothing fits: smallest arena found {smallest['arena_kb']:.0f} KB ({_budget(goals.max_sram_kb)}), "
                        f"smallest flash {smallest['flash_kb']:.0f} KB ({_budget(goals.max_flash_kb)}); "
                        "no best/ artifact was chosen.")
    if outcome.closest:
        lines.append("closest: " + "; ".join(f"{r.label} ({latency_text(r)} ms, {metric_text(r)}, misses: "
                                             f"{'; '.join(v.text for v in r.violations)})" for r in outcome.closest))
    return " ".join(lines)


def markdown(outcome) -> str:
    """report.md: the decision, the candidate table, what was not tried, the environment."""
    env, config = outcome.environment, outcome.config
    lines = [f"# edgeopt optimize: {config.model}", "",
             f"Data `{config.data}` · device **{outcome.device['name']}** · latencies {where_text(outcome)}"
             f" · {config.goals.describe(outcome.baseline['metric_title'])} · {outcome.elapsed_s / 60:.1f} of "
             f"{config.budget_s / 60:.3g} min", "", decision_text(outcome), ""]
    if cluster_text(outcome):
        lines += [cluster_text(outcome), ""]
    if outcome.chosen:
        lines += ["Rebuild the chosen artifact:", "", "```bash", f"edgeopt build {config.out}/best.toml --out rebuilt",
                  "```", ""]
    columns = headers(outcome)
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(outcome)]
    lines += ["", "★ chosen · ◆ on the Pareto front (latency vs quality)", ""]
    if ranking_rows(outcome):
        lines += ["## Ranked on the device and here", "", "| " + " | ".join(RANKING_HEADERS) + " |",
                  "|" + "---|" * len(RANKING_HEADERS)]
        lines += ["| " + " | ".join(row) + " |" for row in ranking_rows(outcome)]
        lines += ["", host_choice_text(outcome), ""]
    if device_choices_text(outcome):
        lines += [device_choices_text(outcome), ""]
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
