"""``edgeopt ladder``: artifacts of one model as a ladder that ``serve`` and ``stream`` climb with the load."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import PluginOption, ThreadsOption, parse_int_list
from edgeopt.pipeline.ladder import LadderConfig

DEFAULTS = LadderConfig()


@app.command("ladder")
def ladder_command(
    artifacts: List[Path] = typer.Argument(..., help="Artifact folders of one model (same input, task and labels)."),
    out: Path = typer.Option(..., "--out", "-o", help="The ladder folder to write."),
    data: Optional[str] = typer.Option(None, "--data", help="Score each artifact on this dataset's test split and order the rungs by it; without it the order given is kept, most accurate first."),
    batch: str = typer.Option(",".join(map(str, DEFAULTS.batches)), "--batch", help="Batch sizes to time each rung at (the controller plans with them)."),
    min_speedup: float = typer.Option(DEFAULTS.min_speedup, "--min-speedup", help="Keep a rung only if it costs at most 1/this per row of the rung above it."),
    max_rungs: int = typer.Option(DEFAULTS.max_rungs, "--max-rungs", help="Most rungs kept."),
    keep_order: bool = typer.Option(DEFAULTS.keep_order, "--keep-order", help="The artifacts are given most accurate first: score them with --data, but keep that order."),
    force: bool = typer.Option(False, "--force", help="Replace an existing ladder."),
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Measure ARTIFACTS and write the rungs worth having, most accurate first, as the ladder OUT."""
    from edgeopt.pipeline.ladder import assemble

    config = LadderConfig(batches=tuple(parse_int_list(batch, "--batch")), min_speedup=min_speedup,
                          max_rungs=max_rungs, keep_order=keep_order, threads=threads)
    ladder, measured = assemble(out, [str(a) for a in artifacts], data=data, config=config, overwrite=force,
                                say=lambda line: typer.echo(line, err=True))
    for item in measured:
        quality = ", ".join(f"{k} {v:.4f}" for k, v in item.quality.items()) or "quality not measured"
        verdict = "kept" if item.kept else f"left out: {item.reason}"
        typer.echo(f"{item.artifact.path}: {quality}; {item.ms_per_row:.3f} ms per row at batch "
                   f"{max(item.latency_ms)} — {verdict}")
    typer.echo(f"{out}: {len(ladder.rungs)} rungs")
