"""``edgeopt quantize``: INT8 for one backend, with quality, size and latency before and after (via edgeopt.api.quantize)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.cli.app import app
from edgeopt.cli.common import ArchOption, CalibrationSamplesOption, MaxDropOption, PresetOption, ThreadsOption
from edgeopt.errors import ConfigError
from edgeopt.report.compare import comparison_table
from edgeopt.report.console import make_console, print_notes


@app.command("quantize")
def quantize_command(
    model: str = typer.Argument(..., help="A trained model source, e.g. the .safetensors from `edgeopt train`."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file or an ImageFolder tree: calibration from its train split, quality on its test split."),
    backend: str = typer.Option("openvino", "--backend", "-b", help="A backend with INT8 (see `edgeopt backends`)."),
    out: Path = typer.Option(..., "--out", "-o", help="The INT8 artifact folder to create."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    calibration_samples: int = CalibrationSamplesOption,
    max_accuracy_drop: Optional[float] = MaxDropOption,
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware training (NNCF) before converting to INT8 (openvino, onnxruntime)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic INT8 (ONNX Runtime): INT8 weights, activations quantized at run time; for Linear-heavy models."),
    epochs: int = typer.Option(3, "--epochs", help="QAT fine-tuning epochs."),
    lr: float = typer.Option(1e-3, "--lr", help="QAT learning rate (SGD, cosine)."),
    preset: str = PresetOption,
    calibration_method: str = typer.Option("minmax", "--calibration-method", help="ONNX Runtime calibrator: minmax | entropy | percentile."),
    keep_float: List[str] = typer.Option([], "--keep-float", help="A layer to keep in float, by the backend's name for it (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run: keep an artifact it already finished, or continue QAT from its last epoch checkpoint."),
    seed: int = typer.Option(0, "--seed"),
    arch: Optional[str] = ArchOption,
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Export MODEL to INT8 on BACKEND and compare it with eager FP32: quality, size, p50 latency."""
    from edgeopt.api import quantize
    from edgeopt.passes.qat import QAT_FINE_TUNE
    from edgeopt.tasks import get_task

    if sum((qat, dynamic, max_accuracy_drop is not None)) > 1:
        raise ConfigError("--qat, --dynamic and --max-accuracy-drop are alternatives: choose one")
    mode = "qat" if qat else "aware" if max_accuracy_drop is not None else "static"
    console = make_console()
    with console.status(f"quantizing for {backend} and measuring…"):
        result = quantize(model, data, backend, out, mode=mode, max_drop=max_accuracy_drop,
                          calibration_samples=calibration_samples, preset=preset, calibration_method=calibration_method,
                          keep_float=keep_float, dynamic=dynamic, seed=seed, arch=arch, threads=threads, force=force,
                          resume=resume, qat=dataclasses.replace(QAT_FINE_TUNE, epochs=epochs, lr=lr))
    artifact = result.artifact
    task = get_task(artifact.manifest["task"])
    name = f"{backend} {artifact.precision}{' (QAT)' if qat else ' (aware)' if mode == 'aware' else ''}"
    console.print(comparison_table(f"{model} → {result.recipe.label} (test split, batch 1)",
                                   [("eager FP32", result.before), (name, result.after)], task.main))
    agreement = result.after.fidelity.get(task.agreement or "", None)
    console.print(f"{artifact.size_bytes / 2**20:.2f} MB · "
                  + (f"top-1 agreement with FP32 {agreement:.2%} · " if agreement is not None else "")
                  + f"{result.before.latency_ms / result.after.latency_ms:.2f}× faster · {artifact.path}", soft_wrap=True)
    print_notes(artifact, console)
