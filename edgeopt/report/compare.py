"""Before/after tables for the commands that change a model (prune, distill, quantize, train).

Each row is one Measurement: the main metric on the test split, MACs and parameters at
the model's own input size, file size, and p50 latency at batch 1 in a fresh process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeopt.measure.measurement import Measurement
from edgeopt.tasks import Metric

if TYPE_CHECKING:
    from rich.table import Table


def comparison_table(title: str, rows: list[tuple[str, Measurement]], metric: Metric) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for header in ("", metric.title, "drop", "MMACs", "M params", "size MB", "p50 ms", "speed-up"):
        table.add_column(header, justify="left" if not header else "right")
    _, base = rows[0]
    for name, row in rows:
        value = row.metrics.get(metric.name)
        drop = "–" if value is None else f"{metric.drop_points(base.metrics[metric.name], value):+.2f}"
        table.add_row(name, "–" if value is None else metric.format(value), drop, _millions(row.macs),
                      _millions(row.params), f"{row.size_mb:.2f}", f"{row.latency_ms:.2f}",
                      f"{base.latency_ms / row.latency_ms:.2f}×")
    return table


def _millions(value: int | None) -> str:
    return "–" if value is None else f"{value / 1e6:.2f}"
