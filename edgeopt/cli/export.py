"""``edgeopt export``: one verified artifact for one backend (via edgeopt.api.export)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    ArchOption,
    CalibrateOption,
    CalibrationMethodOption,
    InputOption,
    KeepFloatOption,
    MaxDropOption,
    PluginOption,
    PresetOption,
    ThreadsOption,
    TrustModelOption,
    calibration_samples_option,
)
from edgeopt.core.errors import ConfigError
from edgeopt.pipeline.recipe import ExportConfig
from edgeopt.report.console import make_console, print_notes

EXPORT = ExportConfig()  # --precision's default


def _parse_options(items: list[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigError(f"--option {item!r} must look like key=value or key")
        options[key] = {"true": True, "false": False}.get(value.lower(), value) if sep else True
    return options


@app.command("export")
def export_command(
    model: str = typer.Argument(..., help="Model source: torchvision:NAME, pkg.module:factory, ckpt.safetensors, model.onnx."),
    backend: str = typer.Option(..., "--backend", "-b", help="Runtime: see `edgeopt backends`."),
    out: Path = typer.Option(..., "--out", "-o", help="Artifact folder to create."),
    precision: str = typer.Option(EXPORT.precision, "--precision", help="fp32 | fp16 | int8 | int8-dynamic, as the backend supports."),
    option: List[str] = typer.Option([], "--option", help="Backend option key[=value], e.g. mobile (torchscript)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    calibrate: Optional[str] = CalibrateOption,
    calibration_samples: int = calibration_samples_option(),
    max_accuracy_drop: Optional[float] = MaxDropOption,
    preset: str = PresetOption,
    calibration_method: str = CalibrationMethodOption,
    keep_float: List[str] = KeepFloatOption,
    outputs: Optional[str] = typer.Option(None, "--outputs", help="A detector edgeopt did not build: its output layout, yolov8 (N, 4+classes, anchors) or yolov5 (N, anchors, 5+classes)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="With --outputs: the class names, comma-separated."),
    input: Optional[str] = InputOption,
    arch: Optional[str] = ArchOption,
    trust_model: bool = TrustModelOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Compile MODEL for one backend, load it back, check it against the FP32 reference, and write the artifact."""
    from edgeopt.api import export
    from edgeopt.core.quantization import QuantizationConfig

    console = make_console()
    quantization = None
    if precision == "int8":
        quantization = QuantizationConfig(mode="aware" if max_accuracy_drop is not None else "static",
                                          max_drop=max_accuracy_drop, calibration_samples=calibration_samples,
                                          preset=preset, calibration_method=calibration_method,
                                          keep_float=tuple(keep_float))
    elif max_accuracy_drop is not None:
        raise ConfigError("--max-accuracy-drop applies to --precision int8")
    with console.status(f"exporting {model} to {backend} {precision}…"):
        artifact = export(model, backend, out, precision, calibrate=calibrate, quantization=quantization,
                          options=_parse_options(option), input=input, arch=arch, threads=threads, force=force,
                          outputs=outputs, labels=labels.split(",") if labels else None)
    parity = artifact.parity
    top1, boxes = parity.get("top1_agreement"), parity.get("box_recall")
    agreement = (f"top-1 agreement {top1:.3f}" if top1 is not None else
                 f"box recall {boxes:.3f} of {parity['reference_boxes']}" if boxes is not None else "agreement –")
    console.print(
        f"[green]ok[/] {artifact.backend} {artifact.precision} · {artifact.size_bytes / 2**20:.2f} MB · "
        f"max|Δ| {parity['max_abs_diff']:.1e} of output scale · {agreement} · {artifact.path}",
        soft_wrap=True,
    )
    control = artifact.manifest.get("accuracy_control")
    if control:
        verdict = "reached" if control["reached"] else "[red]cannot reach[/]"
        console.print(f"accuracy control: FP32 {control['metric']} {control['reference']:.2%} → {control['value']:.2%} "
                      f"on {control['samples']} held-out images, drop {control['drop_points']:.2f} points "
                      f"(max {control['max_drop_points']:g}): {verdict}")
    print_notes(artifact, console)
