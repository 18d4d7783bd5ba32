"""The console: where it writes, and the benchmark table.

A command that builds or measures candidates sends native libraries' output to log
files by pointing the process's stdout descriptor elsewhere (``search.native_log``);
its console therefore writes to its own duplicate of the terminal (``own_stdout``).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module at start (`edgeopt serve` must be ready fast): rich comes on use
    from rich.console import Console
    from rich.table import Table

    from edgeopt.pipeline.bench import BenchReport

STATUS_STYLE = {"ok": "green", "failed": "red", "unavailable": "yellow"}


def make_console(own_stdout: bool = False) -> Console:
    """A Console; when output is piped or logged, wide enough that tables stay readable.

    ``own_stdout``: write to a duplicate of the stdout descriptor, which keeps reaching the
    terminal (or pipe) while descriptor 1 itself is pointed at a log file.
    """
    from rich.console import Console

    stream = sys.stdout
    if own_stdout:
        try:
            stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
        except (OSError, ValueError, AttributeError):  # no real descriptor (an in-process test runner)
            stream = sys.stdout
    console = Console(file=stream)
    return console if console.is_terminal else Console(file=stream, width=200)


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def bench_table(report: BenchReport) -> Table:
    """One row per backend; throughput columns for every batch size above 1."""
    from rich.table import Table

    big_batches = [b for b in report.config["batches"] if b > 1]
    table = Table(title=f"{report.model} · {report.config['threads']} threads")
    for header in ("backend", "precision", "status", "size MB", "p50 ms", "p90 ms", "p99 ms", "FPS (b=1)"):
        table.add_column(header, justify="left" if header in ("backend", "precision", "status") else "right")
    for batch in big_batches:
        table.add_column(f"img/s b={batch}", justify="right")
    for header in ("peak RSS MB", "max|Δ| rel", "top-1", "× eager"):
        table.add_column(header, justify="right")
    for r in report.results:
        m = r.measurement
        parity = r.parity or {}
        table.add_row(
            r.backend,
            r.precision,
            f"[{STATUS_STYLE[r.status]}]{r.status}[/]",
            _num(m and m.size_mb),
            _num(m and m.latency_ms),
            _num(m and m.p90_ms),
            _num(m and m.p99_ms),
            _num(m and m.throughput.get("1"), 1),
            *(_num(m and m.throughput.get(str(b)), 1) for b in big_batches),
            _num(m and m.peak_rss_mb, 0),
            "–" if parity.get("max_abs_diff") is None else f"{parity['max_abs_diff']:.1e}",
            _num(parity.get("top1_agreement")),
            "–" if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.2f}×",
        )
    return table


def environment_line(env: dict[str, Any]) -> str:
    flags = ",".join(env["isa_flags"]) or "none"
    return f"{env['cpu']} · {env['usable_cpus']} CPUs · {env['memory_mb']:.0f} MB · ISA {flags} · Python {env['python']}"


def print_bench(report: BenchReport, console: Console | None = None) -> None:
    """The table, then one line per backend that is not ok (its reason), then the machine."""
    from rich.markup import escape

    console = console or make_console()
    console.print(bench_table(report))
    for r in report.results:
        if r.status != "ok":
            console.print(f"[{STATUS_STYLE[r.status]}]{r.backend} {r.precision}[/] {escape(r.label)}", soft_wrap=True)
    console.print(f"[dim]{environment_line(report.environment)}[/]", soft_wrap=True)


def print_notes(artifact, console: Console) -> None:
    """An artifact's manifest notes (fallbacks, layers kept in FP32, deprecations), one per line."""
    for note in artifact.manifest["notes"]:
        console.print(f"  note: {note}", soft_wrap=True, markup=False)
