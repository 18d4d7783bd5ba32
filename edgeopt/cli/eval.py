"""``edgeopt eval``: quality of an artifact or checkpoint on a dataset, and fidelity to a reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, write_summary
from edgeopt.report.console import make_console


@app.command("eval")
def eval_command(
    model: str = typer.Argument(..., help="An artifact folder, or a model source (e.g. a trained .safetensors)."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file, or an ImageFolder tree; its test split is used."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Also report fidelity to this model (e.g. the FP32 checkpoint)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Load ImageFolder images at this size."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
    arch: Optional[str] = ArchOption,
) -> None:
    """The task's metrics (top-1, top-5), per-class accuracy and the confusion matrix of MODEL on DATA's test split."""
    from edgeopt.api import evaluate

    console = make_console()
    report = evaluate(model, data, reference=reference, image_size=image_size, arch=arch)
    if "per_class" in report:
        table = Table(title=f"{model} on {data} ({report['samples']} test images)")
        table.add_column("class")
        table.add_column("accuracy", justify="right")
        for name, value in report["per_class"].items():
            table.add_row(name, "–" if value is None else f"{value:.2%}")
        console.print(table)
    line = " · ".join(f"{name} {value:.2%}" for name, value in report["metrics"].items())
    for name, value in report.get("fidelity", {}).items():
        line += f" · {name.replace('_', ' ')} with reference {'–' if value is None else f'{value:.2%}'}"
    console.print(line)
    if json_out:
        write_summary(json_out, report)
