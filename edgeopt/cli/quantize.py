"""``edgeopt quantize``: INT8 for one backend, with quality, size and latency before and after (via edgeopt.api.quantize)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from edgeopt.api import RESUME
from edgeopt.cli.app import app
from edgeopt.cli.common import (
    ArchOption,
    CalibrationMethodOption,
    KeepFloatOption,
    MaxDropOption,
    PluginOption,
    PresetOption,
    QUANTIZATION,
    SeedOption,
    ThreadsOption,
    calibration_samples_option,
    epochs_option,
    lr_option,
)
from edgeopt.core.errors import ConfigError
from edgeopt.passes.qat import QatConfig
from edgeopt.report.compare import comparison_table
from edgeopt.report.console import make_console, print_notes

QAT = QatConfig()  # --qat's defaults; the rest are QuantizationConfig's (QUANTIZATION)


@app.command("quantize")
def quantize_command(
    model: str = typer.Argument(..., help="A trained model source, e.g. the .safetensors from `edgeopt train`."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file or an ImageFolder tree: calibration from its train split, quality on its test split."),
    backend: str = typer.Option("openvino", "--backend", "-b", help="A backend with INT8 (see `edgeopt backends`)."),
    out: Path = typer.Option(..., "--out", "-o", help="The INT8 artifact folder to create."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    calibration_samples: int = calibration_samples_option(QUANTIZATION.calibration_samples),
    max_accuracy_drop: Optional[float] = MaxDropOption,
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware training (NNCF) before converting to INT8 (openvino, onnxruntime)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic INT8 (ONNX Runtime): INT8 weights, activations quantized at run time; for Linear-heavy models."),
    epochs: int = epochs_option(QAT.fine_tune.epochs, "QAT fine-tuning epochs."),
    lr: float = lr_option(QAT.fine_tune.lr, f"QAT learning rate ({QAT.fine_tune.optimizer.upper()}, {QAT.fine_tune.schedule})."),
    preset: str = PresetOption,
    calibration_method: str = CalibrationMethodOption,
    keep_float: List[str] = KeepFloatOption,
    resume: bool = typer.Option(RESUME, "--resume", help="Continue an interrupted run: keep an artifact it already finished, or continue QAT from its last epoch checkpoint."),
    seed: int = SeedOption,
    arch: Optional[str] = ArchOption,
    threads: Optional[int] = ThreadsOption,
    plugin: List[str] = PluginOption,
) -> None:
    """Export MODEL to INT8 on BACKEND and compare it with eager FP32: quality, size, p50 latency."""
    from edgeopt.api import quantize
    from edgeopt.core.quantization import QuantizationConfig
    from edgeopt.tasks import get_task

    if sum((qat, dynamic, max_accuracy_drop is not None)) > 1:
        raise ConfigError("--qat, --dynamic and --max-accuracy-drop are alternatives: choose one")
    mode = "qat" if qat else "aware" if max_accuracy_drop is not None else "static"
    config = None if dynamic else QuantizationConfig(
        mode=mode, max_drop=max_accuracy_drop, calibration_samples=calibration_samples, preset=preset,
        calibration_method=calibration_method, keep_float=tuple(keep_float))
    console = make_console()
    with console.status(f"quantizing for {backend} and measuring…"):
        result = quantize(model, data, backend, out, config, dynamic=dynamic, seed=seed, arch=arch, threads=threads,
                          force=force, resume=resume,
                          qat=dataclasses.replace(QAT.fine_tune, epochs=epochs, lr=lr) if qat else None)
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
