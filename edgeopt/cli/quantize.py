"""``edgeopt quantize``: INT8 for one backend, with accuracy, size and latency before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from edgeopt.cli.app import app
from edgeopt.cli.common import (
    ArchOption,
    CalibrationSamplesOption,
    MaxDropOption,
    ThreadsOption,
    load,
)
from edgeopt.cli.compare import figures
from edgeopt.data import dataset_for, quantization_data
from edgeopt.errors import ConfigError
from edgeopt.report.console import make_console, print_notes


@app.command("quantize")
def quantize_command(
    model: str = typer.Argument(..., help="A trained model source, e.g. the .safetensors from `edgeopt train`."),
    data: str = typer.Option(..., "--data", help="digits, a .npz file or an ImageFolder tree: calibration from its train split, accuracy on its test split."),
    backend: str = typer.Option("openvino", "--backend", "-b", help="A backend with INT8 (see `edgeopt backends`)."),
    out: Path = typer.Option(..., "--out", "-o", help="The INT8 artifact folder to create."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    calibration_samples: int = CalibrationSamplesOption,
    max_accuracy_drop: Optional[float] = MaxDropOption,
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware training (NNCF) before converting to INT8 (openvino, onnxruntime)."),
    epochs: int = typer.Option(3, "--epochs", help="QAT fine-tuning epochs."),
    lr: float = typer.Option(1e-3, "--lr", help="QAT learning rate (SGD, cosine)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted QAT run from its last epoch checkpoint."),
    arch: Optional[str] = ArchOption,
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Export MODEL to INT8 on BACKEND and compare it with eager FP32: top-1, size, p50 latency."""
    from edgeopt.backends import open_session
    from edgeopt.export import export
    from edgeopt.measure.accuracy import evaluate
    from edgeopt.measure.bench import BenchConfig, measure_artifact

    console = make_console()
    loaded = load(model, None, arch)
    splits = dataset_for(data, loaded)  # calibration from its train split, accuracy on its test split
    calibration, validation = quantization_data(splits, calibration_samples, loaded, max_accuracy_drop)
    source = loaded
    if qat:
        if max_accuracy_drop is not None:
            raise ConfigError("--qat and --max-accuracy-drop are alternatives: choose one")
        source = quantization_aware_training(loaded, splits, calibration, out, epochs, lr, resume, console)
    with console.status(f"quantizing for {backend}…"):
        artifact = export(source, backend, out, "int8", threads=threads, overwrite=force,
                          calibration=calibration, validation=validation)
    test = splits.test
    config = BenchConfig(threads=threads)
    with console.status("measuring accuracy and latency…"):
        before = figures("eager FP32", loaded, test, threads)  # the FP32 baseline, timed the same way
        after = evaluate(open_session(artifact.path, threads=threads).run, test, artifact.input_spec,
                         reference=loaded.reference())
        int8_ms = measure_artifact(artifact.path, config)["batches"]["1"]["p50"]
    table = Table(title=f"{model} → {backend} INT8 ({len(test)} test images, batch 1, {config.thread_count} threads)")
    for header in ("", "top-1", "size MB", "p50 ms"):
        table.add_column(header, justify="left" if not header else "right")
    table.add_row(before.name, f"{before.top1:.2%}", f"{before.size_mb:.2f}", f"{before.p50_ms:.2f}")
    table.add_row(f"{backend} INT8{' (QAT)' if qat else ''}", f"{after['top1']:.2%}", f"{artifact.size_bytes / 2**20:.2f}", f"{int8_ms:.2f}")
    console.print(table)
    console.print(f"drop {100 * (before.top1 - after['top1']):.2f} points · top-1 agreement "
                  f"{after['fidelity']['top1_agreement']:.2%} · {before.p50_ms / int8_ms:.2f}× faster · {artifact.path}",
                  soft_wrap=True)
    print_notes(artifact, console)


def quantization_aware_training(loaded, splits, calibration, out: Path, epochs: int, lr: float, resume: bool, console):
    """NNCF fake-quantizers initialised on ``calibration``, fine-tuned on the training split."""
    from edgeopt.passes.qat import prepare_qat
    from edgeopt.passes.train import TrainConfig, fit

    config = TrainConfig(epochs=epochs, lr=lr, optimizer="sgd", schedule="cosine")
    with console.status("inserting fake-quantizers (NNCF; the first run compiles its kernels, about a minute)…"):
        model = prepare_qat(loaded, calibration)
    train, val = splits.train.split(0.1, 0)
    fit(model.module, train, val, model.input_spec, config, checkpoint=out.with_name(out.name + ".qat.train.pt"),
        resume=resume)
    return model
