"""``edgeopt eval``: quality of an artifact or checkpoint on a dataset, and fidelity to a reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, PluginOption, TrustModelOption, write_summary
from edgeopt.report.console import make_console


@app.command("eval")
def eval_command(
    model: str = typer.Argument(..., help="An artifact folder, or a model source (e.g. a trained .safetensors)."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file, or an ImageFolder tree (boxes for a detector: COCO json, YOLO folder); its test split is used."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Also report fidelity to this model (e.g. the FP32 checkpoint)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Load ImageFolder images at this size."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write every test image's result as JSON lines, as `edgeopt predict` writes them (with its index in the test split)."),
    score_threshold: float = typer.Option(0.3, "--score-threshold", help="Detectors, with --predictions: boxes at least this confident."),
    arch: Optional[str] = ArchOption,
    trust_model: bool = TrustModelOption,
    plugin: List[str] = PluginOption,
) -> None:
    """The task's metrics (top-1 and top-5, or mAP@0.5 and mAP@0.5:0.95), per class, and fidelity of MODEL on DATA's test split."""
    from rich.table import Table

    from edgeopt.api import evaluate

    console = make_console()
    report = evaluate(model, data, reference=reference, image_size=image_size, arch=arch,
                      predictions=predictions is not None, score_threshold=score_threshold)
    if predictions is not None:
        lines = [json.dumps({"index": i, **record}) for i, record in enumerate(report.pop("predictions"))]
        predictions.parent.mkdir(parents=True, exist_ok=True)
        predictions.write_text("".join(line + "\n" for line in lines))
    table = report.get("table")
    if table and table.get("rows"):  # the task's per-class figures, as it titled them
        shown = Table(title=f"{model} on {data} ({report['samples']} test images)")
        shown.add_column("class")
        for column in table["columns"]:
            shown.add_column(column, justify="right")
        for name, values in table["rows"].items():
            shown.add_row(name, *(_percent(value) for value in values))
        console.print(shown)
    line = " · ".join(f"{name} {value:.2%}" for name, value in report["metrics"].items())
    for name, value in report.get("fidelity", {}).items():
        shown = value if isinstance(value, int) else _percent(value)  # counts stay counts
        line += f" · {name.replace('_', ' ')} with reference {shown}"
    console.print(line)
    if json_out:
        write_summary(json_out, report)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"
