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

