"""``edgeopt eval``: quality of an artifact or checkpoint on a dataset, and fidelity to a reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, TrustModelOption, write_summary
from edgeopt.report.console import make_console


@app.command("eval")
def eval_command(
    model: str = typer.Argument(..., help="An artifact folder, or a model source (e.g. a trained .safetensors)."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file, or an ImageFolder tree (boxes for a detector: COCO json, YOLO folder); its test split is used."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Also report fidelity to this model (e.g. the FP32 checkpoint)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Load ImageFolder images at this size."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
    arch: Optional[str] = ArchOption,
    trust_model: bool = TrustModelOption,
) -> None:
    """The task's metrics (top-1 and top-5, or mAP@0.5 and mAP@0.5:0.95), per class, and fidelity of MODEL on DATA's test split."""
    from rich.table import Table

    from edgeopt.api import evaluate

    console = make_console()
    report = evaluate(model, data, reference=reference, image_size=image_size, arch=arch)
    if "per_class" in report:
        detector = "per_class_map" in report  # per-class AP rather than accuracy
        table = Table(title=f"{model} on {data} ({report['samples']} test images)")
        table.add_column("class")
        for column in (("AP@0.5", "AP@0.5:0.95") if detector else ("accuracy",)):
            table.add_column(column, justify="right")
        for name, value in report["per_class"].items():
            extra = [_percent(report["per_class_map"].get(name))] if detector else []
            table.add_row(name, _percent(value), *extra)
        console.print(table)
    line = " · ".join(f"{name} {value:.2%}" for name, value in report["metrics"].items())
    for name, value in report.get("fidelity", {}).items():
        shown = value if isinstance(value, int) else _percent(value)  # counts stay counts
        line += f" · {name.replace('_', ' ')} with reference {shown}"
    console.print(line)
    if json_out:
        write_summary(json_out, report)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"
