"""Options and helpers shared by subcommands."""

from __future__ import annotations

from typing import Optional

import typer

from edgeopt.errors import ConfigError

InputOption = typer.Option(None, "--input", help="Input shape, batch first, e.g. 1x3x224x224 (inferred if omitted).")
ArchOption = typer.Option(None, "--arch", help="Architecture for a weights-only checkpoint, e.g. torchvision:resnet18.")
ThreadsOption = typer.Option(None, "--threads", help="Intra-op threads for every backend (default: all usable CPUs).")


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

CalibrateOption = typer.Option(None, "--calibrate", help="Calibration data for INT8: digits, a .npz file or an ImageFolder tree.")
CalibrationSamplesOption = typer.Option(300, "--calibration-samples", help="Stratified calibration images taken from its training split.")


def calibration_inputs(data: Optional[str], samples: int, model, image_size: Optional[int] = None):
    """Preprocessed calibration inputs for ``model`` from dataset ``data`` (None when no data)."""
    if data is None:
        return None
    from edgeopt.data import load_dataset, to_input

    size = image_size or (model.input_spec.shape[-1] if len(model.input_spec.shape) == 4 else None)
    subset = load_dataset(data, image_size=size).train.calibration(samples)
    return to_input(subset.images, model.input_spec)
