"""Before/after tables for the commands that change a PyTorch model (prune, distill).

Each row is one model measured the same way: top-1 on the test split, MACs and
parameters at its own input size, checkpoint size, and eager p50 latency at batch 1
in a fresh worker process.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table


@dataclass
class ModelFigures:
    name: str
    top1: float
    macs: int
    params: int
    size_mb: float
    p50_ms: float


def figures(name: str, model, test, threads: int | None) -> ModelFigures:
    from edgeopt.export import export
    from edgeopt.measure.accuracy import evaluate
    from edgeopt.measure.bench import BenchConfig, measure_artifact
    from edgeopt.measure.profile import count_flops_and_params

    top1 = evaluate(model.reference(), test, model.input_spec)["top1"]
    cost = count_flops_and_params(model)
    with tempfile.TemporaryDirectory() as scratch:
        artifact = export(model, "eager", Path(scratch) / "eager")
        p50 = measure_artifact(artifact.path, BenchConfig(threads=threads))["batches"]["1"]["p50"]
        size_mb = artifact.size_bytes / 2**20
    return ModelFigures(name, top1, cost["macs"], cost["params"], size_mb, p50)


def comparison_table(title: str, rows: list[ModelFigures]) -> Table:
    table = Table(title=title)
    for header in ("", "top-1", "drop", "MMACs", "M params", "size MB", "p50 ms", "speed-up"):
        table.add_column(header, justify="left" if not header else "right")
    base = rows[0]
    for row in rows:
        table.add_row(row.name, f"{row.top1:.2%}", f"{100 * (base.top1 - row.top1):+.2f}", f"{row.macs / 1e6:.2f}",
                      f"{row.params / 1e6:.2f}", f"{row.size_mb:.2f}", f"{row.p50_ms:.2f}",
                      f"{base.p50_ms / row.p50_ms:.2f}×")
    return table
