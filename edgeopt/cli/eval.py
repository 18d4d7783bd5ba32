"""``edgeopt eval``: accuracy of an artifact or checkpoint on a dataset, and fidelity to a reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption
from edgeopt.report.console import make_console


def _runner(model: str, arch: Optional[str]):
    """(run, InputSpec) for an artifact folder or a model source."""
    from edgeopt.artifact import MANIFEST, Artifact
    from edgeopt.backends import get_backend
    from edgeopt.models import load_model

    if (Path(model) / MANIFEST).is_file():
        artifact = Artifact.open(model)
        session = get_backend(artifact.backend).load(artifact)
        return session.run, artifact.input_spec
    loaded = load_model(model, arch=arch)
    return loaded.reference(), loaded.input_spec


@app.command("eval")
def eval_command(
    model: str = typer.Argument(..., help="An artifact folder, or a model source (e.g. a trained .safetensors)."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file, or an ImageFolder tree; its test split is used."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Also report fidelity to this model (e.g. the FP32 checkpoint)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Load ImageFolder images at this size."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
    arch: Optional[str] = ArchOption,
) -> None:
    """Top-1, top-5, per-class accuracy and the confusion matrix of MODEL on DATA's test split."""
    from edgeopt.data import load_dataset
    from edgeopt.measure.accuracy import evaluate

    console = make_console()
    run, spec = _runner(model, arch)
    test = load_dataset(data, image_size=image_size).test
    report = evaluate(run, test, spec, reference=_runner(reference, None)[0] if reference else None)
    table = Table(title=f"{model} on {data} ({report['samples']} test images)")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, value in report["per_class"].items():
        table.add_row(name, "–" if value is None else f"{value:.2%}")
    console.print(table)
    line = f"top-1 {report['top1']:.2%} · top-5 {report['top5']:.2%}"
    if "fidelity" in report:
        f = report["fidelity"]
        line += f" · top-1 agreement with reference {f['top1_agreement']:.2%} · SQNR {f['sqnr_db'] or float('inf'):.1f} dB"
    console.print(line)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
