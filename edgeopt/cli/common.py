"""Options and helpers shared by subcommands."""

from __future__ import annotations

from typing import Optional

import typer

from edgeopt.errors import ConfigError

InputOption = typer.Option(None, "--input", help="Input shape, batch first, e.g. 1x3x224x224 (inferred if omitted).")
ArchOption = typer.Option(None, "--arch", help="Architecture for a weights-only checkpoint, e.g. torchvision:resnet18.")
ThreadsOption = typer.Option(None, "--threads", help="Intra-op threads for every backend (default: all usable CPUs).")
CalibrateOption = typer.Option(None, "--calibrate", help="Calibration data for INT8: digits, a .npz file or an ImageFolder tree.")
CalibrationSamplesOption = typer.Option(300, "--calibration-samples", help="Stratified calibration images taken from its training split.")
MaxDropOption = typer.Option(None, "--max-accuracy-drop", help="INT8 with accuracy control: most top-1 points to lose (needs --calibrate data with labels).")
# Training options shared by train, prune and distill (defaults: the recipe that measured best on NEU)
OptimizerOption = typer.Option("adamw", "--optimizer", help="sgd | adamw")
ScheduleOption = typer.Option("onecycle", "--schedule", help="cosine | onecycle | constant")
WeightDecayOption = typer.Option(0.05, "--weight-decay")
BatchSizeOption = typer.Option(64, "--batch-size")
SeedOption = typer.Option(0, "--seed")
ResumeOption = typer.Option(False, "--resume", help="Continue an interrupted run from its last epoch checkpoint.")
TemperatureOption = typer.Option(3.0, "--temperature", help="Distillation temperature T.")
AlphaOption = typer.Option(0.7, "--alpha", help="Weight of the label loss; 1 - alpha goes to the teacher's soft targets.")


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """'1,8' -> (1, 8), with a clear error for anything else."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers like 1,8; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{what} must be positive integers; got {text!r}")
    return values


def load(source: str, input: Optional[str], arch: Optional[str]):
    """Resolve the model source given on the command line."""
    from edgeopt.models import load_model

    return load_model(source, input=input, arch=arch)
